"""Models you can publish and load (issue 25): ``hf-hub:ORG/NAME[@REVISION]`` from a Hugging Face
cache built here (nothing is ever downloaded: HF_HUB_OFFLINE is set and tests/conftest.py blocks
the network), the Hub layout as a local folder, the model card, ``rdfer publish`` up to the
network call, and ``rdfer train --config RUN/config.yaml`` re-running a run bit for bit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import rdfer
from conftest import tiny_config
from rdfer.cli import main
from rdfer.engine.checkpoint import CheckpointError
from rdfer.engine.hub import HubModelUnavailable
from rdfer.engine.publish import PublishError, publish, stage_for_hub
from rdfer.engine.model_card import MARKER, model_card_text, write_model_card
from rdfer.engine.rundir import RunFolderError, prepare_run_folder

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test's own, offline: huggingface_hub never downloads here."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return cache


def _cache_snapshot(cache: Path, repo: str, folder: Path, commit: str, ref: str = "main") -> Path:
    """Put ``folder`` into the cache as the snapshot ``commit`` of ``repo``, with ``refs/<ref>``
    naming it: huggingface_hub's cache layout."""
    base = cache / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / ref).write_text(commit)
    return snapshot


def _outputs(model, seed: int = 0) -> torch.Tensor:
    video = torch.rand(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(video).logits


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def staged(trained_run, tmp_path):
    """The trained tiny run in the Hub layout (rdfer publish --dry-run)."""
    run, _ = trained_run
    folder = tmp_path / "staged"
    assert main(["publish", str(run), "--repo", "org/name", "--dry-run", str(folder)]) == 0
    return folder


# ---- loading ------------------------------------------------------------------------------------


def test_hf_hub_model_from_the_cache_predicts_as_the_run_folder(trained_run, staged, _hf_cache):
    run, _ = trained_run
    _cache_snapshot(_hf_cache, "org/name", staged, COMMIT_A)
    reference = rdfer.load_model(run)
    model = rdfer.load_model("hf-hub:org/name")
    assert torch.equal(_outputs(model), _outputs(reference))
    assert model.data_config == reference.data_config and model.data_config["num_frames"] == 8
    assert rdfer.load_model(f"hf-hub:org/name@{COMMIT_A}").config == reference.config  # a commit, directly


def test_hf_hub_revision_picks_its_snapshot(trained_run, staged, _hf_cache, tmp_path):
    run, _ = trained_run
    _cache_snapshot(_hf_cache, "org/name", staged, COMMIT_A)
    other = tmp_path / "other"
    shutil.copytree(staged, other)
    state = load_file(str(staged / "model.safetensors"))
    meta = rdfer.engine.checkpoint.read_metadata(staged)
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, str(other / "model.safetensors"),
              metadata=meta)
    _cache_snapshot(_hf_cache, "org/name", other, COMMIT_B, ref="v2")
    main_model, v2 = rdfer.load_model("hf-hub:org/name"), rdfer.load_model("hf-hub:org/name@v2")
    assert torch.equal(_outputs(main_model), _outputs(rdfer.load_model(run)))
    assert not torch.equal(_outputs(v2), _outputs(main_model))
    assert torch.equal(_outputs(v2), _outputs(rdfer.load_model(other)))


def test_not_cached_is_one_line_naming_the_cache_and_the_download(_hf_cache, capsys):
    with pytest.raises(HubModelUnavailable) as info:
        rdfer.load_model("hf-hub:org/missing@v3")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"hf-hub:org/missing@v3 is not in the Hugging Face cache ({_hf_cache}) and HF_HUB_OFFLINE "
                           f"is set: download it beforehand with `hf download org/missing --revision v3`")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--checkpoint", "hf-hub:org/missing", "--format", "torchscript"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rdfer: error: hf-hub:org/missing is not in the Hugging Face cache "
                                               f"({_hf_cache})"), err
    with pytest.raises(ValueError, match=r"^'hf-hub:org/na me' is not a Hub model id"):
        rdfer.load_model("hf-hub:org/na me")


def test_cli_checkpoint_hf_hub_writes_outside_the_cache(staged, _hf_cache, tmp_path, monkeypatch, capsys):
    _cache_snapshot(_hf_cache, "org/name", staged, COMMIT_A)
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--checkpoint", "hf-hub:org/name", "--format", "torchscript"]) == 0
    assert (tmp_path / "runs" / "hf-hub" / "org--name" / "model.torchscript.pt").is_file()
    assert "(B, 3, 8, 32, 32)" in capsys.readouterr().out  # the frames and size trained, from config/metadata
    snapshot = _hf_cache / "models--org--name" / "snapshots" / COMMIT_A
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(p.name for p in staged.iterdir())  # cache untouched


