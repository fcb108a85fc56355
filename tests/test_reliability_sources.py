"""Data is never code, and no model is silently wrong (third hostile-input pass): the one rule for
data sources (rdfer.data.sources), config files that name programs, classes with no training
video and the logit adjustment, a recipe that does not depend on how the data is named, and the
warnings and records of runs that would otherwise mislead (warm-up past the last epoch, the test
set inside the training set, TTA results, a pack's frame size, strategy option values)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import GN_OPTIONS
from data_trees import write_frames
from rdfer.cli import main
from rdfer.data.sources import SourceError, check_source, expand_pattern, join_index_name, source_kind

TINY = ["--batch-size", "4", "--workers", "0", "--device", "cpu", "--quiet", "--num-frames", "8", "--image-size", "32",
        "--no-augment", "--seed", "0", *[f"--model-option={k}={json.dumps(v)}" for k, v in GN_OPTIONS.items()]]


def _fails(capsys, argv) -> str:
    """The one stderr line of a command that must fail as a user error (exit 2)."""
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rdfer: error: "), lines
    return lines[0]


# ------------------------------------------------------------------ the rule, written once

@pytest.mark.parametrize("spec, kind", [
    ("shards/train-000000.tar", "local"), ("/data/x.tar", "local"), ("file:///data/x.tar", "local"),
    ("https://host/x.tar", "url"), ("http://host/x.tar", "url"), ("pipe:curl -s host", "program"),
    ("-", "program"), ("gs://bucket/x.tar", "program"), ("scp://host/x.tar", "program"), ("hf://ds/x.tar", "program"),
])
def test_source_kinds(spec, kind):
    assert source_kind(spec) == kind


def test_what_each_origin_may_name():
    # The user may name anything, for this run.
    for spec in ("pipe:cat x.tar", "gs://b/x.tar", "http://h/x.tar", "x.tar", "-"):
        assert check_source(spec, "user") == spec
    # A config file: data (local paths, URLs), never a program.
    assert check_source("/data/x.tar", "config") == "/data/x.tar"
    assert check_source("https://h/x.tar", "config") == "https://h/x.tar"
    for spec in ("pipe:touch /tmp/x", "-", "gs://b/x.tar", "scp://h/x"):
        with pytest.raises(SourceError, match="would (run a program|read standard input); .* honoured only when typed on the"):
            check_source(spec, "config", "cfg.yaml: train_source")
    # An index: its own shards, by plain names inside its folder or URL prefix.
    assert check_source("shard-000001.tar", "index", index="/p/index.json") == "/p/shard-000001.tar"
    assert check_source("a/b.tar", "index", index="https://h/p/index.json") == "https://h/p/a/b.tar"
    assert join_index_name("index.json", "s.tar") == "s.tar"
    for name in ("pipe:touch x", "../x.tar", "a/../../x.tar", "/etc/passwd", "file:///etc/passwd", "http://h/x.tar",
                 "hf://ds/x.tar", "-", "", ".", "a\\..\\x.tar", 7):
        with pytest.raises(SourceError, match="not a plain name inside the index's own folder"):
            check_source(name, "index", index="/p/index.json")
    with pytest.raises(ValueError, match="unknown source origin"):
        check_source("x", "somewhere")


def test_brace_patterns_are_bounded_and_every_expansion_is_checked():
    assert expand_pattern("s-{0..2}.tar::t.tar") == ["s-0.tar", "s-1.tar", "s-2.tar", "t.tar"]
    for bomb in ("s-{0..99999999}.tar", "{0..9}{0..9}{0..9}{0..9}{0..9}{0..9}.tar", "{a..z}{a..z}{a..z}{a..z}"):
        with pytest.raises(SourceError, match="expands to more than 100000 shards"):
            expand_pattern(bomb)  # refused before it is expanded (a list of 10^8 names fills the memory)
    with pytest.raises(SourceError, match="would run a program"):
        expand_pattern("{x.tar,pipe:touch /tmp/p}", "config")  # a program hidden in a brace alternative
    assert expand_pattern("${HOME}/x.tar") == ["${HOME}/x.tar"]  # no environment variables substituted


# ------------------------------------------------------------------ configs are data

def test_a_config_naming_a_program_as_data_is_refused_and_nothing_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    for source in (f"pipe:touch {marker}", f"{{a.tar,pipe:touch {marker}}}"):
        cfg = tmp_path / "config.yaml"
        cfg.write_text(yaml.safe_dump({"dataset": "webdataset", "train_source": source, "test_source": source,
                                       "epochs": 1}))
        line = _fails(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
        assert f"{cfg}: train_source: " in line and "would run a program" in line
        assert not marker.exists() and not (tmp_path / "run").exists()
    # A program typed on the command line is the user's choice for this run.
    cfg.write_text(yaml.safe_dump({"dataset": "webdataset", "train_source": "x.tar", "epochs": 1}))
    with pytest.raises(SystemExit):
        main(["train", "--config", str(cfg), "--train", f"pipe:touch {marker}", "--test", f"pipe:touch {marker}",
              "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"])
    assert marker.exists()


def test_a_config_writes_its_run_inside_the_working_folder_only(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in ("/tmp/elsewhere/run", "../up", "runs/../../up", "~/run"):
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({"dataset": "synthetic", "out": out}))
        line = _fails(capsys, ["train", "--config", "config.yaml"])
        assert f"config.yaml: out: {out!r} is outside the working folder" in line and "give --out" in line
    assert not (tmp_path.parent / "up").exists() and not Path("/tmp/elsewhere").exists()
    from rdfer.cli import _train_config_from_args, build_parser

    for argv in (["--out", "/tmp/elsewhere/run"], []):  # --out typed by the user; a plain relative out
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({"dataset": "synthetic", "out": "/tmp/x" if argv else "runs/a"}))
        args = build_parser().parse_args(["train", "--config", "config.yaml", *argv])
        vars(args).pop("debug", None)
        assert _train_config_from_args(args).out == ("/tmp/elsewhere/run" if argv else "runs/a")


# ------------------------------------------------------------------ classes with no training video

def _csv(root: Path, name: str, rows) -> Path:
    lines = ["path,label"]
    for i, label in enumerate(rows):
        folder = root / f"{name}_{i:03d}"
        write_frames(folder, 8, 32)
        lines.append(f"{folder},{label}")
    path = root / f"{name}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_emotion_labels_make_only_the_classes_present():
    from rdfer.data import EMOTIONS, VideoCSV

    rows = [(1, "a", "happy")] * 21 + [(2, "b", "Sad")] * 7
    assert VideoCSV._infer_classes(Path("x.csv"), rows) == ["happy", "sad"]  # before: all 7, five never trained
    every = [(k, "a", e) for k, e in enumerate(reversed(EMOTIONS))]
    assert VideoCSV._infer_classes(Path("x.csv"), every) == list(EMOTIONS)  # DFEW's order when all occur


def test_a_class_without_training_videos_is_said_and_cannot_dominate(tmp_path, capsys):
    """The hostile case: happy 21, sad 7, DFEW emotion names. Without --classes the classes are the
    two present; with a class list naming an empty class the run says so, and the logit adjustment
    gives that class the largest class's prior (before: 1e-8, so it won every test video)."""
    train_csv = _csv(tmp_path, "train", ["happy"] * 6 + ["sad"] * 2)
    assert main(["train", "csv", "--train", str(train_csv), "--test", str(train_csv), *TINY, "--epochs", "1",
                 "--warmup-epochs", "3", "--out", str(tmp_path / "two")]) == 0
    err = capsys.readouterr().err
    from rdfer.engine.datasets import trained_data_config

    assert trained_data_config(tmp_path / "two")["classes"] == ["happy", "sad"]
    # The same file as --train and --test, and a rule that never starts: both said, not silent.
    assert "8 of the 8 test videos are training videos too" in err
    assert "the agreement rule starts after epoch 3 (--warmup-epochs 3) but the run has 1 epochs: it never acts" in err
    card = (tmp_path / "two" / "README.md").read_text()
    assert "reweighting from epoch" not in card and "never acted" in card

    assert main(["train", "csv", "--train", str(train_csv), "--test", str(train_csv), *TINY, "--epochs", "1",
                 "--classes", "neutral,happy,sad", "--logit-adjustment", "auto", "--out", str(tmp_path / "three")]) == 0
    out = capsys.readouterr()
    assert "1 class(es) have no training video: neutral" in out.err
    assert "logit adjustment on, tau 1" in out.out  # auto counts the empty class (infinitely rare)
    from rdfer.engine.checkpoint import latest_checkpoint, load_training_state

    offset = load_training_state(latest_checkpoint(tmp_path / "three"))["criterion"]["logit_offset"]
    assert offset.tolist() == pytest.approx(torch.tensor([0.75, 0.75, 0.25]).log().tolist())


