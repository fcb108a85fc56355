"""What does wrapping a backbone with RDFER cost? Parameters, FLOPs (fvcore's and the full count),
latency, training throughput and memory, next to the paper's Table VI.

    python benchmarks/scalability.py                       # the five Table VI backbones, CPU
    python benchmarks/scalability.py --device cuda         # timings on a GPU (when one exists)
    python benchmarks/scalability.py --backbones r3d_18 timm/resnet18 x3d_xs
    python benchmarks/scalability.py --quick --out /tmp/s  # smoke run: 2 backbones, 8 x 32 px

For every backbone two models are measured:

* ``plain``: the backbone with a 7-class linear head on one clip of ``--frames`` (16) frames of
  ``--size`` (112) px. Clip-level backbones: ``Linear(feature_dim, 7)`` on the clip vector;
  frame-level ones: mean over time, then the linear head.
* ``rdfer``: ``rdfer.wrap_with_rdfer(name, num_classes=7)`` at the paper's setting (4 clips x 4
  frames = 16 recognised frames, 16 detector glimpses, d_model 512, BiLSTMs) on a video of
  ``--loaded-frames`` (64) frames, as the paper loads 64 and recognises 16. The FLOPs do not
  depend on the loaded length: the detector always sees 16 glimpses and the recogniser 16
  frames; only the (element-wise, uncounted) frame interpolation reads the longer video.

Units. FLOPs are counted in fvcore's unit, **one per multiply-add**, at batch 1. "fvcore GFLOPs" is
``fvcore.nn.FlopCountAnalysis(model, x).total() / 1e9``; "full GFLOPs" adds the ops fvcore counts
as zero (LSTM/GRU/RNN, scaled-dot-product attention, baddbmm), with the handles of
:mod:`rdfer.flops`. Element-wise ops (activations, gate products, pooling) are in neither column.
Latency: median wall time of ``--repeats`` forward passes at batch 1 in eval mode under
``torch.no_grad()``, after ``--warmup`` passes. Training: forward + backward + AdamW step at batch
``--train-batch`` (plain: label-smoothed CE; rdfer: ``rdfer.AgreementLoss`` in batch scope),
clips/s = batch / median step time. Peak memory during those steps: on CPU the process's peak
resident memory (VmHWM, reset through ``/proc/self/clear_refs`` just before) minus the resident
memory before the first step; on CUDA ``torch.cuda.max_memory_allocated`` minus the memory
allocated before. Either way it is what training adds on top of the weights: gradients, AdamW
state, activations and workspace. Each timed model is measured in a fresh Python process, training
first, so no memory freed by earlier work (other models, the FLOP trace) hides part of the peak.

Writes ``<out>/scalability.json`` and ``<out>/scalability.md`` (``scalability_quick.*`` with --quick; default ``benchmarks/results``)
with the machine, versions, command and date, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rdfer  # noqa: E402
from rdfer.engine.checkpoint import atomic_write_text  # noqa: E402
from rdfer.flops import UNIT, count_flops  # noqa: E402

SCHEMA = "rdfer.benchmarks.scalability/1"
NUM_CLASSES = 7
DEFAULT_BACKBONES = ["cnn_lstm", "mc3_18", "r2plus1d_18", "r3d_18", "former_dfer"]
QUICK_BACKBONES = ["cnn_lstm", "mc3_18"]
PAPER_INPUT = {"frames": 16, "size": 112}  # the input the paper's Table VI refers to

# The paper's Table VI (arXiv 2502.16129, section IV-E; DFEW fold 1). "plain": the backbone alone
# (bag size 1, no instance aggregation); "rdfer": inside the framework (bag size 4).
# Params in M, FLOPs in G as printed (the paper does not name the counter; its +0.05 G for a
# BiLSTM-based module suggests fvcore, which counts LSTMs as zero), WAR/UAR in %.
PAPER_TABLE_VI: Dict[str, Dict[str, Dict[str, float]]] = {
    "cnn_lstm": {
        "plain": {"params_m": 22.2, "gflops": 7.97, "war": 66.71, "uar": 55.38},
        "rdfer": {"params_m": 34.0, "gflops": 8.02, "war": 68.62, "uar": 56.44},
    },
    "mc3_18": {
        "plain": {"params_m": 11.5, "gflops": 1.85, "war": 67.49, "uar": 56.10},
        "rdfer": {"params_m": 23.3, "gflops": 1.89, "war": 69.18, "uar": 57.97},
    },
    "r2plus1d_18": {
        "plain": {"params_m": 31.3, "gflops": 40.77, "war": 68.97, "uar": 56.69},
        "rdfer": {"params_m": 43.1, "gflops": 42.91, "war": 71.14, "uar": 57.71},
    },
    "r3d_18": {
        "plain": {"params_m": 33.2, "gflops": 1.59, "war": 68.23, "uar": 55.36},
        "rdfer": {"params_m": 45.0, "gflops": 1.65, "war": 70.40, "uar": 56.81},
    },
    "former_dfer": {
        "plain": {"params_m": 18.0, "gflops": 8.31, "war": 63.93, "uar": 52.70},
        "rdfer": {"params_m": 29.9, "gflops": 8.37, "war": 65.71, "uar": 54.06},
    },
}
# A reported count this far from ours (either way) is called out as a disagreement.
DISAGREE_RATIO = 1.25
# Overhead part: the backbone run once per clip (rdfer) minus once on the whole clip (plain).
BACKBONE_SPLIT = "backbone on n_clips clips - on one clip of all frames"


class PlainClassifier(nn.Module):
    """A backbone with a linear head: ``(B, 3, t, H, W) -> (B, K)`` logits.

    Clip-level backbones: ``head(backbone(x))``; frame-level: ``head(backbone(x).mean(1))``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if self.backbone.token_level == "frame":
            feats = feats.mean(dim=1)
        return self.head(feats)


