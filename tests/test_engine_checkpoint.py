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


class _Wrapped(torch.nn.Module):
    """Stands for DistributedDataParallel: the model under ``.module``, no config of its own."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_save_model_unwraps_creates_folders_sorts_and_refuses_what_it_cannot_rebuild(tmp_path):
    import json

    model = rdfer.create_model("rdfer_small", num_classes=5)
    path = rdfer.save_model(_Wrapped(model), tmp_path / "a" / "b" / "m.safetensors")  # folders made as needed
    meta = rdfer.engine.checkpoint.read_metadata(path)
    assert meta["rdfer_config"] == json.dumps(model.config, sort_keys=True)
    assert list(json.loads(meta["rdfer_config"])) == sorted(model.config)  # stable across Python runs
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == sorted(model.state_dict())  # no "module." prefix
    with pytest.raises(CheckpointError, match=r"^Linear has no `config`; build it with rdfer.wrap_with_rdfer or "
                       r"rdfer.create_model so a checkpoint can rebuild it.$"):
        rdfer.save_model(torch.nn.Linear(2, 2), tmp_path / "linear.safetensors")
    model.config["sequence_model"] = lambda d: torch.nn.Identity()
    with pytest.raises(CheckpointError, match=r"^the model config is not JSON-serialisable \(.*\); a custom "
                       r"sequence_model factory or detector module cannot be stored by name\. Save "
                       r"model.state_dict\(\) yourself instead\.$"):
        rdfer.save_model(model, tmp_path / "lambda.safetensors")


def test_load_model_restores_data_config_custom_detector_and_custom_backbone_marker(tmp_path):
    import json

    model = rdfer.create_model("rdfer_small", num_classes=4).eval()
    rdfer.save_model(model, tmp_path / "plain.safetensors")
    assert rdfer.load_model(tmp_path / "plain.safetensors").data_config == {}
    data = {"num_frames": 16, "image_size": 32, "classes": ["a", "b", "c", "d"]}
    rdfer.save_model(model, tmp_path / "data.safetensors", {"rdfer_data": json.dumps(data)})
    assert rdfer.load_model(tmp_path / "data.safetensors").data_config == data
    # A detector given as a module is stored as None and rebuilt as the default tiny_cnn.
    custom = rdfer.wrap_with_rdfer("tiny_cnn", num_classes=4, detector=rdfer.create_backbone("tiny_cnn")).eval()
    assert custom.config["detector"] is None
    rdfer.save_model(custom, tmp_path / "det.safetensors")
    loaded = rdfer.load_model(tmp_path / "det.safetensors").eval()
    x = torch.randn(1, 3, 16, 32, 32)
    assert torch.equal(loaded(x).logits, custom(x).logits)
    # A custom backbone stays marked custom after loading, so saving it again still asks for it.
    import torchvision

    bb = rdfer.as_backbone(torchvision.models.resnet18(num_classes=3))
    mine = rdfer.wrap_with_rdfer(bb, num_classes=3, d_model=16, summary_dim=4)
    rdfer.save_model(mine, tmp_path / "mine.safetensors")
    again = rdfer.load_model(tmp_path / "mine.safetensors", backbone=bb)
    assert again.config["backbone"] is None
    rdfer.save_model(again, tmp_path / "again.safetensors")
    with pytest.raises(CheckpointError, match="backbone=<your module>"):
        rdfer.load_model(tmp_path / "again.safetensors")


def test_load_model_rebuilds_a_named_detector_that_is_not_the_default(tmp_path, monkeypatch):
    from rdfer.backbones.tiny import TinyCNN
    from rdfer.registry import BACKBONES

    monkeypatch.setitem(BACKBONES._factories, "narrow_cnn", lambda pretrained=False, **kw: TinyCNN(widths=(8, 16)))
    model = rdfer.wrap_with_rdfer("tiny_cnn", num_classes=4, detector="narrow_cnn").eval()
    rdfer.save_model(model, tmp_path / "narrow.safetensors")
    loaded = rdfer.load_model(tmp_path / "narrow.safetensors").eval()
    assert loaded.config["detector"] == "narrow_cnn"
    x = torch.randn(1, 3, 16, 32, 32)
    assert torch.equal(loaded(x).logits, model(x).logits)


@pytest.mark.parametrize("option,value", [("n_clips", 2), ("clip_len", 2), ("d_model", 32), ("resample", False),
                                          ("summary", False), ("sequence_model", "gru"), ("fusion", "concat")])
def test_load_weights_names_each_option_that_differs(tmp_path, option, value):
    base = rdfer.create_model("rdfer_small", num_classes=7)
    rdfer.save_model(base, tmp_path / "base.safetensors")
    other = rdfer.create_model("rdfer_small", num_classes=7, **{option: value})
    with pytest.raises(CheckpointError, match=rf"belongs to another model: {option}: checkpoint {base.config[option]!r} "
                       rf"vs model {value!r}$"):
        load_weights(other, tmp_path / "base.safetensors")


def test_load_weights_lists_every_difference_and_loads_a_match_by_default_on_cpu(tmp_path):
    base = rdfer.create_model("rdfer_small", num_classes=7).eval()
    rdfer.save_model(base, tmp_path / "base.safetensors")
    other = rdfer.create_model("rdfer_small", num_classes=3, fusion="concat")
    with pytest.raises(CheckpointError, match=r"num_classes: checkpoint 7 vs model 3; fusion: checkpoint 'sum' vs model 'concat'$"):
        load_weights(other, tmp_path / "base.safetensors")
    same = load_weights(rdfer.create_model("rdfer_small", num_classes=7).eval(), tmp_path / "base.safetensors")
    x = torch.randn(1, 3, 16, 32, 32)
    assert torch.equal(same(x).logits, base(x).logits)
    # Keys that do not fit: our error naming them, not torch's.
    state = {k: v.contiguous() for k, v in base.state_dict().items()}
    meta = rdfer.engine.checkpoint.read_metadata(tmp_path / "base.safetensors")
    save_file({**state, "extra.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"does not match the model: missing \[\], unexpected \['extra.weight'\]"):
        load_weights(rdfer.create_model("rdfer_small", num_classes=7), tmp_path / "extra.safetensors")
    with pytest.raises(CheckpointError, match="does not match the model"):  # a module without a config
        load_weights(torch.nn.Linear(2, 2), tmp_path / "base.safetensors")


def _model_files(root, *relative):
    for rel in relative:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")  # only found by name here: never read


@pytest.mark.parametrize("n_runs,listed,suffix", [(6, 6, ""), (7, 6, " ... (7 in all)")])
def test_a_folder_of_several_runs_is_refused_listing_at_most_six(tmp_path, n_runs, listed, suffix):
    from rdfer.engine.checkpoint import _model_file

    _model_files(tmp_path, *(f"run{i}/model.safetensors" for i in range(n_runs)))
    names = ", ".join(str(tmp_path / f"run{i}") for i in range(listed))
    with pytest.raises(FileNotFoundError) as err:
        _model_file(tmp_path)
    assert str(err.value) == (f"{tmp_path} holds several runs ({names}{suffix}); give one of them, or its "
                              f"model.safetensors, as the checkpoint")


def test_a_stopped_run_resolves_to_its_newest_checkpoint_never_a_hidden_temporary(tmp_path):
    from rdfer.engine.checkpoint import _model_file

    _model_files(tmp_path, "checkpoints/epoch_0001/model.safetensors", "checkpoints/epoch_0002/model.safetensors",
                 "checkpoints/epoch_0002/.partial/model.safetensors")
    assert _model_file(tmp_path) == tmp_path / "checkpoints/epoch_0002/model.safetensors"


def test_an_unreadable_training_state_names_the_file_and_the_error(tmp_path):
    torch.save({"epoch": 3, "w": torch.zeros(100)}, tmp_path / "state.pt")
    data = (tmp_path / "state.pt").read_bytes()
    (tmp_path / "state.pt").write_bytes(data[: len(data) // 2])  # cut short, as by a crash
    with pytest.raises(CheckpointError) as err:
        load_training_state(tmp_path)
    message = str(err.value)
    assert message.startswith(f"cannot read training state {tmp_path / 'state.pt'}: ")
    kind = message.split(": ")[1]
    assert kind.endswith("Error") and kind != "NoneType"


def test_a_checkpoint_with_other_keys_lists_five_of_each(tmp_path):
    from safetensors.torch import load_file

    base = rdfer.create_model("rdfer_small", num_classes=7)
    rdfer.save_model(base, tmp_path / "base.safetensors")
    state = load_file(str(tmp_path / "base.safetensors"))
    dropped = [k for k in sorted(state) if not k.endswith("num_batches_tracked")][:6]  # torch forgives those
    changed = {k: v for k, v in state.items() if k not in dropped}
    changed.update({f"extra{i}.weight": torch.zeros(1) for i in range(6)})
    meta = rdfer.engine.checkpoint.read_metadata(tmp_path / "base.safetensors")
    save_file(changed, str(tmp_path / "other.safetensors"), metadata=meta)
    model = rdfer.create_model("rdfer_small", num_classes=7)
    expected = model.load_state_dict(load_file(str(tmp_path / "other.safetensors")), strict=False)
    assert len(expected.missing_keys) == len(expected.unexpected_keys) == 6
    with pytest.raises(CheckpointError) as err:
        load_weights(model, tmp_path / "other.safetensors")
    assert str(err.value) == (f"{tmp_path / 'other.safetensors'} does not match the model: missing "
                              f"{expected.missing_keys[:5]}, unexpected {expected.unexpected_keys[:5]}")
