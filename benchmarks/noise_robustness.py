"""Does agreement tell hard samples from noisy labels? Measured on SyntheticDFER, whose ground
truth knows which labels are wrong, which videos are hard and where the key expression is.

    python benchmarks/noise_robustness.py            # the full grid (CPU: about a minute a run)
    python benchmarks/noise_robustness.py --quick    # a smoke run of a few seconds

For every noise setting (symmetric 0/20/40%, asymmetric 30%) and every Table IV strategy (plus
``agreement`` with ``noisy_requires_mismatch``), ``rdfer_small`` is trained with the same budget
and evaluated on **clean** test labels. Reported: test WAR/UAR (mean +- std over seeds), the
precision and recall of the NOISY flags against ``is_noisy`` and of the HARD flags against
``is_hard`` (training set, last epoch), how many clean-but-hard videos each strategy discards,
the re-sampler window's IoU with the true key window before and after training, and Tables V
and VII for the agreement run. Writes ``benchmarks/results/noise_robustness.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rdfer.analysis.tables import agreement_accuracy_table, agreement_distribution_table, format_markdown_table  # noqa: E402
from rdfer.engine.checkpoint import atomic_path, atomic_write_text, load_model  # noqa: E402
from rdfer.engine.config import TrainConfig  # noqa: E402
from rdfer.engine.datasets import build_datasets  # noqa: E402
from rdfer.engine.distributed import DistInfo  # noqa: E402
from rdfer.engine.evaluate import run_inference  # noqa: E402
from rdfer.engine.metrics import window_iou  # noqa: E402
from rdfer.engine.train import batch_transform, build_model, flag_quality, make_loader, train  # noqa: E402
from rdfer.losses import HARD, NOISY  # noqa: E402

STRATEGIES = ["ce", "bigloss_up", "bigloss_down", "hard_up", "noisy_down", "agreement", "agreement+mismatch"]
NOISE_SETTINGS = [("symmetric", 0.0), ("symmetric", 0.2), ("symmetric", 0.4), ("asymmetric", 0.3)]


def base_config(quick: bool, out: Path) -> TrainConfig:
    if quick:
        return TrainConfig(dataset="synthetic", synthetic_train=48, synthetic_test=24, num_frames=8, image_size=32,
                           model="rdfer_small", epochs=2, warmup_epochs=1, batch_size=16, lr=2e-3, min_lr=2e-5,
                           workers=0, augment=False, device="cpu", progress=False, out=str(out),
                           overwrite=True)
    # Sized so the whole grid (42 runs) fits in about half an hour of a 2-core CPU.
    return TrainConfig(dataset="synthetic", synthetic_train=720, synthetic_test=360, num_frames=16, image_size=32,
                       model="rdfer_small", epochs=12, warmup_epochs=3, batch_size=32, lr=2e-3, min_lr=2e-5,
                       workers=0, augment=False, device="cpu", progress=False, out=str(out),
                           overwrite=True)


def flag_stats(flags: torch.Tensor, is_noisy: torch.Tensor, is_hard: torch.Tensor) -> Dict[str, Any]:
    noisy, hard = flags == NOISY, flags == HARD
    return {
        "noisy_vs_is_noisy": flag_quality(noisy, is_noisy),
        "hard_vs_is_hard": flag_quality(hard, is_hard),
        # Hard videos with a correct label that the strategy stops learning from.
        "clean_hard_discarded": int((noisy & is_hard & ~is_noisy).sum()),
    }


def one_run(cfg: TrainConfig, strategy: str) -> Dict[str, Any]:
    mismatch = strategy == "agreement+mismatch"
    cfg = dataclasses.replace(cfg, strategy="agreement" if mismatch else strategy, noisy_requires_mismatch=mismatch)
    start = time.time()
    results = train(cfg)
    seconds = time.time() - start
    train_set, test_set, classes = build_datasets(cfg)
    model = load_model(cfg.out)
    info = DistInfo()
    preds = run_inference(model, make_loader(test_set, 64, info, False, cfg.seed, 0), info.device, batch_transform(False, False))
    key = torch.as_tensor(test_set.key_windows)[preds.index]
    # The same architecture at initialisation (same seed): where does the untrained re-sampler look?
    torch.manual_seed(cfg.seed)
    untrained = build_model(cfg, len(classes))
    init = run_inference(untrained, make_loader(test_set, 64, info, False, cfg.seed, 0), info.device, batch_transform(False, False))
    flags = torch.tensor([{"ordinary": 0, "hard": 1, "noisy": 2}[line.split(",")[-1]]
                          for line in (Path(cfg.out) / "train_flags.csv").read_text().splitlines()[1:]])
    row = {
        "strategy": strategy, "noise": cfg.noise, "noise_rate": cfg.noise_rate, "seed": cfg.seed,
        "war": results["test_last_epoch"]["war"], "uar": results["test_last_epoch"]["uar"],
        "window_iou_trained": float(window_iou(preds.positions, key).mean()),
        "window_iou_untrained": float(window_iou(init.positions, key).mean()),
        "seconds": seconds,
        **flag_stats(flags, torch.as_tensor(train_set.is_noisy, dtype=torch.bool), torch.as_tensor(train_set.is_hard, dtype=torch.bool)),
    }
    if strategy == "agreement":
        row["table_v"] = agreement_distribution_table(preds.agreement, preds.labels, classes, model.n_clips)
        row["table_vii"] = agreement_accuracy_table(preds.agreement, preds.preds, preds.labels, classes, model.n_clips)
    return row


def summarise(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["noise"], r["noise_rate"], r["strategy"]), []).append(r)
    out = []
    for (noise, rate, strategy), rs in groups.items():
        def ms(key):
            vals = [r[key] for r in rs]
            return (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)

        out.append({
            "noise": noise, "noise_rate": rate, "strategy": strategy, "seeds": len(rs),
            "war": ms("war"), "uar": ms("uar"),
            "noisy_precision": ms_key(rs, "noisy_vs_is_noisy", "precision"), "noisy_recall": ms_key(rs, "noisy_vs_is_noisy", "recall"),
            "hard_precision": ms_key(rs, "hard_vs_is_hard", "precision"), "hard_recall": ms_key(rs, "hard_vs_is_hard", "recall"),
            "noisy_flagged": rs[0]["noisy_vs_is_noisy"]["flagged"], "hard_flagged": rs[0]["hard_vs_is_hard"]["flagged"],
            "clean_hard_discarded": statistics.mean(r["clean_hard_discarded"] for r in rs),
            "iou_trained": ms("window_iou_trained"), "iou_untrained": ms("window_iou_untrained"),
        })
    return out


def ms_key(rs, outer, inner):
    vals = [r[outer][inner] for r in rs]
    return (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)


def to_markdown(summary: List[Dict[str, Any]], rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    def pm(v, pct=True):
        m, s = v
        return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.2f} ± {s:.2f}"

    def flag(v, n):
        return "-" if n == 0 else f"{100 * v[0]:.1f}"

    lines = [
        "# Noise robustness on SyntheticDFER",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['date']}; total {meta['seconds']:.0f} s.  ",
        f"Per run: {meta['recipe']}.",
        "",
        "Test WAR/UAR on clean labels (%, mean ± std over seeds). Flags: the training set's flags in the last "
        "epoch against the generator's ground truth (precision / recall, %). 'clean hard dropped': hard videos "
        "with a correct label that were flagged NOISY (weight 0). IoU: the re-sampled span vs the true key window.",
        "",
        "| noise | strategy | seeds | WAR | UAR | NOISY prec | NOISY rec | HARD prec | HARD rec | clean hard dropped | IoU trained | IoU untrained |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['noise']} {100 * s['noise_rate']:.0f}% | {s['strategy']} | {s['seeds']} | {pm(s['war'])} | {pm(s['uar'])} | "
            f"{flag(s['noisy_precision'], s['noisy_flagged'])} | {flag(s['noisy_recall'], s['noisy_flagged'])} | "
            f"{flag(s['hard_precision'], s['hard_flagged'])} | {flag(s['hard_recall'], s['hard_flagged'])} | "
            f"{s['clean_hard_discarded']:.1f} | {s['iou_trained'][0]:.2f} | {s['iou_untrained'][0]:.2f} |"
        )
    tables = [r for r in rows if "table_v" in r]
    if tables:
        r = max(tables, key=lambda r: r["noise_rate"])
        lines += ["", f"## Agreement run at {r['noise']} {100 * r['noise_rate']:.0f}% noise (seed {r['seed']}), test set",
                  "", "Share of samples per agreement level and class (paper Table V):", "",
                  format_markdown_table(*r["table_v"]), "", "Accuracy per agreement level and class (paper Table VII):", "",
                  format_markdown_table(*r["table_vii"]), ""]
    return "\n".join(lines) + "\n"


def plot(summary: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sym = [s for s in summary if s["noise"] == "symmetric"]
    for strategy in STRATEGIES:
        pts = sorted((s["noise_rate"], s["war"][0], s["war"][1]) for s in sym if s["strategy"] == strategy)
        if pts:
            x, y, e = zip(*pts)
            ax.errorbar([100 * v for v in x], [100 * v for v in y], yerr=[100 * v for v in e], marker="o", capsize=3, label=strategy)
    ax.set_xlabel("symmetric label noise in training (%)")
    ax.set_ylabel("test WAR on clean labels (%)")
    ax.set_title("rdfer_small on SyntheticDFER")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run (2 strategies, 1 setting, tiny data)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="where the result files go")
    parser.add_argument("--work", default=str(ROOT / "runs" / "noise_robustness"),
                        help="folder for the training runs (checkpoints, logs; default runs/noise_robustness)")
    parser.add_argument("--seeds-at-40", type=int, default=3, help="seeds for the 40%% symmetric setting")
    parser.add_argument("--strategies", nargs="*", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    work = Path(args.work)
    strategies = args.strategies or (["ce", "agreement"] if args.quick else STRATEGIES)
    settings = [("symmetric", 0.4)] if args.quick else NOISE_SETTINGS
    rows: List[Dict[str, Any]] = []
    t0 = time.time()
    for noise, rate in settings:
        seeds = range(1 if args.quick else (args.seeds_at_40 if (noise, rate) == ("symmetric", 0.4) else 1))
        for seed in seeds:
            for strategy in strategies:
                run_dir = work / f"{noise}{int(100 * rate)}_{strategy}_s{seed}"
                cfg = dataclasses.replace(base_config(args.quick, run_dir), noise=noise, noise_rate=rate, seed=seed)
                row = one_run(cfg, strategy)
                rows.append(row)
                print(f"{noise} {rate:.0%} seed {seed} {strategy:>18}: WAR {row['war']:.3f} UAR {row['uar']:.3f} "
                      f"noisy P/R {row['noisy_vs_is_noisy']['precision']:.2f}/{row['noisy_vs_is_noisy']['recall']:.2f} "
                      f"({row['seconds']:.0f} s)", flush=True)
    summary = summarise(rows)
    base = base_config(args.quick, work)
    meta = {
        "command": "python benchmarks/noise_robustness.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "seconds": time.time() - t0,
        "recipe": (f"{base.model}, {base.synthetic_train} train / {base.synthetic_test} test videos, {base.num_frames} frames of "
                   f"{base.image_size} px, {base.epochs} epochs ({base.warmup_epochs} warm-up), batch {base.batch_size}, lr {base.lr}, CPU"),
    }
    out.mkdir(parents=True, exist_ok=True)
    stem = "noise_robustness_quick" if args.quick else "noise_robustness"
    atomic_write_text(out / f"{stem}.json", json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2))
    md = to_markdown(summary, rows, meta)
    atomic_write_text(out / f"{stem}.md", md)
    plot(summary, out / f"{stem}.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
