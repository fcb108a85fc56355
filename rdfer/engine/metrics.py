"""Classification metrics for DFER: WAR (accuracy), UAR (mean per-class recall), confusion."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["confusion_matrix", "war_uar", "classification_metrics", "mean_std", "window_iou"]


def window_iou(positions: torch.Tensor, key_windows: torch.Tensor) -> torch.Tensor:
    """Temporal IoU of the span read, ``[min p, max p + 1)``, with true key windows ``[start, end)``.

    ``positions`` (B, n) frame positions; ``key_windows`` (B, 2) in frames. Returns (B,).
    """
    lo, hi = positions.min(dim=1).values, positions.max(dim=1).values + 1
    start, end = key_windows[:, 0].to(lo.dtype), key_windows[:, 1].to(lo.dtype)
    inter = (torch.minimum(hi, end) - torch.maximum(lo, start)).clamp(min=0)
    return inter / (torch.maximum(hi, end) - torch.minimum(lo, start))


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j``. LongTensor (K, K)."""
    preds, targets = preds.long().flatten().cpu(), targets.long().flatten().cpu()
    return torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes).view(num_classes, num_classes)


def war_uar(cm: torch.Tensor) -> Tuple[float, float]:
    """WAR and UAR of a confusion matrix; UAR averages the classes that have samples."""
    support = cm.sum(dim=1)
    present = support > 0
    recall = cm.diag().float() / support.clamp(min=1).float()
    war = float(cm.diag().sum()) / max(int(support.sum()), 1)
    return war, (float(recall[present].mean()) if present.any() else 0.0)


def classification_metrics(
    preds: torch.Tensor, targets: torch.Tensor, num_classes: int, class_names: Optional[Sequence[str]] = None
) -> Dict[str, object]:
    """WAR, UAR, per-class recall and the confusion matrix.

    UAR averages the recall of the classes present in ``targets`` (a class with no test sample
    has no recall; DFEW folds contain all seven). Values are fractions in [0, 1].
    """
    cm = confusion_matrix(preds, targets, num_classes)
    support = cm.sum(dim=1)
    recall = cm.diag().float() / support.clamp(min=1).float()
    present = support > 0
    war, uar = war_uar(cm)
    names: List[str] = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    return {
        "war": war,
        "uar": uar,
        "per_class_recall": {names[i]: (float(recall[i]) if present[i] else None) for i in range(num_classes)},
        "confusion": cm.tolist(),
        "num_samples": int(support.sum()),
    }


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (n-1), as reported for DFEW's five folds."""
    t = torch.tensor(list(values), dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if t.numel() > 1 else 0.0}
