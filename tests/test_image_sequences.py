"""Image sequences are videos (issue 35, item 5): a folder of numbered frames (CK+-style
``S005/001/S005_001_00000001.png ...``, or ``0.jpg ... 10.jpg``) is one video for ``rdfer predict``,
``rdfer audit`` and ``rdfer analyze``, read as the training CSV reads frame folders: numeric order,
no frame rate."""

import json
import warnings

import av
import numpy as np
import pytest
from PIL import Image

import rdfer
from data_trees import corrupt, frame_color, write_frame, write_frames
from rdfer.data.decode import BadInputWarning, list_frames
from rdfer.inference.predict import UnreadableVideo, predict_frames, predict_video, read_video, scan_video

CKPLUS = "S005_001_{k:08d}.png"


def frame_numbers(frames):
    """Frame numbers encoded by data_trees.frame_color in the red channel of RGB frames."""
    return [int(round(float(f[..., 0].mean()) / 12)) for f in frames]


def write_lossless_video(path, frames, fps=10):
    """The frames, bit for bit, as a video (PNG in MOV): the same pixels a frame folder holds."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "rgb24"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def textured_sequence(folder, n, height=48, width=64, name=CKPLUS):
    """``n`` PNG frames with texture (random) that the frame number shifts, numbered 1..n; returns
    the frames as arrays in numeric order."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frames = []
    for k in range(1, n + 1):
        f = np.roll(base, 3 * k, axis=1)
        f[:8, :8] = frame_color(k)  # the frame number, for a detector that follows it
        frames.append(f)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(f).save(folder / name.format(k=k))
    return frames


def test_frames_are_read_in_numeric_order_not_lexicographic(tmp_path):
    ck = tmp_path / "S005" / "001"
    write_frames(ck, 12, size=40, pattern=CKPLUS)
    plain = tmp_path / "plain"  # 0.jpg .. 11.jpg: "10.jpg" sorts before "2.jpg" as text
    for k in range(1, 13):
        write_frame(plain / f"{k - 1}.jpg", k, size=40)
    (plain / ".0.jpg").write_bytes(b"macOS resource fork")  # hidden: not a frame
    (plain / "notes.txt").write_text("not a frame")
    assert sorted(p.name for p in plain.iterdir() if p.suffix == ".jpg")[:3] == [".0.jpg", "0.jpg", "1.jpg"]
    for folder in (ck, plain):
        frames, fps = read_video(folder)
        assert frame_numbers(frames) == list(range(1, 13)) and np.isnan(fps)
        assert frames[0].shape == (40, 40, 3) and frames[0].dtype == np.uint8
        n, fps, track = scan_video(folder)  # the first pass of predict_video: counts, decodes nothing
        assert n == 12 and np.isnan(fps) and track is None
    # the dataset's listing is the one used
    assert [p.split("/")[-1] for p in list_frames(plain)] == [f"{k}.jpg" for k in range(12)]


def test_predict_a_folder_as_the_same_frames_in_memory_and_as_a_video(trained_run, tmp_path):
    model = rdfer.load_model(trained_run[0])
    folder = tmp_path / "S005" / "001"
    frames = textured_sequence(folder, 12)
    res = predict_video(folder, model, detector=None)
    cfg = model.data_config
    ref, loaded = predict_frames(model, frames, cfg["classes"], cfg["num_frames"], cfg["image_size"])
    assert res.status == "ok" and res.num_frames == 12 and res.path == str(folder)
    assert np.allclose(list(res.probabilities.values()), ref.probs[0].numpy(), atol=1e-4)
    assert res.fps is None and res.key_window_seconds is None  # a folder has no frame rate
    assert 0 <= res.key_window_frames[0] <= res.key_window_frames[1] <= 11
    # the frames in lexicographic order are another video: the order matters to the model
    shuffled, _ = predict_frames(model, [frames[int(s)] for s in sorted(map(str, range(12)))], cfg["classes"],
                                 cfg["num_frames"], cfg["image_size"])
    assert not np.allclose(shuffled.probs[0].numpy(), ref.probs[0].numpy(), atol=1e-6)
    # the same pixels as a video file: the same prediction, only the frame rate differs
    video = predict_video(write_lossless_video(tmp_path / "same.mov", frames), model, detector=None)
    assert video.fps == pytest.approx(10.0) and video.key_window_seconds is not None
    assert video.probabilities == pytest.approx(res.probabilities, abs=1e-4)
    assert video.key_window_frames == res.key_window_frames and video.clip_predictions == res.clip_predictions


