"""pytorchvideo's X3D family as clip-level backbones.

Only ``pytorchvideo.models`` is used: its ``transforms`` package does not import with current
torchvision. The head's fixed ``AvgPool3d`` (sized for the pretraining clip) is replaced by a
global average pool, so any ``t >= 1`` and ``H, W >= 32`` are accepted.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from ..registry import register_backbone
from .weights import Pretrained, load_local_weights, resolve_pretrained, upstream_download

__all__ = ["X3DBackbone"]


class X3DBackbone(nn.Module):
    """An X3D network without its classifier: ``(N, 3, t, H, W) -> (N, 2048)``."""

    token_level = "clip"

    def __init__(self, variant: str = "x3d_xs", pretrained: Pretrained = False) -> None:
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pytorchvideo's import-time deprecation noise
            from pytorchvideo.models import hub
        upstream, path = resolve_pretrained(pretrained)
        with upstream_download(f"pytorchvideo {variant}"):
            net = getattr(hub, variant)(pretrained=upstream)
        head = net.blocks[-1]
        head.pool.pool = nn.AdaptiveAvgPool3d(1)
        head.dropout = nn.Identity()
        head.proj = nn.Identity()
        head.activation = None
        self.feature_dim = head.pool.post_conv.out_channels
        self.net = net
        if path is not None:
            load_local_weights(self.net, path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _register(variant: str) -> None:
    @register_backbone(variant)
    def factory(pretrained: Pretrained = False, **kwargs) -> X3DBackbone:
        return X3DBackbone(variant, pretrained=pretrained, **kwargs)

    factory.__name__ = variant
    factory.__doc__ = f"pytorchvideo ``{variant}`` (clip-level, 2048-d features)."


for _variant in ("x3d_xs", "x3d_s", "x3d_m"):
    _register(_variant)
