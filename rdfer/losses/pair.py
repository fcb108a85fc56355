"""The criterion of two networks trained crosswise (a rule with ``networks = 2``)."""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

from .criterion import AgreementLoss

__all__ = ["PairLoss"]

# What the trainer and the reports read of a criterion: the first network's (its flags, memory and
# corrected labels describe the training set; the second's are in ``criteria[1]``).
_FIRST_NETWORKS = ("flags", "active", "scope", "start_epoch", "logit_adjustment", "last_flags", "epoch", "mixup",
                   "num_samples", "num_classes", "strategy", "mem_agreement", "mem_loss", "mem_confidence", "mem_mode",
                   "mem_label", "mem_stamp")


class PairLoss(nn.Module):
    """One :class:`AgreementLoss` per network of a :class:`~rdfer.model.NetworkPair`, each with its
    own memory (saved in checkpoints as ``criteria.0.*`` and ``criteria.1.*``); the rule's
    :meth:`~rdfer.LossRule.pair_step` makes each network learn from what the other says.

    Build it with the criteria's arguments: ``PairLoss(num_samples=N, strategy="dividemix", ...)``.
    """

    def __init__(self, **criterion_kwargs) -> None:
        super().__init__()
        self.criteria = nn.ModuleList([AgreementLoss(**criterion_kwargs) for _ in range(2)])
        self.rule = self.criteria[0].rule
        if self.rule.networks != 2:
            raise ValueError(f"strategy {self.rule.name!r} trains one network; use AgreementLoss")

    def step(self, net: nn.Module, video: torch.Tensor, target: torch.Tensor, index: torch.Tensor):
        """``(output, loss)`` of one training step of both networks (:meth:`LossRule.pair_step`)."""
        return self.rule.pair_step(self, net, video, target, index)

    def forward(self, output, target: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Each network's criterion on its own output (a :class:`~rdfer.model.PairOutput`), summed."""
        return self.criteria[0](output.first, target, index) + self.criteria[1](output.second, target, index)

    @torch.no_grad()
    def step_epoch(self) -> torch.Tensor:
        """End of an epoch for both criteria; returns the first network's flags."""
        flags: List[torch.Tensor] = [c.step_epoch() for c in self.criteria]
        return flags[0]

    @torch.no_grad()
    def corrected_labels(self) -> torch.Tensor:
        return self.criteria[0].corrected_labels()

    def class_recall(self, num_classes=None) -> torch.Tensor:
        return self.criteria[0].class_recall(num_classes)


for _name in _FIRST_NETWORKS:
    setattr(PairLoss, _name, property(lambda self, _n=_name: getattr(self.criteria[0], _n),
                                      doc=f"The first network's ``{_name}``."))
