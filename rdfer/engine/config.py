"""Training configuration: the paper's recipe as defaults, YAML in and out."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

__all__ = ["TrainConfig", "load_yaml_config", "check_config_sources", "config_to_yaml", "default_workers", "RESUMABLE_CHANGES", "RECIPES",
           "default_recipe", "Range", "OPTION_RANGES", "option_name", "check_option", "plain_yaml",
           "MAX_CONFIG_BYTES", "SMALL_SET_VIDEOS"]

#: Starting values of ``rdfer train`` before the YAML file and the flags. ``paper``: the
#: dataclass defaults (section IV-B: 100 epochs, 64 frames of 112 px, batch 128), hours on a GPU.
#: ``cpu``: the demo's sizes, so ``rdfer train synthetic`` finishes in minutes on 2 CPU cores.
RECIPES: Dict[str, Dict[str, Any]] = {
    "paper": {},
    "cpu": dict(num_frames=16, image_size=32, synthetic_train=1200, synthetic_test=600, epochs=14,
                warmup_epochs=3, batch_size=32, lr=2e-3, min_lr=2e-5, workers=0, augment=False),
    # Issue 28: small sets (hundreds of videos). The paper's batch 128 and 10 warm-up epochs leave
    # a few hundred videos 3 updates an epoch, most of them in warm-up: nothing fits. On such sets
    # the NOISY flags drop the rare classes before they are learnt and rdfer fits less than its
    # own backbone alone: the class guard and the frame head fix both
    # (benchmarks/results/small_data.md). Both cost accuracy under heavy label noise, hence here
    # and not in the global defaults.
    "small": dict(epochs=30, warmup_epochs=1, batch_size=16, lr=1e-3, min_lr=1e-5, noisy_class_guard=0.5,
                  model_options={"frame_head": True}),
}


#: Training sets with fewer videos than this get the ``small`` recipe by default (issue 28): with
#: the paper's batch of 128 they would see fewer than 16 updates an epoch.
SMALL_SET_VIDEOS = 2000


def default_recipe(dataset: str, num_train: Optional[int] = None) -> str:
    """``cpu`` for the built-in synthetic set (no GPU assumed); for real datasets ``small`` when
    the training set is known to hold fewer than :data:`SMALL_SET_VIDEOS` videos, else ``paper``."""
    if dataset == "synthetic":
        return "cpu"
    if num_train is not None and num_train < SMALL_SET_VIDEOS:
        return "small"
    return "paper"


def default_workers() -> int:
    """DataLoader workers by default: one per available core, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


