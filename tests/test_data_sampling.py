"""Frame sampling: hand-checked positions, ranges, monotonicity and short videos."""

import math

import pytest
import torch

from rdfer.data import eval_indices, sample_indices, train_indices


@pytest.mark.parametrize("n, t, expected", [
    (12, 4, [1, 4, 7, 10]),
    (3, 4, [0, 1, 1, 2]),
    (3, 8, [0, 0, 0, 1, 1, 2, 2, 2]),  # short clip: frames repeat, none dropped
    (8, 8, list(range(8))),
    (1, 3, [0, 0, 0]),
    (100, 2, [25, 75]),
])
def test_eval_indices_hand_cases(n, t, expected):
    assert eval_indices(n, t).tolist() == expected
    assert eval_indices(n, t).dtype == torch.long


@pytest.mark.parametrize("n, t", [(3, 8), (12, 4), (80, 16), (20, 64), (64, 64), (1, 5)])
def test_train_indices_in_segments_monotonic(n, t):
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = train_indices(n, t, g)
        assert idx.shape == (t,) and idx.dtype == torch.long
        assert 0 <= idx.min() and idx.max() < n
        assert (idx[1:] >= idx[:-1]).all()
        if n >= t:  # one frame from each of T equal segments
            seg = torch.arange(t)
            assert (idx >= (seg * n / t).floor()).all() and (idx < ((seg + 1) * n / t).ceil()).all()
    if n < t:  # every source frame of a short clip is still used
        assert set(train_indices(n, t, g).tolist()) == set(range(n))


def test_train_indices_three_frames_eight_samples():
    g = torch.Generator().manual_seed(1)
    seen = {tuple(train_indices(3, 8, g).tolist()) for _ in range(50)}
    for idx in seen:
        assert len(idx) == 8 and set(idx) == {0, 1, 2} and list(idx) == sorted(idx)
    assert len(seen) > 1  # jitter


def test_train_indices_jitter_and_reproducibility():
    a = train_indices(100, 8, torch.Generator().manual_seed(3))
    b = train_indices(100, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(4)
    assert len({tuple(train_indices(100, 8, g).tolist()) for _ in range(10)}) > 1


def test_sample_indices_dispatch_and_errors():
    assert torch.equal(sample_indices(12, 4, train=False), eval_indices(12, 4))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(sample_indices(30, 6, True, g1), train_indices(30, 6, g2))
    with pytest.raises(ValueError):
        eval_indices(0, 4)
    with pytest.raises(ValueError):
        train_indices(5, 0)


def test_indices_are_exact_for_very_long_videos():
    # float64 arithmetic: exact integer formulas even past float32's 2**24, where a float32
    # position would be off by a frame or more.
    n = 2**25 + 3
    assert eval_indices(n, 1).tolist() == [(n // 2)]
    assert eval_indices(n, 3).tolist() == [((2 * i + 1) * n) // 6 for i in range(3)]
    for t, seed in ((1, 0), (4, 7), (5, 8)):
        u = torch.rand(t, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
        expected = []
        for i in range(t):
            lo, hi = (i * n) // t, -((-(i + 1) * n) // t)  # floor(i n / T), ceil((i + 1) n / T)
            expected.append(lo + math.floor(u[i] * (hi - lo)))
        assert train_indices(n, t, torch.Generator().manual_seed(seed)).tolist() == expected, (t, seed)


def test_one_frame_and_clear_errors():
    assert eval_indices(5, 1).tolist() == [2] and train_indices(1, 1).tolist() == [0]
    assert 0 <= train_indices(5, 1).item() < 5
    with pytest.raises(ValueError, match="cannot sample from a video with 0 frames"):
        eval_indices(0, 4)
    with pytest.raises(ValueError, match="num_frames must be >= 1, got 0"):
        eval_indices(5, 0)
    with pytest.raises(ValueError, match="num_frames must be >= 1, got -2"):
        train_indices(5, -2)
