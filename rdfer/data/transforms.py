"""Batch-level video transforms: float conversion, normalisation and augmentation on the batch.

Datasets return uint8 ``(C, T, H, W)`` videos (cheap to decode, collate and pin); the training
loop moves the uint8 batch to the device (GPU when there is one) and calls
:class:`VideoBatchTransform` there, so augmentation never costs DataLoader workers.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VideoBatchTransform", "normalize_video"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_video(video: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 or [0, 1] float ``(B, C, T, H, W)`` -> float32 normalised with per-channel stats.

    Single-channel videos use the mean of the statistics (grayscale ImageNet stats).
    """
    if video.dim() != 5:
        raise ValueError(f"expected a video batch (B, C, T, H, W), got shape {tuple(video.shape)}")
    x = video.float().div_(255.0) if video.dtype == torch.uint8 else video.float()
    c = x.shape[1]
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    if c != m.numel():
        if c != 1:
            raise ValueError(f"{c}-channel video but {m.numel()} normalisation statistics")
        m, s = m.mean(0, keepdim=True), s.mean(0, keepdim=True)
    return (x - m.view(1, c, 1, 1, 1)) / s.view(1, c, 1, 1, 1)


class VideoBatchTransform(nn.Module):
    """uint8 ``(B, C, T, H, W)`` -> normalised float32 ``(B, C, T, H, W)`` on the input's device.

    With ``train=True`` each video gets its own random resized crop (``scale`` (0.8, 1.0): the
    torchvision default 0.08 would crop the face away), horizontal flip and colour jitter
    (brightness, contrast and saturation ``jitter``; hue off: it is slow and faces have one hue),
    all from ``torchvision.transforms.v2`` and **identical for every frame of the video**
    (the ``T`` frames are transformed as one batch of images sharing one parameter draw).
    Randomness comes from torch's global RNG, so a seeded run is reproducible.
    """

    def __init__(self, train: bool = False, scale: Tuple[float, float] = (0.8, 1.0), flip_p: float = 0.5,
                 jitter: float = 0.4, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.train_mode, self.scale, self.flip_p, self.jitter = bool(train), tuple(scale), float(flip_p), float(jitter)
        self.mean, self.std = tuple(mean), tuple(std)

    def _augmenter(self, size: Tuple[int, int], channels: int):
        from torchvision.transforms import v2

        ops = [v2.RandomResizedCrop(size, scale=self.scale, antialias=True), v2.RandomHorizontalFlip(self.flip_p)]
        if self.jitter > 0:
            sat = self.jitter if channels == 3 else 0.0  # saturation needs RGB
            ops.append(v2.ColorJitter(brightness=self.jitter, contrast=self.jitter, saturation=sat))
        return v2.Compose(ops)

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.dim() != 5:
            raise ValueError(f"expected a video batch (B, C, T, H, W), got shape {tuple(video.shape)}")
        if self.train_mode:
            b, c, t, h, w = video.shape
            aug = self._augmenter((h, w), c)
            # (C, T, H, W) -> (T, C, H, W): v2 draws one set of parameters for the leading dims.
            video = torch.stack([aug(v.transpose(0, 1)).transpose(0, 1) for v in video])
        return normalize_video(video, self.mean, self.std)

    def extra_repr(self) -> str:
        return f"train={self.train_mode}, scale={self.scale}, flip_p={self.flip_p}, jitter={self.jitter}"
