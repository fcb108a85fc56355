"""Fast frame decoding for frame folders (JPEG/PNG/BMP) and video files (PyAV).

Only the frames a dataset item needs are decoded, and each of them straight to the target size:

* **Frame folders**: frames are listed in *numeric* order (``2.jpg`` before ``10.jpg``; any digits
  in the stem, e.g. ``frame_00012.jpg``). JPEGs are decoded at a reduced DCT scale (224 px frames
  for 112 px are decoded at half scale, which skips most of the IDCT and the resize) by
  libjpeg-turbo through simplejpeg (Pillow's ``draft`` when simplejpeg cannot: same pixels), then
  converted to RGB and resized (bilinear) when the size still differs.
* **Video files** (mp4/avi/mov/webm/mkv, or anything FFmpeg reads): decoded sequentially with
  PyAV up to the last needed frame, keeping and resizing (in swscale) only the selected frames.

Bad input never raises during training: an unreadable frame is replaced by its nearest readable
neighbour (by source position; ties go to the earlier frame) and reported in
:attr:`Clip.replaced`; when nothing can be read, :class:`UnreadableClip` says why.
Frames are resized to ``size x size`` without keeping the aspect ratio: the inputs are face crops.
"""

from __future__ import annotations

import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

try:  # libjpeg-turbo with scaled decoding straight from bytes; Pillow is the fallback
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - simplejpeg has wheels for the usual platforms
    _simplejpeg = None

__all__ = [
    "FRAME_EXTENSIONS",
    "BadInputWarning",
    "UnreadableClip",
    "Clip",
    "list_frames",
    "load_frame",
    "nearest_readable",
    "read_frame_folder",
    "read_video_file",
    "read_clip",
    "bad_input_report",
    "not_a_regular_file",
    "read_regular_file",
    "open_local_video",
    "FFMPEG_PROTOCOLS",
]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

PathLike = Union[str, "os.PathLike[str]"]
# Maps the number of source frames ``n`` to the source positions to load, e.g.
# ``lambda n: sample_indices(n, T, train)``.
Selector = Callable[[int], torch.Tensor]


class BadInputWarning(UserWarning):
    """An unreadable frame was replaced, or a sample had nothing readable."""


class UnreadableClip(Exception):
    """Nothing of a clip could be decoded; ``str(exc)`` is the reason."""


@dataclass
class Clip:
    """Decoded frames of one clip.

    Attributes:
        frames: uint8 ``(T, H, W, 3)`` RGB.
        frame_index: int64 ``(T,)`` source positions actually loaded (a replaced frame reports
            its replacement's position, so the index always describes the pixels).
        num_source: frames in the source (folder listing or video stream).
        fps: the video's average frame rate; None for frame folders or when unknown.
        replaced: ``(bad_frame, replacement)`` pairs (file paths; ``video#frame=N`` for videos).
        errors: ``bad_frame -> error message``.
    """

    frames: np.ndarray
    frame_index: torch.Tensor
    num_source: int
    fps: Optional[float] = None
    replaced: List[Tuple[str, str]] = field(default_factory=list)
    errors: Dict[str, str] = field(default_factory=dict)


_DIGITS = re.compile(r"(\d+)")


def _natural_key(name: str):
    # re.split with a group puts the digit runs at odd positions, so keys compare str with str
    # and int with int: "frame_2.jpg" < "frame_10.jpg", and "00012" == 12.
    parts = _DIGITS.split(name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], name


def list_frames(folder: PathLike) -> List[str]:
    """Image files of ``folder`` (:data:`FRAME_EXTENSIONS`, any case) in numeric order.

    Hidden files (``.*``, e.g. macOS ``._1.jpg`` resource forks) are skipped.
    """
    with os.scandir(folder) as it:
        names = [e.name for e in it
                 if not e.name.startswith(".") and e.name.lower().endswith(FRAME_EXTENSIONS) and e.is_file()]
    names.sort(key=_natural_key)
    return [os.path.join(folder, n) for n in names]


