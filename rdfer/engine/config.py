"""Training configuration: the paper's recipe as defaults, YAML in and out."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

__all__ = ["TrainConfig", "load_yaml_config", "config_to_yaml", "default_workers", "RESUMABLE_CHANGES", "RECIPES",
           "default_recipe"]

#: Starting values of ``rdfer train`` before the YAML file and the flags. ``paper``: the
#: dataclass defaults (section IV-B: 100 epochs, 64 frames of 112 px, batch 128), hours on a GPU.
#: ``cpu``: the demo's sizes, so ``rdfer train synthetic`` finishes in minutes on 2 CPU cores.
RECIPES: Dict[str, Dict[str, Any]] = {
    "paper": {},
    "cpu": dict(num_frames=16, image_size=32, synthetic_train=1200, synthetic_test=600, epochs=14,
                warmup_epochs=3, batch_size=32, lr=2e-3, min_lr=2e-5, workers=0, augment=False),
}


def default_recipe(dataset: str) -> str:
    """``cpu`` for the built-in synthetic set (no GPU assumed), ``paper`` for real datasets."""
    return "cpu" if dataset == "synthetic" else "paper"


def default_workers() -> int:
    """DataLoader workers by default: one per available core, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


@dataclass
class TrainConfig:
    """Everything ``rdfer train`` needs. Defaults are the paper's recipe (section IV-B)."""

    # -- data ----------------------------------------------------------------------------
    dataset: str = "synthetic"  # synthetic | dfew | ferv39k | csv | packed
    root: Optional[str] = None  # dfew / ferv39k root folder
    fold: int = 1  # dfew fold 1..5
    train_source: Optional[str] = None  # csv: train CSV; packed: train pack folder
    test_source: Optional[str] = None  # csv: test CSV; packed: test pack folder
    num_frames: int = 64  # T, frames loaded per video
    image_size: int = 112
    synthetic_train: int = 1200  # synthetic: number of training videos
    synthetic_test: int = 400
    noise_rate: float = 0.0  # synthetic: injected label noise in the training set
    noise: str = "symmetric"
    synthetic_distribution: str = "uniform"  # synthetic: uniform | long_tail class frequencies
    val_fraction: float = 0.0  # carve a validation split from train, for model selection
    classes: Optional[List[str]] = None  # csv: the class names, in order (default: from the labels)
    # -- model ---------------------------------------------------------------------------
    model: Optional[str] = None  # a preset (rdfer.list_models()); or give `backbone`
    backbone: Optional[str] = None  # a registry backbone wrapped with the paper's defaults
    pretrained: Union[bool, str] = False
    model_options: Dict[str, Any] = field(default_factory=dict)  # wrap_with_rdfer overrides
    # -- loss ----------------------------------------------------------------------------
    strategy: str = "agreement"  # rdfer.losses.ALL_STRATEGIES
    t_hard: float = 0.2
    t_noisy: float = 0.1
    lambda_hard: float = 1.5
    lambda_noisy: float = 0.0
    label_smoothing: float = 0.1
    aux_weight: float = 0.1
    loss_scope: str = "epoch"
    start_epoch: Optional[int] = None  # None: the warm-up length
    noisy_requires_mismatch: bool = False
    agree_min: float = 0.75  # robust strategies: agreement from which the clips count as agreeing
    memory_momentum: float = 0.0  # per-sample loss/agreement history across epochs (0: latest only)
    gce_q: float = 0.7  # strategy gce
    noisy_max: float = 0.5  # strategy clip_vote: largest share flagged NOISY
    logit_adjustment: float = 0.0  # tau of the logit-adjusted loss (0: off)
    class_weighted: bool = False
    balanced_sampler: bool = False
    # -- recipe --------------------------------------------------------------------------
    epochs: int = 100
    warmup_epochs: int = 10
    batch_size: int = 128  # global batch (split across processes under torchrun)
    accum_steps: int = 1
    lr: float = 7e-4
    min_lr: float = 7e-6
    weight_decay: float = 0.05
    grad_clip: Optional[float] = None
    augment: bool = True
    amp: bool = False  # bf16 autocast, CUDA only
    device: str = "auto"
    workers: int = field(default_factory=default_workers)  # min(4, available cores)
    seed: int = 0
    deterministic: bool = False
    # -- output --------------------------------------------------------------------------
    out: str = "runs/rdfer"
    resume: bool = False
    overwrite: bool = False  # a fresh run into a folder holding a run: move the old run aside
    keep_checkpoints: int = 2
    eval_test_every: int = 0  # >0: also evaluate on the test split every N epochs (monitoring only)
    progress: bool = True
    verbose: bool = False  # also print the per-epoch lines of train.log on the terminal
    max_bad_steps: int = 5  # consecutive non-finite losses tolerated (skipped) before stopping
    stop_after: Optional[int] = None  # end this invocation after N epochs (time-boxed jobs); --resume continues

    def effective_start_epoch(self) -> int:
        return self.warmup_epochs if self.start_epoch is None else self.start_epoch

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(names)}")
        return cls(**values)


# Options a --resume may change: where and how the run executes, not what it computes.
RESUMABLE_CHANGES = frozenset({
    "out", "resume", "overwrite", "stop_after", "progress", "verbose", "workers", "device", "eval_test_every",
    "keep_checkpoints", "max_bad_steps",
})


def load_yaml_config(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML file of :class:`TrainConfig` fields (dashes or underscores)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    from ..data.video_csv import read_utf8

    try:
        # safe_load: tags such as !!python/object are refused, never constructed.
        data = yaml.safe_load(read_utf8(path)) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not a plain YAML mapping of options ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of options, found {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    try:
        TrainConfig.from_dict(data)  # validates the names
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    return data


def config_to_yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
