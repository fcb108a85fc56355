"""safetensors checkpoints rebuild the model; foreign or mismatched checkpoints are refused."""

import pytest
import torch
from safetensors.torch import save_file

import rdfer
from rdfer.engine.checkpoint import CheckpointError, atomic_write_text, load_weights, save_training_checkpoint, latest_checkpoint, load_training_state


def test_save_and_load_model_rebuilds_without_restating(tmp_path):
    model = rdfer.create_model("rdfer_small", num_classes=5, fusion="concat").eval()
    path = rdfer.save_model(model, tmp_path / "m.safetensors")
    loaded = rdfer.load_model(path).eval()
    assert loaded.num_classes == 5 and loaded.config["fusion"] == "concat"
    x = torch.randn(2, 3, 12, 32, 32)
    assert torch.equal(model(x).logits, loaded(x).logits)


def test_custom_backbone_needs_module(tmp_path):
    import torchvision

    bb = rdfer.as_backbone(torchvision.models.resnet18(num_classes=3))
    model = rdfer.wrap_with_rdfer(bb, num_classes=3, d_model=16, summary_dim=4)
    rdfer.save_model(model, tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match="backbone=<your module>"):
        rdfer.load_model(tmp_path / "c.safetensors")
    bb2 = rdfer.as_backbone(torchvision.models.resnet18(num_classes=3))
    loaded = rdfer.load_model(tmp_path / "c.safetensors", backbone=bb2)
    assert torch.equal(loaded.backbone.encoder.conv1.weight, model.backbone.encoder.conv1.weight)


def test_foreign_safetensors_and_other_model_are_clear_errors(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not written by rdfer"):
        rdfer.load_model(tmp_path / "foreign.safetensors")
    small = rdfer.create_model("rdfer_small", num_classes=7)
    rdfer.save_model(small, tmp_path / "seven.safetensors")
    other = rdfer.create_model("rdfer_small", num_classes=3)
    with pytest.raises(CheckpointError, match="num_classes: checkpoint 7 vs model 3"):
        load_weights(other, tmp_path / "seven.safetensors")
    mc3 = rdfer.create_model("rdfer_mc3_18", num_classes=7)
    with pytest.raises(CheckpointError, match="backbone: checkpoint 'tiny_cnn' vs model 'mc3_18'"):
        load_weights(mc3, tmp_path / "seven.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file format at all")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        rdfer.load_model(tmp_path / "junk.safetensors")


def test_training_checkpoints_are_complete_and_pruned(tmp_path):
    model = rdfer.create_model("rdfer_small")
    for epoch in (1, 2, 3):
        save_training_checkpoint(tmp_path, epoch, model, {"epoch": epoch, "history": [{"a": 1.0}]}, keep=2)
    dirs = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert dirs == ["epoch_0002", "epoch_0003"]  # no temporary folder left behind
    assert latest_checkpoint(tmp_path).name == "epoch_0003"
    assert load_training_state(latest_checkpoint(tmp_path))["epoch"] == 3
    # An incomplete folder (a crash mid-write) is never picked.
    (tmp_path / "checkpoints" / "epoch_0004").mkdir()
    assert latest_checkpoint(tmp_path).name == "epoch_0003"


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "x.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_writes_get_the_umask_permissions_and_leave_nothing_behind(tmp_path):
    import os

    from rdfer.engine.checkpoint import atomic_path, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
        assert (tmp_path / "a.txt").read_text() == "hello"
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        with pytest.raises(RuntimeError):
            with atomic_path(tmp_path / "a.txt") as tmp:
                tmp.write_text("half")
                raise RuntimeError("crash mid-write")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "hello"  # the old file survives a crash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary left behind


def test_locator_round_trips_and_pre_locator_checkpoints_load_as_mean(tmp_path):
    import json

    from safetensors import safe_open

    sal = rdfer.create_model("rdfer_small", locator="saliency").eval()
    rdfer.save_model(sal, tmp_path / "sal.safetensors")
    assert rdfer.load_model(tmp_path / "sal.safetensors").config["locator"] == "saliency"
    mean = rdfer.create_model("rdfer_small", locator="mean")
    with pytest.raises(CheckpointError, match="locator: checkpoint 'saliency' vs model 'mean'"):
        load_weights(mean, tmp_path / "sal.safetensors")
    # A checkpoint written before the option existed: its config has no "locator" key.
    mean.eval()
    rdfer.save_model(mean, tmp_path / "old.safetensors")
    with safe_open(str(tmp_path / "old.safetensors"), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["rdfer_config"])
    del config["locator"]
    save_file(state, str(tmp_path / "old.safetensors"), metadata={**meta, "rdfer_config": json.dumps(config)})
    old = rdfer.load_model(tmp_path / "old.safetensors").eval()
    assert old.config["locator"] == "mean"
    x = torch.randn(1, 3, 16, 32, 32)
    assert torch.equal(old(x).logits, mean(x).logits)
