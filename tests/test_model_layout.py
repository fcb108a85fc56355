"""The model's wiring pinned exactly: which frames each clip holds, where the re-sampler looks
(hand-computed positions, centre and stride), which frames the detector glimpses, and which
module each sequence model name builds.

Videos here have frames whose value is their index (plus 100 per batch item), so a backbone's
input says exactly which source frames it was given.
"""

import math

import pytest
import torch
import torch.nn as nn

import rdfer
from rdfer.backbones.former_dfer import TransformerBlock
from rdfer.model import DEFAULT_CONFIG
from rdfer.model.dual_stream import RecurrentSequence
from rdfer.model.sampler import KeyExpressionSampler
from rdfer.registry import create_backbone

SMALL = dict(d_model=32, summary_dim=8, frame_head=False)  # the paper's heads: outputs checked by hand


def index_video(batch: int, t: int, size: int = 32) -> torch.Tensor:
    """(B, 3, T, size, size) whose frame k of item b is filled with ``100 * b + k``."""
    values = torch.arange(t, dtype=torch.float32) + 100 * torch.arange(batch, dtype=torch.float32).view(-1, 1)
    return values.view(batch, 1, t, 1, 1).expand(batch, 3, t, size, size).contiguous()


def frame_values(clips: torch.Tensor) -> torch.Tensor:
    """The per-frame value of an index video (or clips cut from one): (N, C, t, H, W) -> (N, t)."""
    values = clips[:, 0, :, 0, 0]
    assert torch.equal(clips, values.view(*values.shape[:1], 1, -1, 1, 1).expand_as(clips))  # constant frames
    return values


def _capture(module: nn.Module, store: dict) -> None:
    def hook(m, inputs, output):
        store["input"], store["output"] = inputs[0].detach().clone(), output.detach().clone()

    module.register_forward_hook(hook)


# ---- clip layout -------------------------------------------------------------------------------


def test_clip_level_backbone_gets_consecutive_frames_per_clip():
    # Uniform sampling of 16 frames out of 16: clip i of item b holds frames 4i..4i+3 (not the
    # strided 4 frames i, i+4, i+8, i+12), and the clips of item b are rows 4b..4b+3.
    model = rdfer.wrap_with_rdfer("mc3_18", resample=False, **SMALL).eval()
    seen = {}
    _capture(model.backbone, seen)
    with torch.no_grad():
        out = model(index_video(2, 16))
    assert seen["input"].shape == (8, 3, 4, 32, 32)
    expected = torch.tensor([[100 * b + 4 * i + j for j in range(4)] for b in range(2) for i in range(4)], dtype=torch.float32)
    assert torch.equal(frame_values(seen["input"]), expected)
    # ...and clip i's prediction is made from clip i's backbone vector (row 4b+i).
    clip_feats = seen["output"].view(2, 4, -1)
    assert torch.allclose(out.clip_logits, model.clip_head(model.proj(clip_feats)), atol=1e-6)


def test_clip_level_clips_follow_the_resampled_positions():
    # With the re-sampler the frames are interpolated at the learnt positions: frame j of clip i
    # of item b has the value 100 b + positions[b, 4i + j] (linear interpolation of index frames).
    model = rdfer.wrap_with_rdfer("mc3_18", locator="mean", **SMALL).eval()  # a window set by hand
    with torch.no_grad():
        model.sampler.locator.weight.zero_()
        model.sampler.locator.bias.copy_(torch.tensor([-1.0, 2.0]))  # a short window late in the video
    seen = {}
    _capture(model.backbone, seen)
    with torch.no_grad():
        out = model(index_video(2, 40))
    offsets = 100 * torch.arange(2.0).view(2, 1)
    expected = (out.positions + offsets).view(8, 4)
    assert torch.allclose(frame_values(seen["input"]), expected, atol=1e-4)
    assert (out.positions.diff(dim=1) < 0.5 * 39 / 15).all()  # really a short window, not uniform


