"""The training criterion: reweighted or target-corrected cross-entropy from what the clips of
each video say (paper III-A, Eq. 2; SPEC section 4). The rule ("strategy") comes from the
registry of :mod:`rdfer.losses.registry`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .agreement import NOISY, ORDINARY, AgreementStats, agreement_stats
from .mixing import Mix, draw_mix, mix_inputs
from .registry import FlagOptions, LossRule, SampleView, create_strategy

__all__ = ["AgreementLoss", "flags_for_strategy"]


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
    """Flags (N,) of the registered rule ``strategy`` for N samples.

    ``bigloss_up`` flags the top ``t_hard`` by loss HARD, ``bigloss_down`` the top ``t_noisy``
    by loss NOISY (the small-loss trick); ``hard_up`` / ``noisy_down`` keep one kind of the
    agreement flags; ``agreement`` keeps both; ``ce`` and ``gce`` flag nothing. Rules that read
    the clip vote (``LossRule.needs_votes``) need ``mode_class`` and ``labels``.
    """
    rule = create_strategy(strategy)
    return _rule_flags(rule, SampleView(agreement, loss, confidence, mode_class, labels),
                       FlagOptions(t_hard, t_noisy, noisy_requires_mismatch, agree_min, noisy_max))


def _rule_flags(rule: LossRule, view: SampleView, options: FlagOptions) -> torch.Tensor:
    n = view.agreement.numel()
    if n == 0:
        return torch.full((0,), ORDINARY, dtype=torch.long, device=view.agreement.device)
    if rule.needs_votes and (view.mode_class is None or view.labels is None):
        raise ValueError(f"strategy {rule.name!r} needs mode_class and labels")
    view = SampleView(view.agreement.detach().float(), view.loss.detach().float(),
                      view.confidence.detach().float(), view.mode_class, view.labels)
    return rule.flags(view, options)


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
        strategy: a registered rule name (:func:`~rdfer.list_strategies`: Table IV's six, the
            robust flag rules, the label-correcting rules ``elr``, ``clip_correct``, ``mixture``)
            or a :class:`~rdfer.LossRule` instance.
        strategy_options: keyword arguments of the rule (e.g. ``{"source": "clips"}`` for ``elr``).
        num_classes: K; needed by the rules that keep (N, K) per-sample state (``elr``,
            ``clip_correct``, ``mixture``).
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
        mixup: ``alpha`` of mixup on the video batch (0: off): :meth:`step` mixes the inputs and
            the loss mixes each row's term with its partner's (targets and weights alike).

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
        num_classes: Optional[int] = None,
        strategy_options: Optional[Dict[str, Any]] = None,
        mixup: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= mixup < float("inf"):
            raise ValueError(f"mixup must be >= 0 (the Beta distribution's alpha; 0: off), got {mixup}")
        self.mixup = float(mixup)
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
        self.rule = create_strategy(strategy, **(strategy_options or {}))
        if self.rule.needs_num_classes:
            if not num_classes or num_classes < 1:
                raise ValueError(f"strategy {self.rule.name!r} needs num_classes")
            if scope != "epoch":
                raise ValueError(f"strategy {self.rule.name!r} works on the per-sample memory: scope must be 'epoch'")
        self.num_classes = num_classes
        self.num_samples = num_samples
        self.t_hard, self.t_noisy = t_hard, t_noisy
        self.label_smoothing, self.aux_weight = label_smoothing, aux_weight
        self.scope, self.strategy, self.start_epoch = scope, self.rule.name, start_epoch
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
        # Per-sample buffers merged across DDP processes (newest stamp wins); rules add theirs.
        self._sample_buffers: List[str] = ["mem_agreement", "mem_loss", "mem_confidence", "mem_mode", "mem_label",
                                           "mem_stamp"]
        if getattr(self.rule, "remembers_probs", False):  # the mean clip probabilities, (N, K)
            self.register_sample_buffer("mem_probs", torch.zeros(num_samples, num_classes))
        self.rule.setup(self)

    def register_sample_buffer(self, name: str, tensor: torch.Tensor) -> None:
        """A buffer of per-sample state, first dimension ``num_samples``: saved in checkpoints and
        merged across DistributedDataParallel processes like the memory."""
        if tensor.shape[0] != self.num_samples:
            raise ValueError(f"sample buffer {name!r} must have {self.num_samples} rows, got {tuple(tensor.shape)}")
        self.register_buffer(name, tensor)
        self._sample_buffers.append(name)

    @property
    def flag_options(self) -> FlagOptions:
        return FlagOptions(self.t_hard, self.t_noisy, self.noisy_requires_mismatch, self.agree_min, self.noisy_max)

    @property
    def active(self) -> bool:
        """Whether reweighting applies now (a reweighting rule and past ``start_epoch``)."""
        return self.rule.reweights and int(self.epoch) >= self.start_epoch

    def per_sample_ce(self, logits: torch.Tensor, clip_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``CE_ls(video) + aux_weight * mean_k CE_ls(clip_k)`` per sample, shape (B,); ``target``
        is (B,) labels or (B, K) soft targets. The rule may replace CE (``gce``)."""
        video = self._base_loss(logits, target)
        if self.aux_weight == 0:
            return video
        n = clip_logits.shape[1]
        clips = self._base_loss(clip_logits.flatten(0, 1), target.repeat_interleave(n, dim=0))
        return video + self.aux_weight * clips.view(-1, n).mean(dim=1)

    def _base_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.logit_offset is not None:
            logits = logits + self.logit_offset.to(logits.dtype)
        return self.rule.base_loss(self, logits, target)

    def forward(self, output, target: torch.Tensor, index: torch.Tensor, mix: Optional[Mix] = None) -> torch.Tensor:
        """The batch's loss, a scalar: :meth:`sample_losses` summed over the batch, divided by B."""
        return self.sample_losses(output, target, index, mix).sum() / target.shape[0]

    def step(self, net: nn.Module, video: torch.Tensor, target: torch.Tensor, index: torch.Tensor):
        """One training step's forward pass and loss: ``(output, loss)``. With ``mixup`` the
        inputs are mixed first (:mod:`rdfer.losses.mixing`)."""
        mix = draw_mix(self.mixup, video.shape[0], video.device)
        output = net(mix_inputs(video, mix))
        return output, self(output, target, index, mix)

    def remember(self, output, target: torch.Tensor, index: torch.Tensor) -> AgreementStats:
        """Record what ``output`` says about the samples ``index`` in the per-sample memory
        (agreement, confidence, vote, the unsmoothed CE against ``target``) without a loss."""
        return self._observe(output, target.long(), index.long().to(self.mem_stamp.device))[0]

    @torch.no_grad()
    def _observe(self, output, target: torch.Tensor, index: torch.Tensor):
        """What the batch says, remembered: its clip statistics and unsmoothed CE (the ranking loss)."""
        stats = agreement_stats(output.clip_logits)
        plain = F.cross_entropy(output.logits.detach().float(), target, reduction="none")
        self._remember(index, stats, plain, target, output.clip_logits)
        return stats, plain

    def sample_losses(self, output, target: torch.Tensor, index: torch.Tensor, mix: Optional[Mix] = None) -> torch.Tensor:
        """(B,) each sample's weighted loss; remembers the batch. With ``mix`` (the inputs were
        mixed) each row's term is ``lam * term(own target) + (1 - lam) * term(partner's)``."""
        target, index = target.long(), index.long().to(self.mem_stamp.device)
        stats, plain = self._observe(output, target, index)
        if not self.active:
            flags = torch.zeros_like(target)
        elif self.scope == "epoch":
            flags = self.flags[index].to(target.device)
        else:
            flags = self._strategy_flags(stats.agreement, plain, stats.confidence, stats.mode_class, target)
        self.last_flags = flags.detach()
        per_sample = self._term(output, target, index, flags)
        if mix is not None:
            partner = mix.perm.to(target.device)
            # The rule's per-sample regulariser (ELR's running target) is the own sample's only.
            per_sample = mix.lam * per_sample + (1.0 - mix.lam) * self._term(
                output, target[partner], index[partner.to(index.device)], flags[partner], regulariser=False)
        return per_sample

    def _term(self, output, target: torch.Tensor, index: torch.Tensor, flags: torch.Tensor,
              regulariser: bool = True) -> torch.Tensor:
        """(B,) the weighted loss of ``output`` against the samples ``index`` (labels ``target``)."""
        logits, clip_logits = output.logits, output.clip_logits
        w = self.weights.to(logits.dtype)[flags]
        extra_w = self.rule.sample_weights(self, index)
        if extra_w is not None:
            w = w * extra_w.to(device=w.device, dtype=w.dtype)
        goal = self.rule.targets(self, target, index)
        per_sample = self.per_sample_ce(logits, clip_logits, target if goal is None else goal.to(logits.dtype))
        extra = self.rule.extra_loss(self, logits, clip_logits, index) if regulariser else None
        if extra is not None:
            per_sample = per_sample + extra.to(per_sample.dtype)
        glimpse_logits = getattr(output, "glimpse_logits", None)
        if self.locator_weight and glimpse_logits is not None and glimpse_logits.shape[1] > 0:
            per_sample = per_sample + self.locator_weight * self.locator_loss(glimpse_logits, logits, target,
                                                                              getattr(output, "centres", None))
        return w * per_sample

    def locator_loss(self, glimpse_logits: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                     centres: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Multiple-instance CE of the evidence locators' pooled glimpse logits, per sample (B,);
        with ``centres`` (B, C) ("keyinstance"), plus the mean L1 distance of the sorted centres
        to the key-instance pseudo-targets (:func:`~rdfer.model.sampler.keyinstance_targets`)."""
        from ..model.sampler import keyinstance_targets, mil_logits  # here: rdfer.model imports this module

        goal = target if self.locator_target == "label" else logits.detach().argmax(dim=-1)
        loss = F.cross_entropy(mil_logits(glimpse_logits), goal, reduction="none")
        if centres is not None and centres.numel():
            pseudo = keyinstance_targets(glimpse_logits, goal, centres.shape[1]).to(centres.dtype)
            loss = loss + (centres.sort(dim=1).values - pseudo).abs().mean(dim=1)
        return loss

    def _strategy_flags(self, agreement, loss, confidence, mode, labels) -> torch.Tensor:
        flags = _rule_flags(self.rule, SampleView(agreement, loss, confidence, mode, labels), self.flag_options)
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
    def _remember(self, index, stats: AgreementStats, loss, target, clip_logits=None) -> None:
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
        if "mem_probs" in self._sample_buffers and clip_logits is not None:
            self.mem_probs[index] = clip_logits.detach().float().softmax(dim=-1).mean(dim=1).to(dev)

    @torch.no_grad()
    def corrected_labels(self) -> torch.Tensor:
        """(N,) the label each training sample is trained toward now: the given label, or the
        rule's correction (``elr``: the argmax of its target; ``clip_correct``, ``mixture``: of the
        soft target)."""
        return self.rule.corrected_labels(self)

    @torch.no_grad()
    def sync_memory(self) -> None:
        """Merge the memories of all DistributedDataParallel processes (no-op otherwise).

        Per index, the entry with the newest stamp wins (ties: lowest rank), so every process
        ends up with the same memory whatever the split of samples.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        world = dist.get_world_size()
        names = tuple(self._sample_buffers)
        gathered = {}
        for name in names:
            local = getattr(self, name)
            parts = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(parts, local.contiguous())
            gathered[name] = torch.stack(parts)  # (world, N)
        # Newest stamp wins; argmax returns the first (lowest) rank on ties.
        winner = gathered["mem_stamp"].argmax(dim=0)
        rows = torch.arange(self.num_samples, device=winner.device)
        for name in names:
            getattr(self, name).copy_(gathered[name][winner, rows])

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
        self.rule.end_epoch(self, seen, flags[seen])
        self.epoch += 1
        return flags
