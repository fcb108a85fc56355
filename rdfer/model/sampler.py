"""Key-expression detecting network and the differentiable temporal re-sampler (paper Fig. 2a).

A tiny frame encoder glances at ``num_glimpses`` uniformly spread frames of the whole video and
predicts where the expression is (a centre and a stride); the recognizer then reads ``n`` frames
there, by linear interpolation along time so that the location can be learnt end to end.

Four locators turn the glimpse features into a window (``locator=``):

* ``"mean"``: ``F_d`` on the time-averaged glimpse features (rdfer 0.1's head). The average is the
  same whatever order the glimpses come in, so it cannot say *where* anything happened; kept for
  the ablation.
* ``"map"``: ``F_d`` on the time-ordered glimpse feature map (the paper's Eq. 4 read literally).
* ``"saliency"``: temporal class activation. Each glimpse gets class logits (``glimpse_logits``,
  trained by a multiple-instance loss on the video label, see :func:`mil_logits`); a softmax over
  time of the video's top class's logit is the saliency; the window is centred on the saliency's
  centre of mass and spans what a uniform window of the same spread would.
* ``"peak"``: the same evidence, but only the glimpses within ``ceil(G / 4)`` of the most salient
  one count, so two separate bursts of evidence give a window on the stronger one instead of a
  window spanning both.
* ``"keyinstance"`` (issue 24, after HNrbs-DFER's key-instance loss): the same per-glimpse class
  logits, and a head on the time-ordered glimpse features that predicts ``num_centres`` centres.
  The loss pulls the sorted centres, by L1, toward the positions of the ``num_centres`` glimpses
  where the labelled class is most probable (multiple-instance pseudo-targets); each centre then
  reads ``n / num_centres`` consecutive frames at hard indices (no gradient through the reading).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn as nn

__all__ = ["KeyExpressionSampler", "SamplerOutput", "LOCATORS", "EVIDENCE_LOCATORS", "glimpse_indices", "mil_logits", "uniform_positions",
           "read_frames", "keyinstance_positions", "keyinstance_targets"]

LOCATORS = ("mean", "map", "saliency", "peak", "keyinstance")
# Per-glimpse class logits, trained by the multiple-instance term.
EVIDENCE_LOCATORS = ("saliency", "peak", "keyinstance")


class SamplerOutput(NamedTuple):
    positions: torch.Tensor  # (B, n) frame positions in [0, T-1]
    mu: torch.Tensor  # (B,) window centre as a fraction of the video, c / (T-1)
    delta: torch.Tensor  # (B,) stride between recognised frames, in frames
    summary: Optional[torch.Tensor]  # (B, summary_dim) global summary S, or None
    glimpse_logits: Optional[torch.Tensor] = None  # (B, G, K) per-glimpse class logits (evidence locators), or None
    centres: Optional[torch.Tensor] = None  # (B, C) "keyinstance": the predicted centres, fractions of the video


def mil_logits(glimpse_logits: torch.Tensor) -> torch.Tensor:
    """Video-level logits from per-glimpse logits ``(B, G, K) -> (B, K)``: per class, the mean of the
    top ``ceil(G / 4)`` glimpses (multiple-instance pooling: the expression fills part of the video,
    so a class is present when a few glimpses show it strongly)."""
    k = max(1, -(-glimpse_logits.shape[1] // 4))
    return glimpse_logits.topk(k, dim=1).values.mean(dim=1)


def glimpse_indices(num_frames: int, num_glimpses: int, device=None) -> torch.Tensor:
    """Uniform glimpses ``floor(i * T / G)``: for T=64, G=16 the frames 0, 4, ..., 60 (paper III-B)."""
    return torch.div(torch.arange(num_glimpses, device=device) * num_frames, num_glimpses, rounding_mode="floor")


def uniform_positions(num_frames: int, n: int, batch: int, device=None, dtype=torch.float32) -> SamplerOutput:
    """The positions of plain uniform sampling over the whole video (``resample=False``)."""
    delta = (num_frames - 1) / max(n - 1, 1)
    k = torch.arange(n, device=device, dtype=dtype)
    positions = (k * delta if n > 1 else k + (num_frames - 1) / 2).expand(batch, n)
    return SamplerOutput(
        positions=positions,
        mu=torch.full((batch,), 0.5, device=device, dtype=dtype),
        delta=torch.full((batch,), float(delta), device=device, dtype=dtype),
        summary=None,
    )


def read_frames(video: torch.Tensor, positions: torch.Tensor, mode: str = "linear") -> torch.Tensor:
    """Read frames of ``video`` (B, C, T, H, W) at real-valued ``positions`` (B, n).

    ``"linear"`` blends the two neighbouring frames (differentiable in ``positions``);
    ``"nearest"`` picks the closest frame (no gradient, cheaper). Returns (B, C, n, H, W).
    """
    b, c, t, h, w = video.shape
    n = positions.shape[1]
    flat = video.reshape(b, c, t, h * w).transpose(1, 2).reshape(b, t, c * h * w)

    def gather(idx: torch.Tensor) -> torch.Tensor:
        return flat.gather(1, idx.unsqueeze(-1).expand(b, n, c * h * w))

    # Non-finite positions (diverged weights) must not index out of range: read frame 0 and let
    # the NaN carry through the blend weights, so the loss is NaN and the step is skipped.
    safe = torch.nan_to_num(positions.detach(), nan=0.0, posinf=t - 1, neginf=0.0)
    if mode == "nearest":
        frames = gather(safe.round().long().clamp(0, t - 1))
        frames = frames.masked_fill(~torch.isfinite(positions).unsqueeze(-1), float("nan"))
    elif mode == "linear":
        lo = safe.floor().clamp(0, t - 1)
        frac = (positions - lo).unsqueeze(-1).to(video.dtype)
        lo = lo.long()
        hi = (lo + 1).clamp(max=t - 1)
        frames = gather(lo) * (1 - frac) + gather(hi) * frac
    else:
        raise ValueError(f"sampling must be 'linear' or 'nearest', got {mode!r}")
    return frames.reshape(b, n, c, h * w).transpose(1, 2).reshape(b, c, n, h, w)


def keyinstance_positions(centres: torch.Tensor, num_frames: int, n: int, delta_min_frac: float = 0.25) -> torch.Tensor:
    """Hard frame indices around sorted ``centres`` (B, C) (fractions of the video), ``(B, n)``.

    Each centre reads ``n / C`` consecutive frames at a stride of ``max(1, round(delta_min_frac *
    (T - 1) / (n - 1)))`` loaded frames (the re-sampler's smallest stride), shifted inwards at the
    ends of the video; the clips come out in time order.
    """
    b, c = centres.shape
    m, num_frames = n // c, int(num_frames)  # int: a traced shape may arrive as a tensor
    stride = max(1.0, float(round(delta_min_frac * (num_frames - 1) / max(n - 1, 1))))
    half = min((m - 1) * stride / 2, (num_frames - 1) / 2)
    frames = centres.sort(dim=1).values * (num_frames - 1)
    frames = frames.clamp(half, num_frames - 1 - half)
    offsets = (torch.arange(m, device=centres.device, dtype=centres.dtype) - (m - 1) / 2) * stride
    return (frames.unsqueeze(2) + offsets).round().clamp(0, num_frames - 1).flatten(1)


def keyinstance_targets(glimpse_logits: torch.Tensor, target: torch.Tensor, num_centres: int) -> torch.Tensor:
    """Multiple-instance pseudo-targets ``(B, C)``: the cell centres ``(g + 0.5) / G`` of the
    ``num_centres`` glimpses where the class ``target`` (B,) is most probable, sorted."""
    g = glimpse_logits.shape[1]
    p = glimpse_logits.detach().float().softmax(dim=-1)
    p = p.gather(2, target.view(-1, 1, 1).expand(-1, g, 1)).squeeze(2)  # (B, G)
    top = p.topk(num_centres, dim=1).indices
    return ((top.float() + 0.5) / g).sort(dim=1).values


class KeyExpressionSampler(nn.Module):
    """Detector + re-sampling positions (SPEC 3.1-3.2).

    ``f = mean_t detector(glimpses)``; ``a, b = locator(f)``; ``S = sigmoid(F_s(f))``;
    ``delta = delta_max * (delta_min_frac + (1 - delta_min_frac) * sigmoid(a))`` with
    ``delta_max = (T-1)/(n-1)``; half-width ``h = (n-1) delta / 2``;
    centre ``c = h + (T-1-2h) sigmoid(b)``; ``p_k = c + (k - (n-1)/2) delta``. The window lies
    inside ``[0, T-1]`` by construction.

    Args:
        detector: a frame-level backbone (``(N, C, t, H, W) -> (N, t, D)``); clip-level works too.
        num_positions: ``n``, frames the recognizer reads.
        num_glimpses: frames the detector sees.
        summary_dim: size of the global summary ``S`` (0 or ``summary=False``: none).
        delta_min_frac: smallest stride as a fraction of ``delta_max`` (clips never collapse).
        locator: ``"mean"``, ``"map"``, ``"saliency"`` or ``"peak"`` (see the module docstring).
        num_classes: ``K`` for the ``"saliency"`` / ``"peak"`` locators' per-glimpse class head.
        locator_grad: with ``"saliency"`` / ``"peak"``, let the recognizer's loss reach the saliency through
            the interpolation (``False``: only the multiple-instance loss trains it).
        num_centres: ``"keyinstance"``: centres predicted, each reading ``n / num_centres``
            consecutive frames (a divisor of ``n``, at most ``num_glimpses``).
    """

    # sigmoid(3) = 0.95: the first forward reads a window spanning ~96% of the video, centred,
    # i.e. nearly uniform sampling, while both location logits still receive gradient.
    INIT_STRIDE_LOGIT = 3.0

    def __init__(
        self,
        detector: nn.Module,
        num_positions: int,
        num_glimpses: int = 16,
        summary_dim: int = 128,
        summary: bool = True,
        delta_min_frac: float = 0.25,
        locator: str = "mean",
        num_classes: Optional[int] = None,
        locator_grad: bool = True,
        num_centres: int = 4,
    ) -> None:
        super().__init__()
        if locator == "keyinstance" and not (1 <= num_centres <= num_glimpses and num_positions % num_centres == 0):
            raise ValueError(f"locator='keyinstance' needs num_centres dividing the {num_positions} frames read and "
                             f"at most num_glimpses={num_glimpses}, got {num_centres}")
        if not 0.0 <= delta_min_frac <= 1.0:
            raise ValueError(f"delta_min_frac must be in [0, 1], got {delta_min_frac}")
        if locator not in LOCATORS:
            raise ValueError(f"locator must be one of {LOCATORS}, got {locator!r}")
        if locator in EVIDENCE_LOCATORS and not num_classes:
            raise ValueError(f"locator={locator!r} needs num_classes")
        if locator != "mean" and getattr(detector, "token_level", "frame") != "frame":
            raise ValueError(f"locator={locator!r} needs a frame-level detector (one feature per glimpse)")
        self.detector = detector
        self.num_positions = num_positions
        self.num_glimpses = num_glimpses
        self.delta_min_frac = delta_min_frac
        self.locator_kind = locator
        self.locator_grad = locator_grad
        dim = detector.feature_dim
        if locator in EVIDENCE_LOCATORS:
            self.glimpse_head = nn.Linear(dim, num_classes)
            if locator == "keyinstance":
                # Centres from the time-ordered glimpse map, starting evenly spread (uniform-like reading).
                self.centre_head = nn.Linear(dim * num_glimpses, num_centres)
                nn.init.normal_(self.centre_head.weight, std=0.01)
                with torch.no_grad():
                    self.centre_head.bias.copy_(torch.logit((torch.arange(num_centres) + 0.5) / num_centres))
        else:
            # F_d: the two location logits a (stride) and b (centre), from the averaged features
            # ("mean") or from the whole time-ordered map ("map").
            self.locator = nn.Linear(dim * (num_glimpses if locator == "map" else 1), 2)
            nn.init.normal_(self.locator.weight, std=0.01)
            with torch.no_grad():
                self.locator.bias.copy_(torch.tensor([self.INIT_STRIDE_LOGIT, 0.0]))
        self.summary_head = nn.Linear(dim, summary_dim) if summary and summary_dim > 0 else None  # F_s

    def forward(self, video: torch.Tensor) -> SamplerOutput:
        """``video`` (B, C, T, H, W) float -> :class:`SamplerOutput`."""
        b, _, t, _, _ = video.shape
        n = self.num_positions
        glimpses = video.index_select(2, glimpse_indices(t, self.num_glimpses, device=video.device))
        feats = self.detector(glimpses)
        f = feats.mean(dim=1) if feats.dim() == 3 else feats
        delta_max = (t - 1) / max(n - 1, 1)
        delta_min = self.delta_min_frac * delta_max
        glimpse_logits = centres = None
        if self.locator_kind == "keyinstance":
            glimpse_logits = self.glimpse_head(feats)
            centres = torch.sigmoid(self.centre_head(feats.flatten(1)))  # (B, C)
            positions = keyinstance_positions(centres.detach(), t, n, self.delta_min_frac)
            lo, hi = positions.min(dim=1).values, positions.max(dim=1).values
            summary = torch.sigmoid(self.summary_head(f)) if self.summary_head is not None else None
            return SamplerOutput(positions=positions, mu=(lo + hi) / 2 / max(t - 1, 1), delta=(hi - lo) / max(n - 1, 1),
                                 summary=summary, glimpse_logits=glimpse_logits, centres=centres)
        if self.locator_kind in EVIDENCE_LOCATORS:
            glimpse_logits = self.glimpse_head(feats)  # (B, G, K)
            centre, delta = self._saliency_window(glimpse_logits, t, delta_min, delta_max)
        else:
            a, b_logit = self.locator(feats.flatten(1) if self.locator_kind == "map" else f).unbind(dim=-1)
            delta = delta_min + (delta_max - delta_min) * torch.sigmoid(a)
            half = (n - 1) * delta / 2
            centre = half + (t - 1 - 2 * half) * torch.sigmoid(b_logit)
        k = torch.arange(n, device=video.device, dtype=delta.dtype) - (n - 1) / 2
        # Mathematically inside [0, T-1]; the clamp only absorbs float rounding at the ends.
        positions = (centre.unsqueeze(1) + k * delta.unsqueeze(1)).clamp(0, t - 1)
        summary = torch.sigmoid(self.summary_head(f)) if self.summary_head is not None else None
        return SamplerOutput(positions=positions, mu=centre / max(t - 1, 1), delta=delta, summary=summary,
                             glimpse_logits=glimpse_logits)

    def _saliency_window(self, glimpse_logits: torch.Tensor, t: int, delta_min: float, delta_max: float):
        """Centre and stride from per-glimpse class evidence ``(B, G, K)``.

        Saliency ``w_g`` = softmax over glimpses of the logit of the video's top class (by
        :func:`mil_logits`). Centre = saliency-weighted mean of the glimpses' cell
        centres; span = ``2 sqrt(3) sigma`` (a uniform window of length L has sigma = L / sqrt(12)),
        with sigma including each glimpse cell's own spread.
        """
        n, g = self.num_positions, glimpse_logits.shape[1]
        evidence = glimpse_logits if self.locator_grad else glimpse_logits.detach()
        top = mil_logits(evidence.detach()).argmax(dim=-1)  # (B,)
        # Attention over time on the top class's logit (temporal class activation). Normalising
        # class probabilities instead left background glimpses at ~1/K each, too flat to move.
        z = evidence.gather(2, top.view(-1, 1, 1).expand(-1, g, 1)).squeeze(2)  # (B, G)
        if self.locator_kind == "peak":
            # Only the neighbourhood of the strongest glimpse: a second burst elsewhere must not
            # stretch the window over everything in between.
            peak = z.detach().argmax(dim=1, keepdim=True)
            near = (torch.arange(g, device=z.device).unsqueeze(0) - peak).abs() <= -(-g // 4)
            z = z.masked_fill(~near, float("-inf"))
        w = z.softmax(dim=1)  # (B, G)
        cell = t / g  # each glimpse stands for the frames of its cell [g T/G, (g+1) T/G)
        x = (torch.arange(g, device=w.device, dtype=w.dtype) + 0.5) * cell - 0.5
        centre = (w * x).sum(dim=1)
        var = (w * (x - centre.unsqueeze(1)) ** 2).sum(dim=1) + cell**2 / 12
        span = 2 * math.sqrt(3.0) * var.clamp_min(1e-8).sqrt()
        delta = (span / max(n - 1, 1)).clamp(delta_min, delta_max)
        half = (n - 1) * delta / 2
        # Keep the window inside the video: push it inwards at the ends.
        centre = torch.maximum(torch.minimum(centre, (t - 1) - half), half)
        return centre, delta
