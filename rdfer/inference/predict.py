"""``rdfer predict``: emotion, per-clip votes, agreement and the key-expression window of a video
file, face detection included."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

if TYPE_CHECKING:
    from .faces import FaceFraming, FaceTrack

__all__ = ["VideoPrediction", "UnreadableVideo", "NoFace", "FaceClip", "read_video", "predict_video", "predict_videos",
           "predict_frames", "scan_video", "read_face_clip", "model_framing"]

# Exit codes of `rdfer predict`, documented in its --help.
EXIT_OK, EXIT_NO_FACE, EXIT_UNREADABLE = 0, 3, 4


@dataclass
class VideoPrediction:
    """The result for one video. ``status`` is ``"ok"``, ``"no_face"`` or ``"unreadable"``."""

    path: str
    status: str
    message: str = ""
    emotion: Optional[str] = None
    probabilities: Dict[str, float] = field(default_factory=dict)
    clip_predictions: List[str] = field(default_factory=list)
    agreement: Optional[float] = None  # share of clips voting for the most frequent class: a reliability score
    key_window_seconds: Optional[Tuple[float, float]] = None
    key_window_frames: Optional[Tuple[int, int]] = None
    fps: Optional[float] = None
    num_frames: int = 0
    frames_without_face: List[int] = field(default_factory=list)
    crop: Optional[Dict] = None  # the face framing applied (rdfer.inference.faces.FaceFraming), None without detection

    def to_dict(self) -> Dict:
        return asdict(self)

    def summary(self) -> str:
        if self.status != "ok":
            return f"{self.path}: {self.status} ({self.message})"
        top = sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:3]
        lines = [
            f"{self.path}: {self.emotion} ({', '.join(f'{k} {v:.2f}' for k, v in top)})",
            f"  clips: {' | '.join(self.clip_predictions)}  agreement {self.agreement:.2f}",
        ]
        if self.key_window_seconds is not None:
            a, b = self.key_window_seconds
            lines.append(f"  key expression: {a:.2f}s - {b:.2f}s (frames {self.key_window_frames[0]}-{self.key_window_frames[1]})")
        if self.frames_without_face:
            lines.append(f"  {len(self.frames_without_face)} of {self.num_frames} frames without a face (boxes interpolated)")
        notes = [m for m in self.message.split("; ") if m and "frames without a face" not in m]  # said above
        if notes:
            lines.append(f"  note: {'; '.join(notes)}")
        return "\n".join(lines)


class UnreadableVideo(ValueError):
    """A video file that cannot be opened or decoded; the message says why."""


# `rdfer predict` reads local files only: a URL would make FFmpeg fetch it over the network.
URL_REFUSED = "URLs are not supported: rdfer predict reads local files only; download the video first"


def is_url(path: Union[str, Path]) -> bool:
    """True for ``scheme://...`` (http, https, rtsp, ftp, ...), which FFmpeg would open over the network."""
    import re

    return isinstance(path, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


class _FrameFolder:
    """A folder of numbered frames read as a video: the frames listed and ordered as a dataset's
    frame folders are (:func:`rdfer.data.decode.list_frames`: numeric order, ``2.png`` before
    ``10.png``) and decoded by :func:`rdfer.data.decode.load_frame` at their own size.

    An unreadable frame is replaced by its nearest readable neighbour (the datasets' rule,
    :func:`rdfer.data.decode.nearest_readable`) and warned about (``BadInputWarning``); a folder
    without frames, or none of whose frames can be decoded, is :class:`UnreadableVideo`."""

    def __init__(self, path: str):
        import os

        from ..data.decode import FRAME_EXTENSIONS, list_frames

        self.path = path
        try:
            self.files = list_frames(path)
        except OSError as err:
            raise UnreadableVideo(f"{path}: cannot list the folder ({err.strerror or err})") from None
        if not self.files:
            kinds = "/".join(e[1:] for e in FRAME_EXTENSIONS)
            with os.scandir(path) as entries:
                nested = any(e.is_dir() and not e.name.startswith(".") for e in entries)
            hint = f"; each of its subfolders may be one: give them ({os.path.join(path, '*')})" if nested else ""
            raise UnreadableVideo(f"{path}: no frames ({kinds}) in the folder, so it is not a video{hint}")
        self.errors: Dict[int, str] = {}

    def __iter__(self) -> Iterator["_FolderFrame"]:
        return (_FolderFrame(self, k) for k in range(len(self.files)))

    def _decode(self, k: int) -> Optional[np.ndarray]:
        from ..data.decode import load_frame

        if k in self.errors:
            return None
        try:
            rgb = load_frame(self.files[k], None)
        except Exception as err:  # any decoder failure: corrupt, truncated, not an image
            if isinstance(err, MemoryError):
                raise
            self.errors[k] = " ".join(f"{type(err).__name__}: {err}".split())
            return None
        return rgb if rgb.flags.writeable else rgb.copy()

    def load(self, k: int) -> np.ndarray:
        """Frame ``k`` as RGB uint8 ``(H, W, 3)``, or its nearest readable neighbour's."""
        import warnings

        from ..data.decode import BadInputWarning, nearest_readable

        rgb = self._decode(k)
        if rgb is not None:
            return rgb
        found: Dict[int, np.ndarray] = {}

        def readable(i: int) -> bool:
            rgb = self._decode(i)
            if rgb is not None:
                found[i] = rgb
            return rgb is not None

        j = nearest_readable(k, len(self.files), readable)
        if j is None:
            raise UnreadableVideo(f"{self.path}: none of the {len(self.files)} frames could be decoded "
                                  f"(e.g. {self.files[k]}: {self.errors[k]})")
        warnings.warn(f"{self.files[k]}: unreadable frame ({self.errors[k]}); replaced by {self.files[j]}",
                      BadInputWarning, stacklevel=2)
        return found[j]


class _FolderFrame:
    """One frame of a :class:`_FrameFolder`, with the part of PyAV's ``VideoFrame`` that rdfer
    uses: ``width``, ``height`` and ``to_ndarray(format="rgb24", width=None, height=None)``
    (resized bilinearly by PIL). Decoded on first use, not before: counting frames decodes none."""

    __slots__ = ("_folder", "_k", "_rgb")

    def __init__(self, folder: _FrameFolder, k: int):
        self._folder, self._k, self._rgb = folder, k, None

    def _pixels(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self._folder.load(self._k)
        return self._rgb

    @property
    def width(self) -> int:
        return int(self._pixels().shape[1])

    @property
    def height(self) -> int:
        return int(self._pixels().shape[0])

    def to_ndarray(self, format: str = "rgb24", width: Optional[int] = None, height: Optional[int] = None,
                   **_) -> np.ndarray:
        if format != "rgb24":
            raise ValueError(f"frames of a frame folder convert to rgb24 only, not {format!r}")
        rgb = self._pixels()
        size = (width or rgb.shape[1], height or rgb.shape[0])
        if size == (rgb.shape[1], rgb.shape[0]):
            return rgb
        from PIL import Image

        return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))


