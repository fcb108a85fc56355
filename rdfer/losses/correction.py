"""Clip-consensus label correction: where a video's clips agree, confidently, on a class that is
not its label, train it toward a mix of the label and the clips' consensus (bootstrapping; Reed et
al., 2015), weighted by how strongly they agree, instead of shrinking its weight."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .agreement import NOISY, ORDINARY
from .registry import FlagOptions, LossRule, SampleView, register_strategy


class _SoftTargets(LossRule):
    """Rules that train every sample toward a soft target set at the end of each epoch from the
    per-sample memory (``mem_probs``: the mean clip probabilities when the sample was last seen)."""

    reweights = False
    needs_votes = True
    needs_num_classes = True
    remembers_probs = True

    def setup(self, criterion) -> None:
        n, k = criterion.num_samples, criterion.num_classes
        criterion.register_buffer("soft_target", torch.zeros(n, k))
        criterion.register_buffer("has_target", torch.zeros(n, dtype=torch.bool))

    def targets(self, criterion, target: torch.Tensor, index: torch.Tensor) -> Optional[torch.Tensor]:
        if int(criterion.epoch) < criterion.start_epoch or not bool(criterion.has_target.any()):
            return None
        goal = F.one_hot(target, criterion.num_classes).float()
        mine = criterion.has_target[index].to(goal.device)
        return torch.where(mine.unsqueeze(1), criterion.soft_target[index].to(goal.device), goal)

    def set_targets(self, criterion, seen: torch.Tensor, soft: torch.Tensor) -> None:
        criterion.soft_target[seen] = soft / soft.sum(dim=1, keepdim=True).clamp_min(1e-12)
        criterion.has_target[seen] = True

    def corrected_labels(self, criterion) -> torch.Tensor:
        believed = criterion.soft_target.argmax(dim=1)
        return torch.where(criterion.has_target, believed, criterion.mem_label)


@register_strategy("clip_correct")
class ClipConsensusCorrection(_SoftTargets):
    """Args:
        min_confidence: the clips' mean probability of their vote from which a correction starts
            (0.5); the clips must also agree (agreement >= the criterion's ``agree_min``).

    Flags NOISY the samples it corrects (a report only: no sample is down-weighted). Target of a
    corrected sample: ``(1 - a) * onehot(label) + a * consensus`` with ``a = agreement *
    confidence``; every other sample keeps its label.
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"clip_correct min_confidence must be in [0, 1], got {min_confidence}")
        self.min_confidence = float(min_confidence)

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        corrected = ((view.agreement >= options.agree_min - 1e-6) & (view.mode_class != view.labels)
                     & (view.confidence >= self.min_confidence - 1e-6))
        return torch.where(corrected, NOISY, ORDINARY).long()

    def end_epoch(self, criterion, seen: torch.Tensor, flags: torch.Tensor) -> None:
        if int(criterion.epoch) + 1 < criterion.start_epoch:
            return
        a = torch.where(flags == NOISY, criterion.mem_agreement[seen] * criterion.mem_confidence[seen], 0.0)
        label = F.one_hot(criterion.mem_label[seen], criterion.num_classes).float()
        self.set_targets(criterion, seen, (1 - a).unsqueeze(1) * label + a.unsqueeze(1) * criterion.mem_probs[seen])
