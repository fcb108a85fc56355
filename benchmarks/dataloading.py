"""How fast do videos load? Clips per second of five loaders on the same DFEW-layout tree.

    python benchmarks/dataloading.py                  # full run: 100 clips, T = 16 and 64 (a few minutes)
    python benchmarks/dataloading.py --quick --out /tmp/dl   # smoke run: 6 clips, T = 8, no workers
    python benchmarks/dataloading.py --transport-only         # only the worker transport table (~1.5 min)

Loaders, all returning uint8 ``(3, T, 112, 112)`` videos of the same ``T`` frames (uniform, centred):

* **(a) per-frame PIL** (the reference, written here): the loop of the public DFER code bases:
  list the clip folder, then for each of the ``T`` sampled frames ``Image.open`` at full size,
  ``convert("RGB")``, ``resize((112, 112), BILINEAR)``, and stack the frames into a tensor.
  (Public code then converts to float per frame; we stop at uint8, which only helps the baseline.)
* **(b) rdfer folder loader**: ``rdfer.data.DFEW`` (libjpeg-turbo decoding at reduced DCT scale,
  each distinct frame decoded once, one clip's frames in parallel threads when there are no
  DataLoader workers); **(b1)** the same with ``decode_threads=1``, without workers.
* **(c) rdfer packed**: ``rdfer.data.PackedDataset`` over a pack of the same tree made with
  ``pack_dataset(num_frames=64, image_size=112)`` (packing time and size are reported too).
* **(d) WebDataset, local**: ``rdfer.data.WebDatasetVideos`` over WebDataset shards of the same
  tree (``write_webdataset(num_frames=64, image_size=112, quality=90)``, 32 videos a shard) in the
  default layout (``clip``: a video's frames as one Motion-JPEG member), read from the page cache;
  **(d0)** the same in the per-frame layout (``layout="frames"``: one JPEG member per frame, the
  only layout before); **(d2)** in the ``npy`` layout (one uncompressed uint8 array per video: no
  decoding, as large as the raw pack); **(e)** the (d) shards over HTTP from a
  ``python -m http.server`` on 127.0.0.1 (a separate process; the loader reads with Python's own HTTP client, as rdfer does since the
  data-is-never-code release; the committed (e) numbers were measured through ``curl``).
  The goal: (d) >= 0.5 (c) (and (d2) is reported against the same mark).

The tree is generated first: ``--clips`` clips of 20-80 frames (seeded), 224x224 JPEG frames
(quality 90) of a drawn face with skin texture, noise and per-frame motion, so file sizes are
like real face crops (~10 KB). The files were just written, so they are in the page cache: the
numbers measure decoding, not the disk. Each measurement iterates a ``DataLoader`` (batch 8,
``collate_videos``) over all clips, single process (``num_workers=0``) and with 2 worker
processes (persistent), repeating epochs until ``--min-seconds`` have passed; the first batch
(worker start-up) is not timed. The loaders of a cell are measured in ``--rounds`` interleaved
rounds (a shared machine's load drifts) and the median is reported.

**Worker transport** (a second table; alone with ``--transport-only``): the packed loader (c) with
the same pack and the same per-item gather, where only the way a batch is made and leaves a
DataLoader worker differs: **(i)** rdfer's (``__getitems__`` gathers into one batch tensor, which
leaves the worker through a reused shared-memory slot of ``rdfer.data.shm``, small fields inside
the pickle); **(ii)** PyTorch's own (``__getitem__`` per index, the videos stacked into a fresh
shared-memory tensor as ``default_collate`` does, every tensor sent as a fresh shared-memory
file); **(iii)** (ii), and (i) next to it, with ``pin_memory=True`` (only where torch finds an
accelerator: without one it ignores the option; the rule then holds for both); **(iv)** rdfer's gather into a fresh PyTorch shared-memory tensor, sent by
PyTorch's path (what the reused slots add on their own). Issue 26's rule: keep (i) only if it beats
(ii) by more than 10% in every worker row. With 0 workers only (i) and (ii) are measured (nothing
crosses processes; (i) saves the stacking copy).

Writes ``<out>/dataloading.json`` and ``<out>/dataloading.md`` (``dataloading_quick.*`` with --quick,
``dataloading_transport.*`` with --transport-only; default ``benchmarks/results``) with the machine,
versions, command and date, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rdfer.data import (DFEW, PackedDataset, WebDatasetVideos, collate_videos, eval_indices, pack_dataset,  # noqa: E402
                        write_webdataset)
from rdfer.engine.checkpoint import atomic_write_text  # noqa: E402

GOAL_FOLDER, GOAL_PACKED = 3.0, 10.0
GOAL_WDS = 0.5  # WebDataset (default layout) local at least half as fast as the packed format
WDS_LAYOUTS = {"clip": "wds_local", "frames": "wds_local_frames", "npy": "wds_local_npy"}  # layout -> loader
WDS_SHARD = 32  # videos per WebDataset shard: several shards, so 2 workers each stream their own
KEEP_TRANSPORT = 1.10  # issue 26: keep rdfer's worker transport only if it beats PyTorch's by > 10%


# --------------------------------------------------------------------------- the test tree

def _face_frame(rng: np.random.Generator, clip: Dict[str, Any], t: float):
    """A 224x224 face crop: textured background, skin ellipse, eyes, brows, mouth; moves with t."""
    from PIL import Image, ImageDraw, ImageFilter

    im = Image.fromarray(clip["background"])
    d = ImageDraw.Draw(im)
    dx, dy = clip["shift"] * np.sin(2 * np.pi * t), clip["shift"] * 0.5 * np.cos(2 * np.pi * t)
    cx, cy, skin = 112 + dx, 118 + dy, clip["skin"]
    d.ellipse((cx - 78, cy - 98, cx + 78, cy + 98), fill=skin)
    hair = tuple(int(c * 0.35) for c in skin)
    d.chord((cx - 80, cy - 104, cx + 80, cy + 20), 180, 360, fill=hair)
    open_ = 4 + 14 * clip["expression"] * np.sin(np.pi * t) ** 2
    for side in (-1, 1):
        ex = cx + side * 34
        d.ellipse((ex - 16, cy - 20, ex + 16, cy - 6), fill=(235, 235, 235))
        d.ellipse((ex - 6, cy - 19, ex + 6, cy - 7), fill=(60, 40, 30))
        d.line((ex - 20, cy - 34 - open_ / 2, ex + 18, cy - 32 - side * open_ / 3), fill=hair, width=5)
    d.polygon([(cx, cy - 5), (cx - 10, cy + 25), (cx + 10, cy + 25)], fill=tuple(int(c * 0.85) for c in skin))
    d.ellipse((cx - 30, cy + 45 - open_ / 3, cx + 30, cy + 50 + open_), fill=(150, 60, 60))
    arr = np.asarray(im.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.int16)
    oy, ox = rng.integers(0, 32, size=2)
    arr = arr + clip["grain"][oy: oy + 224, ox: ox + 224]
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def make_tree(root: Path, clips: int, seed: int = 0) -> Dict[str, Any]:
    """A DFEW-layout tree of ``clips`` clips (fold 1 train split); returns frame and byte counts."""
    rng = np.random.default_rng(seed)
    clip_root = root / "Clip" / "clip_224x224"
    rows, frames, nbytes = [], 0, 0
    yy, xx = np.mgrid[0:224, 0:224]
    for c in range(1, clips + 1):
        n = int(rng.integers(20, 81))
        base = rng.uniform(40, 200, size=3)
        background = (base[None, None] + 40 * np.sin(xx[..., None] / rng.uniform(15, 60) + yy[..., None] / 50)
                      + rng.normal(0, 10, (224, 224, 3))).clip(0, 255).astype(np.uint8)
        clip = dict(background=background, skin=tuple(int(v) for v in rng.uniform([150, 100, 80], [240, 190, 160])),
                    shift=float(rng.uniform(2, 10)), expression=float(rng.uniform(0.3, 1.0)),
                    grain=rng.normal(0, 7, (256, 256, 3)).astype(np.int16))
        folder = clip_root / f"{c:05d}"
        folder.mkdir(parents=True)
        for k in range(1, n + 1):
            path = folder / f"{k}.jpg"
            _face_frame(rng, clip, k / n).save(path, quality=90)
            nbytes += path.stat().st_size
        frames += n
        rows.append(f"{c},{int(rng.integers(1, 8))}")
    split = root / "EmoLabel_DataSplit" / "train(single-labeled)"
    split.mkdir(parents=True)
    (split / "set_1.csv").write_text("video_name,label\n" + "\n".join(rows) + "\n")
    return {"clips": clips, "frames": frames, "mean_frames_per_clip": frames / clips,
            "mean_jpeg_kb": nbytes / frames / 1024}


# --------------------------------------------------------------------------- the reference loader

class PerFramePIL(Dataset):
    """The reference: per-frame ``Image.open`` at full size, ``convert("RGB")``, resize, stack."""

    def __init__(self, folders: List[str], num_frames: int, image_size: int = 112):
        self.folders, self.num_frames, self.image_size = folders, num_frames, image_size

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        from PIL import Image

        folder = self.folders[i]
        names = sorted((n for n in os.listdir(folder) if n.endswith(".jpg")), key=lambda n: int(n[:-4]))
        idx = eval_indices(len(names), self.num_frames)
        frames = []
        for k in idx.tolist():
            img = Image.open(os.path.join(folder, names[k])).convert("RGB")
            img = img.resize((self.image_size, self.image_size), Image.BILINEAR)
            frames.append(torch.from_numpy(np.array(img)))
        video = torch.stack(frames).permute(3, 0, 1, 2).contiguous()  # (C, T, H, W)
        return dict(video=video, label=0, index=i, path=folder, frame_index=idx, fps=None, valid=True)


# --------------------------------------------------------------------------- measurement

def clips_per_second(dataset: Dataset, workers: int, min_seconds: float, batch_size: int = 8,
                     collate_fn=collate_videos, pin_memory: bool = False) -> Dict[str, float]:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_fn,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                        pin_memory=pin_memory)
    clips, start, epochs = 0, None, 0
    while True:
        for batch in loader:
            if start is None:  # the first batch pays for worker start-up: not timed
                start = time.perf_counter()
                continue
            clips += batch["video"].shape[0]
        epochs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and clips:
            break
    del loader
    return {"clips_per_s": clips / elapsed, "clips": clips, "seconds": elapsed, "epochs": epochs}


def medians(runs: Dict[str, List[Dict[str, float]]], label: str) -> Dict[str, Dict[str, Any]]:
    """Per loader: the median clips/s of its rounds, the rounds and the clips counted (printed as they come)."""
    row = {}
    for name, rounds in runs.items():
        rates = sorted(r["clips_per_s"] for r in rounds)
        row[name] = {"clips_per_s": float(np.median(rates)), "rounds": rates, "clips": sum(r["clips"] for r in rounds)}
        print(f"{label} {name:>14}: {row[name]['clips_per_s']:8.1f} clips/s "
              f"(rounds {', '.join(f'{x:.1f}' for x in rates)})", flush=True)
    return row


def write_results(out: Path, stem: str, res: Dict[str, Any], markdown) -> None:
    """``<out>/<stem>.json`` and ``.md`` (``markdown(res)``), written atomically; the Markdown is printed."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}.json", json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    atomic_write_text(out / f"{stem}.md", md)
    print(md)


