"""The key-expression re-sampler: positions stay inside the video, interpolation is exact."""

import pytest
import torch

from rdfer.model.sampler import KeyExpressionSampler, glimpse_indices, read_frames
from rdfer.registry import create_backbone


def test_glimpses_follow_the_paper_example():
    assert glimpse_indices(64, 16).tolist() == list(range(0, 64, 4))
    assert glimpse_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_positions_inside_video_for_random_detector_outputs():
    sampler = KeyExpressionSampler(create_backbone("tiny_cnn", widths=(4, 8)), num_positions=16, num_glimpses=4)
    for t in (1, 2, 5, 16, 64, 301):
        for scale in (0.0, 5.0, 50.0):
            torch.nn.init.normal_(sampler.locator.weight, std=scale)
            torch.nn.init.normal_(sampler.locator.bias, std=scale)
            out = sampler(torch.randn(6, 3, t, 16, 16))
            assert (out.positions >= 0).all() and (out.positions <= t - 1).all()
            steps = out.positions.diff(dim=1)
            assert torch.allclose(steps, out.delta.unsqueeze(1).expand_as(steps), atol=1e-4)
            delta_max = (t - 1) / 15
            assert (out.delta >= 0.25 * delta_max - 1e-5).all() and (out.delta <= delta_max + 1e-5).all()
            assert ((out.mu >= 0) & (out.mu <= 1)).all()


def test_linear_interpolation_matches_hand_computation():
    video = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(1, 2, 5, 2, 2).contiguous()  # frame k has value k
    positions = torch.tensor([[0.0, 1.25, 3.5, 4.0]])
    frames = read_frames(video, positions, "linear")
    assert frames.shape == (1, 2, 4, 2, 2)
    assert torch.allclose(frames[0, 0, :, 0, 0], positions[0])
    assert read_frames(video, positions, "nearest")[0, 0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 4.0]


def test_interpolation_gradient_with_respect_to_position():
    video = torch.randn(1, 3, 6, 4, 4)
    positions = torch.tensor([[1.3, 2.7]], requires_grad=True)
    read_frames(video, positions).sum().backward()
    expected = torch.stack([video[0, :, 2] - video[0, :, 1], video[0, :, 3] - video[0, :, 2]]).sum(dim=(1, 2, 3))
    assert torch.allclose(positions.grad[0], expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_non_finite_positions_give_nan_not_an_index_error(mode):
    # Diverged weights give NaN positions: the read must not crash, and the NaN must reach the
    # output so the training loop sees a non-finite loss and skips the step.
    video = torch.rand(2, 3, 8, 4, 4)
    positions = torch.tensor([[0.0, float("nan"), 3.0], [1.0, 2.0, float("inf")]])
    frames = read_frames(video, positions, mode)
    assert frames.shape == (2, 3, 3, 4, 4)
    assert torch.isnan(frames[0, :, 1]).all() and torch.isfinite(frames[0, :, 0]).all()
    assert not torch.isfinite(frames[1, :, 2]).all()


def test_read_frames_positions_past_the_ends_and_non_finite_ones():
    from rdfer.model.sampler import read_frames

    video = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 1, 8, 2, 2).contiguous()  # frame i holds i
    for mode in ("linear", "nearest"):
        past = read_frames(video, torch.tensor([[7.0, 8.2, 11.0]]), mode)
        assert past[0, 0, :, 0, 0].tolist() == [7.0, 7.0, 7.0]  # the last frame, never an index out of range
        broken = read_frames(video, torch.tensor([[float("nan"), float("inf"), -float("inf"), 3.0]]), mode)
        assert not torch.isfinite(broken[0, 0, :3]).any()  # the NaN carries into the loss
        assert broken[0, 0, 3, 0, 0].item() == 3.0
    near_start = read_frames(video, torch.tensor([[0.25, 0.5]]), "linear")[0, 0, :, 0, 0]
    assert torch.allclose(near_start, torch.tensor([0.25, 0.5]))  # blends frames 0 and 1


def test_uniform_positions_follow_the_requested_dtype():
    from rdfer.model.sampler import uniform_positions

    out = uniform_positions(9, 5, 2, dtype=torch.float64)
    assert out.positions.dtype == out.mu.dtype == out.delta.dtype == torch.float64
    assert out.delta.tolist() == [2.0, 2.0] and out.positions[0].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
