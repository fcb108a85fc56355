"""How many CPU cores does it take to feed a GPU? Clips/s one core delivers per data stage,
against the clips/s one GPU consumes with the paper recipe (issue 26).

    python benchmarks/feeding.py                       # full run: T = 64 and 16, 3 rounds (about 2 minutes)
    python benchmarks/feeding.py --quick --out /tmp/f  # smoke run: T = 16, 1 short round (< 20 s)
    python benchmarks/feeding.py --device cuda         # on a GPU machine: adds GPU decode, GPU augmentation, copy

A *clip* is one training sample: one video's ``T`` loaded frames of 112x112 (the paper recipe:
``T = 64``, every frame decoded, since the key-expression re-sampler glimpses the whole video).

**What one core delivers.** Each stage runs in one process with ``torch.set_num_threads(1)``, on
generated face frames (a drawn face with skin texture, noise and per-frame motion, as in
``dataloading.py``; 224x224 JPEG, quality 90, and the same frames resized to 112 px and
re-encoded at quality 90, as a shard of pre-cropped frames stores them). The rate is clips per
CPU-second (user + system time of every process of the stage): *per core*, whatever else the
shared machine runs. Stages:

* ``read_shard``: a tar shard of 112 px JPEG frames in rdfer's default WebDataset layout (per clip
  ``CLIP.json`` with the frames' byte lengths and ``CLIP.mjpeg``, the frames back to back) streamed
  from the page cache with webdataset's ``tar_file_iterator`` (``tarfile`` without webdataset), each
  clip's ``.mjpeg`` sliced into its JPEGs by those lengths (memoryviews, no copies): a clip's JPEG bytes.
* ``decode_112``: ``simplejpeg.decode_jpeg`` (libjpeg-turbo, rdfer's decoder) of the clip's ``T``
  stored 112 px JPEGs into one uint8 ``(3, T, 112, 112)`` tensor.
* ``decode_112_torchvision``: the same with ``torchvision.io.decode_jpeg`` on the CPU (comparison).
* ``decode_resize_224``: the folder loader's path: ``rdfer.data.decode.load_frame(path, 112)`` on
  ``T`` 224 px JPEG files in the page cache (read, decode at half DCT scale: no resize needed).
* ``read_packed``: an item of ``rdfer.data.PackedDataset`` (``T`` of the 64 stored frames
  gathered into a ``(3, T, 112, 112)`` tensor) from a pack of the same clips in the page cache.
* ``transport``: a DataLoader with 1 worker over a dataset that returns a preallocated uint8
  ``(3, T, 112, 112)`` tensor, PyTorch's default collate, batch 16 (the paper's batch 128 on 8
  GPUs), the main process copying each batch into a preallocated buffer (the staging copy
  ``pin_memory`` makes): the worker's and the main process's CPU time together.
* ``transport_jpeg``: the same for the clip's ``T`` JPEG byte strings (what workers ship when the
  GPU decodes), the main process wrapping them as tensors for ``decode_jpeg``.
* ``augment_cpu``: ``rdfer.data.transforms.VideoBatchTransform(train=True)`` on a uint8
  ``(16, 3, T, 112, 112)`` batch on the CPU. rdfer runs it on the training device, batched: this
  is what it would cost if it ran on CPU cores instead.

Each stage is timed for at least ``--min-seconds`` after one warm-up call; the stages are measured
in ``--rounds`` interleaved rounds (the load of a shared machine drifts) and the median is reported.

**What one GPU consumes** is computed, not measured: the wrapped models' forward multiply-adds per
video from ``benchmarks/results/scalability.json`` (fvcore, batch 1, 64 loaded frames), 2 FLOPs
per multiply-add, a training step about 3x the forward, an H200 SXM's dense BF16 peak and a
stated model-FLOPs utilisation (35%; 20% and 50% shown). Cores per GPU = consumed clips/s /
clips/s per core, stage by stage. The host-to-GPU copy is computed from the bytes per clip and an
assumed PCIe Gen5 x16 rate.

Writes ``<out>/feeding.json`` and ``<out>/feeding.md`` (``feeding_quick.*`` with --quick,
``feeding_cuda.*`` with --device cuda; default ``benchmarks/results``) with the machine, versions,
command and date, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import shlex
import shutil
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rdfer.data import PackedDataset, VideoCSV, pack_dataset  # noqa: E402
from rdfer.data.decode import load_frame  # noqa: E402
from rdfer.data.transforms import VideoBatchTransform  # noqa: E402
from rdfer.engine.config import TrainConfig  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from dataloading import machine, versions as loader_versions, write_results  # noqa: E402  (shared report code)

try:  # how rdfer's WebDataset loader reads a shard; tarfile's streaming mode when it is not installed
    from webdataset.tariterators import tar_file_iterator
except ImportError:  # pragma: no cover
    tar_file_iterator = None
SHARD_READER = "webdataset.tariterators.tar_file_iterator" if tar_file_iterator is not None else "tarfile (r|)"

# --------------------------------------------------------------------------- assumptions (stated)

#: NVIDIA H200 SXM, dense BF16 Tensor Core peak (the datasheet's 1,979 TFLOPS is with 2:4 sparsity).
PEAK_TFLOPS = 989.4
PEAK_SOURCE = ("NVIDIA's H200 SXM datasheet: 1,979 TFLOPS BF16 with 2:4 sparsity, half of it dense; "
               "H100 SXM's is the same")
#: Model-FLOPs utilisation assumed for 3D CNNs at 112 px in BF16 (not measured: no GPU here).
UTILISATION = 0.35
SENSITIVITY = (0.20, 0.35, 0.50)
TRAIN_FACTOR = 3.0  # forward + backward (activations and weights) ~ 3 forwards
FLOPS_PER_MAC = 2.0
#: PCIe Gen5 x16: 32 GT/s x 16 lanes x 128/130 = 63 GB/s per direction; ~50 GB/s assumed for
#: pinned host-to-device copies.
PCIE_NOMINAL_GBPS, PCIE_GBPS = 63.0, 50.0
GPUS_PER_NODE = 8
MODELS = ("r3d_18", "r2plus1d_18", "former_dfer")  # wrapped (rdfer_*); the first is the main case
MAIN_MODEL = MODELS[0]
SIZE = 112

#: name -> (where rdfer runs it, what is timed, in the pipeline's CPU stages)
STAGES: Dict[str, Dict[str, Any]] = {
    "read_shard": dict(where="CPU (DataLoader worker)", cpu_stage=True,
                       what="tar shard of 112 px JPEG frames, one .json and one .mjpeg member per clip (rdfer's "
                            f"default layout), streamed from the page cache ({SHARD_READER}) and sliced into JPEGs"),
    "decode_112": dict(where="CPU (DataLoader worker)", cpu_stage=True,
                       what="simplejpeg decode of T stored 112 px JPEGs into a (3, T, 112, 112) uint8 tensor"),
    "decode_112_torchvision": dict(where="comparison", cpu_stage=False,
                                   what="the same with torchvision.io.decode_jpeg on the CPU"),
    "decode_resize_224": dict(where="CPU (DataLoader worker)", cpu_stage=True,
                              what="rdfer's load_frame(path, 112) on T 224 px JPEG files (half DCT scale)"),
    "read_packed": dict(where="CPU (DataLoader worker)", cpu_stage=True,
                        what="rdfer's PackedDataset item: T decoded frames gathered from a pack (page cache), "
                             "no decoding"),
    "transport": dict(where="CPU (worker + main process)", cpu_stage=True,
                      what="1-worker DataLoader, default collate, batch {batch}, staging copy in the main process"),
    "transport_jpeg": dict(where="CPU (worker + main process)", cpu_stage=True,
                           what="the same shipping the clip's T JPEG byte strings (GPU decode)"),
    "augment_cpu": dict(where="GPU in rdfer (CPU cost shown)", cpu_stage=False,
                        what="VideoBatchTransform(train=True) on a uint8 ({batch}, 3, T, 112, 112) CPU batch"),
}
#: name -> (description, stages on the CPU)
PIPELINES: Dict[str, Dict[str, Any]] = {
    "shards": dict(what="shards of 112 px JPEG frames, decoded on the CPU",
                   stages=["read_shard", "decode_112", "transport"]),
    "folders": dict(what="224 px frame folders (DFEW's clip_224x224), rdfer's folder loader",
                    stages=["decode_resize_224", "transport"]),
    "packed": dict(what="rdfer pack: frames decoded once, stored as uint8 (rdfer train packed)",
                   stages=["read_packed", "transport"]),
    "shards_gpu_decode": dict(what="shards of 112 px JPEG frames, decoded on the GPU (--decode-on-device)",
                              stages=["read_shard", "transport_jpeg"]),
}


# --------------------------------------------------------------------------- the test frames

def _face_frames(rng: np.random.Generator, n: int) -> List[Any]:
    """``n`` 224x224 frames of one drawn face (textured background, skin, eyes, brows, mouth),
    moving and changing expression over the clip, with film grain: JPEG sizes like real crops."""
    from PIL import Image, ImageDraw, ImageFilter

    yy, xx = np.mgrid[0:224, 0:224]
    base = rng.uniform(40, 200, size=3)
    background = (base[None, None] + 40 * np.sin(xx[..., None] / rng.uniform(15, 60) + yy[..., None] / 50)
                  + rng.normal(0, 10, (224, 224, 3))).clip(0, 255).astype(np.uint8)
    skin = tuple(int(v) for v in rng.uniform([150, 100, 80], [240, 190, 160]))
    hair = tuple(int(c * 0.35) for c in skin)
    shift, expression = float(rng.uniform(2, 10)), float(rng.uniform(0.3, 1.0))
    grain = rng.normal(0, 7, (256, 256, 3)).astype(np.int16)
    frames = []
    for k in range(n):
        t = k / n
        im = Image.fromarray(background)
        d = ImageDraw.Draw(im)
        cx, cy = 112 + shift * np.sin(2 * np.pi * t), 118 + shift * 0.5 * np.cos(2 * np.pi * t)
        d.ellipse((cx - 78, cy - 98, cx + 78, cy + 98), fill=skin)
        d.chord((cx - 80, cy - 104, cx + 80, cy + 20), 180, 360, fill=hair)
        open_ = 4 + 14 * expression * np.sin(np.pi * t) ** 2
        for side in (-1, 1):
            ex = cx + side * 34
            d.ellipse((ex - 16, cy - 20, ex + 16, cy - 6), fill=(235, 235, 235))
            d.ellipse((ex - 6, cy - 19, ex + 6, cy - 7), fill=(60, 40, 30))
            d.line((ex - 20, cy - 34 - open_ / 2, ex + 18, cy - 32 - side * open_ / 3), fill=hair, width=5)
        d.ellipse((cx - 30, cy + 45 - open_ / 3, cx + 30, cy + 50 + open_), fill=(150, 60, 60))
        arr = np.asarray(im.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.int16)
        oy, ox = rng.integers(0, 32, size=2)
        frames.append(Image.fromarray((arr + grain[oy: oy + 224, ox: ox + 224]).clip(0, 255).astype(np.uint8)))
    return frames


def _jpeg(image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_data(work: Path, clips: int, frames: int, seed: int = 0) -> Dict[str, Any]:
    """``clips`` clips of ``frames`` frames: 224 px JPEG files (one folder per clip) and the 112 px
    JPEG bytes of the same frames (resized bilinear, re-encoded), in memory."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folders, small, big_bytes = [], [], []
    for c in range(clips):
        folder = work / "frames" / f"{c:05d}"
        folder.mkdir(parents=True)
        paths, clip_small = [], []
        for k, frame in enumerate(_face_frames(rng, frames)):
            data = _jpeg(frame)
            path = folder / f"{k + 1}.jpg"
            path.write_bytes(data)
            paths.append(str(path))
            big_bytes.append(len(data))
            clip_small.append(_jpeg(frame.resize((SIZE, SIZE), Image.BILINEAR)))
        folders.append(paths)
        small.append(clip_small)
    csv = work / "clips.csv"
    csv.write_text("path,label\n" + "".join(f"frames/{c:05d},happy\n" for c in range(clips)))
    pack = pack_dataset(VideoCSV(csv, num_frames=frames, image_size=SIZE), work / "pack", num_frames=frames,
                        image_size=SIZE, progress=False)
    return {"folders": folders, "jpeg112": small, "pack": pack,
            "mean_jpeg_224_bytes": float(np.mean(big_bytes)),
            "mean_jpeg_112_bytes": float(np.mean([len(b) for clip in small for b in clip]))}


