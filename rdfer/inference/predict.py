"""``rdfer predict``: emotion, per-clip votes, agreement and the key-expression window of a video
file, face detection included."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

__all__ = ["VideoPrediction", "read_video", "predict_video", "predict_frames"]

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
        return "\n".join(lines)


def read_video(path: Union[str, Path]) -> Tuple[List[np.ndarray], float]:
    """Decode every frame of a video file to RGB uint8 (H, W, 3) arrays with PyAV; returns the
    frames and the stream's average frame rate (NaN when unknown)."""
    import av

    frames: List[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else float("nan")
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
    return frames, fps


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR))


@torch.no_grad()
def predict_frames(model: nn.Module, frames: Sequence[np.ndarray], class_names: Sequence[str], num_frames: int,
                   image_size: int, device: Union[str, torch.device] = "cpu"):
    """Sample ``num_frames`` frames uniformly (as in evaluation), resize, normalise and run
    ``model.predict``. Returns (prediction, loaded source frame numbers)."""
    from ..data.sampling import eval_indices
    from ..data.transforms import VideoBatchTransform

    idx = np.asarray(eval_indices(len(frames), num_frames)).astype(int)
    clip = np.stack([_resize(frames[i], image_size) for i in idx])  # (T, H, W, 3)
    video = torch.from_numpy(clip).permute(3, 0, 1, 2).unsqueeze(0).to(device)  # (1, C, T, H, W)
    video = VideoBatchTransform(train=False)(video)
    return model.predict(video), idx


def predict_video(
    path: Union[str, Path],
    model: nn.Module,
    class_names: Optional[Sequence[str]] = None,
    num_frames: Optional[int] = None,
    image_size: Optional[int] = None,
    detector: Union[str, Callable, None] = "haar",
    detect_stride: int = 1,
    device: Union[str, torch.device] = "cpu",
) -> VideoPrediction:
    """Predict the emotion of one video file.

    Args:
        path: any video PyAV decodes (mp4, avi, mov, webm, mkv, ...).
        model: a trained RDFER model (e.g. ``rdfer.load_model(run_dir)``).
        class_names / num_frames / image_size: default to what the model was trained with.
        detector: ``"haar"`` (OpenCV, offline), a callable ``RGB frame -> box or None``, or None
            when the video is already cropped to the face (``--no-detect``).
        detect_stride: run the detector on every n-th frame (boxes in between are interpolated).

    Frames without a face inside a video get an interpolated box and are listed; a video with
    no face at all returns ``status="no_face"`` instead of raising.
    """
    from .faces import HaarFaceDetector, crop_faces, detect_boxes, fill_and_smooth

    data = getattr(model, "data_config", {}) or {}
    class_names = list(class_names or data.get("classes") or [str(i) for i in range(model.num_classes)])
    num_frames = num_frames or data.get("num_frames", 16)
    image_size = image_size or data.get("image_size", 112)
    path = str(path)
    try:
        frames, fps = read_video(path)
    except Exception as err:  # a broken file is a per-video result, not a crash of the batch
        return VideoPrediction(path, "unreadable", f"{type(err).__name__}: {err}")
    if not frames:
        return VideoPrediction(path, "unreadable", "the file has no decodable frame")
    missing: List[int] = []
    if detector is not None:
        det = HaarFaceDetector() if detector == "haar" else detector
        boxes = detect_boxes(frames, det, detect_stride)
        examined = np.zeros(len(frames), dtype=bool)
        examined[:: max(1, detect_stride)] = True
        found = ~np.isnan(boxes[:, 0])
        missing = np.nonzero(examined & ~found)[0].tolist()
        if not found.any():
            return VideoPrediction(path, "no_face", "no face found in any frame", fps=fps, num_frames=len(frames),
                                   frames_without_face=missing)
        frames = crop_faces(frames, fill_and_smooth(boxes))
    pred, loaded = predict_frames(model, frames, class_names, num_frames, image_size, device)
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
        fps=fps if np.isfinite(fps) else None, num_frames=len(frames), frames_without_face=missing,
        message="" if not missing else f"{len(missing)} frames without a face; their boxes were interpolated",
    )
