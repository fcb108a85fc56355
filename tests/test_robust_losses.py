"""The robust rules beyond the paper (issue 14) on hand-made cases with known answers: per-class
quantiles, vote-gated small loss, hard = disagreement and high loss, consensus, GCE, history."""

import math

import pytest
import torch

from rdfer.losses import (ALL_STRATEGIES, CORRECTING_STRATEGIES, list_strategies, HARD, NOISY, ORDINARY, ROBUST_STRATEGIES, STRATEGIES, AgreementLoss,
                          SPLIT_STRATEGIES, TWO_NETWORK_STRATEGIES, class_quantile, flags_for_strategy)


def test_strategy_lists():
    assert STRATEGIES == ("ce", "bigloss_up", "bigloss_down", "hard_up", "noisy_down", "agreement")  # Table IV, unchanged
    assert ALL_STRATEGIES == (STRATEGIES + ROBUST_STRATEGIES + CORRECTING_STRATEGIES + SPLIT_STRATEGIES
                              + TWO_NETWORK_STRATEGIES)
    assert tuple(list_strategies()[: len(ALL_STRATEGIES)]) == ALL_STRATEGIES  # the registry holds them
    from rdfer import cli

    assert cli._STRATEGIES == ALL_STRATEGIES  # the CLI's torch-free copy agrees
    from rdfer.engine.config import TrainConfig

    assert cli._DEFAULT_STRATEGY == TrainConfig().strategy == AgreementLoss(1).strategy


def test_class_quantile_hand_case():
    values = torch.tensor([3.0, 1.0, 2.0, 10.0, 5.0, 7.0])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    q = class_quantile(values, labels)
    assert torch.allclose(q, torch.tensor([1.0, 1 / 3, 2 / 3, 1.0, 0.5, 1.0]))
    # Ties keep index order.
    assert class_quantile(torch.zeros(4), torch.zeros(4, dtype=torch.long)).tolist() == [0.25, 0.5, 0.75, 1.0]


def test_class_quantile_of_integer_values_and_many_ties():
    # Integer values (counts) still give fractional quantiles.
    assert class_quantile(torch.tensor([3, 1, 2]), torch.zeros(3, dtype=torch.long)).tolist() == pytest.approx(
        [1.0, 1 / 3, 2 / 3])
    # Ties keep index order at any size (torch's default sort is not stable from ~100 elements on).
    n = 300
    q = class_quantile(torch.zeros(n), torch.zeros(n, dtype=torch.long))
    assert torch.allclose(q, torch.arange(1, n + 1).float() / n)


def _long_tail_case():
    """20 samples: 16 of class 0 (low loss, 2 with the highest class-0 loss), 4 of rare class 1
    (all with higher loss than any class-0 sample, as a model biased to the head class gives)."""
    labels = torch.tensor([0] * 16 + [1] * 4)
    loss = torch.cat([torch.linspace(0.1, 1.0, 16), torch.tensor([2.0, 2.1, 2.2, 2.3])])
    return labels, loss


def test_class_small_loss_spares_the_rare_class():
    labels, loss = _long_tail_case()
    n = labels.numel()
    ones = torch.ones(n)
    # The small-loss trick flags the top 20% by loss: all four rare samples.
    down = flags_for_strategy("bigloss_down", ones, loss, ones, 0.2, 0.2, mode_class=labels, labels=labels)
    assert (down == NOISY).nonzero().squeeze(1).tolist() == [16, 17, 18, 19]
    # Ranked within each class: quantile 1 of both classes (19, then 15: ties by loss), then
    # class 0's 15/16 and 14/16 (13, 14) before class 1's 3/4: one rare sample flagged, not four.
    # (The clip vote, all head class as a biased model gives, plays no part: the *labelled* class counts.)
    head = torch.zeros_like(labels)
    cls = flags_for_strategy("class_small_loss", ones, loss, ones, 0.2, 0.2, mode_class=head, labels=labels)
    assert (cls == NOISY).nonzero().squeeze(1).tolist() == [13, 14, 15, 19]