@contextmanager
def _video_frames(path: Union[str, Path]) -> Iterator[Tuple[Iterator, float]]:
    """``with _video_frames(path) as (frames, fps)``: PyAV frames of the first video stream, and its
    average frame rate (NaN when unknown). Any decoder error becomes :class:`UnreadableVideo`.

    A folder of numbered frames (``S005_001_00000001.png ...``, ``0.jpg ... 10.jpg``) is a video
    too, read as the datasets read frame folders (:class:`_FrameFolder`): its frames in numeric
    order, objects with the ``width``/``height``/``to_ndarray`` of PyAV frames, fps NaN (a
    folder has no frame rate).

    Local regular files only (:func:`rdfer.data.decode.open_local_video`): a URL, a FIFO or a
    device is refused, and FFmpeg may use no protocol but ``file``, so nothing is fetched."""
    import os

    from ..data.decode import UnreadableClip, open_local_video

    if is_url(path):  # FFmpeg would fetch it: rdfer stays offline on purpose
        raise UnreadableVideo(URL_REFUSED)
    if os.path.isdir(path):
        yield iter(_FrameFolder(str(path))), float("nan")
        return
    try:
        container = open_local_video(path)
    except UnreadableClip as err:
        raise UnreadableVideo(f"{path}: {err}") from None
    except Exception as err:
        raise UnreadableVideo(f"{type(err).__name__}: {err}") from err
    with container:
        if not container.streams.video:
            raise UnreadableVideo(f"{path}: no video stream")
        stream = container.streams.video[0]

        def frames() -> Iterator:
            decoded = container.decode(stream)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    return
                except Exception as err:  # a broken packet
                    raise UnreadableVideo(f"{type(err).__name__}: {err}") from err
                yield frame

        yield frames(), float(stream.average_rate) if stream.average_rate else float("nan")


