"""Two networks (coteaching, dividemix), mixup with any rule, and the learnt clean / hard / noisy
split (agreement_gmm): hand-computed cases, then the engine end to end (save, load, eval, predict,
export, resume, torchrun, the divergence guard)."""

import json
import os
import subprocess
import sys
from typing import NamedTuple, Optional

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

import rdfer
from conftest import GN_OPTIONS, REPO, assert_resume_is_bit_identical, tiny_config
from data_trees import write_video
from rdfer.engine.train import train
from rdfer.losses import HARD, NOISY, ORDINARY, AgreementLoss, PairLoss, create_strategy
from rdfer.losses.agreement_gmm import CLEAN_GROUP, HARD_GROUP, NOISY_GROUP, class_group_probability
from rdfer.losses.mixing import Mix, draw_mix, mix_inputs
from rdfer.losses.mixture import sharpen
from rdfer.model import NetworkPair, PairOutput


class Out(NamedTuple):
    logits: torch.Tensor
    clip_logits: torch.Tensor
    glimpse_logits: Optional[torch.Tensor] = None


class TableNet(nn.Module):
    """A user's own model: one row of logits per training sample (the sample's index is written in
    the input), so a gradient shows which samples a network learnt from."""

    def __init__(self, n: int, k: int, seed: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(n, k, generator=torch.Generator().manual_seed(seed)))

    def forward(self, video):
        logits = self.table[video[:, 0].round().long()]
        return Out(logits, logits.unsqueeze(1).repeat(1, 2, 1))


def _criterion(n, k, strategy="ce", **kw):
    return dict(num_samples=n, num_classes=k, strategy=strategy, label_smoothing=0.0, aux_weight=0.0, **kw)


# -- mixup -------------------------------------------------------------------------------


def test_mix_draw_and_inputs():
    assert draw_mix(0.0, 4, torch.device("cpu")) is None
    torch.manual_seed(0)
    lams = [draw_mix(1.0, 4, torch.device("cpu")).lam for _ in range(50)]
    assert all(0.5 <= lam <= 1.0 for lam in lams) and len(set(lams)) > 40  # the own sample always dominates
    x = torch.tensor([[1.0], [2.0], [4.0]])
    mixed = mix_inputs(x, Mix(torch.tensor([2, 0, 1]), 0.75))
    assert torch.allclose(mixed, torch.tensor([[0.75 + 1.0], [1.5 + 0.25], [3.0 + 0.5]]))


def test_mixup_loss_mixes_targets_and_weights():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    out = Out(logits, logits.unsqueeze(1))
    target, index = torch.tensor([0, 1, 2]), torch.arange(3)
    mix = Mix(torch.tensor([1, 2, 0]), 0.7)
    crit = AgreementLoss(**_criterion(3, 3))
    loss = crit(out, target, index, mix)
    ce = lambda y: F.cross_entropy(logits, y, reduction="none")
    expected = (0.7 * ce(target) + 0.3 * ce(target[mix.perm])).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # A NOISY partner (weight 0) adds nothing: the mix carries the flags' weights too.
    rule = AgreementLoss(**_criterion(3, 3, strategy="bigloss_down", t_noisy=0.34))
    rule.step_epoch()  # nothing remembered yet: every sample ordinary
    rule.flags[2] = NOISY
    got = rule.sample_losses(out, target, index, mix)
    assert got[1].item() == pytest.approx((0.7 * ce(target)[1]).item(), rel=1e-6)  # partner 2 is NOISY
    assert got[2].item() == pytest.approx((0.3 * ce(target[mix.perm])[2]).item(), rel=1e-6)  # itself NOISY


