"""The label-correcting rules of issue 23 on hand-computed cases: ELR's target buffer and
regulariser, the per-class mixture split, the clip-consensus correction, and the rule registry."""

import math
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F

import rdfer
from rdfer.losses import (NOISY, ORDINARY, AgreementLoss, LossRule, class_clean_probability, create_strategy,
                          gmm_clean_probability, list_strategies, register_strategy, sharpen)

Out = namedtuple("Out", "logits clip_logits")


def _plain(strategy, n, k=3, **kw):
    """A criterion whose loss is exactly the rule's: no smoothing, no clip term, no locator."""
    kw.setdefault("start_epoch", 0)
    return AgreementLoss(n, strategy=strategy, num_classes=k, label_smoothing=0.0, aux_weight=0.0,
                         noisy_class_guard=0.0, **kw)


def test_elr_buffer_and_regulariser_hand_computed():
    crit = _plain("elr", 2, strategy_options={"lam": 1.0, "beta": 0.5})
    logits = torch.zeros(2, 3, requires_grad=True)  # p = 1/3 everywhere
    clips = torch.zeros(2, 4, 3)
    target, index = torch.tensor([0, 1]), torch.tensor([0, 1])
    loss = crit(Out(logits, clips), target, index)
    # t = 0.5 * 0 + 0.5 * p = 1/6 each; <t, p> = 3 * 1/6 * 1/3 = 1/6; CE = log 3.
    assert torch.allclose(crit.elr_target, torch.full((2, 3), 1 / 6))
    assert loss.item() == pytest.approx(math.log(3) + math.log(5 / 6), abs=1e-6)
    loss = crit(Out(logits, clips), target, index)
    # t = 0.5 * 1/6 + 0.5 * 1/3 = 1/4; <t, p> = 1/4.
    assert torch.allclose(crit.elr_target, torch.full((2, 3), 0.25))
    assert loss.item() == pytest.approx(math.log(3) + math.log(3 / 4), abs=1e-6)
    # Only the samples of the batch move.
    crit(Out(torch.zeros(1, 3), torch.zeros(1, 4, 3)), torch.tensor([0]), torch.tensor([1]))
    assert torch.allclose(crit.elr_target[0], torch.full((3,), 0.25))


def test_elr_source_clips_uses_the_clip_average_and_corrects_labels():
    crit = _plain("elr", 1, strategy_options={"beta": 0.0, "source": "clips"})
    video = torch.tensor([[4.0, 0.0, 0.0]])
    clips = torch.tensor([[[0.0, 0.0, 4.0], [0.0, 0.0, 4.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]]])
    crit(Out(video, clips), torch.tensor([0]), torch.tensor([0]))
    expected = clips.softmax(-1).mean(1).clamp(1e-4, 1 - 1e-4)
    assert torch.allclose(crit.elr_target, expected / expected.sum(1, keepdim=True))
    # The label it believes: the target's argmax (class 2), not the given 0.
    assert crit.corrected_labels().tolist() == [2]
    video_fed = _plain("elr", 1, strategy_options={"beta": 0.0})
    video_fed(Out(video, clips), torch.tensor([0]), torch.tensor([0]))
    assert video_fed.corrected_labels().tolist() == [0]


def test_elr_pulls_the_prediction_toward_its_target():
    crit = _plain("elr", 1, strategy_options={"lam": 3.0, "beta": 0.9})
    crit.elr_target[0] = torch.tensor([0.0, 1.0, 0.0])  # it believed class 1 early on
    logits = torch.zeros(1, 3, requires_grad=True)
    crit(Out(logits, torch.zeros(1, 4, 3)), torch.tensor([0]), torch.tensor([0])).backward()
    reg_only = -logits.grad[0]  # CE pulls to class 0 by (1 - 1/3); the regulariser to class 1
    assert reg_only[1] > 0


@pytest.mark.parametrize("options, match", [({"lam": -1}, "lam"), ({"beta": 1.0}, "beta"), ({"source": "x"}, "source"),
                                            ({"speed": 2}, "unknown strategy options")])
def test_elr_options_are_checked(options, match):
    with pytest.raises(ValueError, match=match):
        _plain("elr", 2, strategy_options=options)


def test_gmm_splits_a_toy_loss_vector():
    loss = torch.tensor([0.10, 0.12, 0.09, 0.11, 0.10, 2.0, 2.1, 1.9])
    clean = gmm_clean_probability(loss)
    assert (clean[:5] > 0.99).all() and (clean[5:] < 0.01).all()
    assert gmm_clean_probability(torch.ones(4)).tolist() == [1.0] * 4  # nothing to split
    assert gmm_clean_probability(torch.tensor([3.0])).tolist() == [1.0]


