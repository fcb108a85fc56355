"""Flag rules beyond the paper (issue 14), measured in ``benchmarks/noise_robustness.py``:

* ``class_small_loss``: the small-loss trick ranked within each labelled class (per-class
  quantiles), so a rare class whose clean samples all have high loss is not dropped wholesale;
* ``vote_small_loss``: NOISY = the highest losses among samples whose clips agree
  (agreement >= ``agree_min``) on a class that is not the label;
* ``hard_disagree``: HARD = the highest losses among samples whose clips disagree;
* ``consensus``: both, with the NOISY candidates ranked by their per-class loss quantile;
* ``clip_vote``: every sample whose clips agree on a class that is not its label is NOISY, up
  to ``noisy_max`` of the set (the count follows the noise instead of a fixed ``t_noisy``);
  HARD as in ``hard_disagree``.

At most ``floor(t * N + 0.5)`` samples of each kind are flagged.
"""

from __future__ import annotations

import torch

from .agreement import HARD, NOISY, ORDINARY, _count, _order, class_quantile
from .registry import FlagOptions, LossRule, SampleView, register_strategy


@register_strategy("class_small_loss")
class ClassSmallLoss(LossRule):
    needs_votes = True

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        flags = torch.full_like(view.loss, ORDINARY, dtype=torch.long)
        by_rank = _order(class_quantile(view.loss, view.labels), view.loss, descending=True)
        flags[by_rank[: _count(options.t_noisy, view.loss.numel())]] = NOISY
        return flags


class _VoteRule(LossRule):
    """NOISY among the agreeing-on-another-class (``noisy``), HARD among the disagreeing (``hard``)."""

    needs_votes = True
    noisy, hard, by_class_quantile, capped = False, False, False, False

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        loss, n = view.loss, view.loss.numel()
        flags = torch.full_like(loss, ORDINARY, dtype=torch.long)
        agree = view.agreement >= options.agree_min - 1e-6
        if self.noisy:
            # The clips settle on a class and it is not the label: the label is suspect; among
            # those, the highest losses (within their labelled class for "consensus") first.
            suspect = (agree & (view.mode_class != view.labels)).nonzero().squeeze(1)
            key = class_quantile(loss, view.labels)[suspect] if self.by_class_quantile else loss[suspect]
            ranked = suspect[_order(key, loss[suspect], descending=True)]
            flags[ranked[: _count(options.noisy_max if self.capped else options.t_noisy, n)]] = NOISY
        if self.hard:
            # Hard = the clips disagree *and* the video is not learnt yet (high loss).
            split = (~agree & (flags == ORDINARY)).nonzero().squeeze(1)
            ranked = split[torch.sort(loss[split], descending=True, stable=True).indices]
            flags[ranked[: _count(options.t_hard, n)]] = HARD
        return flags


@register_strategy("vote_small_loss")
class VoteSmallLoss(_VoteRule):
    noisy = True


@register_strategy("hard_disagree")
class HardDisagree(_VoteRule):
    hard = True


@register_strategy("consensus")
class Consensus(_VoteRule):
    noisy, hard, by_class_quantile = True, True, True


@register_strategy("clip_vote")
class ClipVote(_VoteRule):
    noisy, hard, capped = True, True, True
