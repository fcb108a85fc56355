"""``rdfer eval``, ``rdfer audit`` and ``rdfer analyze``: a checkpoint on a labelled dataset."""

from __future__ import annotations

import argparse

from .common import _add_checkpoint_dataset_args, _inference_setup, _require_extra


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: WAR, UAR, per-class recall, confusion matrix",
                       argument_default=argparse.SUPPRESS)
    _add_checkpoint_dataset_args(p, "test")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args) -> int:
    import json

    from ..engine.checkpoint import atomic_write_text
    from ..engine.evaluate import evaluate, write_confusion

    model, _, loader, classes, device, tf, out, split = _inference_setup(args, "test", "eval")
    metrics = evaluate(model, loader, device, len(classes), classes, tf, progress=True)
    metrics["tta"] = "mirror" if getattr(args, "tta", False) else None  # how the numbers were made
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    write_confusion(metrics, classes, out)
    print(f"{split}: WAR {100 * metrics['war']:.2f}%  UAR {100 * metrics['uar']:.2f}%  "
          f"({metrics['num_samples']} videos, {metrics['excluded_invalid']} unreadable excluded)")
    for name, recall in metrics["per_class_recall"].items():
        print(f"  {name:>9}: " + ("-" if recall is None else f"{100 * recall:.2f}%"))
    print(f"-> {out}/metrics.json, confusion.csv, confusion.png")
    return 0


def _add_audit(sub) -> None:
    p = sub.add_parser("audit", help="rank suspected label errors and hard videos of a labelled dataset",
                       description="Run a model over a labelled dataset and write a ranked report of suspected "
                       "label errors (clips agree, loss high, vote contradicts the label) and hard videos (clips "
                       "disagree): audit.md, audit.csv, label_errors.csv, hard_samples.csv; with --html also review.html, a page "
                       "for looking at the flagged videos and exporting corrected labels.",
                       argument_default=argparse.SUPPRESS)
    _add_checkpoint_dataset_args(p, "train")
    p.add_argument("--t-hard", type=float, default=0.2, help="share flagged hard (0.2)")
    p.add_argument("--t-noisy", type=float, default=0.1, help="share flagged as suspected label errors (0.1)")
    p.add_argument("--allow-agreeing", action="store_true",
                   help="also flag samples whose clip vote equals the label (the paper's pure rank rule)")
    p.add_argument("--html", action="store_true",
                   help="also write review.html: the flagged videos' frames and evidence, keep/relabel choices and a "
                   "corrected-CSV export, in a static page that opens from disk")
    p.add_argument("--html-embed", action="store_true", help="with --html: embed the images in the page (one file)")
    p.set_defaults(func=_cmd_audit)


def _cmd_audit(args) -> int:
    from ..analysis.audit import audit_predictions, write_audit
    from ..engine.evaluate import run_inference

    model, dataset, loader, classes, device, tf, out, _ = _inference_setup(args, "train", "audit")
    preds = run_inference(model, loader, device, tf, progress=True, desc="audit")
    base = getattr(dataset, "dataset", dataset)
    report = audit_predictions(preds, classes, args.t_hard, args.t_noisy, not getattr(args, "allow_agreeing", False),
                               getattr(base, "is_noisy", None), getattr(base, "is_hard", None))
    files = write_audit(report, out)
    print(f"{len(report['suspected_label_errors'])} suspected label errors, {len(report['hard_samples'])} hard videos "
          f"of {report['num_samples']}")
    for name in ("noisy", "hard"):
        gt = report.get(f"{name}_vs_ground_truth")
        if gt:
            print(f"  {name} flags vs ground truth: precision {gt['precision']:.1%} (random {gt['random_precision']:.1%}), "
                  f"recall {gt['recall']:.1%}")
    print(f"-> {files['md']}")
    if getattr(args, "html", False) or getattr(args, "html_embed", False):
        from ..analysis.review_page import write_review_page

        page = write_review_page(report, preds, dataset, classes, out, embed_images=getattr(args, "html_embed", False))
        print(f"-> {page} (open it in a browser to review the flagged videos)")
    return 0


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="the paper's analyses: Tables V and VII, confusion matrix, t-SNE, sample strips",
                       argument_default=argparse.SUPPRESS)
    _add_checkpoint_dataset_args(p, "test")
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args) -> int:
    from ..analysis.report import write_analysis
    from ..engine.evaluate import run_inference

    _require_extra("viz", "rdfer analyze")  # before anything is written: the figures and the t-SNE need both
    model, dataset, loader, classes, device, tf, out, _ = _inference_setup(args, "test", "analyze")
    preds = run_inference(model, loader, device, tf, progress=True, desc="analyze")
    summary = write_analysis(preds, dataset, classes, model.n_clips, out)
    print(f"WAR {summary['war']:.2%}  UAR {summary['uar']:.2%} -> {out}/analysis.md")
    return 0