def test_gmm_matches_scikit_learn():
    mixture = pytest.importorskip("sklearn.mixture")
    g = torch.Generator().manual_seed(0)
    loss = torch.cat([torch.rand(60, generator=g) * 0.5, 1.5 + torch.rand(25, generator=g)])
    ours = gmm_clean_probability(loss, iters=500)
    x = ((loss - loss.min()) / (loss.max() - loss.min())).double().numpy().reshape(-1, 1)
    gm = mixture.GaussianMixture(2, reg_covar=5e-4, tol=1e-10, max_iter=2000, random_state=0).fit(x)
    theirs = gm.predict_proba(x)[:, gm.means_.argmin()]
    assert torch.allclose(ours.double(), torch.from_numpy(theirs), atol=1e-3)


def test_class_split_keeps_a_rare_class_whose_losses_are_all_high():
    common = torch.tensor([0.1, 0.12, 0.09, 0.11, 0.1, 0.13, 2.0, 2.2])  # two wrong labels
    rare = torch.tensor([2.0, 2.05, 1.95, 2.0, 2.02, 1.98, 3.0, 3.1])  # hard class, two wrong labels
    loss, labels = torch.cat([common, rare]), torch.tensor([0] * 8 + [1] * 8)
    per_class = class_clean_probability(loss, labels, min_class_size=8) > 0.5
    assert per_class.tolist() == [True] * 6 + [False] * 2 + [True] * 6 + [False] * 2
    pooled = gmm_clean_probability(loss) > 0.5
    assert not pooled[8:14].any()  # one mixture for all would drop the rare class's clean samples
    small = class_clean_probability(loss, labels, min_class_size=9)  # classes too small to split
    assert small.tolist() == [1.0] * 16


def test_sharpen():
    p = torch.tensor([[0.2, 0.8]])
    assert torch.allclose(sharpen(p, 0.5), torch.tensor([[0.04, 0.64]]) / 0.68)
    assert torch.allclose(sharpen(p, 1.0), p)


def _agreeing_clips(probs, n_clips=4):
    return torch.tensor(probs).log().expand(n_clips, -1).unsqueeze(0)


def test_clip_correct_moves_the_target_only_above_the_threshold():
    crit = _plain("clip_correct", 3, strategy_options={"min_confidence": 0.5})
    confident = _agreeing_clips([0.05, 0.05, 0.9])  # all four clips say class 2, p = 0.9
    unsure = _agreeing_clips([0.3, 0.3, 0.4])  # they agree, but p = 0.4 < 0.5
    agreeing_label = _agreeing_clips([0.9, 0.05, 0.05])
    clips = torch.cat([confident, unsure, agreeing_label])
    target, index = torch.tensor([0, 0, 0]), torch.arange(3)
    crit(Out(clips.mean(1), clips), target, index)
    flags = crit.step_epoch()
    assert flags.tolist() == [NOISY, ORDINARY, ORDINARY]  # a report: nobody is down-weighted
    a = 1.0 * 0.9  # agreement * confidence
    expected = (1 - a) * torch.tensor([1.0, 0, 0]) + a * torch.tensor([0.05, 0.05, 0.9])
    assert torch.allclose(crit.soft_target[0], expected, atol=1e-6)
    assert torch.allclose(crit.soft_target[1:], F.one_hot(target[1:], 3).float())
    assert crit.corrected_labels().tolist() == [2, 0, 0]
    # The next epoch trains toward the soft target: soft cross-entropy, weight 1.
    logits = torch.randn(3, 3)
    loss = crit(Out(logits, clips), target, index)
    want = -(crit.soft_target * logits.log_softmax(-1)).sum(1).mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-6)


def test_clip_correct_waits_for_start_epoch():
    crit = _plain("clip_correct", 1, start_epoch=2)
    clips = _agreeing_clips([0.05, 0.05, 0.9])
    crit(Out(clips.mean(1), clips), torch.tensor([0]), torch.tensor([0]))
    crit.step_epoch()  # end of epoch 0: epoch 1 is still warm-up
    assert not crit.has_target.any()
    crit.step_epoch()
    assert crit.has_target.all() and crit.corrected_labels().tolist() == [2]


def test_mixture_targets_refine_the_clean_and_guess_the_noisy():
    n = 10
    crit = _plain("mixture", n, k=2, strategy_options={"min_class_size": 4})
    right, wrong = [5.0, 0.0], [0.0, 5.0]
    logits = torch.tensor([right] * 8 + [wrong] * 2)  # all labelled 0; two look like class 1
    clips = logits.unsqueeze(1).expand(-1, 4, -1)
    target = torch.zeros(n, dtype=torch.long)
    crit(Out(logits, clips), target, torch.arange(n))
    flags = crit.step_epoch()
    assert flags.tolist() == [ORDINARY] * 8 + [NOISY] * 2
    q = logits.softmax(-1)
    assert torch.allclose(crit.soft_target[8:], sharpen(q[8:], 0.5), atol=1e-5)  # guessed: class 1
    w = class_clean_probability(crit.mem_loss, crit.mem_label, 4)
    refined = w[:8, None] * torch.tensor([1.0, 0.0]) + (1 - w[:8, None]) * q[:8]
    assert torch.allclose(crit.soft_target[:8], refined, atol=1e-6)
    assert crit.corrected_labels().tolist() == [0] * 8 + [1] * 2


