"""rdfer: robust dynamic facial expression recognition for any PyTorch video model.

>>> import rdfer
>>> model = rdfer.wrap_with_rdfer("tiny_cnn", num_classes=7)
>>> out = model(video)            # video: (B, C, T, H, W) float
>>> out.logits, out.clip_logits   # (B, K), (B, n_clips, K)

``import rdfer`` imports no torch: each name below is imported on first use (PEP 562), so the
command line answers ``rdfer --version`` and ``--help`` at once. ``rdfer.losses``,
``rdfer.engine`` and the other subpackages load the same way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, List

__version__ = "0.1.0"

# name -> the module that defines it (relative to this package).
_EXPORTS: Dict[str, str] = {
    **dict.fromkeys(["register_backbone", "create_backbone", "list_backbones", "is_backbone", "register_model",
                     "create_model", "list_models"], ".registry"),
    **dict.fromkeys(["as_backbone", "validate_backbone", "FrameEncoder", "BackboneContractError"], ".backbones.contract"),
    "EMOTIONS": ".data.emotions",
    **dict.fromkeys(["load_model", "save_model"], ".engine.checkpoint"),
    **dict.fromkeys(["predict_video", "predict_videos"], ".inference.predict"),
    "export_model": ".inference.export",
    **dict.fromkeys(["wrap_with_rdfer", "RDFER", "RDFEROutput", "RDFERPrediction"], ".model.rdfer"),
    **dict.fromkeys(["AgreementLoss", "LossRule", "list_strategies", "register_strategy", "agreement",
                     "agreement_stats", "flag_samples", "ORDINARY", "HARD", "NOISY", "STRATEGIES"], ".losses"),
}
_SUBPACKAGES = ("analysis", "backbones", "cli", "data", "engine", "extras", "flops", "inference", "losses", "model",
                "registry")

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'rdfer' has no attribute {name!r}")
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))


if TYPE_CHECKING:  # what static tools (type checkers, the API docs) see
    from .backbones.contract import BackboneContractError, FrameEncoder, as_backbone, validate_backbone
    from .data.emotions import EMOTIONS
    from .engine.checkpoint import load_model, save_model
    from .inference.export import export_model
    from .inference.predict import predict_video, predict_videos
    from .losses import (HARD, NOISY, ORDINARY, STRATEGIES, AgreementLoss, LossRule, agreement, agreement_stats,
                         flag_samples, list_strategies, register_strategy)
    from .model.rdfer import RDFER, RDFEROutput, RDFERPrediction, wrap_with_rdfer
    from .registry import (create_backbone, create_model, is_backbone, list_backbones, list_models,
                           register_backbone, register_model)
