"""Datasets of ``(path, label)`` samples, where a path is a frame folder or a video file.

:class:`VideoListDataset` turns such a list into the rdfer item format and keeps the bad-input
record; :class:`VideoCSV` reads the list from a CSV of your own videos. DFEW and FERV39K are
:class:`VideoListDataset` subclasses that only parse their split files.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .collate import VideoItems
from .decode import (BadInputWarning, Clip, Selector, UnreadableClip, bad_input_report, read_clip,
                     read_regular_file)
from .emotions import EMOTIONS
from .sampling import sample_indices

__all__ = ["VideoListDataset", "VideoCSV", "read_csv_rows", "read_utf8", "check_class_names", "label_index",
           "short_repr", "MAX_INTEGER_CLASSES"]

#: Integer labels of a CSV without a class list make the classes ``"0" .. max``; a label from this
#: value on is refused rather than turned into that many (mostly empty) classes.
MAX_INTEGER_CLASSES = 1000

PathLike = Union[str, "os.PathLike[str]"]


class VideoListDataset(VideoItems):
    """Videos given as ``(path, label)`` pairs -> rdfer items.

    ``dataset[i]`` is a dict: ``video`` uint8 ``(3, T, S, S)`` (``T = num_frames``,
    ``S = image_size``), ``label`` int, ``index`` ``i``, ``path`` str, ``frame_index`` int64
    ``(T,)`` (0-based positions in the numerically sorted frame list or the decoded stream),
    ``fps`` (float or None) and ``valid``. Frames are picked with
    :func:`~rdfer.data.sample_indices` (training: jittered segments; eval: uniform, centred).

    Bad input: an unreadable frame is replaced by its nearest readable neighbour, recorded in
    ``replaced_frames`` (``path -> [(bad_frame, replacement)]``) and warned about once; a sample
    with nothing readable comes back with ``valid=False`` and a zero video, recorded in
    ``bad_samples`` (``path -> reason``). :meth:`bad_sample_report` lists both. With DataLoader
    workers each worker keeps its own record; the training engine collects invalid samples from
    the batches' ``valid`` flags.

    Args:
        samples: ``(path, label)`` pairs, labels in ``0..len(classes)-1``.
        classes: class names.
        num_frames: ``T``, frames per item.
        image_size: ``S``, frame side after resizing.
        train: jittered (True) or centred (False) frame sampling.
        decode_threads: threads decoding the frames of one frame-folder item. Default (None):
            1 inside DataLoader workers (they already decode in parallel), else up to 4, one per
            available core, so ``num_workers=0`` loading and ``rdfer pack`` use the machine too.
    """

    def __init__(self, samples: Sequence[Tuple[str, int]], classes: Sequence[str], num_frames: int = 64,
                 image_size: int = 112, train: bool = False, decode_threads: Optional[int] = None):
        if num_frames < 1 or image_size < 1:
            raise ValueError(f"num_frames and image_size must be >= 1, got {num_frames}, {image_size}")
        self.samples: List[Tuple[str, int]] = [(str(p), int(y)) for p, y in samples]
        self.labels: List[int] = [y for _, y in self.samples]
        self.classes: List[str] = list(classes)
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.train = bool(train)
        if decode_threads is not None and decode_threads < 1:
            raise ValueError(f"decode_threads must be >= 1 or None, got {decode_threads}")
        self.decode_threads = decode_threads
        self.bad_samples: Dict[str, str] = {}
        self.replaced_frames: Dict[str, List[Tuple[str, str]]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _threads(self) -> int:
        if self.decode_threads is not None:
            return self.decode_threads
        if get_worker_info() is not None:
            return 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(4, cores))

    def read_clip(self, index: int, select: Selector, size: Optional[int] = None) -> Optional[Clip]:
        """Decode the frames ``select(n)`` of sample ``index`` at ``size`` px (default
        ``image_size``), recording bad input; None when nothing could be read."""
        path = self.samples[index][0]
        try:
            clip = read_clip(path, select, size or self.image_size, self._threads())
        except UnreadableClip as exc:
            if path not in self.bad_samples:
                self.bad_samples[path] = str(exc)
                warnings.warn(f"{path}: unreadable sample ({exc}); returned with valid=False", BadInputWarning,
                              stacklevel=3)
            return None
        if clip.replaced:
            seen = self.replaced_frames.setdefault(path, [])
            for bad, good in clip.replaced:
                if (bad, good) not in seen:
                    seen.append((bad, good))
                    warnings.warn(f"{bad}: unreadable frame ({clip.errors.get(bad, 'error')}); replaced by {good}",
                                  BadInputWarning, stacklevel=3)
        return clip

    def _item(self, index: int, out: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        path, label = self.samples[index]
        t, s = self.num_frames, self.image_size
        video = torch.empty((3, t, s, s), dtype=torch.uint8) if out is None else out
        clip = self.read_clip(index, lambda n: sample_indices(n, t, self.train))
        if clip is None:
            video.zero_()
            return dict(video=video, label=label, index=index, path=path,
                        frame_index=torch.zeros(t, dtype=torch.long), fps=None, valid=False)
        # (T, H, W, C) -> (C, T, H, W) in one transposing copy; numpy's is 2-3x faster than torch's
        # for uint8 (and DataLoader workers run torch with one thread).
        np.copyto(video.numpy(), clip.frames.transpose(3, 0, 1, 2))
        return dict(video=video, label=label, index=index, path=path, frame_index=clip.frame_index,
                    fps=clip.fps, valid=True)

    def bad_sample_report(self) -> str:
        """Human-readable list of unreadable samples and replaced frames ('' when none)."""
        return bad_input_report(self.bad_samples, self.replaced_frames)

    def extra_repr(self) -> str:
        return (f"{len(self)} videos, {len(self.classes)} classes, num_frames={self.num_frames}, "
                f"image_size={self.image_size}, train={self.train}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def read_utf8(path: PathLike, max_bytes: Optional[int] = None, what: str = "file") -> str:
    """The text of a UTF-8 file (a leading byte order mark, as Excel writes, is dropped).

    Raises ValueError naming the file, the row (1-based line) and the offending byte otherwise,
    where Python's own error names neither the file nor the line; also for a FIFO or device
    (reading it would block or never end) and a file over ``max_bytes`` (``what`` names it).
    """
    data = read_regular_file(path, max_bytes, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        row = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}, row {row}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                         f"{err.start}); save the file as UTF-8") from None


#: Longest CSV field (characters): a path (Linux's PATH_MAX is 4096 bytes) or a label. A longer
#: one is a broken file (e.g. an unclosed quote swallowing the rest of it), not data.
MAX_CSV_FIELD = 4096


def _bounded_rows(reader, csv_path: PathLike) -> Iterator[List[str]]:
    """The rows of a ``csv.reader``; a malformed row or an over-long field is a ValueError
    naming the file and the row, not an unexpected ``_csv.Error``."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # e.g. a field over csv's own limit (131072 characters)
            raise ValueError(f"{csv_path}, row {reader.line_num}: not a readable CSV row ({err}); is a quote "
                             f"left open?") from None
        longest = max((len(cell) for cell in row), default=0)
        if longest > MAX_CSV_FIELD:
            raise ValueError(f"{csv_path}, row {reader.line_num}: a field of {longest} characters, more than the "
                             f"{MAX_CSV_FIELD} a path or label may have; is a quote left open?")
        yield row


