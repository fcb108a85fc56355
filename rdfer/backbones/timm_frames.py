"""Any timm image model as a frame-level backbone: ``timm/<model_name>``.

Transformers in timm are built for one input size (224 px for most ViTs) while rdfer trains at
112 px by default (and 32-64 px on CPU). The encoder is therefore built for *the frame size in
use*: with timm's ``dynamic_img_size=True`` where the model has it (ViT, DeiT, EVA, Swin, ...: the
position embedding is resampled on the fly, so any size works), else with ``img_size=image_size``
where the model takes that argument; CNNs (ResNet, ConvNeXt, EfficientNet, ...) take any size
as they are.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from ..registry import BACKBONES
from .contract import FrameEncoder
from .weights import Pretrained, load_local_weights, resolve_pretrained, upstream_download

__all__ = ["timm_frame_encoder", "TimmFrameEncoder"]

# Keyword arguments that fix or free a timm model's input size; the user's own choice wins.
_SIZE_KWARGS = ("img_size", "dynamic_img_size")


class TimmFrameEncoder(FrameEncoder):
    """:class:`FrameEncoder` over a timm model; a frame size the model cannot take is a clear error."""

    def __init__(self, encoder: nn.Module, feature_dim: int, model_name: str) -> None:
        super().__init__(encoder, feature_dim)
        self.model_name = model_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return super().forward(x)
        except AssertionError as err:  # timm's fixed-size patch embeddings assert on H, W
            raise ValueError(
                f"timm model {self.model_name!r} was built for another input size and cannot take frames of "
                f"{tuple(x.shape[-2:])} px ({err}). Fix: build it for this size with "
                f"backbone_kwargs={{'image_size': {x.shape[-1]}}} (CLI: --model-option "
                f"'backbone_kwargs={{image_size: {x.shape[-1]}}}')."
            ) from err


def _create(timm, model_name: str, upstream, kwargs: Dict[str, Any], image_size: Optional[int]) -> nn.Module:
    """``timm.create_model`` with the most flexible input-size option the model accepts."""
    attempts: List[Dict[str, Any]] = []
    if not any(k in kwargs for k in _SIZE_KWARGS):
        sized = {"img_size": image_size} if image_size else {}
        attempts += [{"dynamic_img_size": True, **sized}, sized] if sized else [{"dynamic_img_size": True}]
    attempts.append({})
    for i, extra in enumerate(attempts):
        try:
            return timm.create_model(model_name, pretrained=upstream, num_classes=0, **kwargs, **extra)
        except TypeError as err:
            # Only "this model has no such argument" moves on to the next, plainer attempt.
            if i + 1 == len(attempts) or not any(f"'{k}'" in str(err) for k in extra):
                raise
    raise AssertionError("unreachable")


def timm_frame_encoder(model_name: str, pretrained: Pretrained = False, image_size: Optional[int] = None,
                       **kwargs: Any) -> TimmFrameEncoder:
    """``timm.create_model(model_name, num_classes=0)`` run frame by frame.

    Args:
        model_name: any name in ``timm.list_models()``.
        pretrained: ``True`` for timm's upstream weights (online once), or a local weights file.
        image_size: the frame size in use. Models with ``dynamic_img_size`` accept any size
            anyway (and start from position embeddings sized for it); models that only take
            ``img_size`` are built for exactly this size.
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``; an explicit
            ``img_size`` or ``dynamic_img_size`` replaces the automatic choice).

    Returns:
        A frame-level backbone: ``(N, C, t, H, W) -> (N, t, D)``, D = the model's pooled feature size.
    """
    import timm

    if model_name not in timm.list_models():
        # timm's own error is terse; name the family and close matches.
        import difflib

        close = difflib.get_close_matches(model_name, timm.list_models(), n=5)
        from ..registry import UnknownNameError  # a KeyError, and a user error on the command line

        raise UnknownNameError(f"timm has no model {model_name!r}. Close matches: {close}")
    upstream, path = resolve_pretrained(pretrained)
    with upstream_download(f"timm {model_name}"):
        net = _create(timm, model_name, upstream, kwargs, image_size)
    if path is not None:
        load_local_weights(net, path)
    # Models with a pre-logits projection (MobileNetV3, ...) output `head_hidden_size` features.
    return TimmFrameEncoder(net, getattr(net, "head_hidden_size", None) or net.num_features, model_name)


def _list_timm(pattern: str) -> List[str]:
    import timm

    return timm.list_models(pattern or "*")


BACKBONES.register_family("timm/", timm_frame_encoder, _list_timm)
