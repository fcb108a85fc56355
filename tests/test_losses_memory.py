"""AgreementLoss's per-sample memory in epoch scope, pinned on hand cases: what it stores (the
label, the clip vote, the unsmoothed loss) under which dataset index, and how the next epoch's
flags and weights follow from it."""

# These cases pin the paper's rule: noisy_class_guard=0.0 (issue 28 made 0.5 the default;
# tests/test_robust_losses.py covers the guard).

from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F

from rdfer.losses import HARD, NOISY, ORDINARY, AgreementLoss

Out = namedtuple("Out", "logits clip_logits")


def _agreeing_clips(votes, k=7, n=4):
    """(B, n, K) clip logits where every clip of sample i votes ``votes[i]`` confidently."""
    return F.one_hot(torch.tensor(votes), k).float().mul(5.0).unsqueeze(1).expand(-1, n, -1).clone()


# Four samples whose clips all agree (agreement 1.0):
#   sample 0: clips vote 2 = its label 2, but the video head says 0 -> the highest loss;
#   sample 1: clips vote 3, label 5 (a mismatch), loss second highest;
#   sample 2: clips vote 1 = label 1, lowest loss;
#   sample 3: clips vote 4, label 6 (a mismatch), loss third.
VOTES = [2, 3, 1, 4]
LABELS = [2, 5, 1, 6]


def _hand_case():
    clips, labels = _agreeing_clips(VOTES), torch.tensor(LABELS)
    # video-level logits: sample 0 says 0 strongly (loss 3.26), sample 1 says 4 mildly (2.17),
    # sample 2 says its label (0.26), sample 3 says 0 weakly (2.03)
    logits = torch.zeros(4, 7)
    logits[0, 0], logits[1, 4], logits[2, 1], logits[3, 0] = 3.0, 1.0, 3.0, 0.5
    return logits, clips, labels


def _batches():
    logits, clips, labels = _hand_case()
    # Two batches, out of index order, so the memory must be keyed by dataset index.
    for idx in ([2, 0], [3, 1]):
        i = torch.tensor(idx)
        yield Out(logits[i], clips[i]), labels[i], i


def _losses():
    logits, _, labels = _hand_case()
    return F.cross_entropy(logits, labels, reduction="none")


def test_hand_case_losses_rank_as_described():
    loss = _losses()
    assert loss.argsort(descending=True).tolist() == [0, 1, 3, 2]


def test_epoch_memory_stores_label_vote_and_plain_loss_by_index():
    crit = AgreementLoss(num_samples=4, strategy="agreement", t_hard=0.0, t_noisy=0.25, noisy_requires_mismatch=True, noisy_class_guard=0.0)
    for out, target, index in _batches():
        crit(out, target, index)
    assert crit.mem_label.tolist() == LABELS  # the label, not the clips' vote
    assert crit.mem_mode.tolist() == VOTES
    assert crit.mem_agreement.tolist() == [1.0] * 4
    assert torch.allclose(crit.mem_loss, _losses())  # unsmoothed CE of the video logits
    assert crit.mem_stamp.tolist() == [1, 2, 1, 2]  # batch 1 held indices 2, 0; batch 2 held 3, 1


def test_noisy_requires_mismatch_in_epoch_scope():
    # One NOISY slot (t_noisy * 4 = 1). Sample 0 has the highest loss but its clips agree with
    # its label: with noisy_requires_mismatch it cannot be NOISY, so sample 1 (next by loss, and
    # a mismatch) is; without the option sample 0 is.
    strict = AgreementLoss(num_samples=4, strategy="agreement", t_hard=0.0, t_noisy=0.25, noisy_requires_mismatch=True, noisy_class_guard=0.0)
    loose = AgreementLoss(num_samples=4, strategy="agreement", t_hard=0.0, t_noisy=0.25, noisy_class_guard=0.0)
    for crit in (strict, loose):
        for out, target, index in _batches():
            crit(out, target, index)
    assert strict.step_epoch().tolist() == [ORDINARY, NOISY, ORDINARY, ORDINARY]
    assert loose.step_epoch().tolist() == [NOISY, ORDINARY, ORDINARY, ORDINARY]
    # The next epoch is weighted by those flags: sample 1 (in the second batch) gets weight 0.
    batches = list(_batches())
    out, target, index = batches[1]
    logits = out.logits.clone().requires_grad_()
    strict(Out(logits, out.clip_logits), target, index).backward()
    assert strict.last_flags.tolist() == [ORDINARY, NOISY]  # indices 3, 1
    assert torch.count_nonzero(logits.grad[1]) == 0 and torch.count_nonzero(logits.grad[0]) > 0


