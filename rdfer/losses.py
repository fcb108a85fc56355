"""Agreement-based loss reweighting (paper III-A, Eq. 2; SPEC section 4).

If the per-clip predictions of a video disagree, the video is HARD: learn more from it. If they
agree but the loss is high, the label is probably wrong (NOISY): learn less. Everything else is
ORDINARY.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ROBUST_STRATEGIES",
    "ALL_STRATEGIES",
    "class_quantile",
    "ORDINARY",
    "HARD",
    "NOISY",
    "FLAG_NAMES",
    "STRATEGIES",
    "AgreementStats",
    "agreement",
    "agreement_stats",
    "flag_samples",
    "flags_for_strategy",
    "AgreementLoss",
]

ORDINARY, HARD, NOISY = 0, 1, 2
FLAG_NAMES = ("ordinary", "hard", "noisy")
# Table IV: vanilla CE, big-loss strengthening / weakening (the small-loss trick), hard only,
# noisy only, and both (RDFER).
STRATEGIES = ("ce", "bigloss_up", "bigloss_down", "hard_up", "noisy_down", "agreement")
# Beyond the paper (issue 14), measured in benchmarks/noise_robustness.py:
# * ``gce``: generalized cross-entropy (Zhang & Sabuncu, 2018), a robust loss that needs no flags;
# * ``class_small_loss``: the small-loss trick ranked within each labelled class (per-class
#   quantiles), so a rare class whose clean samples all have high loss is not dropped wholesale;
# * ``vote_small_loss``: NOISY = the highest losses among samples whose clips agree
#   (agreement >= ``agree_min``) on a class that is not the label;
# * ``hard_disagree``: HARD = the highest losses among samples whose clips disagree;
# * ``consensus``: both, with the NOISY candidates ranked by their per-class loss quantile.
# * ``clip_vote``: every sample whose clips agree on a class that is not its label is NOISY, up
#   to ``noisy_max`` of the set (the count follows the noise instead of a fixed ``t_noisy``);
#   HARD as in ``hard_disagree``.
ROBUST_STRATEGIES = ("gce", "class_small_loss", "vote_small_loss", "hard_disagree", "consensus", "clip_vote")
ALL_STRATEGIES = STRATEGIES + ROBUST_STRATEGIES


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


def _robust_flags(strategy: str, agreement: torch.Tensor, loss: torch.Tensor, mode_class: torch.Tensor,
                  labels: torch.Tensor, t_hard: float, t_noisy: float, agree_min: float,
                  noisy_max: float) -> torch.Tensor:
    """Flags of the :data:`ROBUST_STRATEGIES`; at most ``floor(t*N + 0.5)`` of each kind
    (``clip_vote``: ``t_noisy`` is replaced by ``noisy_max``, a cap rather than a quota)."""
    n = agreement.numel()
    flags = torch.full((n,), ORDINARY, dtype=torch.long, device=agreement.device)
    if strategy == "class_small_loss":
        by_rank = _order(class_quantile(loss, labels), loss, descending=True)
        flags[by_rank[: _count(t_noisy, n)]] = NOISY
        return flags
    agree = agreement >= agree_min - 1e-6
    if strategy in ("vote_small_loss", "consensus", "clip_vote"):
        # The clips settle on a class and it is not the label: the label is suspect; among those,
        # the highest losses (within their labelled class for "consensus") are the most suspect.
        suspect = (agree & (mode_class != labels)).nonzero().squeeze(1)
        key = class_quantile(loss, labels)[suspect] if strategy == "consensus" else loss[suspect]
        ranked = suspect[_order(key, loss[suspect], descending=True)]
        flags[ranked[: _count(noisy_max if strategy == "clip_vote" else t_noisy, n)]] = NOISY
    if strategy in ("hard_disagree", "consensus", "clip_vote"):
        # Hard = the clips disagree *and* the video is not learnt yet (high loss).
        split = (~agree & (flags == ORDINARY)).nonzero().squeeze(1)
        ranked = split[torch.sort(loss[split], descending=True, stable=True).indices]
        flags[ranked[: _count(t_hard, n)]] = HARD
    return flags


def flags_for_strategy(
    strategy: str,
    agreement: torch.Tensor,
    loss: torch.Tensor,
    confidence: torch.Tensor,
    t_hard: float,
    t_noisy: float,
    noisy_requires_mismatch: bool = False,
    mode_class: Optional[torch.Tensor] = None,
    labels: Optional[torch.Tensor] = None,
    agree_min: float = 0.75,
    noisy_max: float = 0.5,
) -> torch.Tensor:
    """Flags for one of the Table IV :data:`STRATEGIES` or the :data:`ROBUST_STRATEGIES`.

    ``bigloss_up`` flags the top ``t_hard`` by loss HARD, ``bigloss_down`` the top ``t_noisy``
    by loss NOISY (the small-loss trick); ``hard_up`` / ``noisy_down`` keep one kind of the
    agreement flags; ``agreement`` keeps both; ``ce`` and ``gce`` flag nothing. The robust
    strategies need ``mode_class`` and ``labels``; see :func:`_robust_flags`.
    """
    if strategy not in ALL_STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {ALL_STRATEGIES}")
    n = agreement.numel()
    flags = torch.full((n,), ORDINARY, dtype=torch.long, device=agreement.device)
    if strategy in ("ce", "gce") or n == 0:
        return flags
    if strategy in ROBUST_STRATEGIES:
        if mode_class is None or labels is None:
            raise ValueError(f"strategy {strategy!r} needs mode_class and labels")
        return _robust_flags(strategy, agreement.detach().float(), loss.detach().float(), mode_class, labels,
                             t_hard, t_noisy, agree_min, noisy_max)
    if strategy in ("bigloss_up", "bigloss_down"):
        by_loss = torch.sort(loss.detach().float(), descending=True, stable=True).indices
        if strategy == "bigloss_up":
            flags[by_loss[: _count(t_hard, n)]] = HARD
        else:
            flags[by_loss[: _count(t_noisy, n)]] = NOISY
        return flags
    flags = flag_samples(agreement, loss, confidence, t_hard, t_noisy, noisy_requires_mismatch, mode_class, labels)
    if strategy == "hard_up":
        flags[flags == NOISY] = ORDINARY
    elif strategy == "noisy_down":
        flags[flags == HARD] = ORDINARY
    return flags


class AgreementLoss(nn.Module):
    """Agreement-based reweighted cross-entropy (SPEC 4).

    ``loss = (1/B) sum_i w_i (CE_ls(logits_i, y_i) + aux_weight * mean_k CE_ls(clip_logits_ik, y_i)
    + locator_weight * CE(MIL(glimpse_logits_i), y_i))`` with ``w_i`` = ``lambda_hard`` /
    ``lambda_noisy`` / ``lambda_ordinary`` by flag. The last term exists only for models whose
    locator gives per-glimpse evidence (``locator="peak"``, the default, or ``"saliency"``); its
    target is the label or, with ``locator_target="prediction"``, the model's own (detached)
    video prediction. With ``strategy="gce"`` the CE terms are generalized cross-entropy.

    Scope ``"epoch"`` (default): a memory keyed by dataset index keeps each sample's latest
    agreement, unsmoothed loss and confidence; :meth:`step_epoch` (call it at the end of every
    epoch) flags all seen samples and those flags weight the next epoch. Scope ``"batch"``: flags
    are computed inside each batch. Before epoch ``start_epoch`` the loss is plain CE.

    Args:
        num_samples: size of the training set (indices are ``0 .. num_samples-1``).
        strategy: one of :data:`ALL_STRATEGIES` (Table IV's six, then the robust rules).
        class_weight: optional (K,) weights for class-weighted CE.
        locator_weight: weight of the locator's multiple-instance term ("peak" and "saliency" locators).
        locator_target: ``"label"`` or ``"prediction"`` (the target of that term).
        agree_min: the agreement from which clips count as agreeing (robust strategies).
        memory_momentum: ``m`` of the per-sample history: a seen sample's remembered loss and
            agreement become ``m * old + (1 - m) * new`` (0: the latest value only).
        gce_q: ``q`` of the generalized cross-entropy ``(1 - p_y^q) / q`` (strategy ``"gce"``).
        noisy_max: strategy ``"clip_vote"``: the largest share of the set flagged NOISY.
        logit_adjustment: ``tau`` of the logit-adjusted loss: the training loss sees
            ``logits + tau * log(class_prior)``, so the raw logits learn class-balanced scores
            (higher recall on rare classes); 0 (default) is plain CE.
        class_prior: (K,) class frequencies of the training labels (needed by ``logit_adjustment``).

    Call: ``criterion(output, target, index)`` with ``output`` an :class:`~rdfer.RDFEROutput`
    (or anything with ``logits`` (B, K) and ``clip_logits`` (B, n, K)), ``target`` (B,) and
    ``index`` (B,) dataset indices. ``criterion.last_flags`` holds the flags used.
    """

    def __init__(
        self,
        num_samples: int,
        t_hard: float = 0.2,
        t_noisy: float = 0.1,
        lambda_hard: float = 1.5,
        lambda_noisy: float = 0.0,
        lambda_ordinary: float = 1.0,
        label_smoothing: float = 0.1,
        aux_weight: float = 0.1,
        scope: str = "epoch",
        strategy: str = "agreement",
        start_epoch: int = 0,
        noisy_requires_mismatch: bool = False,
        class_weight: Optional[torch.Tensor] = None,
        locator_weight: float = 1.0,
        locator_target: str = "label",
        agree_min: float = 0.75,
        memory_momentum: float = 0.0,
        gce_q: float = 0.7,
        noisy_max: float = 0.5,
        logit_adjustment: float = 0.0,
        class_prior: Optional[torch.Tensor] = None,
        noisy_class_guard: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= noisy_class_guard <= 1.0:
            raise ValueError(f"noisy_class_guard must be in [0, 1], got {noisy_class_guard}")
        # Issue 28: a sample is flagged NOISY only if its labelled class is one the model already
        # recognises (recall on the remembered training samples >= the guard); an unlearned
        # (often rare) class's samples would otherwise be dropped as "wrong" forever.
        self.noisy_class_guard = noisy_class_guard
        if not 0.0 <= memory_momentum < 1.0:
            raise ValueError(f"memory_momentum must be in [0, 1), got {memory_momentum}")
        if not 0.0 < gce_q <= 1.0:
            raise ValueError(f"gce_q must be in (0, 1], got {gce_q}")
        self.agree_min, self.memory_momentum, self.gce_q = agree_min, memory_momentum, gce_q
        if not 0.0 <= noisy_max <= 1.0:
            raise ValueError(f"noisy_max must be in [0, 1], got {noisy_max}")
        self.noisy_max = noisy_max
        if logit_adjustment and class_prior is None:
            raise ValueError("logit_adjustment needs class_prior (the training labels' class frequencies)")
        self.logit_adjustment = logit_adjustment
        # tau * log(prior), added to the logits inside the training loss only (Menon et al., ICLR
        # 2021): the raw logits, which predict, become a class-balanced classifier.
        self.register_buffer("logit_offset", None if not logit_adjustment else
                             logit_adjustment * torch.as_tensor(class_prior, dtype=torch.float).clamp_min(1e-8).log())
        if locator_target not in ("label", "prediction"):
            raise ValueError(f"locator_target must be 'label' or 'prediction', got {locator_target!r}")
        self.locator_weight, self.locator_target = locator_weight, locator_target
        if scope not in ("epoch", "batch"):
            raise ValueError(f"scope must be 'epoch' or 'batch', got {scope!r}")
        if strategy not in ALL_STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {ALL_STRATEGIES}")
        self.num_samples = num_samples
        self.t_hard, self.t_noisy = t_hard, t_noisy
        self.label_smoothing, self.aux_weight = label_smoothing, aux_weight
        self.scope, self.strategy, self.start_epoch = scope, strategy, start_epoch
        self.noisy_requires_mismatch = noisy_requires_mismatch
        self.register_buffer("weights", torch.tensor([lambda_ordinary, lambda_hard, lambda_noisy]))
        self.register_buffer("class_weight", None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float))
        # Per-sample memory. `stamp` = the update counter when a sample was last seen (0: never),
        # which also settles which process's entry wins when memories are merged under DDP.
        self.register_buffer("mem_agreement", torch.zeros(num_samples))
        self.register_buffer("mem_loss", torch.zeros(num_samples))
        self.register_buffer("mem_confidence", torch.zeros(num_samples))
        self.register_buffer("mem_mode", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("mem_label", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("mem_stamp", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("flags", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.last_flags: Optional[torch.Tensor] = None

    @property
    def active(self) -> bool:
        """Whether reweighting applies now (a flagging strategy and past ``start_epoch``)."""
        return self.strategy not in ("ce", "gce") and int(self.epoch) >= self.start_epoch

    def per_sample_ce(self, logits: torch.Tensor, clip_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``CE_ls(video) + aux_weight * mean_k CE_ls(clip_k)`` per sample, shape (B,).

        With strategy ``"gce"`` each CE term is the generalized cross-entropy instead."""
        video = self._base_loss(logits, target)
        if self.aux_weight == 0:
            return video
        n = clip_logits.shape[1]
        clips = self._base_loss(clip_logits.flatten(0, 1), target.repeat_interleave(n))
        return video + self.aux_weight * clips.view(-1, n).mean(dim=1)

    def _base_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.logit_offset is not None:
            logits = logits + self.logit_offset.to(logits.dtype)
        if self.strategy == "gce":
            # Bounded in [0, 1/q]: a wrong label cannot pull as hard as under CE (q -> 0 gives CE).
            p = logits.float().softmax(dim=-1).gather(1, target.unsqueeze(1)).squeeze(1).clamp_min(1e-7)
            loss = (1 - p ** self.gce_q) / self.gce_q
            return loss * self.class_weight[target] if self.class_weight is not None else loss
        return F.cross_entropy(logits, target, weight=self.class_weight, label_smoothing=self.label_smoothing,
                               reduction="none")

    def forward(self, output, target: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        logits, clip_logits = output.logits, output.clip_logits
        target, index = target.long(), index.long().to(self.mem_stamp.device)
        stats = agreement_stats(clip_logits)
        plain = F.cross_entropy(logits.detach().float(), target, reduction="none")  # ranking loss: unsmoothed
        self._remember(index, stats, plain, target)
        if not self.active:
            flags = torch.zeros_like(target)
        elif self.scope == "epoch":
            flags = self.flags[index].to(target.device)
        else:
            flags = self._strategy_flags(stats.agreement, plain, stats.confidence, stats.mode_class, target)
        self.last_flags = flags.detach()
        w = self.weights.to(logits.dtype)[flags]
        per_sample = self.per_sample_ce(logits, clip_logits, target)
        glimpse_logits = getattr(output, "glimpse_logits", None)
        if self.locator_weight and glimpse_logits is not None and glimpse_logits.shape[1] > 0:
            per_sample = per_sample + self.locator_weight * self.locator_loss(glimpse_logits, logits, target)
        return (w * per_sample).sum() / target.shape[0]

    def locator_loss(self, glimpse_logits: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Multiple-instance CE of the evidence locators' pooled glimpse logits, per sample (B,)."""
        from .model.sampler import mil_logits  # here, not at the top: rdfer.model imports this module

        goal = target if self.locator_target == "label" else logits.detach().argmax(dim=-1)
        return F.cross_entropy(mil_logits(glimpse_logits), goal, reduction="none")

    def _strategy_flags(self, agreement, loss, confidence, mode, labels) -> torch.Tensor:
        flags = flags_for_strategy(
            self.strategy, agreement, loss, confidence, self.t_hard, self.t_noisy,
            self.noisy_requires_mismatch, mode, labels, self.agree_min, self.noisy_max,
        )
        if self.noisy_class_guard > 0:
            recall = self.class_recall(int(labels.max()) + 1 if labels.numel() else None).to(labels.device)
            unlearned = recall[labels] < self.noisy_class_guard
            flags = torch.where((flags == NOISY) & unlearned, torch.full_like(flags, ORDINARY), flags)
        return flags

    @torch.no_grad()
    def class_recall(self, num_classes: Optional[int] = None) -> torch.Tensor:
        """Per class, the share of the remembered training samples labelled with it whose clip
        vote is that class: how well the model recognises each labelled class, ``(K,)``. A class
        with no remembered sample has recall 0."""
        seen = self.mem_stamp > 0
        labels, mode = self.mem_label[seen], self.mem_mode[seen]
        k = int(num_classes or (int(labels.max()) + 1 if labels.numel() else 1))
        k = max(k, int(mode.max()) + 1 if mode.numel() else 1)
        total = torch.bincount(labels, minlength=k).float()
        hit = torch.bincount(labels[mode == labels], minlength=k).float()
        return hit / total.clamp_min(1)

    @torch.no_grad()
    def _remember(self, index, stats: AgreementStats, loss, target) -> None:
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise IndexError(f"sample index out of range [0, {self.num_samples}): {index.tolist()}")
        self.updates += 1
        dev = self.mem_stamp.device
        agreement, loss = stats.agreement.to(dev), loss.to(dev).float()
        if self.memory_momentum > 0:
            # History: blend with what was remembered (first sight: the value itself).
            m = torch.where(self.mem_stamp[index] > 0, self.memory_momentum, 0.0)
            agreement = m * self.mem_agreement[index] + (1 - m) * agreement
            loss = m * self.mem_loss[index] + (1 - m) * loss
        self.mem_agreement[index] = agreement
        self.mem_loss[index] = loss
        self.mem_confidence[index] = stats.confidence.to(dev)
        self.mem_mode[index] = stats.mode_class.to(dev)
        self.mem_label[index] = target.to(dev)
        self.mem_stamp[index] = self.updates.to(dev)

    @torch.no_grad()
    def sync_memory(self) -> None:
        """Merge the memories of all DistributedDataParallel processes (no-op otherwise).

        Per index, the entry with the newest stamp wins (ties: lowest rank), so every process
        ends up with the same memory whatever the split of samples.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        world = dist.get_world_size()
        names = ("mem_agreement", "mem_loss", "mem_confidence", "mem_mode", "mem_label", "mem_stamp")
        gathered = {}
        for name in names:
            local = getattr(self, name)
            parts = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(parts, local.contiguous())
            gathered[name] = torch.stack(parts)  # (world, N)
        # Newest stamp wins; argmax returns the first (lowest) rank on ties.
        winner = gathered["mem_stamp"].argmax(dim=0, keepdim=True)
        for name in names:
            getattr(self, name).copy_(gathered[name].gather(0, winner).squeeze(0))

    @torch.no_grad()
    def step_epoch(self) -> torch.Tensor:
        """End of an epoch: merge memories across processes, flag every seen sample for the next
        epoch (never-seen indices stay ORDINARY), advance the epoch counter. Returns the flags."""
        self.sync_memory()
        seen = (self.mem_stamp > 0).nonzero().squeeze(1)
        flags = torch.zeros_like(self.flags)
        if seen.numel():
            flags[seen] = self._strategy_flags(
                self.mem_agreement[seen], self.mem_loss[seen], self.mem_confidence[seen],
                self.mem_mode[seen], self.mem_label[seen],
            )
        self.flags.copy_(flags)
        self.epoch += 1
        return flags
