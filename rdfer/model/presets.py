"""Whole-model presets: ``rdfer.create_model(name, **overrides)``.

* ``rdfer_resnet50``: the paper's configuration -- ResNet-50 frame encoder (timm), BiLSTMs,
  16 recognised frames (4 clips x 4) of 112 px from 64 loaded frames, d_model 512.
* ``rdfer_small``: ``tiny_cnn`` everywhere, d_model 128: CPU demos and tests.
* ``rdfer_<backbone>`` for the five backbones of the paper's Table VI.
* ``frame_baseline``: no RDFER at all -- the backbone per frame (or clip) and a linear head,
  logits averaged (:mod:`rdfer.model.frame_baseline`); by default ``rdfer_small``'s backbone, so
  the two compare like for like.
"""

from __future__ import annotations

from typing import Any, Dict

from ..registry import register_model
from .frame_baseline import FrameBaseline, wrap_frame_baseline
from .rdfer import RDFER, wrap_with_rdfer

__all__ = ["PRESETS"]

PRESETS: Dict[str, Dict[str, Any]] = {
    "rdfer_resnet50": dict(backbone="timm/resnet50"),
    "rdfer_small": dict(
        backbone="tiny_cnn",
        backbone_kwargs=dict(widths=(16, 32, 64, 128)),
        detector_kwargs=dict(widths=(8, 16, 32, 64)),
        d_model=128,
        summary_dim=32,
        num_glimpses=8,
    ),
    **{f"rdfer_{name}": dict(backbone=name) for name in ("r3d_18", "mc3_18", "r2plus1d_18", "cnn_lstm", "former_dfer")},
}


def _register(name: str, preset: Dict[str, Any]) -> None:
    @register_model(name)
    def factory(num_classes: int = 7, **overrides: Any) -> RDFER:
        kwargs = {**preset, **overrides}
        model = wrap_with_rdfer(kwargs.pop("backbone"), num_classes=num_classes, **kwargs)
        model.config["preset"] = name
        return model

    factory.__name__ = name
    factory.__doc__ = f"RDFER preset {name!r}: {preset}"


for _name, _preset in PRESETS.items():
    _register(_name, _preset)


#: The frame baseline's backbone when none is named: the one of ``rdfer_small``.
FRAME_BASELINE_DEFAULT = dict(backbone="tiny_cnn", backbone_kwargs=dict(widths=(16, 32, 64, 128)))


@register_model("frame_baseline")
def frame_baseline(num_classes: int = 7, backbone: Any = None, **overrides: Any) -> FrameBaseline:
    """The backbone alone with a linear head, logits averaged over the frames read (the paper's
    "w/o RDFER"). ``backbone``: any registry name or module (default: ``rdfer_small``'s)."""
    if backbone is None:
        backbone = FRAME_BASELINE_DEFAULT["backbone"]
        overrides.setdefault("backbone_kwargs", dict(FRAME_BASELINE_DEFAULT["backbone_kwargs"]))
    model = wrap_frame_baseline(backbone, num_classes=num_classes, **overrides)
    model.config["preset"] = "frame_baseline"
    return model
