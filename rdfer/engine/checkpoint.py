"""Checkpoints: safetensors weights that carry the model's config, plus a training-state file.

* ``model.safetensors``: the model's tensors; metadata ``rdfer_config`` (JSON of
  ``model.config``) so :func:`load_model` rebuilds the model without the user restating it.
* ``state.pt``: optimizer, scheduler, loss memory, counters; plain tensors and containers only,
  so it loads with ``torch.load(weights_only=True)``.

Every file is written to a temporary name and renamed into place; a training checkpoint is a
folder ``epoch_NNNN`` built under a temporary name and renamed whole, so a crash never leaves a
half-written checkpoint where a complete one is expected.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "save_model",
    "load_model",
    "load_weights",
    "read_metadata",
    "read_model_config",
    "save_training_checkpoint",
    "latest_checkpoint",
    "load_training_state",
    "clean_stale_temporaries",
    "CheckpointError",
    "check_tensors",
    "check_model_sizes",
    "SIZE_BOUNDS",
    "DiskFullError",
    "SymlinkError",
    "refuse_symlink",
]

from .files import (MODEL_FILE, STATE_FILE, CheckpointError, DiskFullError, PathLike, SymlinkError,  # noqa: F401
                    _disk_full_error, _is_disk_full, _plain_permissions, atomic_path, atomic_write_text,
                    refuse_symlink)
# Out of memory is the machine's limit, never a fault of the file: let it through as it is.
_OOM = (MemoryError,) + tuple(t for t in (getattr(torch, "OutOfMemoryError", None),) if t is not None)


def _json_config(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    if not config:
        raise CheckpointError(
            f"{type(model).__name__} has no `config`; build it with rdfer.wrap_with_rdfer or "
            f"rdfer.create_model so a checkpoint can rebuild it."
        )
    try:
        return json.dumps(config, sort_keys=True)
    except TypeError as err:
        raise CheckpointError(
            f"the model config is not JSON-serialisable ({err}); a custom sequence_model factory or "
            f"detector module cannot be stored by name. Save model.state_dict() yourself instead."
        ) from err


def save_model(model: nn.Module, path: PathLike, extra_metadata: Optional[Dict[str, str]] = None) -> Path:
    """Save weights + config to a ``.safetensors`` file, atomically. Returns the path."""
    from safetensors.torch import save_file

    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"rdfer_config": _json_config(model), "format": "rdfer", **(extra_metadata or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def _models_of_run(folder: Path) -> List[Path]:
    """The model files a run folder holds besides its final model: ``best_val/`` and the
    ``checkpoints/epoch_NNNN/`` (hidden temporaries are not checkpoints)."""
    found = [folder / "best_val" / MODEL_FILE] + list((folder / "checkpoints").glob("epoch_*/" + MODEL_FILE))
    return [p for p in found if p.is_file()]


def _subfolders(folder: Path) -> List[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if not e.name.startswith(".") and e.is_dir())
    except OSError:  # unreadable: nothing to find there
        return []


def _model_file(path: PathLike) -> Path:
    from .hub import resolve_checkpoint

    path = resolve_checkpoint(path)  # hf-hub:ORG/NAME[@REVISION]: its snapshot in huggingface_hub's cache
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        # A run folder without a final model (stopped early): its newest epoch checkpoint. Never
        # a guess among several runs (a parent folder), nor a file in a hidden temporary folder.
        # Only the folder and its direct subfolders are looked at, never a walk of the tree
        # below (`--checkpoint /` must not read the whole file system).
        found = _models_of_run(path)
        for sub in _subfolders(path):
            found += [p for p in [sub / MODEL_FILE] if p.is_file()] + _models_of_run(sub)
        runs = sorted({_run_of(p) for p in found})
        if len(runs) > 1:
            listed = ", ".join(str(r) for r in runs[:6]) + (f" ... ({len(runs)} in all)" if len(runs) > 6 else "")
            raise FileNotFoundError(f"{path} holds several runs ({listed}); give one of them, or its "
                                    f"{MODEL_FILE}, as the checkpoint")
        if found:
            return sorted(found)[-1]
        raise FileNotFoundError(f"no {MODEL_FILE} in {path} (looked in it, its checkpoints/ and best_val/, and its "
                                f"direct subfolders); give a run folder or a {MODEL_FILE} file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _run_of(file: Path) -> Path:
    """The run folder a model file belongs to: the folder above ``checkpoints/`` or ``best_val/``."""
    parent = file.parent
    if parent.parent.name == "checkpoints":
        return parent.parent.parent
    if parent.name == "best_val":
        return parent.parent
    return parent


def read_metadata(path: PathLike) -> Dict[str, str]:
    """The raw safetensors metadata of a checkpoint (file, run folder, Hub-layout folder or
    ``hf-hub:`` id); in a Hub-layout folder the rdfer ``config.json`` beside the weights fills in
    a model config they lack, and one that contradicts them is refused (:mod:`rdfer.engine.hub`)."""
    from safetensors import safe_open

    from .hub import metadata_with_hub_config

    file = _model_file(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            metadata = dict(f.metadata() or {})
    except Exception as err:
        raise CheckpointError(f"{file} is not a readable safetensors file: {' '.join(str(err).split())}") from None
    metadata = metadata_with_hub_config(file, metadata)
    _check_stored_sizes(file, metadata)
    return metadata


#: The sizes a stored config may ask for, inclusive. A crafted checkpoint (or Hub config.json)
#: could otherwise make rdfer allocate terabytes (num_classes 3e7, num_frames 1e6) before any
#: weight is read. num_classes as the CSV rule (class indices 0..999); the others far above
#: any real model.
SIZE_BOUNDS: Dict[str, Tuple[int, int]] = {
    "num_classes": (1, 1000), "num_frames": (1, 4096), "image_size": (1, 4096),
    "n_clips": (1, 4096), "clip_len": (1, 4096), "num_glimpses": (1, 4096), "num_centres": (1, 4096),
    "d_model": (1, 16384), "summary_dim": (1, 16384),
}
#: Any other integer in a stored backbone_kwargs / detector_kwargs (layer widths, sizes): at most this.
KWARGS_INT_LIMIT = 16384
_DATA_KEYS = ("num_frames", "image_size")


def check_model_sizes(config: Mapping[str, Any], what: str = "model config") -> None:
    """A ValueError naming ``what``, the key and the range when a model config (a checkpoint's, a
    Hub ``config.json``, ``model_options`` of a YAML config or ``--model-option``) asks for a size
    out of :data:`SIZE_BOUNDS` (any other integer of ``backbone_kwargs`` / ``detector_kwargs``
    within :data:`KWARGS_INT_LIMIT`), before anything of that size is allocated."""

    def refuse(where: str, key: str, value: Any, low: int, high: int) -> None:
        raise ValueError(f"the {where} {key} is {value!r}; rdfer accepts an integer in {low}..{high}")

    def integers(value: Any) -> Iterator[Any]:
        if isinstance(value, dict):
            for item in value.values():
                yield from integers(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from integers(item)
        elif isinstance(value, int) and not isinstance(value, bool):
            yield value

    for key, value in config.items():
        if key in SIZE_BOUNDS and value is not None:
            low, high = SIZE_BOUNDS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                refuse(what, key, value, low, high)
    for group in ("backbone_kwargs", "detector_kwargs"):
        kwargs = config.get(group)
        for key, value in kwargs.items() if isinstance(kwargs, dict) else ():
            low, high = SIZE_BOUNDS.get(key, (-KWARGS_INT_LIMIT, KWARGS_INT_LIMIT))
            if any(not low <= number <= high for number in integers(value)):
                refuse(f"{what} {group}", key, value, low, high)


def _check_stored_sizes(file: Path, metadata: Dict[str, str]) -> None:
    """Refuse a stored model config or data settings asking for sizes out of :data:`SIZE_BOUNDS`,
    naming the file, the key and the range. Unparseable JSON is left to the readers that need it."""
    try:
        model = json.loads(metadata.get("rdfer_config", "{}"))
        data = json.loads(metadata.get("rdfer_data", "{}"))
    except ValueError:
        return
    try:
        if isinstance(data, dict):
            check_model_sizes({k: data[k] for k in _DATA_KEYS if k in data}, "stored data settings (rdfer_data)")
        if isinstance(model, dict):
            check_model_sizes(model, "stored model config")
    except ValueError as err:
        raise CheckpointError(f"{file}: {err} (the checkpoint is damaged or was crafted)") from None


# Options added after checkpoints were first written: an older checkpoint's config lacks them and
# was built with these values (rdfer 0.1 used the time-averaged locator).
LEGACY_MODEL_CONFIG: Dict[str, Any] = {"locator": "mean", "frame_head": False}


def read_model_config(path: PathLike) -> Dict[str, Any]:
    """The ``model.config`` stored in an rdfer checkpoint (file or run folder), with
    :data:`LEGACY_MODEL_CONFIG` filling in options older checkpoints lack."""
    file = _model_file(path)
    metadata = read_metadata(file)
    if "rdfer_config" not in metadata:
        raise CheckpointError(
            f"{file} has no rdfer model config in its metadata: it was not written by rdfer. "
            f"Load its state dict yourself into a model built with rdfer.wrap_with_rdfer."
        )
    try:
        config = json.loads(metadata["rdfer_config"])
    except ValueError as err:
        raise CheckpointError(f"{file}: its stored model config (rdfer_config) is not valid JSON ({err})") from None
    missing = [k for k in ("backbone", "num_classes") if k not in config] if isinstance(config, dict) else ["all"]
    if missing:
        raise CheckpointError(f"{file}: its stored model config (rdfer_config) lacks {', '.join(missing)}; it cannot "
                              f"rebuild the model")
    return {**LEGACY_MODEL_CONFIG, **config}


def _from_config(file: Path, builder, *args: Any, **kwargs: Any) -> nn.Module:
    """``builder(*args, **kwargs)`` for a stored model config; an option it does not know (a
    checkpoint of a newer rdfer, an edited file) or a value it refuses is a CheckpointError
    naming the file."""
    try:
        return builder(*args, **kwargs)
    except _OOM:
        raise
    # TypeError: an option this rdfer does not know; ValueError / RuntimeError: a value no module
    # accepts (a negative width, an unknown backbone name): all malformed content of the file.
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{file}: its stored model config cannot build a model "
                              f"({' '.join(str(err).split())}); it may come from another rdfer version") from None


def load_model(path: PathLike, map_location: Union[str, torch.device] = "cpu", backbone: Optional[nn.Module] = None,
               network: str = "average") -> nn.Module:
    """Rebuild an RDFER model from a checkpoint written by rdfer (file or run folder).

    Args:
        path: a ``model.safetensors`` file, a run folder containing one, a folder laid out as a
            Hugging Face Hub repository (``config.json`` + ``model.safetensors``), or
            ``"hf-hub:ORG/NAME"`` / ``"hf-hub:ORG/NAME@REVISION"``: a model on the Hub, from
            huggingface_hub's cache (downloaded once when missing; see :mod:`rdfer.engine.hub`).
        map_location: device for the weights.
        backbone: the backbone module, needed only when the model wrapped a custom module
            (not a registry name), which a checkpoint cannot rebuild by itself.
        network: for a pair of networks (trained by ``coteaching`` or ``dividemix``): ``"average"``
            (default, both networks, twice the inference cost), ``"first"`` or ``"second"``
            (one network); ignored for a single network.
    """
    file = _model_file(path)
    # The weights come from the file: the model is built with pretrained weights off, whatever a
    # (crafted) config says, so loading a checkpoint never downloads anything (_build_from_config).
    config = dict(read_model_config(file))
    networks = config.pop("networks", 1)
    if networks not in (1, 2):
        raise CheckpointError(f"{file}: its stored model config says networks={networks!r}; rdfer builds 1 or 2")
    model = _build_from_config(file, config, backbone)
    if networks == 2:  # a pair trained by a two-network rule: the same architecture twice, in one file
        from ..model.pair import NetworkPair

        model = NetworkPair(model, _build_from_config(file, config, backbone), use=network)
    load_weights(model, file, map_location)
    # How the training data was loaded (T, frame size, class names), when the trainer wrote it.
    try:
        data = json.loads(read_metadata(file).get("rdfer_data", "{}"))
    except ValueError as err:
        raise CheckpointError(f"{file}: the stored data settings (rdfer_data) are not JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: the stored data settings (rdfer_data) are not a mapping")
    model.data_config = data
    return model.to(map_location)


def _build_from_config(file: Path, config: Dict[str, Any], backbone: Optional[nn.Module]) -> nn.Module:
    """One network from a stored model config (``networks`` removed)."""
    from ..model.frame_baseline import ARCHITECTURE as FRAME_BASELINE
    from ..model.frame_baseline import wrap_frame_baseline
    from ..model.rdfer import wrap_with_rdfer

    config = {k: v for k, v in config.items() if k not in ("networks", "preset", "pretrained")}  # pretrained: off
    for key in ("backbone_kwargs", "detector_kwargs"):
        if isinstance(config.get(key), dict):
            config[key] = {k: v for k, v in config[key].items() if k != "pretrained"}
    name = config.pop("backbone")
    if name is None and backbone is None:
        raise CheckpointError(f"{file} wraps a custom backbone module; pass backbone=<your module> to load_model")
    num_classes = config.pop("num_classes")
    backbone_kwargs = config.pop("backbone_kwargs", {})
    if config.pop("architecture", "rdfer") == FRAME_BASELINE:
        for key in LEGACY_MODEL_CONFIG:  # RDFER-only options
            config.pop(key, None)
        model = _from_config(file, wrap_frame_baseline, backbone if name is None else name,
                             num_classes=num_classes, backbone_kwargs=backbone_kwargs, **config)
    else:
        detector_kwargs = config.pop("detector_kwargs", {})
        if config.get("detector") is None:
            config.pop("detector", None)
        model = _from_config(
            file, wrap_with_rdfer,
            backbone if name is None else name,
            num_classes=num_classes,
            backbone_kwargs=backbone_kwargs,
            detector_kwargs=detector_kwargs,
            **config,
        )
    return model


def load_weights(model: nn.Module, path: PathLike, map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load checkpoint weights into an existing model, refusing a checkpoint of another model
    (other backbone, class count or options) with an error that names the differences, and
    weights of the wrong shape or not finite (:func:`check_tensors`)."""
    from safetensors.torch import load_file

    file = _model_file(path)
    stored = read_model_config(file)
    own = getattr(model, "config", {}) or {}
    keys = ("architecture", "backbone", "num_classes", "n_clips", "clip_len", "d_model", "resample", "summary", "sequence_model", "fusion",
            "locator", "frame_head")
    diffs = [f"{k}: checkpoint {stored.get(k)!r} vs model {own.get(k)!r}" for k in keys if k in own and stored.get(k) != own.get(k)]
    if stored.get("networks", 1) != own.get("networks", 1):
        diffs.append(f"networks: checkpoint {stored.get('networks', 1)} vs model {own.get('networks', 1)}")
    if diffs:
        raise CheckpointError(f"{file} belongs to another model: " + "; ".join(diffs))
    try:
        state = load_file(str(file), device=str(map_location))
    except _OOM:
        raise
    except Exception as err:  # safetensors reports a damaged file in its own words and types
        raise CheckpointError(f"{file} is not a readable safetensors file: {' '.join(str(err).split())}") from None
    check_tensors(file, state, model.state_dict())
    try:
        result = model.load_state_dict(state, strict=False)
    except _OOM:
        raise
    except RuntimeError as err:  # what check_tensors does not foresee (a dtype torch cannot copy)
        raise CheckpointError(f"{file} does not load into the model: {' '.join(str(err).split())}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{file} does not match the model: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return model


def check_tensors(file: PathLike, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights ``state`` read from ``file`` that do not fit the model's tensors ``expected``
    (its ``state_dict()``): a tensor of another shape, or a floating tensor holding NaN or
    infinity. The first offending tensor (in the model's order) is named in a one-line
    :class:`CheckpointError`. Every loading path (``load_model`` for a file, run folder, Hub
    layout or ``hf-hub:`` id, ``load_weights``, resuming) goes through :func:`load_weights`,
    which calls this once: non-finite weights would otherwise be evaluated, audited and
    exported as if fine (every prediction NaN, scored as class 0)."""
    for name, want in expected.items():
        got = state.get(name)
        if got is None:
            continue  # a missing key is reported by load_weights, with the others
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(f"{file}: tensor {name} has shape {list(got.shape)} but the model its config "
                                  f"builds needs {list(want.shape)}; the file is damaged or was edited")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"{file}: tensor {name} holds NaN or infinite values; these weights cannot "
                                  f"predict anything (a diverged training, or a damaged file)")


def save_training_checkpoint(run_dir: PathLike, epoch: int, model: nn.Module, state: Dict[str, Any], keep: int = 2,
                             metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write ``run_dir/checkpoints/epoch_NNNN/{model.safetensors,state.pt}`` atomically and keep
    the newest ``keep`` checkpoints. ``epoch`` counts completed epochs."""
    root = Path(run_dir) / "checkpoints"
    refuse_symlink(root)  # old epoch_* folders are deleted here: never in a folder a link points to
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch_{epoch:04d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".epoch_{epoch:04d}."))
    try:
        save_model(model, tmp / MODEL_FILE, {**(metadata or {}), "epoch": str(epoch)})
        # Through a Python file: a full disk is then an OSError, not torch's "unexpected pos".
        with open(tmp / STATE_FILE, "wb") as f:
            torch.save(state, f)
        _plain_permissions(tmp, directory=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_disk_full(exc):
            name = Path(exc.filename).name if isinstance(exc, DiskFullError) else STATE_FILE
            raise _disk_full_error(exc, final / name) from exc
        raise
    for old in sorted(p for p in root.glob("epoch_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: PathLike) -> Optional[Path]:
    """The newest complete ``epoch_NNNN`` folder of a run, or None."""
    root = Path(run_dir) / "checkpoints"
    done = sorted(p for p in root.glob("epoch_*") if (p / MODEL_FILE).is_file() and (p / STATE_FILE).is_file())
    return done[-1] if done else None


def load_training_state(checkpoint_dir: PathLike) -> Dict[str, Any]:
    """The training state of a checkpoint folder, loaded with ``weights_only=True``."""
    import pickle

    path = Path(checkpoint_dir) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message advises weights_only=False; for a file that is not ours that is the
        # one thing not to do, so say what it is instead.
        raise CheckpointError(f"{path} is not an rdfer training state: it holds Python objects other than "
                              f"tensors and plain containers, which rdfer refuses to load (nothing in it was "
                              f"run). Resume from a checkpoint folder written by rdfer train") from None
    except Exception as err:
        raise CheckpointError(f"cannot read training state {path}: {type(err).__name__}: {err}") from err


def clean_stale_temporaries(run_dir: PathLike) -> int:
    """Remove the hidden temporaries a killed writer left in a run folder (``.epoch_NNNN.*``
    checkpoint folders, ``.name.*.tmp`` files); returns how many. Call only while holding the
    run's lock: a live writer's temporaries look the same."""
    run_dir = Path(run_dir)
    removed = 0
    # Never inside a folder that is a symbolic link: the temporaries there are not this run's.
    where = [(run_dir, ".*.tmp"), (run_dir / "checkpoints", ".epoch_*"), (run_dir / "best_val", ".*.tmp"),
             (run_dir / "tensorboard", ".*.tmp")]
    stale = [p for d, pattern in where if d == run_dir or not d.is_symlink() for p in d.glob(pattern)]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed
