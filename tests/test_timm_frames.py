"""Any timm image model at the frame size in use: a ViT, a ConvNeXt and an EfficientNet (tiny
variants, random weights) wrapped and run at 112 and 64 px."""

from __future__ import annotations

import pytest
import torch

import rdfer
from conftest import tiny_config

MODELS = ["vit_tiny_patch16_224", "convnext_atto", "efficientnet_b0"]
SMALL = dict(n_clips=2, clip_len=2, num_glimpses=4, d_model=32, summary_dim=8)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [112, 64])
def test_timm_model_wrapped_at_the_frame_size(name, size):
    model = rdfer.wrap_with_rdfer(f"timm/{name}", num_classes=7, backbone_kwargs={"image_size": size}, **SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 4, size, size))
    assert tuple(out.logits.shape) == (1, 7) and tuple(out.clip_logits.shape) == (1, 2, 7)
    assert torch.isfinite(out.logits).all()


def test_vit_takes_any_size_without_being_told():
    """The case of the issue: a 224-px ViT fed the default 112-px frames (and 64) works."""
    model = rdfer.wrap_with_rdfer("timm/vit_tiny_patch16_224", num_classes=7, **SMALL).eval()
    with torch.no_grad():
        for size in (112, 64):
            assert tuple(model(torch.randn(1, 3, 4, size, size)).logits.shape) == (1, 7)


def test_vit_position_embedding_is_sized_for_the_frames():
    bb = rdfer.create_backbone("timm/vit_tiny_patch16_224", image_size=112)
    assert tuple(bb.encoder.patch_embed.img_size) == (112, 112)
    assert bb.encoder.pos_embed.shape[1] == 1 + (112 // 16) ** 2  # class token + 7 x 7 patches
    assert bb.feature_dim == 192


def test_a_fixed_size_model_at_another_size_is_a_clear_error():
    bb = rdfer.create_backbone("timm/vit_tiny_patch16_224", img_size=224)  # explicit: fixed at 224
    with pytest.raises(ValueError, match=r"vit_tiny_patch16_224.*image_size': 112"):
        with torch.no_grad():
            bb(torch.zeros(1, 3, 2, 112, 112))


def test_training_builds_timm_backbones_for_the_image_size(tmp_path):
    from rdfer.engine.train import build_model

    cfg = tiny_config(tmp_path, backbone="timm/vit_tiny_patch16_224", model=None, image_size=64,
                      model_options=dict(SMALL))
    model = build_model(cfg, 7)
    assert model.config["backbone_kwargs"]["image_size"] == 64  # recorded: load_model rebuilds it the same way
    assert tuple(model.backbone.encoder.patch_embed.img_size) == (64, 64)
