"""Is SyntheticDFER learnable, and does it need time? Three numbers, one model, three inputs.

    python benchmarks/synthetic_learnability.py            # about 3 minutes on 2 CPU cores
    python benchmarks/synthetic_learnability.py --quick    # a smoke run of seconds

``rdfer_small`` without the re-sampler (``resample=False``: it reads 16 frames uniformly) is
trained with plain cross-entropy on **clean** labels, three times, on the same videos seen
three ways:

* ``one random frame``: one frame drawn at random (per video and epoch), repeated 16 times;
* ``whole video``: the 16 frames of the video, uniformly (what the model sees without the
  re-sampler);
* ``key window``: 16 frames read (linear interpolation) inside the generator's true key window.

If the dataset does what it is for, ``one random frame`` < ``whole video`` < ``key window``: the
expression is visible at 32 px, it lives in time, and knowing where it is helps. Writes
``benchmarks/results/synthetic_learnability.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Dict

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rdfer  # noqa: E402
from rdfer.data import SyntheticDFER  # noqa: E402
from rdfer.data.transforms import VideoBatchTransform  # noqa: E402
from rdfer.engine.checkpoint import atomic_write_text  # noqa: E402
from rdfer.engine.metrics import classification_metrics  # noqa: E402
from rdfer.model.sampler import read_frames  # noqa: E402

VIEWS = ("one random frame", "whole video", "key window")


def view(videos: torch.Tensor, key_windows: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """``videos`` uint8 (B, C, T, H, W) -> the frames the model gets, (B, C, T, H, W) float 0..255."""
    b, _, t = videos.shape[:3]
    if kind == "whole video":
        return videos.float()
    if kind == "one random frame":
        pick = torch.randint(0, t, (b,), generator=generator)
        return videos[torch.arange(b), :, pick].float().unsqueeze(2).expand(-1, -1, t, -1, -1)
    start, end = key_windows[:, 0].float(), (key_windows[:, 1] - 1).float()
    steps = torch.linspace(0, 1, t)
    positions = start[:, None] + (end - start)[:, None] * steps[None]
    return read_frames(videos.float(), positions)


def run_view(kind: str, train: Dict[str, torch.Tensor], test: Dict[str, torch.Tensor], epochs: int,
             batch_size: int, seed: int) -> Dict[str, float]:
    torch.manual_seed(seed)
    model = rdfer.create_model("rdfer_small", resample=False)
    normalise = VideoBatchTransform(train=False)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    n = len(train["labels"])
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(n, generator=g).split(batch_size):
            x = view(train["videos"][idx], train["key_windows"][idx], kind, g)
            out = model(normalise(x.round().to(torch.uint8)))
            loss = F.cross_entropy(out.logits, train["labels"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    g_test = torch.Generator().manual_seed(seed + 1)
    preds = []
    with torch.no_grad():
        for idx in torch.arange(len(test["labels"])).split(64):
            x = view(test["videos"][idx], test["key_windows"][idx], kind, g_test)
            preds.append(model(normalise(x.round().to(torch.uint8))).logits.argmax(1))
    m = classification_metrics(torch.cat(preds), test["labels"], len(rdfer.EMOTIONS))
    return {"war": m["war"], "uar": m["uar"]}


def load(ds: SyntheticDFER) -> Dict[str, torch.Tensor]:
    return {"videos": torch.stack([ds.render(i) for i in range(len(ds))]), "labels": ds.clean_labels.clone(),
            "key_windows": ds.key_windows.clone()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds (a smoke run for the tests)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_train, n_test, epochs, size = (42, 21, 1, 32) if args.quick else (840, 420, 10, 32)
    t0 = time.time()
    train = load(SyntheticDFER(n_train, num_frames=16, image_size=size, seed=args.seed))
    test = load(SyntheticDFER(n_test, num_frames=16, image_size=size, seed=args.seed + 10_000))
    results = {}
    for kind in VIEWS:
        start = time.time()
        results[kind] = {**run_view(kind, train, test, epochs, 32, args.seed), "seconds": time.time() - start}
        print(f"{kind:>16}: WAR {100 * results[kind]['war']:.1f}%  UAR {100 * results[kind]['uar']:.1f}%  "
              f"({results[kind]['seconds']:.0f} s)", flush=True)
    meta = {
        "command": "python benchmarks/synthetic_learnability.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "recipe": (f"rdfer_small (resample=False), {n_train} train / {n_test} test videos (hard_rate 0.2, "
                   f"distractor_rate 0.3, clean labels), 16 frames of {size} px, {epochs} epochs, batch 32, "
                   f"AdamW 2e-3 cosine, plain CE, CPU"),
        "seconds": time.time() - t0,
    }
    lines = ["# SyntheticDFER learnability", "", f"Command: `{meta['command']}`  ",
             f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['date']}; total {meta['seconds']:.0f} s.  ",
             f"Recipe: {meta['recipe']}.", "", "| the model sees | test WAR (%) | test UAR (%) |", "|---|---:|---:|"]
    lines += [f"| {k} | {100 * r['war']:.1f} | {100 * r['uar']:.1f} |" for k, r in results.items()]
    md = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "synthetic_learnability_quick" if args.quick else "synthetic_learnability"
    atomic_write_text(out / f"{stem}.json", json.dumps({"meta": meta, "results": results}, indent=2))
    atomic_write_text(out / f"{stem}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
