"""Any timm image model as a frame-level backbone: ``timm/<model_name>``."""

from __future__ import annotations

from typing import List

import torch.nn as nn

from ..registry import BACKBONES
from .contract import FrameEncoder
from .weights import Pretrained, load_local_weights, resolve_pretrained, upstream_download

__all__ = ["timm_frame_encoder"]


def timm_frame_encoder(model_name: str, pretrained: Pretrained = False, **kwargs) -> FrameEncoder:
    """``timm.create_model(model_name, num_classes=0)`` run frame by frame.

    Output ``(N, t, D)`` with D = the model's pooled feature size. Extra keyword arguments go to ``timm.create_model``
    (e.g. ``drop_path_rate``). Models with a fixed input size (ViTs) need that size.
    """
    import timm

    if model_name not in timm.list_models():
        # timm's own error is terse; name the family and close matches.
        import difflib

        close = difflib.get_close_matches(model_name, timm.list_models(), n=5)
        raise KeyError(f"timm has no model {model_name!r}. Close matches: {close}")
    upstream, path = resolve_pretrained(pretrained)
    with upstream_download(f"timm {model_name}"):
        net = timm.create_model(model_name, pretrained=upstream, num_classes=0, **kwargs)
    if path is not None:
        load_local_weights(net, path)
    # Models with a pre-logits projection (MobileNetV3, ...) output `head_hidden_size` features.
    return FrameEncoder(net, getattr(net, "head_hidden_size", None) or net.num_features)


def _list_timm(pattern: str) -> List[str]:
    import timm

    return timm.list_models(pattern or "*")


BACKBONES.register_family("timm/", timm_frame_encoder, _list_timm)
