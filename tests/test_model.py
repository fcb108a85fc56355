"""wrap_with_rdfer: shapes, tracing, ablation switches, presets, predict."""

import pytest
import torch
import torch.nn as nn
import torchvision
from fvcore.nn import FlopCountAnalysis

import rdfer
from rdfer.backbones.former_dfer import TransformerBlock
from rdfer.model import RDFEROutput

SMALL = dict(d_model=32, summary_dim=8, frame_head=False)  # the paper's heads: outputs checked by hand
ALL_BACKBONES = [n for n in rdfer.list_backbones() if not n.endswith("*")] + ["timm/resnet18"]


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_wrapped_output_shapes_for_every_backbone(name):
    model = rdfer.wrap_with_rdfer(name, num_classes=5, **SMALL).eval()
    with torch.no_grad():
        for t in (1, 7, 16, 64):
            out = model(torch.randn(2, 3, t, 32, 32))
            assert isinstance(out, RDFEROutput)
            assert out.logits.shape == (2, 5) and out.clip_logits.shape == (2, 4, 5)
            assert out.mu.shape == (2,) and out.delta.shape == (2,)
            assert out.features.shape == (2, 32) and out.positions.shape == (2, 16)
            assert (out.positions >= 0).all() and (out.positions <= t - 1).all()


def test_fvcore_traces_wrapped_model_with_every_switch_off():
    model = rdfer.wrap_with_rdfer("tiny_cnn", resample=False, hierarchical=False, **SMALL).eval()
    analysis = FlopCountAnalysis(model, torch.randn(1, 3, 16, 32, 32))
    analysis.unsupported_ops_warnings(False)
    assert analysis.total() > 0


@pytest.mark.parametrize("kind", ["saliency", "mean"])
def test_gradient_reaches_detector_through_resampler(kind):
    model = rdfer.wrap_with_rdfer("tiny_cnn", locator=kind, **SMALL)
    if kind == "saliency":
        # Untrained, the saliency is nearly flat: the window spans the whole video, its stride is
        # clamped at delta_max and no gradient passes (the multiple-instance term trains it
        # first). Peaked evidence gives a window inside the video, through which it flows.
        from test_model_layout import peak_evidence

        peak_evidence(model.sampler, glimpse=4)
    video = torch.randn(2, 3, 24, 32, 32)
    out = model(video)
    if kind == "saliency":
        assert (out.delta < (24 - 1) / 15 - 1e-3).all()
    # The recognizer's outputs only: the gradient flows through the interpolation.
    (out.logits.square().sum() + out.clip_logits.square().sum()).backward()
    locator = model.sampler.locator if kind == "mean" else model.sampler.glimpse_head
    assert locator.weight.grad.abs().sum() > 0 and locator.bias.grad.abs().sum() > 0
    # ...and further into the detector's own convolutions.
    first_conv = model.sampler.detector.features[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["saliency", "mean"])
def test_nearest_sampling_gives_no_gradient_to_locator(kind):
    model = rdfer.wrap_with_rdfer("tiny_cnn", sampling="nearest", summary=False, locator=kind, **SMALL)
    model(torch.randn(2, 3, 24, 32, 32)).logits.sum().backward()
    locator = model.sampler.locator if kind == "mean" else model.sampler.glimpse_head
    assert locator.weight.grad is None or locator.weight.grad.abs().sum() == 0


def test_first_forward_of_the_mean_locator_is_near_uniform():
    model = rdfer.wrap_with_rdfer("tiny_cnn", locator="mean", **SMALL).eval()
    t = 64
    with torch.no_grad():
        out = model(torch.rand(3, 3, t, 32, 32))
    uniform = torch.linspace(0, t - 1, 16)
    assert (out.positions - uniform).abs().max() < 0.06 * (t - 1)
    assert (out.mu - 0.5).abs().max() < 0.02


def test_first_forward_of_the_peak_locator_reads_part_of_the_video():
    # Untrained, the window lies around the strongest glimpse and spans at most the 2 * ceil(16/4)
    # + 1 = 9 glimpse cells there (fewer at the ends of the video), at least the minimum stride's
    # span: a third to a half of the video, not all of it (docs/wrapper.md, "Locators").
    model = rdfer.wrap_with_rdfer("tiny_cnn", **SMALL).eval()
    t = 64
    with torch.no_grad():
        out = model(torch.rand(3, 3, t, 32, 32))
    span = out.positions[:, -1] - out.positions[:, 0]
    assert ((span >= 0.25 * (t - 1) - 1e-4) & (span <= 9 / 16 * t)).all(), span
    assert (out.positions >= 0).all() and (out.positions <= t - 1).all()


