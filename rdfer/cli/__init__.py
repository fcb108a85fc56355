"""The ``rdfer`` command line: thin wrappers that parse arguments and call the library.

One module per command (or family of commands), each with an ``_add_<name>(subparsers)`` that
sets ``func`` to its ``_cmd_<name>``; every import of torch and of the library happens inside the
``_cmd_`` functions, so ``rdfer --version`` and ``--help`` answer without importing torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .backbones import _add_backbones
from .demo import _add_demo, _add_synth_preview
from .evaluate import _add_analyze, _add_audit, _add_eval
from .export import _add_export
from .pack import _add_pack
from .predict import _add_predict
from .publish import _add_publish
from .train import _add_train
from .common import _DEFAULT_STRATEGY, _STRATEGIES  # noqa: F401  (re-exported: tests, docs)
from .train import _train_config_from_args  # noqa: F401


# -- subcommands: add new `_add_<name>` functions above this line, and call them in build_parser --


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdfer",
        description="Robust dynamic facial expression recognition: train, evaluate and inspect RDFER models.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"rdfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in [_add_demo, _add_synth_preview, _add_train, _add_eval, _add_predict, _add_audit, _add_analyze, _add_export,
                _add_publish, _add_backbones, _add_pack]:
        add(sub)
    debug_help = "show the full traceback of an error (also RDFER_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    for command in sub.choices.values():  # accepted after the subcommand too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


# User errors: bad input, options, files, the machine (disk, memory). One line, exit 2.
EXIT_USAGE, EXIT_INTERNAL = 2, 1


class CommandError(SystemExit):
    """Raised by :func:`main` after printing ``rdfer: error: <message>``, like argparse's own
    errors: exit status 2 (1 for an unexpected error); ``str()`` is the message."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


# Options of one command whose range differs from the training option of the same name
# (rdfer.engine.config.OPTION_RANGES holds the others): checked by main before the command runs.
_COMMAND_RANGES = {
    "predict": {"detect_stride": dict(low=1, integer=True), "crop_margin": dict(low=-0.4, high=4.0, optional=True)},
    "pack": {"shard_size": dict(low=1, integer=True), "quality": dict(low=1, high=100, integer=True),
             "detect_stride": dict(low=1, integer=True), "crop_margin": dict(low=-0.4, high=4.0, optional=True)},
    # One PNG of 7 rows x num_frames columns at twice the size: bounded so that it stays viewable.
    "synth-preview": {"num_frames": dict(low=4, high=64, integer=True), "image_size": dict(low=16, high=256, integer=True)},
}


def _check_option_values(args) -> None:
    """Every numeric option of the command in its range, and ``--device`` a device this machine
    has: a one-line ValueError naming the option, the value and what is allowed, before the
    command reads or writes anything."""
    from ..engine.config import OPTION_RANGES, Range, check_option

    ranges = {**OPTION_RANGES, **{k: Range(**v) for k, v in _COMMAND_RANGES.get(args.command, {}).items()}}
    from ..engine.config import AUTO_VALUES

    for name, value in vars(args).items():
        if value is not None and name in ranges and value != AUTO_VALUES.get(name):
            setattr(args, name, check_option(name, value, ranges))
    if getattr(args, "device", None) not in (None, "auto"):
        from ..engine.distributed import check_device

        check_device(args.device)


def _error_message(exc: BaseException) -> str:
    """One line for an exception: its message without Python's decorations."""
    import errno

    if isinstance(exc, SystemExit):
        text = str(exc.code)
    elif isinstance(exc, MemoryError):
        text = (f"out of memory{': ' + str(exc) if str(exc) else ''}; use a smaller --batch-size, --num-frames or "
                f"--image-size")
    elif isinstance(exc, OSError) and exc.strerror:
        from ..engine.checkpoint import DiskFullError

        if isinstance(exc, DiskFullError) or not exc.filename:
            text = exc.strerror
        elif exc.errno == errno.EROFS:
            text = f"cannot write {exc.filename}: it is on a read-only file system; choose a writable location"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            text = (f"permission denied: {exc.filename} (this user may not use it); check its permissions or choose "
                    f"another location")
        else:
            text = f"{exc.strerror}: {exc.filename}"
    else:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _is_user_error(exc: BaseException) -> bool:
    import torch

    from ..engine.rundir import RunFolderError

    # ValueError covers bad options and data (CheckpointError, UnreadableVideo, bad CSV bytes);
    # OSError covers missing files, permissions and a full disk.
    # An unknown --model or --backbone is a ValueError too (rdfer.registry.UnknownNameError), an
    # unavailable --device as well (rdfer.engine.distributed.DeviceError).
    oom = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),) if t is not None)
    return isinstance(exc, (ValueError, OSError, ImportError, FloatingPointError, MemoryError, RunFolderError) + oom)


def _fail(message: str, code: int = EXIT_USAGE) -> CommandError:
    print(f"rdfer: error: {message}", file=sys.stderr, flush=True)
    return CommandError(message, code)


def main(argv: Optional[List[str]] = None) -> int:
    """``rdfer ...``: run one command and return its exit status.

    Errors are one line on stderr, ``rdfer: error: ...``, then :class:`CommandError` (a
    ``SystemExit``) with status 2 for a user error (bad option, input, file; full disk), 1 for an
    unexpected one, as argparse does for bad options. ``--debug`` or ``RDFER_DEBUG=1`` lets the
    original exception through, with its traceback.
    """
    args = build_parser().parse_args(argv)
    debug = bool(vars(args).pop("debug", False)) or os.environ.get("RDFER_DEBUG", "") not in ("", "0")
    try:
        _check_option_values(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        raise _fail("interrupted", 130) from None
    except SystemExit as exc:  # a command's own `raise SystemExit("message")`
        if debug or not isinstance(exc.code, str):
            raise
        raise _fail(_error_message(exc)) from None
    except Exception as exc:
        if debug:
            raise
        if _is_user_error(exc):
            raise _fail(_error_message(exc)) from None
        raise _fail(f"{type(exc).__name__}: {_error_message(exc)} (unexpected: rerun with --debug for the "
                    f"traceback, and please report it)", EXIT_INTERNAL) from None


if __name__ == "__main__":
    sys.exit(main())
