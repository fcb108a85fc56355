"""``rdfer analyze``: Tables V and VII, confusion matrix, t-SNE and sample strips in one folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Sequence

import torch

from .tables import agreement_accuracy_table, agreement_distribution_table, format_markdown_table, to_csv

__all__ = ["write_analysis"]


def write_analysis(preds, dataset, class_names: Sequence[str], n_clips: int, out_dir: Path,
                   strips_per_level: int = 2, figures: bool = True, seed: int = 0) -> Dict[str, Any]:
    """Write the analysis of an inference pass (:class:`rdfer.engine.evaluate.Predictions`) over
    ``dataset`` into ``out_dir``; returns the tables and the written files."""
    from ..engine.checkpoint import atomic_write_text
    from ..engine.evaluate import write_confusion
    from ..engine.metrics import classification_metrics

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    agr = preds.agreement
    dist = agreement_distribution_table(agr, preds.labels, class_names, n_clips)
    acc = agreement_accuracy_table(agr, preds.preds, preds.labels, class_names, n_clips)
    metrics = classification_metrics(preds.preds, preds.labels, len(class_names), class_names)
    files = [out_dir / "agreement_distribution.csv", out_dir / "agreement_accuracy.csv", out_dir / "analysis.md"]
    atomic_write_text(files[0], to_csv(*dist))
    atomic_write_text(files[1], to_csv(*acc))
    files += write_confusion(metrics, class_names, out_dir)
    md = [
        f"# rdfer analysis ({len(preds)} videos, WAR {metrics['war']:.2%}, UAR {metrics['uar']:.2%})", "",
        "## Share of samples per agreement level and class (paper Table V)", "", format_markdown_table(*dist), "",
        "## Accuracy per agreement level and class (paper Table VII)", "", format_markdown_table(*acc), "",
    ]
    if figures:
        from .plots import plot_sample_strips, plot_tsne

        files.append(plot_tsne(preds.features, agr, preds.labels, class_names, out_dir / "tsne.png", seed=seed))
        # Fig. 3: a few videos per agreement level, lowest level first.
        picks = []
        for level in sorted(set(agr.tolist())):
            picks += (agr == level).nonzero().squeeze(1)[:strips_per_level].tolist()
        if picks:
            videos = [dataset[int(preds.index[i])]["video"] for i in picks]
            files.append(plot_sample_strips(
                videos, preds.positions[picks], preds.clip_logits[picks].argmax(-1), preds.labels[picks].tolist(),
                agr[picks].tolist(), class_names, n_clips, out_dir / "sample_strips.png"))
        md += ["## Figures", "", "![confusion](confusion.png)", "", "![t-SNE](tsne.png)", "", "![samples](sample_strips.png)", ""]
    atomic_write_text(files[2], "\n".join(md))
    summary = {"war": metrics["war"], "uar": metrics["uar"], "agreement_distribution": dist, "agreement_accuracy": acc,
               "files": [str(f) for f in files]}
    atomic_write_text(out_dir / "analysis.json", json.dumps(summary, indent=2))
    return summary
