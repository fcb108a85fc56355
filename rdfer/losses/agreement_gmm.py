"""A learnt clean / hard / noisy split (the paper's own next step: a statistical model instead of
the fixed 10% / 20% shares). Within each labelled class, a three-component Gaussian mixture over
two features of every training video -- its loss and how strongly its clips agree on a class other
than its label -- finds three groups:

* **clean**: low loss (the clips vote for the label);
* **hard**: high loss, clips that do not agree against the label (they disagree, as in a video
  whose expression is brief or subtle);
* **noisy**: high loss, clips that agree on another class (a label the video contradicts).

How many of each there are is learnt per class, not set. ``agreement_gmm`` reweights with them
(HARD x ``lambda_hard``, NOISY x ``lambda_noisy``); ``dividemix`` can use it as its divide.
"""

from __future__ import annotations

import math

import torch

from .agreement import HARD, NOISY, ORDINARY
from .registry import FlagOptions, LossRule, SampleView, register_strategy

__all__ = ["CLEAN_GROUP", "HARD_GROUP", "NOISY_GROUP", "three_group_probability", "class_group_probability",
           "against_label"]

CLEAN_GROUP, HARD_GROUP, NOISY_GROUP = 0, 1, 2


def against_label(agreement: torch.Tensor, mode_class: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) the clips' agreement on a class other than the label: the agreement where the clip
    vote is not the label, 0 where it is."""
    return torch.where(mode_class.to(labels.device) != labels, agreement.to(labels.device).float(), 0.0)


def three_group_probability(loss: torch.Tensor, against: torch.Tensor, iters: int = 100,
                            reg: float = 1e-3) -> torch.Tensor:
    """(N, 3) posteriors of the clean / hard / noisy groups (columns :data:`CLEAN_GROUP`,
    :data:`HARD_GROUP`, :data:`NOISY_GROUP`) of a three-component Gaussian mixture with diagonal
    covariances, fitted by EM to ``(loss min-max normalised, against)``.

    Initialised from a split at the median loss (below: clean) and, above it, at the mean
    ``against`` (below: hard). After the fit the component of lowest mean loss is *clean*, of the
    other two the one whose clips agree more against the label is *noisy*. ``reg`` is added to each
    variance. Fewer than 3 values, or all losses equal: every sample clean.
    """
    x1 = loss.detach().double().flatten()
    n = x1.numel()
    out = torch.zeros(n, 3, dtype=torch.float, device=loss.device)
    if n < 3 or float(x1.max() - x1.min()) < 1e-12:
        out[:, CLEAN_GROUP] = 1.0
        return out
    x1 = (x1 - x1.min()) / (x1.max() - x1.min())
    x = torch.stack([x1, against.detach().double().flatten().to(x1.device)], dim=1)  # (N, 2)
    high = x1 > x1.median()
    cut = x[high, 1].mean() if bool(high.any()) else x[:, 1].mean()
    init = torch.where(~high, 0, torch.where(x[:, 1] > cut, 2, 1))
    r = torch.nn.functional.one_hot(init, 3).double() + 1e-3
    r = r / r.sum(dim=1, keepdim=True)
    for _ in range(iters):
        nk = r.sum(dim=0) + 1e-12
        pi = nk / n
        mu = (r.T @ x) / nk.unsqueeze(1)  # (3, 2)
        var = (r.unsqueeze(2) * (x.unsqueeze(1) - mu) ** 2).sum(dim=0) / nk.unsqueeze(1) + reg
        log_p = (pi.log() - 0.5 * (2 * math.pi * var).log().sum(dim=1)
                 - 0.5 * ((x.unsqueeze(1) - mu) ** 2 / var).sum(dim=2))
        r = log_p.softmax(dim=1)
    clean = int(mu[:, 0].argmin())
    rest = [k for k in range(3) if k != clean]
    noisy = max(rest, key=lambda k: float(mu[k, 1]))
    hard = rest[0] if rest[1] == noisy else rest[1]
    out[:, CLEAN_GROUP], out[:, HARD_GROUP], out[:, NOISY_GROUP] = r[:, clean].float(), r[:, hard].float(), r[:, noisy].float()
    return out


def class_group_probability(loss: torch.Tensor, against: torch.Tensor, labels: torch.Tensor,
                            min_class_size: int = 8) -> torch.Tensor:
    """:func:`three_group_probability` within each labelled class, (N, 3); a class with fewer than
    ``min_class_size`` samples is all clean (too few to fit three components)."""
    out = torch.zeros(loss.numel(), 3, dtype=torch.float, device=loss.device)
    out[:, CLEAN_GROUP] = 1.0
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel() >= min_class_size:
            out[idx] = three_group_probability(loss[idx], against[idx])
    return out


def group_flags(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N,) HARD / NOISY where that group's posterior exceeds ``threshold``, ORDINARY elsewhere."""
    flags = torch.full((probs.shape[0],), ORDINARY, dtype=torch.long, device=probs.device)
    flags[probs[:, HARD_GROUP] > threshold] = HARD
    flags[probs[:, NOISY_GROUP] > threshold] = NOISY
    return flags


@register_strategy("agreement_gmm")
class AgreementMixture(LossRule):
    """Args:
        threshold: a sample is HARD / NOISY when that group's posterior exceeds it (0.5).
        min_class_size: smaller classes are all clean (8).

    HARD samples weigh ``lambda_hard`` (1.5), NOISY ones ``lambda_noisy`` (0), as in the paper's
    rule; how many of each is the mixture's, per class, every epoch.
    """

    needs_votes = True

    def __init__(self, threshold: float = 0.5, min_class_size: int = 8) -> None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"agreement_gmm threshold must be in [0, 1), got {threshold}")
        if int(min_class_size) < 3:
            raise ValueError(f"agreement_gmm min_class_size must be >= 3, got {min_class_size}")
        self.threshold, self.min_class_size = float(threshold), int(min_class_size)

    def groups(self, view: SampleView) -> torch.Tensor:
        """(N, 3) the clean / hard / noisy posteriors of ``view``'s samples."""
        return class_group_probability(view.loss, against_label(view.agreement, view.mode_class, view.labels),
                                       view.labels, self.min_class_size)

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        return group_flags(self.groups(view), self.threshold)
