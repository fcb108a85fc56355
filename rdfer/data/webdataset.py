"""WebDataset shards: the field's standard tar format, read from disk, over HTTP or from any command.

Writing (:func:`write_webdataset`, ``rdfer pack --format webdataset``) stores one sample per video,
``KEY.json`` (label, class, classes, path (the source video), fps, n_frames, frame_index (source
frame numbers), valid (+ reason, replaced)) and its stored frames (up to num_frames spread
uniformly, image_size px) in one of three layouts (``layout=``, ``--layout``):

    clip (default)  KEY.mjpeg: the frames' JPEGs one after another in one member, their byte
                    lengths in the .json's ``frame_bytes``. A concatenation of baseline JPEGs is a
                    Motion-JPEG elementary stream: ``ffmpeg -f mjpeg -i KEY.mjpeg``, PyAV's
                    ``av.open(f, format="mjpeg")`` and players read it as a video.
    frames          KEY.000.jpg, KEY.001.jpg, ...: one JPEG member per frame (the only layout of
                    version-1 packs; for tools that expect one image per file). Slower to read:
                    every stored frame is a tar member to stream.
    npy             KEY.npy: the frames as one uint8 array (n, S, S, 3) in NumPy's .npy format,
                    not compressed: as large as a raw pack, nothing to decode (local disks).

in ``shard-000000.tar``, ``shard-000001.tar``, ... (plain tar, so ``tar``, the ``webdataset``
library and any WebDataset tool read them), plus ``index.json``: the shard list in the
``wids-shard-index-v1`` format of the webdataset project, with rdfer's per-sample records
(key, label, path, frames) and settings (``layout``; an index of version 1 has none: frames),
so training needs no pass over the data to know the labels.
The index is written first (empty), then each shard under a temporary name, renamed when
complete; an interrupted pack resumes (with the same settings, the layout included). A folder
without an index that already holds files named like shards is refused: they are not rdfer's
to overwrite.

Reading (:class:`WebDatasetVideos`, ``rdfer train webdataset --train SHARDS``): SHARDS is a brace
pattern (``shards/train-{000000..000009}.tar``, at most :data:`~rdfer.data.sources.MAX_SHARDS`
shards), ``::``-separated paths or ``http(s)://`` URLs, ``pipe:COMMAND`` (typed by the user only),
or a pack folder / ``index.json`` (local or URL). Data is never code
(:mod:`rdfer.data.sources`): a shard name inside an index is a plain name in the index's own
folder or URL prefix, never a URL, program, absolute path or ``..``, so a local index never
reaches the network and never runs anything; a ``.npy`` member is read as a header and raw
bytes, never unpickled. ``http(s)`` is read through :mod:`urllib`, each read waiting at most
``RDFER_NETWORK_TIMEOUT`` seconds (default 60). Each sample's layout is told by its members
(``mjpeg``, ``npy`` or ``NNN.jpg``), so shards of every layout read alike. The picked frames are
decoded once each (a short video repeats frames) with libjpeg-turbo (simplejpeg), at a reduced
DCT scale when items are asked smaller than stored (``image_size``), in a few threads outside
DataLoader workers, as the folder loader does (:mod:`rdfer.data.decode`).

What a shard holds is checked as it is read, and a bad file is a one-line :class:`ShardError`
(a ``ValueError``: ``rdfer`` exits 2) naming the shard or index and the sample key: a malformed
index; a local shard missing or of another size than its index records; a sample whose ``.json``
label, path or frame count differs from the index's (the shard changed since its index was
written: pack again); a key twice in one shard; a label that is not an integer, outside the
class list, or, without one, not in 0..999; more frames claimed than the shard holds. A
damaged frame only excludes its sample (``valid=False``, reported), as an unreadable video does;
so does a ``.mjpeg`` whose ``frame_bytes`` are not n positive lengths adding up to its size, and
a ``.npy`` that is not a uint8 (n, S, S, 3) array of the sample's frames.

Which shard goes to which process is planned here, because the library's
``split_by_node``/``split_by_worker`` give every (rank, worker) whole shards: sample counts then
differ between ranks, and a rank that runs out early deadlocks DDP. Instead, every epoch:

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
check each picked frame's JPEG header and ship its bytes instead (``jpeg``, ``jpeg_offsets``);
:func:`batch_videos` decodes them in the training process with ``torchvision.io.decode_jpeg``
on the training device (the GPU's nvJPEG under CUDA), and a video whose frames fail to decode
is excluded from the batch (``npy`` shards hold decoded frames: they have nothing to ship).
"""

from __future__ import annotations

import functools
import http.client
import io
import itertools
import json
import math
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .decode import _draft_scale, _thread_pool
from .packed import _atomic_write_json, _fsync_dir, check_fresh, check_resumable, keep_uniform, resume_progress
from .sampling import sample_indices
from .sources import check_source, expand_pattern, network_timeout, open_source, read_source, source_kind
from .video_csv import MAX_INTEGER_CLASSES, VideoCSV, check_class_names

__all__ = ["write_webdataset", "WebDatasetVideos", "batch_videos", "expand_shards", "ShardError", "WDS_FORMAT",
           "WDS_VERSION", "LAYOUTS"]