def test_mixup_step_mixes_the_inputs():
    net = TableNet(4, 3, 0)
    crit = AgreementLoss(**_criterion(4, 3, mixup=1.0))
    video = torch.arange(4.0).view(4, 1)
    torch.manual_seed(3)
    mix = draw_mix(1.0, 4, video.device)
    torch.manual_seed(3)
    seen = []
    out, loss = crit.step(lambda x: seen.append(x) or net(x), video, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    assert torch.allclose(seen[0], mix_inputs(video, mix))
    with pytest.raises(ValueError, match="mixup must be >= 0"):
        AgreementLoss(**_criterion(4, 3, mixup=-1.0))


# -- agreement_gmm ---------------------------------------------------------------------------


def _three_groups(n_clean=30, n_hard=10, n_noisy=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    loss = torch.cat([0.1 + 0.05 * torch.rand(n_clean, generator=g), 1.5 + 0.3 * torch.rand(n_hard, generator=g),
                      2.5 + 0.3 * torch.rand(n_noisy, generator=g)])
    against = torch.cat([torch.zeros(n_clean), 0.25 * (torch.rand(n_hard, generator=g) > 0.5).float(),
                         torch.ones(n_noisy)])
    truth = torch.cat([torch.full((n_clean,), CLEAN_GROUP), torch.full((n_hard,), HARD_GROUP),
                       torch.full((n_noisy,), NOISY_GROUP)])
    return loss, against, truth


def test_three_group_mixture_recovers_clean_hard_noisy_per_class():
    loss_a, against_a, truth_a = _three_groups(seed=0)
    loss_b, against_b, truth_b = _three_groups(20, 5, 15, seed=1)
    loss_b = loss_b + 1.0  # another class, all of its losses higher: ranked within its own class
    loss, against = torch.cat([loss_a, loss_b]), torch.cat([against_a, against_b])
    labels = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(40, dtype=torch.long)])
    probs = class_group_probability(loss, against, labels)
    assert probs.shape == (90, 3) and torch.allclose(probs.sum(1), torch.ones(90))
    assert torch.equal(probs.argmax(1), torch.cat([truth_a, truth_b]))
    small = class_group_probability(loss[:5], against[:5], labels[:5])  # below min_class_size: all clean
    assert torch.equal(small[:, CLEAN_GROUP], torch.ones(5))


def test_agreement_gmm_flags_and_weights():
    loss, against, truth = _three_groups()
    labels = torch.zeros(50, dtype=torch.long)
    mode = torch.where(against > 0, 1, 0)  # the vote: another class where the clips agree against the label
    agreement = torch.where(against > 0, against, torch.full_like(against, 0.5))
    crit = AgreementLoss(**_criterion(50, 3, strategy="agreement_gmm"))
    flags = rdfer.losses.flags_for_strategy("agreement_gmm", agreement, loss, agreement, 0.2, 0.1, mode_class=mode,
                                            labels=labels)
    expected = torch.tensor([ORDINARY, HARD, NOISY])[truth]
    assert torch.equal(flags, expected)
    assert crit.weights.tolist() == [1.0, 1.5, 0.0]  # HARD learnt more, NOISY not at all (the paper's weights)
    with pytest.raises(ValueError, match="threshold"):
        create_strategy("agreement_gmm", threshold=1.5)


# -- co-teaching ---------------------------------------------------------------------------


def _pair(n=4, k=3):
    return NetworkPair(TableNet(n, k, 0), TableNet(n, k, 1)).train()


def test_coteaching_each_network_learns_from_the_others_small_losses():
    pair = _pair()
    loss_pair = PairLoss(**_criterion(4, 3, strategy="coteaching", strategy_options={"forget_rate": 0.5,
                                                                                        "num_gradual": 0}))
    video, target, index = torch.arange(4.0).view(4, 1), torch.tensor([0, 1, 2, 0]), torch.arange(4)
    out, loss = loss_pair.step(pair, video, target, index)
    ce_a = F.cross_entropy(pair.networks[0].table, target, reduction="none")
    ce_b = F.cross_entropy(pair.networks[1].table, target, reduction="none")
    easy_a, easy_b = ce_a.argsort()[:2], ce_b.argsort()[:2]
    assert loss.item() == pytest.approx((ce_a[easy_b].mean() + ce_b[easy_a].mean()).item(), rel=1e-6)
    loss.backward()
    trained_a = pair.networks[0].table.grad.abs().sum(1) > 0
    trained_b = pair.networks[1].table.grad.abs().sum(1) > 0
    assert set(trained_a.nonzero().flatten().tolist()) == set(easy_b.tolist())  # A learnt B's easy samples
    assert set(trained_b.nonzero().flatten().tolist()) == set(easy_a.tolist())
    assert isinstance(out, PairOutput)
    rule = create_strategy("coteaching", forget_rate=0.2, num_gradual=4)
    assert [rule.rate(e) for e in (0, 2, 4, 9)] == [0.0, 0.1, 0.2, 0.2]  # Co-teaching's linear schedule


