"""The frame baseline: the backbone alone, what a user would write without rdfer.

The paper's "w/o RDFER" ablation and the row every comparison needs (issue 28): the backbone
reads ``n_clips * clip_len`` uniformly spaced frames, per frame (2D encoders) or per clip of
``clip_len`` frames (3D models), a linear head maps each token to class logits, and the video's
prediction is their average. No re-sampler, no sequence model, no summary.

It returns :class:`~rdfer.model.rdfer.RDFEROutput`, so the trainer, the losses, checkpoints,
``eval``/``audit``/``predict`` and export treat it like any RDFER model:
``clip_logits`` are the per-clip averages of the token logits (so the agreement statistics
still mean "do the parts of the video agree"), ``mu``/``delta``/``positions`` describe the
uniform sampling and ``glimpse_logits`` is empty.

>>> model = wrap_frame_baseline("tiny_cnn", num_classes=7)
>>> model(torch.randn(2, 3, 16, 32, 32)).logits.shape
torch.Size([2, 7])
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn
from einops import rearrange

from ..backbones.contract import validate_backbone
from ..registry import create_backbone
from .rdfer import RDFEROutput
from .sampler import read_frames, uniform_positions

__all__ = ["FrameBaseline", "wrap_frame_baseline", "FRAME_BASELINE_CONFIG"]

#: ``model.config["architecture"]`` of a frame baseline; RDFER models have none (or "rdfer").
ARCHITECTURE = "frame_baseline"

FRAME_BASELINE_CONFIG: Dict[str, Any] = dict(n_clips=4, clip_len=4, dropout=0.0)


class FrameBaseline(nn.Module):
    """Backbone + linear head, logits averaged over the frames (or clips) read.

    Input ``video``: float ``(B, C, T, H, W)``, any ``T >= 1``; ``n_clips * clip_len`` frames are
    read at uniform positions (linear blending, as RDFER without re-sampling). Output:
    :class:`~rdfer.model.rdfer.RDFEROutput` with ``logits`` ``(B, K)`` and ``clip_logits``
    ``(B, n_clips, K)``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int = 7, *, n_clips: int = 4, clip_len: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if n_clips < 1 or clip_len < 1:
            raise ValueError(f"n_clips and clip_len must be >= 1, got {n_clips}, {clip_len}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes, self.n_clips, self.clip_len = num_classes, n_clips, clip_len
        self.backbone = backbone
        self.token_level = backbone.token_level
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.feature_dim, num_classes)
        self.config: Dict[str, Any] = {}  # filled by wrap_frame_baseline; saved with checkpoints

    @property
    def num_frames_read(self) -> int:
        return self.n_clips * self.clip_len

    def forward(self, video: torch.Tensor) -> RDFEROutput:
        if video.dim() != 5:
            raise ValueError(f"expected a video batch (B, C, T, H, W), got shape {tuple(video.shape)}")
        b = video.shape[0]
        where = uniform_positions(video.shape[2], self.num_frames_read, b, video.device, video.dtype)
        frames = read_frames(video, where.positions)  # (B, C, n, H, W)
        if self.token_level == "clip":
            clips = rearrange(frames, "b c (n1 n2) h w -> (b n1) c n2 h w", n1=self.n_clips)
            tokens = rearrange(self.backbone(clips), "(b n1) d -> b n1 d", b=b)  # one token per clip
        else:
            tokens = self.backbone(frames)  # (B, n, D): one token per frame
        token_logits = self.head(self.dropout(tokens))  # (B, L, K)
        clip_logits = rearrange(token_logits, "b (n1 l) k -> b n1 l k", n1=self.n_clips).mean(2)
        glimpse_logits = clip_logits.new_zeros(b, 0, self.num_classes)
        return RDFEROutput(clip_logits.mean(1), clip_logits, where.mu, where.delta, tokens.mean(1), where.positions,
                           glimpse_logits, clip_logits.new_zeros(b, 0))

    @torch.no_grad()
    def predict(self, video: torch.Tensor):
        """As :meth:`rdfer.RDFER.predict`: probabilities, agreement and the positions read."""
        from .rdfer import RDFER

        return RDFER.predict(self, video)


def wrap_frame_baseline(
    backbone: Union[str, nn.Module],
    num_classes: int = 7,
    *,
    pretrained: Union[bool, str] = False,
    backbone_kwargs: Optional[Dict[str, Any]] = None,
    validate_input: tuple = (3, 4, 64, 64),
    **config: Any,
) -> FrameBaseline:
    """The frame baseline for any backbone: a registry name or a module following the backbone
    contract (as :func:`rdfer.wrap_with_rdfer`). ``**config``: ``n_clips=4``, ``clip_len=4``
    (frames read = their product), ``dropout=0.0`` before the head.

    ``model.config`` records how it was built, so ``rdfer.load_model`` rebuilds it.
    """
    unknown = set(config) - set(FRAME_BASELINE_CONFIG)
    if unknown:
        raise TypeError(f"wrap_frame_baseline got unknown options {sorted(unknown)}; known: "
                        f"{sorted(FRAME_BASELINE_CONFIG)}")
    cfg = {**FRAME_BASELINE_CONFIG, **config}
    if isinstance(backbone, str):
        name: Optional[str] = backbone
        module = create_backbone(backbone, pretrained=pretrained, **(backbone_kwargs or {}))
    elif isinstance(backbone, nn.Module):
        name, module = None, validate_backbone(backbone, validate_input)
    else:
        raise TypeError(f"backbone must be a registry name or an nn.Module, got {type(backbone).__name__}")
    model = FrameBaseline(module, num_classes, **cfg)
    model.config = {"architecture": ARCHITECTURE, "backbone": name, "num_classes": num_classes,
                    "backbone_kwargs": dict(backbone_kwargs or {}), **cfg}
    return model
