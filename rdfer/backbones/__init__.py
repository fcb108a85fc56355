"""Built-in backbones. Each module registers its family on import; this package declares their
names to the registry without importing them (:data:`BUILTIN_BACKBONES`), so that listing names,
or building one, imports only what that backbone needs."""

from typing import Dict

from ..registry import BACKBONES
from .contract import TOKEN_LEVELS, BackboneContractError, FrameEncoder, as_backbone, strip_classifier, validate_backbone

#: Built-in backbone name (or family prefix) -> the module of this package that registers it
#: (tests/test_registry.py checks that importing every module registers exactly these).
BUILTIN_BACKBONES: Dict[str, str] = {
    "tiny_cnn": "tiny",
    "cnn_lstm": "cnn_lstm",
    "former_dfer": "former_dfer",
    **dict.fromkeys(("r3d_18", "mc3_18", "r2plus1d_18"), "torchvision_video"),
    **dict.fromkeys(("x3d_xs", "x3d_s", "x3d_m"), "pytorchvideo_models"),
    "timm/": "timm_frames",
}
for _name, _module in BUILTIN_BACKBONES.items():
    BACKBONES.register_lazy([_name], f"{__name__}.{_module}")


def load_all_backbones() -> None:
    """Import every built-in family (what ``rdfer backbones`` needs to describe them all)."""
    import importlib

    for module in dict.fromkeys(BUILTIN_BACKBONES.values()):
        importlib.import_module(f"{__name__}.{module}")


__all__ = [
    "TOKEN_LEVELS",
    "BackboneContractError",
    "FrameEncoder",
    "as_backbone",
    "strip_classifier",
    "validate_backbone",
    "BUILTIN_BACKBONES",
    "load_all_backbones",
]
