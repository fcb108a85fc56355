import pytest
import torch.nn as nn

import rdfer
from rdfer.registry import Registry

PAPER_BACKBONES = ["cnn_lstm", "former_dfer", "mc3_18", "r2plus1d_18", "r3d_18"]


def test_list_backbones_has_builtins_and_timm_family():
    names = rdfer.list_backbones()
    for name in PAPER_BACKBONES + ["tiny_cnn", "x3d_xs", "timm/*"]:
        assert name in names
    assert names == sorted(names)


def test_list_backbones_pattern():
    assert rdfer.list_backbones("r*") == ["r2plus1d_18", "r3d_18"]
    timm_names = rdfer.list_backbones("timm/resnet1*")
    assert "timm/resnet18" in timm_names and all(n.startswith("timm/resnet1") for n in timm_names)
    assert rdfer.list_backbones("nothing*") == []


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match="r3d_18"):
        rdfer.create_backbone("r3d18")
    with pytest.raises(KeyError, match="resnet18"):
        rdfer.create_backbone("timm/resnet_18")


def test_register_backbone_roundtrip_and_duplicate():
    reg = Registry("thing")

    @reg.register("a_net")
    def a_net(width=4):
        return nn.Linear(width, 1)

    assert reg.list() == ["a_net"] and "a_net" in reg
    assert reg.create("a_net", width=3).in_features == 3
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a_net")(a_net)


def test_user_registered_backbone_is_created_and_wrapped():
    name = "test_user_mean_backbone"
    if name not in rdfer.list_backbones():

        @rdfer.register_backbone(name)
        def _factory(pretrained=False, dim=8):
            class MeanNet(nn.Module):
                token_level, feature_dim = "clip", dim

                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(3, dim)

                def forward(self, x):
                    return self.fc(x.mean(dim=(2, 3, 4)))

            return MeanNet()

    assert rdfer.is_backbone(name)
    model = rdfer.wrap_with_rdfer(name, num_classes=3, d_model=16, summary_dim=4)
    assert model.config["backbone"] == name


def test_list_models_presets():
    models = rdfer.list_models()
    assert {"rdfer_resnet50", "rdfer_small"} <= set(models)
    assert rdfer.list_models("rdfer_r*") == ["rdfer_r2plus1d_18", "rdfer_r3d_18", "rdfer_resnet50"]


def test_import_rdfer_stays_light():
    import subprocess
    import sys

    code = "import sys, rdfer; print(','.join(m for m in ('cv2','matplotlib','sklearn','tensorboard','onnx','timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