def _draft_scale(width: int, height: int, size: int) -> int:
    # Pillow's JPEG draft rule: the largest of 8, 4, 2 that still leaves >= size pixels, else 1.
    fit = min(width // size, height // size)
    return next((s for s in (8, 4, 2) if fit >= s), 1)


def _read_bytes(path: PathLike) -> bytes:
    # os.read with the size from fstat: a third of the cost of open().read() for small frames.
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks, size = [], os.fstat(fd).st_size
        while True:
            chunk = os.read(fd, max(size, 1 << 16))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _decode_jpeg_turbo(path: PathLike, size: Optional[int]) -> Optional[np.ndarray]:
    """libjpeg-turbo through simplejpeg: the same pixels as Pillow's ``draft`` path, ~1.5x faster.

    Pillow parses the JPEG markers in Python and needs a file object; simplejpeg decodes from the
    bytes with the same DCT scale, IDCT (islow) and upsampling, and releases the GIL. Returns
    None when simplejpeg is not installed or cannot take the file (CMYK, not really a JPEG, a
    recoverable corruption): the caller then lets Pillow decide, so errors read the same.
    """
    if _simplejpeg is None:
        return None
    data = _read_bytes(path)
    try:
        height, width, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray", "RGB"):
            return None  # CMYK/YCCK: Pillow's conversion to RGB differs from libjpeg-turbo's
        s = 1 if size is None else _draft_scale(width, height, size)
        rgb = _simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False,
                                      min_height=-(-height // s), min_width=-(-width // s))
    except ValueError:
        return None
    return rgb


def load_frame(path: PathLike, size: Optional[int]) -> np.ndarray:
    """One image file -> uint8 ``(size, size, 3)`` RGB (``size=None``: ``(H, W, 3)`` at the image's
    own size, nothing scaled). Raises on an unreadable file.

    JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still gives at least
    ``size`` pixels (a 224 px JPEG for 112 px is decoded at half scale and needs no resize), with
    libjpeg-turbo via simplejpeg when it can, else Pillow's ``draft`` (identical pixels). Other
    formats are decoded at full size. Grayscale, RGBA, palette and CMYK images are converted to
    RGB (alpha dropped), 16-bit ones by keeping the high byte (65535 -> 255, 32768 -> 128); 32-bit
    integer or float images raise. The result is resized (bilinear) when the size still differs.
    """
    from PIL import Image

    if str(path).lower().endswith((".jpg", ".jpeg")):
        rgb = _decode_jpeg_turbo(path, size)
        if rgb is not None:
            if size is None or rgb.shape[:2] == (size, size):
                return rgb
            return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    with Image.open(path) as im:
        if size is not None:
            im.draft("RGB", (size, size))
        if im.mode.startswith("I;16"):
            # 16-bit grayscale: Pillow's convert() clips to 255 (a mid-gray frame turns white).
            # Keep the high byte, as Pillow itself does for 16-bit RGB PNGs.
            im = Image.fromarray((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8), "L")
        elif im.mode in ("I", "F"):
            raise ValueError(f"{im.mode!r} images (32-bit integer or float pixels) are not supported; "
                             f"save the frames as 8- or 16-bit PNG, or JPEG")
        if im.mode != "RGB":
            im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im)


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError)


_EXECUTOR: Dict[str, Any] = {}


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    # One pool per process and size; a pool inherited through fork() has no threads, so it is
    # keyed by pid too.
    key = f"{os.getpid()}:{threads}"
    pool = _EXECUTOR.get(key)
    if pool is None:
        pool = _EXECUTOR[key] = ThreadPoolExecutor(threads, thread_name_prefix="rdfer-decode")
    return pool


def nearest_readable(k: int, n: int, readable: Callable[[int], bool]) -> Optional[int]:
    """The replacement for unreadable frame ``k`` of ``n``: the nearest ``j`` with ``readable(j)``
    by source position (ties go to the earlier frame), or None when no other frame is readable."""
    for d in range(1, n):
        for j in (k - d, k + d):
            if 0 <= j < n and readable(j):
                return j
    return None


def read_frame_folder(folder: PathLike, select: Selector, size: int, threads: int = 1) -> Clip:
    """Decode the frames ``select(n)`` of a frame folder of ``n`` frames. See :class:`Clip`.

    Each distinct frame is decoded once (short clips sampled to more frames repeat frames).
    ``threads > 1`` decodes them in that many threads (libjpeg-turbo releases the GIL); the
    result is the same. Raises :class:`UnreadableClip` when the folder has no frames or none can
    be decoded.
    """
    files = list_frames(folder)
    n = len(files)
    if n == 0:
        raise UnreadableClip(f"no frames ({'/'.join(e[1:] for e in FRAME_EXTENSIONS)}) in the folder")
    wanted = [int(k) for k in select(n).tolist()]
    cache: Dict[int, Optional[np.ndarray]] = {}
    errors: Dict[str, str] = {}

    def decode_one(k: int) -> Tuple[Optional[np.ndarray], Optional[str]]:
        try:
            return load_frame(files[k], size), None
        except Exception as exc:  # any decoder failure: corrupt, truncated, not an image
            if _is_fatal(exc):
                raise
            return None, f"{type(exc).__name__}: {exc}"

    def get(k: int) -> Optional[np.ndarray]:
        if k not in cache:
            cache[k], error = decode_one(k)
            if error is not None:
                errors[files[k]] = error
        return cache[k]

    distinct = list(dict.fromkeys(wanted))
    if threads > 1 and len(distinct) > 1:
        shares = [distinct[i::threads] for i in range(min(threads, len(distinct)))]  # one task per thread
        for share, results in zip(shares, _thread_pool(threads).map(lambda ks: [decode_one(k) for k in ks], shares)):
            for k, (frame, error) in zip(share, results):
                cache[k] = frame
                if error is not None:
                    errors[files[k]] = error

    out = np.empty((len(wanted), size, size, 3), dtype=np.uint8)
    loaded: List[int] = []
    replaced: List[Tuple[str, str]] = []
    for t, k in enumerate(wanted):
        j = k if get(k) is not None else nearest_readable(k, n, lambda i: get(i) is not None)
        if j is None:
            first = next(iter(errors.values()), "unknown error")
            raise UnreadableClip(f"none of the {n} frames could be decoded (e.g. {first})")
        if j != k and (files[k], files[j]) not in replaced:
            replaced.append((files[k], files[j]))
        out[t] = cache[j]
        loaded.append(j)
    bad = {b for b, _ in replaced}
    return Clip(out, torch.tensor(loaded, dtype=torch.long), n, None, replaced,
                {k: v for k, v in errors.items() if k in bad})