def test_vote_small_loss_needs_agreeing_clips_against_the_label():
    # index:          0     1     2     3     4     5     6     7     8     9
    agreement = torch.tensor([1.0, 1.0, 0.75, 0.5, 1.0, 0.25, 1.0, 1.0, 0.75, 1.0])
    loss = torch.tensor([5.0, 4.0, 3.0, 9.0, 8.0, 7.0, 0.1, 0.2, 0.3, 0.4])
    labels = torch.zeros(10, dtype=torch.long)
    mode = torch.tensor([1, 1, 2, 3, 0, 4, 1, 0, 0, 0])  # 4 agrees with the label; 3 and 5 disagree among clips
    args = (agreement, loss, torch.ones(10))
    flags = flags_for_strategy("vote_small_loss", *args, 0.2, 0.2, mode_class=mode, labels=labels)
    # Eligible: agreement >= 0.75 and mode != label -> 0, 1, 2, 6; by loss: 0 (5.0), 1 (4.0).
    assert (flags == NOISY).nonzero().squeeze(1).tolist() == [0, 1]
    assert (flags == HARD).sum() == 0
    # Only as many as are eligible, never more.
    few = flags_for_strategy("vote_small_loss", *args, 0.2, 0.9, mode_class=mode, labels=labels)
    assert (few == NOISY).nonzero().squeeze(1).tolist() == [0, 1, 2, 6]


def test_hard_disagree_and_consensus():
    agreement = torch.tensor([0.5, 0.25, 0.5, 1.0, 1.0, 1.0, 0.75, 1.0, 0.5, 1.0])
    loss = torch.tensor([0.2, 3.0, 2.0, 9.0, 8.0, 0.5, 0.4, 0.3, 0.1, 0.2])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    mode = torch.tensor([1, 2, 0, 2, 0, 1, 1, 1, 1, 1])
    args = (agreement, loss, torch.ones(10))
    hard = flags_for_strategy("hard_disagree", *args, 0.2, 0.1, mode_class=mode, labels=labels)
    # Disagreeing clips (agreement < 0.75): 0, 1, 2, 8; the two of highest loss: 1 and 2.
    assert (hard == HARD).nonzero().squeeze(1).tolist() == [1, 2]
    assert (hard == NOISY).sum() == 0
    both = flags_for_strategy("consensus", *args, 0.2, 0.1, mode_class=mode, labels=labels)
    # NOISY candidates: agreeing clips against the label: 3 (class 0) and 4 (class 1); both are
    # their class's top loss (quantile 1), the tie goes to the higher loss (3); one slot (0.1 N).
    assert (both == NOISY).nonzero().squeeze(1).tolist() == [3]
    assert (both == HARD).nonzero().squeeze(1).tolist() == [1, 2]
    for given in ({}, {"mode_class": mode}, {"labels": labels}):  # either one missing is an error
        with pytest.raises(ValueError, match="^strategy 'consensus' needs mode_class and labels$"):
            flags_for_strategy("consensus", *args, 0.2, 0.1, **given)


def test_vote_small_loss_ranks_by_loss_and_consensus_by_class_quantile():
    # Two agreeing mismatches: 0 (class 0, loss 5, but class 0 holds higher losses: quantile 2/3)
    # and 3 (class 1, loss 3, its class's highest: quantile 1). One NOISY slot (0.2 N, N = 5).
    agreement = torch.tensor([1.0, 0.5, 0.5, 1.0, 0.5])
    loss = torch.tensor([5.0, 8.0, 9.0, 3.0, 1.0])
    labels = torch.tensor([0, 0, 0, 1, 1])
    mode = torch.tensor([2, 0, 0, 2, 1])
    args = (agreement, loss, torch.ones(5), 0.0, 0.2)
    by_loss = flags_for_strategy("vote_small_loss", *args, mode_class=mode, labels=labels)
    by_quantile = flags_for_strategy("consensus", *args, mode_class=mode, labels=labels)
    assert (by_loss == NOISY).nonzero().squeeze(1).tolist() == [0]
    assert (by_quantile == NOISY).nonzero().squeeze(1).tolist() == [3]