def read_video(path: Union[str, Path]) -> Tuple[List[np.ndarray], float]:
    """Decode every frame of a video file (or a folder of numbered frames, fps NaN) to RGB uint8
    (H, W, 3) arrays with PyAV; returns the frames and the stream's average frame rate (NaN when
    unknown). Raises :class:`UnreadableVideo`.

    Holds the whole video in memory (a minute of 1080p is ~11 GB): :func:`predict_video` streams
    instead and keeps only the frames it samples."""
    with _video_frames(path) as (frames, fps):
        return [frame.to_ndarray(format="rgb24") for frame in frames], fps


def scan_video(path: Union[str, Path], detector: Optional[Callable] = None, stride: int = 8) -> Tuple[int, float, Optional["FaceTrack"]]:
    """The first pass of :func:`predict_video` on a video file or a folder of numbered frames: the
    frame count, the frame rate (NaN for a folder) and, with a ``detector``, the face track of
    every ``stride``-th frame (:func:`rdfer.inference.faces.track_boxes`; boxes in full-frame
    pixels). Raises :class:`UnreadableVideo`.

    No frame is kept beyond the tracker's window, and only the examined frames are converted
    to RGB: at the detector's working size when it declares one (``max_side``), by FFmpeg's
    scaler, so a full-size RGB frame is never built for detection (a folder's image files are
    decoded at their own size, then scaled)."""
    n, fps, track, _ = _scan(path, detector, stride)
    return n, fps, track


def _scan(path: Union[str, Path], detector: Optional[Callable], stride: int,
          keep: Sequence[int] = ()) -> Tuple[int, float, Optional["FaceTrack"], Dict[int, np.ndarray]]:
    """:func:`scan_video`, also keeping the full-size RGB frames ``keep`` (frame index -> array)."""
    from .faces import track_boxes

    wanted = set(int(k) for k in keep)
    kept: Dict[int, np.ndarray] = {}

    def keeping(frames) -> Iterator:
        for k, frame in enumerate(frames):
            if k in wanted:
                kept[k] = frame.to_ndarray(format="rgb24")
            yield frame

    with _video_frames(path) as (frames, fps):
        if detector is None:  # only the frame count
            return sum(1 for _ in keeping(frames)), fps, None, kept
        max_side = getattr(detector, "max_side", None)
        scale: List[float] = []  # full-size / converted size, set by the first conversion

        def rgb(frame) -> np.ndarray:
            w, h = frame.width, frame.height
            s = min(1.0, max_side / max(w, h)) if max_side else 1.0
            if s < 1.0:
                dw, dh = max(1, round(w * s)), max(1, round(h * s))
                scale[:] = [w / dw, h / dh]
                return frame.to_ndarray(format="rgb24", width=dw, height=dh)
            scale[:] = [1.0, 1.0]
            return frame.to_ndarray(format="rgb24")

        def items() -> Iterator[Callable[[], np.ndarray]]:
            for k, frame in enumerate(keeping(frames)):
                if k % stride == 0:  # a keyframe, examined for sure: converted here, in the decoding thread
                    small = rgb(frame)
                    yield lambda small=small: small
                else:  # examined only around a jump: converted when asked
                    yield lambda frame=frame: rgb(frame)

        with _in_background(items(), depth=2 * stride) as stream:
            track = track_boxes(stream, detector, stride)
    if scale:  # boxes back to full-frame pixels
        track.boxes *= np.array([scale[0], scale[1], scale[0], scale[1]])
    return len(track.boxes), fps, track, kept


_DONE = object()


