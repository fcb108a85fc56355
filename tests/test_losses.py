"""Agreement, flag_samples and AgreementLoss on hand-made cases with known answers."""

# These cases pin the paper's rule: noisy_class_guard=0.0 (issue 28 made 0.5 the default;
# tests/test_robust_losses.py covers the guard).

from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F

import rdfer
from rdfer.losses import HARD, NOISY, ORDINARY, AgreementLoss, agreement, agreement_stats, flag_samples, flags_for_strategy

Out = namedtuple("Out", "logits clip_logits")


def clips_from_preds(preds, k=7, strength=4.0, extra=None):
    """clip logits (B, n, K) whose arg-max per clip is `preds`."""
    preds = torch.tensor(preds)
    logits = F.one_hot(preds, k).float() * strength
    if extra is not None:
        logits = logits + extra
    return logits


def test_agreement_paper_example_and_extremes():
    # Neutral, Surprise, Happy, Happy -> two of four agree -> 0.5 (paper III-A)
    n, s, h = rdfer.EMOTIONS.index("neutral"), rdfer.EMOTIONS.index("surprise"), rdfer.EMOTIONS.index("happy")
    extra = torch.zeros(4, 4, 7)
    extra[2, 3, 3] = 0.5  # [0, 1, 2, 3]: four singletons; the clip voting 3 is the most confident
    logits = clips_from_preds([[n, s, h, h], [1, 1, 1, 1], [0, 1, 2, 3], [4, 4, 4, 2]], extra=extra)
    assert agreement(logits).tolist() == [0.5, 1.0, 0.25, 0.75]
    stats = agreement_stats(logits)
    assert stats.mode_class.tolist() == [h, 1, 3, 4]
    probs = logits.softmax(-1)
    assert torch.allclose(stats.confidence, probs[torch.arange(4), :, stats.mode_class].mean(1))


def test_two_two_tie_goes_to_higher_summed_probability():
    extra = torch.zeros(1, 4, 7)
    extra[0, 2:, 3] += 1.0  # the two clips voting class 3 are more confident
    logits = clips_from_preds([[1, 1, 3, 3]], extra=extra)
    stats = agreement_stats(logits)
    assert stats.agreement.item() == 0.5 and stats.mode_class.item() == 3
    probs = logits.softmax(-1)[0, :, 3]
    assert stats.confidence.item() == pytest.approx(probs.mean().item())
    all_different = clips_from_preds([[0, 1, 2, 3]])
    all_different[0, 2, 2] += 1.0  # the tie among four singletons goes to the most probable
    assert agreement_stats(all_different).mode_class.item() == 2


def test_flag_samples_hand_case():
    # index:        0     1     2    3     4     5    6     7     8     9
    agr = torch.tensor([1.0, 1.0, 0.5, 0.25, 0.75, 1.0, 0.5, 1.0, 0.75, 0.5])
    conf = torch.tensor([0.9, 0.8, 0.5, 0.4, 0.6, 0.95, 0.3, 0.7, 0.6, 0.45])
    loss = torch.tensor([0.1, 2.0, 1.0, 3.0, 0.5, 0.2, 1.5, 2.5, 0.4, 0.9])
    flags = flag_samples(agr, loss, conf, t_hard=0.2, t_noisy=0.1)
    # HARD: 2 lowest agreement -> idx 3 (0.25), then among the 0.5s the lowest confidence: idx 6.
    assert (flags == HARD).nonzero().squeeze(1).tolist() == [3, 6]
    # NOISY: 1 sample, highest agreement then highest loss among the rest: idx 7 (1.0, loss 2.5).
    assert (flags == NOISY).nonzero().squeeze(1).tolist() == [7]
    assert (flags == ORDINARY).sum() == 7


def test_flag_counts_round_half_up_when_not_divisible():
    for n, t_hard, t_noisy, expect in [(7, 0.2, 0.1, (1, 1)), (13, 0.2, 0.1, (3, 1)), (5, 0.1, 0.1, (1, 1)), (4, 0.1, 0.1, (0, 0)), (1, 0.2, 0.1, (0, 0))]:
        flags = flag_samples(torch.rand(n), torch.rand(n), torch.rand(n), t_hard, t_noisy)
        assert ((flags == HARD).sum().item(), (flags == NOISY).sum().item()) == expect, n


def test_all_agree_and_all_disagree():
    n = 10
    flags = flag_samples(torch.ones(n), torch.arange(n).float(), torch.linspace(0.5, 0.9, n))
    assert (flags == HARD).nonzero().squeeze(1).tolist() == [0, 1]  # lowest confidence first
    assert (flags == NOISY).nonzero().squeeze(1).tolist() == [9]  # highest loss
    flags = flag_samples(torch.full((n,), 0.25), torch.zeros(n), torch.zeros(n))
    assert (flags == HARD).nonzero().squeeze(1).tolist() == [0, 1]  # full tie: index order
    assert (flags == NOISY).nonzero().squeeze(1).tolist() == [2]