def test_local_hub_layout_folder_loads_and_config_json_is_checked(trained_run, staged, tmp_path):
    run, _ = trained_run
    assert sorted(p.name for p in staged.iterdir()) == sorted(
        ["config.json", "model.safetensors", "README.md", "config.yaml", "results.json", "confusion.png"])
    config = json.loads((staged / "config.json").read_text())
    assert config["library_name"] == "rdfer" and config["model_config"]["num_classes"] == 7
    assert config["data_config"] == {"num_frames": 8, "image_size": 32, "classes": list(rdfer.EMOTIONS),
                                     "dataset": "synthetic"}
    assert torch.equal(_outputs(rdfer.load_model(staged)), _outputs(rdfer.load_model(run)))
    # Weights saved by another tool (no rdfer metadata): config.json rebuilds the model.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(staged / "config.json", bare / "config.json")
    save_file(load_file(str(staged / "model.safetensors")), str(bare / "model.safetensors"))
    model = rdfer.load_model(bare)
    assert torch.equal(_outputs(model), _outputs(rdfer.load_model(run)))
    assert model.data_config["classes"] == list(rdfer.EMOTIONS)
    # Another library's config.json, or an unreadable one, beside weights that carry their config: ignored.
    for text in ('{"architectures": ["Foo"]}', "{not json"):
        (bare / "config.json").write_text(text)
        shutil.copyfile(staged / "model.safetensors", bare / "model.safetensors")
        assert torch.equal(_outputs(rdfer.load_model(bare)), _outputs(rdfer.load_model(run)))
    # A config.json that contradicts the weights' own config is refused, naming both files.
    config["data_config"]["classes"] = list(reversed(rdfer.EMOTIONS))
    (staged / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config.json contradicts the config stored in .*model.safetensors "
                                              r"\(data_config differ\)"):
        rdfer.load_model(staged)


# ---- the model card ------------------------------------------------------------------------------


def test_trained_run_has_a_model_card_with_metadata_and_limitations(trained_run):
    run, results = trained_run
    text = (run / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "rdfer"
    assert {"rdfer", "video-classification", "facial-expression-recognition", "pytorch"} <= set(meta["tags"])
    assert meta["datasets"] == ["rdfer-synthetic"]
    (entry,) = meta["model-index"][0]["results"]
    assert entry["dataset"]["split"] == "test" and entry["task"]["type"] == "video-classification"
    values = {m["type"]: m["value"] for m in entry["metrics"]}
    test = results["test_last_epoch"]
    assert values == {"war": round(100 * test["war"], 2), "uar": round(100 * test["uar"], 2)}
    assert MARKER in text
    assert "cartoon faces from the built-in generator, not for real faces" in text
    assert "![Confusion matrix" in text and "(confusion.png)" in text
    for name, recall in test["per_class_recall"].items():  # the per-class recall table
        assert f"| {name} | " in text and (f"{100 * recall:.2f}%" if recall is not None else "-") in text
    assert "locator `" in text and "`agreement`" in text and "| epochs | 3 (1 warm-up) |" in text
    assert "rdfer train --config config.yaml --out runs/rerun" in text
    assert "NOISY flags against the generator's ground truth" in text


def test_dfew_card_names_the_fold_and_its_intended_use(tmp_path):
    run = tmp_path / "dfew_run"
    run.mkdir()
    recall = {name: 0.6 for name in rdfer.EMOTIONS}
    recall["disgust"] = 0.1
    (run / "results.json").write_text(json.dumps({
        "model": {"backbone": "r3d_18", "num_classes": 7, "n_clips": 4, "clip_len": 4, "locator": "peak"},
        "dataset": "dfew", "strategy": "agreement", "epochs": 100,
        "test_last_epoch": {"war": 0.6512, "uar": 0.5234, "per_class_recall": recall, "num_samples": 2341}}))
    (run / "config.yaml").write_text("dataset: dfew\nroot: /data/DFEW\nfold: 3\nnum_frames: 64\nimage_size: 112\n"
                                     "backbone: r3d_18\nstrategy: agreement\nepochs: 100\nwarmup_epochs: 10\n")
    meta = _front_matter(model_card_text(run, "org/rdfer-dfew"))
    dataset = meta["model-index"][0]["results"][0]["dataset"]
    assert dataset == {"type": "dfew", "name": "DFEW fold 3", "split": "test", "config": "fold3"}
    assert [m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]] == [65.12, 52.34]
    text = model_card_text(run, "org/rdfer-dfew")
    assert 'rdfer.load_model("hf-hub:org/rdfer-dfew")' in text and "not for real faces" not in text
    assert "disgust (10.00%)" in text and "/data/DFEW" not in text


