"""DFEW loader on a miniature tree of real JPEG files: labels, names, frame order, sampling,
decoding of odd frames and every bad-input case."""

import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from data_trees import (DFEW_CLIPS, DFEW_DISK_NAMES, corrupt, frame_color, make_dfew, video_frame_numbers,
                        write_dfew_csv, write_frame, write_frames)
from rdfer.data import DFEW, EMOTIONS, collate_videos, eval_indices
from rdfer.data.decode import BadInputWarning, list_frames, load_frame


@pytest.fixture
def dfew(tmp_path):
    return make_dfew(tmp_path / "DFEW")


def _clip(root, name):
    return root / "Clip" / "clip_224x224" / DFEW_DISK_NAMES.get(name, name)


def test_labels_names_and_item_format(dfew):
    ds = DFEW(dfew, 1, "train", num_frames=8, image_size=32)
    assert ds.train is True and DFEW(dfew, 1, "test").train is False
    assert ds.classes == list(EMOTIONS)
    # CSV labels 1, 3, 5, 7 -> happy, neutral, surprise, fear
    assert ds.labels == [0, 2, 4, 6]
    # bare CSV name -> padded folder, padded CSV name -> bare folder, and exact matches
    assert [os.path.basename(p) for p, _ in ds.samples] == ["00001", "00002", "00007", "12"]
    assert [y for _, y in ds.samples] == ds.labels
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"video", "label", "index", "path", "frame_index", "fps", "valid"}
        assert item["video"].shape == (3, 8, 32, 32) and item["video"].dtype == torch.uint8
        assert item["video"].is_contiguous()
        assert item["index"] == i and item["label"] == ds.labels[i] and item["path"] == ds.samples[i][0]
        assert item["frame_index"].shape == (8,) and item["frame_index"].dtype == torch.long
        assert item["valid"] is True and item["fps"] is None
    assert ds.bad_sample_report() == "" and ds.bad_samples == {} and ds.replaced_frames == {}


