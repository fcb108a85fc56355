"""Packed shards: decode a dataset once into uint8 frames, then train with no image decoding.

``pack_dataset`` keeps up to ``num_frames`` frames per video, spread uniformly
(:func:`~rdfer.data.eval_indices` over the source frames; shorter videos keep all their frames),
resized to ``image_size``. :class:`PackedDataset` then picks ``T`` of the stored frames per item
with :func:`~rdfer.data.sample_indices`, so training still jitters.

On disk (``out_dir``)::

    index.json          format, version, classes, sizes, shards (file, bytes, sha256) and per
                        sample: shard, byte offset, n_frames, label, path, fps, source frame
                        numbers, valid (+ reason), replaced frames
    shard_00000.bin     raw uint8; sample k is (3, n_frames, S, S) at its offset (channel-first,
    shard_00001.bin     so T frames are one strided gather into a (C, T, H, W) video)

Packing is resumable: a shard is written to a temporary file and renamed when complete, and the
index is then rewritten atomically, so after an interruption (even ``kill -9``) a re-run keeps
every completed shard and continues from the first sample after them. The index is written first
(empty), so a folder without one that holds files named like shards is someone else's: refused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .collate import VideoItems
from .decode import BadInputWarning, bad_input_report
from .sampling import eval_indices, sample_indices
from .sources import check_source

__all__ = ["pack_dataset", "PackedDataset", "PACK_FORMAT", "PACK_VERSION"]

PACK_FORMAT = "rdfer-packed"
PACK_VERSION = 1
INDEX = "index.json"

PathLike = Union[str, "os.PathLike[str]"]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sha256(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


def _shard_name(k: int) -> str:
    return f"shard_{k:05d}.bin"


_SHARD_FILE = re.compile(r"shard_\d{5,}\.bin(\.tmp)?")  # what pack_dataset names its shards


def keep_uniform(num_frames: int, n: int) -> torch.Tensor:
    """The frames a pack keeps of a video of ``n``: up to ``num_frames``, spread uniformly."""
    return eval_indices(n, min(n, num_frames))


def resume_progress(out: Path, done: int, total: int, progress: bool, shard_file: "re.Pattern[str]"):
    """Delete the leftovers of an interrupted shard or index write in ``out`` (``shard_file``
    matches the writer's shard names and their ``.tmp``; no other file is touched); a tqdm bar at
    ``done`` of ``total``."""
    from tqdm.auto import tqdm

    for tmp in out.glob("*.tmp"):
        if tmp.name == INDEX + ".tmp" or shard_file.fullmatch(tmp.name):
            tmp.unlink()
    return tqdm(total=total, initial=done, desc=f"pack {out.name}", unit="video", disable=not progress)


def check_fresh(out: Path, shard_file: "re.Pattern[str]") -> None:
    """Refuse to pack into ``out`` (which has no pack index) when it already holds files named like
    the writer's shards (``shard_file``): they are not a pack rdfer can resume, and would be
    overwritten. A one-line ValueError naming them; nothing is touched."""
    found = sorted(p.name for p in out.iterdir() if shard_file.fullmatch(p.name))
    if found:
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        raise ValueError(f"{out} holds {', '.join(found[:3])}{more} (named like this pack's shards) but no {INDEX} "
                         f"of a pack in progress: they are not rdfer's to overwrite; move them or choose another "
                         f"output folder")


def check_resumable(out: Path, diff: Sequence[str], done: Sequence[Any], sources: Sequence[Any],
                    shards: Sequence[Tuple[Path, int]]) -> None:
    """Refuse to continue the pack in ``out`` unless it was made with the same settings (``diff``:
    the names of those that differ) from the same first videos (``done`` = ``sources[:len(done)]``)
    and each completed shard file is there at its recorded size."""
    if diff or list(done) != list(sources[: len(done)]):
        what = f"different {', '.join(diff)}" if diff else "different videos"
        raise ValueError(f"{out} already holds a pack of another source or settings ({what}); "
                         "delete it or choose another output folder")
    for path, size in shards:
        if not path.is_file() or path.stat().st_size != size:
            raise ValueError(f"{path}: shard missing or of the wrong size; delete {out} and pack again")


def pack_dataset(dataset: Dataset, out_dir: PathLike, num_frames: int = 64, image_size: int = 112,
                 progress: bool = True, shard_size: int = 256) -> Path:
    """Pack ``dataset`` (DFEW, FERV39K, VideoCSV or any dataset with ``samples``, ``classes`` and
    ``read_clip``) into ``out_dir``; returns ``out_dir``.

    Args:
        dataset: the source; its own ``num_frames``/``image_size``/``train`` are not used.
        out_dir: created if needed. If it holds an unfinished pack of the same source and
            settings, packing resumes after its last completed shard; a finished one is left
            as is. A pack of a different source or settings is an error (nothing is touched).
        num_frames: frames kept per video (at most; shorter videos keep all theirs).
        image_size: stored frame side in pixels.
        progress: tqdm progress bar.
        shard_size: videos per shard file (a shard is the unit of resumption; 256 videos of
            64 x 112 px frames are ~600 MB).

    Unreadable source videos are stored as invalid (no frames) and come back ``valid=False``.
    """

    if num_frames < 1 or image_size < 1 or shard_size < 1:
        raise ValueError("num_frames, image_size and shard_size must be >= 1")
    if not hasattr(dataset, "read_clip"):
        raise TypeError(f"cannot pack {type(dataset).__name__}: it has no read_clip(index, select, size) "
                        "(DFEW, FERV39K and VideoCSV have)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources: List[Tuple[str, int]] = [(str(p), int(y)) for p, y in dataset.samples]
    header = {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "source": type(dataset).__name__,
        "classes": list(dataset.classes),
        "num_frames": int(num_frames),
        "image_size": int(image_size),
        "shard_size": int(shard_size),
        "num_samples": len(sources),
        "layout": "per sample uint8 (C=3, n_frames, image_size, image_size), C-contiguous at its byte offset",
        # How the faces were cropped from raw video (rdfer pack --crop-faces), else None; training records it.
        "face_crop": getattr(dataset, "face_crop", None),
    }
    index_path = out / INDEX
    shards: List[Dict[str, Any]] = []
    records: List[Dict[str, Any]] = []
    if index_path.exists():
        try:
            old = json.loads(index_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{index_path} is not a pack index ({err}); delete it or choose another output "
                             f"folder") from None
        old = old if isinstance(old, dict) else {}
        diff = [k for k, v in header.items() if k != "source" and old.get(k) != v]
        shards, records = old.get("shards", []), old.get("samples", [])
        try:
            check_resumable(out, diff, [(r["path"], r["label"]) for r in records], sources,
                            [(out / s["file"], s["bytes"]) for s in shards])
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{index_path} is not a pack index rdfer can resume; delete the folder or choose "
                             f"another output folder") from None
        if old.get("complete"):
            return out
    else:
        check_fresh(out, _SHARD_FILE)
        # The index first: from now on the folder is recognisably a pack in progress, so a crash
        # that leaves a finished shard behind never makes it look like someone else's files.
        _atomic_write_json(index_path, {**header, "complete": False, "shards": [], "samples": []})
    start = len(records)
    bar = resume_progress(out, start, len(sources), progress, _SHARD_FILE)
    select = functools.partial(keep_uniform, num_frames)
    try:
        while start < len(sources) or not shards:
            k = len(shards)
            name = _shard_name(k)
            tmp = out / (name + ".tmp")
            h, offset, batch = hashlib.sha256(), 0, []
            with open(tmp, "wb") as f:
                for i in range(start, min(start + shard_size, len(sources))):
                    path, label = sources[i]
                    clip = dataset.read_clip(i, select, image_size)
                    rec: Dict[str, Any] = {"shard": k, "offset": offset, "n_frames": 0, "label": label,
                                           "path": path, "fps": None, "frame_index": [], "valid": False}
                    if clip is None:
                        rec["reason"] = getattr(dataset, "bad_samples", {}).get(path, "unreadable")
                    else:
                        data = np.ascontiguousarray(clip.frames.transpose(3, 0, 1, 2)).tobytes()
                        f.write(data)
                        h.update(data)
                        rec.update(n_frames=int(clip.frames.shape[0]), fps=clip.fps, valid=True,
                                   frame_index=[int(x) for x in clip.frame_index.tolist()])
                        if clip.replaced:
                            rec["replaced"] = [list(p) for p in clip.replaced]
                        offset += len(data)
                    batch.append(rec)
                    bar.update(1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out / name)  # the shard exists under its name only when complete
            shards.append({"file": name, "bytes": offset, "sha256": h.hexdigest(), "num_samples": len(batch)})
            records.extend(batch)
            start += len(batch)
            _atomic_write_json(index_path, {**header, "complete": start >= len(sources), "shards": shards,
                                            "samples": records})
    finally:
        bar.close()
    return out


class PackedDataset(VideoItems):
    """A pack written by :func:`pack_dataset` (``rdfer pack``): no image decoding when loading.

    Items have the usual format (``video`` uint8 ``(3, T, S, S)``, ``label``, ``index``, ``path``
    (the source video), ``frame_index`` (``(T,)`` *source* frame numbers), ``fps``, ``valid``);
    ``T`` of the stored frames are picked with :func:`~rdfer.data.sample_indices`, so
    ``train=True`` still jitters. With ``num_frames`` equal to the packed count and
    ``train=False`` an item equals the source dataset's eval item.

    Args:
        root: the pack folder.
        num_frames: ``T`` (default: the packed count). More than the packed count is an error
            (it would only repeat frames): pack again with more frames.
        train: jittered (True) or centred (False) frame sampling.
        verify: check every shard's size and sha256 on open (reads the whole pack once);
            a mismatch raises ValueError naming the shard file.

    Attributes ``classes``, ``labels``, ``samples``, ``num_frames``, ``image_size`` (the packed
    size), ``train``, ``bad_samples`` and ``replaced_frames`` (as recorded while packing).
    """

    def __init__(self, root: PathLike, num_frames: Optional[int] = None, train: bool = False, verify: bool = True):
        self.root = Path(root)
        index_path = self.root / INDEX
        if not index_path.is_file():
            raise FileNotFoundError(f"not a pack (no {INDEX}): {self.root}")
        meta = json.loads(index_path.read_text(encoding="utf-8"))
        if meta.get("format") != PACK_FORMAT or meta.get("version") != PACK_VERSION:
            raise ValueError(f"{index_path}: not a {PACK_FORMAT} v{PACK_VERSION} index "
                             f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
        if not meta.get("complete"):
            raise ValueError(f"{self.root}: the pack is incomplete ({len(meta['samples'])} of {meta['num_samples']} "
                             "videos); run the same `rdfer pack` command again to finish it")
        self.stored_frames = int(meta["num_frames"])
        self.num_frames = self.stored_frames if num_frames is None else int(num_frames)
        if not 1 <= self.num_frames <= self.stored_frames:
            raise ValueError(f"{self.root} stores up to {self.stored_frames} frames per video; num_frames="
                             f"{self.num_frames} is not in 1..{self.stored_frames} (pack again with more frames)")
        self.image_size = int(meta["image_size"])
        self.face_crop = meta.get("face_crop")  # rdfer pack --crop-faces: the framing applied
        self.train = bool(train)
        self.classes: List[str] = list(meta["classes"])
        self._shards: List[Dict[str, Any]] = meta["shards"]
        self._records: List[Dict[str, Any]] = meta["samples"]
        self.samples: List[Tuple[str, int]] = [(r["path"], int(r["label"])) for r in self._records]
        self.labels: List[int] = [y for _, y in self.samples]
        self.bad_samples: Dict[str, str] = {r["path"]: r.get("reason", "unreadable")
                                            for r in self._records if not r["valid"]}
        self.replaced_frames: Dict[str, List[Tuple[str, str]]] = {
            r["path"]: [tuple(p) for p in r["replaced"]] for r in self._records if r.get("replaced")}
        # Tensors, not lists of Python ints: ~10x less memory, copied into every DataLoader worker.
        self._frame_index = [torch.tensor(r.pop("frame_index"), dtype=torch.long) for r in self._records]
        self._maps: Dict[int, np.ndarray] = {}
        for s in self._shards:
            # Data is never code, nor a pointer elsewhere: an index names its own shards only.
            check_source(s.get("file"), "index", index=str(index_path))
            path = self.root / s["file"]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shard missing from the pack")
            if path.stat().st_size != s["bytes"]:
                raise ValueError(f"{path}: corrupt shard ({path.stat().st_size} bytes, the index says {s['bytes']}); "
                                 "pack again")
            if verify and _sha256(path) != s["sha256"]:
                raise ValueError(f"{path}: corrupt shard (sha256 mismatch); pack again, or open with verify=False "
                                 "to read it anyway")
        if self.bad_samples or self.replaced_frames:
            warnings.warn(f"{self.root}: {len(self.bad_samples)} unreadable video(s) (valid=False) and "
                          f"{sum(map(len, self.replaced_frames.values()))} replaced frame(s) recorded while packing; "
                          "see bad_sample_report()", BadInputWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self._records)

    def __getstate__(self) -> Dict[str, Any]:
        # Memory maps are per process: DataLoader workers re-open them (pickling would copy the data).
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def _shard(self, k: int) -> np.ndarray:
        mm = self._maps.get(k)
        if mm is None:
            mm = np.memmap(self.root / self._shards[k]["file"], dtype=np.uint8, mode="r")
            self._maps[k] = mm
        return mm

    def _item(self, index: int, out: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self._records):
            raise IndexError(f"index {index} out of range for {len(self._records)} samples")
        r = self._records[index]
        t, s = self.num_frames, self.image_size
        video = torch.empty((3, t, s, s), dtype=torch.uint8) if out is None else out
        if not r["valid"]:
            video.zero_()
            return dict(video=video, label=int(r["label"]), index=index, path=r["path"],
                        frame_index=torch.zeros(t, dtype=torch.long), fps=r["fps"], valid=False)
        n = int(r["n_frames"])
        pick = sample_indices(n, t, self.train)
        stored = self._shard(r["shard"])[r["offset"]: r["offset"] + 3 * n * s * s].reshape(3, n, s, s)
        # mode="clip": the picks are in range by construction, and "raise" would gather via a temporary
        np.take(stored, pick.numpy(), axis=1, out=video.numpy(), mode="clip")
        return dict(video=video, label=int(r["label"]), index=index, path=r["path"],
                    frame_index=self._frame_index[index][pick], fps=r["fps"], valid=True)

    def bad_sample_report(self) -> str:
        """Unreadable videos and replaced frames recorded while packing ('' when none)."""
        return bad_input_report(self.bad_samples, self.replaced_frames)

    def __repr__(self) -> str:
        return (f"PackedDataset({str(self.root)!r}, {len(self)} videos, {len(self.classes)} classes, "
                f"num_frames={self.num_frames} of {self.stored_frames} stored, image_size={self.image_size}, "
                f"train={self.train})")
