"""SyntheticDFER: procedurally drawn dynamic expressions with ground truth for noise, hardness
and the key-expression window.

No public DFER data set says which labels are wrong, which videos are hard or where the
expression is. This generator does, so the package runs with no licensed data and the paper's
central claim (agreement tells hard samples from wrong labels) can be *measured*.

Each video is a face (head, eyes, brows, mouth; identity, skin tone, pose and lighting drawn per
video) that rests neutral, moves through onset -> apex -> offset of one of the 7
:data:`~rdfer.EMOTIONS` inside a **key window** of random position and length, and may show a
non-target **distractor** segment elsewhere (talking, blinking, a head movement or a weak other
expression). A fraction ``hard_rate`` of the videos is **hard**: low intensity, a blend with a
second expression, or a short key window next to a long, strong distractor expression.
Label noise replaces exactly ``round(noise_rate * N)`` labels with a different class.

Everything is drawn from ``seed`` (the per-video plan from ``(seed, index)``), so an item is the
same in every process, epoch and worker; frames are rendered on the fly (about a millisecond per
32-px video) with an optional in-memory cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .emotions import EMOTIONS

__all__ = ["SyntheticDFER", "ASYMMETRIC_NOISE", "CLASS_DISTRIBUTIONS", "EXPRESSION_UNITS", "PROTOTYPES", "class_counts",
           "render_preview"]

# Facial "action units" the renderer animates, and each emotion's apex in those units (the
# FACS-like prototypes: happy = smile + cheek squint, surprise = raised brows + wide eyes + open jaw...).
EXPRESSION_UNITS = ("brow_raise", "brow_inner", "eye_open", "mouth_curve", "mouth_open", "mouth_width", "nose_wrinkle")
PROTOTYPES = np.array([
    # raise inner  eye  curve  open  width  nose
    [0.0, 0.0, -0.5, 1.0, 0.35, 0.7, 0.0],    # happy
    [0.1, 1.0, -0.4, -1.0, 0.0, -0.4, 0.0],   # sad
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],      # neutral
    [-0.8, -1.0, -0.3, -0.4, 0.0, -0.6, 0.2],  # angry
    [1.0, 0.2, 1.0, 0.0, 1.0, -0.5, 0.0],     # surprise
    [-0.4, -0.3, -0.6, -0.6, 0.2, 0.1, 1.0],  # disgust
    [0.8, 0.9, 0.9, -0.3, 0.5, 0.8, 0.0],     # fear
], dtype=np.float32)

# Asymmetric noise: the confusions human annotators make on DFEW-like data (DFEW's confusion
# matrices): a wrong label goes to the class the expression is most often mistaken for.
ASYMMETRIC_NOISE: Dict[str, str] = {
    "happy": "neutral", "sad": "neutral", "neutral": "sad", "angry": "disgust",
    "surprise": "fear", "disgust": "angry", "fear": "surprise",
}

# Class proportions in EMOTIONS order. "long_tail" follows DFEW's 7-class training data: disgust
# 1.22% and fear 8.14% are the shares the paper gives (section IV-G); happy, sad, neutral, angry
# and surprise split the rest in DFEW's order of frequency (rounded, approximate). Largest /
# smallest = 18.9x, the rarest class being disgust.
CLASS_DISTRIBUTIONS: Dict[str, Tuple[float, ...]] = {
    "uniform": (1 / 7,) * 7,
    "long_tail": (0.23, 0.18, 0.23, 0.155, 0.1114, 0.0122, 0.0814),
}

HARD_KINDS = ("low_intensity", "blend", "distractor")
DISTRACTOR_KINDS = ("talk", "blink", "head_move", "weak_expression")
FPS = 25.0  # nominal frame rate of the generated videos (used for seconds in reports)


@dataclass
class _Plan:
    """Everything that decides one video, drawn from ``(seed, index)``."""

    label: int  # the clean label
    key_window: Tuple[int, int]  # [start, end) in frames
    intensity: float
    blend_class: int  # -1 when not blended
    blend_weight: float
    distractor: Optional[Tuple[str, int, int, int, float]]  # kind, start, end, class, intensity
    hard_kind: str  # "" for ordinary videos
    render_seed: int
    static: bool = False  # the expression at its apex in every frame (no onset/offset)


class SyntheticDFER(Dataset):
    """Procedural dynamic facial expressions with ground-truth noise, hardness and key window.

    Args:
        num_videos: N, the number of videos.
        num_frames: T, frames per video (the whole video; it is the source the model samples).
        image_size: frame side in pixels (features stay visible from 32 px).
        noise_rate: fraction of labels replaced by a different class (exactly ``round(rate * N)``).
        noise: ``"symmetric"`` (uniform over the other 6 classes) or ``"asymmetric"``
            (:data:`ASYMMETRIC_NOISE`).
        hard_rate: fraction of hard videos (exactly ``round(rate * N)``).
        distractor_rate: probability that an ordinary video has a distractor segment.
        channels: 3 (RGB) or 1 (grayscale).
        seed: everything is drawn from it; two datasets with one seed are identical.
        cache: keep rendered videos in memory (each worker process has its own cache).
        class_distribution: ``"uniform"`` (class counts differ by at most 1), ``"long_tail"``
            (DFEW-like, :data:`CLASS_DISTRIBUTIONS`: 23% happy ... 1.22% disgust) or 7 proportions
            in :data:`~rdfer.EMOTIONS` order; counts are exact (:func:`class_counts`).
        key_window: ``(min, max)`` length of an ordinary video's key window as a fraction of
            ``num_frames`` (default 30-55%); short windows in long videos leave a re-sampler room
            to choose. Hard ``distractor`` videos keep 20-30%.
        static: the expression at full intensity in **every** frame, no hard videos and no
            distractors (``hard_rate`` and ``distractor_rate`` are ignored): like sets of
            posed expression sequences where any frame shows the emotion, which leaves a
            re-sampler nothing to find (issue 28's small-data setting).

    Items: ``video`` uint8 ``(C, T, H, W)``, ``label`` (possibly noisy), ``index``, ``path``
    (``"synthetic/NNNNN"``), ``frame_index`` ``(T,)``, ``fps``, ``valid`` (always True), plus the
    ground truth ``clean_label``, ``is_noisy``, ``is_hard``, ``key_window`` ``(start, end)``
    (end exclusive) and ``difficulty`` (``"ordinary"`` or the hard kind). The same ground truth
    is available for the whole set without rendering: ``labels``, ``clean_labels``,
    ``is_noisy``, ``is_hard`` (tensors ``(N,)``) and ``key_windows`` ``(N, 2)``.
    """

    def __init__(self, num_videos: int, num_frames: int = 16, image_size: int = 48, noise_rate: float = 0.0,
                 noise: str = "symmetric", hard_rate: float = 0.2, distractor_rate: float = 0.3, channels: int = 3,
                 seed: int = 0, cache: bool = False, train: bool = False,
                 class_distribution: Union[str, Sequence[float]] = "uniform",
                 key_window: Tuple[float, float] = (0.3, 0.55), static: bool = False) -> None:
        if num_videos < 1:
            raise ValueError(f"num_videos must be >= 1, got {num_videos}")
        if num_frames < 4:
            raise ValueError(f"num_frames must be >= 4 for onset, apex and offset, got {num_frames}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {image_size}")
        for name, rate in (("noise_rate", noise_rate), ("hard_rate", hard_rate), ("distractor_rate", distractor_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        if noise not in ("symmetric", "asymmetric"):
            raise ValueError(f"noise must be 'symmetric' or 'asymmetric', got {noise!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        lo, hi = (float(v) for v in key_window)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"key_window must be a (min, max) fraction of the video with 0 < min <= max <= 1, got {key_window}")
        self.static = bool(static)
        if self.static:
            hard_rate, distractor_rate, lo, hi = 0.0, 0.0, 1.0, 1.0
        self.key_window_range = (lo, hi)
        self.class_distribution = class_distribution
        counts = class_counts(num_videos, class_distribution)
        self.num_videos, self.num_frames, self.image_size = int(num_videos), int(num_frames), int(image_size)
        self.noise_rate, self.noise, self.hard_rate, self.distractor_rate = noise_rate, noise, hard_rate, distractor_rate
        self.channels, self.seed, self.train = channels, int(seed), bool(train)
        self.classes: List[str] = list(EMOTIONS)
        self.bad_samples: Dict[str, str] = {}  # the item format's bad-input record: always empty here
        self.replaced_frames: Dict[str, list] = {}

        k, n = len(EMOTIONS), self.num_videos
        rng = np.random.default_rng([self.seed, 0x5EED])
        # Uniform keeps the interleaved layout of earlier versions, so a seed gives the same videos.
        layout = np.arange(n) % k if class_distribution == "uniform" else np.repeat(np.arange(k), counts)
        clean = rng.permutation(layout)
        hard = np.zeros(n, dtype=bool)
        hard[rng.permutation(n)[: int(round(hard_rate * n))]] = True
        noisy = np.zeros(n, dtype=bool)
        noisy[rng.permutation(n)[: int(round(noise_rate * n))]] = True
        labels = clean.copy()
        for i in np.flatnonzero(noisy):
            if noise == "symmetric":
                labels[i] = (clean[i] + rng.integers(1, k)) % k  # uniform over the other classes
            else:
                labels[i] = EMOTIONS.index(ASYMMETRIC_NOISE[EMOTIONS[clean[i]]])
        self._plans = [self._plan(i, int(clean[i]), bool(hard[i])) for i in range(n)]

        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.clean_labels = torch.as_tensor(clean, dtype=torch.long)
        self.is_noisy = torch.as_tensor(noisy)
        self.is_hard = torch.as_tensor(hard)
        self.key_windows = torch.tensor([p.key_window for p in self._plans], dtype=torch.long)
        self.samples = [(self.path(i), int(labels[i])) for i in range(n)]
        self._cache: Optional[Dict[int, torch.Tensor]] = {} if cache else None

    # -- planning -------------------------------------------------------------------------------
    def _plan(self, index: int, label: int, hard: bool) -> _Plan:
        rng = np.random.default_rng([self.seed, index])
        t, k = self.num_frames, len(EMOTIONS)
        hard_kind = str(rng.choice(HARD_KINDS)) if hard else ""
        # Hard "distractor" videos keep a short key window (20-30%) beside a long distractor.
        frac = rng.uniform(0.2, 0.3) if hard_kind == "distractor" else rng.uniform(*self.key_window_range)
        length = int(np.clip(round(frac * t), 3, t))
        start = int(rng.integers(0, t - length + 1))
        intensity = rng.uniform(0.3, 0.45) if hard_kind == "low_intensity" else rng.uniform(0.8, 1.0)
        others = [c for c in range(k) if c != label]
        blend_class, blend_weight = -1, 0.0
        if hard_kind == "blend":
            blend_class, blend_weight = int(rng.choice(others)), float(rng.uniform(0.4, 0.5))
        distractor = None
        before, after = start, t - (start + length)
        if hard_kind == "distractor" or (not hard and rng.random() < self.distractor_rate):
            if max(before, after) >= 2:
                span = before if before >= after else after
                lo = 0 if before >= after else start + length
                if hard_kind == "distractor":  # long and strong: a second expression competes
                    kind, d_len, d_int = "weak_expression", span, rng.uniform(0.6, 0.8)
                else:
                    kind = str(rng.choice(DISTRACTOR_KINDS))
                    d_len = int(rng.integers(2, span + 1))
                    d_int = rng.uniform(0.3, 0.45)
                d_start = lo + int(rng.integers(0, span - d_len + 1))
                distractor = (kind, d_start, d_start + d_len, int(rng.choice(others)), float(d_int))
        return _Plan(label, (start, start + length), float(intensity), blend_class, blend_weight, distractor,
                     hard_kind, int(rng.integers(2**31)), self.static)

    # -- Dataset API ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_videos

    @staticmethod
    def path(index: int) -> str:
        return f"synthetic/{index:05d}"

    def render(self, index: int) -> torch.Tensor:
        """The video of item ``index``: uint8 ``(C, T, H, W)``."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        video = torch.from_numpy(_render(self._plans[index], self.num_frames, self.image_size, self.channels))
        if self._cache is not None:
            self._cache[index] = video
        return video

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < self.num_videos:
            raise IndexError(f"index {index} out of range for {self.num_videos} videos")
        plan = self._plans[index]
        return {
            "video": self.render(index),
            "label": int(self.labels[index]),
            "index": int(index),
            "path": self.path(index),
            "frame_index": torch.arange(self.num_frames),
            "fps": FPS,
            "valid": True,
            "clean_label": plan.label,
            "is_noisy": bool(self.is_noisy[index]),
            "is_hard": bool(self.is_hard[index]),
            "key_window": plan.key_window,
            "difficulty": plan.hard_kind or "ordinary",
        }

    def bad_sample_report(self) -> str:
        return ""

    def extra_repr(self) -> str:
        return (f"num_videos={self.num_videos}, num_frames={self.num_frames}, image_size={self.image_size}, "
                f"noise_rate={self.noise_rate}, noise={self.noise!r}, hard_rate={self.hard_rate}, seed={self.seed}, "
                f"class_distribution={self.class_distribution!r}, key_window={self.key_window_range}"
                + (", static=True" if self.static else ""))

    def __repr__(self) -> str:
        return f"SyntheticDFER({self.extra_repr()})"


def class_counts(num_videos: int, distribution: Union[str, Sequence[float]] = "uniform") -> np.ndarray:
    """Exact per-class video counts for ``num_videos`` videos: ``(7,)`` ints summing to ``num_videos``.

    ``distribution`` is a name from :data:`CLASS_DISTRIBUTIONS` or 7 non-negative proportions.
    Counts follow the largest-remainder rule, and every class with a positive share gets at least
    one video when ``num_videos >= 7`` (so a long tail never loses its rarest class).
    """
    k = len(EMOTIONS)
    if isinstance(distribution, str):
        if distribution not in CLASS_DISTRIBUTIONS:
            raise ValueError(f"class_distribution must be one of {sorted(CLASS_DISTRIBUTIONS)} or {k} proportions, "
                             f"got {distribution!r}")
        distribution = CLASS_DISTRIBUTIONS[distribution]
    p = np.asarray(distribution, dtype=np.float64)
    if p.shape != (k,) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"class_distribution needs {k} non-negative proportions (EMOTIONS order), got {distribution!r}")
    p = p / p.sum()
    exact = p * num_videos
    counts = np.floor(exact).astype(np.int64)
    if num_videos >= k:
        counts = np.maximum(counts, (p > 0).astype(np.int64))
    # Hand out (or take back) the difference by largest remainder, taking only from classes above one.
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    diff = num_videos - int(counts.sum())
    i = 0
    while diff > 0:
        counts[order[i % k]] += 1
        diff -= 1
        i += 1
    for j in np.argsort(-counts, kind="stable"):
        if diff == 0:
            break
        take = min(-diff, int(counts[j]) - 1)
        counts[j] -= take
        diff += take
    return counts