@dataclass(frozen=True)
class Range:
    """The allowed values of one numeric option: bounds (open or closed), integer or finite
    float, and whether None ("off", "the default") is allowed."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False

    def bounds(self) -> str:
        """``>= 1``, ``in [0, 1)``, ``> 0`` (empty when unbounded)."""

        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))

        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {num(self.high)}"
        return ""

    def describe(self) -> str:
        """What an error message says is allowed: ``>= 1``, ``in [0, 1]``, ``a finite number > 0``."""
        if self.integer or (self.low is not None and self.high is not None):
            return self.bounds() or "an integer"
        return f"a finite number {self.bounds()}".rstrip()

    def check(self, option: str, value: Any) -> Any:
        """``value`` as an int or float when it lies in the range; otherwise a ValueError naming
        ``option``, the value and the range (one line). Numbers written as text (YAML reads ``1e-3``
        as a string) are converted."""
        import math

        if value is None and self.optional:
            return None
        left_out = " (or left out)" if self.optional else ""
        number = value
        if isinstance(value, str):
            try:
                number = int(value) if self.integer else float(value)
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or (self.integer and not isinstance(number, int)):
            allowed = " ".join(t for t in ("an integer" if self.integer else "a number", self.bounds()) if t)
            raise ValueError(f"{option} must be {allowed}{left_out}, got {value!r}")
        if not self.integer:
            try:
                number = float(number)
            except OverflowError:  # an int beyond any float
                number = math.inf
        ok = not isinstance(number, float) or math.isfinite(number)
        if ok and self.low is not None:
            ok = number > self.low if self.low_open else number >= self.low
        if ok and self.high is not None:
            ok = number < self.high if self.high_open else number <= self.high
        if not ok:
            raise ValueError(f"{option} must be {self.describe()}{left_out}, got {number}")
        return number


_UNIT = dict(low=0.0, high=1.0)  # a share or a probability
#: Numeric options that also take a word (checked as numbers otherwise).
AUTO_VALUES: Dict[str, str] = {"logit_adjustment": "auto"}
#: ``logit_adjustment="auto"`` turns the adjustment on (tau 1) when the largest training class has
#: at least this many times the videos of the smallest (DFEW: about 20; FERV39K: about 10).
IMBALANCE_RATIO = 3.0


def resolve_logit_adjustment(value: Union[float, str], class_counts) -> float:
    """The tau a run uses: ``value``, or for ``"auto"`` 1.0 when the training labels are imbalanced
    (largest / smallest class >= :data:`IMBALANCE_RATIO`; an empty class counts, as infinitely
    rare), else 0.0."""
    if value != "auto":
        return float(value)
    counts = [float(c) for c in class_counts]
    return 1.0 if counts and max(counts) > 0 and max(counts) >= IMBALANCE_RATIO * min(counts) else 0.0
_SIZE = dict(low=1, high=1024, integer=True)  # frames, pixels: 1024 catches a typo before it allocates gigabytes

#: The range of every numeric option, by :class:`TrainConfig` field name; the command line uses the
#: same table for its options of the same name (``rdfer pack --num-frames``, ``rdfer demo --epochs``).
OPTION_RANGES: Dict[str, Range] = {
    "fold": Range(1, 5, integer=True),
    "num_frames": Range(**_SIZE),
    "image_size": Range(**_SIZE),
    "synthetic_train": Range(1, integer=True),
    "synthetic_test": Range(1, integer=True),
    "noise_rate": Range(**_UNIT),
    "val_fraction": Range(0.0, 1.0, high_open=True),
    "t_hard": Range(**_UNIT),
    "t_noisy": Range(**_UNIT),
    "lambda_hard": Range(0.0),  # a negative weight would push the loss of those samples up
    "lambda_noisy": Range(0.0),
    "label_smoothing": Range(**_UNIT),
    "aux_weight": Range(0.0),
    "start_epoch": Range(0, integer=True, optional=True),
    "agree_min": Range(**_UNIT),
    "memory_momentum": Range(0.0, 1.0, high_open=True),
    "gce_q": Range(0.0, 1.0, low_open=True),
    "noisy_max": Range(**_UNIT),
    "noisy_class_guard": Range(**_UNIT),
    "logit_adjustment": Range(0.0),
    "epochs": Range(1, integer=True),
    "warmup_epochs": Range(0, integer=True),
    "batch_size": Range(1, integer=True),
    "accum_steps": Range(1, integer=True),
    # AdamW's first update is up to 10 x lr and decays by lr x weight_decay: these bounds keep both
    # inside float32 (3.4e38), where a larger value is not a divergence but a crash.
    "lr": Range(0.0, 1e37, low_open=True),
    "min_lr": Range(0.0, 1e37),
    "weight_decay": Range(0.0, 10.0),
    "grad_clip": Range(0.0, low_open=True, optional=True),  # a negative norm would turn descent into ascent
    "workers": Range(0, integer=True),
    "seed": Range(0, 2**32 - 1, integer=True),  # numpy's seed range; seed * 1_000_003 + epoch fits torch's
    "keep_checkpoints": Range(1, integer=True),
    "eval_test_every": Range(0, integer=True),
    "max_bad_steps": Range(1, integer=True),
    "scale_jitter": Range(0.0, 1.0),  # 1: zoom factors in [1/2, 2]
    "mixup": Range(0.0, 100.0),  # Beta(alpha, alpha); 0: off
    "stop_after": Range(1, integer=True, optional=True),
}

# Options whose command-line flag is not the field name with dashes.
_FLAGS = {"train_source": "--train", "test_source": "--test", "progress": "--quiet", "augment": "--no-augment"}
# Text options with a fixed set of values (the command line offers the same choices).
_CHOICES: Dict[str, tuple] = {
    "dataset": ("synthetic", "dfew", "ferv39k", "csv", "packed", "webdataset"),
    "noise": ("symmetric", "asymmetric"),
    "synthetic_distribution": ("uniform", "long_tail"),
    "loss_scope": ("epoch", "batch"),
}


def option_name(field_name: str) -> str:
    """The command-line flag of a :class:`TrainConfig` field: ``t_hard`` -> ``--t-hard``."""
    return _FLAGS.get(field_name, "--" + field_name.replace("_", "-"))


def check_option(name: str, value: Any, ranges: Optional[Dict[str, Range]] = None) -> Any:
    """``value`` checked against the range of option ``name`` (:data:`OPTION_RANGES` unless
    ``ranges`` is given); a ValueError like ``--t-hard must be in [0, 1], got 2.0`` otherwise."""
    rng = (ranges or OPTION_RANGES).get(name)
    return value if rng is None else rng.check(option_name(name), value)


@dataclass
class TrainConfig:
    """Everything ``rdfer train`` needs. Defaults are the paper's recipe (section IV-B)."""

    # -- data ----------------------------------------------------------------------------
    dataset: str = "synthetic"  # synthetic | dfew | ferv39k | csv | packed | webdataset
    root: Optional[str] = None  # dfew / ferv39k root folder
    fold: int = 1  # dfew fold 1..5
    train_source: Optional[str] = None  # csv: train CSV; packed: train pack folder; webdataset: shards
    test_source: Optional[str] = None  # csv: test CSV; packed: test pack folder; webdataset: shards
    num_frames: int = 64  # T, frames loaded per video
    image_size: int = 112
    synthetic_train: int = 1200  # synthetic: number of training videos
    synthetic_test: int = 400
    noise_rate: float = 0.0  # synthetic: injected label noise in the training set
    noise: str = "symmetric"
    synthetic_distribution: str = "uniform"  # synthetic: uniform | long_tail class frequencies
    synthetic_static: bool = False  # synthetic: the expression in every frame, no hard videos (issue 28)
    val_fraction: float = 0.0  # carve a validation split from train, for model selection
    classes: Optional[List[str]] = None  # csv: the class names, in order (default: from the labels)
    # -- model ---------------------------------------------------------------------------
    model: Optional[str] = None  # a preset (rdfer.list_models()); or give `backbone`
    backbone: Optional[str] = None  # a registry backbone wrapped with the paper's defaults
    pretrained: Union[bool, str] = False
    model_options: Dict[str, Any] = field(default_factory=dict)  # wrap_with_rdfer overrides
    # -- loss ----------------------------------------------------------------------------
    strategy: str = "agreement"  # rdfer.list_strategies()
    strategy_options: Dict[str, Any] = field(default_factory=dict)  # the rule's keyword arguments (issue 23)
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
    noisy_class_guard: float = 0.0  # NOISY only for labels of classes recognised at least this well (issue 28)
    mixup: float = 0.0  # alpha of mixup on the video batch, with any rule (0: off)
    # tau of the logit-adjusted loss (0: off, the paper's loss); "auto" (default since issue 23): 1
    # when the training labels are imbalanced (largest / smallest class >= IMBALANCE_RATIO), else 0
    logit_adjustment: Union[float, str] = "auto"
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
    # Each training video zoomed about its centre by a random factor in [1/(1+s), 1+s] (0: off):
    # faces framed a little tighter and wider than the training crops (issue 35)
    scale_jitter: float = 0.0
    amp: bool = False  # bf16 autocast: a GPU, or a CPU with native bf16 (AVX512-BF16, AMX)
    device: str = "auto"
    workers: int = field(default_factory=default_workers)  # min(4, available cores)
    decode_on_device: bool = False  # webdataset: JPEG frames decoded on the training device, not in the workers
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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every option on its own: numbers in their range (:data:`OPTION_RANGES`, finite), text
        options among their choices. Raises a one-line ValueError naming the option, the value and
        what is allowed; converts numbers written as text (YAML's ``1e-3``)."""
        for name, rng in OPTION_RANGES.items():
            if getattr(self, name) != AUTO_VALUES.get(name):
                setattr(self, name, rng.check(option_name(name), getattr(self, name)))
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{option_name(name)} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not isinstance(self.model_options, dict):
            raise ValueError(f"model_options must be a mapping of wrap_with_rdfer options, got {self.model_options!r}")
        from .checkpoint import check_model_sizes

        check_model_sizes(self.model_options, "--model-option")  # a d_model of 10^9 would eat the memory first
        if not isinstance(self.strategy_options, dict):
            raise ValueError(f"strategy_options must be a mapping of the rule's options, got {self.strategy_options!r}")

    def validate_for_training(self) -> None:
        """:meth:`validate`, then what needs the whole configuration or the registries: the
        strategy, the model and backbone names, the synthetic generator's smallest sizes. Called
        by :func:`rdfer.engine.train.train` before anything is written."""
        from ..losses import create_strategy, is_strategy, list_strategies
        from ..registry import check_backbone_name, check_model_name

        self.validate()
        if not is_strategy(self.strategy):
            raise ValueError(f"--strategy must be one of {', '.join(list_strategies())}, got {self.strategy!r}")
        try:
            create_strategy(self.strategy, **self.strategy_options)
        except ValueError as err:
            raise ValueError(f"--strategy-option: {err}") from None
        if self.model:
            check_model_name(self.model, "--model")
        if self.backbone:
            check_backbone_name(self.backbone, "--backbone")
        if self.dataset == "synthetic":  # the generator draws onset, apex and offset, and a face of 16 px
            Range(4, 1024, integer=True).check("--num-frames (synthetic)", self.num_frames)
            Range(16, 1024, integer=True).check("--image-size (synthetic)", self.image_size)

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


#: Largest YAML config read (``--config``, a run's ``config.yaml``): a config is a few hundred
#: bytes, so a bigger file is the wrong file, and reading it whole costs memory.
MAX_CONFIG_BYTES = 1 << 20

_PLAIN_LOADER: Optional[type] = None


def _plain_loader() -> type:
    """yaml.SafeLoader without anchors and aliases (built once, on first use: yaml is imported lazily)."""
    global _PLAIN_LOADER
    if _PLAIN_LOADER is None:
        import yaml

        class PlainLoader(yaml.SafeLoader):
            # An alias repeats a node by reference: nine levels of nine aliases ("billion laughs")
            # fit in 400 bytes and expand to 10^9 values wherever the config is copied or
            # compared. A config spells every value out, so anchors and aliases are refused.
            def compose_node(self, parent, index):
                event = self.peek_event()
                if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                    raise yaml.composer.ComposerError(
                        None, None, "anchors and aliases (&name, *name) are not allowed: write each value out",
                        event.start_mark)
                return super().compose_node(parent, index)

        _PLAIN_LOADER = PlainLoader
    return _PLAIN_LOADER


def plain_yaml(text: str) -> Any:
    """``yaml.safe_load`` without anchors, aliases or deep nesting: plain values only.

    Tags such as ``!!python/object`` are refused, never constructed (as by ``safe_load``);
    anchors and aliases raise ``yaml.YAMLError`` too, and so does nesting deeper than Python's
    recursion limit (``[[[[...]]]]``), which would otherwise end in a RecursionError.
    """
    import yaml

    try:
        return yaml.load(text, Loader=_plain_loader())  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("nested too deeply to be a config") from None


def load_yaml_config(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML file of :class:`TrainConfig` fields (dashes or underscores).

    Bounded input: a regular file (not a FIFO or device) of at most :data:`MAX_CONFIG_BYTES`,
    UTF-8, parsed by :func:`plain_yaml` (no Python tags, anchors or aliases); anything else is a
    ValueError naming the file.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    from ..data.video_csv import read_utf8

    text = read_utf8(path, MAX_CONFIG_BYTES, "YAML config")
    try:
        data = plain_yaml(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not a plain YAML mapping of options ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of options, found {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    try:
        TrainConfig.from_dict(data)  # validates the names
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    check_config_sources(data, str(path))
    return data


def check_config_sources(values: Dict[str, Any], where: str) -> None:
    """Data is never code: the data sources a config file names (``root``, ``train_source``,
    ``test_source``; every shard a brace pattern expands to) may be local paths or http(s) URLs,
    never a program (``pipe:``...): :func:`rdfer.data.sources.check_source`'s ``"config"`` rule,
    a one-line :class:`~rdfer.data.sources.SourceError` naming the file and the option."""
    from ..data.sources import expand_pattern

    for key in ("root", "train_source", "test_source"):
        if values.get(key) is not None:
            expand_pattern(str(values[key]), "config", f"{where}: {key}")


def config_to_yaml(config: TrainConfig) -> str:
    """The config as YAML that :func:`plain_yaml` reads back: values written out, never aliased."""
    import yaml

    class PlainDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # a shared list would be written as &id001 / *id001
            return True

    return yaml.dump(config.to_dict(), Dumper=PlainDumper, sort_keys=False)
