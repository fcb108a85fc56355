"""pretrained="path" loads local files; nothing here downloads."""

import pytest
import torch
from safetensors.torch import save_file

import rdfer


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_pretrained_local_file_roundtrip(tmp_path, suffix):
    src = rdfer.create_backbone("mc3_18")
    path = tmp_path / f"w{suffix}"
    state = {f"module.{k}": v.contiguous() for k, v in src.net.state_dict().items()}  # a DDP-style prefix
    state["fc.weight"] = torch.zeros(400, 512)  # a classification head, ignored
    if suffix == ".pt":
        torch.save({"state_dict": state}, path)
    else:
        save_file(state, str(path))
    loaded = rdfer.create_backbone("mc3_18", pretrained=str(path))
    x = torch.randn(1, 3, 2, 32, 32)
    src.eval(), loaded.eval()
    assert torch.allclose(src(x), loaded(x))


def test_pretrained_wrong_architecture_is_clear_error(tmp_path):
    path = tmp_path / "r3d.pt"
    torch.save(rdfer.create_backbone("tiny_cnn").state_dict(), path)
    with pytest.raises(ValueError, match=r"r3d\.pt does not fit .*missing keys"):
        rdfer.create_backbone("r3d_18", pretrained=str(path))


def test_pretrained_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        rdfer.create_backbone("tiny_cnn", pretrained=str(tmp_path / "nope.pt"))


def test_wrapper_passes_pretrained_path_to_backbone(tmp_path):
    src = rdfer.create_backbone("tiny_cnn")
    torch.save(src.state_dict(), tmp_path / "tiny.pt")
    model = rdfer.wrap_with_rdfer("tiny_cnn", pretrained=str(tmp_path / "tiny.pt"), d_model=16, summary_dim=4)
    for k, v in src.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v)


def test_pretrained_true_offline_without_cache_says_where_to_put_weights(tmp_path, monkeypatch):
    # Offline and nothing cached: the upstream download fails; the error must say so and name
    # the cache folder, instead of a bare URLError. The download itself is replaced, so this
    # test never touches the network.
    import urllib.error

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(RuntimeError) as info:
            rdfer.create_backbone("mc3_18", pretrained=True)
    finally:
        torch.hub.set_dir(old)
    message = str(info.value)
    assert "mc3_18" in message or "MC3" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
