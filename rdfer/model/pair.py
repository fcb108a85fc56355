"""Two networks of one architecture, trained crosswise by a two-network loss rule (``coteaching``,
``dividemix``) and used together: at inference the pair's output is their average."""

from __future__ import annotations

from typing import Any, Dict, NamedTuple

import torch
import torch.nn as nn

from .rdfer import RDFER, RDFEROutput

__all__ = ["NetworkPair", "PairOutput", "NETWORK_CHOICES"]

#: What a pair returns at inference: the average of both networks (default) or one of them.
NETWORK_CHOICES = ("average", "first", "second")


class PairOutput(NamedTuple):
    """Both networks' outputs (a training-mode forward pass)."""

    first: Any
    second: Any

    @property
    def logits(self) -> torch.Tensor:
        """(B, K) the average of the two networks' logits (what the training log's accuracy reads)."""
        return (self.first.logits + self.second.logits) / 2


class NetworkPair(nn.Module):
    """Two networks (``networks[0]``, ``networks[1]``) behind one model interface.

    Training mode: ``pair(video)`` runs both and returns a :class:`PairOutput`. Eval mode: one
    :class:`~rdfer.RDFEROutput` -- with ``use="average"`` (default) the mean of both networks'
    logits, clip logits and glimpse logits (where the model looked, ``mu``, ``delta``,
    ``positions``, ``features`` and ``centres``, is the first network's); ``"first"`` /
    ``"second"``: that network alone, at half the cost. Saved and loaded as one checkpoint
    (``config["networks"] == 2``).
    """

    def __init__(self, first: nn.Module, second: nn.Module, use: str = "average") -> None:
        super().__init__()
        self.networks = nn.ModuleList([first, second])
        self.use = use

    @property
    def use(self) -> str:
        return self._use

    @use.setter
    def use(self, value: str) -> None:
        if value not in NETWORK_CHOICES:
            raise ValueError(f"network must be one of {', '.join(NETWORK_CHOICES)}, got {value!r}")
        self._use = value

    @property
    def config(self) -> Dict[str, Any]:
        return {**self.networks[0].config, "networks": 2}

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or name in ("networks", "data_config"):
                raise
            # n_clips, num_classes, feature_dim, sampler, ...: the first network's
            return getattr(self._modules["networks"][0], name)

    def set_epoch(self, epoch: int) -> None:
        for net in self.networks:
            if hasattr(net, "set_epoch"):
                net.set_epoch(epoch)

    def forward(self, video: torch.Tensor):
        if self.training:
            return PairOutput(self.networks[0](video), self.networks[1](video))
        if self.use != "average":
            return self.networks[NETWORK_CHOICES.index(self.use) - 1](video)
        a, b = self.networks[0](video), self.networks[1](video)
        fields = {name: getattr(a, name) for name in RDFEROutput._fields}
        for name in ("logits", "clip_logits", "glimpse_logits"):
            fields[name] = (getattr(a, name) + getattr(b, name)) / 2
        return RDFEROutput(**fields)

    predict = RDFER.predict
