"""Training, evaluation, metrics and checkpoints."""

from .checkpoint import CheckpointError, load_model, load_weights, read_model_config, save_model
from .config import TrainConfig
from .metrics import classification_metrics, confusion_matrix, mean_std
from .rundir import RunFolderError

__all__ = [
    "TrainConfig",
    "train",
    "train_folds",
    "evaluate",
    "run_inference",
    "classification_metrics",
    "confusion_matrix",
    "mean_std",
    "save_model",
    "load_model",
    "load_weights",
    "read_model_config",
    "CheckpointError",
    "RunFolderError",
]


def __getattr__(name):
    # The loop pulls in timm's scheduler and tqdm: import on first use only.
    if name == "train":
        from .train import train

        return train
    if name == "train_folds":
        from .folds import train_folds

        return train_folds
    if name in ("evaluate", "run_inference"):
        from . import evaluate as _evaluate

        return getattr(_evaluate, name)
    raise AttributeError(name)
