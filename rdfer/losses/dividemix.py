"""DivideMix (Li, Socher and Hoi, ICLR 2020) on video batches: two networks; at the end of every
epoch each network's losses are divided by a per-class mixture into a *labelled* part (probably
clean) and an *unlabelled* part (probably wrong labels), and each network then learns from the
division of the *other* (co-divide), with MixMatch: the labels of the labelled part refined by
the network's own prediction (co-refinement), the unlabelled part given the two networks' sharpened
average guess (co-guessing), all of it mixed up.

Differences from the paper, all for a 2-core budget (documented in docs/losses.md):

* the division reads each sample's loss as remembered from the epoch just ended (its un-mixed
  training-mode pass), not a separate evaluation pass over the training set;
* labelled and unlabelled samples come in the same batch (the division of its rows), not from two
  loaders;
* the two "augmentations" whose predictions are averaged are the video prediction and the mean of
  its clips' predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .agreement import HARD, NOISY, ORDINARY
from .agreement_gmm import CLEAN_GROUP, HARD_GROUP, NOISY_GROUP, against_label, class_group_probability
from .mixing import draw_mix, mix_inputs
from .mixture import class_clean_probability, sharpen
from .registry import FlagOptions, LossRule, SampleView, register_strategy

__all__ = ["DivideMix", "view_probabilities"]


def view_probabilities(output) -> torch.Tensor:
    """(B, K) the average of the video prediction and the mean clip prediction (DivideMix averages
    two augmented views; a video's clips are views of it)."""
    video = output.logits.detach().float().softmax(dim=-1)
    clips = output.clip_logits.detach().float().softmax(dim=-1).mean(dim=1)
    return (video + clips) / 2


@register_strategy("dividemix")
class DivideMix(LossRule):
    """Args:
        divide: ``"loss"``: DivideMix's two-component mixture on each class's losses;
            ``"agreement_gmm"``: the clean / hard / noisy mixture of ``agreement_gmm`` (hard
            samples stay labelled and weigh ``lambda_hard``; noisy ones become unlabelled).
        p_threshold: a sample is labelled when its clean probability exceeds it (0.5).
        temperature: sharpening of the refined and guessed labels (0.5).
        alpha: MixMatch's Beta(alpha, alpha) (4); ``--mixup`` replaces it when given.
        lambda_u: weight of the unlabelled part's squared error (25), reached linearly over
            ``rampup_epochs`` (5) epochs after the warm-up.
        confidence_penalty: weight of the warm-up's penalty on confident predictions (DivideMix's
            remedy for asymmetric noise; 1; 0: off).
        min_class_size: smaller classes are all labelled (8).

    Warm-up (epochs before ``--warmup-epochs``): each network on its own, cross-entropy plus the
    confidence penalty. Flags (a report): NOISY = unlabelled by the network's own division; HARD
    (``divide="agreement_gmm"``) = the hard group.
    """

    reweights = False
    networks = 2
    needs_votes = True
    needs_num_classes = True

    def __init__(self, divide: str = "loss", p_threshold: float = 0.5, temperature: float = 0.5, alpha: float = 4.0,
                 lambda_u: float = 25.0, rampup_epochs: int = 5, confidence_penalty: float = 1.0,
                 min_class_size: int = 8) -> None:
        if divide not in ("loss", "agreement_gmm"):
            raise ValueError(f"dividemix divide must be 'loss' or 'agreement_gmm', got {divide!r}")
        checks = {"p_threshold": (p_threshold, 0.0, 1.0), "temperature": (temperature, 1e-3, 1.0),
                  "alpha": (alpha, 1e-3, 100.0), "lambda_u": (lambda_u, 0.0, 1e4),
                  "confidence_penalty": (confidence_penalty, 0.0, 100.0)}
        for name, (value, low, high) in checks.items():
            if not low <= value <= high:
                raise ValueError(f"dividemix {name} must be in [{low}, {high}], got {value}")
        if int(rampup_epochs) < 1 or int(min_class_size) < 3:
            raise ValueError(f"dividemix rampup_epochs must be >= 1 and min_class_size >= 3, got {rampup_epochs}, "
                             f"{min_class_size}")
        self.divide, self.p_threshold, self.temperature, self.alpha = divide, float(p_threshold), float(temperature), float(alpha)
        self.lambda_u, self.rampup_epochs = float(lambda_u), int(rampup_epochs)
        self.confidence_penalty, self.min_class_size = float(confidence_penalty), int(min_class_size)

    def setup(self, criterion) -> None:
        # The division of this network's last epoch: the *other* network learns from it.
        criterion.register_sample_buffer("labelled_prob", torch.ones(criterion.num_samples))
        criterion.register_sample_buffer("hard_prob", torch.zeros(criterion.num_samples))

    def groups(self, view: SampleView) -> torch.Tensor:
        """(N, 3) clean / hard / noisy probabilities of the division."""
        if self.divide == "agreement_gmm":
            return class_group_probability(view.loss, against_label(view.agreement, view.mode_class, view.labels),
                                           view.labels, self.min_class_size)
        clean = class_clean_probability(view.loss, view.labels, self.min_class_size)
        return torch.stack([clean, torch.zeros_like(clean), 1 - clean], dim=1)

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        groups = self.groups(view)
        self._groups = groups  # end_epoch stores this division
        labelled = 1 - groups[:, NOISY_GROUP]
        flags = torch.full_like(view.labels, ORDINARY)
        flags[(groups[:, HARD_GROUP] > groups[:, CLEAN_GROUP]) & (labelled > self.p_threshold)] = HARD
        flags[labelled <= self.p_threshold] = NOISY
        return flags

    def end_epoch(self, criterion, seen: torch.Tensor, flags: torch.Tensor) -> None:
        groups = getattr(self, "_groups", None)
        if groups is None or groups.shape[0] != seen.numel():
            return
        criterion.labelled_prob[seen] = (1 - groups[:, NOISY_GROUP]).to(criterion.labelled_prob.device)
        criterion.hard_prob[seen] = groups[:, HARD_GROUP].to(criterion.hard_prob.device)

    def pair_step(self, pair, net, video: torch.Tensor, target: torch.Tensor, index: torch.Tensor):
        first, second = pair.criteria
        epoch = int(first.epoch)
        if epoch < first.start_epoch:  # warm-up: each network on its own, all labels, confident outputs penalised
            mix = draw_mix(first.mixup, video.shape[0], video.device)
            out = net(mix_inputs(video, mix))
            loss = first(out.first, target, index, mix) + second(out.second, target, index, mix)
            if self.confidence_penalty:
                loss = loss + self.confidence_penalty * sum(_negative_entropy(o.logits) for o in out)
            return out, loss
        with torch.no_grad():  # both networks' guesses on the un-mixed batch; remembered for the next division
            guess = net(video)
        for criterion, o in zip(pair.criteria, guess):
            criterion.remember(o, target, index)
        goals, labelled, weight = self.division_targets(pair, [view_probabilities(o) for o in guess], target, index)
        mix = draw_mix(first.mixup or self.alpha, video.shape[0], video.device)
        out = net(mix_inputs(video, mix))
        ramp = min(1.0, (epoch - first.start_epoch + 1) / self.rampup_epochs)
        loss = video.new_zeros(())
        for k, own in enumerate(pair.criteria):
            o, goal = out[k], goals[k]
            mixed = mix.lam * goal + (1 - mix.lam) * goal[mix.perm]
            lab = labelled[k]
            sup = own.per_sample_ce(o.logits, o.clip_logits, mixed) * weight[k]
            glimpse_logits = getattr(o, "glimpse_logits", None)
            if own.locator_weight and glimpse_logits is not None and glimpse_logits.shape[1] > 0:
                sup = sup + own.locator_weight * own.locator_loss(glimpse_logits, o.logits, mixed.argmax(dim=1),
                                                                   getattr(o, "centres", None))
            unsup = ((o.logits.float().softmax(dim=-1) - mixed) ** 2).mean(dim=1)
            loss = loss + sup[lab].sum() / lab.sum().clamp_min(1) \
                + self.lambda_u * ramp * unsup[~lab].sum() / (~lab).sum().clamp_min(1) \
                + _prior_penalty(o.logits, own)
        return out, loss

    @torch.no_grad()
    def division_targets(self, pair, probs, target: torch.Tensor, index: torch.Tensor):
        """For each network k, from the *other* network's division of the samples ``index``: the
        (B, K) training targets (labelled: ``sharpen(w * onehot(label) + (1 - w) * probs[k])``, w the
        other's clean probability; unlabelled: ``sharpen(mean(probs))``), which rows are labelled
        (w > ``p_threshold``) and the (B,) row weights (``lambda_hard`` for the other's hard group).
        ``probs``: each network's (B, K) prediction on the un-mixed batch."""
        first = pair.criteria[0]
        co_guess = sharpen((probs[0] + probs[1]) / 2, self.temperature)
        label = F.one_hot(target.long(), first.num_classes).float().to(probs[0].device)
        rows = index.long().to(first.mem_stamp.device)
        goals, labelled, weight = [], [], []
        for k, own in enumerate(pair.criteria):
            other = pair.criteria[1 - k]  # co-divide: network k learns from the other's division
            w = other.labelled_prob[rows].to(label.device).unsqueeze(1)
            refined = sharpen(w * label + (1 - w) * probs[k], self.temperature)
            is_labelled = w.squeeze(1) > self.p_threshold
            goals.append(torch.where(is_labelled.unsqueeze(1), refined, co_guess))
            labelled.append(is_labelled)
            hard = is_labelled & (other.hard_prob[rows].to(label.device) > 0.5)
            weight.append(torch.where(hard, own.weights[HARD].to(label.device, label.dtype), 1.0))
        return goals, labelled, weight


def _negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_k p_ik log p_ik``: lower for less confident predictions."""
    log_p = logits.float().log_softmax(dim=-1)
    return (log_p.exp() * log_p).sum(dim=1).mean()


def _prior_penalty(logits: torch.Tensor, criterion) -> torch.Tensor:
    """``KL(prior || mean prediction)``: keeps a network from putting every sample in few classes.
    The prior is the training labels' class frequencies (DivideMix's uniform prior on its balanced
    benchmarks; a long-tailed set keeps its own)."""
    seen = criterion.mem_stamp > 0
    counts = torch.bincount(criterion.mem_label[seen], minlength=criterion.num_classes).float()
    prior = (counts / counts.sum().clamp_min(1)).to(logits.device)
    if not bool(seen.any()):
        prior = torch.full_like(prior, 1.0 / criterion.num_classes)
    mean = logits.float().softmax(dim=-1).mean(dim=0).clamp_min(1e-8)
    present = prior > 0
    return (prior[present] * (prior[present] / mean[present]).log()).sum()