def test_frame_level_backbone_reads_frames_in_position_order():
    model = rdfer.wrap_with_rdfer("tiny_cnn", resample=False, n_clips=2, clip_len=3, **SMALL).eval()
    seen = {}
    _capture(model.backbone, seen)
    with torch.no_grad():
        out = model(index_video(2, 11))
    # 6 frames uniformly over 11: positions 0, 2, 4, 6, 8, 10
    assert out.positions[0].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert frame_values(seen["input"]).tolist() == [[0.0, 2.0, 4.0, 6.0, 8.0, 10.0], [100.0, 102.0, 104.0, 106.0, 108.0, 110.0]]


def test_frame_level_clip_tokens_are_the_movement_model_of_consecutive_frames():
    # clip_logits[b, i] comes from S_m over tokens 3i..3i+2 of item b, pooled (Algorithm 1).
    model = rdfer.wrap_with_rdfer("tiny_cnn", resample=False, n_clips=2, clip_len=3, **SMALL).eval()
    seen = {}
    _capture(model.backbone, seen)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 9, 32, 32))
        tokens = model.proj(seen["output"])  # (2, 6, d)
        clips = torch.stack([model.temporal.movement(tokens[:, 3 * i:3 * i + 3]).mean(1) for i in range(2)], dim=1)
        assert torch.allclose(out.clip_logits, model.clip_head(clips), atol=1e-5)


# ---- where the re-sampler looks ----------------------------------------------------------------


def _fixed_sampler(stride_logit: float, centre_logit: float, **kwargs) -> KeyExpressionSampler:
    sampler = KeyExpressionSampler(create_backbone("tiny_cnn", widths=(4, 8)), **kwargs)
    with torch.no_grad():
        sampler.locator.weight.zero_()  # the locator's outputs are then exactly its biases
        sampler.locator.bias.copy_(torch.tensor([stride_logit, centre_logit]))
    return sampler.eval()


def test_position_formula_hand_case():
    # T=13, n=4, delta_min_frac=0.2, sigmoid(a)=3/4, sigmoid(b)=1/4:
    # delta_max = 12/3 = 4; delta = 4 (0.2 + 0.8 * 3/4) = 3.2; half-width h = 3 * 3.2 / 2 = 4.8;
    # centre c = 4.8 + (12 - 9.6) / 4 = 5.4; p_k = 5.4 + (k - 1.5) 3.2 = 0.6, 3.8, 7.0, 10.2;
    # mu = c / (T - 1) = 0.45.
    sampler = _fixed_sampler(math.log(3), -math.log(3), num_positions=4, num_glimpses=4, delta_min_frac=0.2)
    out = sampler(torch.rand(2, 3, 13, 16, 16))
    assert torch.allclose(out.delta, torch.full((2,), 3.2), atol=1e-5)
    assert torch.allclose(out.positions, torch.tensor([[0.6, 3.8, 7.0, 10.2]] * 2), atol=1e-5)
    assert torch.allclose(out.mu, torch.full((2,), 0.45), atol=1e-6)


def test_extreme_logits_reach_the_ends_and_the_minimum_stride():
    # sigmoid(a) -> 0: the smallest stride delta_min_frac * delta_max; sigmoid(b) -> 1: the window
    # ends exactly on the last frame; sigmoid(b) -> 0: it starts exactly on frame 0.
    late = _fixed_sampler(-30.0, 30.0, num_positions=4, num_glimpses=4, delta_min_frac=0.25)(torch.rand(1, 3, 13, 16, 16))
    assert torch.allclose(late.delta, torch.tensor([1.0])) and torch.allclose(late.positions, torch.tensor([[9.0, 10.0, 11.0, 12.0]]))
    early = _fixed_sampler(30.0, -30.0, num_positions=4, num_glimpses=4, delta_min_frac=0.25)(torch.rand(1, 3, 13, 16, 16))
    assert torch.allclose(early.delta, torch.tensor([4.0])) and torch.allclose(early.positions, torch.tensor([[0.0, 4.0, 8.0, 12.0]]))
    assert torch.allclose(early.mu, torch.tensor([0.5])) and torch.allclose(late.mu, torch.tensor([10.5 / 12]))


