"""WebDataset shards: the field's standard tar format, read from disk, over HTTP or from any command.

Writing (:func:`write_webdataset`, ``rdfer pack --format webdataset``) stores one sample per video::

    KEY.json          label, class, classes, path (the source video), fps, n_frames, frame_index
                      (source frame numbers), valid (+ reason, replaced)
    KEY.000.jpg ...   the stored frames: up to num_frames spread uniformly, image_size px, JPEG

in ``shard-000000.tar``, ``shard-000001.tar``, ... (plain tar, so ``tar``, the ``webdataset``
library and any WebDataset tool read them), plus ``index.json``: the shard list in the
``wids-shard-index-v1`` format of the webdataset project, with rdfer's per-sample records
(key, label, path, frames), so training needs no pass over the data to know the labels.
Shards are written to a temporary name and renamed when complete; an interrupted pack resumes.

Reading (:class:`WebDatasetVideos`, ``rdfer train webdataset --train SHARDS``): SHARDS is a brace
pattern (``shards/train-{000000..000009}.tar``), ``::``-separated URLs, ``pipe:COMMAND``,
``http(s)://`` URLs (through ``curl``), or a pack folder / ``index.json`` (local or URL). The
``webdataset`` library opens the streams and groups tar members into samples. Which shard goes to
which process is planned here, because the library's ``split_by_node``/``split_by_worker`` give
every (rank, worker) whole shards: sample counts then differ between ranks, and a rank that runs
out early deadlocks DDP. Instead, every epoch:

1. the shards are put in a seeded order (a new permutation each epoch when training);
2. the samples, in that order, are cut into ``ranks x workers`` contiguous runs of equal length
   (+-1): each (rank, worker) streams only the shards its run touches, and skips (never
   decodes) the samples of its neighbours in the two shards it may share;
3. a run one shorter than the others starts with one padding item (``pad=True``,
   ``valid=False``), so every rank takes the same number of steps and sees each sample once;
4. within a run, samples pass through a seeded shuffle buffer.

Items are those of every rdfer dataset (``video``, ``label``, ``index``, ``path``,
``frame_index``, ``fps``, ``valid``) plus ``key`` and ``pad``; ``index`` is the sample's
position in the shard list (shards in the given order, samples in tar order), so the agreement
loss's per-sample memory is kept per sample key. With ``decode_on_device=True`` the workers
ship the picked frames' JPEG bytes instead (``jpeg``, ``jpeg_offsets``) and
:func:`batch_videos` decodes them in the training process with
``torchvision.io.decode_jpeg`` on the training device (the GPU's nvJPEG under CUDA).
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .packed import _atomic_write_json, _fsync_dir, check_resumable, keep_uniform, resume_progress
from .sampling import sample_indices

__all__ = ["write_webdataset", "WebDatasetVideos", "batch_videos", "expand_shards", "WDS_FORMAT", "WDS_VERSION"]

WDS_FORMAT = "rdfer-webdataset"
WDS_VERSION = 1
INDEX = "index.json"
_WIDS_KIND = "wids-shard-index-v1"

PathLike = Union[str, "os.PathLike[str]"]


def _shard_name(k: int) -> str:
    return f"shard-{k:06d}.tar"


def _frame_member(j: int) -> str:
    return f"{j:03d}.jpg"


# --------------------------------------------------------------------------- writing

def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444  # mtime 0: the same pack gives the same bytes
    info.uname = info.gname = "rdfer"
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(dataset, out_dir: PathLike, num_frames: int = 64, image_size: int = 112,
                     shard_size: int = 256, quality: int = 90, progress: bool = True) -> Path:
    """Write ``dataset`` (DFEW, FERV39K, VideoCSV or any dataset with ``samples``, ``classes`` and
    ``read_clip``) as WebDataset shards into ``out_dir``; returns ``out_dir``.

    Args:
        dataset: the source; its own ``num_frames``/``image_size``/``train`` are not used.
        out_dir: created if needed. An unfinished pack of the same source and settings resumes
            after its last complete shard; a finished one is left as is; a pack of another
            source or settings is an error (nothing is touched).
        num_frames: frames kept per video (at most; shorter videos keep all theirs).
        image_size: stored frame side in pixels.
        shard_size: videos per shard (the unit of resumption and of streaming).
        quality: JPEG quality of the stored frames (1-100).
        progress: tqdm progress bar.

    Unreadable source videos are stored as samples with ``valid: false`` and no frames.
    """
    import simplejpeg

    if num_frames < 1 or image_size < 1 or shard_size < 1:
        raise ValueError("num_frames, image_size and shard_size must be >= 1")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality {quality} is not in 1..100")
    if not hasattr(dataset, "read_clip"):
        raise TypeError(f"cannot pack {type(dataset).__name__}: it has no read_clip(index, select, size) "
                        "(DFEW, FERV39K and VideoCSV have)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = [str(c) for c in dataset.classes]
    sources = [[str(p), int(y)] for p, y in dataset.samples]
    settings = {"format": WDS_FORMAT, "version": WDS_VERSION, "classes": classes, "num_frames": int(num_frames),
                "image_size": int(image_size), "shard_size": int(shard_size), "quality": int(quality),
                "num_samples": len(sources)}
    index_path = out / INDEX
    shardlist: List[Dict[str, Any]] = []
    records: List[Dict[str, Any]] = []
    if index_path.exists():
        old = json.loads(index_path.read_text(encoding="utf-8"))
        meta = old.get("rdfer", {})
        shardlist, records = old.get("shardlist", []), meta.get("samples", [])
        check_resumable(out, [k for k, v in settings.items() if meta.get(k) != v],
                        [[r["path"], r["label"]] for r in records], sources,
                        [(out / s["url"], s["filesize"]) for s in shardlist])
        if meta.get("complete"):
            return out
    start = len(records)
    bar = resume_progress(out, start, len(sources), progress)
    select = functools.partial(keep_uniform, num_frames)
    try:
        while start < len(sources) or not shardlist:
            k = len(shardlist)
            name = _shard_name(k)
            tmp = out / (name + ".tmp")
            batch: List[Dict[str, Any]] = []
            with open(tmp, "wb") as f:
                with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                    for i in range(start, min(start + shard_size, len(sources))):
                        path, label = sources[i]
                        key = f"{i:08d}"
                        clip = dataset.read_clip(i, select, image_size)
                        meta: Dict[str, Any] = {"label": label, "class": classes[label] if 0 <= label < len(classes)
                                                else None, "classes": classes, "path": path, "fps": None,
                                                "n_frames": 0, "frame_index": [], "valid": False}
                        if clip is None:
                            meta["reason"] = getattr(dataset, "bad_samples", {}).get(path, "unreadable")
                        else:
                            meta.update(n_frames=int(clip.frames.shape[0]), fps=clip.fps, valid=True,
                                        frame_index=[int(x) for x in clip.frame_index.tolist()])
                            if clip.replaced:
                                meta["replaced"] = [list(p) for p in clip.replaced]
                        _tar_add(tar, f"{key}.json", json.dumps(meta, separators=(",", ":")).encode())
                        if clip is not None:
                            for j, frame in enumerate(clip.frames):
                                jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=quality,
                                                              colorspace="RGB")
                                _tar_add(tar, f"{key}.{_frame_member(j)}", jpeg)
                        batch.append({"key": key, "label": label, "path": path, "n_frames": meta["n_frames"],
                                      "valid": meta["valid"]})
                        bar.update(1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out / name)  # the shard exists under its name only when complete
            _fsync_dir(out)
            shardlist.append({"url": name, "nsamples": len(batch), "filesize": (out / name).stat().st_size})
            records.extend({**r, "shard": k} for r in batch)
            start += len(batch)
            _atomic_write_json(index_path, {
                "__kind__": _WIDS_KIND, "wids_version": 1, "name": out.name, "shardlist": shardlist,
                "rdfer": {**settings, "complete": start >= len(sources), "samples": records}})
    finally:
        bar.close()
    return out


# --------------------------------------------------------------------------- shard lists

def _is_url(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


def _join(base: str, name: str) -> str:
    if _is_url(name) or os.path.isabs(name):
        return name
    if "://" in base:
        return base.rsplit("/", 1)[0] + "/" + name
    return str(Path(base).parent / name)


def _read_bytes(url: str) -> bytes:
    from webdataset.gopen import gopen

    with gopen(url, "rb") as stream:
        return stream.read()


def expand_shards(spec: Union[str, Sequence[str]]) -> Tuple[List[str], Optional[Dict[str, Any]]]:
    """``(shard URLs, index)`` for a shard spec: a brace pattern, ``::``-separated URLs,
    ``pipe:`` commands, http(s) URLs, a list of these, or a pack folder / ``index.json``
    (local or URL; its relative shard names resolve against its location). ``index`` is
    the parsed ``index.json`` when one was given, else None."""
    from webdataset.shardlists import expand_urls

    if not isinstance(spec, str):
        return [u for s in spec for u in expand_shards(s)[0]], None
    if not _is_url(spec) and Path(spec).is_dir():
        spec = str(Path(spec) / INDEX)
    if spec.endswith(".json") and not spec.startswith("pipe:"):
        if not _is_url(spec) and not Path(spec).is_file():
            raise FileNotFoundError(f"shard index not found: {spec}")
        try:
            index = json.loads(_read_bytes(spec))
        except (OSError, ValueError) as err:
            raise ValueError(f"{spec}: cannot read the shard index: {err}") from None
        if index.get("__kind__") != _WIDS_KIND or not isinstance(index.get("shardlist"), list):
            raise ValueError(f"{spec}: not a WebDataset shard index ({_WIDS_KIND})")
        return [_join(spec, s["url"]) for s in index["shardlist"]], index
    urls = expand_urls(spec)
    missing = [u for u in urls if not _is_url(u) and not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) of {spec!r} not found, e.g. {missing[0]}")
    return urls, None


def _split_name(fname: str) -> Tuple[Optional[str], str]:
    from webdataset.tariterators import base_plus_ext

    key, ext = base_plus_ext(fname)
    return key, (ext or "").lower()


def _members(url: str, select=None) -> Iterator[Tuple[str, str, bytes]]:
    """``(key, extension, bytes)`` of the tar members of one shard, in order."""
    from webdataset.gopen import gopen
    from webdataset.tariterators import tar_file_iterator

    if url.startswith(("http://", "https://")) and shutil.which("curl") is None:
        raise RuntimeError(f"{url}: http(s) shards are read through `curl`, which is not installed")
    stream = gopen(url, "rb")
    try:
        for member in tar_file_iterator(stream, select_files=select):
            key, ext = _split_name(member["fname"])
            if key is not None:
                yield key, ext, member["data"]
    finally:
        stream.close()


def _scan(url: str) -> List[Dict[str, Any]]:
    """The sample records of one shard, from its ``.json`` members (the frames are not kept)."""
    records = []
    try:
        for key, ext, data in _members(url, select=lambda f: f.endswith(".json")):
            if ext != "json":
                continue
            meta = json.loads(data)
            if not isinstance(meta, dict) or not isinstance(meta.get("label"), int):
                raise ValueError(f"sample {key!r}: its .json has no integer 'label'")
            records.append({"key": key, "label": meta["label"], "path": str(meta.get("path") or key),
                            "n_frames": int(meta.get("n_frames", 0)), "valid": bool(meta.get("valid", True)),
                            "classes": meta.get("classes")})
    except (OSError, ValueError, tarfile.TarError) as err:
        raise ValueError(f"{url}: cannot read the shard: {err}") from None
    return records


# --------------------------------------------------------------------------- reading

class WebDatasetVideos(IterableDataset):
    """WebDataset shards as a stream of rdfer video items, each sample once per epoch over every
    rank and DataLoader worker (see the module docstring for the plan).

    Args:
        shards: see :func:`expand_shards`.
        num_frames: ``T`` picked of the stored frames per item (default: the pack's count, from
            ``index.json``, else required).
        train: jittered frame sampling and a new shard order and shuffle each epoch.
        seed: seeds the shard orders and shuffle buffers (epoch by epoch, see :meth:`set_epoch`).
        shuffle_buffer: samples held per worker for shuffling (training only).
        decode_on_device: ship JPEG bytes, decode with :func:`batch_videos` in the training process.

    Attributes ``classes``, ``labels``, ``samples`` (source path, label; index order),
    ``keys``, ``num_frames``, ``image_size`` (the stored size), ``urls``.
    """

    def __init__(self, shards: Union[str, Sequence[str]], num_frames: Optional[int] = None, train: bool = False,
                 seed: int = 0, shuffle_buffer: int = 64, decode_on_device: bool = False):
        self.spec = shards
        self.urls, index = expand_shards(shards)
        if not self.urls:
            raise ValueError(f"no shards in {shards!r}")
        if index is not None and index.get("rdfer", {}).get("format") == WDS_FORMAT:
            meta = index["rdfer"]
            if not meta.get("complete"):
                raise ValueError(f"{shards}: the pack is incomplete; run the same `rdfer pack` command again to "
                                 "finish it")
            per_shard: List[List[Dict[str, Any]]] = [[] for _ in self.urls]
            for r in meta["samples"]:
                per_shard[r["shard"]].append(r)
            classes, stored, size = list(meta["classes"]), int(meta["num_frames"]), int(meta["image_size"])
        else:  # any WebDataset: one pass over the .json members for the labels
            per_shard = [_scan(u) for u in self.urls]
            found = {tuple(r["classes"]) for s in per_shard for r in s if r.get("classes")}
            if len(found) > 1:
                raise ValueError(f"the shards of {shards!r} disagree on the class list: {sorted(found)}")
            classes = list(found.pop()) if found else None
            for shard in per_shard:
                for r in shard:
                    r.pop("classes", None)
            stored, size = max((r["n_frames"] for s in per_shard for r in s), default=0), None
        self._records = [r for s in per_shard for r in s]
        if not self._records:
            raise ValueError(f"the shards of {shards!r} hold no sample")
        self._shard_of = [k for k, s in enumerate(per_shard) for _ in s]
        self._shard_start = np.cumsum([0] + [len(s) for s in per_shard]).tolist()
        labels = [int(r["label"]) for r in self._records]
        self.classes: List[str] = classes or [str(c) for c in range(max(labels) + 1)]
        self.stored_frames = stored
        self.num_frames = int(num_frames if num_frames is not None else stored)
        if not 1 <= self.num_frames <= max(stored, 1):
            raise ValueError(f"{shards} stores up to {stored} frames per video; num_frames={self.num_frames} is not "
                             f"in 1..{stored} (pack again with more frames)")
        self.image_size = size if size is not None else self._probe_size()
        self.train = bool(train)
        self.seed, self.shuffle_buffer, self.decode_on_device = int(seed), int(shuffle_buffer), bool(decode_on_device)
        self.epoch, self.rank, self.world = 0, 0, 1
        self.kept: Optional[List[int]] = None  # a validation carve-out keeps these indices only
        self.keys = [r["key"] for r in self._records]
        self.bad_samples = {r["path"]: "unreadable when packed" for r in self._records if not r["valid"]}

    # ---- what the engine reads
    def _indices(self) -> List[int]:
        return list(range(len(self._records))) if self.kept is None else self.kept

    @property
    def labels(self) -> List[int]:
        return [int(self._records[i]["label"]) for i in self._indices()]

    @property
    def samples(self) -> List[Tuple[str, int]]:
        return [(self._records[i]["path"], int(self._records[i]["label"])) for i in self._indices()]

    def __len__(self) -> int:
        return len(self._records) if self.kept is None else len(self.kept)

    def subset(self, indices: Sequence[int]) -> "WebDatasetVideos":
        """A view keeping only ``indices`` (items keep their index): the validation carve-out."""
        import copy

        view = copy.copy(self)
        view.kept = sorted(int(i) for i in indices)
        return view

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose shard order and shuffle the next iteration uses."""
        self.epoch = int(epoch)

    def shard_over(self, rank: int, world: int) -> None:
        """This process's rank among ``world`` (set by the engine before its DataLoader starts)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        self.rank, self.world = int(rank), int(world)

    def batches_per_rank(self, batch_size: int, workers: int) -> int:
        """Batches one rank's DataLoader yields per epoch (the same on every rank). Training under
        several processes, a ValueError when the split would give a rank a batch of padding only
        (every rank skips a step that one rank cannot take, so the other ranks' samples of that
        step would go untrained); alone, or evaluating, such a batch is merely skipped."""
        slots = self.world * max(1, workers)
        n = len(self)
        target = math.ceil(n / slots)
        if self.train and self.world > 1 and n % slots and (batch_size < 2 or n // slots < 1):
            raise ValueError(f"{n} videos cannot be split evenly over {self.world} process(es) x {max(1, workers)} "
                             f"loader worker(s) at batch {batch_size}: use fewer --workers or a larger batch")
        return max(1, workers) * math.ceil(target / batch_size)

    # ---- the plan
    def plan(self, slots: int) -> List[Tuple[bool, List[Tuple[int, List[int]]]]]:
        """Per slot (``rank * workers + worker``): whether it starts with a padding item, and its
        ``(shard, [indices])`` in reading order, for the current epoch."""
        order = list(range(len(self.urls)))
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(len(order), generator=g).tolist()
        keep = None if self.kept is None else set(self.kept)
        sequence = [i for k in order for i in range(self._shard_start[k], self._shard_start[k + 1])
                    if keep is None or i in keep]
        n = len(sequence)
        base, extra = divmod(n, slots)
        plans, at = [], 0
        for s in range(slots):
            length = base + (s < extra)
            run = sequence[at: at + length]
            at += length
            parts: List[Tuple[int, List[int]]] = []
            for i in run:
                k = self._shard_of[i]
                if parts and parts[-1][0] == k:
                    parts[-1][1].append(i)
                else:
                    parts.append((k, [i]))
            plans.append((bool(extra) and s >= extra, parts))
        return plans

    # ---- iteration
    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        slot = self.rank * workers + worker
        pad, parts = self.plan(self.world * workers)[slot]
        if pad:
            yield self._pad_item()
        stream = self._stream(parts)
        if self.train and self.shuffle_buffer > 1:
            rng = np.random.default_rng([self.seed, self.epoch, slot])
            stream = _shuffled(stream, self.shuffle_buffer, rng)
        for index, sample in stream:
            yield self._item(index, sample)

    def _stream(self, parts: List[Tuple[int, List[int]]]) -> Iterator[Tuple[int, Dict[str, bytes]]]:
        for k, indices in parts:
            wanted = {self._records[i]["key"]: i for i in indices}
            url, found = self.urls[k], set()
            current: Optional[str] = None
            sample: Dict[str, bytes] = {}
            try:
                for key, ext, data in _members(url, select=lambda f: _split_name(f)[0] in wanted):
                    if key != current:
                        if current is not None:
                            found.add(current)
                            yield wanted[current], sample
                        current, sample = key, {}
                    sample[ext] = data
            except (OSError, tarfile.TarError) as err:
                raise RuntimeError(f"{url}: reading the shard failed: {err}") from None
            if current is not None:
                found.add(current)
                yield wanted[current], sample
            if len(found) != len(wanted):
                lost = sorted(set(wanted) - found)
                raise RuntimeError(f"{url}: {len(lost)} sample(s) listed for this shard are not in it (e.g. "
                                   f"{lost[0]!r}); the shard changed since its index was written: pack again")

    def __getitem__(self, index: int) -> Dict[str, Any]:
        """One item by index, read from its shard up to the sample (a stream has no random access:
        for the few videos that ``rdfer audit --html`` and ``rdfer analyze`` show, not for training)."""
        index = int(index)
        if not 0 <= index < len(self._records):
            raise IndexError(f"index {index} out of range for {len(self._records)} samples")
        k = self._shard_of[index]
        for found, sample in self._stream([(k, [index])]):
            return self._item(found, sample)
        raise RuntimeError(f"{self.urls[k]}: sample {self._records[index]['key']!r} not found")

    def _pad_item(self) -> Dict[str, Any]:
        return self._invalid(dict(label=0, index=-1, path="", fps=None, key="", pad=True))

    def _invalid(self, item: Dict[str, Any]) -> Dict[str, Any]:
        """``item`` completed as a sample with nothing to read (``valid=False``): zero frames, or no JPEG bytes."""
        t, s = self.num_frames, self.image_size
        if self.decode_on_device:
            video = dict(jpeg=torch.zeros(0, dtype=torch.uint8), jpeg_offsets=torch.zeros(t + 1, dtype=torch.long))
        else:
            video = dict(video=torch.zeros((3, t, s, s), dtype=torch.uint8))
        return {**item, **video, "frame_index": torch.zeros(t, dtype=torch.long), "valid": False}

    def _item(self, index: int, sample: Dict[str, bytes]) -> Dict[str, Any]:
        import simplejpeg

        rec = self._records[index]
        t, s = self.num_frames, self.image_size
        try:
            meta = json.loads(sample["json"])
        except (KeyError, ValueError):
            meta = {"valid": False}
        item = dict(label=int(rec["label"]), index=index, path=rec["path"], fps=meta.get("fps"), key=rec["key"],
                    pad=False)
        n = int(meta.get("n_frames", 0))
        names = [_frame_member(j) for j in range(n)]
        if not meta.get("valid", False) or n < 1 or any(name not in sample for name in names):
            return self._invalid(item)
        pick = sample_indices(n, t, self.train)
        source_frames = meta.get("frame_index") or list(range(n))
        item["frame_index"] = torch.as_tensor(source_frames, dtype=torch.long)[pick]
        if self.decode_on_device:
            chunks = [sample[names[j]] for j in pick.tolist()]
            offsets = np.cumsum([0] + [len(c) for c in chunks])
            return {**item, "jpeg": torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8),
                    "jpeg_offsets": torch.as_tensor(offsets, dtype=torch.long), "valid": True}
        video = torch.empty((3, t, s, s), dtype=torch.uint8)
        decoded: Dict[int, np.ndarray] = {}
        try:
            for slot, j in enumerate(pick.tolist()):
                if j not in decoded:  # short videos repeat frames: decode each once
                    decoded[j] = simplejpeg.decode_jpeg(sample[names[j]], colorspace="RGB")
                    if decoded[j].shape != (s, s, 3):
                        raise ValueError(f"frame {j} is {decoded[j].shape[1]}x{decoded[j].shape[0]}, not {s}x{s}")
                video[:, slot] = torch.from_numpy(decoded[j]).permute(2, 0, 1)
        except ValueError:  # a damaged JPEG: the sample is excluded and reported, the run goes on
            return self._invalid(item)
        return {**item, "video": video, "valid": True}

    def _probe_size(self) -> int:
        """The stored frame size, from the first valid sample's first frame (shards without an index)."""
        import simplejpeg

        for k, url in enumerate(self.urls):
            if any(r["valid"] for r in self._records[self._shard_start[k]: self._shard_start[k + 1]]):
                for _, ext, data in _members(url):
                    if ext.endswith(".jpg") or ext.endswith(".jpeg"):
                        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
                        if h != w:
                            raise ValueError(f"{url}: frames are {w}x{h}; rdfer reads square frames")
                        return int(h)
        raise ValueError(f"{self.spec}: no sample has frames")

    def __repr__(self) -> str:
        return (f"WebDatasetVideos({self.spec!r}, {len(self)} videos in {len(self.urls)} shards, "
                f"{len(self.classes)} classes, num_frames={self.num_frames}, image_size={self.image_size}, "
                f"train={self.train})")


