"""rdfer: robust dynamic facial expression recognition for any PyTorch video model.

>>> import rdfer
>>> model = rdfer.wrap_with_rdfer("tiny_cnn", num_classes=7)
>>> out = model(video)            # video: (B, C, T, H, W) float
>>> out.logits, out.clip_logits   # (B, K), (B, n_clips, K)
"""

__version__ = "0.1.0"

from .backbones import BackboneContractError, FrameEncoder, as_backbone, validate_backbone
from .data.emotions import EMOTIONS
from .engine.checkpoint import load_model, save_model
from .inference import export_model, predict_video
from .losses import (HARD, NOISY, ORDINARY, STRATEGIES, AgreementLoss, LossRule, agreement, agreement_stats, flag_samples,
                     list_strategies, register_strategy)
from .model import RDFER, RDFEROutput, RDFERPrediction, wrap_with_rdfer
from .registry import (
    create_backbone,
    create_model,
    is_backbone,
    list_backbones,
    list_models,
    register_backbone,
    register_model,
)

__all__ = [
    "__version__",
    "register_backbone",
    "create_backbone",
    "list_backbones",
    "is_backbone",
    "register_model",
    "create_model",
    "list_models",
    "as_backbone",
    "validate_backbone",
    "FrameEncoder",
    "BackboneContractError",
    "EMOTIONS",
    "load_model",
    "save_model",
    "predict_video",
    "export_model",
    "wrap_with_rdfer",
    "RDFER",
    "RDFEROutput",
    "RDFERPrediction",
    "AgreementLoss",
    "LossRule",
    "list_strategies",
    "register_strategy",
    "agreement",
    "agreement_stats",
    "flag_samples",
    "ORDINARY",
    "HARD",
    "NOISY",
    "STRATEGIES",
]
