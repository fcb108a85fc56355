"""Mixup on a video batch (Zhang et al., ICLR 2018), as every rule's option (``--mixup ALPHA``).

A mixed sample is ``lam * x_i + (1 - lam) * x_perm(i)`` with ``lam ~ Beta(alpha, alpha)`` taken as
``max(lam, 1 - lam)`` (MixMatch's choice): sample ``i`` always dominates its mix, so what the
criterion remembers about row ``i`` (its loss, its clips' agreement) stays sample ``i``'s.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

__all__ = ["Mix", "draw_mix", "mix_inputs", "mix_targets"]


class Mix(NamedTuple):
    """One batch's mix: ``perm`` (B,) the partner of each row, ``lam`` in [0.5, 1] the own share."""

    perm: torch.Tensor
    lam: float


def draw_mix(alpha: float, batch_size: int, device: torch.device) -> Optional[Mix]:
    """A mix for a batch of ``batch_size`` rows, or ``None`` when ``alpha`` is 0 (no mixup). Drawn
    from torch's global generator, which the trainer re-seeds every epoch (resume repeats it)."""
    if alpha <= 0:
        return None
    lam = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())
    return Mix(torch.randperm(batch_size).to(device), max(lam, 1.0 - lam))


def mix_inputs(video: torch.Tensor, mix: Optional[Mix]) -> torch.Tensor:
    """``lam * video + (1 - lam) * video[perm]``, any shape with the batch first; ``video`` unchanged
    when ``mix`` is None."""
    if mix is None:
        return video
    return mix.lam * video + (1.0 - mix.lam) * video[mix.perm]


def mix_targets(target: torch.Tensor, mix: Optional[Mix]) -> torch.Tensor:
    """The same mix of (B, K) soft targets."""
    return mix_inputs(target, mix)