# -- rendering ----------------------------------------------------------------------------------
def _profile(t: int, start: int, end: int) -> np.ndarray:
    """Onset -> apex -> offset over frames [start, end): a smooth trapezoid peaking at 1. ``(t,)``."""
    x = (np.arange(t) + 0.5 - start) / max(end - start, 1)  # 0..1 inside the window
    ramp = 0.3
    up = np.clip(x / ramp, 0, 1)
    down = np.clip((1 - x) / ramp, 0, 1)
    p = np.minimum(up, down)
    p = np.sin(p * np.pi / 2) ** 2
    p[(x < 0) | (x > 1)] = 0.0
    return p.astype(np.float32)


def _units(plan: _Plan, t: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame expression units ``(t, 7)`` and head offsets ``(t, 2)``."""
    target = PROTOTYPES[plan.label]
    if plan.blend_class >= 0:
        target = (1 - plan.blend_weight) * target + plan.blend_weight * PROTOTYPES[plan.blend_class]
    profile = np.ones(t, dtype=np.float32) if plan.static else _profile(t, *plan.key_window)
    units = profile[:, None] * (plan.intensity * target)[None]
    offsets = np.cumsum(rng.normal(0, 0.006, size=(t, 2)), axis=0).astype(np.float32)  # slow head drift
    if plan.distractor is not None:
        kind, s, e, cls, strength = plan.distractor
        prof = _profile(t, s, e)
        if kind == "weak_expression":
            units = units + prof[:, None] * strength * PROTOTYPES[cls][None]
        elif kind == "talk":
            phase = rng.uniform(0, np.pi)
            units[:, 4] += prof * 0.45 * np.abs(np.sin(np.arange(t) * 1.7 + phase))
        elif kind == "blink":
            units[:, 2] -= 1.6 * (prof > 0.5)
        else:  # head_move
            units = units
            offsets = offsets + prof[:, None] * rng.uniform(-0.12, 0.12, size=2).astype(np.float32)
    return units.astype(np.float32), offsets


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    """Anti-aliased inside mask from a signed distance (negative inside)."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def _ellipse(x, y, cx, cy, rx, ry, px):
    # Approximate signed distance of an axis-aligned ellipse (exact enough for tiny features).
    rx, ry = np.maximum(rx, 1e-3), np.maximum(ry, 1e-3)
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return _soft((r - 1) * np.minimum(rx, ry), px)


def _segment(x, y, ax, ay, bx, by, width, px):
    dx, dy = bx - ax, by - ay
    h = np.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy + 1e-8), 0, 1)
    d = np.sqrt((x - ax - h * dx) ** 2 + (y - ay - h * dy) ** 2)
    return _soft(d - width, px)


