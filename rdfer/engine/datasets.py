"""Build the train / test datasets a :class:`TrainConfig` names, with clear errors up front."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import torch
from torch.utils.data import Dataset, Subset

from .config import TrainConfig

__all__ = ["build_datasets", "split_validation", "dataset_labels", "DATASETS"]

DATASETS = ("synthetic", "dfew", "ferv39k", "csv", "packed")


def _need(value, what: str, dataset: str):
    if value is None:
        raise ValueError(f"dataset {dataset!r} needs {what}")
    return value


def _existing(path: str, what: str) -> str:
    if not Path(path).exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def build_datasets(cfg: TrainConfig) -> Tuple[Dataset, Dataset, List[str]]:
    """``(train_set, test_set, class_names)`` for ``cfg.dataset``.

    Raises a clear error (missing root, missing file, wrong option) before any model is built.
    """
    from .. import data

    common = dict(num_frames=cfg.num_frames, image_size=cfg.image_size)
    kind = cfg.dataset
    if kind == "synthetic":
        make = data.SyntheticDFER
        # Rendering is cheap but not free: cache each video after its first epoch (~50 KB at 32 px).
        common["class_distribution"] = cfg.synthetic_distribution
        train = make(cfg.synthetic_train, noise_rate=cfg.noise_rate, noise=cfg.noise, seed=cfg.seed, cache=True,
                     **common)
        # A disjoint seed for the test videos; test labels are always clean. The test set has the
        # training set's class frequencies (as DFEW's folds do).
        test = make(cfg.synthetic_test, noise_rate=0.0, seed=cfg.seed + 10_000, cache=True, **common)
    elif kind == "dfew":
        root = _existing(_need(cfg.root, "--root (the DFEW folder)", kind), "DFEW root")
        train = data.DFEW(root, cfg.fold, "train", train=True, **common)
        test = data.DFEW(root, cfg.fold, "test", train=False, **common)
    elif kind == "ferv39k":
        root = _existing(_need(cfg.root, "--root (the FERV39K folder)", kind), "FERV39K root")
        train = data.FERV39K(root, "train", train=True, **common)
        test = data.FERV39K(root, "test", train=False, **common)
    elif kind == "csv":
        train_csv = _existing(_need(cfg.train_source, "--train A.csv", kind), "train CSV")
        test_csv = _existing(_need(cfg.test_source, "--test B.csv", kind), "test CSV")
        train = data.VideoCSV(train_csv, train=True, classes=cfg.classes, **common)
        test = data.VideoCSV(test_csv, train=False, classes=train.classes, **common)
    elif kind == "packed":
        train_dir = _existing(_need(cfg.train_source, "--train PACK_DIR", kind), "train pack")
        test_dir = _existing(_need(cfg.test_source, "--test PACK_DIR", kind), "test pack")
        train = data.PackedDataset(train_dir, num_frames=cfg.num_frames, train=True)
        test = data.PackedDataset(test_dir, num_frames=cfg.num_frames, train=False)
    else:
        raise ValueError(f"unknown dataset {kind!r}; choose from {DATASETS}")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"dataset {kind!r}: empty split (train {len(train)}, test {len(test)} videos)")
    classes = list(getattr(train, "classes", data.EMOTIONS))
    return train, test, classes


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Labels of every sample without decoding videos (datasets expose ``samples`` or ``labels``)."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices)]
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [label for _, label in dataset.samples]
    return torch.as_tensor(list(labels) if not isinstance(labels, torch.Tensor) else labels, dtype=torch.long)


def split_validation(dataset: Dataset, fraction: float, seed: int) -> Tuple[Dataset, Dataset]:
    """A stratified validation split carved from the training set (``fraction`` per class).

    Items keep their original ``index``, so the agreement memory stays keyed by dataset index.
    """
    labels = dataset_labels(dataset)
    g = torch.Generator().manual_seed(seed)
    val: List[int] = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().squeeze(1)
        members = members[torch.randperm(members.numel(), generator=g)]
        val += members[: int(round(fraction * members.numel()))].tolist()
    val_set = set(val)
    train_idx = [i for i in range(len(labels)) if i not in val_set]
    if not val or not train_idx:
        raise ValueError(f"--val-fraction {fraction} leaves an empty split ({len(labels)} training videos)")
    return Subset(dataset, train_idx), Subset(dataset, sorted(val))