@pytest.mark.parametrize("t", [2, 5, 16, 64])
def test_mu_is_the_mean_position_over_t_minus_1(t):
    # mu is the window centre as a fraction of the video: mu * (T - 1) == mean position.
    sampler = KeyExpressionSampler(create_backbone("tiny_cnn", widths=(4, 8)), num_positions=16, num_glimpses=4)
    torch.nn.init.normal_(sampler.locator.weight, std=2.0)
    torch.nn.init.normal_(sampler.locator.bias, std=2.0)
    out = sampler(torch.randn(4, 3, t, 16, 16))
    assert torch.allclose(out.mu * (t - 1), out.positions.mean(1), atol=1e-4)
    assert not torch.allclose(out.mu, torch.full_like(out.mu, 0.5))  # the window really moved


def peak_evidence(sampler, glimpse: int, strength: float = 8.0):
    """Add ``strength`` to class 0's logit at one glimpse of the saliency locator's evidence (a
    forward hook, so the head's own parameters stay in the graph)."""

    def hook(module, inputs, output):
        bump = torch.zeros_like(output)
        bump[:, glimpse, 0] = strength
        return output + bump

    return sampler.glimpse_head.register_forward_hook(hook)


@pytest.mark.parametrize("locator", ["saliency", "mean", "map", None])
def test_mu_of_the_whole_model_with_and_without_resampling(locator):
    video = torch.randn(2, 3, 21, 32, 32)
    options = dict(resample=False) if locator is None else dict(locator=locator)
    model = rdfer.wrap_with_rdfer("tiny_cnn", **options, **SMALL).eval()
    with torch.no_grad():
        if locator == "saliency":
            peak_evidence(model.sampler, glimpse=12)  # the window moves there
        elif locator is not None:
            model.sampler.locator.bias.copy_(torch.tensor([0.0, 1.5]))
        out = model(video)
    if locator is not None:
        assert not torch.allclose(out.mu, torch.full_like(out.mu, 0.5), atol=1e-3)
    assert torch.allclose(out.mu * 20, out.positions.mean(1), atol=1e-4)
    assert torch.allclose(out.delta, out.positions.diff(dim=1).mean(1), atol=1e-4)


def test_detector_glimpses_uniform_frames_and_summary_is_its_mean_feature():
    sampler = _fixed_sampler(0.0, 0.0, num_positions=4, num_glimpses=4, summary_dim=6)
    seen = {}
    _capture(sampler.detector, seen)
    out = sampler(index_video(2, 13, size=16))
    # glimpses floor(i * 13 / 4) = 0, 3, 6, 9
    assert frame_values(seen["input"]).tolist() == [[0.0, 3.0, 6.0, 9.0], [100.0, 103.0, 106.0, 109.0]]
    expected = torch.sigmoid(sampler.summary_head(seen["output"].mean(dim=1)))
    assert out.summary.shape == (2, 6) and torch.allclose(out.summary, expected, atol=1e-6)


def test_locator_starts_near_uniform_with_both_heads_learning():
    sampler = KeyExpressionSampler(create_backbone("tiny_cnn", widths=(4, 8)), num_positions=16)
    assert sampler.locator.bias.tolist() == [KeyExpressionSampler.INIT_STRIDE_LOGIT, 0.0] == [3.0, 0.0]
    assert 0 < sampler.locator.weight.abs().max() < 0.1  # small, not zero: both heads get gradient
    assert sampler.summary_head.out_features == 128 and sampler.num_glimpses == 16
    assert KeyExpressionSampler(create_backbone("tiny_cnn", widths=(4, 8)), 16, summary=False).summary_head is None
    assert KeyExpressionSampler(create_backbone("tiny_cnn", widths=(4, 8)), 16, summary_dim=0).summary_head is None
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="delta_min_frac"):
            KeyExpressionSampler(create_backbone("tiny_cnn", widths=(4, 8)), 16, delta_min_frac=bad)


