"""The backbone contract, its validation, and adapters for stock classifiers.

A backbone is an ``nn.Module`` with two attributes:

* ``feature_dim: int``
* ``token_level: "clip" | "frame"``

and a forward taking a clip batch ``(N, C, t, H, W)``:

* ``"clip"``  -> ``(N, feature_dim)``: one vector per clip (3D CNNs, CNN-LSTM, Former-DFER);
* ``"frame"`` -> ``(N, t, feature_dim)``: one vector per frame (2D image encoders).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from einops import rearrange

__all__ = [
    "TOKEN_LEVELS",
    "BackboneContractError",
    "FrameEncoder",
    "validate_backbone",
    "as_backbone",
    "strip_classifier",
]

TOKEN_LEVELS = ("clip", "frame")
_HEAD_ATTRS = ("fc", "classifier", "head", "heads")


class BackboneContractError(ValueError):
    """A module does not follow the rdfer backbone contract."""


class FrameEncoder(nn.Module):
    """Turn a 2D image model ``(M, C, H, W) -> (M, D)`` into a frame-level backbone.

    Input ``(N, C, t, H, W)``, output ``(N, t, D)``. If the image model returns a feature map
    ``(M, D, h, w)`` instead of a vector, it is global-average-pooled.
    """

    token_level = "frame"

    def __init__(self, encoder: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = int(feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        feats = self.encoder(rearrange(x, "n c t h w -> (n t) c h w"))
        if feats.dim() > 2:
            feats = feats.flatten(2).mean(-1)
        return rearrange(feats, "(n t) d -> n t d", n=n)


def _shape(t) -> str:
    if isinstance(t, torch.Tensor):
        return str(tuple(t.shape))
    if isinstance(t, (tuple, list)):
        return f"{type(t).__name__} of {len(t)} items"
    return type(t).__name__


def _dummy_forward(module: nn.Module, x: torch.Tensor):
    """Forward without touching gradients or BatchNorm running statistics."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(x)
    finally:
        module.train(was_training)


def validate_backbone(
    module: nn.Module,
    input_size: Sequence[int] = (3, 4, 64, 64),
    batch_size: int = 2,
) -> nn.Module:
    """Check ``module`` against the backbone contract with one dummy forward.

    Args:
        module: the candidate backbone.
        input_size: ``(C, t, H, W)`` of the dummy clip.
        batch_size: ``N`` of the dummy batch.

    Returns:
        ``module`` itself, for chaining.

    Raises:
        BackboneContractError: naming what was seen, what was expected, and how to fix it.
    """
    name = type(module).__name__
    fix = (
        "Fix: give the module `feature_dim` and `token_level` attributes that describe its "
        "output, or let rdfer.as_backbone(module) infer them for a stock classifier."
    )
    token_level = getattr(module, "token_level", None)
    feature_dim = getattr(module, "feature_dim", None)
    if token_level not in TOKEN_LEVELS:
        raise BackboneContractError(
            f"Backbone {name} has token_level={token_level!r}; expected one of {TOKEN_LEVELS}. {fix}"
        )
    if not isinstance(feature_dim, int) or isinstance(feature_dim, bool) or feature_dim <= 0:
        raise BackboneContractError(
            f"Backbone {name} has feature_dim={feature_dim!r}; expected a positive int. {fix}"
        )
    c, t, h, w = input_size
    x = torch.zeros(batch_size, c, t, h, w, device=_device_of(module))
    try:
        out = _dummy_forward(module, x)
    except Exception as err:  # re-raised with the contract's context
        raise BackboneContractError(
            f"Backbone {name} failed on a dummy clip of shape {tuple(x.shape)} (N, C, t, H, W): "
            f"{type(err).__name__}: {err}. Backbones receive 5-D clip batches; a 2-D image model "
            f"needs rdfer.as_backbone(module) (or rdfer.FrameEncoder) to run it frame by frame. "
            f"If the model needs another input size, pass input_size=(C, t, H, W)."
        ) from err
    expected = (batch_size, feature_dim) if token_level == "clip" else (batch_size, t, feature_dim)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if got != expected:
        layout = "(N, feature_dim)" if token_level == "clip" else "(N, t, feature_dim)"
        raise BackboneContractError(
            f"Backbone {name} (token_level={token_level!r}, feature_dim={feature_dim}) returned "
            f"{_shape(out)} for input {tuple(x.shape)}; expected {layout} = {expected}. "
            f"Fix: return a single tensor; pool away remaining time/space axes for a clip-level "
            f"backbone, keep the time axis for a frame-level one, and make feature_dim match "
            f"the last axis."
        )
    return module


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def strip_classifier(module: nn.Module) -> nn.Module:
    """Remove the classification head of a stock torchvision / timm classifier, in place.

    timm models use their own ``reset_classifier(0)``; otherwise the first of ``fc``,
    ``classifier``, ``head``, ``heads`` that holds a ``nn.Linear`` is replaced by ``nn.Identity``.
    """
    if hasattr(module, "reset_classifier") and hasattr(module, "num_features"):
        module.reset_classifier(0)
        return module
    for attr in _HEAD_ATTRS:
        head = getattr(module, attr, None)
        if isinstance(head, nn.Module) and any(isinstance(m, nn.Linear) for m in head.modules()):
            setattr(module, attr, nn.Identity())
            return module
    return module


