"""Algorithm 1, checked against a hand-written reference with identity-like sequence models."""

import torch
import torch.nn as nn

from rdfer.model.dual_stream import DualStreamHierarchical


class Scale(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return x * self.s + x.cumsum(dim=1)  # order-dependent, so the axis being modelled matters


def test_dual_stream_matches_algorithm_1():
    torch.manual_seed(0)
    n1, n2, d = 3, 2, 5
    net = DualStreamHierarchical(d, n1, n2, "frame", sequence_model=lambda dim: Scale(2.0))
    net.emotion = Scale(3.0)  # S_e differs from S_m so a swap would be caught
    tokens = torch.randn(2, n1 * n2, d)
    f, clip_tokens = net(tokens)
    grid = tokens.view(2, n1, n2, d)
    s_m, s_e = Scale(2.0), Scale(3.0)
    ref_clips = torch.stack([s_m(grid[:, i]).mean(1) for i in range(n1)], dim=1)  # (2, n1, d)
    f_me = s_e(ref_clips).mean(1)
    strided = torch.stack([s_e(grid[:, :, j]).mean(1) for j in range(n2)], dim=1)  # frames j, j+n2, ...
    f_em = s_m(strided).mean(1)
    assert torch.allclose(clip_tokens, ref_clips, atol=1e-5)
    assert torch.allclose(f, f_me + f_em, atol=1e-5)


def test_single_stream_and_flat_ensemble():
    n1, n2, d = 2, 3, 4
    tokens = torch.randn(1, n1 * n2, d)
    single = DualStreamHierarchical(d, n1, n2, "frame", lambda dim: Scale(2.0), dual_stream=False)
    single.emotion = Scale(3.0)
    f, clips = single(tokens)
    assert torch.allclose(f, Scale(3.0)(clips).mean(1), atol=1e-5)
    flat = DualStreamHierarchical(d, n1, n2, "frame", lambda dim: Scale(2.0), hierarchical=False)
    flat.emotion = Scale(3.0)
    f, _ = flat(tokens)
    assert torch.allclose(f, Scale(2.0)(tokens).mean(1) + Scale(3.0)(tokens).mean(1), atol=1e-5)


def test_clip_level_has_only_emotion_model():
    net = DualStreamHierarchical(8, 4, 4, "clip")
    assert net.movement is None
    x = torch.randn(2, 4, 8)
    f, clips = net(x)
    assert f.shape == (2, 8) and clips is x


def test_bad_combinations_are_refused_with_the_reason():
    import pytest

    with pytest.raises(ValueError, match=r"^fusion must be 'sum' or 'concat', got 'mean'$"):
        DualStreamHierarchical(8, 2, 2, "frame", fusion="mean")
    clip_msg = (r"^dual_stream=False and hierarchical=False apply to frame-level backbones only: a clip-level backbone "
                r"\(3D CNN, CNN-LSTM, Former-DFER\) already models the movement inside each clip, so there is one "
                r"stream \(S_e over the clips\) and no hierarchy to remove\.$")
    for flags in (dict(dual_stream=False), dict(hierarchical=False)):
        with pytest.raises(ValueError, match=clip_msg):
            DualStreamHierarchical(8, 2, 2, "clip", **flags)
    with pytest.raises(ValueError, match=r"^hierarchical=False already replaces both streams by an ensemble of two "
                       r"flat sequence models; leave dual_stream=True with it\.$"):
        DualStreamHierarchical(8, 2, 2, "frame", dual_stream=False, hierarchical=False)


def test_recurrent_sequence_layers_and_width():
    from rdfer.model.dual_stream import RecurrentSequence

    two = RecurrentSequence("lstm", 8, bidirectional=True, num_layers=2)
    assert (two.rnn.num_layers, two.rnn.hidden_size, two.rnn.bidirectional) == (2, 4, True)
    assert RecurrentSequence("gru", 8, bidirectional=False).rnn.num_layers == 1
    assert two(torch.randn(3, 5, 8)).shape == (3, 5, 8)
