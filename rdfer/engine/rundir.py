"""Run folders: one writer at a time, never two runs mixed in one folder.

* :class:`RunLock`: ``<out>/.lock`` (an advisory ``flock`` held for the whole run, with the
  writer's pid, host and start time inside for the message). The kernel releases the lock when
  its process dies, even by ``kill -9``, so a crashed run never blocks the next one.
* :func:`prepare_run_folder`: a fresh run (no ``--resume``) into a folder that already holds a
  run is refused, or with ``overwrite`` the old run's files are moved aside (renamed, not
  deleted; the user's other files stay); a ``--resume`` whose command differs from the stored
  ``config.yaml`` is refused, naming the fields. A symbolic link among the run's files is refused.
* :func:`undo_failed_start`: a fresh run that fails before its first checkpoint leaves the
  folder as it was (what it created removed, what ``overwrite`` moved aside put back), so the
  corrected command runs without ``--overwrite``.
* :func:`finish_run_folder`: a finished run's record: ``config.yaml`` holding exactly what re-runs
  it (``rdfer train --config RUN/config.yaml --out OTHER``) and the model card ``README.md``.

``README.md`` is one of rdfer's names (:data:`TRAIN_WRITES`): the model card. Like any file named
as rdfer's own, a ``README.md`` already in ``--out`` stops a fresh run (nothing is replaced;
``--overwrite`` moves it aside with the old run). A README.md of the user's own that appears in
a run folder later (or in a run from before rdfer wrote cards, then resumed) is never replaced:
only a card that carries rdfer's marker line is rewritten (:mod:`rdfer.engine.model_card`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from .checkpoint import MODEL_FILE, clean_stale_temporaries, latest_checkpoint
from .config import MAX_CONFIG_BYTES, RESUMABLE_CHANGES, TrainConfig, config_to_yaml, plain_yaml

__all__ = ["RunFolderError", "RunLock", "RunStart", "prepare_run_folder", "undo_failed_start", "run_contents",
           "config_differences", "finish_run_folder", "INVOCATION_OPTIONS", "TRAIN_WRITES", "RUN_FILES"]

PathLike = Union[str, "os.PathLike[str]"]
LOCK_FILE = ".lock"
# What makes a folder "hold a run": any of these written by an earlier run.
_RUN_MARKERS = ("config.yaml", "metrics.jsonl", "results.json", MODEL_FILE, "checkpoints")
#: Every entry ``rdfer train`` writes in its run folder (``folds.json``: ``--folds``, in the parent).
#: tests/test_reliability_rundir.py checks that a real run writes nothing else.
TRAIN_WRITES = ("config.yaml", "train_data.json", "metrics.jsonl", "metrics.csv", "train.log", "tensorboard",
                "checkpoints", "best_val", MODEL_FILE, "results.json", "README.md", "confusion.csv", "confusion.png",
                "train_flags.csv", "bad_samples.txt", "folds.json")
#: A run's files: :data:`TRAIN_WRITES` and what the other commands write next to its checkpoint
#: by default (``rdfer eval|audit|analyze`` folders, ``rdfer export`` files). ``--overwrite``
#: moves these, and only these, aside.
RUN_FILES = TRAIN_WRITES + ("eval_test", "eval_train", "audit_train", "audit_test", "analyze_test", "analyze_train",
                            "model.onnx", "model.torchscript.pt")


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked (in use, holds another run, other config)."""


def _describe_holder(info: Dict[str, Any]) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "an unknown time"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {when}"


class RunLock:
    """An exclusive, non-blocking lock on a run folder (``with RunLock(dir): ...``).

    Raises :class:`RunFolderError` naming the holder (pid, host, start time) when another live
    process holds it. On file systems without ``flock`` (some network mounts) a lock file of a
    process that is still alive on this host also counts as held.
    """

    def __init__(self, run_dir: PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: Optional[int] = None
        self.start: Optional[RunStart] = None  # what prepare_run_folder did, for undo_failed_start

    def _read(self) -> Dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: only the pid check below
            fcntl = None

        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            try:  # O_NOFOLLOW: a link planted as .lock would have us truncate the file it points to
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise RunFolderError(_link_message([self.path])) from None
            try:
                if fcntl is None:
                    raise OSError("no flock")
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderError(
                    f"{self.run_dir} is in use by another rdfer run ({_describe_holder(self._read())}); "
                    f"wait for it to finish, or use another --out") from None
            except OSError:  # no flock here: fall back to the pid in the file
                held = self._read()
                if held.get("host") == socket.gethostname() and _alive(held.get("pid")) and held.get("pid") != os.getpid():
                    os.close(fd)
                    raise RunFolderError(f"{self.run_dir} is in use by another rdfer run ({_describe_holder(held)}); "
                                         f"wait for it to finish, or use another --out") from None
            # The holder before us may have unlinked the file after we opened it: lock the file
            # that is at the path now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            self._fd = fd
            return self
        raise RunFolderError(f"could not lock {self.path}: it keeps being replaced")  # pragma: no cover

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # still held: nobody else can be between us and unlink
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def run_contents(run_dir: PathLike) -> List[str]:
    """The markers of an earlier run in ``run_dir`` (empty when it holds none)."""
    run_dir = Path(run_dir)
    return [m for m in _RUN_MARKERS if (run_dir / m).exists()]


def _present(run_dir: Path, names) -> List[str]:
    return [n for n in names if os.path.lexists(run_dir / n)]


def _link_message(links: List[Path]) -> str:
    listed = ", ".join(f"{p} -> {os.readlink(p)}" for p in links)
    return (f"{listed}: a symbolic link where rdfer writes its own file or folder; rdfer does not write through "
            f"links (one planted there would have it overwrite or delete what it points to). Remove the "
            f"link{'s' if len(links) > 1 else ''}, or choose another --out")


def _refuse_links(run_dir: Path) -> None:
    """RunFolderError naming every symbolic link among the entries rdfer writes in ``run_dir``."""
    links = [run_dir / n for n in RUN_FILES + (LOCK_FILE,) if (run_dir / n).is_symlink()]
    if links:
        raise RunFolderError(_link_message(links))


def _stored_config(run_dir: Path) -> Optional[Dict[str, Any]]:
    import yaml

    from ..data.video_csv import read_utf8

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = plain_yaml(read_utf8(path, MAX_CONFIG_BYTES, "run config"))
    except (yaml.YAMLError, ValueError) as err:
        raise RunFolderError(f"{path} is not readable YAML ({err}); it cannot be checked against this command. "
                             f"Use another --out, or --overwrite without --resume") from None
    return data if isinstance(data, dict) else None


def _differences(key: str, old: Any, new: Any) -> List[str]:
    if isinstance(old, dict) and isinstance(new, dict):  # name the option inside, e.g. model_options.d_model
        return [d for k in list(old) + [k for k in new if k not in old]
                for d in _differences(f"{key}.{k}", old.get(k), new.get(k))]
    return [] if old == new else [f"{key}: {old!r} in the run, {new!r} now"]


def config_differences(stored: Dict[str, Any], cfg: TrainConfig) -> List[str]:
    """``field: <stored> in the run, <now> now`` for every option that would change what a
    resumed run computes (nested options by dotted name)."""
    import yaml

    now = yaml.safe_load(config_to_yaml(cfg))  # as it would be stored: tuples become lists
    # A pack's frame size is the pack's (training records it); the data itself is checked on resume.
    fixed_by_data = {"image_size"} if cfg.dataset in ("packed", "webdataset") else set()
    return [d for k in now if k in stored and k not in RESUMABLE_CHANGES | fixed_by_data
            for d in _differences(k, stored[k], now[k])]


def _move_aside(run_dir: Path, names: List[str]) -> Path:
    """Rename the entries ``names`` of ``run_dir`` into a new sibling folder; returns it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    aside.mkdir()
    for name in names:
        os.replace(run_dir / name, aside / name)
    return aside


def _overwrite_guard(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse ``--overwrite`` on a folder that is not a run folder of its own: the working
    directory, your home folder, the data, or a folder above one of them (``--out ..``)."""
    out = run_dir.resolve()
    protected = [("the working directory", Path.cwd())]
    try:
        protected.append(("your home folder", Path.home()))
    except (KeyError, RuntimeError):  # no home folder (a service account): nothing to protect there
        pass
    for option in ("root", "train_source", "test_source"):  # a CSV's folder, a pack, a dataset root
        value = getattr(cfg, option, None)
        if value:
            source = Path(value).resolve()
            protected.append((f"the data of {option} ({value})", source if source.is_dir() else source.parent))
    for what, inside in protected:
        inside = inside.resolve()
        if out == inside or out in inside.parents:
            raise RunFolderError(
                f"--overwrite: {run_dir} is {'' if out == inside else 'a folder above '}{what} ({inside}), not a "
                f"run folder of its own; rdfer will not move files out of it. Give --out a folder for this run, "
                f"e.g. {run_dir / 'runs' / 'rdfer'}")


@dataclass
class RunStart:
    """What :func:`prepare_run_folder` found and did, so a failed start can be undone."""

    run_dir: Path
    fresh: bool  # not a --resume
    before: List[str] = field(default_factory=list)  # rdfer entries present once the old run was moved aside
    aside: Optional[Path] = None  # where --overwrite moved the old run's files
    moved: List[str] = field(default_factory=list)


def prepare_run_folder(cfg: TrainConfig, say: Callable[[str], None] = print) -> RunStart:
    """Check that ``cfg.out`` may be written by this run, with its lock already held.

    * a symbolic link among the entries rdfer writes (:data:`RUN_FILES`, ``.lock``): refused,
      naming it (rdfer would write or delete through it);
    * no ``--resume``, folder holds a run (or files a new run would replace, e.g. a
      ``train.log``): refused; with ``cfg.overwrite`` the old run's files (:data:`RUN_FILES`)
      are moved to ``OUT.replaced-DATE`` and listed, the user's other files stay in ``OUT``;
    * ``--overwrite`` where ``OUT`` is, or is above, the working directory, the home folder or
      the data (``--root``, the CSV's folder, a pack): refused, whatever ``OUT`` holds;
    * ``--resume``: the stored ``config.yaml`` must agree with ``cfg`` on everything but
      :data:`~rdfer.engine.config.RESUMABLE_CHANGES`;
    * hidden temporaries left by a killed writer are removed.

    A fresh run into a folder that holds other files (but none of rdfer's) is allowed: rdfer
    writes only the names of :data:`TRAIN_WRITES`, none of which exists there, so none of the
    user's files is replaced or moved. Returns the :class:`RunStart` for
    :func:`undo_failed_start`.
    """
    run_dir = Path(cfg.out)
    if cfg.resume and cfg.overwrite:
        raise RunFolderError("--resume continues the run in --out and --overwrite moves it aside: give one of them")
    _refuse_links(run_dir)
    if cfg.overwrite:
        _overwrite_guard(run_dir, cfg)
    held = run_contents(run_dir)
    start = RunStart(run_dir, fresh=not cfg.resume)
    if cfg.resume:
        stored = _stored_config(run_dir)
        diffs = config_differences(stored, cfg) if stored else []
        if diffs:
            raise RunFolderError(f"--resume: the run in {run_dir} was started with other options: " + "; ".join(diffs)
                                 + ". Resume with the run's options (see its config.yaml), or start a new run "
                                 "with another --out")
    else:
        replaced = _present(run_dir, TRAIN_WRITES)
        if replaced and not cfg.overwrite:
            if held:
                raise RunFolderError(
                    f"{run_dir} already holds a run ({', '.join(held)}); continue it with --resume, choose "
                    f"another --out, or pass --overwrite to move the old run aside and start afresh")
            raise RunFolderError(
                f"{run_dir} holds files a new run would replace ({', '.join(replaced)}); move them, choose another "
                f"--out, or pass --overwrite to move them aside")
        if cfg.overwrite and (held or replaced):
            start.moved = _present(run_dir, RUN_FILES)
            start.aside = _move_aside(run_dir, start.moved)
            others = sorted(e.name for e in os.scandir(run_dir) if e.name != LOCK_FILE)
            say(f"--overwrite: moved the earlier run in {run_dir} to {start.aside} ({', '.join(start.moved)})"
                + (f"; left {len(others)} other entr{'y' if len(others) == 1 else 'ies'} in place "
                   f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''})" if others else ""))
    start.before = _present(run_dir, RUN_FILES)
    removed = clean_stale_temporaries(run_dir)
    if removed:
        say(f"removed {removed} temporary file(s) left in {run_dir} by an interrupted run")
    return start


def undo_failed_start(start: Optional[RunStart], say: Callable[[str], None] = print) -> None:
    """Leave the folder of a fresh run that failed before its first checkpoint as it was.

    Removes the entries of :data:`RUN_FILES` this start created (``config.yaml``, the logs,
    ``tensorboard/``, an empty ``checkpoints/``) and puts back what ``--overwrite`` moved aside,
    so the corrected command runs without ``--overwrite``. A run with a checkpoint (it trained:
    ``--resume`` continues it) and a ``--resume`` are left alone. Call with the lock still held.
    """
    if start is None or not start.fresh:
        return
    run_dir = start.run_dir
    if latest_checkpoint(run_dir) is not None or (run_dir / MODEL_FILE).exists():
        return
    created = [n for n in _present(run_dir, RUN_FILES) if n not in start.before]
    restored: List[str] = []
    try:
        for name in created:
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        if start.aside is not None:
            for name in start.moved:
                if not os.path.lexists(run_dir / name):
                    os.replace(start.aside / name, run_dir / name)
                    restored.append(name)
            if not any(start.aside.iterdir()):
                start.aside.rmdir()
    except OSError as exc:  # never hide the error that stopped the run behind this one
        say(f"could not leave {run_dir} as it was ({exc}); the earlier run's files are in "
            f"{start.aside or run_dir}")
        return
    if created or restored:
        say(f"the failed start left {run_dir} as it was: removed what it wrote ({', '.join(created) or 'nothing'})"
            + (f", put the earlier run back from {start.aside}" if restored else ""))


#: Options that describe one invocation, not the run: how it was started (``--resume``,
#: ``--overwrite``) and where this invocation stopped (``--stop-after``). A finished run's
#: ``config.yaml`` stores their defaults, so that re-running it from that file trains the whole run,
#: from scratch, without moving anything aside.
INVOCATION_OPTIONS: Dict[str, Any] = {"resume": False, "overwrite": False, "stop_after": None}


def finish_run_folder(run_dir: PathLike, cfg: TrainConfig, say: Callable[[str], None] = print) -> None:
    """The record of a finished run (main process, after ``results.json``): ``config.yaml`` with
    :data:`INVOCATION_OPTIONS` at their defaults, so ``rdfer train --config RUN/config.yaml --out
    OTHER`` re-runs it as a whole, and the model card ``README.md`` (kept when it is the user's own)."""
    import dataclasses

    from .checkpoint import atomic_write_text
    from .model_card import write_model_card

    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(dataclasses.replace(cfg, **INVOCATION_OPTIONS)))
    if write_model_card(run_dir) is None:
        say(f"{run_dir / 'README.md'} is not rdfer's model card: left as it is (rdfer publish uploads it as the card)")