def as_backbone(
    module: nn.Module,
    *,
    token_level: Optional[str] = None,
    feature_dim: Optional[int] = None,
    strip_head: bool = True,
    input_size: Tuple[int, int, int, int] = (3, 4, 64, 64),
) -> nn.Module:
    """Turn a stock classifier (torchvision, timm, or your own) into an rdfer backbone.

    The known head (``fc``, ``classifier``, ``head``) is stripped, then one dummy forward decides
    the token level and feature size: a module that accepts ``(N, C, t, H, W)`` and returns
    ``(N, D)`` is clip-level (e.g. torchvision's ``r3d_18``); a 2D image model is wrapped in a
    :class:`FrameEncoder` and is frame-level (e.g. torchvision's ``resnet18``).

    Args:
        module: the model.
        token_level / feature_dim: skip inference and use these.
        strip_head: remove the classification head first (default True).
        input_size: ``(C, t, H, W)`` of the dummy clip, for models that need a fixed size.

    Returns:
        A module that passes :func:`validate_backbone`.
    """
    if strip_head:
        strip_classifier(module)
    if token_level is not None and feature_dim is not None:
        if token_level == "frame" and not _accepts_video(module, input_size):
            module = FrameEncoder(module, feature_dim)
        else:
            module.token_level, module.feature_dim = token_level, int(feature_dim)
        return validate_backbone(module, input_size)

    c, t, h, w = input_size
    device = _device_of(module)
    video_out = None
    try:
        video_out = _dummy_forward(module, torch.zeros(2, c, t, h, w, device=device))
    except Exception:
        video_out = None
    if isinstance(video_out, torch.Tensor) and video_out.dim() == 2 and video_out.shape[0] == 2:
        module.token_level, module.feature_dim = "clip", int(video_out.shape[1])
    elif isinstance(video_out, torch.Tensor) and video_out.dim() == 3 and video_out.shape[:2] == (2, t):
        module.token_level, module.feature_dim = "frame", int(video_out.shape[2])
    else:
        try:
            img_out = _dummy_forward(module, torch.zeros(2, c, h, w, device=device))
        except Exception as err:
            raise BackboneContractError(
                f"as_backbone could not run {type(module).__name__} on a clip {(2, c, t, h, w)} "
                f"nor on images {(2, c, h, w)}: {type(err).__name__}: {err}. Pass "
                f"input_size=(C, t, H, W) that the model accepts, or token_level= and feature_dim=."
            ) from err
        if not isinstance(img_out, torch.Tensor) or img_out.dim() not in (2, 4):
            raise BackboneContractError(
                f"as_backbone: {type(module).__name__} returned {_shape(img_out)} for images "
                f"{(2, c, h, w)}; expected (N, D) features or an (N, D, h, w) map. "
                f"Is the head still attached? Pass strip_head=True or remove it yourself."
            )
        module = FrameEncoder(module, int(img_out.shape[1]))
    if feature_dim is not None and feature_dim != module.feature_dim:
        raise BackboneContractError(
            f"as_backbone: feature_dim={feature_dim} was given but the model produces "
            f"{module.feature_dim} features."
        )
    return validate_backbone(module, input_size)


def _accepts_video(module: nn.Module, input_size) -> bool:
    c, t, h, w = input_size
    try:
        _dummy_forward(module, torch.zeros(1, c, t, h, w, device=_device_of(module)))
        return True
    except Exception:
        return False
