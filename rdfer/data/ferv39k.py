"""FERV39K: multi-scene face-cropped clips with one train / test split."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

from .emotions import EMOTIONS
from .video_csv import VideoListDataset, label_index, read_utf8, short_repr

__all__ = ["FERV39K", "FERV39K_CLASSES", "FERV39K_SPLITS"]

# FERV39K's own integer label order (alphabetical), used for integer labels in the split files.
FERV39K_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
FERV39K_SPLITS = ("train", "test")


class FERV39K(VideoListDataset):
    """FERV39K split ``"train"`` or ``"test"``, labels mapped to :data:`~rdfer.EMOTIONS` order.

    Layout under ``root``::

        4_setups/All_scenes/train_All.csv, test_All.csv
        2_ClipsforFaceCrop/<Scene>/<Emotion>/<clip id>/1.jpg, 2.jpg, ...

    Split files are space separated with no header, one clip per line:
    ``Scene/Emotion/clipid Emotion``. The label is an emotion name (case-insensitive: Happy,
    Sad, Neutral, Angry, Surprise, Disgust, Fear) or an integer in FERV39K's own order
    :data:`FERV39K_CLASSES` (0=Angry 1=Disgust 2=Fear 3=Happy 4=Neutral 5=Sad 6=Surprise);
    either way it is stored as the :data:`~rdfer.EMOTIONS` index (the DFEW order), so models
    trained on either data set share one class order.

    Construction fails (ValueError / FileNotFoundError naming the file and its 1-based line) on
    a line without two columns, an unknown label, a clip folder missing on disk or an empty split.
    Items: see :class:`~rdfer.data.video_csv.VideoListDataset`.

    Args:
        root: the FERV39K folder.
        split: ``"train"`` or ``"test"``.
        num_frames: ``T`` frames per item (default 64).
        image_size: frame side after resizing (default 112).
        train: jittered frame sampling; defaults to ``split == "train"``.
        decode_threads: threads decoding one item's frames (default: 1 in DataLoader workers,
            else one per core up to 4); see :class:`~rdfer.data.video_csv.VideoListDataset`.
    """

    def __init__(self, root: Union[str, "os.PathLike[str]"], split: str, num_frames: int = 64,
                 image_size: int = 112, train: Optional[bool] = None, decode_threads: Optional[int] = None):
        if split not in FERV39K_SPLITS:
            raise ValueError(f"FERV39K split must be one of {FERV39K_SPLITS}, got {split!r}")
        root = Path(root)
        list_path = root / "4_setups" / "All_scenes" / f"{split}_All.csv"
        clip_root = root / "2_ClipsforFaceCrop"
        if not list_path.is_file():
            raise FileNotFoundError(f"FERV39K split file not found: {list_path}")
        if not clip_root.is_dir():
            raise FileNotFoundError(f"FERV39K frame folder not found: {clip_root}")
        samples: List[Tuple[str, int]] = []
        with io.StringIO(read_utf8(list_path)) as f:
            for row_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.strip().rsplit(None, 1)  # the clip path itself may contain spaces
                if len(parts) != 2:
                    raise ValueError(f"{list_path}, row {row_no}: expected two space-separated columns "
                                     f"'Scene/Emotion/clipid Emotion', got {line.strip()!r}")
                rel, label = parts
                y = self._label(label)
                if y is None:
                    raise ValueError(f"{list_path}, row {row_no}: unknown label {short_repr(label)}; expected an "
                                     f"emotion name {[e.capitalize() for e in EMOTIONS]} or an integer 0..6 in "
                                     f"FERV39K order {[e.capitalize() for e in FERV39K_CLASSES]}")
                folder = clip_root / rel.strip("/")
                if not folder.is_dir():
                    raise FileNotFoundError(f"{list_path}, row {row_no}: clip folder not found: {folder}")
                samples.append((str(folder), y))
        if not samples:
            raise ValueError(f"{list_path}: empty split (no clip lines)")
        self.root, self.split, self.list_path = str(root), split, str(list_path)
        super().__init__(samples, EMOTIONS, num_frames, image_size, split == "train" if train is None else train,
                         decode_threads)

    @staticmethod
    def _label(text: str) -> Optional[int]:
        name = text.strip().lower()
        k = label_index(name)  # ASCII digits only; a huge number is refused unconverted
        if k is not None:
            return EMOTIONS.index(FERV39K_CLASSES[k]) if k < len(FERV39K_CLASSES) else None
        return EMOTIONS.index(name) if name in EMOTIONS else None
