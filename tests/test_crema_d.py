"""End to end on real labelled clips: six CREMA-D videos (one actor, six emotions; VP6 video in
FLV with mp3 audio, 480x360) from ../shared/data/crema-d. Skipped where that folder is absent."""

from __future__ import annotations

import json

import pytest

from conftest import GN_OPTIONS, REPO

CREMA_D = REPO.parent / "shared" / "data" / "crema-d"
# file -> (label, frames), from the folder's README.
CLIPS = {
    "1001_DFA_ANG_XX.flv": ("angry", 67),
    "1001_DFA_DIS_XX.flv": ("disgust", 70),
    "1001_DFA_FEA_XX.flv": ("fear", 65),
    "1001_DFA_HAP_XX.flv": ("happy", 56),
    "1001_DFA_NEU_XX.flv": ("neutral", 61),
    "1001_DFA_SAD_XX.flv": ("sad", 60),
}

pytestmark = pytest.mark.skipif(not all((CREMA_D / name).is_file() for name in CLIPS),
                                reason=f"real CREMA-D clips not present in {CREMA_D}")


@pytest.fixture(scope="module")
def crema_csv(tmp_path_factory):
    """A training CSV of the six clips, absolute paths, labels by name."""
    path = tmp_path_factory.mktemp("crema") / "crema.csv"
    path.write_text("path,label\n" + "".join(f"{CREMA_D / n},{label}\n" for n, (label, _) in CLIPS.items()))
    return path


def test_video_csv_decodes_the_real_clips(crema_csv):
    import rdfer
    from rdfer.data import VideoCSV

    ds = VideoCSV(crema_csv, num_frames=16, image_size=64)
    # Emotion names: the six present, in DFEW's order (CREMA-D has no surprise).
    assert len(ds) == 6 and list(ds.classes) == [e for e in rdfer.EMOTIONS if e != "surprise"]
    for i in range(len(ds)):
        item = ds[i]
        video = item["video"]
        assert item["valid"] and tuple(video.shape) == (3, 16, 64, 64)
        assert ds.classes[int(item["label"])] == CLIPS[item["path"].rsplit("/", 1)[1]][0]
        # Real pixels, not a filler: a face on green varies over the frame and over time.
        assert float(video.float().std()) > 10 and float((video[:, 0].float() - video[:, -1].float()).abs().mean()) > 0.5
    assert not ds.bad_samples


def test_rdfer_train_csv_two_epochs_on_real_clips(crema_csv, tmp_path):
    from rdfer.cli import main

    out, test_csv = tmp_path / "run", tmp_path / "test.csv"
    test_csv.write_text("".join(crema_csv.read_text().splitlines(keepends=True)[:3]))  # header + 2 clips
    code = main(["train", "csv", "--train", str(crema_csv), "--test", str(test_csv), "--epochs", "2",
                 "--warmup-epochs", "1", "--num-frames", "8", "--image-size", "32", "--batch-size", "3",
                 "--workers", "0", "--no-augment", "--quiet", "--out", str(out),
                 "--model-option", f"backbone_kwargs={json.dumps(GN_OPTIONS['backbone_kwargs'])}",
                 "--model-option", "d_model=32"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["excluded_invalid"] == 0 for r in rows)
    assert len((out / "train.log").read_text().splitlines()) == 2
    results = json.loads((out / "results.json").read_text())
    assert results["test_last_epoch"]["num_samples"] == 2 and results["model"]["num_classes"] == 6
    assert not (out / "bad_samples.txt").exists()


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_predict_finds_the_face_in_nearly_every_frame(trained_run, name):
    pytest.importorskip("cv2")
    import rdfer

    model = rdfer.load_model(trained_run[0])
    res = rdfer.predict_video(CREMA_D / name, model, detect_stride=1)
    assert res.status == "ok", res.message
    assert res.num_frames == CLIPS[name][1]
    found = 1 - len(res.frames_without_face) / res.num_frames
    assert found >= 0.9, f"{name}: face found in {found:.0%} of {res.num_frames} frames"
