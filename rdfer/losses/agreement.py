"""What the clips of one video say about it: agreement, confidence, the clip vote, and the flags
ORDINARY / HARD / NOISY that the loss rules give (paper III-A; SPEC section 4)."""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

__all__ = ["ORDINARY", "HARD", "NOISY", "FLAG_NAMES", "AgreementStats", "agreement_stats", "agreement",
           "flag_samples", "class_quantile"]

ORDINARY, HARD, NOISY = 0, 1, 2
FLAG_NAMES = ("ordinary", "hard", "noisy")
class AgreementStats(NamedTuple):
    agreement: torch.Tensor  # (B,) share of clips whose arg-max is the mode class
    confidence: torch.Tensor  # (B,) mean over clips of the softmax probability of the mode class
    mode_class: torch.Tensor  # (B,) the most frequent clip prediction


def agreement_stats(clip_logits: torch.Tensor) -> AgreementStats:
    """Agreement, confidence and mode class from ``clip_logits`` (B, n_clips, K).

    A tie between modes (e.g. 2-2 with four clips) goes to the class with the higher summed
    probability over the clips.
    """
    n_clips, k = clip_logits.shape[1], clip_logits.shape[2]
    probs = clip_logits.detach().float().softmax(dim=-1)
    votes = F.one_hot(clip_logits.detach().argmax(dim=-1), k).sum(dim=1)  # (B, K)
    top = votes.max(dim=1).values
    summed = probs.sum(dim=1)
    mode = torch.where(votes == top.unsqueeze(1), summed, torch.full_like(summed, -1.0)).argmax(dim=1)
    return AgreementStats(
        agreement=top.float() / n_clips,
        confidence=summed.gather(1, mode.unsqueeze(1)).squeeze(1) / n_clips,
        mode_class=mode,
    )


def agreement(clip_logits: torch.Tensor) -> torch.Tensor:
    """Share of the ``n_clips`` clips predicting the most frequent class: ``(B, n, K) -> (B,)``.

    Four clips predicting Neutral, Surprise, Happy, Happy give 0.5 (the paper's example).
    """
    return agreement_stats(clip_logits).agreement


def _count(fraction: float, n: int) -> int:
    return int(math.floor(fraction * n + 0.5))


def _order(primary: torch.Tensor, secondary: torch.Tensor, descending: bool) -> torch.Tensor:
    """Indices sorted by (primary, secondary), both ascending or both descending; remaining
    ties keep index order (two stable sorts)."""
    idx = torch.sort(secondary, descending=descending, stable=True).indices
    return idx[torch.sort(primary[idx], descending=descending, stable=True).indices]


def flag_samples(
    agreement: torch.Tensor,
    loss: torch.Tensor,
    confidence: torch.Tensor,
    t_hard: float = 0.2,
    t_noisy: float = 0.1,
    noisy_requires_mismatch: bool = False,
    mode_class: Optional[torch.Tensor] = None,
    labels: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Flag N samples ORDINARY (0), HARD (1) or NOISY (2).

    The ``floor(t_hard*N + 0.5)`` samples of lowest agreement (ties: lower confidence first) are
    HARD; among the rest, the ``floor(t_noisy*N + 0.5)`` first in the order (agreement
    descending, loss descending) are NOISY. With ``noisy_requires_mismatch`` only samples whose
    ``mode_class`` differs from their label may be NOISY.

    Returns:
        LongTensor (N,) of flags.
    """
    n = agreement.numel()
    agreement, loss, confidence = agreement.detach().float(), loss.detach().float(), confidence.detach().float()
    flags = torch.full((n,), ORDINARY, dtype=torch.long, device=agreement.device)
    if n == 0:
        return flags
    hard = _order(agreement, confidence, descending=False)[: _count(t_hard, n)]
    flags[hard] = HARD
    candidates = _order(agreement, loss, descending=True)
    candidates = candidates[flags[candidates] == ORDINARY]
    if noisy_requires_mismatch:
        if mode_class is None or labels is None:
            raise ValueError("noisy_requires_mismatch=True needs mode_class and labels")
        candidates = candidates[mode_class[candidates] != labels[candidates]]
    flags[candidates[: _count(t_noisy, n)]] = NOISY
    return flags


def class_quantile(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each value's quantile within its labelled class, ``(N,) -> (N,)`` in ``(0, 1]``.

    The largest value of a class gets 1, the smallest ``1 / n_c``; ties keep index order. Ranking
    by it instead of by the raw value takes the same share from every class, so a rare class
    whose clean samples all have high loss is not flagged wholesale.
    """
    q = torch.zeros_like(values, dtype=torch.float)
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        order = torch.sort(values[idx], stable=True).indices
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(1, idx.numel() + 1, device=values.device)
        q[idx] = ranks.float() / idx.numel()
    return q