# ---- sequence models ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, cell, bidirectional", [
    ("bilstm", nn.LSTM, True), ("lstm", nn.LSTM, False), ("bigru", nn.GRU, True), ("gru", nn.GRU, False),
])
def test_sequence_model_names_build_the_named_rnn(name, cell, bidirectional):
    model = rdfer.wrap_with_rdfer("tiny_cnn", sequence_model=name, **SMALL)
    for seq in (model.temporal.emotion, model.temporal.movement):
        assert isinstance(seq, RecurrentSequence) and type(seq.rnn) is cell
        rnn = seq.rnn
        assert rnn.bidirectional is bidirectional and rnn.batch_first and rnn.num_layers == 1
        assert rnn.input_size == 32 and rnn.hidden_size == (16 if bidirectional else 32)
    assert model.temporal.emotion is not model.temporal.movement  # S_e and S_m are two models
    x = torch.randn(3, 5, 32)
    assert model.temporal.emotion(x).shape == (3, 5, 32)  # (N, L, d) -> (N, L, d) for every cell


def test_transformer_sequence_model_and_clip_level_has_no_movement_model():
    model = rdfer.wrap_with_rdfer("tiny_cnn", sequence_model="transformer", **SMALL)
    for seq in (model.temporal.emotion, model.temporal.movement):
        assert type(seq) is TransformerBlock and seq.heads == 8 and seq.mlp[0].out_features == 64
    odd = rdfer.wrap_with_rdfer("tiny_cnn", sequence_model="transformer", d_model=12, summary_dim=4)
    assert odd.temporal.emotion.heads == 1  # 12 is not divisible by 8
    clip = rdfer.wrap_with_rdfer("mc3_18", sequence_model="gru", **SMALL)
    assert clip.temporal.movement is None and type(clip.temporal.emotion.rnn) is nn.GRU


def test_bidirectional_needs_even_width_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="even d_model, got 33"):
        rdfer.wrap_with_rdfer("tiny_cnn", sequence_model="bilstm", d_model=33, summary_dim=4)
    assert type(rdfer.wrap_with_rdfer("tiny_cnn", sequence_model="lstm", d_model=33, summary_dim=4).temporal.emotion.rnn) is nn.LSTM
    with pytest.raises(ValueError, match="unknown sequence_model 'gru2'"):
        rdfer.wrap_with_rdfer("tiny_cnn", sequence_model="gru2", **SMALL)


# ---- predict -----------------------------------------------------------------------------------


def test_predict_is_the_eval_forward_and_restores_the_mode():
    from rdfer.losses import agreement

    model = rdfer.create_model("rdfer_small").eval()  # BatchNorm: train and eval forwards differ
    video = torch.randn(2, 3, 16, 32, 32)
    pred = model.predict(video)
    assert not model.training
    with torch.no_grad():
        out = model(video)
    assert torch.allclose(pred.probs, out.logits.softmax(-1)) and torch.allclose(pred.probs.sum(-1), torch.ones(2))
    assert torch.equal(pred.clip_preds, out.clip_logits.argmax(-1))
    assert torch.equal(pred.agreement, agreement(out.clip_logits))
    assert torch.equal(pred.positions, out.positions) and torch.equal(pred.mu, out.mu) and torch.equal(pred.delta, out.delta)
    model.train()
    again = model.predict(video)
    assert model.training and torch.allclose(again.probs, pred.probs)  # evaluated in eval mode, then restored


def test_uniform_positions_hand_cases():
    from rdfer.model.sampler import uniform_positions

    four = uniform_positions(13, 4, batch=2)
    assert four.positions.tolist() == [[0.0, 4.0, 8.0, 12.0]] * 2 and four.positions.dtype == torch.float32
    assert four.mu.tolist() == [0.5, 0.5] and four.delta.tolist() == [4.0, 4.0] and four.summary is None
    one = uniform_positions(13, 1, batch=3, dtype=torch.float64)  # a single frame: the middle one
    assert one.positions.tolist() == [[6.0]] * 3 and one.positions.dtype == torch.float64
    assert one.delta.tolist() == [12.0] * 3 and one.mu.dtype == torch.float64
    assert uniform_positions(1, 4, batch=1).positions.tolist() == [[0.0] * 4]  # a one-frame video