def read_csv_rows(csv_path: PathLike, required: Sequence[str]) -> Iterator[Tuple[int, Dict[str, str]]]:
    """Rows of a CSV with a header: ``(row number, {column: value})``, blank rows skipped.

    Column names are matched case-insensitively and stripped; the row number is the 1-based
    line in the file (the header is row 1). Raises ValueError naming the file (and row) when a
    required column is missing or the file is not UTF-8 text.
    """
    with io.StringIO(read_utf8(csv_path), newline="") as f:
        reader = csv.reader(f)
        header: Optional[List[str]] = None
        for row in _bounded_rows(reader, csv_path):
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                missing = [c for c in required if c not in header]
                if missing:
                    raise ValueError(f"{csv_path}, row {reader.line_num}: missing column(s) {missing}; "
                                     f"the header must contain {list(required)}, found {header}")
                continue
            if len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            yield reader.line_num, {k: v.strip() for k, v in zip(header, row)}
    if header is None:
        raise ValueError(f"{csv_path}, row 1: empty file; expected a header with {list(required)}")


def label_index(text: str) -> Optional[int]:
    """A label written as a non-negative integer, else None.

    Only ASCII digits count (Python's ``int`` also takes ``+1``, ``1_0`` and other scripts'
    digits, which are no one's class index). A string of more than 100 digits comes back as
    ``10**100``, so a range check refuses it without converting it.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= 100 else 10**100


def short_repr(text: str, limit: int = 40) -> str:
    """``repr`` of a label, cut short when it is very long (a corrupt cell must not flood the error)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _listed(names: Sequence[str], limit: int = 12) -> str:
    names = list(names)
    if len(names) <= limit:
        return str(names)
    return str(names[:limit])[:-1] + f", ... ({len(names)} in all)]"


