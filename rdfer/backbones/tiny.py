"""``tiny_cnn``: a tiny, fast frame encoder for CPU demos, tests and the key-expression detector."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from einops import rearrange

from ..registry import register_backbone
from .weights import Pretrained, load_local_weights, resolve_pretrained

__all__ = ["TinyCNN"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        # GroupNorm: no batch statistics, so 1-process and N-process runs compute the same thing.
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"norm must be 'bn' or 'gn', got {kind!r}")


class TinyCNN(nn.Module):
    """Four stride-2 3x3 conv blocks and a global average pool, applied to every frame.

    Frame-level: ``(N, C, t, H, W) -> (N, t, widths[-1])``. About 0.1 M parameters with the
    default widths; works from 16 px upwards.

    Args:
        widths: output channels of the conv blocks; the last one is ``feature_dim``.
        norm: ``"bn"`` (BatchNorm) or ``"gn"`` (GroupNorm).
        in_chans: input channels.
    """

    token_level = "frame"

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), norm: str = "bn", in_chans: int = 3) -> None:
        super().__init__()
        layers = []
        c_in = in_chans
        for c_out in widths:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), _norm(norm, c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.feature_dim = int(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        maps = self.features(rearrange(x, "n c t h w -> (n t) c h w"))
        return rearrange(maps.mean(dim=(2, 3)), "(n t) d -> n t d", n=n)


@register_backbone("tiny_cnn")
def tiny_cnn(pretrained: Pretrained = False, **kwargs) -> TinyCNN:
    """Tiny 4-layer CNN frame encoder (frame-level, 128-d). ``norm="gn"`` for GroupNorm."""
    upstream, path = resolve_pretrained(pretrained)
    if upstream:
        raise ValueError("tiny_cnn has no published weights; pass pretrained='path/to/file' for your own.")
    model = TinyCNN(**kwargs)
    if path is not None:
        load_local_weights(model, path)
    return model
