"""A hostile user's ``hf-hub:`` models, checkpoints, model cards and ``rdfer publish``
(docs/reliability.md): damaged or crafted weights and configs, revisions that climb out of
folders, a Hub that never answers, local paths in what is published, a card that misdescribes
the loss. Real files on disk, a Hugging Face cache built here (offline), real CLI calls; the
only network is a loopback listener of the test's own, closed when the test ends."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import rdfer
from conftest import GN_OPTIONS
from rdfer.cli import main
from rdfer.engine.checkpoint import SIZE_BOUNDS, CheckpointError, load_weights, read_metadata
from rdfer.engine.hub import parse_hub_id
from rdfer.engine.publish import stage_for_hub
from rdfer.engine.model_card import _REWEIGHTING, model_card_text
from rdfer.losses.registry import _STRATEGIES
from test_hub import COMMIT_A, _cache_snapshot, _hf_cache  # noqa: F401 (the autouse offline cache)

DATA = {"num_frames": 8, "image_size": 32, "classes": list(rdfer.EMOTIONS), "dataset": "synthetic"}


def _model():
    return rdfer.create_model("rdfer_small", num_classes=7, **GN_OPTIONS).eval()


def _checkpoint(folder: Path, change=None, config: Dict = None, data: Dict = None) -> Path:
    """``folder/model.safetensors`` of a tiny model, its tensors passed through ``change(name,
    tensor)`` and its stored model config / data settings replaced by ``config`` / ``data``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = _model()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if change is not None:
        state = {k: change(k, v) for k, v in state.items()}
    metadata = {"format": "rdfer", "rdfer_config": json.dumps(config or model.config, sort_keys=True),
                "rdfer_data": json.dumps(DATA if data is None else data)}
    save_file(state, str(folder / "model.safetensors"), metadata=metadata)
    return folder / "model.safetensors"