# --------------------------------------------------------------------------- worker transport

class PackedPerItem(PackedDataset):
    """PyTorch's own path for the same pack: no ``__getitems__``, so the DataLoader calls
    ``__getitem__`` per index (the same gather, into a fresh tensor per item) and the collate stacks
    the videos (inside a worker into a fresh shared-memory tensor, as ``default_collate`` does)."""

    __getitems__ = None  # the DataLoader's fetcher then falls back to dataset[i] per index


class PackedSharedGather(PackedDataset):
    """rdfer's gather of a batch's videos straight into one tensor, but that tensor is a fresh
    PyTorch shared-memory tensor inside a worker (as ``default_collate`` allocates it) and leaves
    by PyTorch's own path: isolates what the reused slots of ``rdfer.data.shm`` add."""

    def __getitems__(self, indices):
        from rdfer.data.collate import _BATCH_FLAG, batch_buffer

        shape = (len(indices), 3, self.num_frames, self.image_size, self.image_size)
        if get_worker_info() is None:
            buf = batch_buffer(shape)
        else:
            proto = torch.empty(0, dtype=torch.uint8)
            buf = proto.new(proto._typed_storage()._new_shared(int(np.prod(shape)))).resize_(shape)
            setattr(buf, _BATCH_FLAG, True)  # collate_videos hands it on as the batch
        return [self._item(i, out=buf[k]) for k, i in enumerate(indices)]


