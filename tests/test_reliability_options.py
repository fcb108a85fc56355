"""Reliability (issue 27): every numeric option has a range, checked in one place before anything
is written; a diverging run stops and never saves or reports non-finite weights; a --resume on
changed training data is refused naming the change; ordinary user errors (unknown model, missing
device, read-only folder, bad checkpoint config) are the one-line exit-2 error. Real files, real
runs, the real command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import rdfer
from conftest import REPO, tiny_config
from data_trees import write_frames
from rdfer.cli import _COMMAND_RANGES, build_parser, main
from rdfer.engine.checkpoint import latest_checkpoint, load_training_state
from rdfer.engine.config import OPTION_RANGES, TrainConfig, load_yaml_config
from rdfer.engine.train import TRAIN_DATA_FILE, train
from test_reliability import _tmpfs_available

TINY = ["--synthetic-train", "16", "--synthetic-test", "8", "--num-frames", "8", "--image-size", "32",
        "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet", "--warmup-epochs", "0",
        "--model-option", "d_model=16", "--model-option", "summary_dim=4", "--no-augment"]


def _one_error_line(capsys) -> str:
    """The error, one line (notes such as the small-set advice may come before it)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("rdfer: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and "Traceback" not in "\n".join(err), err
    return errors[0][len("rdfer: error: "):]


def _exit_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2, argv
    return _one_error_line(capsys)


# ---- ranges ---------------------------------------------------------------------------------------


def test_out_of_range_options_are_one_line_exit_2_before_anything_is_read_or_written(tmp_path, capsys):
    out, ck = tmp_path / "out", str(tmp_path / "no-checkpoint")
    cases = [
        (["train", "synthetic", "--grad-clip", "-1"], "--grad-clip must be a finite number > 0 (or left out), got -1.0"),
        (["train", "synthetic", "--lr", "inf"], "--lr must be in (0, 1e+37], got inf"),
        (["train", "synthetic", "--lr", "nan"], "--lr must be in (0, 1e+37], got nan"),
        (["train", "synthetic", "--lr", "1e38"], "--lr must be in (0, 1e+37], got 1e+38"),
        (["train", "synthetic", "--t-hard", "2"], "--t-hard must be in [0, 1], got 2.0"),
        (["train", "synthetic", "--warmup-epochs", "-1"], "--warmup-epochs must be >= 0, got -1"),
        (["train", "synthetic", "--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
        (["train", "synthetic", "--lambda-noisy", "-0.5"], "--lambda-noisy must be a finite number >= 0, got -0.5"),
        (["train", "synthetic", "--gce-q", "0"], "--gce-q must be in (0, 1], got 0.0"),
        (["train", "synthetic", "--image-size", "11200"], "--image-size must be in [1, 1024], got 11200"),
        (["audit", "synthetic", "--checkpoint", ck, "--t-noisy", "1.5"], "--t-noisy must be in [0, 1], got 1.5"),
        (["eval", "synthetic", "--checkpoint", ck, "--num-frames", "0"], "--num-frames must be in [1, 1024], got 0"),
        (["export", "--checkpoint", ck, "--num-frames", "0"], "--num-frames must be in [1, 1024], got 0"),
        (["predict", "a.mp4", "--checkpoint", ck, "--detect-stride", "0"], "--detect-stride must be >= 1, got 0"),
        (["pack", "csv", "--csv", "x.csv", "--shard-size", "0"], "--shard-size must be >= 1, got 0"),
        (["pack", "dfew", "--root", "r", "--split", "train", "--fold", "6"], "--fold must be in [1, 5], got 6"),
        (["synth-preview", "--image-size", "8"], "--image-size must be in [16, 256], got 8"),
        (["demo", "--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["demo", "--synthetic-train", "-3"], "--synthetic-train must be >= 1, got -3"),
    ]
    for argv, message in cases:
        command = argv[0]
        argv = argv + (["--out", str(out)] if command not in ("export", "predict") else [])
        assert _exit_2(argv, capsys) == message, argv
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the output folder


def test_every_numeric_option_has_a_range():
    """Every int/float field of TrainConfig and every int/float flag of every command is in the
    range table: a new option cannot slip in unchecked."""
    from rdfer.engine.config import _CHOICES
    from rdfer.engine.datasets import DATASETS

    from rdfer.engine.config import AUTO_VALUES

    numeric = {"int", "float", "Optional[int]", "Optional[float]", "Union[float, str]"}
    fields = {f.name for f in dataclasses.fields(TrainConfig) if f.type in numeric}
    assert fields == set(OPTION_RANGES)
    # A number-or-word option: the word is the only text it takes.
    assert {f.name for f in dataclasses.fields(TrainConfig) if f.type == "Union[float, str]"} == set(AUTO_VALUES)
    assert _CHOICES["dataset"] == DATASETS  # spelt out in config.py so that it needs no torch import
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command, sub in commands.items():
        for action in sub._actions:
            if action.type in (int, float):
                assert action.dest in OPTION_RANGES or action.dest in _COMMAND_RANGES.get(command, {}), (command,
                                                                                                         action.dest)


def test_config_values_are_checked_and_yaml_numbers_converted(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"^--label-smoothing must be in \[0, 1\], got 1\.5$"):
        TrainConfig(label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"^--epochs must be an integer >= 1, got 2\.5$"):
        TrainConfig(epochs=2.5)
    with pytest.raises(ValueError, match=r"^--loss-scope must be one of epoch, batch, got 'epochs'$"):
        TrainConfig(loss_scope="epochs")
    # YAML reads 1e-3 as text (no dot): it is the number it looks like.
    (tmp_path / "ok.yaml").write_text("lr: 1e-3\nmin_lr: 1e-5\n")
    cfg = TrainConfig.from_dict(load_yaml_config(tmp_path / "ok.yaml"))
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float) and cfg.min_lr == 1e-5
    (tmp_path / "bad.yaml").write_text("lr: .inf\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: --lr must be in \(0, 1e\+37\], got inf"):
        load_yaml_config(tmp_path / "bad.yaml")
    (tmp_path / "text.yaml").write_text("weight_decay: lots\n")
    assert _exit_2(["train", "synthetic", "--config", str(tmp_path / "text.yaml"), "--out", str(tmp_path / "run")],
                   capsys) == f"{tmp_path / 'text.yaml'}: --weight-decay must be a number in [0, 10], got 'lots'"
    assert not (tmp_path / "run").exists()


# ---- divergence ---------------------------------------------------------------------------------


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def _register(name: str, forward) -> None:
    """A user backbone (clip-level, 8 features) whose forward is ``forward(module, x)``."""
    if rdfer.is_backbone(name):
        return

    @rdfer.register_backbone(name)
    def _factory(pretrained=False):
        class UserNet(nn.Module):
            token_level, feature_dim = "clip", 8

            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 8)
                self.scale = nn.Parameter(torch.tensor(100.0))  # a learnable temperature

            def forward(self, x):
                return forward(self, x)

        return UserNet()


def _scaled(net, x):
    return net.fc(x.float().mean(dim=(2, 3, 4))) * (net.scale / 100)


def _nan_gradient(net, x):
    h = net.fc(x.float().mean(dim=(2, 3, 4)))
    return h + torch.sqrt(h * 0)  # finite outputs, nan gradients: d/dh sqrt(0 * h) = inf * 0


def test_infinite_weights_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    """Epoch 1 trains at min_lr (the warm-up's start); epoch 2 steps with lr 7.5e36, and AdamW's
    decoupled decay turns the temperature of 100 into -inf: the run stops at that step, saves
    nothing of epoch 2 and reports nothing."""
    _register("test_scaled_backbone", _scaled)
    out = tmp_path / "run"
    cfg = tiny_config(out, model=None, backbone="test_scaled_backbone", model_options={"d_model": 16},
                      synthetic_train=16, synthetic_test=8, batch_size=16, epochs=3, warmup_epochs=1, lr=1e37,
                      min_lr=1e-3, weight_decay=10.0)
    with pytest.raises(FloatingPointError) as info:
        train(cfg)
    message = str(info.value)
    assert message.startswith("training diverged: the weights became non-finite (backbone.")
    assert " holds nan or inf) after the optimizer step at epoch 2, step 1 (learning rate 7.5e+36)" in message
    assert f"nothing of epoch 2 was saved; the last checkpoint, {out / 'checkpoints' / 'epoch_0001'}, is intact" in message
    assert "start a new run (another --out, or --overwrite) with a lower --lr or a --grad-clip" in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001"]
    assert not (out / "model.safetensors").exists() and not (out / "results.json").exists()
    assert _finite(rdfer.load_model(out / "checkpoints" / "epoch_0001"))


def test_huge_finite_lr_is_caught_at_the_end_of_the_epoch_and_never_reported(tmp_path, capsys):
    """lr 1e30 leaves finite but useless weights after step 1; step 2's loss is nan and skipped.
    The epoch ends there, with fewer bad steps than --max-bad-steps. Before, such a model was
    saved and reported with a WAR (exit 0); now the weights are checked at the end of the epoch:
    rdfer_small's BatchNorm statistics are inf, a GroupNorm model is probed on that batch."""
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"non-finite loss \(nan here; in at least one process\) at epoch 1, step 2"):
        line = _exit_2(["train", "synthetic", *TINY, "--epochs", "1", "--lr", "1e30", "--min-lr", "1e30",
                        "--out", str(out)], capsys)
    assert line.startswith("training diverged: the weights became non-finite (backbone.")
    assert "running_mean holds nan or inf) at the end of epoch 1; the run stopped and these weights were not saved; " \
           "no checkpoint was written yet (it stopped in epoch 1)" in line
    assert "WAR" not in capsys.readouterr().out
    assert not (out / "checkpoints").exists() and not (out / "model.safetensors").exists()
    assert not (out / "results.json").exists()

    out = tmp_path / "gn"
    with pytest.warns(UserWarning, match="non-finite loss"), pytest.raises(FloatingPointError) as info:
        train(tiny_config(out, synthetic_train=16, synthetic_test=8, epochs=1, warmup_epochs=0, lr=1e30, min_lr=1e30))
    assert str(info.value).startswith("training diverged: epoch 1 ended on 1 non-finite loss(es) in a row and the "
                                      "weights still give a non-finite loss on those videos (synthetic/")
    assert "they were not saved; no checkpoint was written yet (it stopped in epoch 1)" in str(info.value)
    assert not (out / "checkpoints").exists() and not (out / "results.json").exists()


def test_non_finite_gradients_are_skipped_then_stop(tmp_path):
    """Finite losses, nan gradients: every step is skipped (the weights stay finite, so epoch 1's
    checkpoint is written), and the bad steps are counted across the epoch boundary."""
    _register("test_nan_gradient_backbone", _nan_gradient)
    out = tmp_path / "run"
    cfg = tiny_config(out, model=None, backbone="test_nan_gradient_backbone", model_options={"d_model": 16},
                      synthetic_train=16, synthetic_test=8, epochs=2, warmup_epochs=0, max_bad_steps=3)
    with pytest.warns(UserWarning, match=r"non-finite gradient \(in backbone\.fc\.\w+ here"):
        with pytest.raises(FloatingPointError) as info:
            train(cfg)
    assert "non-finite gradient (in backbone.fc." in str(info.value)
    assert (f"at epoch 2, step 1; the step was skipped. Samples in the batch: synthetic/" in str(info.value))
    assert (f"3 bad steps in a row: stopping; nothing of epoch 2 was saved; the last checkpoint, "
            f"{out / 'checkpoints' / 'epoch_0001'}, is intact" in str(info.value))
    assert load_training_state(out / "checkpoints" / "epoch_0001")["num_updates"] == 0  # no step was taken


# ---- the data a run trains on ---------------------------------------------------------------------


def _csv(path: Path, rows) -> Path:
    path.write_text("path,label\n" + "\n".join(rows) + "\n")
    return path


def test_resume_on_changed_training_data_is_refused_naming_the_videos(tmp_path, capsys):
    clips = [f"v{i}" for i in range(8)]
    for name in clips:
        write_frames(tmp_path / name, 8, 32)
    labels = ["happy", "sad"] * 4
    rows = [f"{c},{y}" for c, y in zip(clips, labels)]
    train_csv, test_csv = _csv(tmp_path / "train.csv", rows), _csv(tmp_path / "test.csv", rows[:2])
    out = tmp_path / "run"
    argv = ["train", "csv", "--train", str(train_csv), "--test", str(test_csv), *TINY[8:], "--epochs", "2",
            "--out", str(out)]
    assert main(argv + ["--stop-after", "1"]) == 0
    stored = json.loads((out / TRAIN_DATA_FILE).read_text())
    assert stored["num_videos"] == 8 and stored["classes"] == ["happy", "sad"]  # the emotions present
    assert load_training_state(latest_checkpoint(out))["train_data_sha256"] == stored["sha256"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}

    swapped = {"happy": "sad", "sad": "happy"}
    _csv(train_csv, [f"{c},{swapped[y] if i in (1, 2) else y}" for i, (c, y) in enumerate(zip(clips, labels))])
    line = _exit_2(argv + ["--resume"], capsys)
    v1, v2 = (str(tmp_path / c) for c in ("v1", "v2"))
    assert line.startswith(f"--resume: the training data of the run in {out} has changed since it started: "
                           f"labels of 2 video(s) changed ({v1}: sad -> happy, {v2}: happy -> sad). ")
    assert line.endswith("restore that data, or start a new run on this data (another --out, or --overwrite)")

    for name in ("w0", "w1", "w2"):
        write_frames(tmp_path / name, 8, 32)
    _csv(train_csv, rows[1:] + ["w0,sad", "w1,happy", "w2,sad"])
    line = _exit_2(argv + ["--resume"], capsys)
    added = ", ".join(str(tmp_path / n) for n in ("w0", "w1", "w2"))
    assert f"3 video(s) added ({added}); 1 video(s) removed ({tmp_path / 'v0'})" in line

    _csv(train_csv, rows[::-1])
    assert "the order of the videos changed" in _exit_2(argv + ["--resume"], capsys)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before

    # A run from before the fingerprint: the loss memory's size still tells added rows apart.
    state = load_training_state(latest_checkpoint(out))
    del state["train_data_sha256"]
    torch.save(state, latest_checkpoint(out) / "state.pt")
    (out / TRAIN_DATA_FILE).unlink()
    _csv(train_csv, rows + ["w0,sad"])
    assert f"{latest_checkpoint(out)} was trained on 8 videos but the training set now has 9" in _exit_2(
        argv + ["--resume"], capsys)

    _csv(train_csv, rows)  # the data it started with: the run continues
    assert main(argv + ["--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["epochs"] == 2


# ---- user errors: one line, exit 2 ------------------------------------------------------------------


def test_unknown_model_backbone_device_are_user_errors_before_anything_is_written(tmp_path, capsys):
    out = str(tmp_path / "run")
    line = _exit_2(["train", "synthetic", "--model", "rdfer_smal", "--out", out], capsys)
    assert line.startswith("--model: Unknown model 'rdfer_smal'. Did you mean: rdfer_small")
    assert "Known: frame_baseline, " in line
    assert _exit_2(["train", "synthetic", "--backbone", "r3d18", "--out", out], capsys).startswith(
        "--backbone: Unknown backbone 'r3d18'. Did you mean: r3d_18")
    assert _exit_2(["train", "synthetic", "--backbone", "timm/resnet_18", "--out", out], capsys).startswith(
        "--backbone: Unknown backbone 'timm/resnet_18': timm has no model 'resnet_18'. Did you mean: timm/resnet18")
    assert _exit_2(["train", "synthetic", "--device", "foo", "--out", out], capsys) == (
        "--device 'foo' is not a device rdfer can use; choose auto, cpu, cuda or cuda:N")
    line = _exit_2(["train", "synthetic", "--device", "cuda:7", "--out", out], capsys)
    assert line.startswith("--device cuda:7: ")
    assert ("CUDA is not available on this machine" in line) != torch.cuda.is_available()
    line = _exit_2(["predict", "a.mp4", "--checkpoint", str(tmp_path / "none"), "--device", "cuda:7"], capsys)
    assert line.startswith("--device cuda:7: ")  # before the checkpoint is looked at
    (tmp_path / "cfg.yaml").write_text("device: cuda:7\n")
    assert _exit_2(["train", "synthetic", "--config", str(tmp_path / "cfg.yaml"), "--out", out],
                   capsys).startswith("--device cuda:7: ")
    assert not (tmp_path / "run").exists()
    with pytest.raises(KeyError):  # still a KeyError for library code that catches one
        rdfer.create_model("rdfer_smal")


def test_unknown_model_option_is_a_user_error(tmp_path, capsys):
    line = _exit_2(["train", "synthetic", *TINY, "--epochs", "1", "--model-option", "d_modle=8",
                    "--out", str(tmp_path / "run")], capsys)
    assert line.startswith("--model-option: wrap_with_rdfer got unknown options ['d_modle']; known: ")


def _save_with_config(path: Path, config: str) -> Path:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": "rdfer", "rdfer_config": config})
    return path


def test_bad_checkpoint_config_is_a_user_error(tmp_path, capsys):
    cases = [
        ("{not json", "its stored model config (rdfer_config) is not valid JSON ("),
        (json.dumps({"num_classes": 7}), "its stored model config (rdfer_config) lacks backbone; it cannot rebuild the model"),
        (json.dumps({"backbone": "tiny_cnn", "num_classes": 7, "d_modl": 8}),
         "its stored model config cannot build a model (wrap_with_rdfer got unknown options ['d_modl']"),
    ]
    for i, (config, message) in enumerate(cases):
        ck = _save_with_config(tmp_path / f"m{i}.safetensors", config)
        line = _exit_2(["export", "--checkpoint", str(ck), "--format", "torchscript"], capsys)
        assert line.startswith(f"{ck}: {message}"), line


def test_read_only_output_folder_is_one_line_exit_2(tmp_path):
    """A real read-only file system (a tmpfs mounted ro in a user namespace: no root needed, and
    root's permission bypass does not apply)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if not _tmpfs_available(ro, "ro,size=64k"):
        pytest.skip("cannot mount a read-only tmpfs in a user namespace here")
    script = (f"mount -t tmpfs -o ro,size=64k none {ro} || exit 77\n"
              f"{sys.executable} -m rdfer train synthetic --epochs 1 --out {ro}/run; echo RC=$?\n"
              f"{sys.executable} -m rdfer synth-preview --out {ro}/grid.png; echo RC=$?\n")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    assert proc.stdout.split() == ["RC=2", "RC=2"], proc.stdout + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0] == (f"rdfer: error: --out {ro}/run cannot be written ({ro}, where it would be created, is on a "
                        f"read-only file system); choose another --out")
    assert lines[1].startswith(f"rdfer: error: cannot write {ro}/grid.png")  # or its temporary
    assert lines[1].endswith(": it is on a read-only file system; choose a writable location")
