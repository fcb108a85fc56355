"""torchvision's 3D ResNets (R3D-18, MC3-18, R(2+1)D-18) as clip-level backbones."""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision

from ..registry import register_backbone
from .weights import Pretrained, load_local_weights, resolve_pretrained, upstream_download

__all__ = ["TorchvisionVideoBackbone"]


class TorchvisionVideoBackbone(nn.Module):
    """A torchvision video ResNet without its ``fc`` head.

    Input ``(N, 3, t, H, W)`` with any ``t >= 1`` and ``H, W >= 32``; output ``(N, 512)``.
    ``pretrained=True`` loads the Kinetics-400 weights through torchvision's weights enum.
    """

    token_level = "clip"

    def __init__(self, arch: str, pretrained: Pretrained = False) -> None:
        super().__init__()
        upstream, path = resolve_pretrained(pretrained)
        weights = torchvision.models.get_model_weights(arch).DEFAULT if upstream else None
        with upstream_download(f"torchvision {arch}"):
            net = torchvision.models.get_model(arch, weights=weights)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        if path is not None:
            load_local_weights(self.net, path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _register(arch: str) -> None:
    @register_backbone(arch)
    def factory(pretrained: Pretrained = False, **kwargs) -> TorchvisionVideoBackbone:
        return TorchvisionVideoBackbone(arch, pretrained=pretrained, **kwargs)

    factory.__name__ = arch
    factory.__doc__ = f"torchvision ``{arch}`` (clip-level, 512-d features)."


for _arch in ("r3d_18", "mc3_18", "r2plus1d_18"):
    _register(_arch)