@contextmanager
def _in_background(items: Iterator, depth: int) -> Iterator[Iterator]:
    """``with _in_background(items, depth) as stream``: ``items``, produced in a background thread
    up to ``depth`` ahead. Decoding (FFmpeg, and PyAV's conversions) releases the GIL, so the
    video is decoded while the face detector (OpenCV, which releases it too) works on the frames
    before. An error of the producer is raised from ``stream``. The thread has ended when the
    ``with`` block does, however it ends (an exception's traceback may keep ``stream`` alive
    longer: the container that ``items`` decodes from must never close under a running thread)."""
    import queue
    import threading

    box: "queue.Queue" = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put((item, None), timeout=0.05)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            box.put((_DONE, None))
        except BaseException as err:  # handed over, raised in the consumer's thread
            box.put((_DONE, err))

    def consume() -> Iterator:
        while True:
            item, err = box.get()
            if err is not None:
                raise err
            if item is _DONE:
                return
            yield item

    thread = threading.Thread(target=produce, name="rdfer-decode", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then wait for it
            try:
                box.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _expected_frames(path: Union[str, Path]) -> Tuple[int, int, int]:
    """``(frames, width, height)`` a video file's header announces, without decoding; zeros when it
    does not say (Matroska stores no frame count) or for a folder of frames."""
    import os

    from ..data.decode import open_local_video

    if os.path.isdir(path) or is_url(path):
        return 0, 0, 0
    try:
        with open_local_video(path) as container:
            stream = container.streams.video[0]
            return int(stream.frames or 0), int(stream.width or 0), int(stream.height or 0)
    except Exception:  # the decoding pass reports an unreadable file in its own words
        return 0, 0, 0


def _crop(rgb: np.ndarray, k: int, boxes: Optional[np.ndarray], size: int,
          framing: Optional["FaceFraming"]) -> np.ndarray:
    """Frame ``k`` (full-size RGB) cropped to its face box as ``framing`` says, resized to ``size``."""
    from .faces import crop_faces

    if boxes is not None:
        (rgb,) = crop_faces([rgb], boxes[k : k + 1], framing=framing)
    return _resize(rgb, size)


def _read_clip(path: str, idx: np.ndarray, boxes: Optional[np.ndarray], size: int,
               framing: Optional["FaceFraming"] = None) -> np.ndarray:
    """Second pass: the frames ``idx`` (sorted, repeats allowed), each cropped to its face box
    (as ``framing`` says) when ``boxes`` is given and resized to ``size``, as soon as it is
    decoded. Returns ``(T, size, size, 3)`` frames and the frames' ``(width, height)``."""
    out = np.empty((len(idx), size, size, 3), dtype=np.uint8)
    filled, last, k, wh = 0, int(idx[-1]), -1, (0, 0)
    with _video_frames(path) as (frames, _):
        for k, frame in enumerate(frames):
            if k == idx[filled]:
                rgb = frame.to_ndarray(format="rgb24")
                wh = rgb.shape[1], rgb.shape[0]
                small = _crop(rgb, k, boxes, size, framing)
                while filled < len(idx) and idx[filled] == k:
                    out[filled] = small
                    filled += 1
            if k >= last:
                break
    if filled < len(idx):  # the file changed between the passes, or the decoder is not deterministic
        raise UnreadableVideo(f"{path}: the second decoding pass ended after {k + 1} frames, the first found more")
    return out, wh


def _clip_from_kept(kept: Dict[int, np.ndarray], idx: np.ndarray, boxes: Optional[np.ndarray], size: int,
                    framing: Optional["FaceFraming"]) -> Tuple[np.ndarray, Tuple[int, int]]:
    """What :func:`_read_clip` returns, from the frames the first pass kept."""
    out = np.empty((len(idx), size, size, 3), dtype=np.uint8)
    done: Dict[int, np.ndarray] = {}
    for j, k in enumerate(idx.tolist()):
        if k not in done:
            done[k] = _crop(kept[k], k, boxes, size, framing)
        out[j] = done[k]
    first = kept[int(idx[0])]
    return out, (first.shape[1], first.shape[0])


#: Frames the first pass may keep at full size to spare a second decoding pass (bytes of RGB).
ONE_PASS_BYTES = 256 << 20


@dataclass
class FaceClip:
    """What :func:`read_face_clip` read: ``frames`` (T, S, S, 3) uint8 face crops of the source
    frames ``frame_index``, the video's frame count and rate, the frames without a face, and
    how far the crop fit in the frame (:func:`rdfer.inference.faces.framing_fits`)."""

    frames: np.ndarray
    frame_index: np.ndarray
    num_frames: int
    fps: float
    frames_without_face: List[int]
    fits: float


class NoFace(ValueError):
    """A video in which the detector found no face in any frame (``num_frames`` frames at ``fps``)."""

    def __init__(self, message: str, num_frames: int = 0, fps: float = float("nan")) -> None:
        super().__init__(message)
        self.num_frames, self.fps = num_frames, fps


def read_face_clip(path: Union[str, Path], select: Callable[[int], Sequence[int]], size: int,
                   framing: Optional["FaceFraming"], detector: Optional[Callable] = None,
                   detect_stride: int = 8, one_pass_bytes: int = ONE_PASS_BYTES) -> FaceClip:
    """The face pipeline of ``rdfer predict`` and ``rdfer pack --crop-faces`` (one, so training
    and prediction see faces cropped the same way): decode ``path`` once when its header gives the
    frame count and the frames to keep fit in ``one_pass_bytes`` at full size (they are kept while
    the face is tracked, then cropped), else twice (memory bounded by the kept crops; the result
    is the same), track the face (:func:`rdfer.inference.faces.track_boxes` every
    ``detect_stride`` frames, boxes filled and smoothed), keep the frames ``select(n)`` and crop
    each as ``framing`` says, resized to ``size``. ``detector=None`` keeps whole frames.
    Raises :class:`UnreadableVideo` or :class:`NoFace`."""
    from .faces import fill_and_smooth, framing_fits

    expected, width, height = _expected_frames(path)
    guess = np.asarray(select(expected)).astype(int) if expected else np.zeros(0, dtype=int)
    fits_memory = 0 < len(np.unique(guess)) * width * height * 3 <= one_pass_bytes
    n, fps, track, kept = _scan(path, detector, max(1, detect_stride), guess if fits_memory else ())
    if n == 0:
        raise UnreadableVideo(f"{path}: the file has no decodable frame")
    boxes, missing = None, []
    if track is not None:
        missing = track.frames_without_face
        if not track.has_face.any():
            raise NoFace(f"{path}: no face found in any frame", n, fps)
        boxes = fill_and_smooth(track.boxes)
    idx = np.asarray(select(n)).astype(int)
    if fits_memory and n == expected and all(int(k) in kept for k in idx):  # the header was right: one pass
        clip, (width, height) = _clip_from_kept(kept, idx, boxes, size, framing)
    else:
        clip, (width, height) = _read_clip(str(path), idx, boxes, size, framing)
    fits = 1.0 if boxes is None or framing is None else framing_fits(boxes[idx], framing, width, height)
    return FaceClip(clip, idx, n, fps, missing, fits)


def model_framing(model: nn.Module, crop_margin: Optional[float] = None) -> "FaceFraming":
    """The face framing to crop raw video with for ``model``: the framing its checkpoint records
    (``data_config["face_framing"]``), else rdfer's default; ``crop_margin`` replaces the margin
    (the recorded centre offset and detector are kept)."""
    from .faces import FaceFraming

    recorded = FaceFraming.from_dict((getattr(model, "data_config", None) or {}).get("face_framing"))
    if crop_margin is not None:
        # The margin only: the recorded centre offset and detector stay (benchmarks/results/raw_videos.md:
        # dropping the offset cost 20 points of WAR at the right margin).
        base = recorded or FaceFraming()
        return FaceFraming(float(crop_margin), base.dx, base.dy, "option", base.detector, base.measured)
    return recorded or FaceFraming()


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR))


