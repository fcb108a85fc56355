"""Reliability (issue 15): run folders are never mixed or silently taken over, and every user
error is one clear line. Real folders, real processes (two ``rdfer train`` for the lock, a real
``kill -9``), a real full file system (tmpfs in a user namespace) where the case needs them.
docs/reliability.md lists each case with the test that proves it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import rdfer
from conftest import REPO, tiny_config
from data_trees import write_frames
from rdfer.cli import main
from rdfer.engine.checkpoint import CheckpointError, latest_checkpoint, load_training_state
from rdfer.engine.rundir import RunFolderError, RunLock
from rdfer.engine.train import train

# The smallest run: 16 training videos, one or two epochs of two steps.
SMALL = dict(synthetic_train=16, synthetic_test=8, epochs=2, warmup_epochs=0)
CLI_TINY = ["--synthetic-train", "16", "--synthetic-test", "8", "--num-frames", "8", "--image-size", "32",
            "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet", "--warmup-epochs", "0",
            "--model-option", "d_model=16", "--model-option", "summary_dim=4", "--no-augment"]
ENV = dict(os.environ, PYTHONPATH=str(REPO), RDFER_DEBUG="")


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rdfer: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


# ---- run folders --------------------------------------------------------------------------------


def test_fresh_run_into_a_run_folder_is_refused_and_loses_nothing(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(out, **SMALL, stop_after=1))
    before = _digest(out)
    with pytest.raises(RunFolderError, match=r"already holds a run .*--resume.*another --out.*--overwrite"):
        train(tiny_config(out, **SMALL, seed=7, stop_after=1))
    assert _digest(out) == before  # not one byte of the first run changed
    assert not (out / ".lock").exists()


def test_overwrite_moves_the_old_run_aside(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, **SMALL, stop_after=1))
    before = _digest(out)
    train(tiny_config(out, **SMALL, seed=7, stop_after=1, overwrite=True))
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and _digest(aside[0]) == before  # moved whole, not deleted
    assert f"moved the earlier run in {out} to {aside[0]}" in capsys.readouterr().out
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 7
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001"]
    with pytest.raises(RunFolderError, match="give one of them"):
        train(tiny_config(out, **SMALL, resume=True, overwrite=True))


def test_resume_with_other_options_names_the_fields(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, **SMALL, stop_after=1))
    before = _digest(out)
    with pytest.raises(RunFolderError, match=r"other options: .*strategy: 'agreement' in the run, 'ce' now") as info:
        train(tiny_config(out, **SMALL, resume=True, seed=7, strategy="ce"))
    assert "seed: 0 in the run, 7 now" in str(info.value)
    with pytest.raises(RunFolderError, match=r"dataset: 'synthetic' in the run, 'csv' now"):
        train(tiny_config(out, **SMALL, resume=True, dataset="csv"))
    assert _digest(out) == before
    # Hidden temporaries of a writer killed mid-write are removed when the run continues.
    (out / "checkpoints" / ".epoch_0002.x1y2").mkdir()
    (out / "checkpoints" / ".epoch_0002.x1y2" / "state.pt").write_bytes(b"half")
    (out / ".metrics.jsonl.abc.tmp").write_text("half")
    # Where and how it runs may change: workers, progress, device, --stop-after.
    res = train(tiny_config(out, **SMALL, resume=True, progress=True, workers=1))
    assert res["test_last_epoch"]["num_samples"] == 8
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert f"removed 2 temporary file(s) left in {out}" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp")) and not list((out / "checkpoints").glob(".*"))


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
    with RunLock(tmp_path / "run"):
        info = json.loads((tmp_path / "run" / ".lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(RunFolderError, match=rf"in use by another rdfer run \(pid {os.getpid()} on host "):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / ".lock").exists()
    RunLock(tmp_path / "run").acquire().release()  # free again


def _start_train(out: Path, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rdfer", "train", "synthetic", *CLI_TINY, "--out", str(out), *extra]
    with open(log, "w") as f:  # a file, not a pipe nobody reads: the child can never block on it
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=ENV)


def test_second_live_writer_is_refused_then_kill_9_leaves_it_resumable(tmp_path, capsys):
    """Two real ``rdfer train`` processes on one --out: the second is refused (one line, exit 2)
    naming the first's pid and host; after ``kill -9`` of the first, ``--resume`` takes the
    folder over and removes the hidden temporaries a kill leaves."""
    out = tmp_path / "run"
    log = tmp_path / "first.log"
    first = _start_train(out, log, "--epochs", "100")

    def wait_for(ready) -> None:
        deadline = time.time() + 600  # generous: a loaded 2-core machine starts Python slowly
        while not ready():
            if first.poll() is not None or time.time() > deadline:
                first.kill()
                first.wait()
                raise AssertionError(f"the first run ended or stalled: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    try:
        wait_for(lambda: (out / ".lock").is_file() and (out / "config.yaml").is_file())
        second = subprocess.run([sys.executable, "-m", "rdfer", "train", "synthetic", *CLI_TINY, "--epochs", "100",
                                 "--resume", "--out", str(out)], capture_output=True, text=True, cwd=REPO, env=ENV)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith(f"rdfer: error: {out} is in use by another rdfer run "
                                        f"(pid {first.pid} on host {socket.gethostname()}, started ")
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        wait_for(lambda: latest_checkpoint(out) is not None)
    finally:
        first.kill()  # SIGKILL: no Python cleanup runs in it
        first.wait()
    assert first.returncode == -signal.SIGKILL  # it was still running: refused while live, not after
    assert (out / ".lock").exists()  # left behind by the killed process, but no longer held
    (out / "checkpoints" / ".epoch_0999.dead").mkdir()  # what a kill mid-checkpoint leaves
    last = int(latest_checkpoint(out).name.split("_")[1])
    assert main(["train", "synthetic", *CLI_TINY, "--epochs", "100", "--resume", "--stop-after", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"resuming {out} after epoch {last}" in printed and "temporary file(s) left in" in printed
    assert not list((out / "checkpoints").glob(".*"))  # the planted and any real leftovers are gone
    assert load_training_state(latest_checkpoint(out))["epoch"] == last + 1
    assert not (out / ".lock").exists()


# ---- DataLoader workers -------------------------------------------------------------------------


class _Recording(torch.utils.data.Dataset):
    """Appends ``pid index`` to a file for every item loaded, from whichever process loads it."""

    def __init__(self, log: Path, n: int) -> None:
        self.log, self.n = str(log), n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.getpid()} {i}\n".encode())
        os.close(fd)
        return torch.tensor(i)


def test_progress_bar_starts_exactly_the_requested_workers(tmp_path):
    from rdfer.engine.evaluate import progress_bar

    log = tmp_path / "loads.txt"
    loader = torch.utils.data.DataLoader(_Recording(log, 64), batch_size=8, num_workers=2)
    seen = torch.cat([b for b in progress_bar(loader, disable=True)])
    assert sorted(seen.tolist()) == list(range(64))
    rows = [line.split() for line in log.read_text().splitlines()]
    assert len(rows) == 64  # every item loaded once: no second set of workers prefetching
    assert len({pid for pid, _ in rows}) == 2 and str(os.getpid()) not in {pid for pid, _ in rows}


def test_default_workers_is_min_4_and_available_cores():
    cores = len(os.sched_getaffinity(0))
    assert rdfer.engine.config.TrainConfig().workers == min(4, cores)


# ---- the command line: one line, exit 2, --debug --------------------------------------------------


def test_startup_errors_are_one_line_with_exit_2(tmp_path, capsys):
    cases = [
        (["train", "dfew", "--root", str(tmp_path / "nowhere")], "DFEW root not found: " + str(tmp_path / "nowhere")),
        (["eval", "synthetic", "--checkpoint", str(tmp_path / "none.safetensors")], "checkpoint not found"),
        (["train", "synthetic", "--epochs", "0", "--out", str(tmp_path / "e")], "--epochs must be >= 1, got 0"),
        (["train", "synthetic", "--stop-after", "0", "--out", str(tmp_path / "e")], "--stop-after must be >= 1"),
        (["train", "csv", "--out", str(tmp_path / "e")], "needs --train A.csv"),
        (["export", "--checkpoint", str(tmp_path)], f"no model.safetensors in {tmp_path}"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv
        assert message in _one_error_line(capsys), argv
    assert not (tmp_path / "e").exists()  # a refused run leaves no folder behind
    with pytest.raises(SystemExit) as info:  # a malformed option: argparse's usage line and error, exit 2
        main(["train", "synthetic", "--epochs", "three"])
    assert info.value.code == 2 and "argument --epochs: invalid int value: 'three'" in capsys.readouterr().err


def test_debug_shows_the_original_exception(tmp_path, monkeypatch):
    argv = ["train", "dfew", "--root", str(tmp_path / "nowhere")]
    with pytest.raises(FileNotFoundError, match="DFEW root not found"):
        main(argv + ["--debug"])
    with pytest.raises(FileNotFoundError):
        main(["--debug"] + argv)
    monkeypatch.setenv("RDFER_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(argv)


def test_predict_refuses_urls_on_purpose(trained_run, capsys):
    from rdfer.inference.predict import predict_video

    with pytest.raises(SystemExit) as info:
        main(["predict", "https://example.com/clip.mp4", "--checkpoint", "/nonexistent"])
    assert info.value.code == 2
    assert "URLs are not supported" in _one_error_line(capsys)
    import argparse

    parser = rdfer.cli.build_parser()
    predict = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["predict"]
    assert "URLs are refused" in " ".join(predict.format_help().split())  # the policy, in --help
    model = rdfer.load_model(trained_run[0])
    res = predict_video("rtsp://camera.local/stream", model, detector=None)  # library: a per-video result
    assert res.status == "unreadable" and "local files only" in res.message


def test_missing_optional_dependency_is_named_before_any_work(trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if opencv were not installed
    with pytest.raises(SystemExit) as info:
        main(["predict", str(tmp_path / "a.mp4"), "--checkpoint", str(trained_run[0])])
    assert info.value.code == 2
    assert "pip install 'rdfer[faces]'" in _one_error_line(capsys)


def test_several_runs_under_checkpoint_folder_are_refused(trained_run, tmp_path, capsys):
    for name in ("a", "b"):
        shutil.copytree(trained_run[0] / "checkpoints", tmp_path / "runs" / name / "checkpoints")
    with pytest.raises(FileNotFoundError, match=r"holds several runs .*runs/a, .*runs/b"):
        rdfer.load_model(tmp_path / "runs")
    one = rdfer.load_model(tmp_path / "runs" / "a")  # a run folder without a final model: its newest checkpoint
    assert one.num_classes == 7


# ---- checkpoints and configs that are not what they claim ---------------------------------------


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_training_state_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    ck = tmp_path / "run" / "checkpoints" / "epoch_0001"
    ck.mkdir(parents=True)
    torch.save({"epoch": 1, "x": _Payload(str(marker))}, ck / "state.pt")
    with pytest.raises(CheckpointError, match="is not an rdfer training state") as info:
        load_training_state(ck)
    assert "weights_only" not in str(info.value) and not marker.exists()


def test_malicious_yaml_config_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SystemExit) as info:
        main(["train", "synthetic", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert info.value.code == 2 and not marker.exists() and not (tmp_path / "run").exists()
    assert f"{cfg}: not a plain YAML mapping of options" in _one_error_line(capsys)
    (tmp_path / "typo.yaml").write_text("epochz: 3\n")
    with pytest.raises(ValueError, match=r"typo\.yaml: unknown training options \['epochz'\]"):
        rdfer.engine.config.load_yaml_config(tmp_path / "typo.yaml")


def test_nan_stop_message_is_true_about_checkpoints(tmp_path):
    cfg = tiny_config(tmp_path / "run", **SMALL, lr=1e30, min_lr=1e30, max_bad_steps=1)
    with pytest.raises(FloatingPointError, match=r"no checkpoint was written yet \(it stopped in epoch 1\)"):
        train(cfg)


# ---- data ----------------------------------------------------------------------------------------


def _csv(path: Path, rows, header: str = "path,label") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_label_typo_is_an_error_naming_the_row(tmp_path):
    write_frames(tmp_path / "a", 2, 8)
    with pytest.raises(ValueError, match=r"t\.csv, row 3: label 'hapy' is not one of the emotions .*did you mean 'happy'"):
        rdfer.data.VideoCSV(_csv(tmp_path / "t.csv", ["a,sad", "a,hapy", "a,joyful"]))
    with pytest.raises(ValueError, match=r"j\.csv, row 2: label 'joyful'.*--classes"):
        rdfer.data.VideoCSV(_csv(tmp_path / "j.csv", ["a,joyful", "a,sad"]))
    # A class set of one's own, said explicitly: accepted in that order.
    ds = rdfer.data.VideoCSV(_csv(tmp_path / "j2.csv", ["a,joyful", "a,sad"]), classes=["sad", "joyful"])
    assert ds.classes == ["sad", "joyful"] and ds.labels == [1, 0]


def test_train_csv_classes_option(tmp_path):
    write_frames(tmp_path / "a", 4, 32)
    rows = ["a,joyful", "a,sad", "a,joyful", "a,sad"]
    _csv(tmp_path / "train.csv", rows)
    _csv(tmp_path / "test.csv", rows[:2])
    out = tmp_path / "run"
    argv = ["train", "csv", "--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"),
            *CLI_TINY[8:], "--epochs", "1", "--batch-size", "2", "--out", str(out)]
    with pytest.raises(SystemExit, match="label 'joyful'"):
        main(argv)
    assert main(argv + ["--classes", "sad,joyful"]) == 0
    assert rdfer.load_model(out).data_config["classes"] == ["sad", "joyful"]


def test_non_utf8_csv_names_file_row_and_byte(tmp_path):
    write_frames(tmp_path / "a", 2, 8)
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"path,label\na,happy\nclips/caf\xe9.mp4,sad\n")
    with pytest.raises(ValueError, match=r"latin1\.csv, row 3: not UTF-8 text \(byte 0xe9 at offset 28\)"):
        rdfer.data.VideoCSV(path)


def test_non_utf8_out_is_refused_before_anything_is_written(tmp_path):
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/run\xff")  # a name as a byte-level shell gives it
    with pytest.raises(ValueError, match="is not valid UTF-8"):
        train(tiny_config(out, **SMALL))
    assert list(tmp_path.iterdir()) == []


def test_16_bit_png_frames_are_converted_not_saturated(tmp_path):
    from PIL import Image

    from rdfer.data.decode import load_frame, read_frame_folder

    gray = np.full((16, 16), 32768, np.uint16)
    gray[:8] = 1000
    Image.fromarray(gray).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    frame = load_frame(tmp_path / "g16.png", 16)
    assert frame[0, 0].tolist() == [3, 3, 3] and frame[-1, -1].tolist() == [128, 128, 128]  # high byte
    Image.fromarray(np.full((16, 16), 7.5, np.float32)).save(tmp_path / "f32.tif")
    with pytest.raises(ValueError, match="32-bit integer or float pixels"):
        load_frame(tmp_path / "f32.tif", 16)
    # In a clip, frames stay consistent with their 8-bit equivalents.
    folder = tmp_path / "clip"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full((16, 16), 256 * (40 * k + 20), np.uint16)).save(folder / f"{k}.png")
    clip = read_frame_folder(folder, lambda n: torch.arange(n), 16)
    assert clip.frames[:, 0, 0, 0].tolist() == [20, 60, 100]


def _tmpfs_available(tmp_path: Path, options: str = "size=64k") -> bool:
    """Whether a tmpfs (mount ``options``) can be mounted on ``tmp_path`` in a user namespace."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o {options} none {tmp_path}"],
                           capture_output=True)
    return probe.returncode == 0