def test_nearest_reads_round_to_the_closest_frame_and_clamp():
    from rdfer.model.sampler import read_frames

    video = index_video(1, 6, size=2)
    positions = torch.tensor([[0.0, 0.49, 0.51, 2.4, 4.6, 5.0]])
    assert frame_values(read_frames(video, positions, "nearest")).tolist() == [[0.0, 0.0, 1.0, 2.0, 5.0, 5.0]]
    assert torch.allclose(frame_values(read_frames(video, positions, "linear")), positions)
    with pytest.raises(ValueError, match="sampling must be 'linear' or 'nearest', got 'cubic'"):
        read_frames(video, positions, "cubic")
    with pytest.raises(ValueError, match="sampling must be 'linear' or 'nearest', got 'cubic'"):
        rdfer.wrap_with_rdfer("tiny_cnn", sampling="cubic", **SMALL)


# ---- construction ------------------------------------------------------------------------------


def test_config_records_how_the_model_was_built():
    model = rdfer.wrap_with_rdfer("tiny_cnn", num_classes=5, backbone_kwargs={"widths": (8, 16)},
                                  detector_kwargs={"widths": (4, 8)}, n_clips=2, clip_len=3, **SMALL)
    cfg = model.config
    assert (cfg["backbone"], cfg["num_classes"], cfg["detector"]) == ("tiny_cnn", 5, "tiny_cnn")
    assert cfg["backbone_kwargs"] == {"widths": (8, 16)} and cfg["detector_kwargs"] == {"widths": (4, 8)}
    assert (cfg["n_clips"], cfg["clip_len"], cfg["d_model"], cfg["summary_dim"]) == (2, 3, 32, 8)
    for key, value in DEFAULT_CONFIG.items():
        if key not in ("n_clips", "clip_len", "d_model", "summary_dim", "detector", "frame_head"):
            assert cfg[key] == value, key
    assert model.backbone.feature_dim == 16 and model.sampler.detector.feature_dim == 8
    assert (model.num_classes, model.n_clips, model.clip_len, model.num_frames_read) == (5, 2, 3, 6)
    assert model.sampler.num_positions == 6 and model.sampler.num_glimpses == DEFAULT_CONFIG["num_glimpses"]
    assert model.proj.in_features == 16 and model.proj.out_features == 32
    assert model.clip_head.in_features == 32 and model.clip_head.out_features == 5
    assert model.classifier.in_features == 32 + 8 and model.classifier.out_features == 5  # f and the summary S
    assert model.temporal.n_clips == 2 and model.temporal.clip_len == 3 and model.temporal.token_level == "frame"
    assert cfg["frame_head"] is False and model.frame_head is None  # SMALL asks for the paper's heads
    with_head = rdfer.wrap_with_rdfer("tiny_cnn", num_classes=5, backbone_kwargs={"widths": (8, 16)}, d_model=32,
                                      frame_head=True)
    assert with_head.config["frame_head"] is True and DEFAULT_CONFIG["frame_head"] is False  # the paper's
    assert (with_head.frame_head.in_features, with_head.frame_head.out_features) == (16, 5)  # backbone tokens -> K


def test_paper_defaults():
    assert {k: DEFAULT_CONFIG[k] for k in ("num_glimpses", "n_clips", "clip_len", "detector", "summary_dim",
                                                  "d_model", "sequence_model", "fusion", "delta_min_frac", "sampling",
                                                  "resample", "summary", "dual_stream", "hierarchical")} == dict(
        num_glimpses=16, n_clips=4, clip_len=4, detector="tiny_cnn", summary_dim=128, d_model=512,
        sequence_model="bilstm", fusion="sum", delta_min_frac=0.25, sampling="linear", resample=True, summary=True,
        dual_stream=True, hierarchical=True)
    model = rdfer.wrap_with_rdfer("tiny_cnn")
    assert model.num_classes == 7 and model.proj.out_features == 512 and model.sampler.summary_head.out_features == 128
    assert model.sampler.delta_min_frac == 0.25 and model.sampling == "linear" and model.temporal.fusion == "sum"


