"""The locators of the key-expression re-sampler: window arithmetic, gradients, export, and a
locator that learns to look where the expression is."""

import math

import pytest
import torch

import rdfer
from rdfer.model.sampler import EVIDENCE_LOCATORS, LOCATORS, KeyExpressionSampler, mil_logits
from rdfer.registry import create_backbone

SMALL = dict(d_model=32, summary_dim=8, num_glimpses=8)


def test_mil_pooling_is_the_mean_of_the_top_quarter():
    g = torch.tensor([[[1.0, 0.0], [5.0, -1.0], [3.0, 2.0], [0.0, 4.0], [2.0, 0.0], [1.0, 1.0], [0.0, 0.0], [4.0, 3.0]]])
    # G = 8 -> top 2 per class: class 0 (5 + 4) / 2, class 1 (4 + 3) / 2
    assert mil_logits(g).tolist() == [[4.5, 3.5]]
    assert mil_logits(torch.ones(2, 3, 5)).shape == (2, 5)  # G = 3 -> top 1


def _saliency_sampler(t_glimpses=8, n=16):
    det = create_backbone("tiny_cnn", widths=(4, 8))
    return KeyExpressionSampler(det, num_positions=n, num_glimpses=t_glimpses, locator="saliency", num_classes=3)


def test_saliency_window_on_a_hand_case():
    sampler = _saliency_sampler()
    t, g = 32, 8  # cells of 4 frames; cell centres 1.5, 5.5, ..., 29.5
    # Glimpses 5 and 6 say class 2 for sure, the rest are undecided: the window sits on cells 5-6.
    logits = torch.zeros(1, g, 3)
    logits[0, 5:7, 2] = 20.0
    centre, delta = sampler._saliency_window(logits, t, delta_min=0.25 * 31 / 15, delta_max=31 / 15)
    w = torch.ones(g)
    w[5:7] = math.exp(20.0)
    w = w / w.sum()
    x = torch.arange(g) * 4 + 1.5
    c = float((w * x).sum())
    var = float((w * (x - c) ** 2).sum()) + 16 / 12
    span = 2 * math.sqrt(3) * math.sqrt(var)
    assert centre.item() == pytest.approx(min(c, 31 - 15 * (span / 15) / 2), abs=1e-4)
    assert delta.item() == pytest.approx(min(max(span / 15, 0.25 * 31 / 15), 31 / 15), abs=1e-5)
    assert centre.item() > 15.5  # pulled towards the late glimpses


def test_the_default_locator_is_peak_and_a_clip_level_detector_falls_back_to_mean():
    assert rdfer.create_model("rdfer_small").config["locator"] == "peak"
    assert rdfer.wrap_with_rdfer("tiny_cnn", **SMALL).sampler.locator_kind == "peak"
    clip_level = rdfer.wrap_with_rdfer("tiny_cnn", detector="mc3_18", **SMALL)
    assert clip_level.config["locator"] == "mean" and clip_level.sampler.locator_kind == "mean"


def test_peak_locator_sits_on_the_stronger_of_two_bursts():
    det = create_backbone("tiny_cnn", widths=(4, 8))
    peak = KeyExpressionSampler(det, num_positions=16, num_glimpses=8, locator="peak", num_classes=3)
    spread = KeyExpressionSampler(det, num_positions=16, num_glimpses=8, locator="saliency", num_classes=3)
    t, g = 32, 8  # cells of 4 frames, centres 1.5, 5.5, ..., 29.5
    logits = torch.zeros(1, g, 3)
    logits[0, 1, 2] = 19.0  # a burst early...
    logits[0, 6, 2] = 20.0  # ...and a stronger one late
    bounds = dict(delta_min=0.25 * 31 / 15, delta_max=31 / 15)
    c_peak, d_peak = peak._saliency_window(logits, t, **bounds)
    c_spread, d_spread = spread._saliency_window(logits, t, **bounds)
    # "saliency" averages the two bursts: a window over nearly everything, centred in between.
    assert d_spread.item() > 1.5 and 10 < c_spread.item() < 22
    # "peak" keeps glimpses 4..7 (within ceil(8/4) = 2 of glimpse 6): cell 6 dominates.
    w = torch.tensor([1.0, 1.0, math.exp(20.0), 1.0])
    w = w / w.sum()
    x = torch.tensor([17.5, 21.5, 25.5, 29.5])
    c = float((w * x).sum())
    span = 2 * math.sqrt(3) * math.sqrt(float((w * (x - c) ** 2).sum()) + 16 / 12)
    delta = max(span / 15, 0.25 * 31 / 15)
    assert d_peak.item() == pytest.approx(delta, abs=1e-5)
    assert c_peak.item() == pytest.approx(min(c, 31 - 15 * delta / 2), abs=1e-4)


