"""The paper's Table IV rules: vanilla CE, big-loss strengthening / weakening (the small-loss
trick), hard only, noisy only, and both (RDFER's agreement rule, the default)."""

from __future__ import annotations

import torch

from .agreement import HARD, NOISY, ORDINARY, _count, flag_samples
from .registry import FlagOptions, LossRule, SampleView, register_strategy

__all__ = ["STRATEGIES"]

STRATEGIES = ("ce", "bigloss_up", "bigloss_down", "hard_up", "noisy_down", "agreement")


@register_strategy("ce")
class CrossEntropy(LossRule):
    """Plain (label-smoothed) cross-entropy: nothing is flagged."""

    reweights = False


def _by_loss(loss: torch.Tensor, fraction: float, flag: int) -> torch.Tensor:
    flags = torch.full_like(loss, ORDINARY, dtype=torch.long)
    order = torch.sort(loss, descending=True, stable=True).indices
    flags[order[: _count(fraction, loss.numel())]] = flag
    return flags


@register_strategy("bigloss_up")
class BigLossUp(LossRule):
    """The ``t_hard`` share with the largest loss is HARD (learn more)."""

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        return _by_loss(view.loss, options.t_hard, HARD)


@register_strategy("bigloss_down")
class BigLossDown(LossRule):
    """The small-loss trick: the ``t_noisy`` share with the largest loss is NOISY (learn less)."""

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        return _by_loss(view.loss, options.t_noisy, NOISY)


class _AgreementFlags(LossRule):
    """The agreement rule's flags, keeping the kinds in ``keep``."""

    keep = (HARD, NOISY)

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        flags = flag_samples(view.agreement, view.loss, view.confidence, options.t_hard, options.t_noisy,
                             options.noisy_requires_mismatch, view.mode_class, view.labels)
        for kind in (HARD, NOISY):
            if kind not in self.keep:
                flags[flags == kind] = ORDINARY
        return flags


@register_strategy("hard_up")
class HardUp(_AgreementFlags):
    """Only the HARD half of the agreement rule."""

    keep = (HARD,)


@register_strategy("noisy_down")
class NoisyDown(_AgreementFlags):
    """Only the NOISY half of the agreement rule."""

    keep = (NOISY,)


@register_strategy("agreement")
class Agreement(_AgreementFlags):
    """RDFER (paper Eq. 2): the least agreeing are HARD, the agreeing with the largest loss NOISY."""
