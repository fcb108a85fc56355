"""The "keyinstance" locator (issue 24): pseudo-targets, hard reading around the centres, the L1
term, the locator warm-up, checkpoints."""

import pytest
import torch

import rdfer
from rdfer.model.sampler import keyinstance_positions, keyinstance_targets

SMALL = dict(d_model=32, summary_dim=8, num_glimpses=8)


def test_pseudo_targets_on_a_hand_made_glimpse_tensor():
    # 8 glimpses, 3 classes; the labelled class 2 is most probable at glimpses 6, 1 and 5 (in that order).
    logits = torch.zeros(1, 8, 3)
    logits[0, 6, 2], logits[0, 1, 2], logits[0, 5, 2] = 9.0, 8.0, 7.0
    logits[0, 3, 0] = 20.0  # class 0's evidence does not count for label 2
    targets = keyinstance_targets(logits, torch.tensor([2]), 3)
    assert torch.allclose(targets, torch.tensor([[1.5, 5.5, 6.5]]) / 8)  # cell centres (g + 0.5) / G, sorted
    assert torch.allclose(keyinstance_targets(logits, torch.tensor([0]), 1), torch.tensor([[3.5 / 8]]))


def test_positions_read_consecutive_frames_around_sorted_centres():
    # T = 32, n = 8, 2 centres: 4 frames each at stride max(1, round(0.25 * 31 / 7)) = 1.
    centres = torch.tensor([[0.75, 0.25]])
    pos = keyinstance_positions(centres, 32, 8)
    assert pos.tolist() == [[6.0, 7.0, 8.0, 9.0, 22.0, 23.0, 24.0, 25.0]]  # 7.75 and 23.25, +-1.5, rounded
    # At the ends they are pushed inside; at T = 65, n = 8 the stride is round(0.25 * 64 / 7) = 2.
    assert keyinstance_positions(torch.tensor([[0.0, 1.0]]), 32, 8).tolist() == [[0, 1, 2, 3, 28, 29, 30, 31]]
    assert keyinstance_positions(torch.tensor([[0.5]]), 65, 8).tolist() == [[25, 27, 29, 31, 33, 35, 37, 39]]


def test_the_loss_pulls_the_centres_toward_the_pseudo_targets():
    model = rdfer.wrap_with_rdfer("tiny_cnn", locator="keyinstance", num_centres=2, **SMALL)
    out = model(torch.rand(2, 3, 16, 32, 32))
    assert out.centres.shape == (2, 2) and out.glimpse_logits.shape == (2, 8, 7)
    assert out.positions.requires_grad is False  # hard indices: no gradient through the reading
    target = torch.tensor([1, 4])
    crit = rdfer.AgreementLoss(2, strategy="ce")
    with_l1 = crit.locator_loss(out.glimpse_logits, out.logits, target, out.centres)
    without = crit.locator_loss(out.glimpse_logits, out.logits, target)
    pseudo = keyinstance_targets(out.glimpse_logits, target, 2)
    l1 = (out.centres.sort(dim=1).values - pseudo).abs().mean(dim=1)
    assert torch.allclose(with_l1, without + l1)
    crit(out, target, torch.arange(2)).backward()
    assert model.sampler.centre_head.weight.grad.abs().sum() > 0


def test_untrained_centres_start_evenly_spread():
    model = rdfer.wrap_with_rdfer("tiny_cnn", locator="keyinstance", num_centres=4, **SMALL).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32, 32))
    assert torch.allclose(out.centres, torch.tensor([[0.125, 0.375, 0.625, 0.875]]), atol=0.02)


def test_bad_num_centres_is_refused():
    with pytest.raises(ValueError, match="num_centres dividing"):
        rdfer.wrap_with_rdfer("tiny_cnn", locator="keyinstance", num_centres=3, **SMALL)  # 16 frames read


def test_locator_warmup_reads_uniformly_in_training_only():
    model = rdfer.wrap_with_rdfer("tiny_cnn", locator="keyinstance", locator_warmup_epochs=2, **SMALL)
    video = torch.rand(2, 3, 32, 32, 32)
    uniform = rdfer.model.sampler.uniform_positions(32, 16, 2).positions
    model.set_epoch(1)
    out = model.train()(video)
    assert torch.allclose(out.positions, uniform) and out.centres.shape == (2, 4)  # the locator still learns
    with torch.no_grad():
        assert not torch.allclose(model.eval()(video).positions, uniform)  # evaluation reads where it points
    model.set_epoch(2)
    assert not torch.allclose(model.train()(video).positions, uniform)
    with pytest.raises(ValueError, match="locator_warmup_epochs"):
        rdfer.wrap_with_rdfer("tiny_cnn", locator_warmup_epochs=-1, **SMALL)


def test_keyinstance_trains_saves_and_loads(tmp_path):
    from conftest import tiny_config
    from rdfer.engine.train import train

    options = {**tiny_config(tmp_path).model_options, "locator": "keyinstance", "num_centres": 2,
               "locator_warmup_epochs": 1}
    train(tiny_config(tmp_path, model_options=options))
    model = rdfer.load_model(tmp_path)
    assert model.config["locator"] == "keyinstance" and model.locator_warmup_epochs == 1
    video = torch.rand(2, 3, 8, 32, 32)
    with torch.no_grad():
        a, b = model.eval()(video), rdfer.load_model(tmp_path).eval()(video)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.positions, b.positions)
    assert (a.positions == a.positions.round()).all()


def test_predict_reports_the_keyinstance_window(tmp_path):
    import numpy as np

    from conftest import tiny_config
    from rdfer.engine.train import train
    from rdfer.inference.predict import predict_video
    from test_inference import write_mp4

    options = {**tiny_config(tmp_path).model_options, "locator": "keyinstance", "num_centres": 4}
    train(tiny_config(tmp_path, epochs=1, model_options=options))
    model = rdfer.load_model(tmp_path)
    write_mp4(tmp_path / "clip.mp4", [np.full((40, 40, 3), 6 * i, np.uint8) for i in range(40)], fps=10)
    res = predict_video(tmp_path / "clip.mp4", model, detector=None)
    first, last = res.key_window_frames
    assert res.status == "ok" and 0 <= first <= last <= 39
    # 8 frames loaded, 4 centres reading 2 consecutive loaded frames each: the window is the span
    # of the frames read, in source frames and seconds.
    assert res.key_window_seconds == (first / 10, (last + 1) / 10)