def test_hard_disagree_keeps_index_order_among_ties_at_scale():
    n = 400
    loss = torch.arange(n).remainder(3).float()  # three values, many exact ties
    flags = flags_for_strategy("hard_disagree", torch.full((n,), 0.5), loss, torch.ones(n), 0.25, 0.0,
                               mode_class=torch.zeros(n, dtype=torch.long), labels=torch.zeros(n, dtype=torch.long))
    expected = sorted(range(n), key=lambda i: -loss[i].item())[:100]  # Python's sort is stable
    assert (flags == HARD).nonzero().squeeze(1).tolist() == sorted(expected)


def test_gce_loss_value_and_bounded_gradient():
    crit = AgreementLoss(2, strategy="gce", aux_weight=0.0, gce_q=0.7)
    logits = torch.zeros(2, 4, requires_grad=True)
    out = type("O", (), {"logits": logits, "clip_logits": torch.zeros(2, 4, 4)})()
    loss = crit(out, torch.tensor([0, 3]), torch.tensor([0, 1]))
    assert loss.item() == pytest.approx((1 - 0.25 ** 0.7) / 0.7, abs=1e-6)
    # A confidently wrong label: CE's gradient tends to 1 per logit, GCE's to 0 (why it is robust).
    wrong = torch.tensor([[12.0, 0.0, 0.0, 0.0]], requires_grad=True)
    out = type("O", (), {"logits": wrong, "clip_logits": torch.zeros(1, 4, 4)})()
    AgreementLoss(1, strategy="gce", aux_weight=0.0)(out, torch.tensor([3]), torch.tensor([0])).backward()
    assert wrong.grad.abs().max() < 1e-3
    assert not crit.active  # GCE flags nothing
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="gce_q"):
            AgreementLoss(2, gce_q=bad)
    assert AgreementLoss(2, gce_q=1.0).gce_q == 1.0  # q = 1: the MAE-like end of the range
    # Class weights scale each sample's GCE.
    w = torch.tensor([1.0, 1.0, 1.0, 4.0])
    weighted = AgreementLoss(2, strategy="gce", aux_weight=0.0, gce_q=0.7, class_weight=w)
    out = type("O", (), {"logits": torch.zeros(2, 4), "clip_logits": torch.zeros(2, 4, 4)})()
    assert weighted(out, torch.tensor([0, 3]), torch.tensor([0, 1])).item() == pytest.approx(
        (1 + 4) / 2 * (1 - 0.25 ** 0.7) / 0.7, abs=1e-6)


def test_memory_momentum_blends_losses_across_epochs():
    crit = AgreementLoss(3, strategy="bigloss_down", memory_momentum=0.25, label_smoothing=0.0)
    target, index = torch.tensor([0, 0]), torch.tensor([0, 2])

    def feed(logit0):
        logits = torch.tensor([[logit0, 0.0], [0.0, 0.0]])
        out = type("O", (), {"logits": logits, "clip_logits": logits.unsqueeze(1).repeat(1, 4, 1)})()
        crit(out, target, index)
        return -torch.log_softmax(logits, 1)[:, 0]

    first = feed(2.0)
    assert torch.allclose(crit.mem_loss[[0, 2]], first)  # first sight: the value itself
    second = feed(-2.0)
    assert torch.allclose(crit.mem_loss[[0, 2]], 0.25 * first + 0.75 * second)
    assert crit.mem_loss[1] == 0 and crit.mem_stamp[1] == 0
    with pytest.raises(ValueError, match="memory_momentum"):
        AgreementLoss(3, memory_momentum=1.0)


@pytest.mark.parametrize("strategy", ROBUST_STRATEGIES)
def test_every_robust_strategy_trains_through_agreement_loss(strategy):
    torch.manual_seed(0)
    n, k = 12, 3
    crit = AgreementLoss(n, strategy=strategy, start_epoch=1)
    logits = torch.randn(n, k, requires_grad=True)
    clip_logits = torch.randn(n, 4, k, requires_grad=True)
    out = type("O", (), {"logits": logits, "clip_logits": clip_logits})()
    labels = torch.arange(n) % k
    crit(out, labels, torch.arange(n)).backward()
    assert logits.grad.abs().sum() > 0 and clip_logits.grad.abs().sum() > 0
    flags = crit.step_epoch()
    counts = {f: int((flags == f).sum()) for f in (ORDINARY, HARD, NOISY)}
    assert counts[NOISY] <= round((0.5 if strategy == "clip_vote" else 0.1) * n) and counts[HARD] <= round(0.2 * n)
    if strategy == "gce":
        assert counts[HARD] == counts[NOISY] == 0
    loss = crit(out, labels, torch.arange(n))
    assert math.isfinite(loss.item()) and torch.equal(crit.last_flags, flags)


