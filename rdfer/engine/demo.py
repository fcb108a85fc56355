"""The main job: a frame baseline (the backbone alone), vanilla CE, the small-loss trick, GCE
and rdfer's default loss on the built-in synthetic set with a long tail of classes and 30% label
noise, on CPU, in minutes. No download, no GPU."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from .checkpoint import atomic_write_text
from .config import TrainConfig

__all__ = ["demo_config", "run_demo", "DEMO_STRATEGIES"]

#: (run folder, strategy, label) of the demo's runs, each in ``runs/demo/<folder>``. The last is
#: the library's default rule (``TrainConfig().strategy``); its folder keeps its name whichever
#: rule that is, so the README's ``runs/demo/rdfer`` stays valid. ``frame_baseline`` is not rdfer
#: at all: the same backbone per frame with a linear head and plain CE (issue 28: "rdfer vs not
#: using rdfer" is always on the page).
_DEFAULT_STRATEGY = TrainConfig().strategy
DEMO_STRATEGIES: Tuple[Tuple[str, str, str], ...] = (
    ("frame_baseline", "ce", "frame baseline (no rdfer: backbone per frame, plain CE)"),
    ("ce", "ce", "vanilla CE"),
    ("small_loss", "bigloss_down", "small-loss trick (bigloss_down)"),
    ("gce", "gce", "generalized cross-entropy (gce)"),
    ("rdfer", _DEFAULT_STRATEGY, f"rdfer default ({_DEFAULT_STRATEGY})"),
)


def demo_config(out: str = "runs/demo", **overrides: Any) -> TrainConfig:
    """The demo's recipe: ``rdfer_small`` on 16 frames of 32 px, DFEW-like class frequencies
    (``long_tail``) with 30% symmetric label noise, the paper's loss settings, a short cosine
    schedule with a 3-epoch warm-up (the reweighting starts after it)."""
    base = TrainConfig(
        dataset="synthetic", synthetic_train=1200, synthetic_test=600, noise_rate=0.3,
        synthetic_distribution="long_tail", num_frames=16, image_size=32, model="rdfer_small", epochs=14,
        warmup_epochs=3, batch_size=32, lr=2e-3, min_lr=2e-5, workers=0, augment=False, out=out, seed=0,
    )
    return dataclasses.replace(base, **overrides)


def run_demo(out: str = "runs/demo", progress: bool = True, **overrides: Any) -> Dict[str, Any]:
    """Train each of :data:`DEMO_STRATEGIES` with the same seed and data; print and save a comparison."""
    from .train import train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    runs: Dict[str, Any] = {}
    t0 = time.time()
    for folder, strategy, label in DEMO_STRATEGIES:
        extra = dict(model="frame_baseline", model_options={}, aux_weight=0.0) if folder == "frame_baseline" else {}
        cfg = demo_config(out=str(Path(out) / folder), strategy=strategy, progress=progress, **{**overrides, **extra})
        start = time.time()
        res = train(cfg)
        recall = res["test_last_epoch"].get("per_class_recall", {})
        runs[folder] = {
            "label": label,
            "strategy": strategy,
            "war": res["test_last_epoch"]["war"],
            "uar": res["test_last_epoch"]["uar"],
            "disgust_recall": recall.get("disgust"),
            "noisy_flags": res.get("noisy_flag_quality"),
            "hard_flags": res.get("hard_flag_quality"),
            "seconds": time.time() - start,
        }
    summary = {
        "config": dataclasses.asdict(demo_config(out=out, **overrides)),
        "runs": runs,
        "wall_seconds": time.time() - t0,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    text = format_demo(summary)
    print(text)
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / "demo.json", json.dumps(summary, indent=2))
    atomic_write_text(Path(out) / "demo.md", text + "\n")
    return summary


def format_demo(summary: Dict[str, Any]) -> str:
    cfg = summary["config"]
    lines = [
        f"rdfer demo: {cfg['model']} on SyntheticDFER ({cfg['synthetic_train']} train videos, "
        f"{cfg.get('synthetic_distribution', 'uniform').replace('_', '-')} class frequencies, "
        f"{cfg['noise_rate']:.0%} symmetric label noise; {cfg['synthetic_test']} clean test videos; "
        f"{cfg['num_frames']} frames of {cfg['image_size']} px), {cfg['epochs']} epochs, CPU",
        "",
        "| model and loss | test WAR | test UAR | disgust recall | NOISY flags: precision | recall | HARD flags: precision "
        "| recall | time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in summary["runs"].items():
        nf, hf = r.get("noisy_flags") or {}, r.get("hard_flags") or {}

        def pct(d, k):
            return f"{100 * d[k]:.1f}%" if d and d.get("flagged") else "-"

        rare = "-" if r.get("disgust_recall") is None else f"{100 * r['disgust_recall']:.1f}%"
        lines.append(
            f"| {r.get('label', name)} | {100 * r['war']:.2f}% | {100 * r['uar']:.2f}% | {rare} | "
            f"{pct(nf, 'precision')} | {pct(nf, 'recall')} | {pct(hf, 'precision')} | {pct(hf, 'recall')} | "
            f"{r['seconds']:.0f} |"
        )
    lines += [
        "",
        "Flags: the training-set samples each loss flagged in its last epoch, against the generator's "
        "ground truth (is_noisy / is_hard); '-': the loss flags none of that kind. Disgust is the rarest "
        "class (1.2% of the videos). One seed: benchmarks/noise_robustness.py has the 3-seed grid.",
        f"Total wall time {summary['wall_seconds']:.0f} s on {summary['machine']}.",
    ]
    return "\n".join(lines)
