"""Reliability (issue 27): evaluation uses what training fixed, read from the checkpoint (class list
and order, frames per video, frame size); a flag that contradicts it is an error naming both; labels
are bounded by the class list and never merged by case. Real tiny CSV datasets (mp4 files and frame
folders in tmp_path), real training and evaluation through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rdfer
from data_trees import make_dfew, make_ferv39k, write_dfew_csv, write_ferv_list, write_frames, write_video
from rdfer.cli import main
from rdfer.data import PackedDataset, VideoCSV, pack_dataset

# The smallest model and run: 8 frames of 32 px, one epoch, CPU.
TINY = ["--batch-size", "4", "--workers", "0", "--device", "cpu", "--quiet", "--warmup-epochs", "0", "--epochs", "1",
        "--model-option", "d_model=16", "--model-option", "summary_dim=4", "--no-augment", "--seed", "0"]
SIZE = ["--num-frames", "8", "--image-size", "32"]


def _csv(path: Path, rows, header: str = "path,label") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rdfer: error: "), err
    return err[0][len("rdfer: error: "):]


def _fails(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2, argv
    return _one_error_line(capsys)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """A model trained with `--classes pos,neg` (not the sorted order) at 8 frames of 32 px on a
    CSV of mp4 files (pos) and frame folders (neg); the test split is 5 pos, 3 neg, so a model's
    WAR and the WAR of its swapped classes differ unless it is exactly 50%."""
    d = tmp_path_factory.mktemp("csv_run")
    for i in range(7):
        write_video(d / "clips" / f"pos{i}.mp4", 6 + i, size=32)
    for i in range(5):
        write_frames(d / "clips" / f"neg{i}", 4 + i, size=32)
    pos = lambda *ks: [f"clips/pos{k}.mp4,pos" for k in ks]  # noqa: E731
    neg = lambda *ks: [f"clips/neg{k},neg" for k in ks]  # noqa: E731
    train_csv = _csv(d / "a.csv", pos(0) + neg(0) + pos(1) + neg(1))
    test_csv = _csv(d / "b.csv", pos(2, 3, 4, 5, 6) + neg(2, 3, 4))
    out = d / "run"
    assert main(["train", "csv", "--train", str(train_csv), "--test", str(test_csv), "--classes", "pos,neg",
                 *SIZE, *TINY, "--out", str(out)]) == 0
    return d, out, train_csv, test_csv


def test_eval_uses_the_trained_class_order_and_sizes(csv_run, capsys):
    """The reported case: trained with --classes pos,neg, `rdfer eval csv` re-inferred the sorted
    order (neg, pos) and reported 37.5% where training reported 62.5%; and without --num-frames /
    --image-size it evaluated at 64 x 112 a model trained at 8 x 32."""
    d, run, train_csv, test_csv = csv_run
    trained = json.loads((run / "results.json").read_text())["test_last_epoch"]
    assert trained["war"] != 0.5  # else swapping the two classes would not change the WAR
    capsys.readouterr()
    assert main(["eval", "csv", "--checkpoint", str(run), "--train", str(train_csv), "--test", str(test_csv),
                 "--workers", "0", "--device", "cpu", "--out", str(d / "eval")]) == 0
    captured = capsys.readouterr()
    metrics = json.loads((d / "eval" / "metrics.json").read_text())
    assert list(metrics["per_class_recall"]) == ["pos", "neg"]
    assert metrics["war"] == pytest.approx(trained["war"]) and metrics["uar"] == pytest.approx(trained["uar"])
    assert metrics["num_samples"] == 8
    assert f"test: WAR {100 * trained['war']:.2f}%" in captured.out and "warning" not in captured.err
    # audit reads the training CSV with the trained order too: its labels are the CSV's names.
    assert main(["audit", "csv", "--checkpoint", str(run), "--train", str(train_csv), "--test", str(test_csv),
                 "--workers", "0", "--device", "cpu", "--out", str(d / "audit")]) == 0
    audit = (d / "audit" / "audit.csv").read_text().splitlines()
    header = audit[0].split(",")
    labels = {row.split(",")[header.index("path")]: row.split(",")[header.index("label")] for row in audit[1:]}
    assert labels == {str(d / "clips" / "pos0.mp4"): "pos", str(d / "clips" / "neg0"): "neg",
                      str(d / "clips" / "pos1.mp4"): "pos", str(d / "clips" / "neg1"): "neg"}


def test_flags_that_contradict_the_checkpoint_are_errors(csv_run, capsys):
    d, run, train_csv, test_csv = csv_run
    data = ["csv", "--checkpoint", str(run), "--train", str(train_csv), "--test", str(test_csv), "--workers", "0"]
    assert _fails(capsys, ["eval", *data, "--num-frames", "64"]) == \
        "--num-frames 64 contradicts the checkpoint (trained with 8)"
    assert _fails(capsys, ["audit", *data, "--image-size", "112"]) == \
        "--image-size 112 contradicts the checkpoint (trained with 32)"
    assert _fails(capsys, ["analyze", *data, "--num-frames", "16"]) == \
        "--num-frames 16 contradicts the checkpoint (trained with 8)"
    assert _fails(capsys, ["export", "--checkpoint", str(run), "--format", "torchscript", "--image-size", "64"]) == \
        "--image-size 64 contradicts the checkpoint (trained with 32)"
    assert not any((run / name).exists() for name in ("eval_test", "audit_train", "analyze_test", "model.torchscript.pt"))
    # The same values as trained are accepted (and are what an omitted flag gives).
    assert main(["export", "--checkpoint", str(run), "--format", "torchscript", *SIZE,
                 "--output", str(d / "m.pt")]) == 0
    assert "(B, 3, 8, 32, 32)" in capsys.readouterr().out


def test_predict_video_refuses_settings_other_than_trained(csv_run, tmp_path):
    from rdfer.inference.predict import predict_video

    model = rdfer.load_model(csv_run[1])
    clip = write_video(tmp_path / "clip.mp4", 10, size=32)
    with pytest.raises(ValueError, match=r"^num_frames 64 contradicts the checkpoint \(trained with 8\)$"):
        predict_video(clip, model, num_frames=64, detector=None)
    with pytest.raises(ValueError, match=r"^image_size 112 contradicts the checkpoint \(trained with 32\)$"):
        predict_video(clip, model, image_size=112, detector=None)
    with pytest.raises(ValueError, match=r"^class_names \['neg', 'pos'\] contradicts the checkpoint \(trained with "
                                         r"\['pos', 'neg'\]\)$"):
        predict_video(clip, model, class_names=["neg", "pos"], detector=None)
    res = predict_video(clip, model, num_frames=8, image_size=32, detector=None)
    assert res.status == "ok" and list(res.probabilities) == ["pos", "neg"]


def test_data_of_other_classes_than_trained_is_refused(csv_run, trained_run, capsys):
    d, run, train_csv, test_csv = csv_run
    # A model of the 7 emotions, evaluated on the pos/neg CSV: the labels are not its classes.
    assert _fails(capsys, ["eval", "csv", "--checkpoint", str(trained_run[0]), "--train", str(train_csv), "--test",
                           str(test_csv), "--workers", "0"]) == (
        f"{train_csv}, row 2: unknown label 'pos'; classes are {list(rdfer.EMOTIONS)} (or integer indices 0..6)")
    # The pos/neg model, evaluated on the synthetic emotions: refused before the model is loaded.
    assert _fails(capsys, ["eval", "synthetic", "--checkpoint", str(run), "--synthetic-train", "8",
                           "--synthetic-test", "8", "--workers", "0"]) == (
        f"the synthetic test split has the classes {list(rdfer.EMOTIONS)} but the checkpoint was trained on "
        f"['pos', 'neg'] (names and order must match)")


def test_checkpoint_without_class_list_falls_back_with_a_warning(csv_run, tmp_path, capsys):
    """A model saved by hand (no data settings stored): the classes are the data's own, inferred as
    training would have inferred them, and the output says so; the sizes come from the flags."""
    d, run, train_csv, test_csv = csv_run
    plain = rdfer.save_model(rdfer.load_model(run), tmp_path / "plain" / "model.safetensors")
    assert rdfer.load_model(plain).data_config == {}
    capsys.readouterr()
    assert main(["eval", "csv", "--checkpoint", str(plain), "--train", str(train_csv), "--test", str(test_csv),
                 *SIZE, "--workers", "0", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert ("rdfer: warning: the checkpoint records no class list (it was not written by rdfer train); the classes "
            "are the data's own: ['neg', 'pos']") in err
    metrics = json.loads((tmp_path / "plain" / "eval_test" / "metrics.json").read_text())
    assert list(metrics["per_class_recall"]) == ["neg", "pos"] and metrics["num_samples"] == 8
    # Without the class list the two classes swap (what every eval did before): the WAR mirrors
    # training's. That is why the warning is printed, and why rdfer train stores the list.
    trained = json.loads((run / "results.json").read_text())["test_last_epoch"]
    assert metrics["war"] == pytest.approx(1 - trained["war"])


def test_packs_of_other_class_orders_or_sizes_are_refused(csv_run, tmp_path, capsys):
    d, run, train_csv, test_csv = csv_run
    a = pack_dataset(VideoCSV(train_csv, classes=["pos", "neg"]), tmp_path / "a", num_frames=8, image_size=32,
                     progress=False)
    b = pack_dataset(VideoCSV(test_csv, classes=["neg", "pos"]), tmp_path / "b", num_frames=8, image_size=32,
                     progress=False)
    small = pack_dataset(VideoCSV(test_csv, classes=["pos", "neg"]), tmp_path / "small", num_frames=8, image_size=16,
                         progress=False)
    assert _fails(capsys, ["train", "packed", "--train", str(a), "--test", str(b), *TINY, "--num-frames", "8",
                           "--out", str(tmp_path / "r")]) == (
        f"the packs disagree on classes: {a} has ['pos', 'neg'], {b} has ['neg', 'pos']; pack both splits with the "
        f"same classes and --image-size")
    assert not (tmp_path / "r").exists()
    # Training on a pack records the pack's frame size, not the --image-size default (112).
    assert main(["train", "packed", "--train", str(a), "--test", str(a), *TINY, "--num-frames", "8",
                 "--out", str(tmp_path / "r")]) == 0
    assert "test videos are training videos too" in capsys.readouterr().err  # --train and --test are one pack
    assert rdfer.load_model(tmp_path / "r").data_config["image_size"] == 32
    assert _fails(capsys, ["eval", "packed", "--checkpoint", str(tmp_path / "r"), "--train", str(small), "--test",
                           str(small), "--workers", "0"]) == (
        "the packed test split has image_size 16 but the checkpoint was trained with 32; pack it again at that size")
    assert PackedDataset(small).image_size == 16


# ---- labels ----------------------------------------------------------------------------------


def test_labels_differing_only_in_case_are_an_error_naming_both_rows(tmp_path, capsys):
    write_frames(tmp_path / "a", 2, 8)
    path = _csv(tmp_path / "c.csv", ["a,Cat", "a,dog", "a,cat"])
    with pytest.raises(ValueError) as info:
        VideoCSV(path)
    assert str(info.value) == (f"{path}, row 4: label 'cat' differs only in case from 'Cat' (row 2); write one "
                               f"class one way, and give two classes names that differ in more than case")
    with pytest.raises(ValueError, match=r"row 4: label 'cat' differs only in case from 'Cat'"):
        VideoCSV(path, classes=["Cat", "dog"])
    # One spelling per class: names match exactly, or ignoring case when no name matches exactly.
    ds = VideoCSV(_csv(tmp_path / "ok.csv", ["a,CAT", "a,dog"]), classes=["cat", "Dog"])
    assert ds.classes == ["cat", "Dog"] and ds.labels == [0, 1]
    ds = VideoCSV(_csv(tmp_path / "s.csv", ["a,Cat", "a,dog"]))
    assert ds.classes == ["Cat", "dog"] and ds.labels == [0, 1]


def test_class_lists_with_a_name_twice_are_refused(tmp_path, capsys):
    write_frames(tmp_path / "a", 4, 32)
    a = _csv(tmp_path / "a.csv", ["a,pos", "a,neg"])
    argv = ["train", "csv", "--train", str(a), "--test", str(a), *SIZE, *TINY, "--out", str(tmp_path / "r")]
    assert _fails(capsys, argv + ["--classes", "pos,neg,pos"]) == (
        f"{a}: the given classes ['pos', 'neg', 'pos'] names 'pos' twice; each class needs one name")
    assert _fails(capsys, argv + ["--classes", "pos,neg,Pos"]) == (
        f"{a}: the given classes ['pos', 'neg', 'Pos'] has 'pos' and 'Pos', which differ only in case; give the "
        f"classes names that differ in more than case")
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="has an empty class name"):
        VideoCSV(a, classes=["pos", " ", "neg"])


def test_huge_integer_labels_are_refused_without_building_classes(tmp_path):
    write_frames(tmp_path / "a", 2, 8)
    huge = "9" * 200  # a class list 0..huge would never fit in memory
    path = _csv(tmp_path / "i.csv", ["a,0", f"a,{huge}", "a,1"])
    with pytest.raises(ValueError) as info:
        VideoCSV(path)
    assert str(info.value) == (f"{path}, row 3: integer label '{'9' * 40}'... (200 characters) is not a class index "
                               f"0..999 (integer labels make the classes 0..max); fix the label, or give the class "
                               f"list (rdfer train csv --classes A,B,...)")
    with pytest.raises(ValueError, match=r"row 2: integer label '1000' is not a class index 0\.\.999"):
        VideoCSV(_csv(tmp_path / "k.csv", ["a,1000", "a,0"]))
    assert VideoCSV(_csv(tmp_path / "ok.csv", ["a,999", "a,0"])).classes[-1] == "999"
    with pytest.raises(ValueError, match=r"row 3: unknown label '99999999999999999999'; classes are \['x', 'y'\]"):
        VideoCSV(_csv(tmp_path / "g.csv", ["a,1", "a,99999999999999999999"]), classes=["x", "y"])
    # Only ASCII digits are indices: '1_0' and '+1' (which Python's int() accepts) are names.
    assert VideoCSV(_csv(tmp_path / "n.csv", ["a,1_0", "a,+1"])).classes == ["+1", "1_0"]


def test_dfew_and_ferv39k_bound_their_integer_labels(tmp_path):
    root = make_dfew(tmp_path / "DFEW", size=16)
    path = write_dfew_csv(root, "train", 1, ["1,1", f"00002,{'7' * 200}"])
    with pytest.raises(ValueError) as info:
        rdfer.data.DFEW(root, 1, "train")
    assert str(info.value).startswith(f"{path}, row 3: label '{'7' * 40}'... (200 characters) is not an integer "
                                      f"in 1..7")
    write_dfew_csv(root, "train", 1, ["1,1", "00002,\u0663"])  # ARABIC-INDIC DIGIT THREE: int() reads 3
    with pytest.raises(ValueError, match=r"row 3: label '\u0663' is not an integer in 1\.\.7"):
        rdfer.data.DFEW(root, 1, "train")
    write_dfew_csv(root, "train", 1, ["1,1", "\u00b2,2"])  # SUPERSCRIPT TWO: isdigit() but int() fails
    with pytest.raises(FileNotFoundError, match=r"row 3: clip folder for video '\u00b2' not found"):
        rdfer.data.DFEW(root, 1, "train")
    ferv = make_ferv39k(tmp_path / "FERV", size=16)
    lst = write_ferv_list(ferv, "train", ["Action/Happy/0001 Happy", f"Daily/Fear/0002 {'3' * 200}"])
    with pytest.raises(ValueError) as info:
        rdfer.data.FERV39K(ferv, "train")
    assert str(info.value).startswith(f"{lst}, row 2: unknown label '{'3' * 40}'... (200 characters); expected")