def test_noisy_requires_mismatch():
    agr = torch.tensor([1.0, 1.0, 1.0, 0.5])
    loss = torch.tensor([3.0, 2.0, 1.0, 0.0])
    mode = torch.tensor([0, 1, 2, 3])
    labels = torch.tensor([0, 5, 5, 3])  # sample 0 has the highest loss but its mode matches its label
    flags = flag_samples(agr, loss, torch.ones(4), t_hard=0.0, t_noisy=0.25, noisy_requires_mismatch=True, mode_class=mode, labels=labels)
    assert flags.tolist() == [ORDINARY, NOISY, ORDINARY, ORDINARY]
    message = "noisy_requires_mismatch=True needs mode_class and labels"
    for given in ({}, {"mode_class": mode}, {"labels": labels}):  # either one missing is an error
        with pytest.raises(ValueError, match=f"^{message}$"):
            flag_samples(agr, loss, torch.ones(4), noisy_requires_mismatch=True, **given)


def test_flag_order_keeps_index_order_among_ties_at_scale():
    # torch's default sort is not stable from ~100 elements on; the flags must not depend on it.
    g = torch.Generator().manual_seed(0)
    n = 400
    agr = torch.randint(1, 5, (n,), generator=g).float() / 4  # four levels, as with 4 clips
    loss = torch.randint(0, 3, (n,), generator=g).float()  # many exact ties
    conf = torch.randint(0, 2, (n,), generator=g).float()
    flags = flag_samples(agr, loss, conf, t_hard=0.25, t_noisy=0.25)
    hard = sorted(range(n), key=lambda i: (agr[i].item(), conf[i].item()))[:100]  # Python's sort is stable
    rest = [i for i in sorted(range(n), key=lambda i: (-agr[i].item(), -loss[i].item())) if i not in set(hard)]
    assert (flags == HARD).nonzero().squeeze(1).tolist() == sorted(hard)
    assert (flags == NOISY).nonzero().squeeze(1).tolist() == sorted(rest[:100])


