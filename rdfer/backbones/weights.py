"""Pretrained weights: upstream caches for ``pretrained=True``, local files for a path."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Sequence, Union

import torch
import torch.nn as nn

__all__ = ["Pretrained", "load_local_weights", "upstream_download", "resolve_pretrained"]

Pretrained = Union[bool, str, os.PathLike]

# Keys of classification heads and wrapper prefixes commonly found in saved state dicts.
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "heads.", "blocks.5.proj.")
_WRAPPER_PREFIXES = ("module.", "backbone.", "model.")


def resolve_pretrained(pretrained: Pretrained) -> tuple:
    """Split ``pretrained`` into (use upstream weights?, local path or None)."""
    if pretrained is True:
        return True, None
    if pretrained in (False, None):
        return False, None
    if isinstance(pretrained, (str, os.PathLike)):
        return False, Path(pretrained)
    raise TypeError(f"pretrained must be True, False or a file path, got {pretrained!r}")


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    # Accept the usual containers: {"state_dict": ...}, {"model": ...}.
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def load_local_weights(
    module: nn.Module,
    path: Union[str, os.PathLike],
    ignore_prefixes: Sequence[str] = _HEAD_PREFIXES,
) -> nn.Module:
    """Load a local ``.pt``/``.pth``/``.safetensors`` state dict into ``module`` (strictly).

    Wrapper prefixes (``module.``, ``backbone.``, ``model.``) are removed; keys of classification
    heads absent from ``module`` are ignored. Anything else that does not match is an error
    listing the offending keys, so a checkpoint of another architecture is never half-loaded.
    """
    path = Path(path)
    state = _read_state_dict(path)
    own = module.state_dict()
    cleaned = {}
    for key, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            if key not in own and key.startswith(prefix) and key[len(prefix):] in own:
                key = key[len(prefix):]
        if key not in own and key.startswith(tuple(ignore_prefixes)):
            continue
        cleaned[key] = value
    missing = sorted(set(own) - set(cleaned))
    unexpected = sorted(set(cleaned) - set(own))
    bad_shape = sorted(k for k in set(own) & set(cleaned) if own[k].shape != cleaned[k].shape)
    if missing or unexpected or bad_shape:
        def few(keys):
            return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if bad_shape:
            parts.append(f"shape mismatch: {few(bad_shape)}")
        raise ValueError(
            f"{path} does not fit {type(module).__name__}: " + "; ".join(parts)
        )
    module.load_state_dict(cleaned, strict=True)
    return module


@contextmanager
def upstream_download(what: str) -> Iterator[None]:
    """Turn an offline download failure into an error that says where to put the file."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        text = str(err).lower()
        if not any(w in text for w in ("url", "connect", "resolve", "network", "download", "hub", "offline", "name or service")):
            raise
        hub_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise RuntimeError(
            f"Could not fetch the pretrained weights of {what}: {err}. You seem to be offline. "
            f"Download them once where you are online (they land in {hub_dir} for torchvision / "
            f"pytorchvideo weights, in the Hugging Face cache ~/.cache/huggingface for timm), or "
            f"pass pretrained='path/to/weights.pth' to load a local file."
        ) from err