# --------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(model: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> Dict[str, float]:
    """Median / min forward wall time in ms at the batch of ``x``, eval mode, no_grad."""
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            _sync(x.device)
            start = time.perf_counter()
            model(x)
            _sync(x.device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "repeats": repeats}


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so resident memory counts live memory only."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory added inside a ``with`` block, in MiB (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = ""
        self.peak_mib: Optional[float] = None

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        _malloc_trim()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated - allocated before (weights excluded)"
        else:
            self._base = _proc_status_kib("VmRSS")
            if self._base is not None and _reset_peak_rss():
                self.method = "peak RSS (VmHWM, reset via /proc/self/clear_refs) - RSS before (weights excluded)"
            else:
                self._base = None
                self.method = "unavailable (no /proc/self/clear_refs)"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base is not None:
            peak = _proc_status_kib("VmHWM")
            self.peak_mib = None if peak is None else (peak - self._base) / 1024


def measure_training(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    warmup: int,
    steps: int,
) -> Dict[str, Any]:
    """Forward + backward + AdamW step on batch ``x``: clips/s and the peak memory it adds."""
    device = x.device
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    target = torch.arange(x.shape[0], device=device) % NUM_CLASSES
    times = []
    with PeakMemory(device) as mem:
        for i in range(warmup + steps):
            _sync(device)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), target)
            loss.backward()
            optimizer.step()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    return {
        "batch": int(x.shape[0]),
        "steps": steps,
        "median_step_s": step_s,
        "clips_per_s": x.shape[0] / step_s,
        "peak_mem_mib": mem.peak_mib,
        "memory_method": mem.method,
    }


def _plain_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target, label_smoothing=0.1)


def _rdfer_loss(batch: int) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    criterion = rdfer.AgreementLoss(num_samples=batch, scope="batch")

    def loss(out: Any, target: torch.Tensor) -> torch.Tensor:
        criterion.to(target.device)
        return criterion(out, target, torch.arange(target.shape[0], device=target.device))

    return loss


# --------------------------------------------------------------------------- one model


def build(name: str, variant: str, settings: Dict[str, Any]) -> nn.Module:
    """The ``plain`` classifier or the ``rdfer``-wrapped model for a registry name."""
    if variant == "plain":
        return PlainClassifier(rdfer.create_backbone(name))
    return rdfer.wrap_with_rdfer(name, num_classes=NUM_CLASSES, **settings["rdfer_config"])


