"""CNN-LSTM: a ResNet-18 frame encoder followed by a bidirectional LSTM over the frames."""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from ..registry import register_backbone
from .weights import Pretrained, load_local_weights, resolve_pretrained, upstream_download

__all__ = ["CNNLSTM"]


class CNNLSTM(nn.Module):
    """ResNet-18 per frame -> 2-layer BiLSTM(512) -> mean over time -> Linear(1024, 512).

    This configuration is chosen to match the paper's CNN-LSTM size (Table VI: 22.2 M with a
    7-class head; ours: 22.2 M). Clip-level: ``(N, 3, t, H, W) -> (N, 512)``, any ``t >= 1``.
    ``pretrained=True`` loads ImageNet weights into the ResNet-18 (torchvision).
    """

    token_level = "clip"

    def __init__(
        self,
        pretrained: Pretrained = False,
        hidden_size: int = 512,
        num_layers: int = 2,
        feature_dim: int = 512,
    ) -> None:
        super().__init__()
        upstream, path = resolve_pretrained(pretrained)
        import torchvision  # here: importing torchvision.models costs seconds, and only this builds it

        weights = torchvision.models.ResNet18_Weights.DEFAULT if upstream else None
        with upstream_download("torchvision resnet18"):
            cnn = torchvision.models.resnet18(weights=weights)
        cnn.fc = nn.Identity()
        self.cnn = cnn
        self.lstm = nn.LSTM(512, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden_size, feature_dim)
        self.feature_dim = feature_dim
        if path is not None:
            load_local_weights(self, path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        frames = self.cnn(rearrange(x, "n c t h w -> (n t) c h w"))
        seq, _ = self.lstm(rearrange(frames, "(n t) d -> n t d", n=n))
        return self.proj(seq.mean(dim=1))


@register_backbone("cnn_lstm")
def cnn_lstm(pretrained: Pretrained = False, **kwargs) -> CNNLSTM:
    """ResNet-18 + BiLSTM (clip-level, 512-d features)."""
    return CNNLSTM(pretrained=pretrained, **kwargs)