def test_construction_errors_name_the_problem():
    with pytest.raises(ValueError, match="n_clips and clip_len must be >= 1, got 0, 4"):
        rdfer.wrap_with_rdfer("tiny_cnn", n_clips=0, **SMALL)
    with pytest.raises(ValueError, match="n_clips and clip_len must be >= 1, got 4, 0"):
        rdfer.wrap_with_rdfer("tiny_cnn", clip_len=0, **SMALL)
    with pytest.raises(ValueError, match="resample=True needs a detector"):
        rdfer.RDFER(create_backbone("tiny_cnn", widths=(4, 8)), 3)
    with pytest.raises(TypeError, match="detector must be a registry name or an nn.Module, got int"):
        rdfer.wrap_with_rdfer("tiny_cnn", detector=3, **SMALL)
    with pytest.raises(TypeError, match="backbone must be a registry name or an nn.Module, got float"):
        rdfer.wrap_with_rdfer(1.5, **SMALL)
    with pytest.raises(TypeError, match=r"unknown options \['n_clip'\]; known: \["):
        rdfer.wrap_with_rdfer("tiny_cnn", n_clip=3)
    # resample=False needs no detector at all, even a bad one
    assert rdfer.wrap_with_rdfer("tiny_cnn", resample=False, detector=3, **SMALL).sampler is None
    # a detector module is validated, and recorded as not rebuildable by name
    own = rdfer.wrap_with_rdfer("tiny_cnn", detector=create_backbone("tiny_cnn", widths=(4, 8)), **SMALL)
    assert own.config["detector"] is None and own.sampler.detector.feature_dim == 8


def test_preset_records_its_name_and_accepts_overrides():
    model = rdfer.create_model("rdfer_small", num_classes=3, n_clips=2)
    assert model.config["preset"] == "rdfer_small" and model.num_classes == 3 and model.n_clips == 2
    assert model.config["d_model"] == 128 and model.config["backbone_kwargs"] == {"widths": (16, 32, 64, 128)}


# ---- the saliency locator (where its window lands, in frame units) ------------------------------


def test_saliency_window_centre_is_the_evidence_centre_in_frames():
    # T=32, G=8: glimpse g stands for frames 4g..4g+3, centre 4g + 1.5. Evidence on glimpses 3
    # and 4 (frames 12..19), undecided elsewhere: the weights are symmetric about frame 15.5.
    sampler = KeyExpressionSampler(create_backbone("tiny_cnn", widths=(4, 8)), num_positions=16, num_glimpses=8,
                                   locator="saliency", num_classes=3)
    logits = torch.zeros(1, 8, 3)
    logits[0, 3:5, 2] = 20.0
    centre, delta = sampler._saliency_window(logits, 32, delta_min=0.25 * 31 / 15, delta_max=31 / 15)
    assert centre.item() == pytest.approx(15.5, abs=1e-4)  # in frame units: cell centres 4g + 1.5
    assert 0.25 * 31 / 15 - 1e-6 <= delta.item() <= 31 / 15 + 1e-6


def test_window_at_the_end_never_reads_past_the_last_frame():
    # With the window pushed to the end, c + (n-1)/2 delta = T-1 exactly in real numbers, but in
    # float32 it can land a hair above (here T=4, a = -7.752): the read must stay inside the video.
    sampler = _fixed_sampler(-7.752, 30.0, num_positions=16, num_glimpses=4)
    out = sampler(torch.rand(1, 3, 4, 16, 16))
    assert out.positions.max().item() == 3.0 and out.positions.min().item() >= 0.0


