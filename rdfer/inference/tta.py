"""Test-time augmentation: average a model's logits over a few views of each video.

``rdfer eval --tta`` and ``rdfer predict --tta`` wrap the loaded model in
:class:`TestTimeAugmentation`; in Python::

    model = rdfer.inference.with_tta(rdfer.load_model("runs/x"))   # views: identity + horizontal flip
    out = model(video)                                               # an RDFEROutput, logits averaged

Faces are left-right symmetric enough that a mirrored face shows the same expression (the
training augmentation flips too), and a slight zoom is what a face crop of a different detector
gives: averaging over such views removes some of the variance of a single read. Views are
identical for every frame of a video, so the temporal parts of the model see a coherent video.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["TestTimeAugmentation", "with_tta", "TTA_VIEWS"]

#: The views :class:`TestTimeAugmentation` knows. ``zoom``: the central 87.5% resized back.
TTA_VIEWS = ("identity", "hflip", "zoom", "zoom_hflip")


def _view(video: torch.Tensor, name: str) -> torch.Tensor:
    """One view of a float video batch ``(B, C, T, H, W)``, same shape."""
    if name == "identity":
        return video
    if name == "hflip":
        return video.flip(-1)
    if name in ("zoom", "zoom_hflip"):
        b, c, t, h, w = video.shape
        dh, dw = max(1, round(h / 16)), max(1, round(w / 16))  # 1/16 off each side: 87.5% kept
        crop = video[..., dh:h - dh, dw:w - dw]
        frames = crop.transpose(1, 2).reshape(b * t, c, h - 2 * dh, w - 2 * dw)
        frames = F.interpolate(frames, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
        out = frames.reshape(b, t, c, h, w).transpose(1, 2)
        return out.flip(-1) if name == "zoom_hflip" else out
    raise ValueError(f"unknown test-time view {name!r}; choose from {TTA_VIEWS}")


class TestTimeAugmentation(nn.Module):
    """Wrap an rdfer model (RDFER or the frame baseline): ``logits`` and ``clip_logits`` are the
    mean over ``views``; the other outputs (where the model looked, features) are the first
    view's. Input and output as the wrapped model's: ``(B, C, T, H, W)`` -> ``RDFEROutput``."""

    def __init__(self, model: nn.Module, views: Sequence[str] = ("identity", "hflip")) -> None:
        super().__init__()
        views = tuple(views)
        if not views:
            raise ValueError("test-time augmentation needs at least one view")
        for name in views:
            if name not in TTA_VIEWS:
                raise ValueError(f"unknown test-time view {name!r}; choose from {TTA_VIEWS}")
        self.model, self.views = model, views
        # What the CLI and analyses read off a model.
        self.num_classes, self.n_clips = model.num_classes, model.n_clips
        self.config = getattr(model, "config", {})
        self.data_config = getattr(model, "data_config", {})

    def forward(self, video: torch.Tensor):
        outs = [self.model(_view(video, name)) for name in self.views]
        first = outs[0]
        logits = torch.stack([o.logits for o in outs]).mean(0)
        clip_logits = torch.stack([o.clip_logits for o in outs]).mean(0)
        return first._replace(logits=logits, clip_logits=clip_logits)

    @torch.no_grad()
    def predict(self, video: torch.Tensor):
        """As :meth:`rdfer.RDFER.predict`, with the averaged logits."""
        from ..model.rdfer import RDFER

        return RDFER.predict(self, video)

    def extra_repr(self) -> str:
        return f"views={self.views}"


def with_tta(model: nn.Module, views: Sequence[str] = ("identity", "hflip")) -> TestTimeAugmentation:
    """``model`` wrapped in :class:`TestTimeAugmentation` (identity + horizontal flip by default)."""
    return TestTimeAugmentation(model, views)
