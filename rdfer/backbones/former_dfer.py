"""Former-DFER (Zhao & Liu, ACM MM 2021), re-implemented as a clip-level backbone.

CS-Former: a ResNet-18 whose stage-3 feature map goes through a spatial transformer before
stage 4; T-Former: a temporal transformer over the per-frame vectors with a class token.

Sizes: about 18.3 M parameters with a 7-class head (paper's Table VI: 18.0 M). The spatial
positional embedding is learnt for 112 px frames (a 7x7 map after stage 3) and resized
bicubically for other sizes, so H, W from 32 to 224 work; the temporal one covers up to
``max_frames`` (16) frames per clip and a longer clip is an error.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..registry import register_backbone
from .weights import Pretrained, load_local_weights, resolve_pretrained, upstream_download

__all__ = ["FormerDFER", "TransformerBlock"]


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder block: ``(N, L, d) -> (N, L, d)``.

    Attention is written with plain matmuls so fvcore's tracer counts its FLOPs.
    """

    def __init__(self, dim: int, heads: int = 8, mlp_dim: int = 1024, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "n l (three h d) -> three n h l d", three=3, h=self.heads)
        attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        x = x + self.out(rearrange(attn.softmax(dim=-1) @ v, "n h l d -> n l (h d)"))
        return x + self.mlp(self.norm2(x))


class FormerDFER(nn.Module):
    """Former-DFER: ``(N, 3, t, H, W) -> (N, 512)`` with ``1 <= t <= max_frames``.

    Args:
        pretrained: True loads ImageNet weights into the ResNet-18 parts (torchvision);
            a path loads a state dict of this whole module.
        spatial_depth / temporal_depth: transformer blocks in CS-Former / T-Former (1 / 3).
        max_frames: longest clip the temporal positional embedding covers.
        base_size: the frame size the spatial positional embedding is learnt for.
    """

    token_level = "clip"

    def __init__(
        self,
        pretrained: Pretrained = False,
        spatial_depth: int = 1,
        temporal_depth: int = 3,
        heads: int = 8,
        mlp_dim: int = 1024,
        max_frames: int = 16,
        base_size: int = 112,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        upstream, path = resolve_pretrained(pretrained)
        import torchvision  # here: importing torchvision.models costs seconds, and only this builds it

        weights = torchvision.models.ResNet18_Weights.DEFAULT if upstream else None
        with upstream_download("torchvision resnet18"):
            r = torchvision.models.resnet18(weights=weights)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)
        self.layer4 = r.layer4
        grid = base_size // 16
        self.spatial_pos = nn.Parameter(torch.zeros(1, 256, grid, grid))
        self.spatial = nn.Sequential(*[TransformerBlock(256, heads, mlp_dim, dropout) for _ in range(spatial_depth)])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 512))
        self.temporal_pos = nn.Parameter(torch.zeros(1, max_frames + 1, 512))
        self.temporal = nn.Sequential(*[TransformerBlock(512, heads, mlp_dim, dropout) for _ in range(temporal_depth)])
        self.norm = nn.LayerNorm(512)
        self.max_frames = max_frames
        self.feature_dim = 512
        nn.init.trunc_normal_(self.spatial_pos, std=0.02)
        nn.init.trunc_normal_(self.temporal_pos, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if path is not None:
            load_local_weights(self, path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t, _, _ = x.shape
        if t > self.max_frames:
            raise ValueError(f"FormerDFER takes clips of at most max_frames={self.max_frames} frames, got t={t}")
        fmap = self.stem(rearrange(x, "n c t h w -> (n t) c h w"))
        h, w = fmap.shape[-2:]
        pos = self.spatial_pos
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        tokens = self.spatial(rearrange(fmap + pos, "m c h w -> m (h w) c"))
        fmap = rearrange(tokens, "m (h w) c -> m c h w", h=h, w=w)
        frames = self.layer4(fmap).mean(dim=(2, 3))
        seq = torch.cat([self.cls_token.expand(n, -1, -1), rearrange(frames, "(n t) d -> n t d", n=n)], dim=1)
        seq = self.temporal(seq + self.temporal_pos[:, : t + 1])
        return self.norm(seq[:, 0])


@register_backbone("former_dfer")
def former_dfer(pretrained: Pretrained = False, **kwargs) -> FormerDFER:
    """Former-DFER (clip-level, 512-d features, clips of at most 16 frames)."""
    return FormerDFER(pretrained=pretrained, **kwargs)