def plain_collate(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``collate_videos`` returning a plain dict: every tensor leaves a worker by PyTorch's own path
    (a fresh shared-memory file each), as with ``default_collate``."""
    return dict(collate_videos(items))


TRANSPORTS = {  # name: (dataset class, collate, pin_memory, label)
    "rdfer": (PackedDataset, collate_videos, False, "(i) rdfer: `__getitems__` + reused memfd slot"),
    "torch": (PackedPerItem, plain_collate, False, "(ii) PyTorch: items + stack into shared memory"),
    "torch_pinned": (PackedPerItem, plain_collate, True, "(iii) (ii) + `pin_memory=True`"),
    "rdfer_pinned": (PackedDataset, collate_videos, True, "(i) + `pin_memory=True`"),
    "shared_gather": (PackedSharedGather, plain_collate, False,
                      "(iv) rdfer's gather into PyTorch shared memory"),
}


def measure_transport(pack_dir: Path, frames: List[int], workers: List[int], rounds: int,
                      min_seconds: float) -> Dict[str, Any]:
    """Packed loading (batch 8) of the same pack and the same gather under each transport, in
    interleaved rounds; with 0 workers only (i) and (ii) (no transport: (i) saves the stacking copy).

    The 0-worker rows run torch with one thread, as a worker does: (ii) stacks each batch with
    torch's intra-op threads, and on a shared machine whose cores other processes keep busy that
    parallel copy stalls on the descheduled thread (T = 64, 2-core machine under load: ~120
    clips/s with 2 threads against ~700 with 1), which would measure the scheduler, not the copy.
    (i) runs no parallel torch operation either way.
    """
    pinned = torch.accelerator.is_available()
    threads = torch.get_num_threads()
    rows = []
    for t in frames:
        for w in workers:
            names = [n for n in TRANSPORTS if (w or n in ("rdfer", "torch")) and (pinned or not n.endswith("_pinned"))]
            datasets = {n: TRANSPORTS[n][0](pack_dir, num_frames=t, train=False, verify=False) for n in names}
            runs: Dict[str, List[Dict[str, float]]] = {n: [] for n in names}
            for _ in range(rounds):
                for n in names:
                    _, collate, pin, _ = TRANSPORTS[n]
                    torch.set_num_threads(threads if w else 1)
                    try:
                        runs[n].append(clips_per_second(datasets[n], w, min_seconds, collate_fn=collate,
                                                        pin_memory=pin))
                    finally:
                        torch.set_num_threads(threads)
            row: Dict[str, Any] = {"num_frames": t, "workers": w, **medians(runs, f"transport T={t:3d} workers={w}")}
            row["ratio"] = row["rdfer"]["clips_per_s"] / row["torch"]["clips_per_s"]
            if "torch_pinned" in row:  # with a GPU: the rule holds for pinned batches too
                row["ratio_pinned"] = row["rdfer_pinned"]["clips_per_s"] / row["torch_pinned"]["clips_per_s"]
            rows.append(row)
    worker_ratios = [r[k] for r in rows if r["workers"] for k in ("ratio", "ratio_pinned") if k in r]
    if worker_ratios:
        keep = min(worker_ratios) > KEEP_TRANSPORT
        verdict = (f"Worker transport: rdfer's / PyTorch's = {min(worker_ratios):.2f}x-{max(worker_ratios):.2f}x in "
                   f"the worker rows{' (unpinned and pinned)' if pinned else ''}; the rule (keep rdfer's only if it "
                   f"wins by more than {(KEEP_TRANSPORT - 1) * 100:.0f}% at every T) says: "
                   f"{'keep' if keep else 'remove'} it.")
    else:
        keep, verdict = None, "Worker transport: no worker rows measured (no verdict)."
    return {"rows": rows, "pin_memory_measured": pinned, "keep": keep, "verdict": verdict,
            "labels": {n: TRANSPORTS[n][3] for n in TRANSPORTS}}


def transport_markdown(tr: Dict[str, Any]) -> List[str]:
    names = [n for n in TRANSPORTS if not n.endswith("_pinned") or tr["pin_memory_measured"]]
    lines = [
        "## Worker transport",
        "",
        "rdfer packed (c), the same pack and the same gather per item; only how a batch is made and "
        "leaves the worker differs. Each cell: clips/s, median of the rounds (all rounds in the JSON). "
        "With 0 workers nothing crosses processes: (i) vs (ii) is then the stacking copy that "
        "`__getitems__` saves (these rows run torch with one thread, as a worker does: see `measure_transport`).",
        "",
        "| T | DataLoader workers | " + " | ".join(tr["labels"][n] for n in names) + " | (i) / (ii) |"
        + (" (i) + pin / (iii) |" if tr["pin_memory_measured"] else ""),
        "|---:|---:|" + "---:|" * (len(names) + 1 + tr["pin_memory_measured"]),
    ]
    for row in tr["rows"]:
        cells = [f"{row[n]['clips_per_s']:.1f}" if n in row else "-" for n in names] + [f"{row['ratio']:.2f}x"]
        if tr["pin_memory_measured"]:
            cells.append(f"{row['ratio_pinned']:.2f}x" if "ratio_pinned" in row else "-")
        lines.append(f"| {row['num_frames']} | {row['workers']} | " + " | ".join(cells) + " |")
    lines += ["", tr["verdict"]]
    gather = [r["shared_gather"]["clips_per_s"] / r["torch"]["clips_per_s"] for r in tr["rows"] if "shared_gather" in r]
    if gather:
        lines += ["", f"Across processes, (iv) / (ii) = {min(gather):.2f}x-{max(gather):.2f}x is what gathering "
                      "into one batch tensor gives alone; (i) / (iv) is what the reused shared-memory slot (no "
                      "fresh shared-memory file to allocate and fault in per batch) and the small fields inside "
                      "the pickle add."]
    if not tr["pin_memory_measured"]:
        lines += ["", "(iii) `pin_memory=True` not measured: torch finds no accelerator on this machine and "
                      "ignores the option (it pins only for a GPU)."]
    return lines + [""]


def serve_http(folder: Path):
    """``(base URL, process)``: ``python -m http.server`` serving ``folder`` on 127.0.0.1 (its own
    process, so serving does not share the loader's interpreter)."""
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                             str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return f"http://127.0.0.1:{port}", proc
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise RuntimeError("the loopback HTTP server did not start")


def machine() -> Dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version()}


def versions(names=("rdfer", "torch", "torchvision", "pillow", "numpy", "av")) -> Dict[str, str]:
    from PIL import features

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    out["libjpeg-turbo"] = str(features.version_feature("libjpeg_turbo") or "no")
    return out


def to_markdown(res: Dict[str, Any]) -> str:
    m, t = res["machine"], res["tree"]
    lines = [
        "# Video loading throughput" + ("" if res["rows"] else ": worker transport"),
        "",
        f"- command: `{res['command']}`",
        f"- date: {res['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, 1-min load average "
        f"{res['load_before'][0]:.2f} at start, {res['load_after'][0]:.2f} at end (the machine is shared: "
        f"timings are indicative); whole run {res['total_seconds']:.0f} s",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()),
        f"- data: {t['clips']} generated DFEW-layout clips, {t['mean_frames_per_clip']:.1f} frames per clip on "
        f"average (20-80), 224x224 JPEG frames of {t['mean_jpeg_kb']:.1f} KB on average, in the page cache",
        f"- pack: `pack_dataset(num_frames={res['pack']['num_frames']}, image_size=112)` took "
        f"{res['pack']['seconds']:.1f} s ({res['pack']['clips_per_s']:.1f} clips/s, single process), "
        f"{res['pack']['mb']:.1f} MB on disk ({res['pack']['mb'] / t['clips']:.2f} MB per clip)",
        f"- each cell: clips/s of a DataLoader (batch 8) over all clips, uint8 (3, T, 112, 112) videos; "
        f"{res['rounds']} interleaved rounds per cell (each at least {res['min_seconds']} s of whole epochs, first "
        "batch not timed), the median reported (all rounds are in the JSON)",
        "",
    ]
    if res["rows"]:
        lines += loaders_markdown(res)
        lines += webdataset_markdown(res)
    if res.get("transport"):
        lines += transport_markdown(res["transport"])
    return "\n".join(lines)


