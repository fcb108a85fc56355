"""Collate dataset items (dicts) into a batch without converting the uint8 video.

rdfer's datasets also implement ``__getitems__`` (the DataLoader calls it with a whole batch of
indices): each item's video is written straight into one batch tensor from :func:`batch_buffer`,
and :func:`collate_videos` hands that tensor on without copying. Inside a DataLoader worker the
batch is a ``_WorkerBatch`` whose pickle sends the small fields by value and the video through a
reused shared-memory slot (:mod:`rdfer.data.shm`): once decoding is cheap (packed data), moving
batches between processes is what limits loading speed.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from . import shm

__all__ = ["collate_videos", "batch_buffer", "VideoItems"]

_BATCH_FLAG = "_rdfer_batch_buffer"
# Tensors up to this size leave a DataLoader worker inside the pickle; bigger ones via shared memory.
_BY_VALUE_MAX_BYTES = 64 << 10


def batch_buffer(shape: Tuple[int, ...], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """An uninitialised ``shape`` tensor whose rows ``buf[i]`` a dataset's ``__getitems__`` fills;
    :func:`collate_videos` then returns ``buf`` itself as the batch.

    Ordinary memory even inside a DataLoader worker: a batch leaves the worker through a reused
    shared-memory slot (:mod:`rdfer.data.shm`), which is cheaper than filling a fresh
    shared-memory file here.
    """
    buf = torch.empty(tuple(int(d) for d in shape), dtype=dtype)
    setattr(buf, _BATCH_FLAG, True)
    return buf


class VideoItems(Dataset):
    """Base of rdfer's video datasets: ``dataset[i]`` and the DataLoader's batched
    ``__getitems__`` both come from ``_item(index, out=None)``, which writes the uint8
    ``(3, num_frames, image_size, image_size)`` video into ``out`` (a new tensor when None).
    """

    num_frames: int
    image_size: int

    def _item(self, index: int, out: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self._item(index)

    def __getitems__(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
        """A batch of items whose videos are the rows of one :func:`batch_buffer` (the
        DataLoader calls this; :func:`collate_videos` then copies nothing)."""
        buf = batch_buffer((len(indices), 3, self.num_frames, self.image_size, self.image_size))
        return [self._item(i, out=buf[k]) for k, i in enumerate(indices)]


def _filled_buffer(values: List[Any]) -> Optional[torch.Tensor]:
    """The :func:`batch_buffer` whose rows 0..B-1 are exactly ``values``, in order; else None."""
    first = values[0]
    base = getattr(first, "_base", None)
    if base is None or not getattr(base, _BATCH_FLAG, False) or base.shape[0] != len(values):
        return None
    step = first.numel()
    for k, v in enumerate(values):
        if (not isinstance(v, torch.Tensor) or v._base is not base or v.shape != base.shape[1:]
                or v.storage_offset() != base.storage_offset() + k * step or not v.is_contiguous()):
            return None
    return base


class _WorkerBatch(dict):
    """A batch leaving a DataLoader worker, pickled more cheaply than PyTorch's default.

    PyTorch sends every tensor from a worker through a fresh shared-memory file and its own file
    descriptor. Here the small tensors (``label``, ``index``, ``valid``, ``fps``,
    ``frame_index``) travel inside the pickle, and big ones (the video) through a reused slot of
    :mod:`rdfer.data.shm` (PyTorch's path when no slot is free). The main process receives a
    plain dict of tensors either way.
    """

    def __reduce__(self):
        small: Dict[str, Any] = {}
        slotted: Dict[str, Any] = {}
        rest: Dict[str, Any] = {}
        for key, value in self.items():
            if isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.requires_grad:
                if value.nbytes <= _BY_VALUE_MAX_BYTES:
                    small[key] = value.numpy()
                    continue
                sent = shm.send(value)
                if sent is not None:
                    slotted[key] = sent
                    continue
            rest[key] = value
        return _rebuild_batch, (list(self), rest, small, slotted)


def _rebuild_batch(keys: List[str], rest: Dict[str, Any], small: Dict[str, Any],
                   slotted: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for key in keys:
        if key in small:
            out[key] = torch.from_numpy(small[key])
        elif key in slotted:
            out[key] = shm._receive(*slotted[key])
        else:
            out[key] = rest[key]
    return out


def _as_tensor(values: List[Any]):
    first = values[0]
    if isinstance(first, torch.Tensor):
        filled = _filled_buffer(values)
        if filled is not None:
            return filled
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

    Videos that a dataset's ``__getitems__`` already wrote into one :func:`batch_buffer` are not
    copied again: the batch's ``video`` is that buffer.
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
    return _WorkerBatch(out) if get_worker_info() is not None else out
