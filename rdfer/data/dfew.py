"""DFEW (Dynamic Facial Expressions in the Wild): 5-fold single-labelled splits of face-cropped clips."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from .emotions import EMOTIONS
from .video_csv import VideoListDataset, label_index, read_csv_rows, short_repr

__all__ = ["DFEW", "DFEW_SPLITS"]

DFEW_SPLITS = ("train", "test")


def _clip_folders(clip_root: Path) -> Tuple[set, Dict[int, str]]:
    """Folder names under ``clip_root`` and ``int(name) -> name`` for numeric names, listed once
    (16k clips: one listdir instead of a stat per CSV row)."""
    names = set(os.listdir(clip_root))
    numbers = ((label_index(n), n) for n in names)
    return names, {k: n for k, n in numbers if k is not None}


class DFEW(VideoListDataset):
    """DFEW fold ``fold`` (1..5), split ``"train"`` or ``"test"``.

    Layout under ``root``::

        EmoLabel_DataSplit/train(single-labeled)/set_1.csv .. set_5.csv
        EmoLabel_DataSplit/test(single-labeled)/set_1.csv .. set_5.csv
        Clip/clip_224x224/<video_name>/1.jpg, 2.jpg, ...

    The split CSVs have a header ``video_name,label``; names are bare (``1``) or zero-padded
    (``00001``) integers, matched to the clip folder whichever way it is named on disk. Labels
    1..7 = Happy, Sad, Neutral, Angry, Surprise, Disgust, Fear become 0..6 (:data:`~rdfer.EMOTIONS`).
    Frames are read in numeric order.

    Construction fails (ValueError / FileNotFoundError naming the CSV and its row, header = row 1)
    on a missing column, a label outside 1..7, a clip folder missing on disk, an empty split, a
    fold outside 1..5 or a split other than train/test. Items: see
    :class:`~rdfer.data.video_csv.VideoListDataset`.

    Args:
        root: the DFEW folder.
        fold: 1..5.
        split: ``"train"`` or ``"test"``.
        num_frames: ``T`` frames per item (default 64).
        image_size: frame side after resizing (default 112).
        train: jittered frame sampling; defaults to ``split == "train"``.
        decode_threads: threads decoding one item's frames (default: 1 in DataLoader workers,
            else one per core up to 4); see :class:`~rdfer.data.video_csv.VideoListDataset`.
    """

    def __init__(self, root: Union[str, "os.PathLike[str]"], fold: int, split: str, num_frames: int = 64,
                 image_size: int = 112, train: Optional[bool] = None, decode_threads: Optional[int] = None):
        if split not in DFEW_SPLITS:
            raise ValueError(f"DFEW split must be one of {DFEW_SPLITS}, got {split!r}")
        if not isinstance(fold, int) or isinstance(fold, bool) or not 1 <= fold <= 5:
            raise ValueError(f"DFEW fold must be 1..5, got {fold!r}")
        root = Path(root)
        csv_path = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"set_{fold}.csv"
        clip_root = root / "Clip" / "clip_224x224"
        if not csv_path.is_file():
            raise FileNotFoundError(f"DFEW split file not found: {csv_path}")
        if not clip_root.is_dir():
            raise FileNotFoundError(f"DFEW frame folder not found: {clip_root}")
        names, numeric = _clip_folders(clip_root)
        samples: List[Tuple[str, int]] = []
        for row_no, row in read_csv_rows(csv_path, ("video_name", "label")):
            name, label = row["video_name"], row["label"]
            y = label_index(label)  # ASCII digits only; a huge number is refused unconverted
            if y is None or not 1 <= y <= 7:
                raise ValueError(f"{csv_path}, row {row_no}: label {short_repr(label)} is not an integer in 1..7 "
                                 "(1=Happy 2=Sad 3=Neutral 4=Angry 5=Surprise 6=Disgust 7=Fear)")
            number = label_index(name)
            folder = name if name in names else numeric.get(number) if number is not None else None
            if not name or folder is None:
                raise FileNotFoundError(f"{csv_path}, row {row_no}: clip folder for video {short_repr(name)} not "
                                        f"found in {clip_root}")
            samples.append((str(clip_root / folder), y - 1))
        if not samples:
            raise ValueError(f"{csv_path}: empty split (no rows after the header)")
        self.root, self.fold, self.split, self.csv_path = str(root), fold, split, str(csv_path)
        super().__init__(samples, EMOTIONS, num_frames, image_size, split == "train" if train is None else train,
                         decode_threads)