def _run_model(model: nn.Module, clip: np.ndarray, device: Union[str, torch.device]):
    """``(T, S, S, 3)`` uint8 frames -> ``model.predict`` on the normalised ``(1, C, T, S, S)`` video."""
    from ..data.transforms import VideoBatchTransform

    video = torch.from_numpy(clip).permute(3, 0, 1, 2).unsqueeze(0).to(device)  # (1, C, T, H, W)
    return model.predict(VideoBatchTransform(train=False)(video))


@torch.no_grad()
def predict_frames(model: nn.Module, frames: Sequence[np.ndarray], class_names: Sequence[str], num_frames: int,
                   image_size: int, device: Union[str, torch.device] = "cpu"):
    """Sample ``num_frames`` of in-memory RGB ``frames`` uniformly (as in evaluation), resize,
    normalise and run ``model.predict``. Returns (prediction, loaded source frame numbers)."""
    from ..data.sampling import eval_indices

    idx = np.asarray(eval_indices(len(frames), num_frames)).astype(int)
    clip = np.stack([_resize(frames[i], image_size) for i in idx])  # (T, H, W, 3)
    return _run_model(model, clip, device), idx


def predict_video(
    path: Union[str, Path],
    model: nn.Module,
    class_names: Optional[Sequence[str]] = None,
    num_frames: Optional[int] = None,
    image_size: Optional[int] = None,
    detector: Union[str, Callable, None] = "auto",
    detect_stride: int = 8,
    device: Union[str, torch.device] = "cpu",
    crop_margin: Optional[float] = None,
) -> VideoPrediction:
    """Predict the emotion of one video file.

    Args:
        path: any video PyAV decodes (mp4, avi, mov, webm, mkv, ...), or a folder of numbered
            frames (one video; no frame rate).
        model: a trained RDFER model (e.g. ``rdfer.load_model(run_dir)``).
        class_names / num_frames / image_size: what the model was trained with (its
            ``data_config``); a value that contradicts it raises ValueError. For a model without
            them: ``"0".."n-1"``, 16 frames, 112 px.
        detector: ``"auto"`` (the detector the model's training faces were framed with, else
            ``"haar"``), a name of :data:`rdfer.inference.faces.DETECTORS` (``"haar"``: OpenCV,
            offline; ``"yunet"``), a callable ``RGB frame -> box or None``, or None when the
            video is already cropped to the face (``--no-detect``).
        detect_stride: run the detector on every n-th frame and interpolate the boxes in between;
            where the box jumps or a face appears or disappears, every frame in between is
            examined (:func:`rdfer.inference.faces.track_boxes`). 1 examines every frame.
        crop_margin: the face crop's margin, in box sides on each side (``--crop-margin``). By
            default the crop is the one the model's training faces had (its checkpoint's
            ``face_framing``, :func:`model_framing`), so a raw video's face is framed as in training.

    Frames without a face inside a video get an interpolated box and are listed; a video with
    no face at all returns ``status="no_face"`` instead of raising. A face so large in its frame
    that the crop cannot hold the training faces' margin says so in ``message``.
    """
    settings = _settings(model, class_names, num_frames, image_size, detector, crop_margin)
    face = _read_face(path, settings, detect_stride)
    return face if isinstance(face, VideoPrediction) else _infer(model, str(path), face, settings, device)