def _shuffled(stream, size: int, rng: np.random.Generator):
    buffer: List[Any] = []
    for x in stream:
        buffer.append(x)
        if len(buffer) >= size:
            k = int(rng.integers(len(buffer)))
            buffer[k], buffer[-1] = buffer[-1], buffer[k]
            yield buffer.pop()
    while buffer:
        k = int(rng.integers(len(buffer)))
        buffer[k], buffer[-1] = buffer[-1], buffer[k]
        yield buffer.pop()


def batch_videos(batch: Dict[str, Any], keep: torch.Tensor, device: Union[str, torch.device]) -> torch.Tensor:
    """The uint8 ``(B', 3, T, H, W)`` videos of the items ``keep`` selects (bool ``(B,)``), on
    ``device``: ``batch["video"]`` moved there, or, for a batch of JPEG bytes
    (``decode_on_device``), decoded there by ``torchvision.io.decode_jpeg`` in one call."""
    if "video" in batch:
        return batch["video"][keep].to(device, non_blocking=True)
    from torchvision.io import decode_jpeg

    rows = keep.nonzero().squeeze(1).tolist()
    jpegs, offsets = batch["jpeg"], torch.as_tensor(batch["jpeg_offsets"])
    t = offsets.shape[1] - 1
    frames = [jpegs[r][int(offsets[r, j]): int(offsets[r, j + 1])] for r in rows for j in range(t)]
    if not frames:
        raise ValueError("batch_videos: no item selected")
    decoded = decode_jpeg(frames, device=device)
    video = torch.stack(decoded)  # (B' * T, 3, H, W)
    return video.view(len(rows), t, *video.shape[1:]).transpose(1, 2).contiguous()
