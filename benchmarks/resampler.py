"""Does the key-expression re-sampler find the expression? Locators compared on ground truth.

    python benchmarks/resampler.py              # 3 seeds x 8 rows on 2 idle CPU cores (about 10 minutes)
    python benchmarks/resampler.py --quick      # a smoke run of seconds (writes resampler_quick.*)

SyntheticDFER knows where each expression is (its key window). Videos of ``T = 32`` loaded frames
carry a key window of 20-35% of the video; the recognizer reads ``n = 16`` frames, so where it
reads matters. ``rdfer_small`` (16 glimpses for the detector) is trained on **clean** labels with
the library's loss (``AgreementLoss(strategy="ce")``: label smoothing, the clip term and, for the
saliency locator, its multiple-instance term), the same budget for every row:

* ``uniform``: no re-sampler, 16 frames spread over the whole video (``resample=False``);
* ``mean`` / ``map`` / ``saliency``: the learned re-sampler with each locator
  (``saliency, no grad``: ``locator_grad=False``; ``saliency, self-target``: the multiple-instance
  term's target is the model's own prediction instead of the label);
* ``peak``: the saliency locator restricted to the neighbourhood of its strongest glimpse;
* ``oracle``: no re-sampler, 16 frames read (linear interpolation) inside the **true** key window;
* ``frame baseline``: no rdfer at all (issue 28): the same backbone on 16 uniformly spread frames,
  a linear head, logits averaged, plain CE -- the row rdfer must beat where the expression is in
  a window.

Columns: validation and test WAR / UAR (validation chooses, test reports), the window IoU with
the true key window before and after training (all videos, and expressive ones: neutral videos
show no expression, so no window is right for them), the centre error in frames, and seconds
per training epoch. Writes ``benchmarks/results/resampler.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rdfer  # noqa: E402
from rdfer.data import SyntheticDFER  # noqa: E402
from rdfer.data.transforms import VideoBatchTransform  # noqa: E402
from rdfer.engine.checkpoint import atomic_write_text  # noqa: E402
from rdfer.engine.metrics import classification_metrics, window_iou  # noqa: E402
from rdfer.model.sampler import read_frames  # noqa: E402

# row name -> wrap_with_rdfer / AgreementLoss options (None: oracle)
ROWS: Dict[str, Optional[Dict[str, Any]]] = {
    "uniform": dict(model=dict(resample=False)),
    "mean": dict(model=dict(locator="mean")),
    "map": dict(model=dict(locator="map")),
    "saliency": dict(model=dict(locator="saliency")),
    "saliency, no grad": dict(model=dict(locator="saliency", locator_grad=False)),
    "saliency, self-target": dict(model=dict(locator="saliency"), loss=dict(locator_target="prediction")),
    "peak": dict(model=dict(locator="peak")),
    "oracle": None,
    # Issue 28: not rdfer at all -- the same backbone per frame, a linear head, plain CE on the
    # averaged logits, 16 frames spread over the whole video: what a user gets without rdfer.
    "frame baseline": dict(preset="frame_baseline", model={}, loss=dict(aux_weight=0.0)),
    "peak, frame head": dict(model=dict(locator="peak", frame_head=True)),
    # Issue 24 (rows fixed before the runs): the key-instance locator with 4 or 2 centres, and
    # with a 3-epoch warm-up in which the recognizer reads uniformly while the locator learns.
    "keyinstance": dict(model=dict(locator="keyinstance", num_centres=4)),
    "keyinstance, 2 centres": dict(model=dict(locator="keyinstance", num_centres=2)),
    "keyinstance, warm-up": dict(model=dict(locator="keyinstance", num_centres=4, locator_warmup_epochs=3)),
}
# Issue 24's grid: these rows in every setting; the candidates for the default locator are the
# learned ones, chosen on validation WAR averaged over the four settings, and a new default must
# beat "peak" on it.
GRID_ROWS = ["uniform", "mean", "peak", "keyinstance", "keyinstance, 2 centres", "keyinstance, warm-up", "oracle"]
CANDIDATES = ["mean", "peak", "keyinstance", "keyinstance, 2 centres", "keyinstance, warm-up"]
# setting -> (frames loaded, key-window length as a fraction of the video). The first is the
# setting of the earlier rounds (issue 13); SyntheticDFER's default window is 30-55%.
SETTINGS = {"32 frames, key 20-35%": (32, (0.2, 0.35)), "32 frames, key 30-55%": (32, (0.3, 0.55)),
            "64 frames, key 20-35%": (64, (0.2, 0.35)), "64 frames, key 30-55%": (64, (0.3, 0.55))}
FIRST_SETTING = "32 frames, key 20-35%"
NEUTRAL = rdfer.EMOTIONS.index("neutral")


def render(ds: SyntheticDFER) -> Dict[str, torch.Tensor]:
    return {"videos": torch.stack([ds.render(i) for i in range(len(ds))]), "labels": ds.labels.clone(),
            "key_windows": ds.key_windows.clone()}


def oracle_view(videos: torch.Tensor, key_windows: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` frames read evenly inside each true key window: uint8 (B, C, n, H, W)."""
    start, last = key_windows[:, 0].float(), (key_windows[:, 1] - 1).float()
    positions = start[:, None] + (last - start)[:, None] * torch.linspace(0, 1, n)[None]
    return read_frames(videos.float(), positions).round().to(torch.uint8)