# ------------------------------------------------------------------ the recipe and its notice

def test_the_recipe_does_not_depend_on_how_the_data_is_named(tmp_path, capsys):
    from rdfer.cli import _train_config_from_args, build_parser
    from rdfer.data import VideoCSV, write_webdataset

    csv = _csv(tmp_path, "v", ["happy", "sad"] * 3)
    write_webdataset(VideoCSV(csv, num_frames=8, image_size=16), tmp_path / "pack", num_frames=8, image_size=16,
                     shard_size=2, progress=False)
    for spec in (tmp_path / "pack", tmp_path / "pack" / "index.json", tmp_path / "pack" / "shard-{000000..000002}.tar",
                 f"{tmp_path / 'pack' / 'shard-000000.tar'}::{tmp_path / 'pack' / 'shard-{000001..000002}.tar'}"):
        args = build_parser().parse_args(["train", "webdataset", "--train", str(spec), "--test", str(spec),
                                          "--epochs", "3", "--model-option", "frame_head=false"])
        vars(args).pop("debug", None)
        cfg = _train_config_from_args(args)
        notice = capsys.readouterr().out
        assert (cfg.epochs, cfg.batch_size, cfg.noisy_class_guard) == (3, 16, 0.5), spec  # before: 'paper' for a pattern
        assert "a small training set (6 videos): the 'small' recipe (warmup epochs 1, batch size 16" in notice
        assert "epochs 30" not in notice and "frame head" not in notice  # the values the user set are not listed


