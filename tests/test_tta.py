"""Test-time augmentation (issue 28): views averaged, exposed as --tta in eval and predict."""

from __future__ import annotations

import json

import pytest
import torch

import rdfer
from rdfer.inference.tta import TestTimeAugmentation as TTA
from rdfer.inference.tta import _view, with_tta


def test_logits_are_the_mean_over_the_views():
    torch.manual_seed(0)
    model = rdfer.create_model("frame_baseline", num_classes=5).eval()
    video = torch.randn(2, 3, 8, 32, 32)
    tta = with_tta(model, views=("identity", "hflip", "zoom"))
    with torch.no_grad():
        out = tta(video)
        views = [model(video), model(video.flip(-1)), model(_view(video, "zoom"))]
    assert torch.allclose(out.logits, sum(v.logits for v in views) / 3, atol=1e-6)
    assert torch.allclose(out.clip_logits, sum(v.clip_logits for v in views) / 3, atol=1e-6)
    assert torch.equal(out.positions, views[0].positions)
    assert tta.num_classes == 5 and tta.n_clips == model.n_clips


def test_views_are_the_same_for_every_frame_and_keep_the_shape():
    video = torch.arange(2 * 3 * 4 * 16 * 16, dtype=torch.float32).view(2, 3, 4, 16, 16)
    flipped = _view(video, "hflip")
    assert torch.equal(flipped[..., 0], video[..., -1])
    zoom = _view(video, "zoom")
    assert zoom.shape == video.shape
    # A frame constant in space stays constant: the zoom reads inside the frame, per frame.
    const = torch.ones(1, 3, 4, 16, 16) * torch.arange(4.0).view(1, 1, 4, 1, 1)
    assert torch.allclose(_view(const, "zoom"), const)
    assert torch.allclose(_view(const, "zoom_hflip"), const)


def test_a_mirror_symmetric_video_gets_the_plain_prediction():
    model = rdfer.create_model("rdfer_small", num_classes=3).eval()
    half = torch.randn(1, 3, 8, 32, 16)
    video = torch.cat([half, half.flip(-1)], dim=-1)  # left-right symmetric frames
    with torch.no_grad():
        assert torch.allclose(with_tta(model)(video).logits, model(video).logits, atol=1e-5)


def test_unknown_view_is_refused():
    model = rdfer.create_model("frame_baseline")
    with pytest.raises(ValueError, match="unknown test-time view 'rot90'"):
        TTA(model, views=("identity", "rot90"))
    with pytest.raises(ValueError, match="at least one view"):
        TTA(model, views=())


def test_eval_with_tta_from_the_command_line(trained_run, tmp_path):
    from rdfer.cli import main

    run, _ = trained_run
    common = ["synthetic", "--checkpoint", str(run), "--synthetic-train", "48", "--synthetic-test", "24",
              "--noise-rate", "0.25", "--workers", "0"]
    assert main(["eval", *common, "--out", str(tmp_path / "plain")]) == 0
    assert main(["eval", *common, "--tta", "--out", str(tmp_path / "tta")]) == 0
    tta = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    # The same number computed here: the checkpoint's model, mirrored views averaged, test videos.
    from rdfer.data import SyntheticDFER
    from rdfer.data.transforms import normalize_video
    from rdfer.engine.checkpoint import load_model

    model = with_tta(load_model(run)).eval()
    test = SyntheticDFER(24, num_frames=8, image_size=32, seed=10_000, cache=False)
    videos = torch.stack([test[i]["video"] for i in range(24)])
    with torch.no_grad():
        preds = model(normalize_video(videos)).logits.argmax(1)
    assert tta["num_samples"] == 24
    assert tta["war"] == pytest.approx(float((preds == test.labels).float().mean()))