def check_class_names(classes: Sequence[str], what: str = "the class list") -> List[str]:
    """``classes`` as a list of str, after refusing an empty list, an empty name, a name given twice
    and two names that differ only in case (a label is matched to a name ignoring case when no
    name matches it exactly, so such names would not stay two classes)."""
    names = [str(c) for c in classes]
    if not names:
        raise ValueError(f"{what} is empty")
    seen: Dict[str, str] = {}
    for name in names:
        if not name.strip():
            raise ValueError(f"{what} {_listed(names)} has an empty class name")
        other = seen.get(name.casefold())
        if other is None:
            seen[name.casefold()] = name
        elif other == name:
            raise ValueError(f"{what} {_listed(names)} names {short_repr(name)} twice; each class needs one name")
        else:
            raise ValueError(f"{what} {_listed(names)} has {short_repr(other)} and {short_repr(name)}, which differ "
                             f"only in case; give the classes names that differ in more than case")
    return names


class VideoCSV(VideoListDataset):
    """Your own videos listed in a CSV: a header with ``path`` and ``label`` (other columns are
    ignored), one video per row.

    ``path`` is a frame folder (``*.jpg|jpeg|png|bmp``, numeric order) or a video file
    (mp4/avi/mov/webm/mkv or anything else FFmpeg reads, decoded with PyAV); relative paths are
    resolved against the CSV's folder. The videos should be face crops (frames are resized to
    ``image_size`` square without keeping the aspect ratio).

    Labels and class names, in this order of rules:

    0. Two labels of the CSV that differ only in case (``Cat``, ``cat``) are an error naming both
       rows: one class written two ways, or two classes whose names would merge.
    1. ``classes`` given (e.g. the training set's classes for the test CSV; no name twice, no
       two names differing only in case): a label is a class name (exactly, or else ignoring
       case: ``Happy`` is ``happy``) or an integer index into ``classes``; anything else is an
       error.
    2. Every label is one of :data:`~rdfer.EMOTIONS` (ignoring case): the classes are the
       EMOTIONS the CSV uses, in DFEW's order (all 7 when all occur, as for DFEW-trained models);
       a class with no video is never made (pass ``classes`` for a fixed list).
    3. Every label is an integer ``k >= 0`` (ASCII digits): the classes are ``"0" .. "max"``
       and ``k`` is the class; a label of :data:`MAX_INTEGER_CLASSES` or more is an error.
    4. Some labels are EMOTIONS and others are not: an error naming the first other label's row
       (most likely a typo, e.g. ``joyful``), with the nearest emotion. Pass ``classes`` when your
       class set really is different.
    5. No label is an emotion: the classes are the sorted unique label strings.

    Errors at construction name the CSV and row: missing column, unknown label, missing file or
    folder, no rows. Items: see :class:`VideoListDataset`.
    """

    def __init__(self, csv_path: PathLike, num_frames: int = 64, image_size: int = 112, train: bool = False,
                 classes: Optional[Sequence[str]] = None, decode_threads: Optional[int] = None):
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise FileNotFoundError(f"CSV not found: {csv_path}")
        if classes is not None:
            classes = check_class_names(classes, f"{csv_path}: the given classes")
        base = csv_path.parent
        rows: List[Tuple[int, str, str]] = []
        spellings: Dict[str, Tuple[int, str]] = {}
        for row_no, row in read_csv_rows(csv_path, ("path", "label")):
            if not row["path"]:
                raise ValueError(f"{csv_path}, row {row_no}: empty path")
            label = row["label"]
            if not label:
                raise ValueError(f"{csv_path}, row {row_no}: empty label")
            first_row, first = spellings.setdefault(label.casefold(), (row_no, label))
            if first != label:
                raise ValueError(f"{csv_path}, row {row_no}: label {short_repr(label)} differs only in case from "
                                 f"{short_repr(first)} (row {first_row}); write one class one way, and give two "
                                 f"classes names that differ in more than case")
            path = Path(row["path"]).expanduser()
            path = path if path.is_absolute() else base / path
            if not path.exists():
                raise FileNotFoundError(f"{csv_path}, row {row_no}: {path} does not exist "
                                        "(relative paths are resolved against the CSV's folder)")
            rows.append((row_no, str(path), label))
        if not rows:
            raise ValueError(f"{csv_path}: empty split (no rows after the header)")
        if classes is None:
            classes = self._infer_classes(csv_path, rows)
        exact = {c: k for k, c in enumerate(classes)}
        folded = {c.casefold(): k for k, c in enumerate(classes)}  # unambiguous: check_class_names
        samples: List[Tuple[str, int]] = []
        for row_no, path, label in rows:
            k = exact.get(label, folded.get(label.casefold()))
            if k is None:
                i = label_index(label)
                if i is None or i >= len(classes):
                    raise ValueError(f"{csv_path}, row {row_no}: unknown label {short_repr(label)}; classes are "
                                     f"{_listed(classes)} (or integer indices 0..{len(classes) - 1})")
                k = i
            samples.append((path, k))
        self.csv_path = str(csv_path)
        super().__init__(samples, classes, num_frames, image_size, train, decode_threads)

    @staticmethod
    def _infer_classes(csv_path: Path, rows: Sequence[Tuple[int, str, str]]) -> List[str]:
        """Rules 2-5 of the class docstring: the class list of a CSV given none."""
        names = [label for _, _, label in rows]
        if all(x.lower() in EMOTIONS for x in names):
            # The emotions present, in DFEW's order: a class with no training video would be one
            # the model can never learn, yet may predict.
            present = {x.lower() for x in names}
            return [e for e in EMOTIONS if e in present]
        ints = [label_index(x) for x in names]
        if all(i is not None for i in ints):
            top = max(ints)  # type: ignore[type-var]
            if top >= MAX_INTEGER_CLASSES:
                row_no, label = next((r, x) for (r, _, x), i in zip(rows, ints) if i == top)
                raise ValueError(f"{csv_path}, row {row_no}: integer label {short_repr(label)} is not a class index "
                                 f"0..{MAX_INTEGER_CLASSES - 1} (integer labels make the classes 0..max); fix the "
                                 f"label, or give the class list (rdfer train csv --classes A,B,...)")
            return [str(k) for k in range(top + 1)]  # type: ignore[operator]
        if any(x.lower() in EMOTIONS for x in names):
            # A typo must not quietly make an 8th class and reorder the other 7.
            row_no, label = next((r, x) for r, _, x in rows if x.lower() not in EMOTIONS)
            near = difflib.get_close_matches(label.lower(), EMOTIONS, n=1, cutoff=0.5)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"{csv_path}, row {row_no}: label {short_repr(label)} is not one of the emotions "
                             f"{list(EMOTIONS)}{hint}, while other rows use them; fix the label, or give "
                             f"the full class list (rdfer train csv --classes A,B,...)")
        return sorted(set(names))