WDS_FORMAT = "rdfer-webdataset"
WDS_VERSION = 2  # 2: settings["layout"] (1: no layout key, every sample one member per frame)
#: How a sample's frames are stored: one Motion-JPEG member (the default), one JPEG member per
#: frame, or one uncompressed uint8 .npy array.
LAYOUTS = ("clip", "frames", "npy")
INDEX = "index.json"
_WIDS_KIND = "wids-shard-index-v1"
_SHARD_FILE = re.compile(r"shard-\d{6,}\.tar(\.tmp)?")  # what write_webdataset names its shards
# Sanity bounds on what a shard or index may claim, checked before anything of that size is built.
_MAX_FRAMES = 10_000  # frames stored per video
_MAX_IMAGE = 4096  # frame side in pixels
_MAX_MEMBER = 64 << 20  # bytes of one tar member (a frame, a sample's .json)

PathLike = Union[str, "os.PathLike[str]"]


class ShardError(ValueError):
    """A shard or shard index that cannot be used as it is (malformed, missing, changed since its
    index was written): one line naming the file and, where there is one, the sample key."""

    def __init__(self, message: str) -> None:
        # Raised in a DataLoader worker, PyTorch re-raises it in the training process as
        # ShardError("Caught ShardError in DataLoader worker process 0.\nOriginal Traceback ...
        # ShardError: <message>"): keep the original line, so the command line still shows one.
        if message.startswith("Caught ") and "\nOriginal Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


def _shard_name(k: int) -> str:
    return f"shard-{k:06d}.tar"


def _frame_member(j: int) -> str:
    return f"{j:03d}.jpg"


def _layout_of(sample: Dict[str, Any]) -> str:
    """The layout of one sample, told by its members (a .mjpeg, a .npy, else frame members)."""
    return "clip" if "mjpeg" in sample else "npy" if "npy" in sample else "frames"


def _npy_header(data: bytes) -> Optional[Tuple[Tuple[int, ...], np.dtype, bool, int]]:
    """``(shape, dtype, fortran_order, data offset)`` from a .npy member's header, None when it has
    none. Only the header is parsed (a literal, as NumPy does): nothing is unpickled."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
    except Exception:  # any malformed header (ValueError, SyntaxError, TypeError, ...): not a .npy
        return None
    return tuple(int(x) for x in shape), dtype, bool(fortran), f.tell()


def _npy_frames(data: bytes) -> Optional[np.ndarray]:
    """The uint8 ``(n, H, W, 3)`` array of a .npy member, a read-only view of ``data`` (no copy),
    or None when it is not one: another dtype (an object array's pickle is never read), another
    rank, or a body of another length than its header says."""
    head = _npy_header(data)
    if head is None:
        return None
    shape, dtype, fortran, offset = head
    if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or min(shape) < 0 or \
            len(data) - offset != math.prod(shape):
        return None
    flat = np.frombuffer(data, dtype=np.uint8, offset=offset)
    return flat.reshape(shape[::-1]).transpose() if fortran else flat.reshape(shape)


def _clip_frames(meta: Dict[str, Any], data: bytes, n: int) -> Optional[List[memoryview]]:
    """The ``n`` JPEGs of a .mjpeg member, sliced (no copies) by the .json's ``frame_bytes``; None
    when those are not ``n`` positive lengths adding up to the member's size."""
    sizes = meta.get("frame_bytes")
    if not (isinstance(sizes, list) and len(sizes) == n and all(type(b) is int and b > 0 for b in sizes)
            and sum(sizes) == len(data)):  # type(b) is int: JSON true is not the length 1
        return None
    whole = memoryview(data)
    return [whole[end - b: end] for b, end in zip(sizes, itertools.accumulate(sizes))]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not the label 1


# --------------------------------------------------------------------------- writing

def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444  # mtime 0: the same pack gives the same bytes
    info.uname = info.gname = "rdfer"
    tar.addfile(info, io.BytesIO(data))


def _index_doc(out: Path, shardlist: List[Dict[str, Any]], meta: Dict[str, Any]) -> Dict[str, Any]:
    return {"__kind__": _WIDS_KIND, "wids_version": 1, "name": out.name, "shardlist": shardlist, "rdfer": meta}


def _frame_members(frames: np.ndarray, layout: str, quality: int) -> Tuple[List[Tuple[str, bytes]], Dict[str, Any]]:
    """The tar members (name after ``KEY.``, bytes) storing ``frames`` (uint8 ``(n, S, S, 3)``) in
    ``layout``, and what the sample's .json records of them."""
    import simplejpeg

    if layout == "npy":
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(frames, dtype=np.uint8), allow_pickle=False)
        return [("npy", buf.getvalue())], {}
    jpegs = [simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=quality, colorspace="RGB") for frame in frames]
    if layout == "frames":
        return [(_frame_member(j), jpeg) for j, jpeg in enumerate(jpegs)], {}
    return [("mjpeg", b"".join(jpegs))], {"frame_bytes": [len(jpeg) for jpeg in jpegs]}


