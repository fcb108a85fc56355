"""Which source frames a dataset item loads: jittered segments for training, centred for eval.

Both functions return ``T`` non-decreasing source frame numbers in ``[0, num_source)``. Videos
shorter than ``T`` repeat frames (never dropped), so every item has exactly ``T`` frames.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["eval_indices", "train_indices", "sample_indices"]


def _check(num_source: int, num_frames: int) -> None:
    if num_source < 1:
        raise ValueError(f"cannot sample from a video with {num_source} frames")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def eval_indices(num_source: int, num_frames: int) -> torch.Tensor:
    """Uniform and centred: frame ``floor((i + 0.5) * n / T)`` for ``i = 0..T-1``. Shape ``(T,)``.

    Example: 12 source frames, T=4 -> [1, 4, 7, 10]; 3 source frames, T=4 -> [0, 1, 1, 2].
    """
    _check(num_source, num_frames)
    i = torch.arange(num_frames, dtype=torch.float64)
    return ((i + 0.5) * num_source / num_frames).floor().long().clamp_(0, num_source - 1)


def train_indices(num_source: int, num_frames: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``T`` equal segments of the video, one random frame from each (TSN-style jitter). ``(T,)``.

    Uses torch's RNG (seeded per DataLoader worker), so runs are reproducible and resumable.
    """
    _check(num_source, num_frames)
    i = torch.arange(num_frames, dtype=torch.float64)
    lo = (i * num_source / num_frames).floor()
    hi = ((i + 1) * num_source / num_frames).ceil().clamp(max=num_source)  # exclusive
    u = torch.rand(num_frames, generator=generator, dtype=torch.float64)
    idx = (lo + (u * (hi - lo)).floor()).long().clamp_(0, num_source - 1)
    # Segments of a video shorter than T overlap by one frame: keep the order monotonic.
    return idx.sort().values


def sample_indices(num_source: int, num_frames: int, train: bool,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """:func:`train_indices` when ``train`` else :func:`eval_indices`."""
    if train:
        return train_indices(num_source, num_frames, generator)
    return eval_indices(num_source, num_frames)