@pytest.mark.parametrize("locator", LOCATORS)
def test_every_locator_keeps_the_window_inside_the_video(locator):
    model = rdfer.wrap_with_rdfer("tiny_cnn", locator=locator, **SMALL).eval()
    for t in (8, 17, 64):
        with torch.no_grad():
            out = model(torch.rand(3, 3, t, 32, 32) * 4 - 2)
        assert (out.positions >= 0).all() and (out.positions <= t - 1).all()
        lo, hi = out.positions.min(dim=1).values, out.positions.max(dim=1).values
        if locator == "keyinstance":  # clips of consecutive hard indices around each centre
            assert torch.equal(out.positions, out.positions.round())
            assert (out.positions.view(3, 4, 4).diff(dim=2) >= 0).all()
            # mu / delta describe the span read: its centre and its length / (n - 1)
            assert torch.allclose(out.mu * (t - 1), (lo + hi) / 2) and torch.allclose(out.delta * 15, hi - lo)
        else:
            steps = out.positions.diff(dim=1)
            assert torch.allclose(steps, out.delta.unsqueeze(1).expand_as(steps), atol=1e-4)
            # mu is the window centre as a fraction of the video: mean position / (T - 1)
            assert torch.allclose(out.mu * (t - 1), out.positions.mean(dim=1), atol=1e-4)
        expected_g = 8 if locator in EVIDENCE_LOCATORS else 0
        assert out.glimpse_logits.shape == (3, expected_g, 7)


@pytest.mark.parametrize("locator", LOCATORS)
def test_gradient_reaches_every_locator(locator):
    model = rdfer.wrap_with_rdfer("tiny_cnn", locator=locator, **SMALL)
    out = model(torch.randn(2, 3, 24, 32, 32))
    loss = rdfer.AgreementLoss(2)(out, torch.tensor([0, 3]), torch.tensor([0, 1]))
    loss.backward()
    head = model.sampler.glimpse_head if locator in EVIDENCE_LOCATORS else model.sampler.locator
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert model.sampler.detector.features[0].weight.grad.abs().sum() > 0


def test_saliency_without_locator_grad_is_trained_by_the_mil_term_only():
    model = rdfer.wrap_with_rdfer("tiny_cnn", locator="saliency", locator_grad=False, **SMALL)
    out = model(torch.randn(2, 3, 24, 32, 32))
    out.logits.sum().backward()  # the recognizer's loss alone: nothing reaches the glimpse head
    assert model.sampler.glimpse_head.weight.grad is None or model.sampler.glimpse_head.weight.grad.abs().sum() == 0
    model.zero_grad()
    out = model(torch.randn(2, 3, 24, 32, 32))
    rdfer.AgreementLoss(2)(out, torch.tensor([0, 3]), torch.tensor([0, 1])).backward()
    assert model.sampler.glimpse_head.weight.grad.abs().sum() > 0


def test_locator_loss_targets_label_or_prediction():
    out = rdfer.wrap_with_rdfer("tiny_cnn", locator="saliency", **SMALL)(torch.randn(2, 3, 16, 32, 32))
    target = torch.tensor([1, 2])
    plain = rdfer.AgreementLoss(2, locator_weight=0.0)(out, target, torch.tensor([0, 1]))
    with_label = rdfer.AgreementLoss(2, locator_weight=0.5)(out, target, torch.tensor([0, 1]))
    mil = torch.nn.functional.cross_entropy(mil_logits(out.glimpse_logits), target)
    assert with_label.item() == pytest.approx(plain.item() + 0.5 * mil.item(), rel=1e-5)
    own = out.logits.argmax(-1)
    with_pred = rdfer.AgreementLoss(2, locator_weight=0.5, locator_target="prediction")(out, target, torch.tensor([0, 1]))
    mil_pred = torch.nn.functional.cross_entropy(mil_logits(out.glimpse_logits), own)
    assert with_pred.item() == pytest.approx(plain.item() + 0.5 * mil_pred.item(), rel=1e-5)
    with pytest.raises(ValueError, match="locator_target"):
        rdfer.AgreementLoss(2, locator_target="oracle")
    # A locator with a single glimpse still adds its term.
    one = type("O", (), {"logits": out.logits, "clip_logits": out.clip_logits, "glimpse_logits": out.glimpse_logits[:, :1]})()
    single = rdfer.AgreementLoss(2, locator_weight=0.5)(one, target, torch.tensor([0, 1]))
    mil_one = torch.nn.functional.cross_entropy(mil_logits(out.glimpse_logits[:, :1]), target)
    assert single.item() == pytest.approx(plain.item() + 0.5 * mil_one.item(), rel=1e-5)
    # Per sample (B,), so each sample's flag weighs its own locator term.
    per_sample = rdfer.AgreementLoss(2).locator_loss(out.glimpse_logits, out.logits, target)
    assert torch.allclose(per_sample, torch.nn.functional.cross_entropy(
        mil_logits(out.glimpse_logits), target, reduction="none"))


