"""Models on the Hugging Face Hub: ``hf-hub:ORG/NAME[@REVISION]`` checkpoints and the Hub layout
(publishing a run: :mod:`rdfer.engine.publish`).

**The Hub layout of an rdfer model** (what :func:`~rdfer.engine.publish.stage_for_hub` writes and ``rdfer publish``
uploads; a local folder laid out this way loads like a run folder)::

    config.json         {"library_name": "rdfer", "rdfer_version": ..., "model_config": {...},
                         "data_config": {"num_frames": T, "image_size": S, "classes": [...], "dataset": ...}}
    model.safetensors   the run's final model, byte for byte
    README.md           the model card (rdfer.engine.model_card): YAML metadata, results, recipe, limitations
    config.yaml         the training options: `rdfer train --config config.yaml --out DIR` re-runs the run
    results.json        the run's test results, as rdfer train wrote them
                        (in both, absolute local paths are cut to their file names: they would
                        publish the user's name and folders)
    confusion.png       the run's figures (top-level PNG files of the run folder)

Decision: ``model.safetensors`` keeps carrying its own model config and data settings in its
metadata (``rdfer_config``, ``rdfer_data``), so the weights file alone still rebuilds the model
(a copied or renamed file never loses its config). ``config.json`` holds the same two, readable,
for people and for the Hub (which counts a model's downloads by its ``config.json``).
:func:`rdfer.load_model` reads the metadata first; it uses ``config.json`` when the weights carry
no rdfer metadata (weights saved by other tools beside an rdfer ``config.json``), and refuses a
``config.json`` that contradicts the metadata: which of the two would be right is not knowable.
The model published is the last-epoch one, the model ``results.json``'s test metrics describe
(never ``best_val/``).

**Loading** ``hf-hub:ORG/NAME[@REVISION]`` (a branch, tag or commit): the snapshot in
huggingface_hub's own cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``) when it is
there, without any network access; otherwise it is downloaded once into that cache, unless
``HF_HUB_OFFLINE`` is set or the Hub cannot be reached: then one line names the cache and how to
download the model beforehand. A cached model is used as it is: ``hf download ORG/NAME``
refreshes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Union

__all__ = ["HUB_PREFIX", "CONFIG_FILE", "HubModelUnavailable", "is_hub_id", "parse_hub_id", "hub_cache_dir",
           "resolve_hub_model", "resolve_checkpoint", "default_output_home", "metadata_with_hub_config"]

PathLike = Union[str, "os.PathLike[str]"]
HUB_PREFIX = "hf-hub:"
CONFIG_FILE = "config.json"
#: What loading a Hub model downloads: the weights, their config and the card.
DOWNLOAD_FILES = [CONFIG_FILE, "model.safetensors", "README.md"]
_DOWNLOAD_HINT = "`hf download {repo}{rev}` (huggingface_hub's CLI; `huggingface-cli download` before version 1.0)"


class HubModelUnavailable(FileNotFoundError):
    """An ``hf-hub:`` model that is neither in the local cache nor downloadable now (offline, no
    such repository or revision); the message is one line naming the cache and what to do."""


def is_hub_id(spec: Any) -> bool:
    """Whether ``spec`` names a Hub model (``hf-hub:ORG/NAME[@REVISION]``) rather than a local path."""
    return isinstance(spec, (str, os.PathLike)) and os.fspath(spec).startswith(HUB_PREFIX)


def parse_hub_id(spec: PathLike) -> Tuple[str, Optional[str]]:
    """``hf-hub:ORG/NAME[@REVISION]`` -> ``("ORG/NAME", REVISION or None)``; a ValueError naming
    the spec when it is not a valid Hub repository id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = os.fspath(spec)[len(HUB_PREFIX):]
    repo_id, at, revision = text.partition("@")
    try:
        if at and not revision:
            raise HFValidationError("the revision after @ is empty")
        validate_repo_id(repo_id)
        if at and not _is_revision(revision):
            raise HFValidationError(f"the revision {revision!r} is not a branch, tag or commit name (git's ref "
                                    f"rules: no '..', no '/' at either end, no backslash, space, control "
                                    f"character, ~, ^, :, ?, * or [)")
    except HFValidationError as err:
        raise ValueError(f"{os.fspath(spec)!r} is not a Hub model id (expected hf-hub:ORG/NAME or "
                         f"hf-hub:ORG/NAME@REVISION): {' '.join(str(err).split())}") from None
    return repo_id, (revision or None)