def test_eval_sampling_positions_numeric_order(dfew):
    ds = DFEW(dfew, 1, "train", num_frames=8, image_size=32, train=False)
    for i, (name, (_, n)) in enumerate(DFEW_CLIPS.items()):
        item = ds[i]
        assert item["frame_index"].tolist() == eval_indices(n, 8).tolist()
        # pixels of position p are frame file p + 1 (lexical order would put 10.jpg after 1.jpg)
        assert video_frame_numbers(item["video"]) == [p + 1 for p in item["frame_index"].tolist()]
    assert ds[2]["frame_index"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # the 3-frame clip, T=8
    assert torch.equal(ds[0]["video"], ds[0]["video"])  # eval is deterministic


def test_train_sampling_jitters_within_segments(dfew):
    ds = DFEW(dfew, 1, "train", num_frames=4, image_size=16)
    seen = set()
    for _ in range(12):
        item = ds[0]  # 12 frames, T=4: one frame from each of [0,3), [3,6), [6,9), [9,12)
        idx = item["frame_index"].tolist()
        assert [p // 3 for p in idx] == [0, 1, 2, 3]
        assert video_frame_numbers(item["video"]) == [p + 1 for p in idx]
        seen.add(tuple(idx))
    assert len(seen) > 1
    short = ds[2]["frame_index"].tolist()  # 3 frames, T=4
    assert short == sorted(short) and set(short) <= {0, 1, 2} and len(short) == 4


def test_frame_listing_is_numeric_and_tolerant(tmp_path):
    write_frames(tmp_path, 12, 8, pattern="frame_{k:05d}.jpg")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "._3.jpg").write_bytes(b"resource fork")
    (tmp_path / "sub.jpg").mkdir()
    names = [os.path.basename(p) for p in list_frames(tmp_path)]
    assert names == [f"frame_{k:05d}.jpg" for k in range(1, 13)]
    folder = tmp_path / "plain"
    write_frames(folder, 11, 8)
    assert [os.path.basename(p) for p in list_frames(folder)] == [f"{k}.jpg" for k in range(1, 12)]


def test_grayscale_rgba_palette_cmyk_mixed_sizes(dfew):
    clip = _clip(dfew, "00012")
    for p in clip.iterdir():
        p.unlink()
    kinds = [("1.jpg", "L", 40), ("2.png", "RGBA", 64), ("3.png", "P", 20), ("4.bmp", "RGB", 100),
             ("5.jpg", "CMYK", 30), ("6.jpeg", "RGB", 224)]
    for k, (name, mode, size) in enumerate(kinds, 1):
        write_frame(clip / name, k, size, mode)
    frames = [load_frame(p, 24) for p in list_frames(clip)]
    assert len(frames) == len(kinds)
    for k, img in enumerate(frames, 1):
        assert img.shape == (24, 24, 3) and img.dtype == np.uint8
        expected = [frame_color(k)[0]] * 3 if kinds[k - 1][1] == "L" else frame_color(k)
        assert np.abs(img.reshape(-1, 3).mean(0) - expected).max() < 6, kinds[k - 1]
    item = DFEW(dfew, 1, "train", num_frames=6, image_size=24, train=False)[3]
    assert item["valid"] and video_frame_numbers(item["video"]) == [1, 2, 3, 4, 5, 6]


def test_corrupt_frame_replaced_by_nearest_and_reported(dfew):
    clip = _clip(dfew, "1")
    corrupt(clip / "4.jpg")  # position 3; neighbours 3.jpg and 5.jpg are equally near: the earlier wins
    (clip / "9.jpg").write_bytes((clip / "9.jpg").read_bytes()[:200])  # truncated
    ds = DFEW(dfew, 1, "train", num_frames=12, image_size=16, train=False)
    with pytest.warns(BadInputWarning) as record:
        item = ds[0]
    assert item["valid"] is True
    assert item["frame_index"].tolist() == [0, 1, 2, 2, 4, 5, 6, 7, 7, 9, 10, 11]
    assert video_frame_numbers(item["video"]) == [1, 2, 3, 3, 5, 6, 7, 8, 8, 10, 11, 12]
    path = str(clip)
    assert ds.replaced_frames == {path: [(str(clip / "4.jpg"), str(clip / "3.jpg")),
                                         (str(clip / "9.jpg"), str(clip / "8.jpg"))]}
    messages = [str(w.message) for w in record]
    assert any("4.jpg" in m and "replaced by" in m for m in messages)
    assert any("9.jpg" in m for m in messages)
    report = ds.bad_sample_report()
    assert "2 unreadable frame(s)" in report and "4.jpg -> " in report
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once: no second warning, no duplicate record
        ds[0]
    assert len(ds.replaced_frames[path]) == 2


def test_replacement_skips_unreadable_neighbours(dfew):
    clip = _clip(dfew, "1")
    for k in (1, 2, 3):
        corrupt(clip / f"{k}.jpg")
    ds = DFEW(dfew, 1, "train", num_frames=12, image_size=16, train=False)
    with pytest.warns(BadInputWarning):
        item = ds[0]
    assert item["frame_index"].tolist()[:4] == [3, 3, 3, 3]
    assert video_frame_numbers(item["video"])[:4] == [4, 4, 4, 4]


def test_all_frames_corrupt_gives_invalid_sample(dfew):
    clip = _clip(dfew, "7")  # the 3-frame clip
    for k in (1, 2, 3):
        corrupt(clip / f"{k}.jpg")
    empty = _clip(dfew, "00012")
    for p in empty.iterdir():
        p.unlink()
    ds = DFEW(dfew, 1, "train", num_frames=8, image_size=16, train=False)
    with pytest.warns(BadInputWarning, match="unreadable sample"):
        bad = ds[2]
    assert bad["valid"] is False and bad["index"] == 2 and bad["label"] == 4
    assert bad["video"].shape == (3, 8, 16, 16) and not bad["video"].any()
    assert bad["frame_index"].shape == (8,)
    with pytest.warns(BadInputWarning, match="no frames"):
        assert ds[3]["valid"] is False
    assert set(ds.bad_samples) == {str(clip), str(empty)}
    report = ds.bad_sample_report()
    assert "2 unreadable sample(s)" in report and str(clip) in report and "none of the 3 frames" in report
    batch = collate_videos([ds[0], bad])  # invalid items still collate
    assert batch["video"].shape == (2, 3, 8, 16, 16) and batch["valid"].tolist() == [True, False]


def test_picklable_for_dataloader_workers(dfew):
    ds = DFEW(dfew, 1, "test", num_frames=4, image_size=16)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0]["video"], ds[0]["video"])


def _error(dfew, rows, header="video_name,label"):
    path = write_dfew_csv(dfew, "train", 2, rows, header)
    return path


def test_construction_errors_name_file_and_row(dfew):
    csv = _error(dfew, ["1,1"], header="name,label")
    with pytest.raises(ValueError, match=r"set_2\.csv, row 1: missing column.*video_name"):
        DFEW(dfew, 2, "train")
    _error(dfew, ["1,1", "00002,8"])
    with pytest.raises(ValueError, match=r"set_2\.csv, row 3: label '8' is not an integer in 1\.\.7"):
        DFEW(dfew, 2, "train")
    _error(dfew, ["1,happy"])
    with pytest.raises(ValueError, match=r"row 2: label 'happy'"):
        DFEW(dfew, 2, "train")
    _error(dfew, ["1,1", "", "424,2"])  # blank line skipped; the row number is the file's line
    with pytest.raises(FileNotFoundError, match=r"set_2\.csv, row 4: clip folder for video '424' not found"):
        DFEW(dfew, 2, "train")
    _error(dfew, [])
    with pytest.raises(ValueError, match=r"set_2\.csv: empty split"):
        DFEW(dfew, 2, "train")
    csv.unlink()
    with pytest.raises(FileNotFoundError, match=r"set_2\.csv"):
        DFEW(dfew, 2, "train")
    with pytest.raises(ValueError, match="fold must be 1..5"):
        DFEW(dfew, 6, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        DFEW(dfew, 1, "val")