def test_clip_vote_flags_every_agreeing_mismatch_up_to_a_cap():
    # index:          0     1     2     3     4     5     6     7     8     9
    agreement = torch.tensor([1.0, 1.0, 0.75, 0.5, 1.0, 0.25, 1.0, 1.0, 0.75, 1.0])
    loss = torch.tensor([5.0, 4.0, 3.0, 9.0, 8.0, 7.0, 0.1, 0.2, 0.3, 0.4])
    labels = torch.zeros(10, dtype=torch.long)
    mode = torch.tensor([1, 1, 2, 3, 0, 4, 1, 0, 0, 0])
    args = (agreement, loss, torch.ones(10))
    # t_noisy plays no part: all four agreeing mismatches (0, 1, 2, 6) are NOISY, not 0.1 N = 1.
    flags = flags_for_strategy("clip_vote", *args, 0.2, 0.1, mode_class=mode, labels=labels)
    assert (flags == NOISY).nonzero().squeeze(1).tolist() == [0, 1, 2, 6]
    # HARD as hard_disagree: the disagreeing clips (3, 5) by loss, 0.2 N = 2 of them.
    assert (flags == HARD).nonzero().squeeze(1).tolist() == [3, 5]
    # Every sample an agreeing mismatch: the default cap, half the set, by loss.
    everyone = flags_for_strategy("clip_vote", torch.ones(10), loss, torch.ones(10), 0.0, 0.1,
                                  mode_class=labels + 1, labels=labels)
    assert (everyone == NOISY).nonzero().squeeze(1).tolist() == [0, 1, 3, 4, 5]  # losses 9, 8, 7, 5, 4
    # The cap: 0.2 N = 2, the highest losses first.
    capped = flags_for_strategy("clip_vote", *args, 0.2, 0.1, mode_class=mode, labels=labels, noisy_max=0.2)
    assert (capped == NOISY).nonzero().squeeze(1).tolist() == [0, 1]
    # A clean set (every vote agrees with its label) has no NOISY at all.
    clean = flags_for_strategy("clip_vote", *args, 0.2, 0.1, mode_class=labels, labels=labels)
    assert (clean == NOISY).sum() == 0
    # Through the loss: noisy_max reaches the flags.
    crit = AgreementLoss(10, strategy="clip_vote", noisy_max=0.2, noisy_class_guard=0.0)
    assert crit._strategy_flags(agreement, loss, torch.ones(10), mode, labels).eq(capped).all()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="noisy_max"):
            AgreementLoss(10, noisy_max=bad)
    assert AgreementLoss(10, noisy_max=0.0).noisy_max == 0.0 and AgreementLoss(10, noisy_max=1.0).noisy_max == 1.0