def _cli_error(argv: List[str], capsys) -> str:
    """Run ``rdfer argv``: it must exit 2 with one line on stderr; returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2, capsys.readouterr().err
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rdfer: error: "), err
    return err[0]


# ---- 1. non-finite weights ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_on_every_loading_path(value, _hf_cache, tmp_path, monkeypatch, capsys):
    """All-NaN (or inf) weights as hf-hub:ORG/NAME were evaluated and audited as if fine."""
    file = _checkpoint(tmp_path / "bad", lambda k, v: torch.full_like(v, value) if v.is_floating_point() else v)
    first = next(k for k, v in _model().state_dict().items() if v.is_floating_point())
    _cache_snapshot(_hf_cache, "org/bad", file.parent, COMMIT_A)
    monkeypatch.chdir(tmp_path)
    snapshot_file = _hf_cache / "models--org--bad" / "snapshots" / COMMIT_A / "model.safetensors"
    expected = f"{snapshot_file}: tensor {first} holds NaN or infinite values"
    for argv in (["eval", "synthetic", "--checkpoint", "hf-hub:org/bad", "--synthetic-test", "8"],
                 ["audit", "synthetic", "--checkpoint", "hf-hub:org/bad", "--synthetic-train", "8", "--split", "train"],
                 ["export", "--checkpoint", "hf-hub:org/bad", "--format", "torchscript"],
                 ["predict", "face.mp4", "--no-detect", "--checkpoint", "hf-hub:org/bad"]):
        assert _cli_error(argv, capsys).startswith(f"rdfer: error: {expected}"), argv
    assert not (tmp_path / "runs").exists()  # nothing evaluated, nothing written
    for source in (file, file.parent, snapshot_file.parent, "hf-hub:org/bad"):  # file, run folder, Hub layout, hf-hub
        with pytest.raises(CheckpointError, match=rf"tensor {first} holds NaN or infinite values"):
            rdfer.load_model(source)
    with pytest.raises(CheckpointError, match=rf"^{file}: tensor {first} holds NaN"):
        load_weights(_model(), file)


def test_one_non_finite_value_deep_in_the_model_is_named(tmp_path):
    model = _model()
    name = [k for k, v in model.state_dict().items() if v.is_floating_point() and v.numel() > 1][-1]

    def poison(key, tensor):
        if key != name:
            return tensor
        tensor = tensor.clone()
        tensor.view(-1)[-1] = float("-inf")
        return tensor

    file = _checkpoint(tmp_path, poison)
    with pytest.raises(CheckpointError, match=rf"^{file}: tensor {name} holds NaN or infinite values"):
        rdfer.load_model(file)


# ---- 2. revisions and names that climb out of folders ----------------------------------------------


@pytest.mark.parametrize("spec", ["hf-hub:org/name@../../../../../outside", "hf-hub:org/name@/etc/passwd",
                                  "hf-hub:org/name@a\\..\\..\\b", "hf-hub:org/name@main/../../x",
                                  "hf-hub:../name", "hf-hub:org/..", "hf-hub:org/name@v1\nline"])
def test_hf_hub_ids_that_climb_out_of_folders_are_refused(spec, tmp_path, monkeypatch, capsys):
    """`rdfer export` wrote above the working folder and load_model read a ref outside the cache."""
    cache = tmp_path / "a" / "b" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    file = _checkpoint(tmp_path / "model")
    _cache_snapshot(cache, "org/name", file.parent, COMMIT_A)
    # The ref the first spec's revision reaches from the cache's refs/ folder (five levels up).
    (tmp_path / "outside").write_text(COMMIT_A)
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = sorted(p for p in tmp_path.rglob("*"))
    for argv in (["export", "--checkpoint", spec, "--format", "torchscript"],
                 ["eval", "synthetic", "--checkpoint", spec, "--synthetic-test", "8"]):
        line = _cli_error(argv, capsys)
        assert line.startswith(f"rdfer: error: {spec!r} is not a Hub model id"), line
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    with pytest.raises(ValueError, match="is not a Hub model id"):
        rdfer.load_model(spec)


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/12", COMMIT_A, "feature/x-1_2"])
def test_ordinary_revisions_still_parse(revision):
    assert parse_hub_id(f"hf-hub:org/name@{revision}") == ("org/name", revision)


# ---- 3. a Hub that never answers --------------------------------------------------------------------


@pytest.fixture
def silent_hub(monkeypatch):
    """A loopback server that accepts connections (the kernel completes them) and never answers;
    huggingface_hub is pointed at it, online, with a 1-second limit. The listener closes when the
    test ends, and by itself after 30 s (resetting what is still waiting)."""
    from huggingface_hub import constants

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)  # never accept()ed: every request waits for an answer that never comes
    timer = threading.Timer(30, server.close)
    timer.daemon = True
    timer.start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("RDFER_NETWORK_TIMEOUT", "1")
    yield endpoint
    timer.cancel()
    server.close()


def test_download_from_a_hub_that_never_answers_times_out(silent_hub, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    line = _cli_error(["export", "--checkpoint", "hf-hub:org/slow", "--format", "torchscript"], capsys)
    assert time.monotonic() - start < 15
    assert line.startswith("rdfer: error: hf-hub:org/slow is not in the Hugging Face cache"), line
    assert f"the Hub ({silent_hub}) did not answer within 1 s (RDFER_NETWORK_TIMEOUT sets the limit)" in line


def _run_folder(folder: Path, config: Dict, results: Dict = None, flags_csv: str = None) -> Path:
    """A finished run folder written by hand: weights, results.json, config.yaml."""
    _checkpoint(folder)
    base = {"run": str(folder), "model": _model().config, "dataset": "synthetic", "strategy": "agreement",
            "test_last_epoch": {"war": 0.5, "uar": 0.4, "num_samples": 8,
                                "per_class_recall": {c: 0.5 for c in rdfer.EMOTIONS}}}
    (folder / "results.json").write_text(json.dumps({**base, **(results or {})}, indent=2))
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if flags_csv is not None:
        (folder / "train_flags.csv").write_text(flags_csv)
    return folder


def test_publish_to_a_hub_that_never_answers_times_out(silent_hub, tmp_path, monkeypatch, capsys):
    run = _run_folder(tmp_path / "run", {"dataset": "synthetic", "num_frames": 8, "image_size": 32})
    monkeypatch.setattr("rdfer.engine.publish._token", lambda: "hf_test")
    start = time.monotonic()
    line = _cli_error(["publish", str(run), "--repo", "org/name"], capsys)
    assert time.monotonic() - start < 15
    assert line == (f"rdfer: error: the upload to org/name failed: the Hub ({silent_hub}) did not answer within 1 s "
                    f"(RDFER_NETWORK_TIMEOUT sets the limit); no files were committed")


# ---- 4. memory bombs in a stored config -------------------------------------------------------------


@pytest.mark.parametrize("where,key,value", [
    ("data", "num_frames", 10**6), ("data", "image_size", 10**6), ("data", "num_frames", 0),
    ("model", "num_classes", 3 * 10**7), ("model", "d_model", -4), ("model", "d_model", 10**9),
    ("model", "summary_dim", "8"), ("model", "n_clips", 10**6), ("model", "num_glimpses", True),
    ("backbone_kwargs", "widths", [8, 16, 10**7, 32]), ("detector_kwargs", "widths", [8, -10**9, 16, 16]),
])
def test_sizes_out_of_bounds_in_a_stored_config_are_refused_before_building(where, key, value, tmp_path, capsys):
    config = _model().config
    data = dict(DATA)
    if where == "data":
        data[key] = value
    elif where == "model":
        config[key] = value
    else:
        config[where] = {**config[where], key: value}
    file = _checkpoint(tmp_path, config=config, data=data)
    low, high = SIZE_BOUNDS.get(key, (-16384, 16384))
    what = {"data": "data settings (rdfer_data)", "model": "model config"}.get(where, f"model config {where}")
    expected = (f"{file}: the stored {what} {key} is {value!r}; rdfer accepts an integer in {low}..{high} (the "
                f"checkpoint is damaged or was crafted)")
    with pytest.raises(CheckpointError) as info:
        rdfer.load_model(file)
    assert str(info.value) == expected
    assert _cli_error(["export", "--checkpoint", str(file), "--format", "torchscript"], capsys) == \
        f"rdfer: error: {expected}"


def test_a_hub_config_json_cannot_smuggle_a_memory_bomb(tmp_path):
    """Weights without rdfer metadata take their config from config.json: bounded the same way."""
    folder = tmp_path / "hub"
    folder.mkdir()
    model = _model()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {"library_name": "rdfer", "model_config": {**model.config, "num_classes": 3 * 10**7},
              "data_config": DATA}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"the stored model config num_classes is 30000000; rdfer accepts an "
                                              r"integer in 1\.\.1000"):
        rdfer.load_model(folder)


# ---- 5. malformed tensors and content ---------------------------------------------------------------


def test_a_tensor_of_the_wrong_shape_is_exit_2_naming_file_and_tensor(tmp_path, capsys):
    name = next(k for k, v in _model().state_dict().items() if v.is_floating_point() and v.dim() == 2)
    file = _checkpoint(tmp_path, lambda k, v: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if k == name else v)
    want = list(_model().state_dict()[name].shape)
    got = [want[0] + 1] + want[1:]
    expected = (f"{file}: tensor {name} has shape {got} but the model its config builds needs {want}; the file is "
                f"damaged or was edited")
    with pytest.raises(CheckpointError) as info:
        rdfer.load_model(file)
    assert str(info.value) == expected
    assert _cli_error(["export", "--checkpoint", str(file), "--format", "torchscript"], capsys) == \
        f"rdfer: error: {expected}"


@pytest.mark.parametrize("metadata,message", [
    ({"rdfer_data": "{not json"}, "the stored data settings (rdfer_data) are not JSON"),
    ({"rdfer_data": "[1, 2]"}, "the stored data settings (rdfer_data) are not a mapping"),
    ({"rdfer_config": {"backbone": "no_such_backbone"}}, "its stored model config cannot build a model"),
    ({"rdfer_config": {"sequence_model": "no_such_model"}}, "its stored model config cannot build a model"),
])
def test_malformed_checkpoint_content_is_a_checkpoint_error_naming_the_file(metadata, message, tmp_path):
    good = _checkpoint(tmp_path / "good")
    stored = read_metadata(good)
    if isinstance(metadata.get("rdfer_config"), dict):
        metadata = {"rdfer_config": json.dumps({**json.loads(stored["rdfer_config"]), **metadata["rdfer_config"]})}
    file = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(file), metadata={**stored, **metadata})
    with pytest.raises(CheckpointError) as info:
        rdfer.load_model(file)
    text = str(info.value)
    assert text.startswith(f"{file}: {message}") and "\n" not in text, text


# ---- 6. no local path is published --------------------------------------------------------------------


def test_publish_stages_no_absolute_local_path(tmp_path):
    """config.yaml (and results.json) held the user's absolute paths: their user name was published."""
    config = {"dataset": "csv", "train_source": "/home/alice/data/train.csv",
              "test_source": "/home/alice/data/test.csv", "root": "/home/alice/data", "num_frames": 8, "image_size": 32, "pretrained": "/home/alice/w/r3d.pth",
              "model": "rdfer_small", "model_options": {"backbone_kwargs": {"weights": "~/models/x.pth"}},
              "strategy": "agreement", "out": "/home/alice/runs/r1", "classes": ["happy", "sad"], "seed": 0}
    run = _run_folder(tmp_path / "r1", config, {"run": "/home/alice/runs/r1", "dataset": "csv"})
    staged = tmp_path / "staged"
    names = stage_for_hub(run, staged, "org/name")
    assert sorted(names) == sorted(p.name for p in staged.iterdir())
    for path in staged.iterdir():
        data = path.read_bytes()
        assert b"/home/alice" not in data and b"alice" not in data and b"~/models" not in data, path.name
    text = (staged / "config.yaml").read_text()
    assert text.startswith("# rdfer publish: local paths cut to their file names (train_source, test_source, root, "
                           "pretrained, model_options.backbone_kwargs.weights, out)")
    published = yaml.safe_load(text)
    assert (published["train_source"], published["test_source"], published["root"], published["out"]) == \
        ("train.csv", "test.csv", "data", "r1")
    assert {k: v for k, v in published.items() if k not in ("train_source", "test_source", "root", "out",
                                                              "pretrained", "model_options")} == \
        {k: v for k, v in config.items() if k not in ("train_source", "test_source", "root", "out", "pretrained",
                                                       "model_options")}
    assert json.loads((staged / "results.json").read_text())["run"] == "r1"
    assert "| pretrained backbone | r3d.pth |" in (staged / "README.md").read_text()