# What kind of file a mode is, for the message refusing it.
_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))

#: The only FFmpeg protocol rdfer lets PyAV use, for the file itself and for anything it refers to
#: (a playlist's segments, an encryption key): a video is a local file, never fetched from a network.
FFMPEG_PROTOCOLS = "file"


def not_a_regular_file(path: PathLike) -> Optional[str]:
    """Why ``path`` cannot be read as a file (``"no such file"``, ``"a named pipe (FIFO)"``,
    ...), or None for a regular file (symbolic links followed).

    Reading a FIFO blocks until someone writes to it, and a device never ends (``/dev/zero``), so
    media and config files are checked before they are opened.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def read_regular_file(path: PathLike, max_bytes: Optional[int] = None, what: str = "file") -> bytes:
    """The bytes of a regular file, at most ``max_bytes`` of them.

    Raises ValueError naming the file when it is a FIFO, a device, a socket or a folder (reading
    it would block or never end) or when it is larger than ``max_bytes``; OSError (e.g.
    FileNotFoundError) when it cannot be opened. The file is opened non-blocking and checked on
    the open descriptor, so what is read is what was checked.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((w for test, w in _KINDS if test(info.st_mode)), "not a regular file")
            raise ValueError(f"{path} is {kind}, not a regular file; rdfer reads regular files only")
        if max_bytes is not None and info.st_size > max_bytes:
            raise ValueError(f"{path} is {info.st_size / 2**20:.1f} MiB, more than the {max_bytes / 2**20:g} MiB "
                             f"a {what} may have; is it the right file?")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        chunks, size = [], 0
        while True:  # the file may grow while it is read: stop at the limit all the same
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise ValueError(f"{path} is more than the {max_bytes / 2**20:g} MiB a {what} may have; "
                                 f"is it the right file?")
            chunks.append(chunk)
    finally:
        os.close(fd)


def open_local_video(path: PathLike):
    """``av.open`` for reading a local video file, and nothing else.

    Refused with :class:`UnreadableClip` before FFmpeg sees it: anything but a regular file (a
    FIFO would block, a device never end). FFmpeg then opens the absolute path (so a name such as
    ``concat:x.mp4`` or ``tcp:...`` is a file name, not a protocol) with the protocol whitelist
    :data:`FFMPEG_PROTOCOLS`: no protocol but ``file``, for the video and everything it refers
    to (an HLS playlist's segments and keys, ...), so reading a video never touches the network.
    PyAV's own errors (a corrupt file) propagate.
    """
    import av

    why = not_a_regular_file(path)
    if why is not None:
        raise UnreadableClip(why if why == "no such file" else f"{why}, not a regular file; rdfer reads video "
                             f"files and frame folders only")
    return av.open(os.path.abspath(os.fspath(path)), container_options={"protocol_whitelist": FFMPEG_PROTOCOLS})


