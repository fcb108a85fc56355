"""End-to-end training on the synthetic set: train -> checkpoint -> eval, resume, bad input."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import rdfer
from conftest import REPO, tiny_config
from rdfer.engine.train import train


def test_trained_run_writes_everything(trained_run):
    out, results = trained_run
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "model.safetensors", "results.json",
                 "confusion.csv", "confusion.png", "train_flags.csv"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # Warm-up of one epoch: nothing flagged in epoch 1, then 20% hard / 10% noisy of 48 videos.
    assert rows[0]["flagged_hard"] == 0 and rows[1]["flagged_hard"] == 10 and rows[1]["flagged_noisy"] == 5
    test = results["test_last_epoch"]
    assert test["num_samples"] == 24 and 0.0 <= test["uar"] <= 1.0
    assert sum(map(sum, test["confusion"])) == 24
    assert results["noisy_flag_quality"]["true"] == 12  # 25% of 48 labels replaced
    model = rdfer.load_model(out)
    assert model.data_config["num_frames"] == 8 and model.data_config["classes"] == list(rdfer.EMOTIONS)


def test_eval_cli_reproduces_training_metrics(trained_run):
    out, results = trained_run
    cmd = [sys.executable, "-m", "rdfer", "eval", "synthetic", "--checkpoint", str(out), "--num-frames", "8",
           "--image-size", "32", "--synthetic-train", "48", "--synthetic-test", "24", "--noise-rate", "0.25",
           "--device", "cpu", "--workers", "0", "--out", str(out / "eval")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["war"] == pytest.approx(results["test_last_epoch"]["war"])
    assert metrics["confusion"] == results["test_last_epoch"]["confusion"]
    assert (out / "eval" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_equals_uninterrupted(tmp_path, capsys):
    straight = train(tiny_config(tmp_path / "straight"))
    first = train(tiny_config(tmp_path / "resumed", stop_after=1))
    assert first == {"run": str(tmp_path / "resumed"), "stopped_after_epoch": 1}
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    epoch1 = tmp_path / "resumed" / "checkpoints" / "epoch_0001" / "model.safetensors"
    written = (epoch1.stat().st_ino, epoch1.stat().st_mtime_ns)
    # Count the training-mode forwards of the resumed run: only epoch 2 may run (48 videos in
    # batches of 8: 6 steps), not epochs 1 and 2 again (re-seeded epochs would hide a restart).
    train_forwards = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: train_forwards.append(1) if isinstance(m, rdfer.RDFER) and m.training else None)
    capsys.readouterr()
    try:
        resumed = train(tiny_config(tmp_path / "resumed", resume=True))
    finally:
        hook.remove()
    assert len(train_forwards) == 6
    assert "after epoch 1" in capsys.readouterr().out
    assert (epoch1.stat().st_ino, epoch1.stat().st_mtime_ns) == written  # epoch 1's checkpoint was not redone
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight["test_last_epoch"] == resumed["test_last_epoch"]
    rows_a = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "clips_per_s"} for r in rows]
    assert strip(rows_a) == strip(rows_b)


def test_resume_refuses_other_model(tmp_path):
    from rdfer.engine.rundir import RunFolderError

    train(tiny_config(tmp_path, stop_after=1))
    other = dict(tiny_config(tmp_path).model_options, d_model=16)
    with pytest.raises(RunFolderError, match=r"model_options\.d_model: 32 in the run, 16 now"):
        train(tiny_config(tmp_path, resume=True, model_options=other))
    (tmp_path / "config.yaml").unlink()  # no stored config: the checkpoint itself refuses
    with pytest.raises(rdfer.engine.CheckpointError, match="d_model"):
        train(tiny_config(tmp_path, resume=True, model_options=other))


def test_wrong_dataset_root_fails_before_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="DFEW root not found"):
        train(tiny_config(tmp_path, dataset="dfew", root=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="needs --train"):
        train(tiny_config(tmp_path, dataset="csv"))


def test_nan_loss_is_skipped_then_stops_with_paths(tmp_path):
    cfg = tiny_config(tmp_path, lr=1e30, epochs=3, max_bad_steps=2, warmup_epochs=0, min_lr=1e30)
    with pytest.raises(FloatingPointError, match=r"synthetic/\d+"):
        with pytest.warns(UserWarning, match="non-finite loss"):
            train(cfg)


def test_yaml_config_and_cli_override(tmp_path):
    (tmp_path / "cfg.yaml").write_text(
        "epochs: 5\nnum-frames: 8\nimage_size: 32\nsynthetic_train: 24\nsynthetic_test: 12\nworkers: 0\n"
        "batch_size: 8\nmodel_options: {d_model: 16, summary_dim: 4}\nprogress: false\ndevice: cpu\naugment: false\n"
    )
    cmd = [sys.executable, "-m", "rdfer", "train", "synthetic", "--config", str(tmp_path / "cfg.yaml"), "--epochs", "1",
           "--warmup-epochs", "0", "--model-option", "n_clips=2", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["num_frames"] == 8  # CLI over file, file over defaults
    assert saved["model_options"] == {"d_model": 16, "summary_dim": 4, "n_clips": 2}
    assert rdfer.load_model(tmp_path / "run").n_clips == 2
    assert "WAR" in proc.stdout


def test_validation_split_selection_is_labelled(tmp_path):
    from rdfer.engine.datasets import build_datasets, split_validation

    cfg = tiny_config(tmp_path, val_fraction=0.25, epochs=2)
    res = train(cfg)
    assert "test_selected_on_validation" in res and "val_war" in res["test_selected_on_validation"]
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("val_war" in r for r in rows)
    # The selected model is the first epoch with the best validation WAR, saved as best_val.
    best = max(r["val_war"] for r in rows)
    assert res["test_selected_on_validation"]["val_war"] == best
    best_epoch = next(r["epoch"] for r in rows if r["val_war"] == best)
    assert rdfer.engine.checkpoint.read_metadata(tmp_path / "best_val")["epoch"] == str(best_epoch)
    # Validation videos are never trained on: epoch 2's flags cover only the training part.
    train_part, val_part = split_validation(build_datasets(cfg)[0], 0.25, cfg.seed)
    assert len(train_part) + len(val_part) == 48 and 0 < len(val_part) < 24
    assert rows[1]["flagged_hard"] == int(0.2 * len(train_part) + 0.5)
    assert rows[1]["flagged_noisy"] == int(0.1 * len(train_part) + 0.5)


def test_help_is_complete():
    # Every subcommand is listed in `rdfer --help`, and every option of every subcommand says
    # what it does (checked on the parser itself: no subprocess per subcommand).
    import argparse

    from rdfer.cli import build_parser

    parser = build_parser()
    top = parser.format_help()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subs) == {"demo", "synth-preview", "train", "eval", "predict", "audit", "analyze", "export",
                         "publish", "backbones", "pack"}
    for name, sub in subs.items():
        assert name in top, name
        assert sub.format_help().startswith("usage: rdfer " + name), name
        undocumented = [a.dest for a in sub._actions if a.dest != "help" and not a.help]
        assert not undocumented, (name, undocumented)
    proc = subprocess.run([sys.executable, "-m", "rdfer", "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "usage: rdfer" in proc.stdout


def test_unreadable_videos_are_excluded_counted_and_listed(tmp_path):
    # A CSV dataset with one garbage file in train and one in test: training runs to the end,
    # the bad videos are excluded from loss and metrics, counted per epoch and listed in
    # bad_samples.txt. Also exercises --accum-steps and --class-weighted on a real run.
    from data_trees import write_video

    clips = tmp_path / "clips"
    rows = []
    for i in range(12):
        write_video(clips / f"v{i}.mp4", 6 + i % 3, size=32)
        rows.append(f"clips/v{i}.mp4,{rdfer.EMOTIONS[i % 3]}")
    (clips / "garbage.mp4").write_bytes(b"not a video at all" * 10)
    (clips / "garbage_test.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(rows[:8] + ["clips/garbage.mp4,happy"]) + "\n")
    (tmp_path / "test.csv").write_text("path,label\n" + "\n".join(rows[8:] + ["clips/garbage_test.mp4,sad"]) + "\n")
    out = tmp_path / "run"
    from rdfer.data.decode import BadInputWarning

    with pytest.warns(BadInputWarning, match="garbage"):  # reported, not silent
        res = train(tiny_config(out, dataset="csv", train_source=str(tmp_path / "train.csv"),
                                test_source=str(tmp_path / "test.csv"), epochs=2, batch_size=4, accum_steps=2,
                                class_weighted=True))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["excluded_invalid"] for r in rows] == [1, 1]
    assert res["test_last_epoch"]["num_samples"] == 4 and res["test_last_epoch"]["excluded_invalid"] == 1
    listed = (out / "bad_samples.txt").read_text().split()
    assert sorted(listed) == sorted(str(clips / n) for n in ("garbage.mp4", "garbage_test.mp4"))
    assert res["bad_samples"] == 2
    assert all(bool(torch.isfinite(v).all()) for v in load_file(str(out / "model.safetensors")).values())


def test_correcting_rule_resumes_exactly_and_writes_its_targets(tmp_path):
    # A label-correcting rule keeps (N, K) state (soft targets, the clip probabilities): it is in
    # the checkpoint, so a resumed run trains exactly as an uninterrupted one.
    rule = dict(strategy="mixture", strategy_options={"min_class_size": 3}, synthetic_train=24, epochs=3)
    straight = train(tiny_config(tmp_path / "straight", **rule))
    train(tiny_config(tmp_path / "resumed", stop_after=2, **rule))
    resumed = train(tiny_config(tmp_path / "resumed", resume=True, **rule))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight["test_last_epoch"] == resumed["test_last_epoch"]
    flags = (tmp_path / "straight" / "train_flags.csv").read_text()
    assert flags == (tmp_path / "resumed" / "train_flags.csv").read_text()
    header, *rows = flags.splitlines()
    assert header == "index,label,mode_class,agreement,confidence,loss,target,flag"
    rows = [r.split(",") for r in rows]
    assert len(rows) == 24 and all(0 <= int(r[6]) < 7 for r in rows)
    # The mixture's noisy part trains toward a guessed label: flagged noisy, target moved.
    moved = [r for r in rows if r[6] != r[1]]
    assert moved and all(r[7] == "noisy" for r in moved)
    assert "strategy_options" in (tmp_path / "straight" / "config.yaml").read_text()
