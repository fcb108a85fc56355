"""Datasets, sampling, decoding and batch transforms for dynamic facial expression videos.

Every dataset returns items in one format (SPEC 5): a dict with ``video`` uint8 ``(C, T, H, W)``,
``label``, ``index``, ``path``, ``frame_index`` (the source frame numbers loaded), ``fps`` (None
when unknown) and ``valid`` (False when nothing could be read; the engine then excludes it).
Names are imported lazily so ``import rdfer`` stays light (no PyAV, no PIL decoding set-up).
"""

from importlib import import_module
from typing import Any

from .emotions import EMOTIONS

_LAZY = {
    "collate_videos": ".collate",
    "batch_buffer": ".collate",
    "VideoBatchTransform": ".transforms",
    "normalize_video": ".transforms",
    "eval_indices": ".sampling",
    "train_indices": ".sampling",
    "sample_indices": ".sampling",
    "DFEW": ".dfew",
    "FERV39K": ".ferv39k",
    "FERV39K_CLASSES": ".ferv39k",
    "VideoCSV": ".video_csv",
    "PackedDataset": ".packed",
    "pack_dataset": ".packed",
    "WebDatasetVideos": ".webdataset",
    "write_webdataset": ".webdataset",
    "batch_videos": ".webdataset",
    "ShardError": ".webdataset",
    "SyntheticDFER": ".synthetic",
    "ASYMMETRIC_NOISE": ".synthetic",
    "render_preview": ".synthetic",
}

__all__ = ["EMOTIONS", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