def test_coteaching_plus_exchanges_only_disagreements():
    pair = _pair()
    with torch.no_grad():  # the networks agree on samples 0 and 1, disagree on 2 and 3
        pair.networks[0].table.copy_(torch.tensor([[5.0, 0, 0], [0, 5, 0], [5, 0, 0], [0, 5, 0]]))
        pair.networks[1].table.copy_(torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [0, 0, 5]]))
    loss_pair = PairLoss(**_criterion(4, 3, strategy="coteaching", start_epoch=0,
                                      strategy_options={"forget_rate": 0.0, "plus": "true"}))
    _, loss = loss_pair.step(pair, torch.arange(4.0).view(4, 1), torch.tensor([0, 1, 2, 0]), torch.arange(4))
    loss.backward()
    for net in pair.networks:
        assert (net.table.grad.abs().sum(1) > 0).tolist() == [False, False, True, True]


# -- DivideMix ---------------------------------------------------------------------------


def test_dividemix_targets_come_from_the_other_networks_division():
    loss_pair = PairLoss(**_criterion(4, 3, strategy="dividemix", strategy_options={"divide": "agreement_gmm"}))
    first, second = loss_pair.criteria
    first.labelled_prob.copy_(torch.tensor([0.9, 0.9, 0.1, 0.1]))  # network 1's division: network 2 learns from it
    second.labelled_prob.copy_(torch.tensor([0.8, 0.2, 0.8, 0.2]))
    second.hard_prob.copy_(torch.tensor([0.0, 0.0, 0.9, 0.0]))
    probs = [torch.tensor([[0.6, 0.3, 0.1]] * 4), torch.tensor([[0.2, 0.2, 0.6]] * 4)]
    target = torch.tensor([1, 1, 1, 1])
    goals, labelled, weight = loss_pair.rule.division_targets(loss_pair, probs, target, torch.arange(4))
    assert labelled[0].tolist() == [True, False, True, False]  # network 1 follows network 2's division
    assert labelled[1].tolist() == [True, True, False, False]
    onehot = torch.tensor([0.0, 1.0, 0.0])
    refined = sharpen(0.8 * onehot + 0.2 * probs[0][0], 0.5)  # co-refinement: the label and its own prediction
    guess = sharpen((probs[0][0] + probs[1][0]) / 2, 0.5)  # co-guessing: both networks
    assert torch.allclose(goals[0][0], refined) and torch.allclose(goals[0][1], guess)
    assert weight[0].tolist() == [1.0, 1.0, 1.5, 1.0]  # the other's hard group weighs lambda_hard
    assert weight[1].tolist() == [1.0, 1.0, 1.0, 1.0]


def test_dividemix_division_at_epoch_end_splits_the_high_losses():
    n = 40
    crit = AgreementLoss(**_criterion(n, 3, strategy="dividemix"))
    loss = torch.cat([torch.full((30,), 0.1), torch.full((10,), 3.0)]) + 0.01 * torch.rand(n)
    logits = torch.zeros(n, 3)
    crit._remember(torch.arange(n), rdfer.losses.agreement_stats(logits.unsqueeze(1).repeat(1, 2, 1)), loss,
                   torch.zeros(n, dtype=torch.long))
    flags = crit.step_epoch()
    assert (flags == NOISY).tolist() == [False] * 30 + [True] * 10
    assert bool((crit.labelled_prob[:30] > 0.5).all()) and bool((crit.labelled_prob[30:] < 0.5).all())


# -- the pair model ------------------------------------------------------------------------


def test_network_pair_averages_and_selects(tmp_path):
    torch.manual_seed(0)
    a = rdfer.create_model("rdfer_small", num_classes=3, **GN_OPTIONS)
    b = rdfer.create_model("rdfer_small", num_classes=3, **GN_OPTIONS)
    pair = NetworkPair(a, b).eval()
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        la, lb, avg = a.eval()(video).logits, b.eval()(video).logits, pair(video)
    assert torch.allclose(avg.logits, (la + lb) / 2, atol=1e-6)
    assert pair.config["networks"] == 2 and pair.n_clips == a.n_clips
    pair.use = "second"
    with torch.no_grad():
        assert torch.allclose(pair(video).logits, lb)
    with pytest.raises(ValueError, match="network must be one of"):
        pair.use = "both"
    pair.use = "average"
    rdfer.save_model(pair, tmp_path / "model.safetensors")
    loaded = rdfer.load_model(tmp_path / "model.safetensors").eval()
    with torch.no_grad():
        assert isinstance(loaded, NetworkPair) and torch.allclose(loaded(video).logits, avg.logits, atol=1e-6)
        first = rdfer.load_model(tmp_path / "model.safetensors", network="first").eval()
        assert torch.allclose(first(video).logits, la, atol=1e-6)
    with pytest.raises(rdfer.engine.CheckpointError, match="networks: checkpoint 2 vs model 1"):
        rdfer.engine.checkpoint.load_weights(a, tmp_path / "model.safetensors")


