"""Models on the Hugging Face Hub: ``hf-hub:ORG/NAME[@REVISION]`` checkpoints and ``rdfer publish``.

**The Hub layout of an rdfer model** (what :func:`stage_for_hub` writes and ``rdfer publish``
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
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

__all__ = ["HUB_PREFIX", "CONFIG_FILE", "HubModelUnavailable", "PublishError", "is_hub_id", "parse_hub_id",
           "hub_cache_dir", "resolve_hub_model", "resolve_checkpoint", "default_output_home", "hub_config",
           "metadata_with_hub_config", "stage_for_hub", "publish"]

PathLike = Union[str, "os.PathLike[str]"]
HUB_PREFIX = "hf-hub:"
CONFIG_FILE = "config.json"
#: What loading a Hub model downloads: the weights, their config and the card.
DOWNLOAD_FILES = [CONFIG_FILE, "model.safetensors", "README.md"]
_DOWNLOAD_HINT = "`hf download {repo}{rev}` (huggingface_hub's CLI; `huggingface-cli download` before version 1.0)"


class HubModelUnavailable(FileNotFoundError):
    """An ``hf-hub:`` model that is neither in the local cache nor downloadable now (offline, no
    such repository or revision); the message is one line naming the cache and what to do."""


class PublishError(OSError):
    """``rdfer publish`` cannot upload (no token, offline, the Hub refused); one line, nothing committed."""


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


def hub_config(checkpoint: PathLike) -> Dict[str, Any]:
    """The ``config.json`` of a checkpoint (file, run folder or ``hf-hub:`` id): its model config
    and data settings, as stored in the weights' metadata."""
    from .. import __version__
    from .checkpoint import CheckpointError, read_metadata, read_model_config

    metadata = read_metadata(checkpoint)
    read_model_config(checkpoint)  # refuses weights that cannot rebuild a model
    try:
        data = json.loads(metadata.get("rdfer_data", "{}"))
    except ValueError as err:
        raise CheckpointError(f"{checkpoint}: the stored data settings (rdfer_data) are not JSON: {err}") from None
    return {"library_name": "rdfer", "rdfer_version": __version__, "format": "rdfer",
            "model_config": json.loads(metadata["rdfer_config"]), "data_config": data}


def _read_hub_config(path: Path) -> Optional[Dict[str, Any]]:
    """An rdfer ``config.json`` (``library_name: rdfer`` and a ``model_config``), or None for
    another library's ``config.json``; a CheckpointError for a file that is not JSON."""
    from ..data.video_csv import read_utf8
    from .checkpoint import CheckpointError
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
    from .checkpoint import CheckpointError

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


def _staged_card(run_dir: Path, repo_id: Optional[str]) -> str:
    """The README.md to publish: the user's own card as it is, else rdfer's, written afresh."""
    from .model_card import CARD_FILE, is_rdfer_card, model_card_text

    own = run_dir / CARD_FILE
    if own.is_file() and not is_rdfer_card(own):
        return own.read_text(encoding="utf-8")
    return model_card_text(run_dir, repo_id)