def test_logit_adjustment_loss_value_and_balanced_optimum():
    prior = torch.tensor([0.75, 0.25])
    crit = AgreementLoss(2, strategy="ce", aux_weight=0.0, label_smoothing=0.0, logit_adjustment=1.0, class_prior=prior)
    out = type("O", (), {"logits": torch.zeros(2, 2), "clip_logits": torch.zeros(2, 4, 2)})()
    # Zero logits + log prior: the loss is -log(prior[y]).
    assert crit(out, torch.tensor([0, 1]), torch.tensor([0, 1])).item() == pytest.approx(
        -(math.log(0.75) + math.log(0.25)) / 2, abs=1e-6)
    # tau = 0.5 halves the offset; a float64 prior still gives a float32 buffer.
    half = AgreementLoss(1, strategy="ce", aux_weight=0.0, label_smoothing=0.0, logit_adjustment=0.5,
                         class_prior=prior.double())
    assert torch.allclose(half.logit_offset, 0.5 * prior.log()) and half.logit_offset.dtype == torch.float32
    assert half.logit_adjustment == 0.5 and AgreementLoss(1).logit_offset is None
    # Fitting one input whose labels are 3:1 (the prior): plain CE learns the 3:1 odds, the
    # adjusted loss learns even raw logits (the class-balanced score).
    for tau, expected in ((0.0, math.log(3)), (1.0, 0.0)):
        w = torch.zeros(2, requires_grad=True)
        c = AgreementLoss(4, strategy="ce", aux_weight=0.0, label_smoothing=0.0, logit_adjustment=tau,
                          class_prior=prior if tau else None)
        opt = torch.optim.SGD([w], lr=1.0)
        for _ in range(300):
            opt.zero_grad()
            logits = w.expand(4, 2)
            c(type("O", (), {"logits": logits, "clip_logits": logits.unsqueeze(1)})(), torch.tensor([0, 0, 0, 1]),
              torch.arange(4)).backward()
            opt.step()
        assert (w[0] - w[1]).item() == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match=r"^logit_adjustment needs class_prior \(the training labels' class frequencies\)$"):
        AgreementLoss(2, logit_adjustment=1.0)


def test_logit_adjustment_and_noisy_max_from_the_command_line():
    from rdfer.cli import _train_config_from_args, build_parser
    from rdfer.engine.train import _class_prior

    args = build_parser().parse_args(["train", "synthetic", "--strategy", "clip_vote", "--noisy-max", "0.3",
                                      "--logit-adjustment", "1"])
    vars(args).pop("debug", None)  # main()'s own option
    cfg = _train_config_from_args(args)
    assert (cfg.strategy, cfg.noisy_max, cfg.logit_adjustment) == ("clip_vote", 0.3, 1.0)
    # An empty class gets the largest class's prior, never a tiny one (a class it never saw
    # would otherwise win at test time: its raw logit is left untrained and high).
    assert _class_prior(torch.tensor([1.0, 0.0, 3.0, 0.0])).tolist() == [0.25, 0.75, 0.75, 0.75]


def test_training_run_uses_clip_vote_and_the_training_labels_prior(tmp_path):
    from conftest import tiny_config
    from rdfer.engine.checkpoint import latest_checkpoint, load_training_state
    from rdfer.engine.datasets import build_datasets, dataset_labels
    from rdfer.engine.train import train

    cfg = tiny_config(tmp_path / "run", epochs=2, strategy="clip_vote", noisy_max=0.25, logit_adjustment=0.5,
                      synthetic_distribution="long_tail")
    train(cfg)
    state = load_training_state(latest_checkpoint(cfg.out))["criterion"]
    counts = torch.bincount(dataset_labels(build_datasets(cfg)[0]), minlength=7).float()
    assert torch.allclose(state["logit_offset"], 0.5 * (counts / counts.sum()).clamp_min(1e-8).log())
    # The flags of the last epoch: at most noisy_max of the set NOISY, each an agreeing mismatch.
    flags = state["flags"]
    noisy = flags == NOISY
    assert 0 < int(noisy.sum()) <= round(0.25 * flags.numel())
    assert bool((state["mem_mode"][noisy] != state["mem_label"][noisy]).all())
    assert bool((state["mem_agreement"][noisy] >= 0.75).all())


def _remember(criterion, labels, votes, loss):
    """Fill the loss memory as a pass over the set would: clip votes all for ``votes``."""
    from rdfer.model.rdfer import RDFEROutput

    n, k = labels.numel(), 3
    clip_logits = torch.full((n, 4, k), -5.0)
    clip_logits[torch.arange(n), :, votes] = 5.0
    # Per-sample logits whose plain CE with the label is ``loss``: the label's logit set accordingly.
    logits = torch.zeros(n, k)
    logits[torch.arange(n), labels] = torch.log((k - 1) / (torch.exp(loss) - 1))
    out = RDFEROutput(logits, clip_logits, torch.zeros(n), torch.zeros(n), torch.zeros(n, 1), torch.zeros(n, 1),
                      torch.zeros(n, 0, k))
    criterion(out, labels, torch.arange(n))
    return criterion.step_epoch()


