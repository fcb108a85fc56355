"""VideoCSV: video files (PyAV) and frame folders listed in a CSV; class-name rules; bad input."""

import pytest
import torch

from data_trees import make_dfew, video_frame_numbers, write_frames, write_video
from rdfer.data import VideoCSV, eval_indices
from rdfer.data.decode import BadInputWarning, read_video_file


def _csv(path, rows, header="path,label"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    write_video(d / "clips" / "twenty.mp4", 20, fps=10)
    write_video(d / "clips" / "three.mp4", 3, fps=25)
    write_video(d / "clips" / "twelve.mkv", 12, fps=10)  # Matroska stores no frame count
    write_frames(d / "clips" / "folder", 12, 24)
    return d


def test_video_files_eval_sampling_fps_and_frames(videos):
    csv = _csv(videos / "eval.csv", ["clips/twenty.mp4,Happy", "clips/three.mp4,sad", "clips/twelve.mkv,FEAR",
                                      "clips/folder,neutral"])
    ds = VideoCSV(csv, num_frames=8, image_size=32)
    assert ds.train is False and ds.classes == ["happy", "sad", "neutral", "fear"]  # those present, DFEW's order
    assert ds.labels == [0, 1, 3, 2]
    assert ds.samples[0][0] == str(videos / "clips" / "twenty.mp4")  # resolved against the CSV's folder
    for i, (n, fps) in enumerate([(20, 10.0), (3, 25.0), (12, 10.0), (12, None)]):
        item = ds[i]
        assert item["video"].shape == (3, 8, 32, 32) and item["video"].dtype == torch.uint8 and item["valid"]
        assert item["index"] == i and item["label"] == ds.labels[i]
        assert item["frame_index"].tolist() == eval_indices(n, 8).tolist()
        assert video_frame_numbers(item["video"]) == [p + 1 for p in item["frame_index"].tolist()]
        assert item["fps"] == fps
    assert ds[1]["frame_index"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert ds.bad_sample_report() == ""


def test_video_train_sampling(videos):
    csv = _csv(videos / "train.csv", ["clips/twenty.mp4,happy"])
    ds = VideoCSV(csv, num_frames=4, image_size=16, train=True)
    seen = set()
    for _ in range(8):
        item = ds[0]
        idx = item["frame_index"].tolist()
        assert [p // 5 for p in idx] == [0, 1, 2, 3]  # one frame from each quarter
        assert video_frame_numbers(item["video"]) == [p + 1 for p in idx]
        seen.add(tuple(idx))
    assert len(seen) > 1


def test_read_video_file_directly(videos):
    clip = read_video_file(videos / "clips" / "twenty.mp4", lambda n: eval_indices(n, 5), 20)
    assert clip.num_source == 20 and clip.fps == 10.0 and clip.frames.shape == (5, 20, 20, 3)
    assert clip.frame_index.tolist() == [2, 6, 10, 14, 18] and clip.replaced == []


def test_unreadable_and_truncated_videos_are_invalid(videos, tmp_path):
    (tmp_path / "garbage.mp4").write_bytes(b"not a video at all" * 50)
    data = (videos / "clips" / "twenty.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.avi").write_bytes(b"")
    csv = _csv(tmp_path / "bad.csv", ["garbage.mp4,happy", "truncated.mp4,sad", "empty.avi,sad",
                                      str(videos / "clips" / "twenty.mp4") + ",happy"])
    ds = VideoCSV(csv, num_frames=4, image_size=16)
    for i in range(3):
        with pytest.warns(BadInputWarning, match="unreadable sample"):
            item = ds[i]
        assert item["valid"] is False and item["video"].shape == (3, 4, 16, 16) and not item["video"].any()
        assert item["frame_index"].shape == (4,) and item["index"] == i
    assert ds[3]["valid"] is True
    assert set(ds.bad_samples) == {str(tmp_path / n) for n in ("garbage.mp4", "truncated.mp4", "empty.avi")}
    assert "3 unreadable sample(s)" in ds.bad_sample_report()


def test_class_rules(tmp_path):
    write_frames(tmp_path / "a", 2, 8)
    rows = lambda labels: [f"a,{x}" for x in labels]  # noqa: E731
    # custom names: sorted unique strings
    ds = VideoCSV(_csv(tmp_path / "c.csv", rows(["pain", "calm", "pain"])), num_frames=2, image_size=8)
    assert ds.classes == ["calm", "pain"] and ds.labels == [1, 0, 1]
    # integers: classes "0".."max"
    ds = VideoCSV(_csv(tmp_path / "i.csv", rows(["2", "0"])), num_frames=2, image_size=8)
    assert ds.classes == ["0", "1", "2"] and ds.labels == [2, 0]
    # given classes: names (any case) or integer indices
    ds = VideoCSV(_csv(tmp_path / "g.csv", rows(["PAIN", "0"])), classes=["calm", "pain"])
    assert ds.classes == ["calm", "pain"] and ds.labels == [1, 0]
    with pytest.raises(ValueError, match=r"g2\.csv, row 3: unknown label 'anger'"):
        VideoCSV(_csv(tmp_path / "g2.csv", rows(["calm", "anger"])), classes=["calm", "pain"])
    with pytest.raises(ValueError, match=r"row 2: unknown label '5'"):
        VideoCSV(_csv(tmp_path / "g3.csv", rows(["5"])), classes=["calm", "pain"])
    # a subset of the emotions: those present, in EMOTIONS order (no class without a video)
    ds = VideoCSV(_csv(tmp_path / "e.csv", rows(["Fear", "happy"])))
    assert ds.classes == ["happy", "fear"] and ds.labels == [1, 0]


def test_extra_columns_absolute_paths_and_frame_folders(tmp_path):
    dfew = make_dfew(tmp_path / "DFEW", size=24)
    folder = dfew / "Clip" / "clip_224x224" / "00001"
    csv = _csv(tmp_path / "sub" / "x.csv", [f"7,{folder},surprise,ok"], header="id, Path ,LABEL,note")
    ds = VideoCSV(csv, num_frames=12, image_size=16)
    item = ds[0]
    assert ds.classes == ["surprise"] and item["label"] == 0 and item["fps"] is None
    assert video_frame_numbers(item["video"]) == list(range(1, 13))


def test_construction_errors(tmp_path):
    write_frames(tmp_path / "a", 2, 8)
    with pytest.raises(ValueError, match=r"m\.csv, row 1: missing column.*label"):
        VideoCSV(_csv(tmp_path / "m.csv", ["a"], header="path"))
    with pytest.raises(FileNotFoundError, match=r"f\.csv, row 3: .*nothere\.mp4 does not exist"):
        VideoCSV(_csv(tmp_path / "f.csv", ["a,happy", "nothere.mp4,sad"]))
    with pytest.raises(ValueError, match=r"e\.csv: empty split"):
        VideoCSV(_csv(tmp_path / "e.csv", []))
    (tmp_path / "z.csv").write_text("")
    with pytest.raises(ValueError, match=r"z\.csv, row 1: empty file"):
        VideoCSV(tmp_path / "z.csv")
    with pytest.raises(ValueError, match=r"l\.csv, row 2: empty label"):
        VideoCSV(_csv(tmp_path / "l.csv", ["a,"]))
    with pytest.raises(FileNotFoundError, match="CSV not found"):
        VideoCSV(tmp_path / "missing.csv")


def test_video_broken_mid_stream_still_loads(videos, tmp_path):
    data = (videos / "clips" / "twelve.mkv").read_bytes()
    half = len(data) // 2
    (tmp_path / "broken.mkv").write_bytes(data[:half] + bytes(300) + data[half + 300:])
    ds = VideoCSV(_csv(tmp_path / "b.csv", ["broken.mkv,happy"]), num_frames=8, image_size=16)
    item = ds[0]  # frames after the damage are replaced by the last readable one, never an exception
    assert item["valid"] is True
    idx = item["frame_index"].tolist()
    assert idx == sorted(idx) and video_frame_numbers(item["video"]) == [p + 1 for p in idx]


@pytest.mark.parametrize("name,frames,fps", [("single_face.mp4", 72, 30.0), ("face_noface.mov", 169, None),
                                             ("no_face.mp4", None, None)])
def test_real_clips(real_clip, tmp_path, name, frames, fps):
    # The real MIT-licensed clips in shared/data/real-video (skipped where absent): decoded by
    # PyAV through the CSV dataset, every frame index inside the stream.
    path = real_clip(name)
    csv = _csv(tmp_path / "real.csv", [f"{path},happy"])
    item = VideoCSV(csv, num_frames=16, image_size=32)[0]
    assert item["valid"] and item["video"].shape == (3, 16, 32, 32) and item["video"].dtype == torch.uint8
    assert item["video"].float().std() > 1  # real pixels, not a zero video
    idx = item["frame_index"]
    assert bool((idx[1:] >= idx[:-1]).all()) and int(idx[0]) >= 0
    if frames is not None:
        assert int(idx[-1]) < frames and int(idx[-1]) >= frames - frames // 16 - 1
    if fps is not None:
        assert item["fps"] == pytest.approx(fps)