# -- the engine ----------------------------------------------------------------------------


def test_train_dividemix_pair_end_to_end(tmp_path):
    run = tmp_path / "run"
    res = train(tiny_config(run, strategy="dividemix", epochs=3, mixup=0.5))
    state = load_file(str(run / "model.safetensors"))
    assert any(k.startswith("networks.0.") for k in state) and any(k.startswith("networks.1.") for k in state)
    model = rdfer.load_model(run)
    assert isinstance(model, NetworkPair) and model.data_config["num_frames"] == 8
    card = (run / "README.md").read_text()
    assert "two networks of this kind" in card and "mixup (alpha 0.5)" in card
    flags = (run / "train_flags.csv").read_text().splitlines()
    assert len(flags) == 49 and res["train_flags"]["noisy"] == sum(line.endswith(",noisy") for line in flags)
    common = ["--checkpoint", str(run), "synthetic", "--synthetic-train", "48", "--synthetic-test", "24"]
    video = write_video(tmp_path / "clip.mp4", 12, size=32)
    for cmd in (["eval", "--network", "first"] + common, ["audit"] + common, ["eval"] + common,
                ["predict", str(video), "--checkpoint", str(run), "--no-detect", "--network", "second", "--json"]):
        proc = subprocess.run([sys.executable, "-m", "rdfer", *cmd], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
    predicted = json.loads(proc.stdout.splitlines()[-1])  # the last command: predict, one JSON per video
    assert predicted["status"] == "ok" and predicted["emotion"] in model.data_config["classes"]
    assert (run / "audit_train" / "audit.md").is_file()
    one = json.loads((run / "eval_test" / "metrics.json").read_text())
    assert one["war"] == pytest.approx(res["test_last_epoch"]["war"])  # the default is the pair's average
    exported = rdfer.inference.export_model(model, tmp_path / "pair.pt", "torchscript", num_frames=8, image_size=32)
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(exported))(video)[0], model.eval()(video).logits, atol=1e-5)


def test_two_network_resume_is_bit_identical(tmp_path):
    assert_resume_is_bit_identical(tmp_path, strategy="coteaching", epochs=3, mixup=1.0,
                                   strategy_options={"num_gradual": 1})


def test_two_network_divergence_stops_unsaved(tmp_path):
    cfg = tiny_config(tmp_path, strategy="coteaching", lr=1e30, min_lr=1e30, epochs=3, max_bad_steps=2,
                      warmup_epochs=0)
    with pytest.raises(FloatingPointError):
        with pytest.warns(UserWarning, match="non-finite"):
            train(cfg)
    assert not (tmp_path / "model.safetensors").exists()


def test_dividemix_under_torchrun(tmp_path):
    out = tmp_path / "np2"
    opts = [f"--model-option={k}={json.dumps(v)}" for k, v in GN_OPTIONS.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rdfer", "train",
           "synthetic", "--synthetic-train", "32", "--synthetic-test", "16", "--noise-rate", "0.25", "--num-frames",
           "8", "--image-size", "32", "--epochs", "3", "--warmup-epochs", "1", "--batch-size", "8", "--workers", "0",
           "--no-augment", "--device", "cpu", "--quiet", "--strategy", "dividemix", "--out", str(out)] + opts
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert isinstance(rdfer.load_model(out), NetworkPair)
    # Both processes' memories were merged: every training video has a row.
    assert len((out / "train_flags.csv").read_text().splitlines()) == 33
    assert json.loads((out / "results.json").read_text())["test_last_epoch"]["num_samples"] == 16


def test_bad_mixup_and_rule_options_are_one_line_errors(tmp_path, capsys):
    from rdfer.cli import main

    for args, message in ((["--mixup", "-1"], "--mixup"), (["--strategy", "coteaching", "--strategy-option",
                                                           "forget_rate=1.5"], "forget_rate must be in [0, 1)"),
                          (["--strategy", "dividemix", "--strategy-option", "divide=votes"], "divide must be")):
        with pytest.raises(SystemExit) as exc:
            main(["train", "synthetic", "--out", str(tmp_path / "run"), *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "run").exists()  # refused before anything was written
