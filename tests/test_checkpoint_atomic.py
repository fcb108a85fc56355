"""Atomic writes proven by writes that fail partway: an exception in the middle of the write, a
failed rename, and a real SIGKILL of a process in the middle of a checkpoint. Each time the
previous file or checkpoint must be intact and no partial ``epoch_NNNN`` folder may exist."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import rdfer
from rdfer.engine import checkpoint
from rdfer.engine.checkpoint import (MODEL_FILE, STATE_FILE, atomic_write_text, latest_checkpoint, load_training_state,
                                     save_training_checkpoint)


def _files(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones included) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tiny_model():
    return rdfer.wrap_with_rdfer("tiny_cnn", resample=False, d_model=8, backbone_kwargs={"widths": (4, 4, 4, 4)})


# ---- atomic_write_text -------------------------------------------------------------------------


def test_text_write_failing_partway_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old contents\n")
    # A lone surrogate cannot be encoded: the write fails after the file was opened for writing
    # (in place, that would already have emptied the old file).
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "new contents " * 1000 + "\ud800")
    assert path.read_text() == "old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_text_write_whose_sync_or_rename_fails_keeps_the_old_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "epochs: 1\n")

    def fail(*args, **kwargs):
        raise OSError(errno.EIO, f"simulated I/O error in os.{failing}")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match=f"os.{failing}"):
        atomic_write_text(path, "epochs: 2\n")
    monkeypatch.undo()
    assert path.read_text() == "epochs: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
    atomic_write_text(path, "epochs: 3\n")  # and the next write works
    assert path.read_text() == "epochs: 3\n"


def test_text_write_creates_missing_folders(tmp_path):
    atomic_write_text(tmp_path / "a" / "b" / "c.txt", "x")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "x"


# ---- save_training_checkpoint ------------------------------------------------------------------


def _partial_torch_save(obj, f, *args, **kwargs):
    # Writes part of the file, then fails like a dying disk.
    if hasattr(f, "write"):
        f.write(b"PK\x03\x04 partial")
    else:
        Path(f).write_bytes(b"PK\x03\x04 partial")
    raise OSError(errno.EIO, "simulated I/O error in torch.save")


def _fail_final_rename(real_replace):
    def replace(src, dst, *args, **kwargs):
        if Path(dst).name.startswith("epoch_"):  # the checkpoint folder's rename into place
            raise OSError(errno.EIO, "simulated I/O error renaming the checkpoint folder")
        return real_replace(src, dst, *args, **kwargs)

    return replace


@pytest.mark.parametrize("failure", ["torch.save", "rename", "safetensors"])
def test_checkpoint_failing_partway_leaves_the_previous_one(tmp_path, monkeypatch, failure):
    model = _tiny_model()
    first = save_training_checkpoint(tmp_path, 1, model, {"epoch": 1, "note": torch.arange(3)}, keep=2)
    before = _files(tmp_path)
    if failure == "torch.save":
        monkeypatch.setattr(torch, "save", _partial_torch_save)
    elif failure == "rename":
        monkeypatch.setattr(os, "replace", _fail_final_rename(os.replace))
    else:
        import safetensors.torch

        def broken_save_file(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"\x00" * 16)
            raise OSError(errno.EIO, "simulated I/O error in safetensors")

        monkeypatch.setattr(safetensors.torch, "save_file", broken_save_file)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # epoch 2's weights differ
    with pytest.raises(OSError, match="simulated I/O error"):
        save_training_checkpoint(tmp_path, 2, model, {"epoch": 2, "note": torch.arange(4)}, keep=2)
    monkeypatch.undo()
    assert _files(tmp_path) == before  # nothing changed, nothing added: no epoch_0002, no temporary
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0001"]
    assert latest_checkpoint(tmp_path) == first
    assert load_training_state(first)["note"].tolist() == [0, 1, 2]
    # A later successful save works and becomes the latest.
    second = save_training_checkpoint(tmp_path, 2, model, {"epoch": 2}, keep=2)
    assert latest_checkpoint(tmp_path) == second and load_training_state(second)["epoch"] == 2
    loaded = rdfer.load_model(second / MODEL_FILE)
    assert torch.equal(next(loaded.parameters()), next(model.parameters()))


def test_checkpoint_is_renamed_whole_with_plain_permissions_and_pruned(tmp_path):
    model = _tiny_model()
    old = os.umask(0o022)
    try:
        for epoch in (3, 4, 5):
            final = save_training_checkpoint(tmp_path, epoch, model, {"epoch": epoch}, keep=1,
                                             metadata={"rdfer_data": "{}"})
    finally:
        os.umask(old)
    assert final == tmp_path / "checkpoints" / "epoch_0005"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0005"]
    assert sorted(p.name for p in final.iterdir()) == [MODEL_FILE, STATE_FILE]
    assert final.stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
    assert (final / STATE_FILE).stat().st_mode & 0o777 == 0o644
    meta = checkpoint.read_metadata(final)
    assert meta["epoch"] == "5" and meta["rdfer_data"] == "{}" and meta["format"] == "rdfer"
    # Saving an epoch again replaces that checkpoint whole.
    save_training_checkpoint(tmp_path, 5, model, {"epoch": 55}, keep=1)
    assert load_training_state(final)["epoch"] == 55


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    import rdfer
    from rdfer.engine.checkpoint import save_training_checkpoint

    run = sys.argv[1]
    model = rdfer.wrap_with_rdfer("tiny_cnn", resample=False, d_model=8, backbone_kwargs={"widths": (4, 4, 4, 4)})
    save_training_checkpoint(run, 1, model, {"epoch": 1}, keep=2)
    print("saved epoch 1", flush=True)

    def dying_save(obj, f, *args, **kwargs):
        # Half of the state is on disk when the process is killed (no Python cleanup runs).
        (f.write if hasattr(f, "write") else open(f, "wb").write)(b"PK\\x03\\x04 half a state")
        if hasattr(f, "flush"):
            f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = dying_save
    save_training_checkpoint(run, 2, model, {"epoch": 2}, keep=2)
    print("not reached", flush=True)
""")