def test_disk_full_names_the_file_and_keeps_the_last_checkpoint(tmp_path):
    """A real full file system: a 2.6 MB tmpfs (in a user and mount namespace, no root needed)
    holds the first checkpoint of the tiny model but not the second."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _tmpfs_available(disk):
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    out = disk / "run"
    kept = tmp_path / "kept"  # the full disk's contents, copied out before the namespace ends
    script = (f"mount -t tmpfs -o size=2600k none {disk} || exit 77\n"
              f"{sys.executable} -m rdfer train synthetic {' '.join(CLI_TINY)} --epochs 3 --out {out}\n"
              f"echo RC=$?\n"
              f"cp -a {out} {kept}\n")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=REPO, env=ENV)
    assert "RC=2" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rdfer:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"rdfer: error: no space left on device while writing {out}/")
    assert "earlier files are intact" in lines[0]
    # The checkpoint before the full disk is complete and loads; no partial one is left.
    assert sorted(p.name for p in (kept / "checkpoints").iterdir()) == ["epoch_0001"]
    assert load_training_state(latest_checkpoint(kept))["epoch"] == 1
    rdfer.load_model(kept / "checkpoints" / "epoch_0001")


def test_reliability_table_cites_real_tests():
    """docs/reliability.md: at least 30 cases, each proven by a test that exists."""
    import re

    text = (REPO / "docs" / "reliability.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) >= 30
    for row in rows:
        cited = re.findall(r"`(test_\w+\.py)::(test_\w+)`", row) or re.findall(r"same as \d+", row)
        assert cited, row
        for file, name in (c for c in cited if isinstance(c, tuple)):
            assert re.search(rf"^def {name}\(", (REPO / "tests" / file).read_text(), re.M), (file, name)
