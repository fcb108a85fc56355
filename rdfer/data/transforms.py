"""Batch-level video transforms: float conversion, normalisation and augmentation on the batch.

Datasets return uint8 ``(C, T, H, W)`` videos (cheap to decode, collate and pin); the training
loop moves the uint8 batch to the device (GPU when there is one) and calls
:class:`VideoBatchTransform` there, so augmentation never costs DataLoader workers.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VideoBatchTransform", "normalize_video", "zoom_videos", "draw_zoom"]

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


def zoom_videos(video: torch.Tensor, factors: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Each video of a uint8 ``(B, C, T, H, W)`` batch zoomed about the frame's centre by its
    factor in ``factors`` ``(B,)``, every frame of a video alike; same shape and dtype out.

    A factor above 1 zooms in (the central ``1/factor`` of the frame resized to the whole frame:
    a tighter face crop), below 1 zooms out (the frame shrunk to ``factor`` of its side in the
    middle, the border filled with the frame's edge pixels repeated outwards: a wider crop);
    exactly 1 leaves the video untouched. Bilinear sampling (``grid_sample``, no antialiasing:
    meant for factors near 1) on the input's device, ``chunk`` videos at a time (a float copy of
    a chunk is held, not of the batch)."""
    if video.dim() != 5:
        raise ValueError(f"expected a video batch (B, C, T, H, W), got shape {tuple(video.shape)}")
    b, c, t, h, w = video.shape
    factors = torch.as_tensor(factors, dtype=torch.float32).flatten().to(video.device)
    if factors.numel() != b:
        raise ValueError(f"{factors.numel()} zoom factors for {b} videos")
    if not bool(torch.isfinite(factors).all()) or bool((factors <= 0).any()):
        raise ValueError(f"zoom factors must be finite and > 0, got {factors.tolist()}")
    out = video.clone()
    todo = (factors != 1).nonzero().flatten()
    for start in range(0, len(todo), max(1, chunk)):
        rows = todo[start : start + max(1, chunk)]
        x = video[rows].reshape(len(rows), c * t, h, w).float()
        theta = torch.zeros(len(rows), 2, 3, device=video.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / factors[rows]  # output coordinates -> input: 1/factor
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        zoomed = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[rows] = zoomed.round_().clamp_(0, 255).to(video.dtype).reshape(len(rows), c, t, h, w)
    return out


def draw_zoom(batch: int, scale_jitter: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``batch`` zoom factors, log-uniform in ``[1 / (1 + scale_jitter), 1 + scale_jitter]`` (zoom in
    and out equally likely), on the CPU from ``generator`` (torch's global RNG when None)."""
    span = math.log1p(float(scale_jitter))
    return torch.exp((2 * torch.rand(batch, generator=generator) - 1) * span)


class VideoBatchTransform(nn.Module):
    """uint8 ``(B, C, T, H, W)`` -> normalised float32 ``(B, C, T, H, W)`` on the input's device.

    With ``train=True`` each video gets its own random resized crop (``scale`` (0.8, 1.0): the
    torchvision default 0.08 would crop the face away), horizontal flip and colour jitter
    (brightness, contrast and saturation ``jitter``; hue off: it is slow and faces have one hue),
    all from ``torchvision.transforms.v2`` and **identical for every frame of the video**
    (the ``T`` frames are transformed as one batch of images sharing one parameter draw).
    Randomness comes from torch's global RNG, so a seeded run is reproducible.

    ``scale_jitter`` (training only; 0: off): before that, each video is zoomed about its centre
    by its own factor, log-uniform in ``[1 / (1 + scale_jitter), 1 + scale_jitter]``
    (:func:`zoom_videos`: zoom-in = a tighter crop, zoom-out = a wider one, padded with the
    frame's edge), so the model sees its faces framed a little tighter and wider than the
    training crops (issue 35). The factors come from ``generator`` (torch's global RNG when
    None). ``augment=False`` leaves out the crop, flip and colour jitter (the zoom still applies).
    """

    def __init__(self, train: bool = False, scale: Tuple[float, float] = (0.8, 1.0), flip_p: float = 0.5,
                 jitter: float = 0.4, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 scale_jitter: float = 0.0, augment: bool = True, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.train_mode, self.scale, self.flip_p, self.jitter = bool(train), tuple(scale), float(flip_p), float(jitter)
        self.mean, self.std = tuple(mean), tuple(std)
        if not (math.isfinite(float(scale_jitter)) and float(scale_jitter) >= 0):
            raise ValueError(f"scale_jitter must be a finite number >= 0, got {scale_jitter!r}")
        self.scale_jitter, self.augment, self.generator = float(scale_jitter), bool(augment), generator

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
        if self.train_mode and self.scale_jitter > 0:
            video = zoom_videos(video, draw_zoom(video.shape[0], self.scale_jitter, self.generator))
        if self.train_mode and self.augment:
            b, c, t, h, w = video.shape
            aug = self._augmenter((h, w), c)
            # (C, T, H, W) -> (T, C, H, W): v2 draws one set of parameters for the leading dims.
            video = torch.stack([aug(v.transpose(0, 1)).transpose(0, 1) for v in video])
        return normalize_video(video, self.mean, self.std)

    def extra_repr(self) -> str:
        text = f"train={self.train_mode}, scale={self.scale}, flip_p={self.flip_p}, jitter={self.jitter}"
        text += "" if self.augment else ", augment=False"
        return text + (f", scale_jitter={self.scale_jitter}" if self.scale_jitter else "")
