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


# ---- scale jitter (issue 35): each training video zoomed in or out about its centre ----------


def _square_frame(size=16, inner=(6, 10), value=255, border=0):
    """uint8 (1, 3, 3, size, size): a centred square of ``value`` on 0, a 1-px frame of ``border``."""
    img = torch.zeros(size, size, dtype=torch.uint8)
    img[inner[0]:inner[1], inner[0]:inner[1]] = value
    if border:
        img[0, :] = img[-1, :] = img[:, 0] = img[:, -1] = border
    return img[None, None, None].expand(1, 3, 3, size, size).contiguous()


def test_zoom_factor_one_is_the_identity():
    from rdfer.data.transforms import zoom_videos

    video = _textured(b=3, t=4, size=24)
    assert torch.equal(zoom_videos(video, torch.ones(3)), video)
    # 1 among other factors: that video untouched, the others changed
    out = zoom_videos(video, torch.tensor([1.0, 1.3, 0.8]))
    assert torch.equal(out[0], video[0]) and not torch.equal(out[1], video[1]) and not torch.equal(out[2], video[2])
    assert out.dtype == torch.uint8 and out.shape == video.shape
    # no jitter: the training transform without augmentation is normalisation only
    torch.testing.assert_close(VideoBatchTransform(train=True, augment=False, scale_jitter=0.0)(video),
                               normalize_video(video))


def test_zoom_in_puts_the_centre_over_the_frame():
    from rdfer.data.transforms import zoom_videos

    video = _square_frame()  # white square on rows/columns 6..9 of 16
    out = zoom_videos(video, torch.tensor([2.0]))[0, 0, 0]  # the central 8x8 (rows 4..11) resized to 16x16
    assert (out[5:11, 5:11] == 255).all()  # twice the side: rows/columns 4..11, bilinear edges one pixel wide
    assert out[4, 8] == out[11, 8] == out[8, 4] == 191 and out[3, 8] == out[12, 8] == 64
    assert (out[:3] == 0).all() and (out[13:] == 0).all() and (out[:, :3] == 0).all() and (out[:, 13:] == 0).all()
    assert torch.equal(out, out.flip(0)) and torch.equal(out, out.flip(1))  # about the centre
    assert abs(float(out.float().sum()) / 255 - 64) < 2  # 4x4 px became 8x8


def test_zoom_out_shrinks_the_frame_and_pads_with_its_edge():
    from rdfer.data.transforms import zoom_videos

    video = _square_frame(border=100)
    out = zoom_videos(video, torch.tensor([0.5]))[0, 0, 0]  # the frame shrunk to 8x8 in the middle
    assert (out[7:9, 7:9] == 255).all()  # the 4 px square is now 2 px, still centred
    inside = out[5:11, 5:11].clone()
    inside[2:4, 2:4] = 0
    assert (inside == 0).all()
    # outside the shrunk frame: the frame's edge (100) repeated outwards
    assert (out[0] == 100).all() and (out[-1] == 100).all() and (out[:, 0] == 100).all() and (out[2, 2:14] == 100).all()


def test_scale_jitter_zooms_every_frame_of_a_video_alike():
    torch.manual_seed(0)
    video = _textured(b=6, t=5, size=32)  # every frame of a video is the same image
    out = VideoBatchTransform(train=True, augment=False, scale_jitter=0.5)(video)
    for v in out:
        for t in range(1, v.shape[1]):
            torch.testing.assert_close(v[:, t], v[:, 0], rtol=0, atol=0)
    assert len({tuple(v[:, 0].flatten()[::53].tolist()) for v in out}) == len(out)  # a zoom of its own each
    # with the usual augmentation on top, still one transform for the whole video
    out = VideoBatchTransform(train=True, scale_jitter=0.5)(video)
    for v in out:
        torch.testing.assert_close(v[:, -1], v[:, 0], rtol=0, atol=0)


def test_scale_jitter_reproducible_with_a_seeded_generator():
    from rdfer.data.transforms import draw_zoom

    video = _textured(b=8, t=2, size=32)

    def run(seed):
        tf = VideoBatchTransform(train=True, augment=False, scale_jitter=0.25, generator=torch.Generator().manual_seed(seed))
        return tf(video)

    assert torch.equal(run(7), run(7)) and not torch.equal(run(7), run(8))
    factors = draw_zoom(10_000, 0.25, torch.Generator().manual_seed(0))
    assert factors.min() >= 1 / 1.25 and factors.max() <= 1.25  # log-uniform: in and out alike
    assert abs(float(factors.log().mean())) < 0.01 and float(factors.max()) > 1.24 and float(factors.min()) < 1 / 1.24
    # evaluation never zooms, whatever the setting
    torch.testing.assert_close(VideoBatchTransform(train=False, scale_jitter=0.25)(video), normalize_video(video))


def test_scale_jitter_option_reaches_the_training_transform():
    from rdfer.cli import _train_config_from_args, build_parser
    from rdfer.engine.config import TrainConfig
    from rdfer.engine.train import batch_transform

    args = build_parser().parse_args(["train", "synthetic", "--scale-jitter", "0.25", "--no-augment"])
    vars(args).pop("debug", None)  # main()'s own option
    cfg = _train_config_from_args(args)
    assert cfg.scale_jitter == 0.25 and cfg.augment is False
    tf = batch_transform(True, cfg.augment, cfg.scale_jitter)
    assert tf.train_mode and tf.scale_jitter == 0.25 and not tf.augment  # the zoom without the other augmentation
    assert not batch_transform(False, True, 0.25).train_mode and not batch_transform(True, False, 0.0).train_mode
    assert TrainConfig().scale_jitter == 0.0  # off unless asked (or a recipe sets it)
    with pytest.raises(ValueError, match=r"^--scale-jitter must be in \[0, 1\], got 1\.5$"):
        TrainConfig(scale_jitter=1.5)


def test_the_model_card_names_the_scale_jitter():
    from rdfer.engine.model_card import _recipe_rows

    rows = dict((k, v) for k, v in _recipe_rows({"augment": False, "scale_jitter": 0.25}, {}, {}))
    assert rows["augmentation"] == "off, scale jitter 0.25"
    assert dict((k, v) for k, v in _recipe_rows({"augment": True}, {}, {}))["augmentation"] == "on"