def write_webdataset(dataset, out_dir: PathLike, num_frames: int = 64, image_size: int = 112,
                     shard_size: int = 256, quality: int = 90, progress: bool = True, layout: str = "clip") -> Path:
    """Write ``dataset`` (DFEW, FERV39K, VideoCSV or any dataset with ``samples``, ``classes`` and
    ``read_clip``) as WebDataset shards into ``out_dir``; returns ``out_dir``.

    Args:
        dataset: the source; its own ``num_frames``/``image_size``/``train`` are not used.
        out_dir: created if needed. An unfinished pack of the same source and settings resumes
            after its last complete shard; a finished one is left as is; a pack of another
            source or settings, or files named like shards without a pack index, is an error
            (nothing is touched).
        num_frames: frames kept per video (at most; shorter videos keep all theirs).
        image_size: stored frame side in pixels.
        shard_size: videos per shard (the unit of resumption and of streaming).
        quality: JPEG quality of the stored frames (1-100; not used by ``layout="npy"``).
        progress: tqdm progress bar.
        layout: how a video's frames are stored (see the module docstring): ``"clip"``, one
            Motion-JPEG member ``KEY.mjpeg`` (fastest JPEG layout to read; the default);
            ``"frames"``, one JPEG member per frame (``KEY.000.jpg``, ...); ``"npy"``, one
            uncompressed uint8 array ``KEY.npy`` (no decoding, as large as a raw pack).

    Unreadable source videos are stored as samples with ``valid: false`` and no frames.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if num_frames < 1 or image_size < 1 or shard_size < 1:
        raise ValueError("num_frames, image_size and shard_size must be >= 1")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality {quality} is not in 1..100")
    if layout == "npy" and num_frames * image_size * image_size * 3 + 128 > _MAX_MEMBER:
        raise ValueError(f"layout npy: {num_frames} frames of {image_size} px are "
                         f"{num_frames * image_size * image_size * 3 / 2**20:.0f} MB per video, more than the "
                         f"{_MAX_MEMBER >> 20} MB a tar member may have; use layout clip, or fewer or smaller frames")
    if not hasattr(dataset, "read_clip"):
        raise TypeError(f"cannot pack {type(dataset).__name__}: it has no read_clip(index, select, size) "
                        "(DFEW, FERV39K and VideoCSV have)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = [str(c) for c in dataset.classes]
    sources = [[str(p), int(y)] for p, y in dataset.samples]
    settings = {"format": WDS_FORMAT, "version": WDS_VERSION, "classes": classes, "num_frames": int(num_frames),
                "image_size": int(image_size), "shard_size": int(shard_size), "quality": int(quality),
                "num_samples": len(sources), "face_crop": getattr(dataset, "face_crop", None), "layout": layout}
    index_path = out / INDEX
    shardlist: List[Dict[str, Any]] = []
    records: List[Dict[str, Any]] = []
    if index_path.exists():
        try:
            old = json.loads(index_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{index_path} is not a pack index ({err}); delete it or choose another output "
                             f"folder") from None
        meta = old.get("rdfer") if isinstance(old, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        shardlist, records = old.get("shardlist", []) if meta else [], meta.get("samples", [])
        done = dict(meta)
        if done.get("version") == 1 and "layout" not in done:  # version 2 only added the layout
            done.update(version=WDS_VERSION, layout="frames")
        try:
            check_resumable(out, [k for k, v in settings.items() if done.get(k) != v],
                            [[r["path"], r["label"]] for r in records], sources,
                            [(out / s["url"], s["filesize"]) for s in shardlist])
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{index_path} is not a pack index rdfer can resume; delete the folder or choose "
                             f"another output folder") from None
        if meta.get("complete"):
            return out
    else:
        check_fresh(out, _SHARD_FILE)
        # The index first: from now on the folder is recognisably a pack in progress, so a crash
        # that leaves a finished shard behind never makes it look like someone else's files.
        _atomic_write_json(index_path, _index_doc(out, [], {**settings, "complete": False, "samples": []}))
    start = len(records)
    bar = resume_progress(out, start, len(sources), progress, _SHARD_FILE)
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
                        members: List[Tuple[str, bytes]] = []
                        if clip is not None:
                            members, recorded = _frame_members(clip.frames, layout, quality)
                            meta.update(recorded)
                        _tar_add(tar, f"{key}.json", json.dumps(meta, separators=(",", ":")).encode())
                        for ext, data in members:
                            _tar_add(tar, f"{key}.{ext}", data)
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
            _atomic_write_json(index_path, _index_doc(out, shardlist, {**settings, "complete": start >= len(sources),
                                                                       "samples": records}))
    finally:
        bar.close()
    return out


# --------------------------------------------------------------------------- shard lists

def _local_path(spec: str) -> Optional[Path]:
    """The file a local source names (a path or ``file://``), None for a URL or a program."""
    if source_kind(spec) != "local":
        return None
    return Path(spec[len("file://"):] if spec.startswith("file://") else spec)


def _index_location(spec: Union[str, Sequence[str]]) -> Optional[str]:
    """The ``index.json`` a shard spec names (itself, or inside a pack folder), None for shards."""
    if not isinstance(spec, str):
        return None
    local = _local_path(spec)
    if local is not None and local.is_dir():
        return str(local / INDEX)
    return spec if spec.endswith(".json") and source_kind(spec) != "program" else None


def _read_index(spec: str) -> Dict[str, Any]:
    """The parsed shard index at ``spec`` (checked by the caller), or a one-line error naming it."""
    local = _local_path(spec)
    if local is not None and not local.is_file():
        raise FileNotFoundError(f"shard index not found: {spec}")
    raw = read_source(spec)  # a URL's errors and timeouts name it already
    try:
        index = json.loads(raw)
    except ValueError as err:
        raise ShardError(f"{spec}: not a shard index (not JSON: {err})") from None
    if not isinstance(index, dict) or index.get("__kind__") != _WIDS_KIND or not isinstance(index.get("shardlist"),
                                                                                             list):
        raise ShardError(f"{spec}: not a WebDataset shard index ({_WIDS_KIND}: a JSON object with a shardlist)")
    return index


def expand_shards(spec: Union[str, Sequence[str]], origin: str = "user") -> Tuple[List[str], Optional[Dict[str, Any]]]:
    """``(shard sources, index)`` for a shard spec: a brace pattern, ``::``-separated paths or
    URLs, ``pipe:`` commands, a list of these, or a pack folder / ``index.json`` (local or URL;
    its shard names are plain names joined to its own folder or URL prefix). ``origin`` is where
    the spec came from (``"user"``: typed for this run, anything goes; ``"config"``: a file, which
    may name paths and http(s) URLs but no program), see :func:`rdfer.data.sources.check_source`.
    ``index`` is the parsed ``index.json`` when one was given, else None."""
    if origin not in ("user", "config"):
        raise ValueError(f"origin {origin!r} is not 'user' or 'config'")
    if not isinstance(spec, str):
        return [u for s in spec for u in expand_shards(s, origin)[0]], None
    location = _index_location(spec)
    if location is not None:
        spec = check_source(location, origin, "the shard index")
        index = _read_index(spec)
        # Data is never code: an index names its own shards, next to it, and nothing else.
        urls = [check_source(s.get("url") if isinstance(s, dict) else s, "index", index=spec)
                for s in index["shardlist"]]
        return urls, index
    urls = expand_pattern(spec, origin, "the shards")
    missing = [u for u in urls if (p := _local_path(u)) is not None and not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) of {spec!r} not found, e.g. {missing[0]}")
    return urls, None


def _split_name(fname: str) -> Tuple[Optional[str], str]:
    from webdataset.tariterators import base_plus_ext

    key, ext = base_plus_ext(fname)
    return key, (ext or "").lower()


def _read_failed(url: str, err: BaseException) -> ShardError:
    """The one-line error for a shard that could not be read (``err`` may name the URL already)."""
    if isinstance(err, TimeoutError):
        text = f"the server stopped answering for {network_timeout():g} s (RDFER_NETWORK_TIMEOUT sets the limit)"
    else:
        text = " ".join(str(err).split()) or type(err).__name__
        text = text[len(url) + 2:] if text.startswith(f"{url}: ") else text
    return ShardError(f"{url}: cannot read the shard: {text}")


def _members(url: str, select: Optional[Callable[[str], bool]] = None) -> Iterator[Tuple[str, str, bytes]]:
    """``(key, extension, bytes)`` of the tar members of one shard, in order (those ``select``
    accepts by name); any failure to open or read it, a stalled server included, is a
    :class:`ShardError` naming the shard."""
    try:
        stream = open_source(url)
    except (OSError, ValueError) as err:
        raise _read_failed(url, err) from None
    # A local file is read with seeks: the data of a member not selected is skipped, not read, and a
    # selected one is read in one call (a stream goes through tarfile's 10 KB blocks: an npy clip
    # reads 1.8x faster this way). HTTP and pipes are streams.
    mode = "r:*" if source_kind(url) == "local" else "r|*"
    try:
        with tarfile.open(fileobj=stream, mode=mode) as tar:
            for info in tar:
                name = info.name
                key, ext = _split_name(name)
                tar.members = []  # keep no list of what was read
                if not info.isreg() or key is None or re.match(r"__[^/]*__($|/)", name) or \
                        (select is not None and not select(name)):
                    continue
                if info.size > _MAX_MEMBER:  # read whole below: a claimed size is not an allocation
                    raise ShardError(f"{url}: cannot read the shard: member {name!r} is {info.size} bytes, "
                                     f"more than {_MAX_MEMBER >> 20} MB")
                data = tar.extractfile(info).read()
                yield key, ext, data
        stream.close()  # a pipe: its command's exit status is checked here
    except ShardError:
        raise
    except (OSError, EOFError, tarfile.TarError, http.client.HTTPException, ValueError) as err:
        raise _read_failed(url, err) from None
    finally:
        try:
            stream.close()  # again after an error or an early stop: only to free it, its error is reported
        except Exception:
            pass


def _label_problem(label: Any, classes: Optional[Sequence[str]]) -> Optional[str]:
    """Why ``label`` is no label of this data (None when it is one): an int (``true``, ``1.7``,
    ``"1"`` are not coerced), a position in ``classes``, or without them a class number below
    1000 (as in a CSV: a label of 10^9 would otherwise make a billion class names)."""
    if not _is_int(label):
        return f"has no integer 'label' (found {str(label)[:50]!r})"
    top = len(classes) if classes else MAX_INTEGER_CLASSES
    if not 0 <= label < top:
        where = (f"the {top} classes of its class list" if classes else
                 f"0..{top - 1} (without a class list, labels are class numbers below {top}, as in a CSV)")
        return f"has label {label}, not in {where}"
    return None


def _scan(url: str) -> List[Dict[str, Any]]:
    """The sample records of one shard, from its ``.json`` members (the frames are counted, not
    kept: frame members, a .mjpeg's ``frame_bytes`` entries, a .npy header's first dimension),
    each with the ``layout`` its members tell."""
    records: List[Dict[str, Any]] = []
    frames: Dict[str, int] = {}  # per key: frame members, or the frames a .npy header holds
    clips: set = set()  # keys with a .mjpeg: its frames are counted by their .json's frame_bytes
    npys: set = set()

    def select(name: str) -> bool:
        key, ext = _split_name(name)
        if re.fullmatch(r"\d{3,}\.jpg", ext):
            frames[key] = frames.get(key, 0) + 1
        elif ext == "mjpeg":
            clips.add(key)
        return ext in ("json", "npy")

    seen = set()
    for key, ext, data in _members(url, select):
        if ext == "npy":  # its header only: what the array holds is checked when the sample is read
            head = _npy_header(data)
            npys.add(key)
            frames[key] = head[0][0] if head is not None and len(head[0]) == 4 and head[0][0] <= _MAX_FRAMES else 0
            continue
        if key in seen:
            raise ShardError(f"{url}: the sample key {key!r} appears twice in the shard; keys must be unique "
                             f"(one sample would be trained twice and another never)")
        try:
            meta = json.loads(data)
        except ValueError as err:
            raise ShardError(f"{url}: cannot read the shard: sample {key!r}: its .json is not JSON ({err})") from None
        if not isinstance(meta, dict):
            raise ShardError(f"{url}: cannot read the shard: sample {key!r}: its .json is not a JSON object")
        classes = meta.get("classes")
        if classes is not None:
            if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
                raise ShardError(f"{url}: sample {key!r}: its 'classes' is not a list of names")
            try:
                classes = check_class_names(classes, f"{url}: sample {key!r}: its class list")
            except ValueError as err:
                raise ShardError(str(err)) from None
        problem = _label_problem(meta.get("label"), classes)
        if problem:
            raise ShardError(f"{url}: cannot read the shard: sample {key!r}: its .json {problem}")
        n = meta.get("n_frames", 0)
        if not _is_int(n) or n < 0:
            raise ShardError(f"{url}: sample {key!r}: its n_frames {str(n)[:50]!r} is not a frame count")
        seen.add(key)
        sizes = meta.get("frame_bytes")
        records.append({"key": key, "label": meta["label"], "path": str(meta.get("path") or key), "n_frames": n,
                        "valid": bool(meta.get("valid", True)), "classes": classes,
                        "claimed": len(sizes) if isinstance(sizes, list) and len(sizes) <= _MAX_FRAMES else 0})
    for r in records:  # the members are all read now: a claimed frame count is bounded by the frames there
        key, claimed = r["key"], r.pop("claimed")
        r["layout"] = "clip" if key in clips else "npy" if key in npys else "frames"
        have = claimed if r["layout"] == "clip" else frames.get(key, 0)
        if r["n_frames"] > have:
            raise ShardError(f"{url}: sample {r['key']!r}: its .json says n_frames={r['n_frames']} but the shard "
                             f"holds {have} frame(s) of it")
    return records


def _index_records(spec: str, index: Dict[str, Any], urls: Sequence[str]
                   ) -> Tuple[List[List[Dict[str, Any]]], List[str], int, int]:
    """``(records per shard, classes, stored frames, image size)`` of an rdfer pack's index, each
    value checked before it sizes anything: a malformed index is a :class:`ShardError` naming it."""
    meta = index["rdfer"]

    def bad(what: str) -> ShardError:
        return ShardError(f"{spec}: malformed shard index: {what}")

    classes = meta.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad("'classes' is not a list of names")
    try:
        classes = check_class_names(classes, "its class list")
    except ValueError as err:
        raise bad(str(err)) from None
    stored, size = meta.get("num_frames"), meta.get("image_size")
    if not (_is_int(stored) and 1 <= stored <= _MAX_FRAMES):
        raise bad(f"num_frames {str(stored)[:50]!r} is not in 1..{_MAX_FRAMES}")
    if not (_is_int(size) and 1 <= size <= _MAX_IMAGE):
        raise bad(f"image_size {str(size)[:50]!r} is not in 1..{_MAX_IMAGE}")
    if meta.get("layout", "frames") not in LAYOUTS:
        raise bad(f"layout {str(meta.get('layout'))[:50]!r} is not one of {', '.join(LAYOUTS)} (a pack of a newer "
                  f"rdfer?)")
    samples = meta.get("samples")
    if not isinstance(samples, list):
        raise bad("'samples' is not a list")
    per_shard: List[List[Dict[str, Any]]] = [[] for _ in urls]
    keys: List[set] = [set() for _ in urls]
    for i, r in enumerate(samples):
        key = r.get("key") if isinstance(r, dict) else None
        if not isinstance(key, str) or not key:
            raise bad(f"sample {i} has no key")
        shard, n = r.get("shard"), r.get("n_frames")
        if not (_is_int(shard) and 0 <= shard < len(urls)):
            raise bad(f"sample {key!r}: shard {str(shard)[:50]!r} is not in 0..{len(urls) - 1}")
        problem = _label_problem(r.get("label"), classes)
        if problem:
            raise bad(f"sample {key!r} {problem}")
        if not (_is_int(n) and 0 <= n <= stored):
            raise bad(f"sample {key!r}: n_frames {str(n)[:50]!r} is not in 0..{stored}")
        if not isinstance(r.get("path"), str) or not isinstance(r.get("valid"), bool):
            raise bad(f"sample {key!r}: no path or valid flag")
        if key in keys[shard]:
            raise ShardError(f"{spec}: the sample key {key!r} is listed twice for {urls[shard]}; keys must be unique "
                             f"(one sample would be trained twice and another never)")
        keys[shard].add(key)
        per_shard[shard].append({"key": key, "label": r["label"], "path": r["path"], "n_frames": n,
                                 "valid": r["valid"]})
    for k, s in enumerate(index["shardlist"]):
        listed = s.get("nsamples") if isinstance(s, dict) else None
        if listed is not None and listed != len(per_shard[k]):
            raise bad(f"{urls[k]} has nsamples {str(listed)[:50]} but {len(per_shard[k])} sample records")
    return per_shard, classes, stored, size


def _check_local_shards(spec: str, index: Dict[str, Any], urls: Sequence[str]) -> None:
    """Every local shard of an index there, at the size the index records (a truncated or
    replaced shard is found before training, not mid-epoch)."""
    for url, s in zip(urls, index["shardlist"]):
        path = _local_path(url)
        if path is None:
            continue
        if not path.is_file():
            raise FileNotFoundError(f"{url}: shard missing (listed in {spec})")
        size, have = s.get("filesize") if isinstance(s, dict) else None, path.stat().st_size
        if _is_int(size) and have != size:
            raise ShardError(f"{url}: {have} bytes but its index says {size}: the shard changed since its index was "
                             f"written (truncated or replaced): pack again")


# --------------------------------------------------------------------------- reading

class WebDatasetVideos(IterableDataset):
    """WebDataset shards as a stream of rdfer video items, each sample once per epoch over every
    rank and DataLoader worker (see the module docstring for the plan and the checks).

    Args:
        shards: see :func:`expand_shards`.
        num_frames: ``T`` picked of the stored frames per item (default: the pack's count, from
            ``index.json``, else required).
        train: jittered frame sampling and a new shard order and shuffle each epoch.
        seed: seeds the shard orders and shuffle buffers (epoch by epoch, see :meth:`set_epoch`).
        shuffle_buffer: samples held per worker for shuffling (training only).
        decode_on_device: ship JPEG bytes, decode with :func:`batch_videos` in the training process
            (not for ``npy`` shards: their frames are decoded already).
        origin: where ``shards`` came from: ``"user"`` (typed for this run) or ``"config"`` (a
            file: no ``pipe:`` or other program), see :func:`expand_shards`.
        image_size: frame side of the items (default: the stored size). Smaller than stored, JPEGs
            are decoded at libjpeg-turbo's reduced DCT scale (a 224 px pack read at 112 px decodes
            at half scale, no resize), the rest resized bilinear, as the folder loader does; not
            with ``decode_on_device``.
        decode_threads: threads decoding one item's JPEG frames. Default (None): 1 inside
            DataLoader workers (they decode in parallel already), else one per core up to 4
            (the folder loader's rule, :class:`~rdfer.data.VideoCSV`).

    Attributes ``classes``, ``labels``, ``samples`` (source path, label; index order),
    ``keys``, ``num_frames``, ``image_size`` (the items'), ``stored_size`` (the shards'), ``layout``
    (the index's, or the one layout of every scanned sample; None when they differ), ``urls``.
    """

    def __init__(self, shards: Union[str, Sequence[str]], num_frames: Optional[int] = None, train: bool = False,
                 seed: int = 0, shuffle_buffer: int = 64, decode_on_device: bool = False, origin: str = "user",
                 image_size: Optional[int] = None, decode_threads: Optional[int] = None):
        if image_size is not None and not (_is_int(image_size) and 1 <= image_size <= _MAX_IMAGE):
            raise ValueError(f"image_size {image_size!r} is not in 1..{_MAX_IMAGE}")
        if decode_threads is not None and decode_threads < 1:
            raise ValueError(f"decode_threads must be >= 1 or None, got {decode_threads}")
        self.spec = shards
        self.urls, index = expand_shards(shards, origin)
        if not self.urls:
            raise ValueError(f"no shards in {shards!r}")
        meta = index.get("rdfer") if index is not None else None
        where = str(_index_location(shards))  # the file that index errors name
        if index is not None:
            _check_local_shards(where, index, self.urls)
        if isinstance(meta, dict) and meta.get("format") == WDS_FORMAT:
            if not meta.get("complete"):
                raise ValueError(f"{shards}: the pack is incomplete; run the same `rdfer pack` command again to "
                                 "finish it")
            per_shard, classes, stored, size = _index_records(where, index, self.urls)
            layouts = {meta.get("layout", "frames")}
        else:  # any WebDataset: one pass over the .json members for the labels
            per_shard = [_scan(u) for u in self.urls]
            layouts = {r["layout"] for s in per_shard for r in s if r["valid"]}
            found = {tuple(r["classes"]) for s in per_shard for r in s if r.get("classes")}
            if len(found) > 1:
                raise ShardError(f"the shards of {shards!r} disagree on the class list: {sorted(found)}")
            classes = list(found.pop()) if found else None
            for url, shard in zip(self.urls, per_shard):
                for r in shard:
                    del r["layout"]  # told again by each sample's members when it is read
                    if r.pop("classes", None) is None and classes:  # checked against 0..999 only when scanned
                        problem = _label_problem(r["label"], classes)
                        if problem:
                            raise ShardError(f"{url}: sample {r['key']!r}: its .json {problem}")
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
        self.layout: Optional[str] = layouts.pop() if len(layouts) == 1 else None
        if decode_on_device and self.layout == "npy":
            raise ValueError(f"{shards}: npy shards hold decoded frames: nothing to decode on the device (drop "
                             f"--decode-on-device, or pack with --layout clip)")
        self.stored_size = size if size is not None else self._probe_size()
        self.image_size = self.stored_size if image_size is None else int(image_size)
        if decode_on_device and self.image_size != self.stored_size:
            raise ValueError(f"{shards}: decode_on_device decodes the stored {self.stored_size} px frames; "
                             f"image_size={self.image_size} needs decoding here")
        self.decode_threads = decode_threads
        self.face_crop = meta.get("face_crop") if isinstance(meta, dict) else None  # rdfer pack --crop-faces
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
            for key, ext, data in _members(url, select=lambda f: _split_name(f)[0] in wanted):
                if key != current:
                    if current is not None:
                        found.add(current)
                        yield wanted[current], sample
                    if key in found:  # its members apart, or the key twice: never one sample twice
                        raise ShardError(f"{url}: the sample key {key!r} appears twice in the shard; keys must be "
                                         f"unique: the shard changed since its index was written: pack again")
                    current, sample = key, {}
                if ext in sample:
                    raise ShardError(f"{url}: sample {key!r} has two {ext!r} members: the shard changed since its "
                                     f"index was written: pack again")
                sample[ext] = data
            if current is not None:
                found.add(current)
                yield wanted[current], sample
            if len(found) != len(wanted):
                lost = sorted(set(wanted) - found)
                raise ShardError(f"{url}: {len(lost)} sample(s) listed for this shard are not in it (e.g. "
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
        raise ShardError(f"{self.urls[k]}: sample {self._records[index]['key']!r} not found")

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

    def _check_unchanged(self, index: int, meta: Dict[str, Any]) -> None:
        """The sample's ``.json`` says what its record (index or scan) says: a shard edited or
        swapped after its index was written never trains on the index's labels silently."""
        rec = self._records[index]
        seen = {"label": meta.get("label"), "path": str(meta.get("path") or rec["key"]),
                "n_frames": meta.get("n_frames", 0), "valid": bool(meta.get("valid", True))}
        for field, value in seen.items():
            if value != rec[field] or type(value) is not type(rec[field]):
                raise ShardError(f"{self.urls[self._shard_of[index]]}: sample {rec['key']!r}: its .json {field} "
                                 f"{str(value)[:80]!r} is not the index's {str(rec[field])[:80]!r}: the shard changed "
                                 f"since its index was written: pack again")

    # The folder loader's rule: one thread inside DataLoader workers, else one per core up to 4.
    _threads = VideoCSV._threads

    def _item(self, index: int, sample: Dict[str, bytes]) -> Dict[str, Any]:
        import simplejpeg

        rec = self._records[index]
        t, s, stored = self.num_frames, self.image_size, self.stored_size
        try:
            meta = json.loads(sample["json"])
        except (KeyError, ValueError):
            meta = None
        item = dict(label=int(rec["label"]), index=index, path=rec["path"], fps=None, key=rec["key"], pad=False)
        if not isinstance(meta, dict):
            return self._invalid(item)
        self._check_unchanged(index, meta)
        item["fps"] = meta.get("fps")
        n = rec["n_frames"]  # checked: at most the frames the shard held when it was indexed or scanned
        if not rec["valid"] or n < 1:
            return self._invalid(item)
        layout = _layout_of(sample)
        if layout == "npy":
            array = None if self.decode_on_device else _npy_frames(sample["npy"])
            if array is None or array.shape != (n, stored, stored, 3):
                return self._invalid(item)  # not uint8 (n, S, S, 3), or decode_on_device: nothing to ship
        elif layout == "clip":
            jpegs = _clip_frames(meta, sample["mjpeg"], n)
        else:
            jpegs = [sample.get(_frame_member(j)) for j in range(n)]
            jpegs = None if any(jpeg is None for jpeg in jpegs) else jpegs
        if layout != "npy" and jpegs is None:
            return self._invalid(item)
        pick = sample_indices(n, t, self.train)
        source_frames = meta.get("frame_index")
        if not (isinstance(source_frames, list) and len(source_frames) == n and all(map(_is_int, source_frames))):
            source_frames = list(range(n))
        item["frame_index"] = torch.as_tensor(source_frames, dtype=torch.long)[pick]
        picks = pick.tolist()
        if self.decode_on_device:
            chunks = [jpegs[j] for j in picks]
            try:  # the header here, the rest on the device: a frame that cannot be read excludes its video
                for j in set(picks):
                    h, w, colour, _ = simplejpeg.decode_jpeg_header(jpegs[j])
                    if (h, w) != (s, s) or colour not in _COLOURS:
                        return self._invalid(item)
            except ValueError:
                return self._invalid(item)
            offsets = np.cumsum([0] + [len(c) for c in chunks])
            return {**item, "jpeg": torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8),
                    "jpeg_offsets": torch.as_tensor(offsets, dtype=torch.long), "valid": True}
        video = torch.empty((3, t, s, s), dtype=torch.uint8)
        if layout == "npy" and s == stored:
            np.copyto(video.numpy(), array[picks].transpose(3, 0, 1, 2))
            return {**item, "video": video, "valid": True}
        distinct = list(dict.fromkeys(picks))  # short videos repeat frames: each decoded once
        if layout == "npy":
            frames = np.stack([_resize(array[j], s) for j in distinct])
        else:
            frames = self._decode(jpegs, distinct)
            if frames is None:  # a damaged JPEG: the sample is excluded and reported, the run goes on
                return self._invalid(item)
        if len(distinct) < len(picks):
            row = {j: r for r, j in enumerate(distinct)}
            frames = frames[[row[j] for j in picks]]
        np.copyto(video.numpy(), frames.transpose(3, 0, 1, 2))
        return {**item, "video": video, "valid": True}

    def _decode(self, jpegs: Sequence[Any], wanted: List[int]) -> Optional[np.ndarray]:
        """JPEGs ``wanted`` (distinct) of ``jpegs`` decoded into one uint8 ``(len(wanted), S, S, 3)``
        array (in this process's decoding threads), or None when one of them cannot be."""
        out = np.empty((len(wanted), self.image_size, self.image_size, 3), dtype=np.uint8)

        def decode(rows: List[int]) -> bool:
            try:
                for r in rows:
                    _decode_jpeg(jpegs[wanted[r]], self.stored_size, self.image_size, out[r])
            except ValueError:
                return False
            return True

        threads = self._threads()
        if threads < 2 or len(wanted) < 2:
            return out if decode(list(range(len(wanted)))) else None
        shares = [list(range(k, len(wanted), threads)) for k in range(min(threads, len(wanted)))]  # a task a thread
        return out if all(list(_thread_pool(threads).map(decode, shares))) else None

    def _probe_size(self) -> int:
        """The stored frame size, from the first readable frame of a valid sample (shards without an
        index): a JPEG's header (the first of a .mjpeg) or a .npy array's; a damaged one is skipped,
        as training skips its sample."""
        import simplejpeg

        def select(name: str) -> bool:
            return name.lower().endswith((".jpg", ".jpeg", ".mjpeg", ".npy"))

        for k, url in enumerate(self.urls):
            if any(r["valid"] for r in self._records[self._shard_start[k]: self._shard_start[k + 1]]):
                for _, ext, data in _members(url, select=select):
                    if ext == "npy":
                        array = _npy_frames(data)
                        if array is None:
                            continue
                        h, w = array.shape[1:3]
                    else:
                        try:
                            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
                        except ValueError:
                            continue
                    if h != w or not 1 <= h <= _MAX_IMAGE:
                        raise ShardError(f"{url}: frames are {w}x{h}; rdfer reads square frames of up to "
                                         f"{_MAX_IMAGE} px")
                    return int(h)
        raise ValueError(f"{self.spec}: no sample has a readable frame")

    def __repr__(self) -> str:
        return (f"WebDatasetVideos({self.spec!r}, {len(self)} videos in {len(self.urls)} shards, "
                f"{len(self.classes)} classes, num_frames={self.num_frames}, image_size={self.image_size}, "
                f"train={self.train})")


_COLOURS = ("YCbCr", "RGB", "Gray")  # what libjpeg-turbo turns into RGB as nvJPEG and Pillow do (not CMYK)


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(size, size, 3)``, bilinear (as :func:`rdfer.data.decode.load_frame`)."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))


def _decode_jpeg(data: Any, stored: int, size: int, out: np.ndarray) -> None:
    """Decode one stored frame (a ``stored`` px square JPEG, else ValueError) into ``out``
    (``(size, size, 3)`` RGB) with libjpeg-turbo: straight into ``out`` at the stored size, else at
    the smallest DCT scale that still gives ``size`` px (the folder loader's rule,
    :func:`rdfer.data.decode.load_frame`), resized bilinear when the size still differs."""
    import simplejpeg

    h, w, colour, _ = simplejpeg.decode_jpeg_header(data)
    if (h, w) != (stored, stored) or colour not in _COLOURS:
        raise ValueError(f"a {w}x{h} {colour} frame, not {stored}x{stored}")
    if size == stored:
        simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False, buffer=out)
        return
    scale = _draft_scale(w, h, size)
    rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False,
                                 min_height=-(-h // scale), min_width=-(-w // scale))
    out[...] = rgb if rgb.shape[:2] == (size, size) else _resize(rgb, size)


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


def batch_videos(batch: Dict[str, Any], keep: torch.Tensor, device: Union[str, torch.device]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(videos, kept)``: the uint8 ``(B', 3, T, H, W)`` videos of the items ``kept`` selects
    (bool ``(B,)``), on ``device``, and ``kept``: ``keep`` less the items whose frames failed to
    decode (excluded, as an unreadable video is). The videos are ``batch["video"]`` moved there
    (``kept`` is ``keep``), or, for a batch of JPEG bytes (``decode_on_device``), decoded there by
    ``torchvision.io.decode_jpeg``, in one call unless a frame fails, then video by video."""
    keep = torch.as_tensor(keep, dtype=torch.bool)
    if "video" in batch:
        return batch["video"][keep].to(device, non_blocking=True), keep
    from torchvision.io import ImageReadMode, decode_jpeg

    jpegs, offsets = batch["jpeg"], torch.as_tensor(batch["jpeg_offsets"])
    t = offsets.shape[1] - 1
    rows = keep.nonzero().squeeze(1).tolist()
    frames = {r: [jpegs[r][int(offsets[r, j]): int(offsets[r, j + 1])] for j in range(t)] for r in rows}

    def decode(chunks: List[torch.Tensor]) -> torch.Tensor:  # (n, 3, H, W)
        return torch.stack(decode_jpeg(chunks, mode=ImageReadMode.RGB, device=device))

    def readable_on_cpu(chunks: List[torch.Tensor]) -> bool:
        try:
            images = decode_jpeg(chunks, mode=ImageReadMode.RGB)
        except RuntimeError:
            return False
        return len({tuple(image.shape) for image in images}) == 1

    if not rows:
        return torch.zeros((0, 3, t, 0, 0), dtype=torch.uint8, device=device), keep
    try:
        video = decode([f for r in rows for f in frames[r]])  # (B' * T, 3, H, W)
        return video.view(len(rows), t, *video.shape[1:]).transpose(1, 2).contiguous(), keep
    except RuntimeError:  # a damaged frame fails the whole call (nvJPEG, libjpeg): find its video
        pass
    kept, videos = keep.clone(), []
    for r in rows:
        try:
            one = decode(frames[r])  # (T, 3, H, W)
        except RuntimeError:
            if readable_on_cpu(frames[r]):  # the device failed, not the data: never exclude every video quietly
                raise
            one = None
        if one is None or (videos and one.shape != videos[0].shape):
            kept[r] = False
        else:
            videos.append(one)
    if not videos:
        return torch.zeros((0, 3, t, 0, 0), dtype=torch.uint8, device=device), kept
    return torch.stack(videos).transpose(1, 2).contiguous(), kept