def test_checkpoint_survives_a_real_kill_mid_write(tmp_path):
    # The child imports the rdfer being tested (a mutated copy under mutation testing too).
    env = dict(os.environ, PYTHONPATH=str(Path(rdfer.__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[0] == "saved epoch 1" and "not reached" not in proc.stdout
    root = tmp_path / "checkpoints"
    visible = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert visible == ["epoch_0001"]  # no epoch_0002, complete or partial
    leftovers = [p for p in root.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".epoch_0002.")  # the hidden temporary
    assert latest_checkpoint(tmp_path) == root / "epoch_0001"
    assert load_training_state(root / "epoch_0001")["epoch"] == 1
    rdfer.load_model(root / "epoch_0001")  # complete and loadable


def test_checkpoint_defaults_keep_two_and_create_the_run_folder(tmp_path):
    run = tmp_path / "not" / "yet" / "there"
    model = _tiny_model()
    for epoch in (1, 2, 3):
        save_training_checkpoint(run, epoch, model, {"epoch": epoch})
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0002", "epoch_0003"]


def test_checkpoint_is_built_in_a_hidden_folder_beside_the_checkpoints(tmp_path, monkeypatch):
    # The temporary must be on the same file system as its destination (a rename, not a copy)
    # and hidden, so a crash leaves nothing that looks like a checkpoint.
    written = []
    real_save = torch.save

    def recording_save(obj, f, *args, **kwargs):
        written.append(Path(getattr(f, "name", f)))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", recording_save)
    final = save_training_checkpoint(tmp_path, 7, _tiny_model(), {"epoch": 7})
    (state,) = written
    assert state.name == STATE_FILE and state.parent.parent == tmp_path / "checkpoints"
    assert state.parent.name.startswith(".epoch_0007.") and not state.parent.exists()
    assert (final / STATE_FILE).is_file()


@pytest.mark.parametrize("failing", ["torch.save", "safetensors"])
def test_checkpoint_on_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, failing):
    model = _tiny_model()
    save_training_checkpoint(tmp_path, 1, model, {"epoch": 1})
    before = _files(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "torch.save":
        monkeypatch.setattr(torch, "save", full)
    else:
        import safetensors.torch

        monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError) as info:
        save_training_checkpoint(tmp_path, 2, model, {"epoch": 2})
    monkeypatch.undo()
    expected = tmp_path / "checkpoints" / "epoch_0002" / (STATE_FILE if failing == "torch.save" else MODEL_FILE)
    assert info.value.errno == errno.ENOSPC and str(expected) in str(info.value)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC  # the original
    assert _files(tmp_path) == before


def _rmtree_failing_on(name, real_rmtree):
    # shutil.rmtree's contract: with ignore_errors the failure is swallowed, otherwise raised.
    def rmtree(path, ignore_errors=False, *args, **kwargs):
        if Path(path).name.startswith(name):
            if ignore_errors:
                return None
            raise OSError(errno.EBUSY, f"simulated: {path} is busy")
        return real_rmtree(path, ignore_errors, *args, **kwargs)

    return rmtree


def test_a_checkpoint_that_cannot_be_pruned_does_not_fail_the_save(tmp_path, monkeypatch):
    import shutil

    model = _tiny_model()
    save_training_checkpoint(tmp_path, 1, model, {"epoch": 1}, keep=1)
    monkeypatch.setattr(shutil, "rmtree", _rmtree_failing_on("epoch_0001", shutil.rmtree))
    final = save_training_checkpoint(tmp_path, 2, model, {"epoch": 2}, keep=1)
    assert latest_checkpoint(tmp_path) == final and load_training_state(final)["epoch"] == 2


def test_the_write_error_is_raised_even_when_cleaning_up_fails(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(torch, "save", _partial_torch_save)
    monkeypatch.setattr(shutil, "rmtree", _rmtree_failing_on(".epoch_", shutil.rmtree))
    with pytest.raises(OSError, match="simulated I/O error in torch.save"):
        save_training_checkpoint(tmp_path, 1, _tiny_model(), {"epoch": 1})
    assert latest_checkpoint(tmp_path) is None


# ---- full disks, stale temporaries, run folders ------------------------------------------------


def test_disk_full_is_recognised_by_errno_and_by_the_libraries_words():
    from rdfer.engine.checkpoint import _is_disk_full

    assert _is_disk_full(OSError(errno.ENOSPC, "x")) and _is_disk_full(OSError(errno.EDQUOT, "x"))
    assert not _is_disk_full(OSError(errno.EIO, "Input/output error")) and not _is_disk_full(ValueError("bad"))
    for text in ("[Errno 28] No space left on device", "I/O error: (os error 28)",
                 "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file: unexpected pos 64"):
        assert _is_disk_full(RuntimeError(text)), text


def test_text_write_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.csv"
    atomic_write_text(path, "epoch\n1\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write_text(path, "epoch\n1\n2\n")
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert f"while writing {path} (" in str(info.value) and "MiB free" in str(info.value)
    assert path.read_text() == "epoch\n1\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_clean_stale_temporaries_removes_only_hidden_temporaries(tmp_path):
    from rdfer.engine.checkpoint import clean_stale_temporaries

    run = tmp_path / "run"
    stale = [run / "checkpoints" / ".epoch_0002.k3j", run / ".results.json.a1.tmp",
             run / "best_val" / ".model.safetensors.b2.tmp", run / "tensorboard" / ".events.c3.tmp"]
    keep = [run / "checkpoints" / "epoch_0001" / MODEL_FILE, run / "results.json", run / ".notes",
            run / "best_val" / MODEL_FILE, run / "tensorboard" / "events.out"]
    (stale[0] / "sub").mkdir(parents=True)
    (stale[0] / "sub" / STATE_FILE).write_bytes(b"half")
    for p in stale[1:] + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert clean_stale_temporaries(run) == 4
    assert not any(p.exists() for p in stale) and all(p.is_file() for p in keep)
    assert clean_stale_temporaries(run) == 0 and clean_stale_temporaries(tmp_path / "missing") == 0


def test_a_folder_of_several_runs_is_refused_and_a_stopped_run_gives_its_newest_checkpoint(tmp_path):
    from rdfer.engine.checkpoint import _model_file

    model = _tiny_model()
    for epoch in (1, 2):
        save_training_checkpoint(tmp_path / "a", epoch, model, {"epoch": epoch})
    rdfer.save_model(model, tmp_path / "a" / "best_val" / MODEL_FILE)
    (tmp_path / "a" / "checkpoints" / ".epoch_0003.tmp").mkdir()
    (tmp_path / "a" / "checkpoints" / ".epoch_0003.tmp" / MODEL_FILE).write_bytes(b"half")
    # a run stopped early: its newest complete checkpoint, never the hidden temporary
    assert _model_file(tmp_path / "a") == tmp_path / "a" / "checkpoints" / "epoch_0002" / MODEL_FILE
    assert _model_file(tmp_path) == tmp_path / "a" / "checkpoints" / "epoch_0002" / MODEL_FILE  # one run below
    rdfer.save_model(model, tmp_path / "b" / MODEL_FILE)
    with pytest.raises(FileNotFoundError, match="holds several runs") as info:
        _model_file(tmp_path)
    assert f"{tmp_path / 'a'}, {tmp_path / 'b'}" in str(info.value)
    assert _model_file(tmp_path / "b") == tmp_path / "b" / MODEL_FILE
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"no {MODEL_FILE} in"):
        _model_file(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        _model_file(tmp_path / "nothing.safetensors")


def test_full_disk_message_gives_the_free_space_in_mib(tmp_path, monkeypatch):
    import re
    import shutil

    from rdfer.engine.checkpoint import _disk_full_error

    err = _disk_full_error(OSError(errno.ENOSPC, "full"), tmp_path / "run" / "state.pt")
    free = shutil.disk_usage(tmp_path).free / 2**20
    said = float(re.search(r"\(([\d.]+) MiB free on that file system\)", str(err)).group(1))
    assert abs(said - free) < 64  # MiB, whatever else wrote to the disk meanwhile
    assert err.errno == errno.ENOSPC and err.filename == str(tmp_path / "run" / "state.pt")

    def no_usage(path):
        raise OSError(errno.EACCES, "no access")

    monkeypatch.setattr(shutil, "disk_usage", no_usage)  # the message then just leaves the number out
    err = _disk_full_error(OSError(errno.ENOSPC, "full"), tmp_path / "state.pt")
    assert f"while writing {tmp_path / 'state.pt'}; the file was not written" in str(err)


def test_stale_temporaries_are_cleaned_even_when_one_is_busy_or_listed_twice(tmp_path, monkeypatch):
    import shutil

    from rdfer.engine.checkpoint import clean_stale_temporaries

    run = tmp_path / "run"
    (run / "checkpoints" / ".epoch_0001.busy").mkdir(parents=True)
    (run / "checkpoints" / ".epoch_0002.gone").mkdir()
    (run / ".results.json.x.tmp").write_text("half")
    (run / "best_val").symlink_to(run)  # a linked folder is not searched (issue 27): the .tmp counts once
    monkeypatch.setattr(shutil, "rmtree", _rmtree_failing_on(".epoch_0001", shutil.rmtree))
    assert clean_stale_temporaries(run) == 3  # .epoch_0001 (busy, left), .epoch_0002, the .tmp
    assert not (run / "checkpoints" / ".epoch_0002.gone").exists() and not (run / ".results.json.x.tmp").exists()


def test_latest_checkpoint_needs_both_files(tmp_path):
    model = _tiny_model()
    first = save_training_checkpoint(tmp_path, 1, model, {"epoch": 1})
    (tmp_path / "checkpoints" / "epoch_0009").mkdir()
    (tmp_path / "checkpoints" / "epoch_0009" / MODEL_FILE).write_bytes((first / MODEL_FILE).read_bytes())
    (tmp_path / "checkpoints" / "epoch_0008").mkdir()
    (tmp_path / "checkpoints" / "epoch_0008" / STATE_FILE).write_bytes((first / STATE_FILE).read_bytes())
    assert latest_checkpoint(tmp_path) == first


class _Planted:
    """Unpickling this runs code (writes a marker file): what a malicious state.pt would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_training_state_with_python_objects_is_refused_and_never_run(tmp_path):
    from rdfer.engine.checkpoint import CheckpointError

    marker = tmp_path / "marker"
    (tmp_path / "ckpt").mkdir()
    torch.save({"epoch": 1, "evil": _Planted(marker)}, tmp_path / "ckpt" / STATE_FILE)
    with pytest.raises(CheckpointError, match="is not an rdfer training state"):
        load_training_state(tmp_path / "ckpt")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="cannot read training state"):
        load_training_state(tmp_path / "missing")
