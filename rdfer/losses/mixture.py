"""Mixture-model split per class (DivideMix's clean / noisy split, Li et al., ICLR 2020, ranked
within each labelled class as class-balanced selection does): a two-component Gaussian mixture on
each class's normalised loss says which samples are clean; the noisy part is not dropped but
trained toward a guessed label (the clips' consensus, sharpened)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .agreement import NOISY, ORDINARY
from .correction import _SoftTargets
from .registry import FlagOptions, SampleView, register_strategy

__all__ = ["gmm_clean_probability", "class_clean_probability", "sharpen"]


def gmm_clean_probability(loss: torch.Tensor, iters: int = 100, reg: float = 5e-4) -> torch.Tensor:
    """Posterior of the low-mean component of a two-component 1-D Gaussian mixture fitted by EM
    to ``loss`` (N,) min-max normalised to [0, 1], ``(N,) -> (N,)``.

    Initialised by splitting at the median; ``reg`` is added to each variance (sklearn's
    ``reg_covar``). A 1-D EM is a dozen lines; it spares the core a scikit-learn dependency (the
    tests compare it with ``sklearn.mixture.GaussianMixture``). Fewer than 2 values, or all equal: 1.
    """
    x = loss.detach().double().flatten()
    n = x.numel()
    if n < 2 or float(x.max() - x.min()) < 1e-12:
        return torch.ones(n, dtype=torch.float, device=loss.device)
    x = (x - x.min()) / (x.max() - x.min())
    high = x > x.median()
    if not bool(high.any()):
        high = x >= x.max()
    parts = (x[~high], x[high])
    mu = torch.stack([p.mean() for p in parts])
    var = torch.stack([p.var(unbiased=False) for p in parts]) + reg
    pi = torch.stack([torch.tensor(p.numel() / n, dtype=x.dtype) for p in parts]).to(x.device)
    for _ in range(iters):
        log_p = pi.log() - 0.5 * (2 * math.pi * var).log() - (x.unsqueeze(1) - mu) ** 2 / (2 * var)
        r = log_p.softmax(dim=1)
        nk = r.sum(dim=0) + 1e-12
        pi, mu = nk / n, (r * x.unsqueeze(1)).sum(dim=0) / nk
        var = (r * (x.unsqueeze(1) - mu) ** 2).sum(dim=0) / nk + reg
    return r[:, int(mu.argmin())].float()


def class_clean_probability(loss: torch.Tensor, labels: torch.Tensor, min_class_size: int = 8) -> torch.Tensor:
    """:func:`gmm_clean_probability` fitted within each labelled class, ``(N,) -> (N,)``: a rare
    class keeps its clean samples even when they all have a higher loss than the common classes'.
    A class with fewer than ``min_class_size`` samples is all clean (too few to fit two components)."""
    clean = torch.ones(loss.numel(), dtype=torch.float, device=loss.device)
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel() >= min_class_size:
            clean[idx] = gmm_clean_probability(loss[idx])
    return clean


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^(1/T)`` renormalised over the last dimension (MixMatch's sharpening)."""
    p = probs.clamp_min(1e-12) ** (1.0 / temperature)
    return p / p.sum(dim=-1, keepdim=True)


@register_strategy("mixture")
class MixtureSplit(_SoftTargets):
    """Args:
        temperature: sharpening of the guessed label of a noisy sample (0.5, as DivideMix).
        threshold: clean probability below which a sample is noisy (0.5).
        min_class_size: smaller classes are all clean (8).
        guess_confidence: a noisy sample is trained toward its guessed label only when the clips'
            consensus gives that class at least this probability; below it the sample weighs 0
            until a later epoch (FixMatch's threshold). 0 (default): always guessed; above 1: the
            noisy part is dropped, a small-loss trick whose count the mixture sets.

    Clean samples train toward ``w * onehot(label) + (1 - w) * consensus`` (``w``: clean
    probability; DivideMix's label refinement), noisy ones (flagged NOISY, a report: none is
    down-weighted) toward ``sharpen(consensus)``. The consensus is the mean clip probability.
    """

    def __init__(self, temperature: float = 0.5, threshold: float = 0.5, min_class_size: int = 8,
                 guess_confidence: float = 0.0) -> None:
        if not 0.0 <= guess_confidence <= 1.01:
            raise ValueError(f"mixture guess_confidence must be in [0, 1.01], got {guess_confidence}")
        self.guess_confidence = float(guess_confidence)
        if not 0.0 < temperature <= 1.0:
            raise ValueError(f"mixture temperature must be in (0, 1], got {temperature}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"mixture threshold must be in [0, 1], got {threshold}")
        if int(min_class_size) < 2:
            raise ValueError(f"mixture min_class_size must be >= 2, got {min_class_size}")
        self.temperature, self.threshold, self.min_class_size = float(temperature), float(threshold), int(min_class_size)

    def setup(self, criterion) -> None:
        super().setup(criterion)
        criterion.register_buffer("target_weight", torch.ones(criterion.num_samples))

    def sample_weights(self, criterion, index: torch.Tensor):
        if int(criterion.epoch) < criterion.start_epoch:
            return None
        return criterion.target_weight[index]

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        clean = class_clean_probability(view.loss, view.labels, self.min_class_size)
        return torch.where(clean < self.threshold, NOISY, ORDINARY).long()

    def end_epoch(self, criterion, seen: torch.Tensor, flags: torch.Tensor) -> None:
        if int(criterion.epoch) + 1 < criterion.start_epoch:
            return
        w = class_clean_probability(criterion.mem_loss[seen], criterion.mem_label[seen], self.min_class_size)
        consensus = criterion.mem_probs[seen]
        label = F.one_hot(criterion.mem_label[seen], criterion.num_classes).float()
        refined = w.unsqueeze(1) * label + (1 - w).unsqueeze(1) * consensus
        guessed = sharpen(consensus, self.temperature)
        noisy = flags == NOISY
        self.set_targets(criterion, seen, torch.where(noisy.unsqueeze(1), guessed, refined))
        unsure = noisy & (consensus.max(dim=1).values < self.guess_confidence)
        criterion.target_weight[seen] = torch.where(unsure, 0.0, 1.0)
