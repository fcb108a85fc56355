"""Miniature DFEW / FERV39K trees and small videos for the data tests, written with PIL and PyAV.

Every frame encodes its number ``k`` (1-based, as in the file name) in its colour: a flat image of
``(12 * k, 250 - 12 * k, 90)`` (``k <= 20``), which survives JPEG compression and resizing within a few levels,
so :func:`video_frame_numbers` can read the order back from decoded pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def frame_color(k: int) -> Tuple[int, int, int]:
    if not 1 <= k <= 20:
        raise ValueError(f"frame numbers are encoded for 1..20, got {k}")
    return (12 * k, 250 - 12 * k, 90)


def video_frame_numbers(video) -> List[int]:
    """Frame numbers of a uint8 ``(3, T, H, W)`` video tensor."""
    red = np.asarray(video[0], dtype=np.float64)  # (T, H, W)
    return [int(round(red[t].mean() / 12)) for t in range(red.shape[0])]


def write_frame(path: Path, k: int, size: int = 48, mode: str = "RGB") -> Path:
    """One frame encoding ``k`` in PIL ``mode`` (RGB, L, RGBA, P, CMYK), format from the suffix."""
    from PIL import Image

    if mode == "L":  # gray 12 k, so the red channel of the RGB conversion still encodes k
        im = Image.new("L", (size, size), frame_color(k)[0])
    else:
        im = Image.new("RGB", (size, size), frame_color(k))
        if mode == "P":
            im = im.convert("P", palette=Image.ADAPTIVE)  # exact for a flat image (no dithering)
        elif mode != "RGB":
            im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else im.save(path)
    return path


def write_frames(folder: Path, n: int, size: int = 48, pattern: str = "{k}.jpg") -> List[Path]:
    """``n`` frames ``1..n`` named by ``pattern`` (``{k}`` = number, e.g. ``frame_{k:05d}.jpg``)."""
    return [write_frame(folder / pattern.format(k=k), k, size) for k in range(1, n + 1)]


def corrupt(path: Path) -> None:
    """Overwrite an image file with bytes no decoder accepts."""
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" + bytes(64))


# video name -> (label 1..7, frame count); names as they appear in the CSV. On disk the folders are
# named zero-padded for "7" (CSV bare, disk padded) and bare for "00012" (CSV padded, disk bare).
DFEW_CLIPS: Dict[str, Tuple[int, int]] = {"1": (1, 12), "00002": (3, 12), "7": (5, 3), "00012": (7, 10)}
DFEW_DISK_NAMES = {"1": "00001", "00002": "00002", "7": "00007", "00012": "12"}


def make_dfew(root: Path, fold: int = 1, test_clips: Optional[Dict[str, Tuple[int, int]]] = None,
              size: int = 48) -> Path:
    """A DFEW tree: ``train(single-labeled)/set_<fold>.csv`` with :data:`DFEW_CLIPS` and a test split
    with ``test_clips`` (default: clip ``1`` only)."""
    test_clips = test_clips if test_clips is not None else {"1": DFEW_CLIPS["1"]}
    clip_root = root / "Clip" / "clip_224x224"
    for name, (_, n) in {**DFEW_CLIPS, **test_clips}.items():
        disk = DFEW_DISK_NAMES.get(name, name)
        if not (clip_root / disk).exists():
            write_frames(clip_root / disk, n, size)
    for split, clips in (("train", DFEW_CLIPS), ("test", test_clips)):
        write_dfew_csv(root, split, fold, [f"{name},{label}" for name, (label, _) in clips.items()])
    return root


def write_dfew_csv(root: Path, split: str, fold: int, rows: Iterable[str], header: str = "video_name,label") -> Path:
    path = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"set_{fold}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# relative clip path -> (label column as written, frame count)
FERV_CLIPS: Dict[str, Tuple[str, int]] = {
    "Action/Happy/0001": ("Happy", 12),
    "Daily/Fear/0002": ("fear", 3),
    "Talk Show/Angry/0003": ("0", 10),  # FERV39K integer order: 0 = Angry; a scene with a space
}


def make_ferv39k(root: Path, clips: Optional[Dict[str, Tuple[str, int]]] = None, size: int = 48) -> Path:
    clips = clips if clips is not None else FERV_CLIPS
    for rel, (_, n) in clips.items():
        write_frames(root / "2_ClipsforFaceCrop" / rel, n, size)
    for split in ("train", "test"):
        write_ferv_list(root, split, [f"{rel} {label}" for rel, (label, _) in clips.items()])
    return root


def write_ferv_list(root: Path, split: str, lines: Iterable[str]) -> Path:
    path = root / "4_setups" / "All_scenes" / f"{split}_All.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_video(path: Path, n: int, size: int = 48, fps: int = 10) -> Path:
    """An mp4 (mpeg4, yuv420p) of ``n`` gray frames ``(12 k, 12 k, 12 k)``, ``k = 1..n`` (gray: the
    chroma subsampling and limited-range YUV would shift a colour by more than the 6-level margin)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}  # near-lossless: colours stay readable
        for k in range(1, n + 1):
            img = np.empty((size, size, 3), dtype=np.uint8)
            img[:] = frame_color(k)[0]
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
