"""Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018): a bounded loss, no flags."""

from __future__ import annotations

import torch

from .registry import LossRule, register_strategy


@register_strategy("gce")
class GeneralizedCrossEntropy(LossRule):
    """``(1 - p_y^q) / q`` in place of every CE term (``q`` = the criterion's ``gce_q``)."""

    reweights = False

    def base_loss(self, criterion, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Bounded in [0, 1/q]: a wrong label cannot pull as hard as under CE (q -> 0 gives CE).
        probs = logits.float().softmax(dim=-1)
        p = (probs * target).sum(1) if target.dim() == 2 else probs.gather(1, target.unsqueeze(1)).squeeze(1)
        q = criterion.gce_q
        loss = (1 - p.clamp_min(1e-7) ** q) / q
        if criterion.class_weight is None:
            return loss
        w = target.float() @ criterion.class_weight if target.dim() == 2 else criterion.class_weight[target]
        return loss * w
