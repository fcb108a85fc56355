"""SyntheticDFER: determinism, exact label noise, ground truth, class balance, the preview grid."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import rdfer
from rdfer.data import ASYMMETRIC_NOISE, SyntheticDFER, render_preview


def test_items_follow_the_dataset_format():
    ds = SyntheticDFER(10, num_frames=12, image_size=32, seed=3)
    item = ds[4]
    assert item["video"].dtype == torch.uint8 and item["video"].shape == (3, 12, 32, 32)
    assert item["index"] == 4 and item["valid"] is True and item["path"] == "synthetic/00004"
    assert torch.equal(item["frame_index"], torch.arange(12))
    assert item["fps"] > 0 and item["label"] in range(7) and item["clean_label"] in range(7)
    gray = SyntheticDFER(2, num_frames=8, image_size=32, channels=1)[0]["video"]
    assert gray.shape == (1, 8, 32, 32)


def test_same_seed_same_videos_other_seed_other_videos():
    a = SyntheticDFER(6, num_frames=8, image_size=32, noise_rate=0.5, seed=7)
    b = SyntheticDFER(6, num_frames=8, image_size=32, noise_rate=0.5, seed=7)
    c = SyntheticDFER(6, num_frames=8, image_size=32, noise_rate=0.5, seed=8)
    for i in range(6):
        assert torch.equal(a[i]["video"], b[i]["video"])
    assert torch.equal(a.labels, b.labels) and torch.equal(a.key_windows, b.key_windows)
    assert not torch.equal(a[0]["video"], c[0]["video"])
    # Item order does not matter (workers render out of order): index 5 first gives the same video.
    d = SyntheticDFER(6, num_frames=8, image_size=32, noise_rate=0.5, seed=7)
    assert torch.equal(d[5]["video"], a[5]["video"])


@pytest.mark.parametrize("n,rate", [(100, 0.3), (37, 0.2), (7, 0.4), (50, 0.0), (20, 1.0)])
def test_exact_noise_count_and_noisy_means_label_differs(n, rate):
    ds = SyntheticDFER(n, num_frames=8, image_size=16, noise_rate=rate, seed=1)
    assert int(ds.is_noisy.sum()) == round(rate * n)
    assert torch.equal(ds.is_noisy, ds.labels != ds.clean_labels)
    for i in range(0, n, max(1, n // 5)):
        item = ds[i]
        assert item["is_noisy"] == (item["label"] != item["clean_label"])


def test_asymmetric_noise_follows_the_confusion_map():
    ds = SyntheticDFER(140, num_frames=8, image_size=16, noise_rate=0.5, noise="asymmetric", seed=2)
    assert int(ds.is_noisy.sum()) == 70
    for i in ds.is_noisy.nonzero().squeeze(1).tolist():
        clean = rdfer.EMOTIONS[int(ds.clean_labels[i])]
        assert rdfer.EMOTIONS[int(ds.labels[i])] == ASYMMETRIC_NOISE[clean]
    assert all(ASYMMETRIC_NOISE[c] != c for c in rdfer.EMOTIONS)


def test_hard_count_key_windows_inside_and_class_balance():
    n, t = 203, 16
    ds = SyntheticDFER(n, num_frames=t, image_size=16, hard_rate=0.2, seed=4)
    assert int(ds.is_hard.sum()) == round(0.2 * n)
    start, end = ds.key_windows[:, 0], ds.key_windows[:, 1]
    assert bool((start >= 0).all() and (end <= t).all() and (end - start >= 3).all())
    counts = torch.bincount(ds.clean_labels, minlength=7)
    assert int(counts.max() - counts.min()) <= 1  # balanced up to the remainder of n / 7
    for i in (0, 1, 2):
        assert tuple(ds[i]["key_window"]) == tuple(ds.key_windows[i].tolist())


def test_expression_lives_in_the_key_window():
    # The animated expression units of an ordinary video (no distractor) are zero outside its
    # key window and reach the prototype's scale at the apex; pixels also move from head drift,
    # so the check is on the units the renderer draws from.
    from rdfer.data.synthetic import PROTOTYPES, _units

    ds = SyntheticDFER(30, num_frames=24, image_size=32, hard_rate=0.0, distractor_rate=0.0, seed=5)
    checked = 0
    for i in range(30):
        plan = ds._plans[i]
        if plan.label == rdfer.EMOTIONS.index("neutral"):
            continue
        units, _ = _units(plan, 24, np.random.default_rng(0))
        start, end = plan.key_window
        outside = np.r_[0:start, end:24]
        assert np.abs(units[outside]).max(initial=0.0) == 0.0
        apex = np.abs(units[start:end]).max()
        assert apex >= 0.75 * np.abs(PROTOTYPES[plan.label]).max()
        checked += 1
    assert checked >= 20


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="noise_rate"):
        SyntheticDFER(4, noise_rate=1.5)
    with pytest.raises(ValueError, match="noise must be"):
        SyntheticDFER(4, noise="pairwise")
    with pytest.raises(ValueError, match="num_frames"):
        SyntheticDFER(4, num_frames=2)
    with pytest.raises(IndexError):
        SyntheticDFER(4, num_frames=8, image_size=16)[4]


def test_preview_png_opens(tmp_path):
    out = render_preview(tmp_path / "grid.png", image_size=32, num_frames=8)
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 8 * 32 and img.height > 7 * 32
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10  # faces were drawn, not a blank canvas


def test_synth_preview_cli(tmp_path):
    out = tmp_path / "hard.png"
    proc = subprocess.run([sys.executable, "-m", "rdfer", "synth-preview", "--out", str(out), "--hard",
                           "--image-size", "32", "--num-frames", "8"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    with Image.open(out) as img:
        assert img.format == "PNG"


def test_static_videos_show_the_expression_in_every_frame():
    from rdfer.data import SyntheticDFER

    static = SyntheticDFER(14, num_frames=8, image_size=32, seed=3, static=True, hard_rate=0.5, distractor_rate=1.0)
    dynamic = SyntheticDFER(14, num_frames=8, image_size=32, seed=3)
    assert not static.is_hard.any()  # hard videos and distractors are off whatever the rates say
    assert (static.key_windows == torch.tensor([0, 8])).all()
    assert all(static._plans[i].distractor is None for i in range(14))
    # The expression units are the apex's in every frame; a dynamic video ramps up from zero.
    from rdfer.data.synthetic import PROTOTYPES, _units

    for i in range(14):
        plan = static._plans[i]
        units, _ = _units(plan, 8, np.random.default_rng(0))
        assert np.allclose(units, plan.intensity * PROTOTYPES[plan.label][None], atol=1e-6)
        dyn_units, _ = _units(dynamic._plans[i], 8, np.random.default_rng(0))
        if dynamic._plans[i].label != 2 and dynamic._plans[i].distractor is None:  # neutral has no units
            assert np.abs(dyn_units[0]).sum() < np.abs(dyn_units).sum(1).max()
    assert "static=True" in repr(static)