def test_bad_locator_options_are_refused():
    with pytest.raises(ValueError, match="locator must be one of"):
        rdfer.wrap_with_rdfer("tiny_cnn", locator="attention", **SMALL)
    with pytest.raises(ValueError, match="frame-level detector"):
        rdfer.wrap_with_rdfer("tiny_cnn", locator="map", detector="mc3_18", **SMALL)


@pytest.mark.parametrize("locator", ["map", "saliency", "peak", "keyinstance"])
def test_locators_export_and_trace(tmp_path, locator):
    from fvcore.nn import FlopCountAnalysis

    from rdfer.inference.export import export_model

    model = rdfer.wrap_with_rdfer("tiny_cnn", locator=locator, **SMALL).eval()
    video = torch.rand(2, 3, 16, 32, 32)
    analysis = FlopCountAnalysis(model, video[:1])
    analysis.unsupported_ops_warnings(False)
    assert analysis.total() > 0
    path = export_model(model, tmp_path / "m.pt", fmt="torchscript", num_frames=16, image_size=32)
    traced = torch.jit.load(str(path))
    with torch.no_grad():
        ref, got = model(video), traced(video)
    for name, a, b in zip(type(ref)._fields, ref, got):
        assert torch.allclose(a, b, atol=1e-5), name


def _last_third_toy(n: int, t: int = 24, seed: int = 0):
    """Videos whose class (0 or 1) shows only in the last third: a bright or a dark square
    on flat grey noise; the first two thirds are noise alone."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    videos = 0.5 + 0.05 * torch.randn(n, 3, t, 16, 16, generator=g)
    sign = (labels.float() * 2 - 1).view(n, 1, 1, 1, 1)
    videos[:, :, 2 * t // 3:, 4:12, 4:12] += 0.4 * sign
    return videos, labels


@pytest.mark.parametrize("locator", ["peak", "saliency", "keyinstance"])
def test_the_evidence_locators_learn_to_look_at_the_last_third(locator):
    torch.manual_seed(0)
    model = rdfer.wrap_with_rdfer(
        "tiny_cnn", num_classes=2, locator=locator, backbone_kwargs=dict(widths=(8, 8)),
        detector_kwargs=dict(widths=(8, 8)), d_model=16, summary_dim=4, num_glimpses=8, n_clips=2, clip_len=4,
        num_centres=2)
    criterion = rdfer.AgreementLoss(64, strategy="ce", label_smoothing=0.0)
    videos, labels = _last_third_toy(64)
    def share_in_last_third(out):  # of the frames read, the share inside frames 16..23
        return (out.positions >= 15.5).float().mean().item()

    with torch.no_grad():
        before = share_in_last_third(model.eval()(videos))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(10):
        for idx in torch.randperm(64).split(16):
            loss = criterion(model(videos[idx]), labels[idx], idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        out = model.eval()(videos)
    # Untrained, "saliency" reads the whole video (3/8 of the frames land in the last third) and
    # "peak" about half of it around an arbitrary glimpse; trained, most frames read are in the
    # last third, where the expression is, and the window's centre is there too.
    assert before <= 0.5, before
    assert share_in_last_third(out) > 0.6 and share_in_last_third(out) > before + 0.15, share_in_last_third(out)
    assert out.mu.mean().item() > 0.7, out.mu.mean().item()


@pytest.mark.parametrize("locator_grad", [True, False])
def test_locator_grad_decides_whether_the_recognizer_trains_the_glimpse_head(locator_grad):
    torch.manual_seed(0)
    model = rdfer.wrap_with_rdfer("tiny_cnn", locator="saliency", locator_grad=locator_grad, **SMALL)
    with torch.no_grad():  # a peaked saliency, so the window is off its clamp and positions move with it
        model.sampler.glimpse_head.weight.mul_(50.0)
    model(torch.randn(2, 3, 24, 32, 32)).logits.sum().backward()  # the recognizer's loss alone
    grad = model.sampler.glimpse_head.weight.grad
    reached = grad is not None and grad.abs().sum().item() > 0
    assert reached == locator_grad
