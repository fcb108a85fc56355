"""VideoBatchTransform: shapes, normalisation numbers, per-video (not per-frame) augmentation."""

import pytest
import torch

from rdfer.data import VideoBatchTransform, normalize_video
from rdfer.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _textured(b=2, t=4, size=32):
    """uint8 (B, 3, T, H, W): a gradient image (so crops and flips change pixels), same every frame."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    img = torch.stack([x * 7 % 256, y * 5 % 256, (x + y) * 3 % 256]).to(torch.uint8)  # (3, H, W)
    return img[None, :, None].expand(b, 3, t, size, size).contiguous()


@pytest.mark.parametrize("train", [False, True])
def test_shapes_and_dtype(train):
    video = _textured(2, 4, 24)
    out = VideoBatchTransform(train=train)(video)
    assert out.shape == video.shape and out.dtype == torch.float32


def test_normalisation_numbers_on_constant_video():
    video = torch.full((1, 3, 2, 4, 4), 128, dtype=torch.uint8)
    out = VideoBatchTransform(train=False)(video)
    for c in range(3):
        expected = (128 / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(out[0, c], torch.full((2, 4, 4), expected), rtol=0, atol=1e-6)
    zero = normalize_video(torch.zeros(1, 3, 1, 2, 2, dtype=torch.uint8))
    torch.testing.assert_close(zero[0, :, 0, 0, 0], -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))


def test_eval_is_deterministic_normalisation_only():
    video = _textured()
    tf = VideoBatchTransform(train=False)
    torch.testing.assert_close(tf(video), normalize_video(video))
    torch.testing.assert_close(tf(video), tf(video))


def test_single_channel_and_bad_shape():
    out = normalize_video(torch.full((1, 1, 2, 3, 3), 255, dtype=torch.uint8))
    m, s = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    torch.testing.assert_close(out, torch.full_like(out, (1 - m) / s))
    with pytest.raises(ValueError):
        VideoBatchTransform()(torch.zeros(3, 4, 8, 8, dtype=torch.uint8))


def test_train_augmentation_identical_for_all_frames_of_a_video():
    torch.manual_seed(0)
    video = _textured(b=6, t=5, size=32)  # every frame of a video is the same image
    out = VideoBatchTransform(train=True)(video)
    for v in out:
        for t in range(1, v.shape[1]):
            torch.testing.assert_close(v[:, t], v[:, 0], rtol=0, atol=0)


def test_train_augmentation_differs_between_videos():
    torch.manual_seed(0)
    video = _textured(b=6, t=2, size=32)  # six identical videos
    out = VideoBatchTransform(train=True)(video)
    distinct = {tuple(v[:, 0].flatten()[::97].tolist()) for v in out}
    assert len(distinct) == len(out)  # each video drew its own crop / flip / jitter
    assert not torch.allclose(out, normalize_video(video))