# git's ref-name rules (git check-ref-format), which every Hub branch, tag and refs/pr/N obeys:
# nothing that could climb out of a folder (the revision names a file in the cache's refs/ and
# the default output folder runs/hf-hub/ORG--NAME@REVISION).
_BAD_REVISION = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^/|/$|^\.|/\.|\.lock(/|$)|\.$")


def _is_revision(revision: str) -> bool:
    return 0 < len(revision) <= 255 and revision != "@" and not _BAD_REVISION.search(revision)


def hub_cache_dir() -> Path:
    """huggingface_hub's model cache as it is now: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    the library's default (``~/.cache/huggingface/hub``). Read at call time, not at import."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    """``HF_HUB_OFFLINE`` as it is now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    return bool(constants.HF_HUB_OFFLINE) if value is None else value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


@contextlib.contextmanager
def _network_timeout(seconds: float) -> Iterator[None]:
    """Within the block, every request huggingface_hub sends without a timeout gets one of
    ``seconds`` (:func:`~rdfer.data.sources.network_timeout`: ``RDFER_NETWORK_TIMEOUT``, default
    60) per connect, read and write. Some of its calls (``repo_info`` in a download,
    ``create_repo`` and the commit of an upload) set none, and wait forever on a server that
    accepts the connection and never answers.

    The timeout is a request hook added to huggingface_hub's shared HTTP client (its public
    ``get_session()``) and removed afterwards, so a program's own Hub calls are left as they
    were. huggingface_hub before 1.0 (``requests``) has no such hook: there only its own
    timeouts (``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``) apply."""
    import huggingface_hub

    kinds = ("connect", "read", "write", "pool")

    def fill(request: Any) -> None:
        given = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {k: seconds if given.get(k) is None else given[k] for k in kinds}

    client = huggingface_hub.get_session() if hasattr(huggingface_hub, "get_session") else None
    hooks = getattr(client, "event_hooks", None)
    if not isinstance(hooks, dict):
        yield
        return
    client.event_hooks = {**hooks, "request": [*hooks.get("request", []), fill]}
    try:
        yield
    finally:
        hooks = client.event_hooks
        client.event_hooks = {**hooks, "request": [h for h in hooks.get("request", []) if h is not fill]}


