"""Run folders: one writer at a time, never two runs mixed in one folder.

* :class:`RunLock`: ``<out>/.lock`` (an advisory ``flock`` held for the whole run, with the
  writer's pid, host and start time inside for the message). The kernel releases the lock when
  its process dies, even by ``kill -9``, so a crashed run never blocks the next one.
* :func:`prepare_run_folder`: a fresh run (no ``--resume``) into a folder that already holds a
  run is refused, or with ``overwrite`` the old run is moved aside (renamed, not deleted); a
  ``--resume`` whose command differs from the stored ``config.yaml`` is refused, naming the fields.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from .checkpoint import MODEL_FILE, clean_stale_temporaries
from .config import RESUMABLE_CHANGES, TrainConfig, config_to_yaml

__all__ = ["RunFolderError", "RunLock", "prepare_run_folder", "run_contents", "config_differences"]

PathLike = Union[str, "os.PathLike[str]"]
LOCK_FILE = ".lock"
# What makes a folder "hold a run": any of these written by an earlier run.
_RUN_MARKERS = ("config.yaml", "metrics.jsonl", "results.json", MODEL_FILE, "checkpoints")


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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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


def _stored_config(run_dir: Path) -> Optional[Dict[str, Any]]:
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
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
    return [d for k in now if k in stored and k not in RESUMABLE_CHANGES
            for d in _differences(k, stored[k], now[k])]


def _move_aside(run_dir: Path) -> Path:
    """Rename every entry of ``run_dir`` but the lock into a new sibling folder; returns it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    aside.mkdir()
    for entry in run_dir.iterdir():
        if entry.name != LOCK_FILE:
            os.replace(entry, aside / entry.name)
    return aside


def prepare_run_folder(cfg: TrainConfig, say: Callable[[str], None] = print) -> None:
    """Check that ``cfg.out`` may be written by this run, with its lock already held.

    * no ``--resume``, folder holds a run: refused, or moved aside with ``cfg.overwrite``;
    * ``--resume``: the stored ``config.yaml`` must agree with ``cfg`` on everything but
      :data:`~rdfer.engine.config.RESUMABLE_CHANGES`;
    * hidden temporaries left by a killed writer are removed.
    """
    run_dir = Path(cfg.out)
    if cfg.resume and cfg.overwrite:
        raise RunFolderError("--resume continues the run in --out and --overwrite moves it aside: give one of them")
    held = run_contents(run_dir)
    if cfg.resume:
        stored = _stored_config(run_dir)
        diffs = config_differences(stored, cfg) if stored else []
        if diffs:
            raise RunFolderError(f"--resume: the run in {run_dir} was started with other options: " + "; ".join(diffs)
                                 + ". Resume with the run's options (see its config.yaml), or start a new run "
                                 "with another --out")
    elif held:
        if not cfg.overwrite:
            raise RunFolderError(
                f"{run_dir} already holds a run ({', '.join(held)}); continue it with --resume, choose "
                f"another --out, or pass --overwrite to move the old run aside and start afresh")
        aside = _move_aside(run_dir)
        say(f"--overwrite: moved the earlier run in {run_dir} to {aside}")
    removed = clean_stale_temporaries(run_dir)
    if removed:
        say(f"removed {removed} temporary file(s) left in {run_dir} by an interrupted run")