def test_memory_keeps_the_latest_visit_and_flags_cover_seen_samples_only():
    crit = AgreementLoss(num_samples=6, strategy="agreement", t_hard=0.0, t_noisy=0.2, noisy_requires_mismatch=True, noisy_class_guard=0.0)
    batches = list(_batches())
    for out, target, index in batches:
        crit(out, target, index)
    # Sample 1 seen again, now with its label fixed (= its vote): the newest entry wins.
    out, _, index = batches[1]
    crit(out, torch.tensor([6, 3]), index)
    assert crit.mem_label.tolist() == [2, 3, 1, 6, 0, 0] and crit.mem_stamp.tolist() == [1, 3, 1, 3, 0, 0]
    flags = crit.step_epoch()
    # One slot over the 4 seen samples (0.2 * 4 + 0.5 -> 1): the only remaining mismatch, sample 3.
    assert flags.tolist() == [ORDINARY, ORDINARY, ORDINARY, NOISY, ORDINARY, ORDINARY]


def test_lambdas_weight_each_flag_in_the_loss_value():
    # Batch scope on three samples: HARD (clips disagree), NOISY (agree against the label),
    # ORDINARY; the value is (1/B) sum_i w_i CE_i with the three configured weights.
    logits = torch.tensor([[0.1, 0.2, 0.0, 0.0, 0.3, 0.0, 0.0], [0.0, 0.0, 6.0, 0.0, 0.0, 0.0, 0.0],
                           [2.0, 0, 0, 0, 0, 0, 0]])
    clips = F.one_hot(torch.tensor([[0, 1, 2, 3], [2, 2, 2, 2], [0, 0, 0, 1]]), 7).float() * 4
    target = torch.tensor([0, 5, 0])
    crit = AgreementLoss(3, strategy="agreement", t_hard=1 / 3, t_noisy=1 / 3, lambda_hard=2.0, lambda_noisy=0.3, lambda_ordinary=0.7,
                         scope="batch", label_smoothing=0.0, aux_weight=0.5, noisy_class_guard=0.0)
    value = crit(Out(logits, clips), target, torch.arange(3))
    assert crit.last_flags.tolist() == [HARD, NOISY, ORDINARY]
    video = F.cross_entropy(logits, target, reduction="none")
    clip = F.cross_entropy(clips.flatten(0, 1), target.repeat_interleave(4), reduction="none").view(3, 4).mean(1)
    expected = (torch.tensor([2.0, 0.3, 0.7]) * (video + 0.5 * clip)).sum() / 3
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_aux_weight_zero_and_class_weights():
    logits, target = torch.randn(5, 7), torch.tensor([0, 1, 2, 3, 3])
    clips = torch.randn(5, 4, 7)
    crit = AgreementLoss(5, strategy="ce", aux_weight=0.0, label_smoothing=0.0, noisy_class_guard=0.0)
    assert crit(Out(logits, clips), target, torch.arange(5)).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6)  # the clip logits play no part
    w = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0, 1.0, 1.0])
    weighted = AgreementLoss(5, strategy="ce", aux_weight=0.0, label_smoothing=0.2, class_weight=w, noisy_class_guard=0.0)
    expected = F.cross_entropy(logits, target, weight=w, label_smoothing=0.2, reduction="none").sum() / 5
    assert weighted(Out(logits, clips), target, torch.arange(5)).item() == pytest.approx(expected.item(), rel=1e-6)
    # aux_weight 1: the mean clip CE counts in full.
    full = AgreementLoss(5, strategy="ce", aux_weight=1.0, label_smoothing=0.0, noisy_class_guard=0.0)
    clip_ce = F.cross_entropy(clips.flatten(0, 1), target.repeat_interleave(4), reduction="none").view(5, 4).mean(1)
    expected = (F.cross_entropy(logits, target, reduction="none") + clip_ce).mean()
    assert full(Out(logits, clips), target, torch.arange(5)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_bad_scope_and_strategy_are_refused_by_name():
    with pytest.raises(ValueError, match="scope must be 'epoch' or 'batch', got 'epochs'"):
        AgreementLoss(3, strategy="agreement", scope="epochs", noisy_class_guard=0.0)
    with pytest.raises(ValueError, match="unknown strategy 'agree'"):
        AgreementLoss(3, strategy="agree", noisy_class_guard=0.0)


def test_defaults_are_the_papers_and_the_memory_is_integer_where_it_holds_ids():
    crit = AgreementLoss(5, strategy="agreement", noisy_class_guard=0.0)
    assert (crit.t_hard, crit.t_noisy, crit.label_smoothing, crit.aux_weight) == (0.2, 0.1, 0.1, 0.1)
    assert (crit.scope, crit.strategy, crit.start_epoch, crit.noisy_requires_mismatch) == ("epoch", "agreement", 0, False)
    assert crit.weights.tolist() == [1.0, 1.5, 0.0]  # ORDINARY, HARD, NOISY
    assert crit.class_weight is None and crit.num_samples == 5 and crit.last_flags is None
    for name in ("mem_agreement", "mem_loss", "mem_confidence"):
        assert getattr(crit, name).dtype == torch.float32 and getattr(crit, name).shape == (5,)
    # class ids, stamps and flags are exact integers (a float32 stamp stops counting at 2**24)
    for name in ("mem_mode", "mem_label", "mem_stamp", "flags"):
        assert getattr(crit, name).dtype == torch.long and getattr(crit, name).tolist() == [0] * 5, name
    assert crit.epoch.dtype == torch.long and crit.updates.dtype == torch.long and int(crit.epoch) == 0
    assert set(dict(crit.named_buffers())) == {"weights", "mem_agreement", "mem_loss", "mem_confidence", "mem_mode",
                                              "mem_label", "mem_stamp", "flags", "epoch", "updates"}
    assert crit.active  # reweighting from epoch 0 by default
    assert not AgreementLoss(5, strategy="ce", noisy_class_guard=0.0).active and not AgreementLoss(5, strategy="agreement", start_epoch=1, noisy_class_guard=0.0).active
    weighted = AgreementLoss(5, strategy="agreement", class_weight=[1, 2, 3, 4, 5, 6, 7], noisy_class_guard=0.0)
    assert weighted.class_weight.dtype == torch.float32 and weighted.class_weight.tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_counters_advance_per_batch_and_per_epoch():
    crit = AgreementLoss(4, strategy="agreement", noisy_class_guard=0.0)
    for out, target, index in _batches():
        crit(out, target, index)
    assert int(crit.updates) == 2 and int(crit.epoch) == 0
    crit.step_epoch()
    crit.step_epoch()
    assert int(crit.epoch) == 2 and int(crit.updates) == 2


def test_low_precision_logits_are_ranked_in_float32():
    from rdfer.losses import agreement_stats

    clips = torch.randn(3, 4, 7).bfloat16()
    stats = agreement_stats(clips)
    ref = agreement_stats(clips.float())
    assert stats.confidence.dtype == torch.float32 and torch.equal(stats.confidence, ref.confidence)
    assert torch.equal(stats.mode_class, ref.mode_class) and torch.equal(stats.agreement, ref.agreement)


def test_empty_inputs_flag_nothing():
    from rdfer.losses import flag_samples, flags_for_strategy

    empty = torch.zeros(0)
    assert flag_samples(empty, empty, empty).tolist() == []
    for strategy in ("ce", "bigloss_up", "agreement"):
        assert flags_for_strategy(strategy, empty, empty, empty, 0.2, 0.1).tolist() == []
    with pytest.raises(ValueError, match="unknown strategy 'big'"):
        flags_for_strategy("big", torch.ones(3), torch.ones(3), torch.ones(3), 0.2, 0.1)


def test_big_loss_ties_go_to_the_lower_index_and_one_sample_can_be_flagged():
    from rdfer.losses import flags_for_strategy

    loss = torch.ones(20)
    loss[::3] = 2.0  # indices 0, 3, ..., 18: the seven big losses
    args = (torch.ones(20), loss, torch.ones(20))
    up = flags_for_strategy("bigloss_up", *args, t_hard=0.5, t_noisy=0.1)
    assert (up == HARD).nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 4, 6, 9, 12, 15, 18]  # then 1, 2, 4 by index
    down = flags_for_strategy("bigloss_down", *args, t_hard=0.1, t_noisy=0.45)
    assert (down == NOISY).nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 6, 9, 12, 15, 18]
    one = (torch.ones(1), torch.ones(1), torch.ones(1))
    assert flags_for_strategy("bigloss_up", *one, t_hard=0.5, t_noisy=0.1).tolist() == [HARD]
    assert flags_for_strategy("agreement", *one, t_hard=0.5, t_noisy=0.1).tolist() == [HARD]
    assert flags_for_strategy("bigloss_down", *one, t_hard=0.1, t_noisy=0.5).tolist() == [NOISY]


def test_noisy_requires_mismatch_in_batch_scope():
    # The same hand case as one batch: the flags come from the batch's own clip votes and labels.
    logits, clips, labels = _hand_case()
    strict = AgreementLoss(4, strategy="agreement", t_hard=0.0, t_noisy=0.25, scope="batch", noisy_requires_mismatch=True, noisy_class_guard=0.0)
    loose = AgreementLoss(4, strategy="agreement", t_hard=0.0, t_noisy=0.25, scope="batch", noisy_class_guard=0.0)
    strict(Out(logits, clips), labels, torch.arange(4))
    loose(Out(logits, clips), labels, torch.arange(4))
    assert strict.last_flags.tolist() == [ORDINARY, NOISY, ORDINARY, ORDINARY]
    assert loose.last_flags.tolist() == [NOISY, ORDINARY, ORDINARY, ORDINARY]
