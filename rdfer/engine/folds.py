"""DFEW's 5-fold protocol: one run per fold, then the mean and standard deviation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .checkpoint import atomic_write_text
from .config import TrainConfig
from .distributed import is_main
from .metrics import mean_std
from .train import train

__all__ = ["parse_folds", "train_folds"]


def parse_folds(spec: str) -> List[int]:
    """``"1-5"`` -> [1, 2, 3, 4, 5]; ``"1,3"`` -> [1, 3]."""
    folds: List[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            folds += list(range(lo, hi + 1))
        elif part:
            folds.append(int(part))
    if not folds or any(f < 1 or f > 5 for f in folds):
        raise ValueError(f"folds must lie in 1..5 (DFEW), got {spec!r}")
    return folds


def train_folds(cfg: TrainConfig, folds: Sequence[int]) -> Dict[str, Any]:
    """Train ``cfg`` on each DFEW fold into ``<out>/fold_<k>`` and summarise WAR/UAR."""
    per_fold: Dict[int, Dict[str, float]] = {}
    for fold in folds:
        run = train(dataclasses.replace(cfg, fold=fold, out=str(Path(cfg.out) / f"fold_{fold}")))
        per_fold[fold] = {"war": run["test_last_epoch"]["war"], "uar": run["test_last_epoch"]["uar"]}
    summary = {
        "folds": per_fold,
        "war": mean_std([v["war"] for v in per_fold.values()]),
        "uar": mean_std([v["uar"] for v in per_fold.values()]),
        "note": "last-epoch models; std is the sample standard deviation over folds",
    }
    if is_main():
        atomic_write_text(Path(cfg.out) / "folds.json", json.dumps(summary, indent=2))
    return summary