def build(row: str, seed: int, glimpses: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = ROWS[row]
    options = dict(resample=False) if spec is None else spec["model"]
    preset = "rdfer_small" if spec is None else spec.get("preset", "rdfer_small")
    if preset == "rdfer_small":
        # The rows ran before the frame head became the default (issue 28): off unless named.
        options = {"frame_head": False, **options}
        if options.get("resample", True):
            options = {**options, "num_glimpses": glimpses}
    return rdfer.create_model(preset, **options)


def evaluate(model, data, row: str, n: int) -> Dict[str, Any]:
    model.eval()
    normalise = VideoBatchTransform(train=False)
    preds, positions = [], []
    with torch.no_grad():
        for idx in torch.arange(len(data["labels"])).split(64):
            videos = data["videos"][idx]
            if row == "oracle":
                videos = oracle_view(videos, data["key_windows"][idx], n)
            out = model(normalise(videos))
            preds.append(out.logits.argmax(1))
            positions.append(out.positions)
    preds = torch.cat(preds)
    m = classification_metrics(preds, data["labels"], len(rdfer.EMOTIONS))
    result = {"war": m["war"], "uar": m["uar"]}
    if row != "oracle":
        pos, key = torch.cat(positions), data["key_windows"]
        iou = window_iou(pos, key)
        expressive = data["labels"] != NEUTRAL
        true_centre = (key[:, 0] + key[:, 1] - 1).float() / 2
        result.update(iou=float(iou.mean()), iou_expressive=float(iou[expressive].mean()),
                      centre_error=float((pos.mean(1) - true_centre)[expressive].abs().mean()))
    return result


def run_row(row: str, seed: int, train, val, test, epochs: int, batch_size: int, glimpses: int) -> Dict[str, Any]:
    n_read = 16
    model = build(row, seed, glimpses)
    spec = ROWS[row] or {}
    criterion = rdfer.AgreementLoss(len(train["labels"]), strategy="ce", **spec.get("loss", {}))
    normalise = VideoBatchTransform(train=False)
    at_init = evaluate(model, test, row, n_read)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    n = len(train["labels"])
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for _epoch in range(epochs):
        model.train()
        if hasattr(model, "set_epoch"):
            model.set_epoch(_epoch)
        for idx in torch.randperm(n, generator=g).split(batch_size):
            videos = train["videos"][idx]
            if row == "oracle":
                videos = oracle_view(videos, train["key_windows"][idx], n_read)
            out = model(normalise(videos))
            loss = criterion(out, train["labels"][idx], idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        criterion.step_epoch()
    seconds = time.time() - start
    val_m, test_m = evaluate(model, val, row, n_read), evaluate(model, test, row, n_read)
    result = {"row": row, "seed": seed, "val": val_m, "test": test_m, "seconds_per_epoch": seconds / epochs}
    if "iou" in at_init:
        result["iou_init"] = at_init["iou"]
    return result


def step_timing(rows: List[str], frames: int, repeats: int, batch_size: int = 32) -> Dict[str, Any]:
    """Seconds per training step (forward, loss, backward, AdamW) of each row on the same random
    batch, the rows interleaved ``repeats`` times so that a busy machine slows them alike; the
    median per row and its ratio to ``peak``."""
    torch.manual_seed(0)
    models = {row: build(row, 0, 16) for row in rows}
    criteria = {row: rdfer.AgreementLoss(batch_size, strategy="ce") for row in rows}
    opts = {row: torch.optim.AdamW(m.parameters(), lr=2e-3) for row, m in models.items()}
    videos = torch.rand(batch_size, 3, frames, 32, 32)
    labels, index = torch.randint(0, 7, (batch_size,)), torch.arange(batch_size)
    times: Dict[str, List[float]] = {row: [] for row in rows}
    for _ in range(repeats + 1):  # the first round warms up
        for row in rows:
            start = time.perf_counter()
            loss = criteria[row](models[row].train()(videos), labels, index)
            opts[row].zero_grad()
            loss.backward()
            opts[row].step()
            times[row].append(time.perf_counter() - start)
    median = {row: statistics.median(t[1:]) for row, t in times.items()}
    return {"frames": frames, "repeats": repeats, "seconds_per_step": median,
            "ratio_to_peak": {row: median[row] / median["peak"] for row in rows}}


def summarise(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    def ms(values):
        values = list(values)
        return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]

    out = []
    settings = dict.fromkeys([*SETTINGS, *(r.get("setting", FIRST_SETTING) for r in runs)])
    for setting, row in ((setting, row) for setting in settings for row in ROWS):
        rs = [r for r in runs if r["row"] == row and r.get("setting", FIRST_SETTING) == setting]
        if not rs:
            continue
        s = {"setting": setting, "row": row, "seeds": len(rs), "seconds_per_epoch": ms(r["seconds_per_epoch"] for r in rs)}
        for split in ("val", "test"):
            for key in ("war", "uar", "iou", "iou_expressive", "centre_error"):
                if key in rs[0][split]:
                    s[f"{split}_{key}"] = ms(r[split][key] for r in rs)
        if "iou_init" in rs[0]:
            s["iou_init"] = ms(r["iou_init"] for r in rs)
        out.append(s)
    return out


def to_markdown(summary: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    def pm(s, key, pct=True, digits=1):
        if key not in s:
            return "-"
        m, sd = s[key]
        scale = 100 if pct else 1
        return f"{scale * m:.{digits}f} ± {scale * sd:.{digits}f}"

    lines = [
        "# Key-expression re-sampler on SyntheticDFER",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['date']}; this invocation {meta['seconds']:.0f} s.  ",
        f"Recipe: {meta['recipe']}.",
        "",
        "Mean ± std over seeds. WAR/UAR in %. IoU: the span read vs the true key window (test set, all videos / "
        "expressive videos, i.e. not neutral). Centre error: |centre read - true centre| in frames (expressive "
        "test videos). s/epoch: training time per epoch on this machine.",
        "",
    ]
    for setting in dict.fromkeys(s["setting"] for s in summary):
        lines += ["", f"## {setting} (16 read)", "",
                  "| row | seeds | val WAR | val UAR | test WAR | test UAR | IoU init | IoU trained | IoU trained "
                  "(expressive) | centre error (frames) | s/epoch |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in (s for s in summary if s["setting"] == setting):
            lines.append(
                f"| {s['row']} | {s['seeds']} | {pm(s, 'val_war')} | {pm(s, 'val_uar')} | {pm(s, 'test_war')} | "
                f"{pm(s, 'test_uar')} | {pm(s, 'iou_init', False, 2)} | {pm(s, 'test_iou', False, 2)} | "
                f"{pm(s, 'test_iou_expressive', False, 2)} | {pm(s, 'test_centre_error', False, 1)} | "
                f"{pm(s, 'seconds_per_epoch', False, 1)} |")
    lines += choice_markdown(summary)
    return "\n".join(lines) + "\n"


def _cell(summary, setting, row, key):
    s = next((s for s in summary if s["setting"] == setting and s["row"] == row), None)
    return None if s is None or key not in s else s[key][0]


def choice_markdown(summary: List[Dict[str, Any]]) -> List[str]:
    """Issue 24's choice: validation WAR of each candidate averaged over the four settings, and,
    per setting, the share of the uniform -> oracle test-WAR gap each row closes."""
    if not all(_cell(summary, st, "peak", "val_war") is not None for st in SETTINGS):
        return []
    score = {row: statistics.mean(_cell(summary, st, row, "val_war") for st in SETTINGS) for row in CANDIDATES
             if all(_cell(summary, st, row, "val_war") is not None for st in SETTINGS)}
    lines = ["", "## Choosing the default locator: validation WAR averaged over the four settings", "",
             "| row | mean val WAR | " + " | ".join(f"gap closed, {st}" for st in SETTINGS) + " |",
             "|---|---:|" + "---:|" * len(SETTINGS)]
    for row in sorted(score, key=lambda r: -score[r]):
        gaps = []
        for st in SETTINGS:
            u, o, v = (_cell(summary, st, r, "test_war") for r in ("uniform", "oracle", row))
            gaps.append("-" if None in (u, o, v) or o == u else f"{100 * (v - u) / (o - u):.0f}%")
        lines.append(f"| {row} | {100 * score[row]:.2f} | " + " | ".join(gaps) + " |")
    best = max(score, key=score.get)
    verdict = ("beats `peak`: the new default" if best != "peak" and score[best] > score["peak"]
               else "`peak` stays the default")
    lines += ["", f"Best on validation: **{best}** ({verdict}; test numbers never choose)."]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds (a smoke run for the tests)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--rows", nargs="*", default=None, choices=list(ROWS), help="a subset of the rows")
    parser.add_argument("--timing", action="store_true",
                        help="only time a training step of the learned locators, interleaved (writes resampler_timing.json)")
    parser.add_argument("--settings", nargs="*", default=None, choices=list(SETTINGS),
                        help="frames loaded and key-window lengths (default: all four; the earlier rounds ran the first)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over (default: keep the runs already in resampler_runs.json, add the missing ones)")
    args = parser.parse_args(argv)
    if args.timing:
        rows = args.rows or ["uniform", "mean", "peak", "keyinstance", "keyinstance, 2 centres"]
        result = {f: step_timing(rows, f, 3 if args.quick else 20, 4 if args.quick else 32)
                  for f in ((16,) if args.quick else (32, 64))}
        result = {"command": "python benchmarks/resampler.py " + " ".join(sys.argv[1:]),
                  "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "timing": result}
        stem = "resampler_timing_quick" if args.quick else "resampler_timing"
        atomic_write_text(Path(args.out) / f"{stem}.json", json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return 0
    if args.quick:
        n_train, n_val, n_test, epochs, seeds = 28, 14, 14, 1, 1
        settings = {"quick": (16, (0.2, 0.35))}
    else:
        n_train, n_val, n_test, epochs, seeds = 480, 240, 480, 10, args.seeds
        settings = {k: SETTINGS[k] for k in (args.settings or SETTINGS)}
    epochs = args.epochs or epochs
    glimpses = 16
    rows = args.rows or (["uniform", "saliency", "keyinstance", "oracle"] if args.quick else GRID_ROWS)
    t0 = time.time()
    command = "python benchmarks/resampler.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    runs_file = Path(args.out) / ("resampler_quick_runs.json" if args.quick else "resampler_runs.json")
    runs = [] if args.quick or args.fresh or not runs_file.is_file() else json.loads(runs_file.read_text())
    for r in runs:
        r.setdefault("setting", FIRST_SETTING)  # runs of the earlier rounds
    done = {(r["setting"], r["row"], r["seed"]) for r in runs}
    for (setting, (frames, window)), seed in ((item, seed) for seed in range(seeds) for item in settings.items()):
        if all((setting, row, seed) in done for row in rows):
            continue
        common = dict(num_frames=frames, image_size=32, key_window=window)
        # Disjoint generator seeds per split; labels are clean in all three.
        train = render(SyntheticDFER(n_train, seed=seed, **common))
        val = render(SyntheticDFER(n_val, seed=seed + 20_000, **common))
        test = render(SyntheticDFER(n_test, seed=seed + 10_000, **common))
        for row in rows:
            if (setting, row, seed) in done:
                continue
            r = run_row(row, seed, train, val, test, epochs, 32, glimpses)
            r["command"], r["setting"] = command, setting
            runs.append(r)
            iou = f"IoU {r['test']['iou']:.2f}" if "iou" in r["test"] else ""
            # Partial results survive an interrupted grid.
            runs_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(runs_file, json.dumps(runs, indent=2))
            print(f"{setting} seed {seed} {row:>22}: val WAR {100 * r['val']['war']:.1f}  test WAR {100 * r['test']['war']:.1f}  "
                  f"{iou}  ({r['seconds_per_epoch']:.1f} s/epoch)", flush=True)
    runs = [r for r in runs if r["seed"] < seeds]
    summary = summarise(runs)
    meta = {
        # Every invocation whose runs are in the table (rows can be added to an earlier grid).
        "command": "`, `".join(dict.fromkeys(r.get("command", "python benchmarks/resampler.py") for r in runs)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "recipe": (f"rdfer_small ({glimpses} glimpses), SyntheticDFER {n_train} train / {n_val} val / {n_test} test videos "
                   f"(clean labels, uniform classes, hard_rate 0.2; frames loaded and key-window length per setting "
                   f"below), 32 px, 16 frames read, {epochs} epochs, batch 32, AdamW 2e-3 cosine, "
                   f"AgreementLoss(strategy='ce'), seeds 0..{seeds - 1}, CPU"),
        "seconds": time.time() - t0,  # this invocation
    }
    md = to_markdown(summary, meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "resampler_quick" if args.quick else "resampler"
    atomic_write_text(out / f"{stem}.json", json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2))
    atomic_write_text(out / f"{stem}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
