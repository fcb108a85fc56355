"""Built-in backbones. Each module registers its family on import."""

from . import cnn_lstm, former_dfer, pytorchvideo_models, timm_frames, tiny, torchvision_video  # noqa: F401
from .contract import TOKEN_LEVELS, BackboneContractError, FrameEncoder, as_backbone, strip_classifier, validate_backbone

__all__ = [
    "TOKEN_LEVELS",
    "BackboneContractError",
    "FrameEncoder",
    "as_backbone",
    "strip_classifier",
    "validate_backbone",
]