def _timed_out(err: Optional[BaseException]) -> bool:
    """Whether ``err`` or an exception it was raised from is a timeout (huggingface_hub wraps
    its HTTP library's timeouts in its own errors, which vary by version)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, TimeoutError) or "Timeout" in type(err).__name__:
            return True
        err = err.__cause__ or err.__context__
    return False


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def resolve_hub_model(spec: PathLike) -> Path:
    """The local snapshot folder of ``hf-hub:ORG/NAME[@REVISION]`` in huggingface_hub's cache.

    The cache is looked at first, with no network access; a model not there is downloaded
    (:data:`DOWNLOAD_FILES` only) unless ``HF_HUB_OFFLINE`` is set. Raises
    :class:`HubModelUnavailable` (one line: the cache, the reason, the download command) when
    it is neither cached nor downloadable.
    """
    import huggingface_hub
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    from .. import __version__
    from ..data.sources import network_timeout

    repo_id, revision = parse_hub_id(spec)
    cache = hub_cache_dir()
    where = dict(repo_id=repo_id, revision=revision, cache_dir=str(cache))
    try:
        return Path(huggingface_hub.snapshot_download(local_files_only=True, **where))
    except OSError:  # LocalEntryNotFoundError (an incomplete snapshot too): not in the cache
        pass
    hint = _DOWNLOAD_HINT.format(repo=repo_id, rev=f" --revision {revision}" if revision else "")
    start = f"{os.fspath(spec)} is not in the Hugging Face cache ({cache})"
    if _offline():
        raise HubModelUnavailable(f"{start} and HF_HUB_OFFLINE is set: download it beforehand with {hint} into "
                                  f"this cache (HF_HUB_CACHE or HF_HOME choose it), then run again")
    seconds = network_timeout()
    try:
        with _network_timeout(seconds):
            return Path(huggingface_hub.snapshot_download(allow_patterns=DOWNLOAD_FILES, library_name="rdfer",
                                                          library_version=__version__, etag_timeout=seconds,
                                                          **where))
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise HubModelUnavailable(f"{start}, and the Hub does not give it ({_first_line(err)}): check the name, or "
                                  f"for a private or gated model set HF_TOKEN or run `hf auth login`") from None
    except RevisionNotFoundError as err:
        raise HubModelUnavailable(f"{start}: the Hub has no revision {revision!r} of {repo_id} "
                                  f"({_first_line(err)})") from None
    except Exception as err:  # no connection, Hub down: huggingface_hub's own error types vary by version
        if _timed_out(err):
            raise HubModelUnavailable(f"{start} and the Hub ({_endpoint()}) did not answer within {seconds:g} s "
                                      f"(RDFER_NETWORK_TIMEOUT sets the limit); download it beforehand with {hint}, "
                                      f"or set HF_HUB_OFFLINE=1 to work from the cache only") from None
        raise HubModelUnavailable(f"{start} and the Hub could not be reached ({_first_line(err)}); download it "
                                  f"beforehand with {hint}, into this cache (HF_HUB_CACHE or HF_HOME choose "
                                  f"it), or set HF_HUB_OFFLINE=1 to work from the cache only") from None


def resolve_checkpoint(path: PathLike) -> Path:
    """A checkpoint argument as a local path: ``hf-hub:`` ids resolved (:func:`resolve_hub_model`),
    anything else as given."""
    return resolve_hub_model(path) if is_hub_id(path) else Path(path)


def default_output_home(checkpoint: PathLike) -> Path:
    """Where a command writes by default for ``checkpoint`` (``rdfer eval``'s ``eval_test/``,
    ``rdfer export``'s file): the run folder, the folder of a weights file, or for a Hub model
    ``runs/hf-hub/ORG--NAME[@REVISION]`` (never inside huggingface_hub's cache)."""
    if is_hub_id(checkpoint):
        repo_id, revision = parse_hub_id(checkpoint)
        return Path("runs") / "hf-hub" / (repo_id.replace("/", "--") + (f"@{revision}" if revision else ""))
    path = Path(checkpoint)
    return path if path.is_dir() else path.parent


# -- the Hub layout ----------------------------------------------------------------------------------


def _read_hub_config(path: Path) -> Optional[Dict[str, Any]]:
    """An rdfer ``config.json`` (``library_name: rdfer`` and a ``model_config``), or None for
    another library's ``config.json``; a CheckpointError for a file that is not JSON."""
    from ..data.video_csv import read_utf8
    from .files import CheckpointError
    from .config import MAX_CONFIG_BYTES

    try:
        config = json.loads(read_utf8(path, MAX_CONFIG_BYTES, "Hub config"))
    except ValueError as err:
        raise CheckpointError(f"{path} is not readable JSON ({' '.join(str(err).split())})") from None
    if not isinstance(config, dict) or config.get("library_name") != "rdfer":
        return None
    if not isinstance(config.get("model_config"), dict) or not isinstance(config.get("data_config", {}), dict):
        raise CheckpointError(f"{path}: an rdfer config.json needs a model_config mapping (and data_config, if "
                              f"given, a mapping)")
    return config


def metadata_with_hub_config(file: Path, metadata: Dict[str, str]) -> Dict[str, str]:
    """The safetensors ``metadata`` of ``file`` with the rdfer ``config.json`` beside it (Hub
    layout) taken into account: it fills in the model config and data settings when the weights
    carry none, and a CheckpointError is raised when it contradicts them. Without such a
    ``config.json`` the metadata is returned as it is."""
    from .files import CheckpointError

    path = file.parent / CONFIG_FILE
    if not path.is_file():
        return metadata
    try:
        config = _read_hub_config(path)
    except ValueError:  # not JSON, too big, no model_config: fatal only where the weights need it
        if "rdfer_config" in metadata:
            return metadata
        raise
    if config is None:
        return metadata
    data = config.get("data_config", {})
    if "rdfer_config" not in metadata:
        return {**metadata, "format": "rdfer", "rdfer_config": json.dumps(config["model_config"], sort_keys=True),
                "rdfer_data": json.dumps(data)}
    try:
        stored = (json.loads(metadata["rdfer_config"]), json.loads(metadata.get("rdfer_data", "{}")))
    except ValueError:
        return metadata  # the weights' own config is damaged: read_model_config says so, naming the file
    differ = [name for name, mine, theirs in (("model_config", config["model_config"], stored[0]),
                                              ("data_config", data, stored[1])) if mine != theirs]
    if differ:
        raise CheckpointError(f"{path} contradicts the config stored in {file} ({' and '.join(differ)} differ); "
                              f"remove or regenerate the config.json (rdfer publish writes it from the weights)")
    return metadata