def predict_videos(
    paths: Iterable[Union[str, Path]],
    model: nn.Module,
    class_names: Optional[Sequence[str]] = None,
    num_frames: Optional[int] = None,
    image_size: Optional[int] = None,
    detector: Union[str, Callable, None] = "auto",
    detect_stride: int = 8,
    device: Union[str, torch.device] = "cpu",
    crop_margin: Optional[float] = None,
    workers: int = 2,
) -> Iterator[VideoPrediction]:
    """:func:`predict_video` on each of ``paths``, the results yielded in order as they are ready.

    The videos are pipelined: the face passes (decoding, detection, cropping) of the next
    ``workers`` videos run in threads while the model predicts the current one (``rdfer predict
    a.mp4 b.mp4 ...``). A named detector is built anew for each video, so no detector is shared
    between threads; a detector given as a callable runs in one thread (it need not be
    thread-safe). The results are those of :func:`predict_video`, one video at a time."""
    from concurrent.futures import ThreadPoolExecutor

    settings = _settings(model, class_names, num_frames, image_size, detector, crop_margin)
    workers = max(1, int(workers)) if settings.detector is None or isinstance(settings.detector, str) else 1
    paths = iter(paths)
    with ThreadPoolExecutor(workers, thread_name_prefix="rdfer-face") as pool:
        pending: List[Tuple[str, Any]] = []  # (path, future of its face pass), in order; at most workers + 1
        try:
            while True:
                while len(pending) <= workers:
                    path = next(paths, _DONE)
                    if path is _DONE:
                        break
                    pending.append((str(path), pool.submit(_read_face, path, settings, detect_stride)))
                if not pending:
                    return
                path, future = pending.pop(0)
                face = future.result()
                yield face if isinstance(face, VideoPrediction) else _infer(model, path, face, settings, device)
        finally:
            for _, future in pending:  # stopped early: the passes not started are dropped
                future.cancel()