def _render(plan: _Plan, t: int, size: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(plan.render_seed)
    units, offsets = _units(plan, t, rng)
    # identity, skin, lighting
    skin = np.array([rng.uniform(0.55, 0.95), 0, 0], dtype=np.float32)
    skin[1] = skin[0] * rng.uniform(0.72, 0.85)
    skin[2] = skin[0] * rng.uniform(0.55, 0.72)
    background = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
    brow_color = skin * rng.uniform(0.2, 0.4)
    lip_color = np.array([0.55, 0.2, 0.22], dtype=np.float32) * rng.uniform(0.7, 1.0)
    head_rx, head_ry = rng.uniform(0.72, 0.84), rng.uniform(0.86, 0.97)
    eye_dx, eye_y = rng.uniform(0.3, 0.38), rng.uniform(-0.2, -0.1)
    eye_rx = rng.uniform(0.13, 0.16)
    brow_gap, brow_len = rng.uniform(0.14, 0.18), rng.uniform(0.17, 0.22)
    mouth_y, mouth_hw = rng.uniform(0.4, 0.48), rng.uniform(0.24, 0.3)
    gain, gradient = rng.uniform(0.75, 1.15), rng.uniform(-0.3, 0.3)
    yaw = rng.uniform(-0.06, 0.06)

    px = 2.0 / size
    lin = (np.arange(size, dtype=np.float32) + 0.5) * px - 1.0
    y = lin[None, :, None]  # (1, H, 1)
    x = lin[None, None, :]  # (1, 1, W)
    u = {name: units[:, j][:, None, None] for j, name in enumerate(EXPRESSION_UNITS)}  # (t, 1, 1)
    ox, oy = offsets[:, 0][:, None, None], offsets[:, 1][:, None, None]
    fx = ox + yaw  # features shift with yaw relative to the head outline

    img = np.broadcast_to(background[:, None, None, None] * (1 - 0.3 * (y + 1) / 2), (3, t, size, size)).copy()

    def paint(mask: np.ndarray, color: np.ndarray) -> None:
        nonlocal img
        m = np.broadcast_to(mask, (t, size, size))[None]
        img = img * (1 - m) + color[:, None, None, None] * m

    paint(_ellipse(x, y, ox, oy + 0.05, head_rx, head_ry, px), skin)
    # eyes: white sclera + dark iris; openness scales the vertical radius (squint .. wide)
    open_ry = np.clip(0.075 * (1 + 0.75 * u["eye_open"]), 0.006, None)
    for side in (-1, 1):
        cx = fx + side * eye_dx
        cy = oy + eye_y
        eye = _ellipse(x, y, cx, cy, eye_rx, open_ry, px)
        paint(eye, np.array([0.95, 0.95, 0.92], dtype=np.float32))
        paint(eye * _ellipse(x, y, cx, cy, 0.065, 0.065, px), np.array([0.12, 0.08, 0.05], dtype=np.float32))
        # brows: the inner end moves with brow_inner, the whole brow with brow_raise
        inner_x, outer_x = cx - side * 0.06, cx + side * (brow_len + 0.02)
        base_y = cy - brow_gap - 0.12 * u["brow_raise"]
        inner_y = base_y - 0.09 * u["brow_inner"]
        outer_y = base_y + 0.02 * u["brow_inner"]
        paint(_segment(x, y, inner_x, inner_y, outer_x, outer_y, 0.045, px), brow_color)
    # nose, and the wrinkles of disgust beside it
    nose = _segment(x, y, fx, oy + 0.02, fx, oy + 0.2, 0.018, px)
    paint(nose * 0.5, brow_color)
    for side in (-1, 1):
        wrinkle = _segment(x, y, fx + side * 0.1, oy + 0.02, fx + side * 0.17, oy + 0.16, 0.02, px)
        paint(wrinkle * np.clip(u["nose_wrinkle"], 0, 1), brow_color)
    # mouth: lips follow a parabola whose corners rise (smile) or fall (frown); the jaw opens an ellipse
    hw = mouth_hw * (1 + 0.35 * u["mouth_width"])
    my = oy + mouth_y
    dx = np.clip((x - fx) / hw, -1.2, 1.2)
    lip_y = my - 0.13 * u["mouth_curve"] * dx**2 + 0.04 * u["mouth_curve"]
    opening = np.clip(u["mouth_open"], 0, None) * 0.13
    half = 0.028 + opening / 2
    inside_x = _soft(np.abs(x - fx) - hw, px)
    lips = inside_x * _soft(np.abs(y - (lip_y + opening / 2)) - half, px)
    paint(lips, lip_color)
    cavity = inside_x * _ellipse(x, y, fx, lip_y + opening / 2, hw * 0.85, opening / 2 + 1e-3, px)
    paint(cavity * (opening > 0.01), np.array([0.15, 0.03, 0.05], dtype=np.float32))

    img *= gain * (1 + gradient * x)  # lighting: overall gain and a side light
    img += rng.normal(0, 0.015, size=img.shape).astype(np.float32)  # sensor noise
    if channels == 1:
        img = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# -- preview ------------------------------------------------------------------------------------
def render_preview(out: Union[str, Path], image_size: int = 48, num_frames: int = 16, seed: int = 0,
                   hard: bool = False, scale: int = 2) -> Path:
    """Save a PNG grid, one row per expression (in :data:`EMOTIONS` order) and one column per
    frame, with the key window marked, so a person can see what the model learns from.

    ``hard=True`` draws hard videos (low intensity, blends, long distractors) instead.
    """
    from PIL import Image, ImageDraw

    ds = SyntheticDFER(len(EMOTIONS) * 6, num_frames=num_frames, image_size=image_size, seed=seed,
                       hard_rate=1.0 if hard else 0.0, distractor_rate=0.0 if not hard else 0.3)
    rows = []
    for c in range(len(EMOTIONS)):
        i = int((ds.clean_labels == c).nonzero()[0, 0])
        rows.append((i, ds.render(i)))
    s = image_size * scale
    margin, gap = 80, 2
    grid = Image.new("RGB", (margin + num_frames * (s + gap), len(rows) * (s + gap) + 18), "white")
    draw = ImageDraw.Draw(grid)
    for r, (i, video) in enumerate(rows):
        start, end = ds.key_windows[i].tolist()
        frames = video.permute(1, 2, 3, 0).numpy()  # (T, H, W, C)
        if frames.shape[-1] == 1:
            frames = np.repeat(frames, 3, axis=-1)
        y0 = r * (s + gap) + 18
        name = EMOTIONS[int(ds.clean_labels[i])]
        kind = ds._plans[i].hard_kind
        draw.text((4, y0 + s // 2 - 12), name, fill="black")
        if kind:
            draw.text((4, y0 + s // 2 + 2), kind, fill="gray")
        for f in range(num_frames):
            x0 = margin + f * (s + gap)
            grid.paste(Image.fromarray(frames[f]).resize((s, s), Image.NEAREST), (x0, y0))
            if start <= f < end:  # key window: a red bar under the frame
                draw.rectangle([x0, y0 + s - 3, x0 + s - 1, y0 + s - 1], fill=(220, 30, 30))
    for f in range(num_frames):
        draw.text((margin + f * (s + gap) + 2, 2), str(f), fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    grid.save(tmp, format="PNG")
    tmp.replace(out)
    return out
