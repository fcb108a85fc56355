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