def test_face_detection_on_a_folder_equals_the_video(trained_run, tmp_path):
    """Both decoding passes (detection, then the cropped frames) run on a folder as on a video."""
    model = rdfer.load_model(trained_run[0])
    folder = tmp_path / "S010" / "002"
    frames = textured_sequence(folder, 20)
    seen = []

    def detector(rgb):  # a face on frames 1..14 whose box follows the frame number; none after
        seen.append(rgb.shape)
        k = int(round(float(rgb[:8, :8, 0].mean()) / 12))
        return (2.0 + k, 4.0, 34.0 + k, 36.0) if k <= 14 else None

    res = predict_video(folder, model, detector=detector, detect_stride=3)
    assert seen and all(s == (48, 64, 3) for s in seen)
    assert res.status == "ok" and res.num_frames == 20 and res.fps is None
    assert res.frames_without_face == list(range(14, 20))
    video = predict_video(write_lossless_video(tmp_path / "same.mov", frames), model, detector=detector,
                          detect_stride=3)
    assert video.frames_without_face == res.frames_without_face
    assert video.probabilities == pytest.approx(res.probabilities, abs=1e-4)


def test_haar_faces_in_a_folder_of_real_frames(trained_run, real_clip, tmp_path):
    """The built-in detector on a real face, the clip's frames saved as a CK+-style PNG sequence."""
    clip = real_clip("single_face.mp4")
    frames, _ = read_video(clip)
    folder = tmp_path / "S020" / "001"
    folder.mkdir(parents=True)
    for k, f in enumerate(frames, 1):
        Image.fromarray(f).save(folder / f"S020_001_{k:08d}.png")
    from rdfer.inference.faces import HaarFaceDetector

    # detection sees the frames downscaled by PIL here, by FFmpeg there: nearly the same boxes
    n, _, track = scan_video(folder, HaarFaceDetector(), 4)
    n_video, _, track_video = scan_video(clip, HaarFaceDetector(), 4)
    assert n == n_video == len(frames)
    assert (track.has_face == track_video.has_face).mean() >= 0.9 and track.has_face.mean() > 0.8
    # pixels, of a ~190 px face: under a tenth of it (the tracker steps face sizes by 1.2; the two
    # downscalers may tip a frame to the neighbouring step)
    assert np.nanmax(np.abs(track.boxes - track_video.boxes)) < 19
    model = rdfer.load_model(trained_run[0])
    res = predict_video(folder, model, detect_stride=4)
    video = predict_video(clip, model, detect_stride=4)
    assert res.status == video.status == "ok" and res.num_frames == video.num_frames == len(frames)
    assert len(res.frames_without_face) < 0.2 * len(frames) and res.fps is None
    assert video.probabilities == pytest.approx(res.probabilities, abs=0.01)