def _fps(stream) -> Optional[float]:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _open_video(path: str):
    try:
        container = open_local_video(path)
    except UnreadableClip:
        raise
    except Exception as exc:
        if _is_fatal(exc):
            raise
        raise UnreadableClip(f"cannot open the video: {type(exc).__name__}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise UnreadableClip("no video stream in the file")
    return container, container.streams.video[0]


def _to_rgb(frame, size: int) -> np.ndarray:
    return frame.to_ndarray(format="rgb24", width=size, height=size, interpolation="BILINEAR")


def _decode_selected(container, stream, wanted: Sequence[int], size: int):
    """One sequential pass up to ``max(wanted)``: ``(kept {pos: array}, decoded, error or None)``.

    When the stream ends or breaks before the last wanted frame, the last decoded frame is kept
    too, as the replacement for the missing tail.
    """
    want = set(wanted)
    last = max(wanted)
    kept: Dict[int, np.ndarray] = {}
    decoded, error, prev = 0, None, None
    try:
        for frame in container.decode(stream):
            if decoded in want:
                kept[decoded] = _to_rgb(frame, size)
            prev = frame
            decoded += 1
            if decoded > last:
                break
    except Exception as exc:  # a broken packet mid-stream: what came before is kept
        if _is_fatal(exc):
            raise
        error = f"{type(exc).__name__}: {exc}"
    if decoded <= last and prev is not None and (decoded - 1) not in kept:
        kept[decoded - 1] = _to_rgb(prev, size)
    return kept, decoded, error


def read_video_file(path: PathLike, select: Selector, size: int) -> Clip:
    """Decode the frames ``select(n)`` of a video file with ``n`` frames. See :class:`Clip`.

    ``n`` is the stream's frame count (or its packet count when the container has none); when the
    stream ends earlier than that metadata says, the frames are re-selected from the true count.
    Frames after a decoding error are replaced by the nearest decoded frame and reported.
    Raises :class:`UnreadableClip` when the file cannot be opened or has no decodable frame.
    """
    path = str(path)
    count: Optional[int] = None
    for attempt in range(3):
        container, stream = _open_video(path)
        with container:
            fps = _fps(stream)
            if count is None:
                count = int(stream.frames or 0)
                if count <= 0:  # no frame count in the container (webm, mkv): count packets
                    try:
                        count = sum(1 for p in container.demux(stream) if p.size)
                    except Exception as exc:
                        if _is_fatal(exc):
                            raise
                        raise UnreadableClip(f"cannot read the video: {type(exc).__name__}: {exc}") from None
                    if count <= 0:
                        raise UnreadableClip("the video has no frames")
                    continue  # decode from the start in a fresh container
            wanted = [int(k) for k in select(count).tolist()]
            kept, decoded, error = _decode_selected(container, stream, wanted, size)
        if decoded == 0:
            raise UnreadableClip(f"no frame could be decoded ({error or 'empty stream'})")
        if error is None and decoded <= max(wanted) and decoded != count and attempt < 2:
            count = decoded  # the metadata over-counted: select again among the frames that exist
            continue
        break
    replaced: List[Tuple[str, str]] = []
    errors: Dict[str, str] = {}
    good = sorted(kept)
    out = np.empty((len(wanted), size, size, 3), dtype=np.uint8)
    loaded: List[int] = []
    for t, k in enumerate(wanted):
        j = k if k in kept else min(good, key=lambda g: (abs(g - k), g))
        if j != k:
            pair = (f"{path}#frame={k}", f"{path}#frame={j}")
            if pair not in replaced:
                replaced.append(pair)
                errors[pair[0]] = error or "frame missing from the stream"
        out[t] = kept[j]
        loaded.append(j)
    return Clip(out, torch.tensor(loaded, dtype=torch.long), count, fps, replaced, errors)


def read_clip(path: PathLike, select: Selector, size: int, threads: int = 1) -> Clip:
    """A frame folder or a video file -> :class:`Clip` of ``select(n)`` frames of ``size`` px.

    ``threads``: decoding threads for the frames of a folder (a video file is decoded in one
    sequential pass). Raises :class:`UnreadableClip` (never a decoder error) when nothing can
    be read.
    """
    if os.path.isdir(path):
        return read_frame_folder(path, select, size, threads)
    if not os.path.exists(path):
        raise UnreadableClip("no such file or folder")
    return read_video_file(path, select, size)  # a FIFO, device or socket: refused by open_local_video


def bad_input_report(bad_samples: Dict[str, str], replaced_frames: Dict[str, List[Tuple[str, str]]]) -> str:
    """Human-readable lines for a dataset's bad-input record ('' when nothing was bad)."""
    lines: List[str] = []
    if bad_samples:
        lines.append(f"{len(bad_samples)} unreadable sample(s), returned with valid=False:")
        lines += [f"  {path}: {why}" for path, why in sorted(bad_samples.items())]
    n = sum(len(pairs) for pairs in replaced_frames.values())
    if n:
        lines.append(f"{n} unreadable frame(s) replaced by their nearest readable neighbour:")
        for _, pairs in sorted(replaced_frames.items()):
            lines += [f"  {bad} -> {good}" for bad, good in pairs]
    return "\n".join(lines)