def test_a_config_without_local_paths_is_published_byte_for_byte(tmp_path):
    run = _run_folder(tmp_path / "r2", {"dataset": "synthetic", "out": "runs/r2", "num_frames": 8},
                      {"run": "runs/r2"})
    stage_for_hub(run, tmp_path / "staged")
    for name in ("config.yaml", "results.json"):
        assert (tmp_path / "staged" / name).read_bytes() == (run / name).read_bytes()


# ---- 7. the card describes the loss actually used -------------------------------------------------------


FLAGS_CSV = "path,label,mode_class,agreement,flag\na.mp4,happy,happy,1.0,ordinary\nb.mp4,sad,happy,0.5,ordinary\n"


def test_frame_baseline_card_describes_its_plain_cross_entropy(tmp_path):
    """The card of a frame-baseline run (strategy ce) said its loss uses the clips' agreement."""
    model = rdfer.create_model("frame_baseline", num_classes=7).config
    run = _run_folder(tmp_path / "fb", {"dataset": "synthetic", "model": "frame_baseline", "strategy": "ce",
                                        "epochs": 3, "warmup_epochs": 1},
                      {"model": model, "strategy": "ce", "train_flags": {"hard": 0, "noisy": 0}}, FLAGS_CSV)
    text = model_card_text(run, "org/fb")
    assert "the frame baseline" in text
    assert "`ce`: plain label-smoothed cross-entropy, no sample reweighted" in text
    assert "the loss rule (`ce`) does not use them: the lines below are a report" in text
    for wrong in ("uses their", "learnt less", "learnt more", "reweighting from"):
        assert wrong not in text, wrong


@pytest.mark.parametrize("strategy", rdfer.list_strategies())
def test_every_loss_rule_has_its_own_description_in_the_card(strategy, tmp_path):
    run = _run_folder(tmp_path / strategy, {"dataset": "synthetic", "strategy": strategy, "warmup_epochs": 1},
                      {"strategy": strategy, "train_flags": {"hard": 1, "noisy": 1}}, FLAGS_CSV)
    assert (strategy in _REWEIGHTING) == _STRATEGIES[strategy].reweights  # the card's sets follow the registry
    text = model_card_text(run)
    row = next(line for line in text.splitlines() if line.startswith("| loss rule | "))
    assert row.startswith(f"| loss rule | `{strategy}`: ") and "one of rdfer.list_strategies()" not in row
    clips = strategy not in ("ce", "gce", "elr", "bigloss_up", "bigloss_down", "class_small_loss", "coteaching")
    assert (f"the loss rule (`{strategy}`) uses their " in text) == clips
    assert ("learnt less" in text) == (strategy not in ("ce", "gce", "elr", "clip_correct", "mixture", "coteaching", "dividemix"))
