"""Every registered backbone follows the contract at small sizes, forward and backward."""

import pytest
import torch
import torch.nn as nn
import torchvision

import rdfer
from rdfer.backbones.contract import BackboneContractError, FrameEncoder, as_backbone, validate_backbone

BUILTIN = [n for n in rdfer.list_backbones() if not n.endswith("*")] + ["timm/resnet18", "timm/mobilenetv3_small_050"]

# Table VI parameter counts (M) with a 7-class linear head.
PAPER_PARAMS = {"r2plus1d_18": 31.3, "mc3_18": 11.5, "r3d_18": 33.2, "cnn_lstm": 22.2, "former_dfer": 18.0}


@pytest.mark.parametrize("name", BUILTIN)
def test_forward_backward_contract(name):
    model = rdfer.create_backbone(name)
    assert model.token_level in ("clip", "frame") and isinstance(model.feature_dim, int)
    x = torch.randn(2, 3, 4, 32, 32, requires_grad=True)
    out = model(x)
    expected = (2, model.feature_dim) if model.token_level == "clip" else (2, 4, model.feature_dim)
    assert tuple(out.shape) == expected
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["tiny_cnn", "r3d_18", "cnn_lstm", "x3d_xs", "former_dfer"])
@pytest.mark.parametrize("t,size", [(1, 32), (3, 48)])
def test_any_clip_length_and_size(name, t, size):
    model = rdfer.create_backbone(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, t, size, size))
    assert out.shape[0] == 1 and out.shape[-1] == model.feature_dim


def test_former_dfer_rejects_too_long_clip():
    with pytest.raises(ValueError, match="max_frames=16"):
        rdfer.create_backbone("former_dfer")(torch.randn(1, 3, 17, 32, 32))


@pytest.mark.parametrize("name,paper", sorted(PAPER_PARAMS.items()))
def test_paper_backbone_sizes_within_3_percent(name, paper):
    model = rdfer.create_backbone(name)
    params = (sum(p.numel() for p in model.parameters()) + 7 * (model.feature_dim + 1)) / 1e6
    assert abs(params - paper) / paper < 0.03, (name, params, paper)


def test_tiny_cnn_groupnorm_has_no_batchnorm():
    model = rdfer.create_backbone("tiny_cnn", norm="gn")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())


def test_as_backbone_torchvision_resnet18_is_frame_level():
    bb = as_backbone(torchvision.models.resnet18(num_classes=10))
    assert isinstance(bb, FrameEncoder) and bb.token_level == "frame" and bb.feature_dim == 512
    assert bb(torch.randn(2, 3, 3, 32, 32)).shape == (2, 3, 512)


def test_as_backbone_torchvision_video_model_is_clip_level():
    bb = as_backbone(torchvision.models.video.mc3_18(num_classes=5))
    assert bb.token_level == "clip" and bb.feature_dim == 512
    assert bb(torch.randn(2, 3, 4, 32, 32)).shape == (2, 512)


def test_as_backbone_timm_model():
    import timm

    bb = as_backbone(timm.create_model("mobilenetv3_small_050", num_classes=10))
    assert bb.token_level == "frame" and bb.feature_dim == 1024
    assert bb(torch.randn(1, 3, 2, 32, 32)).shape == (1, 2, 1024)


def test_as_backbone_torchvision_classifier_attribute():
    bb = as_backbone(torchvision.models.mobilenet_v3_small(num_classes=10))
    assert bb.feature_dim == 576  # the whole `classifier` Sequential is removed


class WrongShape(nn.Module):
    token_level, feature_dim = "clip", 16

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 16, 3, padding=1)

    def forward(self, x):
        return self.conv(x)  # forgot to pool: (N, 16, t, H, W)


def test_wrong_output_shape_gets_clear_error():
    with pytest.raises(BackboneContractError) as info:
        validate_backbone(WrongShape())
    msg = str(info.value)
    assert "WrongShape" in msg and "(2, 16, 4, 64, 64)" in msg and "expected (N, feature_dim) = (2, 16)" in msg
    assert "Fix" in msg
    with pytest.raises(BackboneContractError, match="WrongShape"):
        rdfer.wrap_with_rdfer(WrongShape(), num_classes=7)


def test_missing_attributes_and_image_model_errors():
    with pytest.raises(BackboneContractError, match="token_level"):
        validate_backbone(nn.Linear(3, 3))
    resnet = torchvision.models.resnet18()
    resnet.token_level, resnet.feature_dim = "frame", 1000
    with pytest.raises(BackboneContractError, match="as_backbone"):
        validate_backbone(resnet)


def test_validation_does_not_touch_batchnorm_statistics():
    model = rdfer.create_backbone("tiny_cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    validate_backbone(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