def test_correcting_rules_need_classes_and_the_epoch_memory():
    with pytest.raises(ValueError, match="needs num_classes"):
        AgreementLoss(4, strategy="mixture")
    with pytest.raises(ValueError, match="scope must be 'epoch'"):
        AgreementLoss(4, strategy="elr", num_classes=3, scope="batch")


def test_correcting_state_is_in_the_state_dict():
    a = _plain("elr", 4)
    a(Out(torch.randn(4, 3), torch.randn(4, 4, 3)), torch.tensor([0, 1, 2, 0]), torch.arange(4))
    b = _plain("elr", 4)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.elr_target, b.elr_target) and "elr_target" in a.state_dict()
    assert {"soft_target", "has_target", "mem_probs"} <= set(_plain("mixture", 4).state_dict())
    assert "mem_probs" not in AgreementLoss(4).state_dict()  # old rules keep their old checkpoints


def test_a_user_rule_registers_and_trains():
    @register_strategy("test_drop_mismatch")
    class DropMismatch(LossRule):
        needs_votes = True

        def __init__(self, min_agreement: float = 1.0):
            self.min_agreement = min_agreement

        def flags(self, view, options):
            wrong = (view.agreement >= self.min_agreement) & (view.mode_class != view.labels)
            return torch.where(wrong, NOISY, ORDINARY)

    assert "test_drop_mismatch" in list_strategies() and isinstance(create_strategy("test_drop_mismatch"), DropMismatch)
    crit = AgreementLoss(2, strategy="test_drop_mismatch", strategy_options={"min_agreement": 0.75}, start_epoch=0,
                         noisy_class_guard=0.0)
    clips = torch.cat([_agreeing_clips([0.1, 0.9]), _agreeing_clips([0.9, 0.1])])
    crit(Out(clips.mean(1), clips), torch.tensor([0, 0]), torch.arange(2))
    assert crit.step_epoch().tolist() == [NOISY, ORDINARY]
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("test_drop_mismatch")(type("Other", (LossRule,), {}))
    with pytest.raises(TypeError, match="LossRule"):
        register_strategy("test_not_a_rule")(object)
    with pytest.raises(ValueError, match="invalid strategy name"):
        register_strategy("a+b")
    with pytest.raises(rdfer.losses.UnknownStrategyError, match="unknown strategy 'nope'"):
        create_strategy("nope")


def test_strategy_options_from_the_cli_and_config():
    from rdfer import cli
    from rdfer.engine.config import TrainConfig

    parser = cli.build_parser()
    args = parser.parse_args(["train", "synthetic", "--strategy", "elr", "--strategy-option", "source=clips",
                              "--strategy-option", "lam=2"])
    vars(args).pop("debug", None)  # main()'s own option
    cfg = cli._train_config_from_args(args)
    assert cfg.strategy == "elr" and cfg.strategy_options == {"source": "clips", "lam": 2}
    with pytest.raises(ValueError, match="--strategy-option.*beta"):
        TrainConfig(strategy="elr", strategy_options={"beta": 2.0}).validate_for_training()
    with pytest.raises(ValueError, match="strategy_options must be a mapping"):
        TrainConfig(strategy_options=[1])


def test_mixture_guess_confidence_drops_unsure_guesses():
    n = 10
    crit = _plain("mixture", n, k=2, strategy_options={"min_class_size": 4, "guess_confidence": 0.9})
    sure, unsure = [0.0, 5.0], [0.0, 1.0]  # softmax: class 1 at 0.993 / 0.731
    logits = torch.tensor([[5.0, 0.0]] * 8 + [sure, unsure])
    clips = logits.unsqueeze(1).expand(-1, 4, -1)
    target = torch.zeros(n, dtype=torch.long)
    crit(Out(logits, clips), target, torch.arange(n))
    assert crit.step_epoch().tolist() == [ORDINARY] * 8 + [NOISY] * 2
    assert crit.target_weight.tolist() == [1.0] * 9 + [0.0]  # the unsure guess weighs 0
    per_sample = crit.per_sample_ce(logits, clips, crit.soft_target)
    loss = crit(Out(logits, clips), target, torch.arange(n))
    assert loss.item() == pytest.approx(per_sample[:9].sum().item() / n, rel=1e-5)
    dropped = _plain("mixture", n, k=2, strategy_options={"min_class_size": 4, "guess_confidence": 1.01})
    dropped(Out(logits, clips), target, torch.arange(n))
    dropped.step_epoch()
    assert dropped.target_weight.tolist() == [1.0] * 8 + [0.0] * 2  # the noisy part dropped
