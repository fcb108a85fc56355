"""Early-learning regularisation (ELR; Liu et al., NeurIPS 2020), fed by the clips if asked.

Early in training a network fits the clean labels first. ELR keeps, per training sample, a
running average ``t_i`` of the model's own predictions and adds ``lam * log(1 - <t_i, p_i>)`` to
the loss: the prediction is held close to what the model believed early, so a wrong label is not
memorised later. The argmax of ``t_i`` is the label the model believes.
"""

from __future__ import annotations

from typing import Optional

import torch

from .registry import LossRule, register_strategy


@register_strategy("elr")
class EarlyLearningRegularization(LossRule):
    """Args:
        lam: weight of the regulariser (3, the paper's CIFAR-10 value).
        beta: momentum of the per-sample target ``t_i <- beta * t_i + (1 - beta) * p_i`` (0.7).
        source: what updates ``t_i``: ``"video"`` (the video prediction, as the paper) or
            ``"clips"`` (the mean of the clip predictions: the temporal ensemble the clips give).
    """

    reweights = False
    needs_num_classes = True

    def __init__(self, lam: float = 3.0, beta: float = 0.7, source: str = "video") -> None:
        if not 0.0 <= lam <= 100.0:
            raise ValueError(f"elr lam must be in [0, 100], got {lam}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"elr beta must be in [0, 1), got {beta}")
        if source not in ("video", "clips"):
            raise ValueError(f"elr source must be 'video' or 'clips', got {source!r}")
        self.lam, self.beta, self.source = float(lam), float(beta), source

    def setup(self, criterion) -> None:
        criterion.register_sample_buffer("elr_target", torch.zeros(criterion.num_samples, criterion.num_classes))

    def extra_loss(self, criterion, logits: torch.Tensor, clip_logits: torch.Tensor,
                   index: torch.Tensor) -> Optional[torch.Tensor]:
        p = logits.float().softmax(dim=-1).clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            src = p if self.source == "video" else clip_logits.float().softmax(dim=-1).mean(dim=1).clamp(1e-4, 1 - 1e-4)
            src = src / src.sum(dim=1, keepdim=True)
            buf = criterion.elr_target
            t = self.beta * buf[index] + (1 - self.beta) * src.to(buf.device)
            buf[index] = t
        inner = (t.to(p.device) * p).sum(dim=1)
        return self.lam * (1 - inner).clamp_min(1e-7).log()

    def corrected_labels(self, criterion) -> torch.Tensor:
        believed = criterion.elr_target.argmax(dim=1)
        return torch.where(criterion.mem_stamp > 0, believed, criterion.mem_label)
