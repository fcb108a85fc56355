"""Reliability (issue 27, part B): run folders hold no file-system surprises.

rdfer never writes through a symbolic link planted in a run folder; ``--overwrite`` moves only
rdfer's own files and never out of the working directory, the home folder or the data; a start
that fails before its first checkpoint leaves the folder as it was; ``rdfer export`` on a full
disk (a real tmpfs in a user namespace) is one line and leaves no temporary.
docs/reliability.md lists each case with the test that proves it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, tiny_config
from rdfer.cli import main
from rdfer.engine.checkpoint import SymlinkError, atomic_write_text, clean_stale_temporaries, save_training_checkpoint
from rdfer.engine.rundir import RUN_FILES, TRAIN_WRITES, RunFolderError
from rdfer.engine.train import train
from test_reliability import _digest, _one_error_line, _tmpfs_available

SMALL = dict(synthetic_train=16, synthetic_test=8, epochs=2, warmup_epochs=0)
ENV = dict(os.environ, PYTHONPATH=str(REPO), RDFER_DEBUG="")


# ---- symbolic links --------------------------------------------------------------------------------


def test_links_planted_in_a_run_folder_are_refused_and_their_targets_untouched(tmp_path):
    victim = tmp_path / "bashrc"
    victim.write_text("the user's file\n")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "epoch_0001").mkdir(parents=True)  # would be deleted as an "old checkpoint"
    (elsewhere / ".epoch_0002.tmp").mkdir()  # would be removed as a stale temporary
    for name, target in (("train.log", victim), ("results.json", victim), (".lock", victim),
                         ("checkpoints", elsewhere), ("tensorboard", elsewhere)):
        out = tmp_path / f"run_{name.strip('.')}"
        out.mkdir()
        (out / name).symlink_to(target)
        with pytest.raises(RunFolderError, match=rf"^{out / name} -> {target}: a symbolic link where rdfer writes its "
                                                 r"own file or folder; rdfer does not write through links .* Remove "
                                                 r"the link, or choose another --out$"):
            train(tiny_config(out, **SMALL))
        assert sorted(p.name for p in out.iterdir()) == [name]  # nothing written, the link itself kept
    assert victim.read_text() == "the user's file\n"  # .lock -> victim: not truncated
    assert sorted(p.name for p in elsewhere.iterdir()) == [".epoch_0002.tmp", "epoch_0001"]


def test_writers_replace_a_link_or_refuse_it_never_write_through(tmp_path):
    """The checks at the start aside, the writers themselves: an atomic write renames over a link
    (the link is replaced, its target untouched); a checkpoint refuses a linked checkpoints/."""
    import torch

    import rdfer

    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").symlink_to(victim)
    atomic_write_text(run / "results.json", "{}\n")
    assert not (run / "results.json").is_symlink() and (run / "results.json").read_text() == "{}\n"
    assert victim.read_text() == "keep\n"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "epoch_0001").mkdir(parents=True)
    (elsewhere / ".epoch_0003.x").mkdir()
    (run / "checkpoints").symlink_to(elsewhere)
    model = rdfer.wrap_with_rdfer("tiny_cnn", num_classes=3, backbone_kwargs={"widths": [4, 8, 8, 8]},
                                  detector_kwargs={"widths": [4, 4, 4, 4]}, d_model=8, summary_dim=4, num_glimpses=4,
                                  n_clips=2, clip_len=2)
    with pytest.raises(SymlinkError, match=rf"^\[Errno 40\] {run / 'checkpoints'} is a symbolic link \(to {elsewhere}\)"
                                           r", which rdfer does not write through"):
        save_training_checkpoint(run, 5, model, {"epoch": torch.tensor(5)}, keep=1)
    assert clean_stale_temporaries(run) == 0  # the temporaries behind the link are not this run's
    assert sorted(p.name for p in elsewhere.iterdir()) == [".epoch_0003.x", "epoch_0001"]


# ---- --overwrite -----------------------------------------------------------------------------------


def test_overwrite_moves_only_rdfer_files_and_lists_them(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, **dict(SMALL, epochs=1)))  # a whole run: results, model, confusion, flags
    written = sorted(p.name for p in out.iterdir())
    assert {"results.json", "model.safetensors", "train_flags.csv"} <= set(written)
    assert set(written) <= set(TRAIN_WRITES), set(written) - set(TRAIN_WRITES)  # RUN_FILES knows every file
    (out / "eval_test").mkdir()  # `rdfer eval --checkpoint run`: belongs to the run
    (out / "eval_test" / "metrics.json").write_text("{}\n")
    (out / "notes.txt").write_text("mine\n")  # the user's own files
    (out / "videos").mkdir()
    before = _digest(out)
    capsys.readouterr()
    train(tiny_config(out, **SMALL, seed=7, stop_after=1, overwrite=True))
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert sorted(p.name for p in aside.iterdir()) == sorted(written + ["eval_test"])
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "videos").is_dir()
    assert {**_digest(aside), "notes.txt": before["notes.txt"]} == before  # moved whole, not deleted
    moved = ", ".join(n for n in RUN_FILES if n in written + ["eval_test"])
    assert (f"--overwrite: moved the earlier run in {out} to {aside} ({moved}); left 2 other entries in place "
            f"(notes.txt, videos)") in capsys.readouterr().out


def test_overwrite_refuses_the_working_directory_and_folders_above_it_or_the_data(tmp_path, monkeypatch, capsys):
    work = tmp_path / "project" / "work"
    work.mkdir(parents=True)
    (work / "config.yaml").write_text("epochs: 3\n")  # the user's --config, named as rdfer's own
    monkeypatch.chdir(work)
    for out, what in ((".", "is the working directory"), ("..", "is a folder above the working directory")):
        with pytest.raises(SystemExit) as info:
            main(["train", "synthetic", "--config", "config.yaml", "--out", out, "--overwrite"])
        assert info.value.code == 2
        assert _one_error_line(capsys) == (
            f"rdfer: error: --overwrite: {out} {what} ({work}), not a run folder of "
            f"its own; rdfer will not move files out of it. Give --out a folder for this run, e.g. "
            f"{Path(out) / 'runs' / 'rdfer'}")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.csv", "test.csv"):
        (data / name).write_text("path,label\nclip,happy\n")
    (data / "metrics.csv").write_text("the user's metrics\n")  # named as rdfer's own
    for out, what in ((data, "is the data"), (tmp_path, "is a folder above the working directory")):
        with pytest.raises(SystemExit) as info:
            main(["train", "csv", "--train", str(data / "train.csv"), "--test", str(data / "test.csv"), "--out",
                  str(out), "--overwrite"])
        assert info.value.code == 2
        assert _one_error_line(capsys).startswith(f"rdfer: error: --overwrite: {out} {what}")
    assert (work / "config.yaml").read_text() == "epochs: 3\n"
    assert sorted(p.name for p in data.iterdir()) == ["metrics.csv", "test.csv", "train.csv"]  # nothing moved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "project"]  # nothing left


def test_fresh_run_never_replaces_a_file_named_like_rdfer_s(tmp_path):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "train.log").write_text("my own log\n")
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(RunFolderError, match=rf"^{out} holds files a new run would replace \(train\.log\); move them, "
                                             r"choose another --out, or pass --overwrite to move them aside$"):
        train(tiny_config(out, **SMALL))
    assert (out / "train.log").read_text() == "my own log\n"


# ---- a failed start --------------------------------------------------------------------------------


def test_failed_start_leaves_the_folder_as_it_was(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    diverging = dict(SMALL, lr=1e30, min_lr=1e30, max_bad_steps=1)  # stops in epoch 1, no checkpoint
    with pytest.raises(FloatingPointError):
        train(tiny_config(out, **diverging))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # before: config.yaml etc. blocked the rerun
    assert "the failed start left" in capsys.readouterr().out
    train(tiny_config(out, **SMALL, stop_after=1))  # the corrected command, no --overwrite needed
    before = _digest(out)
    with pytest.raises(FloatingPointError):
        train(tiny_config(out, **diverging, overwrite=True))
    assert _digest(out) == before  # the earlier run is back, byte for byte
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # and no empty OUT.replaced-DATE left
    assert f"put the earlier run back from {out}.replaced-" in capsys.readouterr().out


# ---- export on a full disk -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_on_a_full_disk_is_one_line_and_leaves_no_temporary(trained_run, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _tmpfs_available(disk):
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    target = disk / "model.out"
    script = (f"mount -t tmpfs -o size=64k none {disk} || exit 77\n"
              f"{sys.executable} -m rdfer export --format {fmt} --checkpoint {trained_run[0]} --output {target}\n"
              f"echo RC=$?\n"
              f"echo LEFT=$(ls -A {disk})\n")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=REPO, env=ENV)
    assert "RC=2" in proc.stdout and "LEFT=\n" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and "C++" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"rdfer: error: no space left on device while writing {target} (")
    assert "the file was not written and earlier files are intact" in lines[0]