@dataclass
class _Settings:
    """What :func:`predict_video` reads a video with, fixed once per model."""

    class_names: List[str]
    num_frames: int
    image_size: int
    framing: Optional["FaceFraming"]
    detector: Union[str, Callable, None]  # a name of DETECTORS, a callable, or None (no detection)


def _settings(model: nn.Module, class_names, num_frames, image_size, detector, crop_margin) -> _Settings:
    from ..engine.datasets import setting_from_checkpoint, trained_data_config

    # What training fixed wins; an argument that contradicts it is an error, not a silent re-scaling.
    data = trained_data_config(model)
    names = setting_from_checkpoint("class_names", None if class_names is None else list(class_names),
                                    data.get("classes"))
    class_names = [str(i) for i in range(model.num_classes)] if names is None else names
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model of {model.num_classes} classes")
    num_frames = setting_from_checkpoint("num_frames", num_frames, data.get("num_frames"))
    image_size = setting_from_checkpoint("image_size", image_size, data.get("image_size"))
    num_frames, image_size = (16 if num_frames is None else num_frames), (112 if image_size is None else image_size)
    if num_frames < 1 or image_size < 1:
        raise ValueError(f"num_frames and image_size must be >= 1, got {num_frames} and {image_size}")
    framing = model_framing(model, crop_margin) if detector is not None else None
    name = framing.detector if detector == "auto" and framing is not None else detector
    return _Settings(list(class_names), num_frames, image_size, framing, name)


def _read_face(path: Union[str, Path], settings: _Settings, detect_stride: int) -> Union[FaceClip, VideoPrediction]:
    """The face clip of ``path``, or its result when it has none (unreadable, no face)."""
    from ..data.sampling import eval_indices
    from .faces import create_face_detector

    path, name = str(path), settings.detector
    det = create_face_detector(name) if isinstance(name, str) else name
    try:
        face = read_face_clip(path, lambda n: eval_indices(n, settings.num_frames), settings.image_size,
                              settings.framing, det, detect_stride)
    except UnreadableVideo as err:  # a broken file is a per-video result, not a crash of the batch
        return VideoPrediction(path, "unreadable", str(err))
    except NoFace as err:
        return VideoPrediction(path, "no_face", "no face found in any frame", fps=err.fps, num_frames=err.num_frames,
                               frames_without_face=list(range(err.num_frames)))
    return face


def _infer(model: nn.Module, path: str, face: FaceClip, settings: _Settings, device: Union[str, torch.device]
           ) -> VideoPrediction:
    """The prediction for the face clip of ``path`` read by :func:`_read_face`."""
    class_names, framing, name = settings.class_names, settings.framing, settings.detector
    clip, loaded, n, fps, missing = face.frames, face.frame_index, face.num_frames, face.fps, face.frames_without_face
    notes = [f"{len(missing)} frames without a face; their boxes were interpolated"] if missing else []
    if isinstance(name, str) and framing.source not in ("default", "option") and name != framing.detector:
        notes.append(f"the training faces were framed around {framing.detector} boxes; {name}'s boxes frame them "
                     f"differently (--detector auto uses {framing.detector})")
    if face.fits < 0.8:
        notes.append(f"the face fills so much of the frame that its crop holds {100 * face.fits:.0f}% of the side "
                     f"the training faces had ({framing.describe()}): framed differently from training")
    with torch.no_grad():
        pred = _run_model(model, clip, device)
    probs = pred.probs[0].cpu()
    pos = pred.positions[0].cpu().numpy()
    # Sampled positions are in loaded-frame units: map them to source frames, then to seconds.
    src = np.interp(pos, np.arange(len(loaded)), loaded)
    first, last = int(np.floor(src.min())), int(np.ceil(src.max()))
    window_s = (first / fps, (last + 1) / fps) if np.isfinite(fps) and fps > 0 else None
    return VideoPrediction(
        path=path, status="ok", emotion=class_names[int(probs.argmax())],
        probabilities={name: round(float(p), 4) for name, p in zip(class_names, probs)},
        clip_predictions=[class_names[int(c)] for c in pred.clip_preds[0]],
        agreement=float(pred.agreement[0]), key_window_seconds=window_s, key_window_frames=(first, last),
        fps=fps if np.isfinite(fps) else None, num_frames=n, frames_without_face=missing,
        message="; ".join(notes), crop=None if framing is None else framing.to_dict(),
    )