def input_shape(variant: str, settings: Dict[str, Any], batch: int = 1) -> tuple:
    t = settings["frames"] if variant == "plain" else settings["loaded_frames"]
    return (batch, 3, t, settings["size"], settings["size"])


def _params_m(model: nn.Module, prefix: str = "") -> float:
    named = dict(model.named_modules())
    return sum(p.numel() for p in named[prefix].parameters()) / 1e6 if prefix in named else 0.0


def measure_one(name: str, variant: str, settings: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    """Everything for one (backbone, variant): params, FLOPs, and unless ``--no-timing`` timings."""
    torch.manual_seed(0)
    row: Dict[str, Any] = {"backbone": name, "variant": variant, "input_shape": list(input_shape(variant, settings))}
    model = build(name, variant, settings)
    parts = ["backbone", "head"] if variant == "plain" else ["backbone", "sampler", "proj", "temporal", "clip_head", "classifier"]
    row["params_m"] = _params_m(model)
    row["params_m_by_module"] = {p: _params_m(model, p) for p in parts}

    x = torch.randn(*input_shape(variant, settings))
    if not args.no_timing:
        # Training first: in a fresh worker process nothing but the weights is resident yet, so the
        # peak it adds is not hidden by memory that earlier work freed but the allocator kept.
        device = torch.device(args.device)
        model.to(device)
        xb = torch.randn(*input_shape(variant, settings, args.train_batch), device=device)
        loss = _plain_loss if variant == "plain" else _rdfer_loss(args.train_batch)
        row["training"] = measure_training(model, xb, loss, args.warmup, args.train_steps)
        model.zero_grad(set_to_none=True)
        del xb
        row["latency"] = measure_latency(model, x.to(device), args.warmup, args.repeats)
        model.cpu()

    report = count_flops(model, x)
    row["fvcore_gflops"] = report.fvcore_total / 1e9
    row["full_gflops"] = report.full_total / 1e9
    row["missed_share"] = report.missed_share
    row["flops"] = report.to_dict()
    del model
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return row


def _measure_safely(name: str, variant: str, settings: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    try:
        return measure_one(name, variant, settings, args)
    except Exception as err:  # one broken backbone must not lose the others' numbers
        return {"backbone": name, "variant": variant, "error": f"{type(err).__name__}: {err}"}


def _measure_in_subprocess(name: str, variant: str, argv: Sequence[str]) -> Dict[str, Any]:
    """Run :func:`measure_one` for one model in a fresh interpreter (same options), return its row."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        row_file = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--_worker", name, variant, str(row_file)]
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode == 0 and row_file.exists():
            return json.loads(row_file.read_text())
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return {"backbone": name, "variant": variant, "error": f"worker exited {proc.returncode}: {tail[0]}"}


def attach_paper(row: Dict[str, Any], comparable: bool) -> None:
    """Add the paper's Table VI numbers and our difference to a row.

    Parameters do not depend on the input, so they are always compared; FLOPs only when this run
    uses the paper's input (``comparable``), else the FLOP differences are None.
    """
    paper = PAPER_TABLE_VI.get(row["backbone"], {}).get(row["variant"])
    row["paper"] = paper
    if paper is None or "error" in row:
        row["vs_paper"] = None
        return
    row["vs_paper"] = {
        "params_m_diff": row["params_m"] - paper["params_m"],
        "fvcore_gflops_diff": row["fvcore_gflops"] - paper["gflops"] if comparable else None,
        "fvcore_gflops_ratio": row["fvcore_gflops"] / paper["gflops"] if comparable else None,
    }


def overhead(plain: Dict[str, Any], wrapped: Dict[str, Any], comparable: bool) -> Dict[str, Any]:
    """What wrapping adds, in total and per part (backbone re-run on clips, detector, sequence models, heads)."""

    def mod(row: Dict[str, Any], name: str, kind: str) -> float:
        return row["flops"]["by_module"].get(name, {}).get(kind, 0) / 1e9

    out: Dict[str, Any] = {"backbone": plain["backbone"]}
    out["params_m"] = wrapped["params_m"] - plain["params_m"]
    out["fvcore_gflops"] = wrapped["fvcore_gflops"] - plain["fvcore_gflops"]
    out["full_gflops"] = wrapped["full_gflops"] - plain["full_gflops"]
    pp, wp = plain["params_m_by_module"], wrapped["params_m_by_module"]
    out["params_m_parts"] = {
        "detector (sampler)": wp["sampler"],
        "sequence models (temporal)": wp["temporal"],
        "proj + heads - plain head": wp["proj"] + wp["clip_head"] + wp["classifier"] - pp["head"],
    }
    for kind in ("fvcore", "full"):
        parts = {
            BACKBONE_SPLIT: mod(wrapped, "backbone", kind) - mod(plain, "backbone", kind),
            "detector (sampler)": mod(wrapped, "sampler", kind),
            "sequence models (temporal)": mod(wrapped, "temporal", kind),
            "proj + heads - plain head": sum(mod(wrapped, m, kind) for m in ("proj", "clip_head", "classifier"))
            - mod(plain, "head", kind),
        }
        total = out[f"{kind}_gflops"]
        parts["other (outside submodules)"] = total - sum(parts.values())
        out[f"{kind}_gflops_parts"] = parts
    # Measured time against counted work: a wrapper that costs only its FLOPs has step / FLOPs = 1.
    steps = [r.get("training", {}).get("median_step_s") for r in (plain, wrapped)]
    if all(steps) and plain["full_gflops"]:
        out["step_ratio"] = steps[1] / steps[0]
        out["flops_ratio"] = wrapped["full_gflops"] / plain["full_gflops"]
        out["step_over_flops"] = out["step_ratio"] / out["flops_ratio"]
    paper = PAPER_TABLE_VI.get(plain["backbone"])
    if paper:
        out["paper"] = {
            "params_m": paper["rdfer"]["params_m"] - paper["plain"]["params_m"],
            "gflops": paper["rdfer"]["gflops"] - paper["plain"]["gflops"] if comparable else None,
        }
    else:
        out["paper"] = None
    return out


# --------------------------------------------------------------------------- reporting


def machine_info(device: str) -> Dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: Dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": device,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {"rdfer": rdfer.__version__}
    for pkg in ("torch", "torchvision", "fvcore", "timm", "pytorchvideo"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _f(value: Optional[float], fmt: str = "{:.2f}") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def _signed(value: Optional[float], fmt: str = "{:+.2f}") -> str:
    return _f(value, fmt)


def markdown(result: Dict[str, Any]) -> str:
    s, m = result["settings"], result["machine"]
    n1, n2 = s["rdfer_config"]["n_clips"], s["rdfer_config"]["clip_len"]
    lines = [
        "# RDFER scalability: cost of wrapping a backbone",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}",
        f"- machine: {m['cpu']}, {m['cpu_count']} cores, torch threads {m['torch_threads']}, "
        f"device `{m['device']}`" + (f" ({m['gpu']})" if m.get("gpu") else "")
        + (f", 1-min load average {m['load_average_at_start'][0]:.2f} at start" if m.get("load_average_at_start") else "")
        + (f", {m['load_average_at_end'][0]:.2f} at end (the machine is shared: timings are indicative)"
           if m.get("load_average_at_end") else "")
        + (f"; whole run {result['wall_s']:.0f} s" if "wall_s" in result else ""),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v),
        f"- inputs: plain = one clip of {s['frames']} frames of {s['size']}x{s['size']}; rdfer = a video of "
        f"{s['loaded_frames']} loaded frames, {s['rdfer_config']['n_clips']} clips x {s['rdfer_config']['clip_len']} "
        f"frames recognised, {s['rdfer_config']['num_glimpses']} detector glimpses, d_model {s['rdfer_config']['d_model']}",
        f"- FLOPs: batch 1, {UNIT}. *full* = fvcore + LSTM/GRU/RNN/attention handles of `rdfer.flops`; "
        "element-wise ops are in neither column.",
    ]
    if not s["timing"]:
        lines.append("- timings: not measured (`--no-timing`)")
    else:
        lines.append(
            f"- latency: median of {s['repeats']} forward passes at batch 1 (eval, no_grad) after {s['warmup']} warm-up; "
            f"training: median of {s['train_steps']} forward+backward+AdamW steps at batch {s['train_batch']}; "
            f"peak memory: {result['memory_method']}"
        )
    if not result["paper_comparable"]:
        lines.append(
            f"- paper columns: FLOPs not compared (this run uses {s['frames']} frames of {s['size']} px; Table VI "
            f"is at {PAPER_INPUT['frames']} frames of {PAPER_INPUT['size']} px); parameters do not depend on the "
            "input and are compared"
        )
    lines += [
        "",
        "| backbone | model | params (M) | paper params (M) | Δ params (M) | fvcore GFLOPs (1 per multiply-add) | "
        "paper GFLOPs | ours (fvcore) / paper | full GFLOPs (same unit) | missed by fvcore | latency (ms, batch 1) | "
        f"training (clips/s, batch {s['train_batch']}) | training peak mem (MiB) | paper WAR / UAR (%) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        name, variant = f"`{row['backbone']}`", row["variant"]
        if "error" in row:
            lines.append(f"| {name} | {variant} | error: {row['error']} |" + " |" * 11)
            continue
        paper, diff = row.get("paper"), row.get("vs_paper")
        lat = row.get("latency", {}).get("median_ms")
        tr = row.get("training", {})
        lines.append(
            "| " + " | ".join([
                name,
                variant,
                _f(row["params_m"]),
                _f(paper["params_m"], "{:.1f}") if paper else "—",
                _signed(diff["params_m_diff"]) if diff else "—",
                _f(row["fvcore_gflops"]),
                _f(paper["gflops"]) if paper and result["paper_comparable"] else "—",
                _f(diff["fvcore_gflops_ratio"], "{:.2f}x") if diff else "—",
                _f(row["full_gflops"]),
                _f(100 * row["missed_share"], "{:.2f}%"),
                _f(lat, "{:.0f}"),
                _f(tr.get("clips_per_s")),
                _f(tr.get("peak_mem_mib"), "{:.0f}"),
                f"{paper['war']:.2f} / {paper['uar']:.2f}" if paper else "—",
            ]) + " |"
        )
    lines += [
        "",
        "Paper WAR / UAR are the paper's DFEW fold-1 results, copied for reference; they are not measured here.",
        "",
        "## What the wrapper adds (rdfer − plain)",
        "",
        "| backbone | Δ params (M) | paper Δ params (M) | Δ fvcore GFLOPs | paper Δ GFLOPs | Δ full GFLOPs | "
        f"of which: backbone on {n1} clips x {n2} vs 1 x {n1 * n2} (full GFLOPs) | detector (full GFLOPs) | "
        "sequence models (fvcore / full GFLOPs) | "
        "params: detector / sequence models / proj+heads (M) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in result["overhead"]:
        fp, vp, pp = o["full_gflops_parts"], o["fvcore_gflops_parts"], o["params_m_parts"]
        paper = o.get("paper")
        lines.append(
            "| " + " | ".join([
                f"`{o['backbone']}`",
                _signed(o["params_m"]),
                _signed(paper["params_m"], "{:+.1f}") if paper else "—",
                _signed(o["fvcore_gflops"], "{:+.3f}"),
                _signed(paper["gflops"]) if paper else "—",
                _signed(o["full_gflops"], "{:+.3f}"),
                _signed(fp[BACKBONE_SPLIT], "{:+.3f}"),
                _f(fp["detector (sampler)"], "{:.3f}"),
                f"{vp['sequence models (temporal)']:.4f} / {fp['sequence models (temporal)']:.4f}",
                " / ".join(f"{v:.2f}" for v in pp.values()),
            ]) + " |"
        )
    timed = [o for o in result["overhead"] if "step_ratio" in o]
    if timed:
        lines += ["", f"## Training step time against FLOPs (batch {s['train_batch']}, device `{m['device']}`)", "",
                  "The wrapper's measured training step (forward, backward, AdamW) over the plain backbone's, beside "
                  "the ratio of their full FLOPs: where the last column is above 1 the wrapper costs more time than "
                  "its arithmetic (goal: at most 1.1x).", "",
                  "| backbone | step: rdfer / plain | full FLOPs: rdfer / plain | step ratio / FLOPs ratio |",
                  "|---|---:|---:|---:|"]
        lines += [f"| `{o['backbone']}` | {o['step_ratio']:.2f}x | {o['flops_ratio']:.2f}x | {o['step_over_flops']:.2f}x |"
                  for o in timed]
    notes = result.get("notes") or []
    if notes:
        lines += ["", "## Findings", ""] + [f"- {n}" for n in notes]
    unknown = {f"{r['backbone']} {r['variant']}": r["flops"]["unknown_uncounted"] for r in result["rows"]
               if "flops" in r and r["flops"]["unknown_uncounted"]}
    lines += ["", "Ops neither fvcore nor `rdfer.flops` counts, other than element-wise ones: "
              + (json.dumps(unknown) if unknown else "none.")]
    return "\n".join(lines) + "\n"


def findings(result: Dict[str, Any]) -> List[str]:
    """Plain-language notes derived from the numbers (disagreements with the paper, hidden costs)."""
    notes: List[str] = []
    s = result["settings"]
    n1, n2 = s["rdfer_config"]["n_clips"], s["rdfer_config"]["clip_len"]
    rows = [r for r in result["rows"] if "error" not in r]
    for row in rows:
        diff, paper = row.get("vs_paper"), row.get("paper")
        ratio = diff["fvcore_gflops_ratio"] if diff else None
        if ratio is not None and not (1 / DISAGREE_RATIO <= ratio <= DISAGREE_RATIO):
            what = "the backbone alone" if row["variant"] == "plain" else "the wrapped model"
            notes.append(
                f"`{row['backbone']}` {row['variant']}: fvcore counts {row['fvcore_gflops']:.2f} GFLOPs for "
                f"{what} on {s['frames']} recognised frames of {s['size']}x{s['size']}; the paper prints "
                f"{paper['gflops']:.2f} ({ratio:.1f}x apart). Our count does not reproduce the paper's number."
            )
    missed = [
        f"`{r['backbone']}` {r['variant']} {100 * r['missed_share']:.2f}% ("
        + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in r["flops"]["extra_by_operator"].items()) + " GFLOPs)"
        for r in rows if r["missed_share"] > 0
    ]
    if missed:
        notes.append("fvcore counts these multiply-adds as zero: " + "; ".join(missed) + ".")
    for o in result["overhead"]:
        paper = o.get("paper") or {}
        text = f"`{o['backbone']}`: wrapping adds {o['params_m']:+.2f} M parameters"
        if paper.get("params_m") is not None:
            text += f" (paper: {paper['params_m']:+.1f} M)"
        text += f", {o['fvcore_gflops']:+.3f} GFLOPs by fvcore's count"
        if paper.get("gflops") is not None:
            text += f" (paper: {paper['gflops']:+.2f})"
        text += f" and {o['full_gflops']:+.3f} by the full count"
        split = o["full_gflops_parts"][BACKBONE_SPLIT]
        if abs(split) > 0.01 * max(abs(o["full_gflops"]), 1e-9) and abs(split) > 1e-3:
            text += (
                f"; {split:+.3f} of it is the backbone itself, run once per clip ({n1} clips of {n2} frames) "
                f"instead of once on {n1 * n2} frames, so its per-clip costs (temporal padding in strided 3D "
                f"stages, a per-clip pooling/projection) are paid {n1} times"
            )
        notes.append(text + ".")
    if any(o.get("paper") and abs(o["params_m"] - o["paper"]["params_m"]) > 0.5 for o in result["overhead"]):
        notes.append(
            "The parameter overhead differs from the paper's because the added module differs: the paper's "
            "Table VI uses M3DFEL's head (a 2-layer BiLSTM(512) plus attention, +11.8 M); rdfer adds a tiny_cnn "
            "detector, a projection to d_model 512, one 1-layer BiLSTM (hidden 256) per sequence model and linear "
            "heads (SPEC 3)."
        )
    return notes


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=None, help="registry names (default: the five of Table VI)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for the timings (FLOPs are counted on CPU)")
    p.add_argument("--quick", action="store_true", help="smoke run: cnn_lstm and mc3_18, 8 frames of 32 px, 1 step")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output directory")
    p.add_argument("--frames", type=int, default=None, help="recognised frames (plain clip length); default 16")
    p.add_argument("--size", type=int, default=None, help="frame size in px; default 112")
    p.add_argument("--loaded-frames", type=int, default=None, help="frames of the video given to the rdfer model; default 64")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None, help="timed forward passes (default 5; quick 2)")
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 3; quick 1)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    p.add_argument("--no-timing", action="store_true", help="parameters and FLOPs only")
    p.add_argument("--_worker", nargs=3, metavar=("NAME", "VARIANT", "ROW_JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.backbones = args.backbones or QUICK_BACKBONES
        defaults = dict(frames=8, size=32, loaded_frames=16, repeats=2, train_steps=1)
    else:
        defaults = dict(frames=16, size=112, loaded_frames=64, repeats=5, train_steps=3)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.backbones = [n for item in (args.backbones or DEFAULT_BACKBONES) for n in item.split(",") if n]
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    n_clips = 4
    if args.frames % n_clips:
        p.error(f"--frames must be a multiple of {n_clips} (the rdfer model reads {n_clips} clips)")
    return args


def make_settings(args: argparse.Namespace) -> Dict[str, Any]:
    n_clips = 4
    return {
        "frames": args.frames,
        "size": args.size,
        "loaded_frames": args.loaded_frames,
        "rdfer_config": {
            "n_clips": n_clips,
            "clip_len": args.frames // n_clips,
            "num_glimpses": min(16, args.loaded_frames),
            "d_model": 512,
        },
        "train_batch": args.train_batch,
        "repeats": args.repeats,
        "train_steps": args.train_steps,
        "warmup": args.warmup,
        "timing": not args.no_timing,
    }


def run(args: argparse.Namespace, argv: Sequence[str]) -> Dict[str, Any]:
    torch.set_num_threads(args.threads)
    settings = make_settings(args)
    comparable = args.frames == PAPER_INPUT["frames"] and args.size == PAPER_INPUT["size"]
    start = time.perf_counter()
    result: Dict[str, Any] = {
        "schema": SCHEMA,
        "command": "python benchmarks/scalability.py" + ("" if not argv else " " + shlex.join(argv)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(args.device),
        "versions": versions(),
        "settings": settings,
        "units": {
            "params_m": "millions of parameters",
            "gflops": f"1e9 FLOPs, {UNIT}, batch 1",
            "latency": "ms per forward pass at batch 1",
            "training": "clips/s (forward + backward + AdamW step)",
            "memory": "MiB added during training steps",
        },
        "paper_comparable": comparable,
        "memory_method": None,
        "rows": [],
        "overhead": [],
    }
    for name in args.backbones:
        pair = {}
        for variant in ("plain", "rdfer"):
            t0 = time.perf_counter()
            if args.no_timing:
                row = _measure_safely(name, variant, result["settings"], args)
            else:  # a fresh process per model: peak memory and timings unaffected by the models before
                row = _measure_in_subprocess(name, variant, argv)
            row["wall_s"] = time.perf_counter() - t0
            attach_paper(row, comparable)
            if row.get("training"):
                result["memory_method"] = row["training"]["memory_method"]
            result["rows"].append(row)
            pair[variant] = row
            print(f"[scalability] {name} {variant}: {row.get('error') or 'ok'} ({row['wall_s']:.0f} s)", file=sys.stderr, flush=True)
        if "error" not in pair["plain"] and "error" not in pair["rdfer"]:
            result["overhead"].append(overhead(pair["plain"], pair["rdfer"], comparable))
    result["notes"] = findings(result)
    result["wall_s"] = time.perf_counter() - start
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise while tracing
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args._worker:
        torch.set_num_threads(args.threads)
        name, variant, row_file = args._worker
        row = _measure_safely(name, variant, make_settings(args), args)
        atomic_write_text(row_file, json.dumps(row))
        return 0
    result = run(args, argv)
    text = markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    # A smoke run never replaces the committed results; a GPU run is a file of its own.
    stem = "scalability" + ("_quick" if args.quick else "") + ("_cuda" if args.device == "cuda" else "")
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / f"{stem}.md", text)
    print(text)
    return 1 if any("error" in r for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