def write_shard(path: Path, jpeg112: List[List[bytes]], t: int) -> int:
    """A tar of the first ``t`` frames of every clip in rdfer's default WebDataset layout
    (``CLIP.json`` with ``frame_bytes``, then ``CLIP.mjpeg``: the JPEGs back to back); returns its
    size in bytes."""
    with tarfile.open(path, "w") as tar:
        for c, clip in enumerate(jpeg112):
            frames = clip[:t]
            for name, data in ((f"{c:05d}.json", json.dumps({"frame_bytes": [len(b) for b in frames]}).encode()),
                               (f"{c:05d}.mjpeg", b"".join(frames))):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path.stat().st_size


def _slice_clips(members) -> int:
    """Clips found in ``(name, bytes)`` members of a shard of :func:`write_shard`, each ``.mjpeg``
    sliced into its JPEGs by its ``.json``'s ``frame_bytes`` (as rdfer's reader does)."""
    sizes: Dict[str, List[int]] = {}
    clips = 0
    for name, data in members:
        key, ext = name.split(".", 1)
        if ext == "json":
            sizes[key] = json.loads(data)["frame_bytes"]
        else:
            whole, at = memoryview(data), 0
            jpegs = []
            for n in sizes.pop(key):
                jpegs.append(whole[at: at + n])
                at += n
            clips += bool(jpegs)
    return clips