def test_class_guard_never_drops_a_class_the_model_does_not_recognise():
    # 10 samples of class 0, all voted 0 (learned); 3 of rare class 1, all voted 0 (not learned,
    # highest loss). Agreement flags the top 10% by loss among agreeing clips: class-1 samples.
    labels = torch.tensor([0] * 10 + [1] * 3)
    votes = torch.zeros(13, dtype=torch.long)
    loss = torch.cat([torch.linspace(0.1, 0.5, 10), torch.tensor([2.0, 2.5, 3.0])])
    plain = _remember(AgreementLoss(13, t_noisy=0.2, t_hard=0.0, noisy_class_guard=0.0), labels, votes, loss)
    assert (plain == NOISY).nonzero().squeeze(1).tolist() == [10, 11, 12]  # the whole rare class, dropped
    guarded = AgreementLoss(13, t_noisy=0.2, t_hard=0.0, noisy_class_guard=0.5)
    flags = _remember(guarded, labels, votes, loss)
    assert guarded.class_recall(2).tolist() == [1.0, 0.0]
    assert not (flags == NOISY).any()  # class 1 is not recognised: its samples are kept
    # Once class 1 is recognised (2 of 3 voted 1), its remaining contradicted sample may be flagged.
    votes = torch.tensor([0] * 10 + [1, 1, 0])
    loss = torch.cat([torch.linspace(0.1, 0.5, 10), torch.tensor([0.2, 0.3, 3.0])])
    guarded = AgreementLoss(13, t_noisy=0.1, t_hard=0.0, noisy_class_guard=0.5)
    flags = _remember(guarded, labels, votes, loss)
    assert guarded.class_recall(2).tolist() == pytest.approx([1.0, 2 / 3])
    assert (flags == NOISY).nonzero().squeeze(1).tolist() == [12]


def test_class_guard_bounds_and_flag():
    with pytest.raises(ValueError, match="noisy_class_guard must be in"):
        AgreementLoss(4, noisy_class_guard=1.5)
    from rdfer.cli import _train_config_from_args, build_parser

    args = build_parser().parse_args(["train", "synthetic", "--noisy-class-guard", "0.5"])
    vars(args).pop("debug", None)
    assert _train_config_from_args(args).noisy_class_guard == 0.5


def test_logit_adjustment_auto_resolves_from_the_class_counts():
    from rdfer.engine.config import IMBALANCE_RATIO, TrainConfig, resolve_logit_adjustment

    assert IMBALANCE_RATIO == 3.0
    assert resolve_logit_adjustment("auto", [30, 10, 12]) == 1.0  # 3x: imbalanced
    assert resolve_logit_adjustment("auto", [29, 10, 12]) == 0.0
    assert resolve_logit_adjustment("auto", [40, 0, 20]) == 1.0  # an empty class counts: infinitely rare
    assert resolve_logit_adjustment("auto", [0, 0]) == 0.0
    assert resolve_logit_adjustment(0.5, [100, 1]) == 0.5  # a number is used as given
    assert TrainConfig(logit_adjustment="auto").logit_adjustment == "auto"
    with pytest.raises(ValueError, match="--logit-adjustment must be"):
        TrainConfig(logit_adjustment="sometimes")
    from rdfer.cli import _train_config_from_args, build_parser

    args = build_parser().parse_args(["train", "synthetic", "--logit-adjustment", "auto"])
    vars(args).pop("debug", None)
    assert _train_config_from_args(args).logit_adjustment == "auto"


@pytest.mark.parametrize("distribution, tau", [("long_tail", 1.0), ("uniform", 0.0)])
def test_logit_adjustment_auto_in_a_training_run(tmp_path, capsys, distribution, tau):
    from conftest import tiny_config
    from rdfer.engine.train import train

    results = train(tiny_config(tmp_path, epochs=1, noise_rate=0.0, synthetic_distribution=distribution,
                                logit_adjustment="auto"))
    assert results["logit_adjustment"] == tau
    assert ("logit adjustment on, tau 1" in capsys.readouterr().out) == bool(tau)
