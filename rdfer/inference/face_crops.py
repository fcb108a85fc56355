"""``rdfer pack --crop-faces``: raw videos in, face crops out, by ``rdfer predict``'s own pipeline.

:class:`FaceCroppedSource` wraps a dataset (DFEW, FERV39K, VideoCSV: anything with ``samples``,
``classes`` and ``read_clip``) so that its ``read_clip`` detects, tracks and crops the face with
:func:`rdfer.inference.predict.read_face_clip`, the function ``rdfer predict`` uses. The pack
records the framing (``face_crop`` in its index), training on the pack stores it in the model,
and prediction on a raw video crops the same way: one pipeline, the same faces.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .faces import DEFAULT_MARGIN, FaceFraming

__all__ = ["FaceCroppedSource"]


class FaceCroppedSource:
    """``dataset`` with its faces cropped: ``read_clip(index, select, size)`` returns the face crops
    of the frames ``select(n)`` (a :class:`rdfer.data.decode.Clip`), or None for a video that cannot
    be read or shows no face (recorded in ``bad_samples`` with the reason).

    Args:
        dataset: the raw videos (``samples``, ``classes``, ``read_clip``).
        margin: the crop's margin in face-box sides on each side (``--crop-margin``).
        detector: a name of :data:`rdfer.inference.faces.DETECTORS` (``"haar"``, ``"yunet"``) or a
            callable ``RGB frame -> box or None``; the pack records it with the crop.
        detect_stride: as ``rdfer predict --detect-stride``.

    ``face_crop`` is the framing as packs record it; ``face_report`` maps each video read to
    ``(frames, frames without a face)``; :meth:`report_csv` writes them.
    """

    def __init__(self, dataset: Any, margin: Optional[float] = None, detector: Union[str, Callable] = "haar",
                 detect_stride: int = 8) -> None:
        from .faces import create_face_detector

        if not hasattr(dataset, "read_clip"):
            raise TypeError(f"cannot crop faces of {type(dataset).__name__}: it has no read_clip")
        self.dataset = dataset
        name = detector if isinstance(detector, str) else type(detector).__name__
        self.framing = FaceFraming(DEFAULT_MARGIN if margin is None else float(margin), source="pack", detector=name)
        FaceFraming.from_dict(self.framing.to_dict())  # the bounds a checkpoint is held to
        self.detector = create_face_detector(detector) if isinstance(detector, str) else detector
        self.detect_stride = int(detect_stride)
        self.face_crop: Dict[str, Any] = self.framing.to_dict()
        self.bad_samples: Dict[str, str] = {}
        self.face_report: Dict[str, Tuple[int, int]] = {}

    @property
    def samples(self) -> List[Tuple[str, int]]:
        return self.dataset.samples

    @property
    def classes(self) -> Sequence[str]:
        return self.dataset.classes

    def __len__(self) -> int:
        return len(self.dataset.samples)

    def read_clip(self, index: int, select: Callable[[int], Sequence[int]], size: Optional[int] = None):
        from ..data.decode import Clip
        from .predict import NoFace, UnreadableVideo, read_face_clip

        path = str(self.samples[index][0])
        size = int(size or self.dataset.image_size)
        try:
            face = read_face_clip(path, select, size, self.framing, self.detector, self.detect_stride)
        except (UnreadableVideo, NoFace) as err:
            reason = str(err).split(": ", 1)[-1] if str(err).startswith(path) else str(err)
            self.bad_samples[path] = reason
            self.face_report[path] = (getattr(err, "num_frames", 0), getattr(err, "num_frames", 0))
            return None
        self.face_report[path] = (face.num_frames, len(face.frames_without_face))
        fps = face.fps if face.fps == face.fps and face.fps > 0 else None  # NaN: a frame folder
        return Clip(face.frames, torch.as_tensor(face.frame_index, dtype=torch.long), face.num_frames, fps)

    def report_csv(self) -> str:
        """``path,frames,frames_without_face,status`` for every video read (CSV text)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["path", "frames", "frames_without_face", "status"])
        for path, (frames, missing) in sorted(self.face_report.items()):
            writer.writerow([path, frames, missing, self.bad_samples.get(path, "ok")])
        return out.getvalue()