def stage_for_hub(run_dir: PathLike, staging_dir: PathLike, repo_id: Optional[str] = None) -> List[str]:
    """Write the Hub layout of a finished run folder into ``staging_dir`` (new or empty): exactly
    what ``rdfer publish`` uploads. Returns the names written.

    ``repo_id`` goes into the card's usage lines (``hf-hub:ORG/NAME``). The run's README.md is
    kept when it is the user's own (no rdfer marker), otherwise the card is written afresh.
    """
    from .checkpoint import MODEL_FILE, atomic_write_text

    run_dir, staging = Path(run_dir), Path(staging_dir)
    missing = [n for n in (MODEL_FILE, "results.json") if not (run_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a finished run folder (no {' or '.join(missing)}): rdfer publish "
                                f"takes the folder of a run that rdfer train finished (--resume finishes a stopped "
                                f"one)")
    if staging.exists() and (not staging.is_dir() or any(staging.iterdir())):
        raise FileExistsError(f"{staging} already exists and is not an empty folder; give a new folder to stage the "
                              f"upload in")
    config = hub_config(run_dir / MODEL_FILE)
    card = _staged_card(run_dir, repo_id)
    staging.mkdir(parents=True, exist_ok=True)
    written = [CONFIG_FILE, MODEL_FILE, "README.md"]
    atomic_write_text(staging / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    shutil.copyfile(run_dir / MODEL_FILE, staging / MODEL_FILE)
    atomic_write_text(staging / "README.md", card)
    extras = [n for n in ("config.yaml", "results.json") if (run_dir / n).is_file()]
    for name in extras:
        text = _published_text(run_dir / name)
        if text is None:
            shutil.copyfile(run_dir / name, staging / name)
        else:
            (staging / name).write_text(text, encoding="utf-8")
    pngs = sorted(p.name for p in run_dir.glob("*.png") if p.is_file() and not p.is_symlink())
    for name in pngs:
        shutil.copyfile(run_dir / name, staging / name)
    return written + extras + pngs


# A value that names folders of this machine: absolute (POSIX, Windows, UNC), home-relative or file://.
_LOCAL_PATH = re.compile(r"^(/|~|file://|\\\\|[A-Za-z]:[\\/])")


def _without_local_paths(value: Any, cut: List[str], key: str = "") -> Any:
    """``value`` (a parsed config.yaml or results.json) with every absolute local path cut to its
    last name (``/home/alice/data/train.csv`` -> ``train.csv``): the folders above would publish
    the user's name and layout. The dotted keys cut are appended to ``cut``."""
    if isinstance(value, dict):
        return {k: _without_local_paths(v, cut, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_local_paths(v, cut, key) for v in value]
    if isinstance(value, str) and _LOCAL_PATH.match(value):
        cut.append(key)
        return re.split(r"[\\/]", value.rstrip("/\\"))[-1].lstrip("~")
    return value


def _published_text(path: Path) -> Optional[str]:
    """A run's ``config.yaml`` or ``results.json`` as published: None when it names no local path
    (it is copied as it is: ``rdfer train --config config.yaml`` re-runs the run bit for bit),
    else its text with the paths cut to their file names and, in config.yaml, a comment saying
    which."""
    import yaml

    from ..data.video_csv import read_utf8
    from .config import MAX_CONFIG_BYTES, plain_yaml

    text = read_utf8(path, 64 << 20 if path.suffix == ".json" else MAX_CONFIG_BYTES, path.name)
    data = json.loads(text) if path.suffix == ".json" else plain_yaml(text)
    cut: List[str] = []
    cleaned = _without_local_paths(data, cut)
    if not cut:
        return None
    if path.suffix == ".json":
        return json.dumps(cleaned, indent=2) + "\n"
    keys = ", ".join(dict.fromkeys(cut))
    return (f"# rdfer publish: local paths cut to their file names ({keys}); point them at your copy of the "
            f"data to re-run\n" + yaml.safe_dump(cleaned, sort_keys=False, allow_unicode=True))


def _token() -> Optional[str]:
    import huggingface_hub

    return huggingface_hub.get_token()


def publish(run_dir: PathLike, repo_id: str, revision: Optional[str] = None, private: bool = False,
            dry_run: Optional[PathLike] = None, say: Callable[[str], None] = print) -> str:
    """Upload a finished run folder to the Hub as ``repo_id`` (created when missing; ``private``
    applies to a new repository) in one commit, on ``revision`` (a branch, created when missing;
    default ``main``). Returns the repository's URL, or with ``dry_run`` the staging folder: the
    Hub layout is written there and nothing is sent.

    The token is huggingface_hub's: ``HF_TOKEN`` or the one ``hf auth login`` stored. No token,
    ``HF_HUB_OFFLINE`` or a refusal of the Hub is a :class:`PublishError` (one line).
    """
    parse_hub_id(HUB_PREFIX + repo_id + (f"@{revision}" if revision else ""))  # a bad name fails before any work
    if dry_run is not None:
        names = stage_for_hub(run_dir, dry_run, repo_id)
        say(f"staged {len(names)} files for {repo_id} in {dry_run} ({', '.join(names)}); nothing was uploaded")
        return str(dry_run)
    if _offline():
        raise PublishError(f"HF_HUB_OFFLINE is set: nothing was uploaded to {repo_id}; unset it to publish, or stage "
                           f"the upload with --dry-run DIR and upload DIR later (`hf upload {repo_id} DIR`)")
    token = _token()
    if not token:
        raise PublishError(f"no Hugging Face token: nothing was uploaded to {repo_id}; set HF_TOKEN to a write token "
                           f"(https://huggingface.co/settings/tokens) or run `hf auth login` (`huggingface-cli login` "
                           f"before huggingface_hub 1.0), then run again")
    from huggingface_hub import HfApi

    from ..data.sources import network_timeout

    with tempfile.TemporaryDirectory(prefix="rdfer-publish-") as tmp:
        staging = Path(tmp) / "upload"
        names = stage_for_hub(run_dir, staging, repo_id)
        api = HfApi(token=token, library_name="rdfer")
        seconds = network_timeout()
        try:
            with _network_timeout(seconds):
                url = str(api.create_repo(repo_id, private=private, exist_ok=True))
                if revision:
                    api.create_branch(repo_id, branch=revision, exist_ok=True)
                api.upload_folder(repo_id=repo_id, folder_path=str(staging), revision=revision,
                                  commit_message=f"rdfer publish {Path(run_dir).name}")
        except Exception as err:  # no connection, bad token, no write access: huggingface_hub's types vary
            if _timed_out(err):
                raise PublishError(f"the upload to {repo_id} failed: the Hub ({_endpoint()}) did not answer within "
                                   f"{seconds:g} s (RDFER_NETWORK_TIMEOUT sets the limit); no files were "
                                   f"committed") from None
            raise PublishError(f"the upload to {repo_id} failed ({_first_line(err)}); no files were committed. "
                               f"Check the connection and that the token (HF_TOKEN or `hf auth login`) may write "
                               f"to {repo_id}") from None
    say(f"published {', '.join(names)} -> {url}" + (f" (branch {revision})" if revision else ""))
    return url