# ------------------------------------------------------------------ what a run records

def test_a_webdataset_run_records_the_pack_s_frame_size(tmp_path):
    from rdfer.data import VideoCSV, write_webdataset

    csv = _csv(tmp_path, "v", ["happy", "sad"] * 3)
    write_webdataset(VideoCSV(csv, num_frames=8, image_size=16), tmp_path / "pack", num_frames=8, image_size=16,
                     shard_size=3, progress=False)
    argv = ["train", "webdataset", "--train", str(tmp_path / "pack"), "--test", str(tmp_path / "pack"),
            *[a for a in TINY if a not in ("--image-size", "32")], "--epochs", "1", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["image_size"] == 16  # before: 112
    assert "16 px" in (tmp_path / "run" / "README.md").read_text() and "112 px" not in (tmp_path / "run" / "README.md").read_text()
    assert main(argv + ["--resume"]) == 0  # the recorded size is no "other option" on resume


def test_tta_results_are_kept_apart_and_say_so(trained_run, tmp_path):
    run, _ = trained_run
    data = ["synthetic", "--synthetic-train", "48", "--synthetic-test", "24", "--noise-rate", "0.25", "--seed", "0",
            "--workers", "0"]
    assert main(["eval", "--checkpoint", str(run), *data, "--out", str(tmp_path / "plain")]) == 0
    assert main(["eval", "--checkpoint", str(run), *data, "--tta"]) == 0
    assert main(["eval", "--checkpoint", str(run), *data]) == 0
    plain = json.loads((run / "eval_test" / "metrics.json").read_text())
    tta = json.loads((run / "eval_test_tta" / "metrics.json").read_text())  # before: written over eval_test
    assert (plain["tta"], tta["tta"]) == (None, "mirror")
    assert plain == json.loads((tmp_path / "plain" / "metrics.json").read_text())


def test_strategy_option_values_are_judged_as_values(capsys, tmp_path):
    line = _fails(capsys, ["train", "synthetic", "--strategy", "elr", "--strategy-option", "lam=nan",
                           "--out", str(tmp_path / "r")])
    assert line == "rdfer: error: --strategy-option: elr lam must be in [0, 100], got nan"  # before: 'unknown option'
    line = _fails(capsys, ["train", "synthetic", "--strategy", "elr", "--strategy-option", "lamb=1",
                           "--out", str(tmp_path / "r")])
    assert "unknown strategy options ['lamb']; it takes: lam, beta, source" in line
    from rdfer.losses import create_strategy

    assert create_strategy("elr", lam="1e-1").lam == pytest.approx(0.1)  # YAML's 1e-1 is text


def test_an_index_larger_than_any_index_is_refused_without_reading_it_all(tmp_path):
    from rdfer.data.sources import read_source

    big = tmp_path / "index.json"
    big.write_bytes(b" " * 2049)
    assert read_source(str(big), limit=4096) == b" " * 2049
    with pytest.raises(SourceError, match=r"index.json: more than 2,048 bytes, larger than a shard index may be"):
        read_source(str(big), limit=2048)
    with pytest.raises(SourceError):  # an endless source stops at the limit
        read_source("/dev/zero", limit=1 << 20)


def test_model_sizes_in_a_config_or_model_option_are_bounded_before_building(tmp_path, capsys):
    for option, shown in (("d_model=1000000000", "d_model is 1000000000; rdfer accepts an integer in 1..16384"),
                          ('backbone_kwargs={"widths": [8, 16, 100000000, 32]}', "backbone_kwargs widths")):
        line = _fails(capsys, ["train", "synthetic", "--model-option", option, "--out", str(tmp_path / "r")])
        assert line.startswith("rdfer: error: the --model-option ") and shown in line
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"model_options": {"num_glimpses": 10 ** 7}}))
    line = _fails(capsys, ["train", "synthetic", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")])
    assert "num_glimpses is 10000000; rdfer accepts an integer in 1..4096" in line and str(tmp_path / "c.yaml") in line
    assert not (tmp_path / "r").exists()