def test_strategies():
    agr = torch.tensor([1.0, 0.25, 1.0, 0.75, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0])
    loss = torch.tensor([5.0, 4.0, 0.1, 3.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    conf = torch.full((10,), 0.5)
    args = (agr, loss, conf, 0.2, 0.1)
    assert flags_for_strategy("ce", *args).tolist() == [0] * 10
    # Rules without flags need no clip vote or labels (the others do: test_robust_losses.py).
    assert flags_for_strategy("gce", *args).tolist() == [0] * 10
    assert (flags_for_strategy("bigloss_up", *args) == HARD).nonzero().squeeze(1).tolist() == [0, 1]
    assert (flags_for_strategy("bigloss_down", *args) == NOISY).nonzero().squeeze(1).tolist() == [0]
    both = flags_for_strategy("agreement", *args)
    assert (both == HARD).nonzero().squeeze(1).tolist() == [1, 4] and (both == NOISY).nonzero().squeeze(1).tolist() == [0]
    assert (flags_for_strategy("hard_up", *args) == NOISY).sum() == 0
    assert torch.equal(flags_for_strategy("hard_up", *args) == HARD, both == HARD)
    assert (flags_for_strategy("noisy_down", *args) == HARD).sum() == 0
    assert torch.equal(flags_for_strategy("noisy_down", *args) == NOISY, both == NOISY)


def _three_samples():
    """Sample 0: clips disagree (HARD); sample 1: clips agree on class 2, label 5 (NOISY); sample 2: ordinary."""
    logits = torch.tensor([[0.1, 0.2, 0.0, 0.0, 0.3, 0.0, 0.0], [0.0, 0.0, 6.0, 0.0, 0.0, 0.0, 0.0], [2.0, 0, 0, 0, 0, 0, 0]])
    clips = clips_from_preds([[0, 1, 2, 3], [2, 2, 2, 2], [0, 0, 0, 1]])
    target = torch.tensor([0, 5, 0])
    return logits, clips, target


def test_epoch_scope_flags_and_exact_gradients():
    logits, clips, target = _three_samples()
    index = torch.tensor([0, 1, 2])
    crit = AgreementLoss(num_samples=3, strategy="agreement", t_hard=1 / 3, t_noisy=1 / 3, noisy_class_guard=0.0)
    crit(Out(logits, clips), target, index)
    assert crit.last_flags.tolist() == [0, 0, 0]  # nothing flagged before the first step_epoch
    assert crit.step_epoch().tolist() == [HARD, NOISY, ORDINARY]

    def grads(criterion):
        lg, cl = logits.clone().requires_grad_(), clips.clone().requires_grad_()
        criterion(Out(lg, cl), target, index).backward()
        return lg.grad, cl.grad

    g_logits, g_clips = grads(crit)
    assert crit.last_flags.tolist() == [HARD, NOISY, ORDINARY]
    plain = AgreementLoss(num_samples=3, strategy="ce", noisy_class_guard=0.0)
    p_logits, p_clips = grads(plain)
    assert torch.count_nonzero(g_logits[1]) == 0 and torch.count_nonzero(g_clips[1]) == 0  # NOISY: exactly zero
    # HARD: 1.5x the plain gradient (to float rounding); ORDINARY: the plain gradient.
    assert torch.allclose(g_logits[0], 1.5 * p_logits[0], rtol=1e-5, atol=1e-8)
    assert torch.allclose(g_clips[0], 1.5 * p_clips[0], rtol=1e-5, atol=1e-8)
    assert torch.equal(g_logits[2], p_logits[2]) and torch.equal(g_clips[2], p_clips[2])


def test_loss_value_matches_formula():
    logits, clips, target = _three_samples()
    crit = AgreementLoss(num_samples=3, strategy="ce", label_smoothing=0.1, aux_weight=0.1, noisy_class_guard=0.0)
    value = crit(Out(logits, clips), target, torch.arange(3))
    video = F.cross_entropy(logits, target, label_smoothing=0.1, reduction="none")
    clip = torch.stack([F.cross_entropy(clips[i], target[i].repeat(4), label_smoothing=0.1) for i in range(3)])
    assert value.item() == pytest.approx(((video + 0.1 * clip).sum() / 3).item(), rel=1e-6)


def test_start_epoch_delays_reweighting():
    logits, clips, target = _three_samples()
    crit = AgreementLoss(num_samples=3, strategy="agreement", t_hard=1 / 3, t_noisy=1 / 3, start_epoch=2, noisy_class_guard=0.0)
    for epoch in range(3):
        crit(Out(logits, clips), target, torch.arange(3))
        expect = [0, 0, 0] if epoch < 2 else [HARD, NOISY, ORDINARY]
        assert crit.last_flags.tolist() == expect, epoch
        crit.step_epoch()


def test_batch_scope():
    logits, clips, target = _three_samples()
    crit = AgreementLoss(num_samples=3, strategy="agreement", t_hard=1 / 3, t_noisy=1 / 3, scope="batch", noisy_class_guard=0.0)
    crit(Out(logits, clips), target, torch.arange(3))
    assert crit.last_flags.tolist() == [HARD, NOISY, ORDINARY]


def test_unseen_indices_stay_ordinary_and_state_dict_roundtrip():
    crit = AgreementLoss(num_samples=20, strategy="agreement", t_hard=0.2, t_noisy=0.1, noisy_class_guard=0.0)
    torch.manual_seed(1)
    for start in (0, 5):  # indices 10..19 never seen
        idx = torch.arange(start, start + 5)
        crit(Out(torch.randn(5, 7), torch.randn(5, 4, 7)), torch.randint(0, 7, (5,)), idx)
    flags = crit.step_epoch()
    assert (flags[10:] == ORDINARY).all()
    assert (flags[:10] == HARD).sum() == 2 and (flags[:10] == NOISY).sum() == 1  # counts over the 10 seen
    restored = AgreementLoss(num_samples=20, strategy="agreement", t_hard=0.2, t_noisy=0.1, noisy_class_guard=0.0)
    restored.load_state_dict(crit.state_dict())
    assert torch.equal(restored.flags, crit.flags) and int(restored.epoch) == 1
    assert torch.equal(restored.step_epoch(), crit.step_epoch())


def test_index_out_of_range_is_clear():
    crit = AgreementLoss(num_samples=2, strategy="agreement", noisy_class_guard=0.0)
    with pytest.raises(IndexError, match=r"\[0, 2\)"):
        crit(Out(torch.randn(1, 7), torch.randn(1, 4, 7)), torch.tensor([0]), torch.tensor([5]))


def test_with_the_real_model_end_to_end():
    model = rdfer.create_model("rdfer_small")
    crit = AgreementLoss(num_samples=4, strategy="agreement", scope="batch", t_hard=0.25, t_noisy=0.25, noisy_class_guard=0.0)
    target = torch.tensor([0, 1, 2, 3])
    out = model(torch.randn(4, 3, 16, 32, 32))
    loss = crit(out, target, torch.arange(4))
    loss.backward()
    flags = crit.last_flags
    assert sorted(flags.tolist()) == [ORDINARY, ORDINARY, HARD, NOISY]  # one of each slot of 4 * 0.25
    w = torch.tensor([1.0, 1.5, 0.0])[flags]
    # The default (saliency) locator adds its multiple-instance term, weighted by the flag too.
    per_sample = crit.per_sample_ce(out.logits, out.clip_logits, target) + crit.locator_loss(out.glimpse_logits, out.logits, target)
    assert loss.item() == pytest.approx((w * per_sample).mean().item(), rel=1e-5)
    assert model.sampler.glimpse_head.weight.grad.abs().sum() > 0  # the loss trains the re-sampler too
