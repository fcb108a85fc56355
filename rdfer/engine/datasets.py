"""Build the train / test datasets a :class:`TrainConfig` names, with clear errors up front."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset, Subset

from .config import TrainConfig

__all__ = ["build_datasets", "split_validation", "dataset_labels", "DATASETS", "trained_data_config",
           "setting_from_checkpoint", "check_data_against_checkpoint"]

DATASETS = ("synthetic", "dfew", "ferv39k", "csv", "packed", "webdataset")


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
        common["static"] = cfg.synthetic_static
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
        _same_packing(train, test, train_dir, test_dir)
    elif kind == "webdataset":
        train_src = _need(cfg.train_source, "--train SHARDS (a brace pattern, URLs or a pack folder)", kind)
        test_src = _need(cfg.test_source, "--test SHARDS", kind)
        opts = dict(num_frames=cfg.num_frames, seed=cfg.seed, decode_on_device=cfg.decode_on_device)
        train = data.WebDatasetVideos(train_src, train=True, **opts)
        test = data.WebDatasetVideos(test_src, train=False, **opts)
        _same_packing(train, test, train_src, test_src)
    else:
        raise ValueError(f"unknown dataset {kind!r}; choose from {DATASETS}")
    if kind in ("packed", "webdataset") and cfg.classes is not None and list(cfg.classes) != list(train.classes):
        # A pack's labels are positions in its own class list: another list (or order) would
        # silently rename every class, so it is refused, never ignored.
        raise ValueError(f"the classes {list(cfg.classes)} (--classes, or the checkpoint's) are not the pack's own "
                         f"{list(train.classes)}: a pack carries its class list and order; omit --classes, or pack "
                         f"again with the classes you want")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"dataset {kind!r}: empty split (train {len(train)}, test {len(test)} videos)")
    classes = list(getattr(train, "classes", data.EMOTIONS))
    for split, ds in (("train", train), ("test", test)):
        labels = dataset_labels(ds)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise ValueError(f"dataset {kind!r}: the {split} split has a label outside 0..{len(classes) - 1} "
                             f"(its classes are {classes}); it was written with another class list")
    return train, test, classes


def _same_packing(train: Dataset, test: Dataset, train_src: str, test_src: str) -> None:
    # Each pack stores its own class list and frame size: a test pack of another order or size
    # would be scored against the wrong names, or seen at a size the model never saw.
    for what in ("classes", "image_size"):
        if getattr(train, what) != getattr(test, what):
            raise ValueError(f"the packs disagree on {what}: {train_src} has {getattr(train, what)}, "
                             f"{test_src} has {getattr(test, what)}; pack both splits with the same classes "
                             f"and --image-size")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def trained_data_config(source: Union[str, "os.PathLike[str]", torch.nn.Module]) -> Dict[str, Any]:
    """How a checkpoint's model saw its training data: ``num_frames``, ``image_size`` and the
    ``classes`` in output order, as ``rdfer train`` stores them (``rdfer_data`` metadata).

    ``source`` is a checkpoint (file or run folder) or a model from :func:`~rdfer.load_model`
    (its ``data_config``). A checkpoint not written by ``rdfer train`` may lack some keys or all
    (``{}``). Raises :class:`~rdfer.engine.checkpoint.CheckpointError` when the stored values are
    malformed (not positive integers, a class list with a name twice or a count other than the
    model's outputs).
    """
    from ..data.video_csv import check_class_names
    from .checkpoint import CheckpointError, read_metadata, read_model_config

    if isinstance(source, torch.nn.Module):
        where, config = type(source).__name__, dict(getattr(source, "data_config", None) or {})
        num_classes = getattr(source, "num_classes", None)
    else:
        where = str(source)
        try:
            config = json.loads(read_metadata(source).get("rdfer_data", "{}"))
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{where}: the stored data settings (rdfer_data) are not JSON: {err}") from None
        num_classes = read_model_config(source).get("num_classes")
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: the stored data settings (rdfer_data) are not a mapping")
    for key in ("num_frames", "image_size"):
        if key in config and not _positive_int(config[key]):
            raise CheckpointError(f"{where}: the stored {key} {config[key]!r} is not a positive integer")
    if "classes" in config:
        if not isinstance(config["classes"], list):
            raise CheckpointError(f"{where}: the stored classes are not a list")
        try:
            config["classes"] = check_class_names(config["classes"], "the stored classes")
        except ValueError as err:
            raise CheckpointError(f"{where}: {err}") from None
        if num_classes is not None and len(config["classes"]) != num_classes:
            raise CheckpointError(f"{where}: the model predicts {num_classes} classes but {len(config['classes'])} "
                                  f"class names are stored")
    return config


def setting_from_checkpoint(flag: str, given: Any, trained: Any) -> Any:
    """The value to use for a setting training fixed: ``trained`` (from the checkpoint) unless it is
    unknown (None), ``given`` (a flag or argument) otherwise; both known and different is a
    ValueError naming both, e.g. ``--num-frames 64 contradicts the checkpoint (trained with 16)``."""
    if given is not None and trained is not None and given != trained:
        raise ValueError(f"{flag} {given} contradicts the checkpoint (trained with {trained})")
    return trained if given is None else given


def check_data_against_checkpoint(trained: Dict[str, Any], dataset: Dataset, classes: Sequence[str],
                                  what: str) -> Optional[str]:
    """Refuse data that would be scored wrongly by a model trained as ``trained`` records
    (:func:`trained_data_config`): other class names or order, other frame count or size (a pack
    stores its own size). Returns a warning to show when the checkpoint records no class list
    (the classes are then the data's own, in the order training would have inferred them)."""
    base = getattr(dataset, "dataset", dataset)  # a validation carve-out wraps it in a Subset
    for key in ("num_frames", "image_size"):
        have = getattr(base, key, None)
        if trained.get(key) is not None and have is not None and have != trained[key]:
            raise ValueError(f"{what} has {key} {have} but the checkpoint was trained with {trained[key]}"
                             + ("; pack it again at that size" if key == "image_size" else ""))
    if "classes" not in trained:
        return (f"the checkpoint records no class list (it was not written by rdfer train); the classes are the "
                f"data's own: {list(classes)}")
    if list(classes) != list(trained["classes"]):
        raise ValueError(f"{what} has the classes {list(classes)} but the checkpoint was trained on "
                         f"{list(trained['classes'])} (names and order must match)")
    return None


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
    if hasattr(dataset, "subset"):  # a stream (WebDataset) cannot be indexed: it skips the other split's samples
        return dataset.subset(train_idx), dataset.subset(sorted(val))
    return Subset(dataset, train_idx), Subset(dataset, sorted(val))
