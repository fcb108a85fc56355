"""Face detection, box tracking and cropping for videos that are not face-cropped yet.

The default detector is OpenCV's bundled Haar cascade: it works offline and ships inside the
``opencv-python-headless`` 4.x wheel (5.x no longer ships it; ``pip install rdfer[faces]``
pins accordingly). Any callable ``frame (H, W, 3) uint8 RGB -> (x0, y0, x1, y1) or None`` can
replace it.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np

__all__ = ["FaceDetector", "HaarFaceDetector", "detect_boxes", "fill_and_smooth", "crop_faces"]

Box = Tuple[float, float, float, float]
FaceDetector = Callable[[np.ndarray], Optional[Box]]


class HaarFaceDetector:
    """The largest frontal face found by OpenCV's Haar cascade, or None.

    Args:
        max_side: frames are downscaled to this longer side before detection (speed).
        min_size_frac: smallest face, as a fraction of the shorter side of the frame.
    """

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size_frac: float = 0.1, max_side: int = 480) -> None:
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

    def __call__(self, frame: np.ndarray) -> Optional[Box]:
        cv2 = self.cv2
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
        side = int(min(gray.shape) * self.min_size_frac)
        faces = self.cascade.detectMultiScale(gray, self.scale_factor, self.min_neighbors, minSize=(side, side))
        if len(faces) == 0:
            return None
        x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
        return (x / scale, y / scale, (x + fw) / scale, (y + fh) / scale)


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


def crop_faces(frames: Sequence[np.ndarray], boxes: np.ndarray, margin: float = 0.25) -> list:
    """Square crops around ``boxes`` enlarged by ``margin`` of the box side on each side,
    clamped to the frame. Returns a list of (h, w, 3) uint8 arrays (resize afterwards)."""
    crops = []
    for frame, (x0, y0, x1, y1) in zip(frames, boxes):
        h, w = frame.shape[:2]
        side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        side = min(side, h, w)
        left = int(round(min(max(cx - side / 2, 0), w - side)))
        top = int(round(min(max(cy - side / 2, 0), h - side)))
        s = int(round(side))
        crops.append(frame[top : top + s, left : left + s])
    return crops