# --------------------------------------------------------------------------- timing

def _timed(step: Callable[[], int], min_seconds: float) -> Dict[str, float]:
    """Call ``step`` (returns the clips it did) once untimed, then until ``min_seconds`` of wall
    time have passed: clips per CPU-second of this process and per wall second."""
    step()
    clips, c0, w0 = 0, time.process_time(), time.perf_counter()
    while True:
        clips += step()
        wall = time.perf_counter() - w0
        if wall >= min_seconds:
            break
    cpu = time.process_time() - c0
    return {"clips": clips, "cpu_s": cpu, "wall_s": wall, "clips_per_s": clips / max(cpu, 1e-9),
            "wall_clips_per_s": clips / wall}


class _SameVideo(Dataset):
    """Returns one preallocated uint8 ``(3, T, 112, 112)`` tensor (no decoding), stamped with the
    worker's CPU time."""

    def __init__(self, t: int):
        self.video = torch.randint(0, 256, (3, t, SIZE, SIZE), dtype=torch.uint8)

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"video": self.video, "cpu": time.process_time()}


class _SameJpegs(Dataset):
    """Returns one clip's JPEG byte strings, stamped with the worker's CPU time."""

    def __init__(self, jpegs: List[bytes]):
        self.jpegs = jpegs

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"jpegs": self.jpegs, "cpu": time.process_time()}


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def _list_collate(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return items


def _transport(dataset: Dataset, batch: int, min_seconds: float, jpeg: bool) -> Dict[str, float]:
    """Clips per CPU-second of a 1-worker DataLoader: the worker's CPU time (stamped into the items
    it returns) plus the main process's, between the first batch (start-up, not timed) and the last."""
    loader = DataLoader(dataset, batch_size=batch, num_workers=1, worker_init_fn=_one_thread,
                        collate_fn=_list_collate if jpeg else None, prefetch_factor=2)
    staging = None if jpeg else torch.empty((batch,) + tuple(dataset.video.shape), dtype=torch.uint8)

    def stamp(b) -> float:
        return float(b[-1]["cpu"]) if jpeg else float(b["cpu"][-1])

    it = iter(loader)
    try:
        first = next(it)
        worker0, c0, w0, clips = stamp(first), time.process_time(), time.perf_counter(), 0
        while True:
            b = next(it)
            if jpeg:  # what decode_jpeg(list, device="cuda") takes
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # bytes are read-only: torch warns once
                    [torch.frombuffer(data, dtype=torch.uint8) for item in b for data in item["jpegs"]]
            else:
                staging.copy_(b["video"])
            clips += batch
            wall = time.perf_counter() - w0
            if wall >= min_seconds:
                break
        cpu = (stamp(b) - worker0) + (time.process_time() - c0)
    finally:
        del it, loader
    return {"clips": clips, "cpu_s": cpu, "wall_s": wall, "clips_per_s": clips / max(cpu, 1e-9),
            "wall_clips_per_s": clips / wall}


def measure_stage(name: str, t: int, data: Dict[str, Any], shard: Path, batch: int,
                  min_seconds: float) -> Dict[str, float]:
    import simplejpeg
    from torchvision.io import decode_jpeg

    clips = data["jpeg112"]
    n = len(clips)
    pos = [0]

    def next_clip() -> int:
        pos[0] = (pos[0] + 1) % n
        return pos[0]

    if name == "read_shard":
        def step() -> int:
            if tar_file_iterator is not None:
                with open(shard, "rb") as f:
                    return _slice_clips((m["fname"], m["data"]) for m in tar_file_iterator(f))
            with tarfile.open(shard, mode="r|") as tar:
                return _slice_clips((m.name, tar.extractfile(m).read()) for m in tar)
        return _timed(step, min_seconds)
    if name == "decode_112":
        video = torch.empty((3, t, SIZE, SIZE), dtype=torch.uint8)
        frames = np.empty((t, SIZE, SIZE, 3), dtype=np.uint8)

        def step() -> int:
            for k, jpeg in enumerate(clips[next_clip()][:t]):
                frames[k] = simplejpeg.decode_jpeg(jpeg, colorspace="RGB", fastdct=False, fastupsample=False)
            np.copyto(video.numpy(), frames.transpose(3, 0, 1, 2))
            return 1
        return _timed(step, min_seconds)
    if name == "decode_112_torchvision":
        tensors = [[torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in clip[:t]] for clip in clips]

        def step() -> int:
            torch.stack(decode_jpeg(tensors[next_clip()]), dim=1)  # (3, T, H, W)
            return 1
        return _timed(step, min_seconds)
    if name == "decode_resize_224":
        video = torch.empty((3, t, SIZE, SIZE), dtype=torch.uint8)
        frames = np.empty((t, SIZE, SIZE, 3), dtype=np.uint8)

        def step() -> int:
            for k, path in enumerate(data["folders"][next_clip()][:t]):
                frames[k] = load_frame(path, SIZE)
            np.copyto(video.numpy(), frames.transpose(3, 0, 1, 2))
            return 1
        return _timed(step, min_seconds)
    if name == "read_packed":
        packed = PackedDataset(data["pack"], num_frames=t, train=True)

        def step() -> int:
            packed[next_clip()]
            return 1
        return _timed(step, min_seconds)
    if name == "transport":
        return _transport(_SameVideo(t), batch, min_seconds, jpeg=False)
    if name == "transport_jpeg":
        return _transport(_SameJpegs(clips[0][:t]), batch, min_seconds, jpeg=True)
    if name == "augment_cpu":
        transform = VideoBatchTransform(train=True)
        x = torch.randint(0, 256, (batch, 3, t, SIZE, SIZE), dtype=torch.uint8)

        def step() -> int:
            transform(x)
            return batch
        return _timed(step, min_seconds)
    raise ValueError(name)


def measure_device(device: str, t: int, data: Dict[str, Any], batch: int, min_seconds: float) -> Dict[str, Any]:
    """Clips/s of one device (wall time): batched JPEG decode, the training augmentation and the
    host-to-device copy of a pinned uint8 batch. ``device="cpu"`` runs the same code (a smoke test)."""
    from torchvision.io import decode_jpeg

    dev = torch.device(device)
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    flat = [j for clip in data["jpeg112"] for j in clip]
    tensors = [torch.frombuffer(bytearray(flat[i % len(flat)]), dtype=torch.uint8) for i in range(batch * t)]

    def decode() -> int:
        out = decode_jpeg(tensors, device=dev)
        torch.stack(out).view(batch, t, 3, SIZE, SIZE).transpose(1, 2)  # (B, 3, T, H, W)
        sync()
        return batch

    host = torch.randint(0, 256, (batch, 3, t, SIZE, SIZE), dtype=torch.uint8)
    if cuda:
        host = host.pin_memory()

    def copy() -> int:
        host.to(dev, non_blocking=True)
        sync()
        return batch

    transform = VideoBatchTransform(train=True)
    on_device = host.to(dev)

    def augment() -> int:
        transform(on_device)
        sync()
        return batch

    out: Dict[str, Any] = {}
    for name, step in (("decode_112", decode), ("augment", augment), ("host_to_device", copy)):
        r = _timed(step, min_seconds)
        out[name] = {"clips_per_s": r["wall_clips_per_s"], "clips": r["clips"], "wall_s": r["wall_s"]}
    out["host_to_device"]["gb_per_s"] = out["host_to_device"]["clips_per_s"] * 3 * t * SIZE * SIZE / 1e9
    return out


# --------------------------------------------------------------------------- what a GPU consumes

def gpu_consumption(scalability: Path) -> Dict[str, Any]:
    """Clips/s one H200 consumes in training, per wrapped model, at the assumed utilisations."""
    rows = json.loads(scalability.read_text())["rows"]
    models = {}
    for name in MODELS:
        row = next(r for r in rows if r["backbone"] == name and r["variant"] == "rdfer")
        flops = row["fvcore_gflops"] * 1e9 * FLOPS_PER_MAC * TRAIN_FACTOR  # per clip, one training step
        models[name] = {
            "model": f"rdfer_{name}", "fvcore_gflops": row["fvcore_gflops"], "full_gflops": row["full_gflops"],
            "input_shape": row["input_shape"], "train_tflops_per_clip": flops / 1e12,
            "clips_per_s": {f"{u:.2f}": PEAK_TFLOPS * 1e12 * u / flops for u in SENSITIVITY},
        }
        models[name]["clips_per_s_main"] = PEAK_TFLOPS * 1e12 * UTILISATION / flops
    return {"gpu": "NVIDIA H200 SXM", "peak_tflops": PEAK_TFLOPS, "peak_source": PEAK_SOURCE,
            "utilisation": UTILISATION, "sensitivity": list(SENSITIVITY), "train_factor": TRAIN_FACTOR,
            "flops_per_mac": FLOPS_PER_MAC, "scalability_json": str(scalability.relative_to(ROOT))
            if scalability.is_relative_to(ROOT) else str(scalability), "models": models}


def plan(gpu: Dict[str, Any], per_t: Dict[str, Any], sizes: Dict[str, Any]) -> Dict[str, Any]:
    """Cores per GPU and per node, bottlenecks, copy and storage bandwidth, for every T measured."""
    out = {}
    for t, cell in per_t.items():
        rates = {name: s["clips_per_s"] for name, s in cell["stages"].items()}
        cpu = {n: r for n, r in rates.items() if STAGES[n]["cpu_stage"]}
        cell["bottleneck"] = min(cpu, key=cpu.get)
        pipelines = {}
        for p, spec in PIPELINES.items():
            stages = spec["stages"]
            pipelines[p] = {"what": spec["what"], "stages": stages, "bottleneck": min(stages, key=lambda s: rates[s]),
                            "clips_per_s_per_core": 1.0 / sum(1.0 / rates[s] for s in stages)}
        cell["pipelines"] = pipelines
        video_bytes = 3 * int(t) * SIZE * SIZE
        cell["bytes_per_clip"] = {
            "decoded_uint8": video_bytes,
            "jpeg_112": int(t) * sizes["mean_jpeg_112_bytes"],
            "shard_112": sizes["shard_bytes"][t] / sizes["clips"],
            "jpeg_224": int(t) * sizes["mean_jpeg_224_bytes"],
            "packed": video_bytes,
        }
        cell["host_to_device"] = {"assumed_gb_per_s": PCIE_GBPS, "nominal_gb_per_s": PCIE_NOMINAL_GBPS,
                                  "decoded_clips_per_s": PCIE_GBPS * 1e9 / video_bytes,
                                  "jpeg_clips_per_s": PCIE_GBPS * 1e9 / cell["bytes_per_clip"]["jpeg_112"]}
        cores = {}
        for model, m in gpu["models"].items():
            need = m["clips_per_s_main"]
            per = {}
            for p, spec in pipelines.items():
                per_stage = {s: need / rates[s] for s in spec["stages"]}
                per_gpu = sum(per_stage.values())
                per[p] = {"per_stage": per_stage, "per_gpu": per_gpu, "per_node": per_gpu * GPUS_PER_NODE,
                          "per_gpu_at": {u: c / need * per_gpu for u, c in m["clips_per_s"].items()}}
            per["augment_on_cpu"] = {"per_gpu": need / rates["augment_cpu"],
                                     "per_node": need / rates["augment_cpu"] * GPUS_PER_NODE}
            link = cell["host_to_device"]
            cores[model] = {
                "clips_per_s_per_gpu": need, "pipelines": per,
                "link_share_decoded": need / link["decoded_clips_per_s"],
                "link_share_jpeg": need / link["jpeg_clips_per_s"],
                "storage_mb_per_s_per_gpu": {k: need * v / 1e6 for k, v in cell["bytes_per_clip"].items()
                                             if k in ("shard_112", "jpeg_224", "packed")},
            }
        cell["cores"] = cores
        out[t] = cell
    return out


# --------------------------------------------------------------------------- the report

def versions() -> Dict[str, str]:
    return loader_versions(("rdfer", "torch", "torchvision", "simplejpeg", "webdataset", "pillow", "numpy"))


def _f(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def summary(res: Dict[str, Any]) -> str:
    t = str(max(int(k) for k in res["results"]))
    cell, g = res["results"][t], res["gpu"]["models"][MAIN_MODEL]
    c = cell["cores"][MAIN_MODEL]["pipelines"]
    b = cell["bottleneck"]
    order = ("folders", "shards", "packed", "shards_gpu_decode")
    names = {"folders": "224 px frame folders", "shards": "112 px JPEG shards", "packed": "rdfer packs",
             "shards_gpu_decode": "GPU decode"}
    return (f"At T = {t}, the bottleneck is `{b}`: {_f(cell['stages'][b]['clips_per_s'])} clips/s per core, the "
            f"lowest of the CPU stages. `{g['model']}` at {UTILISATION:.0%} of an H200's BF16 peak consumes "
            f"{_f(g['clips_per_s_main'])} clips/s, so one GPU needs "
            + ", ".join(f"{_f(c[p]['per_gpu'])} cores with {names[p]}" for p in order)
            + " (" + " / ".join(_f(c[p]["per_node"]) for p in order) + f" per {GPUS_PER_NODE}-GPU node); "
            f"augmentation on the CPU would add {_f(c['augment_on_cpu']['per_gpu'])} per GPU.")


def to_markdown(res: Dict[str, Any]) -> str:
    m, d, g = res["machine"], res["data"], res["gpu"]
    ts = sorted(res["results"], key=int, reverse=True)
    lines = [
        "# Feeding a GPU: clips/s per CPU core, per data stage",
        "",
        f"- command: `{res['command']}`",
        f"- date: {res['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, each stage in one process with torch threads 1, 1-min load "
        f"average {res['load_before'][0]:.2f} at start, {res['load_after'][0]:.2f} at end (the machine is shared: "
        f"timings are indicative); whole run {res['total_seconds']:.0f} s",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()),
        f"- data: {d['clips']} generated face clips of {d['frames']} frames; 224x224 JPEG (quality 90) "
        f"{d['mean_jpeg_224_bytes'] / 1024:.1f} KB per frame on average; the same frames at 112x112 (quality 90) "
        f"{d['mean_jpeg_112_bytes'] / 1024:.1f} KB; files and shards in the page cache",
        f"- a clip = one training sample, T frames of 112x112; rates are clips per CPU-second (user + system time "
        f"of every process of the stage), median of {res['rounds']} interleaved rounds of at least "
        f"{res['min_seconds']} s each (all rounds and the wall-clock rates are in the JSON)",
        "",
        "<!-- --8<-- [start:stages] -->",
        "",
        "| stage | where rdfer runs it | what is timed | " + " | ".join(
            f"T = {t}: clips/s per core | T = {t}: frames/s per core" for t in ts) + " |",
        "|---|---|---|" + "---:|---:|" * len(ts),
    ]
    for name, spec in STAGES.items():
        cells = []
        for t in ts:
            r = res["results"][t]["stages"][name]["clips_per_s"]
            bold = "**" if name == res["results"][t]["bottleneck"] else ""
            cells.append(f"{bold}{_f(r)}{bold} | {_f(r * int(t))}")
        what = spec["what"].format(batch=res["batch"])
        lines.append(f"| `{name}` | {spec['where']} | {what} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Bold: the bottleneck, the lowest clips/s per core of the stages rdfer runs on CPU cores "
        "(`decode_112_torchvision` is a comparison; `augment_cpu` runs on the GPU in rdfer).",
        "",
        "<!-- --8<-- [end:stages] -->",
        "",
        "## What one GPU consumes",
        "",
        "<!-- --8<-- [start:gpu] -->",
        "",
        f"Clips/s = peak x utilisation / (training FLOPs per clip); peak {g['peak_tflops']} TFLOPS "
        f"({g['peak_source']}); "
        f"training FLOPs per clip = {g['flops_per_mac']:.0f} FLOPs per multiply-add x {g['train_factor']:.0f} "
        f"(forward + backward) x the forward multiply-adds per video from `{g['scalability_json']}` (fvcore, "
        f"batch 1, 64 loaded frames, 4 clips x 4 frames recognised). The utilisation is an assumption "
        f"({g['utilisation']:.0%}; not measured: no GPU here).",
        "",
        "| model | forward GMACs per video (fvcore) | training TFLOPs per clip | " + " | ".join(
            f"clips/s per H200 at {float(u):.0%}" for u in g["models"][MAIN_MODEL]["clips_per_s"]) +
        f" | clips/s per {GPUS_PER_NODE}-GPU node at {g['utilisation']:.0%} |",
        "|---|---:|---:|" + "---:|" * (len(g["sensitivity"]) + 1),
    ]
    for mm in g["models"].values():
        lines.append(f"| `{mm['model']}` | {mm['fvcore_gflops']:.2f} | {mm['train_tflops_per_clip']:.3f} | "
                     + " | ".join(_f(v) for v in mm["clips_per_s"].values())
                     + f" | {_f(mm['clips_per_s_main'] * GPUS_PER_NODE)} |")
    lines += ["", "The same clips/s are used for every T: the wrapped model's FLOPs hardly depend on the frames loaded "
              "(the recognizer reads 4 clips x 4 frames, the detector 16 glimpses); T sets what the data stages cost.",
              "", "<!-- --8<-- [end:gpu] -->", "", "## Cores needed", "", "<!-- --8<-- [start:cores] -->", "",
              f"Cores per GPU = clips/s the GPU consumes ({g['utilisation']:.0%} utilisation) / clips/s per core, "
              "summed over the pipeline's CPU stages (per stage in the JSON); the last column scales with the "
              "utilisation.", "",
              "| model | T | pipeline | CPU stages | bottleneck | cores per GPU | cores per "
              f"{GPUS_PER_NODE}-GPU node | cores per GPU at " + " / ".join(
                  f"{float(u):.0%}" for u in g["models"][MAIN_MODEL]["clips_per_s"]) + " |",
              "|---|---:|---|---|---|---:|---:|---:|"]
    for model in g["models"]:
        for t in ts:
            cell = res["results"][t]
            c = cell["cores"][model]["pipelines"]
            for p, spec in cell["pipelines"].items():
                lines.append(f"| `rdfer_{model}` | {t} | {p}: {spec['what']} | {', '.join(spec['stages'])} | "
                             f"`{spec['bottleneck']}` | {_f(c[p]['per_gpu'])} | {_f(c[p]['per_node'])} | "
                             + " / ".join(_f(v) for v in c[p]["per_gpu_at"].values()) + " |")
            lines.append(f"| `rdfer_{model}` | {t} | augmentation, if it ran on the CPU (rdfer: on the GPU) | "
                         f"augment_cpu | | {_f(c['augment_on_cpu']['per_gpu'])} | "
                         f"{_f(c['augment_on_cpu']['per_node'])} | |")
    lines += ["", "<!-- --8<-- [end:cores] -->", "", "## Host-to-GPU copy and storage", "",
              "<!-- --8<-- [start:bandwidth] -->", "",
              f"Host-to-GPU: PCIe Gen5 x16, {PCIE_NOMINAL_GBPS:.0f} GB/s per direction nominal, "
              f"{PCIE_GBPS:.0f} GB/s assumed for pinned copies (not measured). Storage: the bytes of a clip's "
              f"frames as stored (JPEG sizes measured on the generated frames), times the clips/s of "
              f"`rdfer_{MAIN_MODEL}` at {g['utilisation']:.0%}.", "",
              f"| T | stored as | bytes per clip (KB) | read per GPU (MB/s) | "
              f"read per {GPUS_PER_NODE}-GPU node (MB/s) |",
              "|---:|---|---:|---:|---:|"]
    stored = {"shard_112": "112 px JPEG frames in tar shards", "jpeg_224": "224 px JPEG files (frame folders)",
              "packed": "rdfer pack (uint8, 64 frames stored; T read)"}
    for t in ts:
        cell = res["results"][t]
        by, st = cell["bytes_per_clip"], cell["cores"][MAIN_MODEL]["storage_mb_per_s_per_gpu"]
        for key, label in stored.items():
            lines.append(f"| {t} | {label} | {by[key] / 1024:,.0f} | {_f(st[key])} | {_f(st[key] * GPUS_PER_NODE)} |")
    lines += ["", "| T | sent to the GPU | bytes per clip (KB) | clips/s the link carries | "
              f"share of the link at `rdfer_{MAIN_MODEL}`'s clips/s |", "|---:|---|---:|---:|---:|"]
    for t in ts:
        cell = res["results"][t]
        by, link, cm = cell["bytes_per_clip"], cell["host_to_device"], cell["cores"][MAIN_MODEL]
        lines.append(f"| {t} | decoded uint8 (3, T, 112, 112) | {by['decoded_uint8'] / 1024:,.0f} | "
                     f"{_f(link['decoded_clips_per_s'])} | {cm['link_share_decoded']:.1%} |")
        lines.append(f"| {t} | JPEG bytes (GPU decode) | {by['jpeg_112'] / 1024:,.0f} | "
                     f"{_f(link['jpeg_clips_per_s'])} | {cm['link_share_jpeg']:.2%} |")
    lines += ["", "<!-- --8<-- [end:bandwidth] -->", ""]
    if res.get("device"):
        dv = res["device"]
        lines += ["## Measured on the device", "",
                  f"`{dv['name']}`, batch {dv['batch']}, wall-clock clips/s of the device; GPU share = the clips/s "
                  f"`rdfer_{MAIN_MODEL}` consumes at {g['utilisation']:.0%} / the stage's clips/s.", "",
                  "| T | stage | clips/s | share of the GPU's time |", "|---:|---|---:|---:|"]
        for t, stages in dv["results"].items():
            for name, r in stages.items():
                lines.append(f"| {t} | {name} | {_f(r['clips_per_s'])} | {r['gpu_share']:.1%} |")
        lines += [""]
    lines += [res["verdict"], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, nargs="+", default=[64, 16], help="T values (default 64 16)")
    p.add_argument("--clips", type=int, default=8, help="generated clips (default 8)")
    p.add_argument("--batch", type=int, default=16, help="batch of the transport and augmentation stages "
                   "(default 16: the paper's 128 on 8 GPUs)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="time each stage of a round for at least this long")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--device", choices=["cpu", "cuda"], help="also time GPU decode, augmentation and the copy on "
                   "this device (cpu: the same code as a smoke test)")
    p.add_argument("--scalability", type=Path, default=ROOT / "benchmarks" / "results" / "scalability.json",
                   help="FLOPs per video (benchmarks/scalability.py's JSON)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 clips, T = 16, batch 4, one 0.15 s round")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON and Markdown")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.frames, args.batch, args.rounds, args.min_seconds = 2, [16], 4, 1, 0.15
    command = "python benchmarks/feeding.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    cfg = TrainConfig()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    gpu = gpu_consumption(args.scalability.resolve())
    work = Path(tempfile.mkdtemp(prefix="rdfer_feeding_"))
    try:
        print(f"generating {args.clips} clips of {max(args.frames)} frames ...", flush=True)
        data = make_data(work, args.clips, max(args.frames))
        shards = {str(t): work / f"shard_{t}.tar" for t in args.frames}
        shard_bytes = {str(t): write_shard(shards[str(t)], data["jpeg112"], t) for t in args.frames}
        runs: Dict[str, Dict[str, List[Dict[str, float]]]] = {str(t): {n: [] for n in STAGES} for t in args.frames}
        for r in range(args.rounds):  # interleaved, so a change of load hits every stage alike
            for t in args.frames:
                for name in STAGES:
                    got = measure_stage(name, t, data, shards[str(t)], args.batch, args.min_seconds)
                    runs[str(t)][name].append(got)
                    print(f"round {r + 1} T={t:3d} {name:>22}: {got['clips_per_s']:9.1f} clips/s per core "
                          f"({got['wall_clips_per_s']:.1f} wall)", flush=True)
        per_t = {}
        for t, stages in runs.items():
            per_t[t] = {"stages": {}}
            for name, rs in stages.items():
                rates = sorted(x["clips_per_s"] for x in rs)
                per_t[t]["stages"][name] = {
                    "where": STAGES[name]["where"], "what": STAGES[name]["what"].format(batch=args.batch),
                    "cpu_stage": STAGES[name]["cpu_stage"],
                    "clips_per_s": float(np.median(rates)), "frames_per_s": float(np.median(rates)) * int(t),
                    "rounds": rates, "wall_clips_per_s": float(np.median([x["wall_clips_per_s"] for x in rs])),
                    "clips": sum(x["clips"] for x in rs)}
        device = None
        if args.device:
            name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({machine()['cpu']}; smoke test)"
            device = {"device": args.device, "name": name, "batch": args.batch, "results": {}}
            for t in args.frames:
                got = measure_device(args.device, t, data, args.batch, args.min_seconds)
                for r in got.values():
                    r["gpu_share"] = gpu["models"][MAIN_MODEL]["clips_per_s_main"] / r["clips_per_s"]
                device["results"][str(t)] = got
                print(f"device T={t}: " + ", ".join(f"{k} {v['clips_per_s']:.1f} clips/s" for k, v in got.items()),
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sizes = {"mean_jpeg_112_bytes": data["mean_jpeg_112_bytes"], "mean_jpeg_224_bytes": data["mean_jpeg_224_bytes"],
             "shard_bytes": shard_bytes, "clips": args.clips}
    results = plan(gpu, per_t, sizes)
    res = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "load_before": load_before,
        "recipe": {"num_frames": cfg.num_frames, "image_size": cfg.image_size, "batch_size": cfg.batch_size,
                   "augment": cfg.augment, "gpus_per_node": GPUS_PER_NODE},
        "data": {"clips": args.clips, "frames": max(args.frames), "mean_jpeg_224_bytes": data["mean_jpeg_224_bytes"],
                 "mean_jpeg_112_bytes": data["mean_jpeg_112_bytes"], "shard_bytes": shard_bytes},
        "batch": args.batch,
        "min_seconds": args.min_seconds,
        "rounds": args.rounds,
        "quick": args.quick,
        "gpu": gpu,
        "pipelines": PIPELINES,
        "results": results,
        "device": device,
    }
    res["verdict"] = summary(res)
    res["load_after"] = os.getloadavg()
    res["total_seconds"] = time.perf_counter() - t0
    # a smoke run or a device run never replaces the committed results
    stem = "feeding_quick" if args.quick else f"feeding_{args.device}" if args.device else "feeding"
    write_results(Path(args.out), stem, res, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