def test_the_building_blocks_defaults_are_the_wrappers():
    """RDFER, DualStreamHierarchical and KeyExpressionSampler used directly get the paper's
    defaults, the same as wrap_with_rdfer (DEFAULT_CONFIG); the sampler alone starts from the
    "mean" locator, which needs no class count."""
    import inspect

    from rdfer.model.dual_stream import DualStreamHierarchical
    from rdfer.model.rdfer import RDFER
    from rdfer.model.sampler import KeyExpressionSampler

    def defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}

    rdfer_defaults = defaults(RDFER.__init__)
    assert rdfer_defaults.pop("num_classes") == 7 and rdfer_defaults.pop("detector") is None
    assert rdfer_defaults == {k: v for k, v in DEFAULT_CONFIG.items() if k != "detector"}
    stream = defaults(DualStreamHierarchical.__init__)
    assert stream == {k: DEFAULT_CONFIG[k] for k in ("sequence_model", "fusion", "dual_stream", "hierarchical")}
    sampler = defaults(KeyExpressionSampler.__init__)
    assert sampler.pop("locator") == "mean" and sampler.pop("num_classes") is None
    assert sampler == {k: DEFAULT_CONFIG[k] for k in ("num_glimpses", "summary_dim", "summary", "delta_min_frac",
                                                      "locator_grad", "num_centres")}


def test_clip_counts_of_one_are_valid_and_zero_is_refused():
    one = rdfer.create_model("rdfer_small", num_classes=3, n_clips=1, clip_len=1, num_glimpses=8)
    out = one(torch.randn(1, 3, 8, 32, 32))
    assert out.clip_logits.shape == (1, 1, 3)
    for bad in (dict(n_clips=0), dict(clip_len=0)):
        with pytest.raises(ValueError, match=r"^n_clips and clip_len must be >= 1, got \d, \d$"):
            rdfer.create_model("rdfer_small", **bad)


def test_resampling_without_a_detector_is_refused():
    from rdfer.model.rdfer import RDFER

    with pytest.raises(ValueError, match=r"^resample=True needs a detector$"):
        RDFER(rdfer.create_backbone("tiny_cnn"), 3, detector=None, resample=True)


def test_a_clip_level_detector_feeds_one_vector_per_glimpse_window():
    class ClipDetector(nn.Module):
        """A clip-level detector: (N, C, t, H, W) -> (N, D), one vector for all its frames."""
        token_level, feature_dim = "clip", 6

        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 6)

        def forward(self, x):
            return self.proj(x.mean(dim=(2, 3, 4)))

    model = rdfer.wrap_with_rdfer("tiny_cnn", num_classes=3, detector=ClipDetector(), d_model=16, summary_dim=4,
                                  num_glimpses=8)
    assert model.config["locator"] == "mean"
    out = model(torch.randn(2, 3, 24, 32, 32))
    assert out.logits.shape == (2, 3) and torch.isfinite(out.positions).all()


def test_rdfer_built_directly_gets_the_papers_defaults():
    """Built as RDFER(backbone, detector=...) with nothing else, every option is DEFAULT_CONFIG's."""
    from rdfer.model.dual_stream import RecurrentSequence
    from rdfer.model.rdfer import RDFER

    m = RDFER(rdfer.create_backbone("tiny_cnn"), detector=rdfer.create_backbone("tiny_cnn"))
    d = DEFAULT_CONFIG
    assert (m.num_classes, m.n_clips, m.clip_len, m.sampling) == (7, d["n_clips"], d["clip_len"], d["sampling"])
    s = m.sampler
    assert (s.num_glimpses, s.delta_min_frac, s.locator_kind, s.locator_grad) == (
        d["num_glimpses"], d["delta_min_frac"], d["locator"], d["locator_grad"])
    assert s.summary_head.out_features == d["summary_dim"] and m.proj.out_features == d["d_model"]
    t = m.temporal
    assert (t.fusion, t.dual_stream, t.hierarchical) == (d["fusion"], d["dual_stream"], d["hierarchical"])
    assert isinstance(t.emotion, RecurrentSequence) and isinstance(t.emotion.rnn, nn.LSTM) and t.emotion.rnn.bidirectional
    assert m.config == {}  # filled by wrap_with_rdfer
