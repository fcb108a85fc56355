"""``rdfer publish``: a finished run folder staged in the Hub layout (:mod:`rdfer.engine.hub`) and
uploaded. Builds on checkpoints, the Hub layout and the model card; none of them imports it."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .files import MODEL_FILE, PathLike, atomic_write_text
from .hub import (CONFIG_FILE, HUB_PREFIX, _endpoint, _first_line, _network_timeout, _offline, _timed_out,
                  parse_hub_id)

__all__ = ["PublishError", "hub_config", "stage_for_hub", "publish"]


class PublishError(OSError):
    """``rdfer publish`` cannot upload (no token, offline, the Hub refused); one line, nothing committed."""


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