def test_a_users_readme_is_never_replaced(trained_run, tmp_path, capsys):
    run, _ = trained_run
    mine = tmp_path / "mine"
    shutil.copytree(run, mine, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "eval*"))
    (mine / "README.md").write_text("# my notes\n")
    assert write_model_card(mine) is None and (mine / "README.md").read_text() == "# my notes\n"
    stage_for_hub(mine, tmp_path / "staged", "org/name")  # publish uploads the user's card as it is
    assert (tmp_path / "staged" / "README.md").read_text() == "# my notes\n"
    # A fresh run into a folder holding a README.md is refused, as for any file named like rdfer's.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "README.md").write_text("# my project\n")
    with pytest.raises(RunFolderError, match=r"holds files a new run would replace \(README\.md\)"):
        prepare_run_folder(tiny_config(fresh), say=lambda _: None)
    assert (fresh / "README.md").read_text() == "# my project\n"


# ---- rdfer publish ---------------------------------------------------------------------------------


def test_publish_needs_a_finished_run_a_token_and_the_network(trained_run, tmp_path, monkeypatch, capsys):
    run, _ = trained_run
    with pytest.raises(FileNotFoundError, match=r"is not a finished run folder \(no model.safetensors or results.json\)"):
        publish(tmp_path, "org/name", dry_run=tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("")
    with pytest.raises(FileExistsError, match="already exists and is not an empty folder"):
        publish(run, "org/name", dry_run=tmp_path / "busy")
    with pytest.raises(SystemExit) as info:
        main(["publish", str(run), "--repo", "org/name"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rdfer: error: HF_HUB_OFFLINE is set: nothing was uploaded to org/name; unset it to publish, or "
                   "stage the upload with --dry-run DIR and upload DIR later (`hf upload org/name DIR`)"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("rdfer.engine.publish._token", lambda: None)
    with pytest.raises(PublishError, match=r"^no Hugging Face token: nothing was uploaded to org/name; set HF_TOKEN"):
        publish(run, "org/name")


def test_publish_uploads_the_staged_folder_in_one_commit(trained_run, tmp_path, monkeypatch):
    """Everything up to the network: HfApi is replaced by a recorder (the real upload cannot run here)."""
    import huggingface_hub

    run, _ = trained_run
    calls = []

    class FakeApi:
        def __init__(self, token=None, **kwargs):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False, **kwargs):
            calls.append(("create_repo", repo_id, private, exist_ok))
            return f"https://huggingface.co/{repo_id}"

        def create_branch(self, repo_id, branch, exist_ok=False, **kwargs):
            calls.append(("create_branch", repo_id, branch))

        def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None, **kwargs):
            files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            calls.append(("upload_folder", repo_id, revision, sorted(files)))
            assert files["model.safetensors"] == (run / "model.safetensors").read_bytes()
            assert "hf-hub:org/name" in files["README.md"].decode()

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("rdfer.engine.publish._token", lambda: "hf_test")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert publish(run, "org/name", revision="v1", private=True, say=lambda _: None) == "https://huggingface.co/org/name"
    assert calls == [("init", "hf_test"), ("create_repo", "org/name", True, True), ("create_branch", "org/name", "v1"),
                     ("upload_folder", "org/name", "v1", ["README.md", "config.json", "config.yaml", "confusion.png",
                                                         "model.safetensors", "results.json"])]


# ---- a run folder records what reproduces it --------------------------------------------------------


def test_train_config_of_a_run_reruns_it_bit_for_bit(trained_run, tmp_path, capsys):
    run, results = trained_run
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert (stored["resume"], stored["overwrite"], stored["stop_after"]) == (False, False, None)
    assert main(["train", "--config", str(run / "config.yaml"), "--out", str(tmp_path / "rerun")]) == 0
    assert "test (last epoch): WAR" in capsys.readouterr().out
    first, again = load_file(str(run / "model.safetensors")), load_file(str(tmp_path / "rerun" / "model.safetensors"))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    rerun = json.loads((tmp_path / "rerun" / "results.json").read_text())
    assert rerun["test_last_epoch"] == results["test_last_epoch"]
    assert (tmp_path / "rerun" / "train_data.json").read_text() == (run / "train_data.json").read_text()
    with pytest.raises(SystemExit) as info:  # no dataset anywhere: one line
        main(["train", "--epochs", "1"])
    assert info.value.code == 2
    assert "rdfer train needs a dataset" in capsys.readouterr().err


def test_finished_resumed_run_stores_the_whole_run(tmp_path):
    from rdfer.engine.train import train

    small = dict(synthetic_train=16, synthetic_test=8, epochs=2, warmup_epochs=0)
    train(tiny_config(tmp_path / "run", stop_after=1, **small))
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["stop_after"] == 1  # unfinished: as invoked
    assert not (tmp_path / "run" / "README.md").exists()
    train(tiny_config(tmp_path / "run", resume=True, **small))
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (stored["resume"], stored["stop_after"], stored["epochs"]) == (False, None, 2)
    assert (tmp_path / "run" / "README.md").is_file()