def test_resample_false_builds_no_detector_and_reports_uniform():
    model = rdfer.wrap_with_rdfer("tiny_cnn", resample=False, **SMALL)
    assert model.sampler is None
    assert not any("detector" in name for name, _ in model.named_parameters())
    out = model(torch.randn(2, 3, 31, 32, 32))
    assert torch.allclose(out.mu, torch.full((2,), 0.5)) and torch.allclose(out.delta, torch.full((2,), 2.0))
    assert torch.allclose(out.positions[0], torch.arange(16.0) * 2)


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_ablation_switches_change_model_for_frame_backbones():
    base = rdfer.wrap_with_rdfer("tiny_cnn", **SMALL)
    video = torch.randn(2, 3, 16, 32, 32)
    assert _params(rdfer.wrap_with_rdfer("tiny_cnn", resample=False, **SMALL)) < _params(base)
    assert _params(rdfer.wrap_with_rdfer("tiny_cnn", summary=False, **SMALL)) == _params(base) - (128 + 1) * 8 - 7 * 8  # F_s and its classifier columns
    assert _params(rdfer.wrap_with_rdfer("tiny_cnn", fusion="concat", **SMALL)) == _params(base) + 7 * 32

    def output(**switch):
        torch.manual_seed(0)
        model = rdfer.wrap_with_rdfer("tiny_cnn", **SMALL, **switch).eval()
        with torch.no_grad():
            return model(video).logits

    reference = output()
    for switch in (dict(dual_stream=False), dict(hierarchical=False), dict(summary=False), dict(resample=False)):
        assert not torch.allclose(output(**switch), reference), switch


@pytest.mark.parametrize("switch", [dict(dual_stream=False), dict(hierarchical=False)])
def test_clip_level_backbones_reject_frame_only_switches(switch):
    with pytest.raises(ValueError, match="clip-level backbone"):
        rdfer.wrap_with_rdfer("mc3_18", **SMALL, **switch)


def test_clip_level_runs_backbone_once_per_clip():
    calls = []
    model = rdfer.wrap_with_rdfer("mc3_18", **SMALL)
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    model(torch.randn(2, 3, 20, 32, 32))
    assert calls == [torch.Size([8, 3, 4, 32, 32])]  # one pass, B * n_clips clips of clip_len frames


def test_clip_and_frame_layouts():
    model = rdfer.wrap_with_rdfer("tiny_cnn", n_clips=2, clip_len=3, **SMALL)
    out = model(torch.randn(2, 3, 9, 32, 32))
    assert out.clip_logits.shape == (2, 2, 7) and out.positions.shape == (2, 6)


def test_unknown_option_and_bad_types():
    with pytest.raises(TypeError, match="n_clip"):
        rdfer.wrap_with_rdfer("tiny_cnn", n_clip=3)
    with pytest.raises(TypeError, match="backbone"):
        rdfer.wrap_with_rdfer(42)
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        rdfer.wrap_with_rdfer("tiny_cnn", **SMALL)(torch.randn(3, 16, 32, 32))


def test_own_module_via_as_backbone():
    backbone = rdfer.as_backbone(torchvision.models.resnet18(num_classes=3))
    model = rdfer.wrap_with_rdfer(backbone, num_classes=3, **SMALL)
    assert model.config["backbone"] is None and model.token_level == "frame"
    assert model(torch.randn(1, 3, 16, 32, 32)).logits.shape == (1, 3)


def test_predict_reports_probabilities_agreement_positions():
    model = rdfer.create_model("rdfer_small", num_classes=7)
    model.train()
    pred = model.predict(torch.randn(2, 3, 32, 32, 32))
    assert model.training  # restored
    assert torch.allclose(pred.probs.sum(-1), torch.ones(2))
    assert set(pred.agreement.tolist()) <= {0.25, 0.5, 0.75, 1.0}
    assert pred.clip_preds.shape == (2, 4) and pred.positions.shape == (2, 16)


def test_presets_and_overrides():
    small = rdfer.create_model("rdfer_small", num_classes=4, resample=False)
    assert small.sampler is None and small.num_classes == 4 and small.config["preset"] == "rdfer_small"
    big = rdfer.create_model("rdfer_resnet50")
    assert big.config["backbone"] == "timm/resnet50" and big.backbone.feature_dim == 2048
    assert big.config["d_model"] == 512 and big.n_clips * big.clip_len == 16


@pytest.mark.parametrize("seq, kind", [("lstm", nn.LSTM), ("bigru", nn.GRU), ("gru", nn.GRU), ("transformer", TransformerBlock)])
def test_other_sequence_models(seq, kind):
    model = rdfer.wrap_with_rdfer("tiny_cnn", sequence_model=seq, **SMALL)
    for built in (model.temporal.emotion, model.temporal.movement):
        assert type(getattr(built, "rnn", built)) is kind  # "gru" really is a GRU
    out = model(torch.randn(1, 3, 16, 32, 32))
    assert out.logits.shape == (1, 7) and torch.isfinite(out.logits).all()


def test_sequence_model_factory():
    dims = []

    def factory(d):
        dims.append(d)
        return nn.Identity()

    model = rdfer.wrap_with_rdfer("tiny_cnn", sequence_model=factory, **SMALL).eval()
    assert dims == [32, 32]  # S_e and S_m, each built at d_model
    assert isinstance(model.temporal.emotion, nn.Identity) and isinstance(model.temporal.movement, nn.Identity)
    seen = {}
    model.backbone.register_forward_hook(lambda m, i, o: seen.update(tokens=o))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 16, 32, 32))
        tokens = model.proj(seen["tokens"])  # (1, 16, d)
    # Identity sequence models: both streams pool to the mean token, the sum fusion doubles it,
    # and clip i's token is the mean of frames 4i..4i+3.
    assert torch.allclose(out.features, 2 * tokens.mean(1), atol=1e-5)
    assert torch.allclose(out.clip_logits, model.clip_head(tokens.view(1, 4, 4, 32).mean(2)), atol=1e-5)
