"""Table V (share of samples per agreement level and class) and Table VII (accuracy per
agreement level and class), as plain nested lists ready for CSV or Markdown."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

__all__ = ["agreement_levels", "agreement_distribution_table", "agreement_accuracy_table", "format_markdown_table", "to_csv"]

Table = Tuple[List[str], List[List[object]]]  # header, rows


def agreement_levels(n_clips: int) -> List[float]:
    return [k / n_clips for k in range(1, n_clips + 1)]


def _level_masks(agreement: torch.Tensor, n_clips: int):
    for level in agreement_levels(n_clips):
        yield level, (agreement - level).abs() < 1e-6


def agreement_distribution_table(agreement: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], n_clips: int = 4) -> Table:
    """Rows: agreement levels; columns: classes and "sum"; cells: share of the column's samples
    at that level (Table V). The last row counts the samples ("num")."""
    header = ["agreement"] + list(class_names) + ["sum"]
    rows: List[List[object]] = []
    totals = [int((labels == c).sum()) for c in range(len(class_names))] + [int(labels.numel())]
    for level, mask in _level_masks(agreement, n_clips):
        row: List[object] = [f"{level:.2f}"]
        for c in range(len(class_names)):
            in_class = labels == c
            row.append(round(float((mask & in_class).sum()) / max(int(in_class.sum()), 1), 4))
        row.append(round(float(mask.sum()) / max(int(labels.numel()), 1), 4))
        rows.append(row)
    rows.append(["num"] + totals)
    return header, rows


def agreement_accuracy_table(agreement: torch.Tensor, preds: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], n_clips: int = 4) -> Table:
    """Rows: agreement levels; columns: classes and "average"; cells: accuracy of the samples
    of that class at that level, None where there is none (Table VII)."""
    header = ["agreement"] + list(class_names) + ["average"]
    correct = preds == labels
    rows: List[List[object]] = []
    for level, mask in _level_masks(agreement, n_clips):
        row: List[object] = [f"{level:.2f}"]
        for c in range(len(class_names)):
            sel = mask & (labels == c)
            row.append(round(float(correct[sel].float().mean()), 4) if sel.any() else None)
        row.append(round(float(correct[mask].float().mean()), 4) if mask.any() else None)
        rows.append(row)
    return header, rows


def format_markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v):
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def to_csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return "\n".join([",".join(header)] + [",".join("" if v is None else str(v) for v in row) for row in rows]) + "\n"