def test_unreadable_frames_and_folders(trained_run, tmp_path):
    model = rdfer.load_model(trained_run[0])
    folder = tmp_path / "S005" / "001"
    write_frames(folder, 12, size=40, pattern="S005_001_{k:08d}.jpg")
    corrupt(folder / "S005_001_00000005.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames, _ = read_video(folder)
        res = predict_video(folder, model, detector=None)
    # replaced by its nearest readable neighbour (ties: the earlier one), as in a dataset, and reported
    assert frame_numbers(frames) == [1, 2, 3, 4, 4, 6, 7, 8, 9, 10, 11, 12]
    messages = [str(w.message) for w in caught if issubclass(w.category, BadInputWarning)]
    assert messages and all("S005_001_00000005.jpg: unreadable frame" in m and m.endswith("S005_001_00000004.jpg")
                            for m in messages)
    assert res.status == "ok"

    for p in folder.iterdir():
        corrupt(p)
    res = predict_video(folder, model, detector=None)
    assert res.status == "unreadable" and res.message.startswith(f"{folder}: none of the 12 frames could be decoded")
    assert "\n" not in res.message
    with pytest.raises(UnreadableVideo, match="none of the 12 frames"):
        read_video(folder)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    res = predict_video(empty, model, detector=None)
    assert res.status == "unreadable"
    assert res.message == f"{empty}: no frames (jpg/jpeg/png/bmp) in the folder, so it is not a video"
    # a subject's folder of sequences is not one video: the message says to give the sequences
    res = predict_video(tmp_path / "S005", model, detector=None)
    assert res.status == "unreadable"
    assert res.message.endswith(f"each of its subfolders may be one: give them ({tmp_path / 'S005'}/*)")


def test_predict_cli_takes_a_folder_as_one_video(trained_run, tmp_path, capsys):
    from rdfer.cli import build_parser, main

    folder = tmp_path / "S005" / "001"
    write_frames(folder, 11, size=40, pattern=CKPLUS)
    assert main(["predict", str(folder), "--checkpoint", str(trained_run[0]), "--no-detect", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # one result for the folder, not one per frame
    res = json.loads(lines[0])
    assert res["path"] == str(folder) and res["status"] == "ok" and res["fps"] is None
    assert res["num_frames"] == 11 and res["emotion"] in rdfer.EMOTIONS and res["key_window_seconds"] is None

    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), str(folder), "--checkpoint", str(trained_run[0]), "--no-detect",
                 "--json"]) == 4  # the empty folder is unreadable, the other still predicted
    statuses = [json.loads(line)["status"] for line in capsys.readouterr().out.strip().splitlines()]
    assert statuses == ["unreadable", "ok"]
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    assert "folders of numbered frames" in " ".join(predict.format_help().split())


@pytest.fixture
def ckplus_csvs(tmp_path):
    """A CK+-like tree S0xx/00y/S0xx_00y_0000000k.png and train/test CSVs of its folders."""
    labels = ["happy", "sad", "angry", "surprise"]
    rows = []
    for i in range(16):
        subject, seq = f"S{5 + i // 2:03d}", f"{1 + i % 2:03d}"
        write_frames(tmp_path / "cohn-kanade" / subject / seq, 9 + i % 4, size=32,
                     pattern=f"{subject}_{seq}_{{k:08d}}.png")
        rows.append(f"cohn-kanade/{subject}/{seq},{labels[i % 4]}")
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(rows[:10]) + "\n")
    (tmp_path / "test.csv").write_text("path,label\n" + "\n".join(rows[10:]) + "\n")
    return tmp_path


def _csv_args(root, run):
    return ["csv", "--train", str(root / "train.csv"), "--test", str(root / "test.csv"), "--checkpoint", str(run),
            "--device", "cpu", "--workers", "0"]


def test_audit_of_a_csv_of_frame_folders_writes_the_report_and_the_page(trained_run, ckplus_csvs, capsys):
    from rdfer.cli import main

    out = ckplus_csvs / "audit"
    assert main(["audit", *_csv_args(ckplus_csvs, trained_run[0]), "--t-noisy", "0.3", "--t-hard", "0.3",
                 "--out", str(out), "--html"]) == 0
    assert "review.html" in capsys.readouterr().out
    for name in ("audit.md", "audit.csv", "label_errors.csv", "hard_samples.csv", "review.html"):
        assert (out / name).is_file(), name
    rows = (out / "audit.csv").read_text().splitlines()
    assert len(rows) == 11 and all("cohn-kanade" in r for r in rows[1:])
    strips = list((out / "review_files").glob("*.jpg"))
    assert len(strips) >= 3
    with Image.open(strips[0]) as im:
        assert im.size[0] > 0 and im.size[1] > 0


def test_analyze_of_a_csv_of_frame_folders_writes_tables_and_figures(trained_run, ckplus_csvs, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    from rdfer.cli import main

    out = ckplus_csvs / "analyze"
    assert main(["analyze", *_csv_args(ckplus_csvs, trained_run[0]), "--out", str(out)]) == 0
    assert "WAR" in capsys.readouterr().out
    for name in ("analysis.md", "agreement_distribution.csv", "agreement_accuracy.csv", "confusion.csv",
                 "confusion.png", "tsne.png", "sample_strips.png"):
        assert (out / name).is_file(), name
    assert (out / "agreement_distribution.csv").read_text().splitlines()[-1].split(",")[-1] == "6"
