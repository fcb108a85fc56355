"""Files rdfer writes and the errors about them: atomic writes, a full disk, symbolic links, a
checkpoint that cannot be used. Free of torch and of the rest of rdfer, so that checkpoints, the
Hub layout and the model card all build on it without importing one another."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

__all__ = ["PathLike", "MODEL_FILE", "STATE_FILE", "CheckpointError", "DiskFullError", "SymlinkError",
           "refuse_symlink", "atomic_path", "atomic_write_text"]

PathLike = Union[str, os.PathLike]
MODEL_FILE, STATE_FILE = "model.safetensors", "state.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for what was asked (other model, not rdfer, damaged)."""


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save to a path and safetensors report a failed write in their own words.
    text = str(exc)
    return "No space left" in text or "os error 28" in text or "unexpected pos" in text


class DiskFullError(OSError):
    """A write failed because the file system is full; the message names the file."""


class SymlinkError(OSError):
    """A folder rdfer writes into (e.g. a run's ``checkpoints/``) is a symbolic link; the
    message names it and where it points."""


def refuse_symlink(path: PathLike) -> None:
    """Raise :class:`SymlinkError` when ``path`` is a symbolic link (dangling or not).

    rdfer writes, replaces and deletes inside the folders of a run: through a link planted there
    it would do so in the folder the link points to (e.g. delete old ``epoch_*`` folders there).
    """
    if os.path.islink(path):
        raise SymlinkError(errno.ELOOP, f"{path} is a symbolic link (to {os.readlink(path)}), which rdfer does not "
                           f"write through; remove the link (a run's files live in the run folder itself) or "
                           f"choose another --out")


def _disk_full_error(exc: BaseException, path: PathLike) -> OSError:
    """A short ENOSPC error naming the file, for a write that failed because the disk is full."""
    target = Path(path)
    existing = next((p for p in target.parents if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(existing).free
        where = f" ({free / 2**20:.1f} MiB free on that file system)"
    except OSError:
        where = ""
    return DiskFullError(errno.ENOSPC, f"no space left on device while writing {target}{where}; the file was not "
                   f"written and earlier files are intact. Free some space (or choose another --out) and run again",
                   str(target))


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary file beside ``path``; when the block succeeds it replaces ``path`` by a
    rename (atomic: readers see the old file or the new one, never half of one), otherwise it is
    removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        _plain_permissions(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if _is_disk_full(exc):
            raise _disk_full_error(exc, path) from exc
        raise


def _plain_permissions(path: PathLike, directory: bool = False) -> None:
    # mkstemp/mkdtemp create 0600/0700 entries; give the user's files the permissions a plain
    # open()/mkdir() would (the umask's), so shared run folders stay readable by the group.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