def loaders_markdown(res: Dict[str, Any]) -> List[str]:
    lines = [
        "| T | DataLoader workers | (a) per-frame PIL (clips/s) | (b) rdfer folder loader (clips/s) | "
        "(b1) same, 1 decoding thread | (c) rdfer packed (clips/s) | (b) / (a) | (b1) / (a) | (c) / (a) | "
        "goals: (b) >= 3x, (c) >= 10x |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in res["rows"]:
        a, b, c = (row[k]["clips_per_s"] for k in ("baseline", "folder", "packed"))
        b1 = row.get("folder_1thread", {}).get("clips_per_s")
        met = f"{'met' if b / a >= GOAL_FOLDER else 'NOT met'} / {'met' if c / a >= GOAL_PACKED else 'NOT met'}"
        b1_cells = (f"{b1:.1f} | ", f"{b1 / a:.2f}x | ") if b1 else ("= (b) | ", "= (b) | ")
        lines.append(f"| {row['num_frames']} | {row['workers']} | {a:.1f} | {b:.1f} | {b1_cells[0]}{c:.1f} | "
                     f"{b / a:.2f}x | {b1_cells[1]}{c / a:.1f}x | {met} |")
    lines += [
        "",
        res["verdict"],
        "",
        "Reading the table:",
        "",
        "- (b) vs (a): the folder loader decodes each JPEG with libjpeg-turbo (simplejpeg) straight from the "
        "file's bytes at the reduced DCT scale (half scale for 224 px frames: no full-size IDCT, no resize), and "
        "each distinct frame once (clips shorter than T repeat frames). It still entropy-decodes every selected "
        "frame, which is most of the remaining time; its gain grows where clips are shorter than T (T = 64 here).",
        "- (b) vs (b1): without DataLoader workers the folder loader decodes one clip's frames in one thread "
        "per core (up to 4; `decode_threads`); the per-frame PIL loop of the public code decodes one frame "
        "after another. (b1) is the same loader with `decode_threads=1`: the gain from the decoding "
        "path alone. In DataLoader workers every loader runs one thread per process, so the workers rows "
        "compare the decoding path alone.",
        "- (c) with workers: each batch (8 x 3 x T x 112 x 112 bytes: 4.8 MB at T = 16, 19 MB at T = 64) is "
        "gathered straight into one buffer (`__getitems__`) and leaves the worker through a reused "
        "shared-memory slot (`rdfer.data.shm`), its small fields inside the pickle: PyTorch's own path, a "
        "fresh shared-memory file per tensor whose pages are faulted in anew, cost more than reading the "
        "shard (the worker transport table below compares the two). Crossing processes still costs more "
        "than reading packed data, so in-process loading is faster: on a machine with few cores, train on "
        "packed data with `--workers 0` (or 1-2).",
        "",
    ]
    return lines


def webdataset_markdown(res: Dict[str, Any]) -> List[str]:
    w = res["pack"].get("webdataset")
    if not w or "wds_local" not in res["rows"][0]:
        return []
    http = "wds_http" in res["rows"][0]
    layouts = w.get("layouts", {})
    made = "; ".join(f"{name}: {m['seconds']:.1f} s, {m['mb']:.1f} MB ({res['pack']['mb'] / max(m['mb'], 1e-9):.1f}x "
                     f"smaller than (c))" for name, m in layouts.items())
    lines = [
        "## WebDataset shards",
        "",
        f"The same clips as WebDataset shards, `write_webdataset(num_frames={res['pack']['num_frames']}, "
        f"image_size=112, quality={w['quality']}, shard_size={w['shard_size']}, layout=...)` ({made}), read from "
        "the page cache: (d) the default layout (`clip`: a video's frames as one Motion-JPEG member), (d0) the "
        "per-frame layout (`frames`: one JPEG member per frame, the only layout before), (d2) the `npy` layout "
        "(uncompressed uint8 frames, nothing to decode); (e) the (d) shards from a loopback HTTP server. Same "
        "rounds as the table above (interleaved with (a)-(c)).",
        "",
        "| T | DataLoader workers | (a) per-frame PIL | (c) rdfer packed | (d0) per-frame, local | (d) clip, local | "
        "(d2) npy, local | " + ("(e) clip, HTTP | " if http else "") + "(d0) / (c) | (d) / (c) | (d2) / (c) | "
        + ("(e) / (d) | " if http else "") + "(d) / (a) | clips/s per core, (d) | "
        f"goal (d) >= {GOAL_WDS} (c), and (d2) |",
        "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if http else "") + "---:|---:|---:|"
        + ("---:|" if http else "") + "---:|---:|---|",
    ]
    cores = res["machine"]["cores"]
    for row in res["rows"]:
        a, c, d = (row[k]["clips_per_s"] for k in ("baseline", "packed", "wds_local"))
        d0, d2 = (row[k]["clips_per_s"] if k in row else float("nan") for k in ("wds_local_frames", "wds_local_npy"))
        procs = min(cores, max(1, row["workers"]))  # cores busy loading: 1 in process, the workers otherwise
        cells = [f"{row['num_frames']}", f"{row['workers']}", f"{a:.1f}", f"{c:.1f}", f"{d0:.1f}", f"{d:.1f}",
                 f"{d2:.1f}"]
        if http:
            cells.append(f"{row['wds_http']['clips_per_s']:.1f}")
        cells += [f"{d0 / c:.2f}", f"{d / c:.2f}", f"{d2 / c:.2f}"]
        if http:
            cells.append(f"{row['wds_http']['clips_per_s'] / d:.2f}")
        met = ["met" if x / c >= GOAL_WDS else "NOT met" for x in (d, d2)]
        cells += [f"{d / a:.1f}x", f"{d / procs:.0f}", f"(d) {met[0]}, (d2) {met[1]}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Reading it: (c) stores raw uint8 frames and copies bytes. (d0) streams every stored frame's tar member "
        "(Python's `tarfile`, one member per frame: all 64 stored frames even when T = 16) and JPEG-decodes the T "
        "frames it returns; (d) streams one member per video (its .json and one .mjpeg), slices the T frames out by "
        "their recorded byte lengths and decodes them with libjpeg-turbo (in a few threads without workers); (d2) "
        "reads one member per video and decodes nothing, at the raw pack's size. The per-stage costs are measured "
        "per core in `benchmarks/results/feeding.md` (`read_shard`, `decode_112`; docs: Data, Loading speed). The "
        "JPEG shards are several times smaller than the raw pack, which is what counts when the data comes over a "
        "network; `--decode-on-device` moves the decoding to the GPU (docs: Feeding a GPU). (e) adds the HTTP "
        "client and the loopback socket. (d) / (a) compares with the per-frame PIL loop of the public DFER code "
        "(Former-DFER's loader).",
        "",
    ]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=100, help="clips in the generated tree (default 100)")
    p.add_argument("--frames", type=int, nargs="+", default=[16, 64], help="T values (default 16 64)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers (default 0 2)")
    p.add_argument("--min-seconds", type=float, default=1.5, help="time each round of a cell for at least this long")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell; the median is reported")
    p.add_argument("--quick", action="store_true", help="smoke run: 6 clips, T = 8, no workers, one 0.2 s round")
    p.add_argument("--transport-only", action="store_true",
                   help="only the worker transport table (packed data; writes dataloading_transport.*)")
    p.add_argument("--tree", help="reuse / keep the generated tree in this folder (default: a temp folder)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON and Markdown")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.frames, args.workers, args.rounds, args.min_seconds = 6, [8], [0], 1, 0.2
    command = "python benchmarks/dataloading.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    work = Path(args.tree) if args.tree else Path(tempfile.mkdtemp(prefix="rdfer_dataloading_"))
    http_url, server = None, None
    try:
        root = work / "DFEW"
        if not (root / "EmoLabel_DataSplit").exists():
            print(f"generating {args.clips} clips in {root} ...", flush=True)
            tree = make_tree(root, args.clips)
            (work / "tree.json").write_text(json.dumps(tree))
        tree = json.loads((work / "tree.json").read_text())
        pack_frames = max(args.frames)
        source = DFEW(root, 1, "train", num_frames=pack_frames, image_size=112, train=False)
        pack_dir = work / f"pack_{pack_frames}"
        shutil.rmtree(pack_dir, ignore_errors=True)
        tp = time.perf_counter()
        pack_dataset(source, pack_dir, num_frames=pack_frames, image_size=112, progress=False)
        pack_s = time.perf_counter() - tp
        pack = {"num_frames": pack_frames, "seconds": pack_s, "clips_per_s": len(source) / pack_s,
                "mb": sum(f.stat().st_size for f in pack_dir.iterdir()) / 2**20}
        wds_dirs = {layout: work / f"wds_{layout}_{pack_frames}" for layout in WDS_LAYOUTS}
        if not args.transport_only:  # the transport table reads the rdfer pack only
            made = {}
            for layout, wds_dir in wds_dirs.items():
                shutil.rmtree(wds_dir, ignore_errors=True)
                tp = time.perf_counter()
                write_webdataset(source, wds_dir, num_frames=pack_frames, image_size=112, shard_size=WDS_SHARD,
                                 quality=90, progress=False, layout=layout)
                wds_s = time.perf_counter() - tp
                made[layout] = {"seconds": wds_s, "clips_per_s": len(source) / wds_s,
                                "mb": sum(f.stat().st_size for f in wds_dir.iterdir()) / 2**20}
            # (d), the default layout, at the top level; every layout under "layouts"
            pack["webdataset"] = {**made["clip"], "quality": 90, "shard_size": WDS_SHARD, "layouts": made}
            http_url, server = serve_http(wds_dirs["clip"])
        folders = [path for path, _ in source.samples]
        rows = []
        for t in ([] if args.transport_only else args.frames):
            loaders = {
                "baseline": PerFramePIL(folders, t),
                "folder": DFEW(root, 1, "train", num_frames=t, image_size=112, train=False),
                "folder_1thread": DFEW(root, 1, "train", num_frames=t, image_size=112, train=False,
                                       decode_threads=1),
                "packed": PackedDataset(pack_dir, num_frames=t, train=False),
                **{name: WebDatasetVideos(str(wds_dirs[layout]), num_frames=t) for layout, name in WDS_LAYOUTS.items()},
            }
            if http_url:
                loaders["wds_http"] = WebDatasetVideos(f"{http_url}/index.json", num_frames=t)
            for w in args.workers:
                # In workers every loader decodes with one thread per process: no separate column.
                names = [n for n in loaders if not (w and n == "folder_1thread")]
                runs: Dict[str, List[Dict[str, float]]] = {n: [] for n in names}
                for _ in range(args.rounds):  # interleaved, so a change of load hits every loader alike
                    for name in names:
                        runs[name].append(clips_per_second(loaders[name], w, args.min_seconds))
                row: Dict[str, Any] = {"num_frames": t, "workers": w, **medians(runs, f"T={t:3d} workers={w}")}
                rows.append(row)
        transport = measure_transport(pack_dir, args.frames, args.workers, args.rounds, args.min_seconds)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        if not args.tree:
            shutil.rmtree(work, ignore_errors=True)
    ratios_b = [r["folder"]["clips_per_s"] / r["baseline"]["clips_per_s"] for r in rows]
    ratios_c = [r["packed"]["clips_per_s"] / r["baseline"]["clips_per_s"] for r in rows]
    def tally(ratios, goal):
        met = sum(r >= goal for r in ratios)
        return f"met in {met} of {len(ratios)} cells ({min(ratios):.2f}x-{max(ratios):.2f}x)"

    verdict = (f"Goals: (b) >= {GOAL_FOLDER:.0f}x (a): {tally(ratios_b, GOAL_FOLDER)}; "
               f"(c) >= {GOAL_PACKED:.0f}x (a): {tally(ratios_c, GOAL_PACKED)}." if rows else "")
    res = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "tree": tree,
        "pack": pack,
        "min_seconds": args.min_seconds,
        "rounds": args.rounds,
        "rows": rows,
        "goals": {"folder_vs_baseline": GOAL_FOLDER, "packed_vs_baseline": GOAL_PACKED},
        "verdict": verdict,
        "transport": transport,
        "total_seconds": time.perf_counter() - t0,
    }
    # a smoke run never replaces the committed results, nor does a run of the transport table alone
    stem = "dataloading" + ("_transport" if args.transport_only else "") + ("_quick" if args.quick else "")
    write_results(Path(args.out), stem, res, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
