"""Co-teaching (Han et al., NeurIPS 2018) and Co-teaching+ (Yu et al., ICML 2019): two networks,
each trained on the samples the *other* finds easy (its small-loss share of the batch), so that
one network's memorised wrong labels do not become the other's lesson."""

from __future__ import annotations

import torch

from .agreement import NOISY, ORDINARY, _count
from .mixing import draw_mix, mix_inputs
from .registry import FlagOptions, LossRule, SampleView, register_strategy


@register_strategy("coteaching")
class CoTeaching(LossRule):
    """Args:
        forget_rate: the share of each batch a network leaves out of its peer's lesson once the
            schedule is complete (0.2; Co-teaching sets it to the noise rate when that is known).
        num_gradual: epochs over which the left-out share grows linearly from 0 (Co-teaching's
            ``T_k``; 3).
        plus: Co-teaching+: from the start epoch (``--warmup-epochs``) on, only the samples on
            which the two networks disagree take part in the exchange (all, in a batch where they
            agree on every sample).

    Flags (a report, no sample reweighted by them): each network's largest-loss ``forget_rate``
    share of the training set is NOISY.
    """

    reweights = False
    networks = 2

    def __init__(self, forget_rate: float = 0.2, num_gradual: int = 3, plus: bool = False) -> None:
        if not 0.0 <= forget_rate < 1.0:
            raise ValueError(f"coteaching forget_rate must be in [0, 1), got {forget_rate}")
        if int(num_gradual) < 0:
            raise ValueError(f"coteaching num_gradual must be >= 0, got {num_gradual}")
        if isinstance(plus, str):
            plus = {"true": True, "false": False}.get(plus.lower(), plus)
        if not isinstance(plus, bool):
            raise ValueError(f"coteaching plus must be true or false, got {plus!r}")
        self.forget_rate, self.num_gradual, self.plus = float(forget_rate), int(num_gradual), plus

    def rate(self, epoch: int) -> float:
        """The share left out in ``epoch`` (0-based): ``forget_rate * min(1, epoch / num_gradual)``."""
        if self.num_gradual == 0:
            return self.forget_rate
        return self.forget_rate * min(1.0, epoch / self.num_gradual)

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        flags = torch.full_like(view.loss, ORDINARY, dtype=torch.long)
        k = _count(self.forget_rate, view.loss.numel())
        if k:
            flags[view.loss.topk(k).indices] = NOISY
        return flags

    def pair_step(self, pair, net, video: torch.Tensor, target: torch.Tensor, index: torch.Tensor):
        first, second = pair.criteria
        mix = draw_mix(first.mixup, video.shape[0], video.device)
        out = net(mix_inputs(video, mix))
        loss_a = first.sample_losses(out.first, target, index, mix)
        loss_b = second.sample_losses(out.second, target, index, mix)
        pool = torch.arange(target.shape[0], device=loss_a.device)
        epoch = int(first.epoch)
        if self.plus and epoch >= first.start_epoch:
            disagree = out.first.logits.argmax(dim=1) != out.second.logits.argmax(dim=1)
            if bool(disagree.any()):
                pool = disagree.nonzero().squeeze(1)
        keep = max(1, round((1.0 - self.rate(epoch)) * pool.numel()))
        easy_a = pool[loss_a.detach()[pool].argsort()[:keep]]  # network A's small-loss samples teach B
        easy_b = pool[loss_b.detach()[pool].argsort()[:keep]]
        return out, loss_a[easy_b].mean() + loss_b[easy_a].mean()
