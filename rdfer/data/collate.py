"""Collate dataset items (dicts) into a batch without converting the uint8 video."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import torch
from torch.utils.data import default_collate

__all__ = ["collate_videos"]


def _as_tensor(values: List[Any]):
    first = values[0]
    if isinstance(first, torch.Tensor):
        if all(v.shape == first.shape for v in values):
            # default_collate stacks straight into shared memory inside a DataLoader worker, which
            # saves one copy of the whole uint8 batch on its way to the main process.
            return default_collate(values)
        return list(values)  # e.g. frame_index of different lengths: keep per item
    if isinstance(first, bool):
        return torch.tensor(values, dtype=torch.bool)
    if isinstance(first, int):
        return torch.tensor(values, dtype=torch.long)
    if isinstance(first, float) or first is None and any(isinstance(v, float) for v in values):
        return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)
    if isinstance(first, (tuple, list)) and first and all(isinstance(x, (int, float)) for x in first):
        return torch.tensor([list(v) for v in values])
    return list(values)


def collate_videos(items: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Batch of dataset items -> dict: ``video`` uint8 ``(B, C, T, H, W)``, ``label``/``index``
    LongTensor ``(B,)``, ``valid`` BoolTensor ``(B,)``, ``frame_index`` ``(B, T)``, ``fps``
    float64 ``(B,)`` (NaN when unknown), ``path`` list of str; other keys stacked when they are
    tensors or numbers, kept as lists otherwise.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    keys = list(items[0])
    out: Dict[str, Any] = {}
    for key in keys:
        values = [item.get(key) for item in items]
        if key == "fps":
            out[key] = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)
        elif key == "path":
            out[key] = [str(v) for v in values]
        else:
            out[key] = _as_tensor(values)
    return out
