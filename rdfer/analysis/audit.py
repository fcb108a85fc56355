"""Dataset audit: rank suspected label errors (agree confidently, contradict the label) and hard
videos (clips disagree), so a person can review the annotations."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from ..losses import HARD, NOISY, agreement_stats, flag_samples
from .tables import format_markdown_table

__all__ = ["audit_predictions", "write_audit"]


def audit_predictions(
    preds,
    class_names: Sequence[str],
    t_hard: float = 0.2,
    t_noisy: float = 0.1,
    noisy_requires_mismatch: bool = True,
    is_noisy: Optional[torch.Tensor] = None,
    is_hard: Optional[torch.Tensor] = None,
) -> Dict[str, Any]:
    """Flag the samples of an inference pass (:class:`rdfer.engine.evaluate.Predictions`).

    NOISY = high agreement, high loss (by default only where the clips' vote contradicts the
    label: in an audit, a "label error" that the model agrees with is not one); HARD = lowest
    agreement. Returns per-sample rows (sorted for review), per-class counts and, when ground
    truth is given (synthetic data), precision/recall next to the random-flagging baseline.
    """
    stats = agreement_stats(preds.clip_logits)
    loss = F.cross_entropy(preds.logits, preds.labels, reduction="none")
    flags = flag_samples(stats.agreement, loss, stats.confidence, t_hard, t_noisy,
                         noisy_requires_mismatch, stats.mode_class, preds.labels)
    pred_cls = preds.logits.argmax(dim=1)
    rows = []
    for i in range(len(preds)):
        rows.append({
            "index": int(preds.index[i]),
            "path": _absolute(preds.paths[i]) if i < len(preds.paths) else "",
            "label": class_names[int(preds.labels[i])],
            "predicted": class_names[int(pred_cls[i])],
            "clip_vote": class_names[int(stats.mode_class[i])],
            "agreement": round(float(stats.agreement[i]), 4),
            "confidence": round(float(stats.confidence[i]), 4),
            "loss": round(float(loss[i]), 4),
            "flag": ("ordinary", "hard", "noisy")[int(flags[i])],
        })
    noisy_rows = sorted((r for r in rows if r["flag"] == "noisy"), key=lambda r: (-r["agreement"], -r["loss"]))
    hard_rows = sorted((r for r in rows if r["flag"] == "hard"), key=lambda r: (r["agreement"], r["confidence"]))
    per_class = []
    for c, name in enumerate(class_names):
        in_c = preds.labels == c
        per_class.append([name, int(in_c.sum()), int((in_c & (flags == NOISY)).sum()), int((in_c & (flags == HARD)).sum())])
    report: Dict[str, Any] = {
        "num_samples": len(rows), "t_hard": t_hard, "t_noisy": t_noisy,
        "noisy_requires_mismatch": noisy_requires_mismatch,
        "suspected_label_errors": noisy_rows, "hard_samples": hard_rows, "per_class": per_class,
        "all": rows, "invalid_excluded": list(preds.invalid_paths),
    }
    for name, truth, flag in (("noisy", is_noisy, NOISY), ("hard", is_hard, HARD)):
        if truth is None:
            continue
        truth = torch.as_tensor(truth, dtype=torch.bool)[preds.index]
        flagged = flags == flag
        tp = int((flagged & truth).sum())
        report[f"{name}_vs_ground_truth"] = {
            "flagged": int(flagged.sum()), "true": int(truth.sum()),
            "precision": tp / max(int(flagged.sum()), 1), "recall": tp / max(int(truth.sum()), 1),
            "random_precision": float(truth.float().mean()),  # expected precision of random flags
        }
    return report


def _absolute(path: str) -> str:
    """``path`` made absolute when it names a file or folder relative to the working directory:
    the audit's CSVs and the review page's export are read from elsewhere (``rdfer train csv``
    resolves relative paths against the CSV's folder). Other names (``synthetic/3``) are kept."""
    if not path or os.path.isabs(path) or not os.path.exists(path):
        return path
    return os.path.join(os.getcwd(), path)  # not abspath: "a/../b" through a symlinked "a" must stay as the OS reads it


def _write_csv(path: Path, header: Sequence[str], rows) -> None:
    """``rows`` (sequences) under ``header`` as a UTF-8 CSV at ``path``, written atomically by the
    stdlib csv writer (a comma, quote or newline inside a field is quoted, as ``csv.reader`` and
    ``rdfer train csv`` read it back)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    _write_text(path, buf.getvalue())


def _write_text(path: Path, text: str) -> None:
    """``text`` to ``path`` as UTF-8, atomically, byte for byte (no newline translation: a newline
    inside a quoted CSV field stays one)."""
    from ..engine.checkpoint import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _md_text(text: str) -> str:
    # A path is one table cell or list item: a "|" or a line break in it would split the row.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "\\r").replace("\n", "\\n")


def _md_rows(rows, limit):
    keys = ["index", "path", "label", "predicted", "clip_vote", "agreement", "confidence", "loss"]
    return format_markdown_table(keys, [[_md_text(r[k]) if k == "path" else r[k] for k in keys] for r in rows[:limit]])


def write_audit(report: Dict[str, Any], out_dir: Path, limit: int = 50) -> Dict[str, Path]:
    """``audit.csv`` (every sample), ``label_errors.csv``, ``hard_samples.csv``, ``audit.md``,
    ``audit.json`` (summary) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = ["index", "path", "label", "predicted", "clip_vote", "agreement", "confidence", "loss", "flag"]

    files = {
        "csv": out_dir / "audit.csv", "errors": out_dir / "label_errors.csv",
        "hard": out_dir / "hard_samples.csv", "md": out_dir / "audit.md", "json": out_dir / "audit.json",
    }
    for name, part in (("csv", "all"), ("errors", "suspected_label_errors"), ("hard", "hard_samples")):
        _write_csv(files[name], keys, [[r[k] for k in keys] for r in report[part]])
    md = [
        f"# rdfer audit ({report['num_samples']} videos)",
        "",
        f"Suspected label errors: the clips agree (high agreement) and the loss against the label is high "
        f"(top {report['t_noisy']:.0%} of the set{', vote contradicting the label' if report['noisy_requires_mismatch'] else ''}). "
        f"Hard videos: the lowest agreement (bottom {report['t_hard']:.0%}).",
        "",
    ]
    for name in ("noisy", "hard"):
        gt = report.get(f"{name}_vs_ground_truth")
        if gt:
            md.append(f"- {name} flags vs ground truth: precision {gt['precision']:.1%} (random flags: "
                      f"{gt['random_precision']:.1%}), recall {gt['recall']:.1%} ({gt['flagged']} flagged, {gt['true']} true)")
    md += ["", "## Per class", "", format_markdown_table(["class", "videos", "suspected label errors", "hard"], report["per_class"]),
           "", f"## Suspected label errors (first {limit})", "", _md_rows(report["suspected_label_errors"], limit),
           "", f"## Hard videos (first {limit})", "", _md_rows(report["hard_samples"], limit), ""]
    if report["invalid_excluded"]:
        md += ["## Unreadable (excluded)", ""] + [f"- {_md_text(p)}" for p in report["invalid_excluded"]] + [""]
    _write_text(files["md"], "\n".join(md))
    summary = {k: v for k, v in report.items() if k not in ("all", "suspected_label_errors", "hard_samples")}
    summary["num_suspected_label_errors"] = len(report["suspected_label_errors"])
    summary["num_hard"] = len(report["hard_samples"])
    _write_text(files["json"], json.dumps(summary, indent=2))
    return files
