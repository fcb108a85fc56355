"""The registry of loss rules ("strategies"), the way :mod:`rdfer.registry` keeps backbones.

A rule decides, from what :class:`~rdfer.losses.AgreementLoss` remembers about every training
video, which samples to reweight (flags ORDINARY / HARD / NOISY) and, for the label-correcting
rules, what to train each sample toward. Add one without editing rdfer::

    @rdfer.register_strategy("my_rule")
    class MyRule(rdfer.LossRule):
        def flags(self, view, options):
            ...  # (N,) flags from view.agreement, view.loss, view.mode_class, view.labels

and train with ``AgreementLoss(..., strategy="my_rule")`` (``strategy_options`` are the class's
keyword arguments).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, List, NamedTuple, Optional, Type, Union

import torch
import torch.nn.functional as F

from .agreement import ORDINARY
from .mixing import draw_mix, mix_inputs

__all__ = ["SampleView", "FlagOptions", "LossRule", "register_strategy", "list_strategies", "create_strategy",
           "is_strategy", "UnknownStrategyError"]


class SampleView(NamedTuple):
    """What is known about N samples, each (N,): the clip agreement, the (unsmoothed) CE loss, the
    clip confidence, the clip vote and the given label."""

    agreement: torch.Tensor
    loss: torch.Tensor
    confidence: torch.Tensor
    mode_class: Optional[torch.Tensor]
    labels: Optional[torch.Tensor]


class FlagOptions(NamedTuple):
    """The criterion's flag settings every rule may read."""

    t_hard: float = 0.2
    t_noisy: float = 0.1
    noisy_requires_mismatch: bool = False
    agree_min: float = 0.75
    noisy_max: float = 0.5


class UnknownStrategyError(ValueError):
    """A strategy name that is not registered."""


class LossRule:
    """One rule of :class:`~rdfer.losses.AgreementLoss`; subclass it and register it.

    Class attributes:
        reweights: its flags choose each sample's weight (``lambda_ordinary / _hard / _noisy``);
            ``False``: every sample has weight 1 and the flags only report.
        needs_votes: its flags need the clip vote and the labels (``view.mode_class``, ``view.labels``).
        needs_num_classes: it keeps (N, K) per-sample state (the criterion needs ``num_classes``).
        networks: 1, or 2 for a rule that trains two networks crosswise (``coteaching``,
            ``dividemix``): the trainer then builds a :class:`~rdfer.model.NetworkPair`, one
            criterion per network (each with its own memory, in a :class:`~rdfer.losses.PairLoss`)
            and calls :meth:`pair_step` for every batch.

    Hooks (all optional): :meth:`flags` (end of each epoch, on the remembered samples),
    :meth:`setup` (register buffers on the criterion: they are saved in checkpoints),
    :meth:`base_loss` (the per-term loss, CE by default), :meth:`targets` (soft training targets),
    :meth:`sample_weights` (per-sample weights),
    :meth:`extra_loss` (a per-sample regulariser), :meth:`end_epoch`, :meth:`corrected_labels` and,
    for two networks, :meth:`pair_step`.
    """

    name: ClassVar[str] = ""
    reweights: ClassVar[bool] = True
    needs_votes: ClassVar[bool] = False
    needs_num_classes: ClassVar[bool] = False
    networks: ClassVar[int] = 1

    def flags(self, view: SampleView, options: FlagOptions) -> torch.Tensor:
        """(N,) flags for the samples of ``view``; the default flags nothing."""
        return torch.full_like(view.agreement, ORDINARY, dtype=torch.long)

    def setup(self, criterion) -> None:
        """Called once by the criterion's constructor (register per-sample buffers here)."""

    def base_loss(self, criterion, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss of ``logits`` (B, K) against ``target``: (B,) class indices or (B, K)
        probabilities. Default: label-smoothed, optionally class-weighted cross-entropy."""
        return F.cross_entropy(logits, target, weight=criterion.class_weight,
                               label_smoothing=criterion.label_smoothing, reduction="none")

    def targets(self, criterion, target: torch.Tensor, index: torch.Tensor) -> Optional[torch.Tensor]:
        """(B, K) soft training targets for the samples ``index``, or ``None`` for the labels."""
        return None

    def sample_weights(self, criterion, index: torch.Tensor) -> Optional[torch.Tensor]:
        """(B,) weights multiplying the samples' losses (after the flags' weights), or ``None``."""
        return None

    def extra_loss(self, criterion, logits: torch.Tensor, clip_logits: torch.Tensor,
                   index: torch.Tensor) -> Optional[torch.Tensor]:
        """A per-sample (B,) term added to the loss (called once per training step), or ``None``."""
        return None

    def end_epoch(self, criterion, seen: torch.Tensor, flags: torch.Tensor) -> None:
        """End of an epoch, after the flags of the ``seen`` samples were computed (memory merged)."""

    def corrected_labels(self, criterion) -> torch.Tensor:
        """(N,) the label each training sample is trained toward now (default: the given one)."""
        return criterion.mem_label.clone()

    def pair_step(self, pair, net, video: torch.Tensor, target: torch.Tensor, index: torch.Tensor):
        """Two networks: one training step, ``(output, loss)``. ``pair`` is the
        :class:`~rdfer.losses.PairLoss` (``pair.criteria``: one criterion per network), ``net`` the
        :class:`~rdfer.model.NetworkPair` (under DistributedDataParallel: call it, never its parts);
        in training mode it returns a :class:`~rdfer.model.PairOutput`. Default: each network
        learns on its own from its criterion (an ensemble of two)."""
        first, second = pair.criteria
        mix = draw_mix(first.mixup, video.shape[0], video.device)
        out = net(mix_inputs(video, mix))
        return out, first(out.first, target, index, mix) + second(out.second, target, index, mix)


_STRATEGIES: Dict[str, Type[LossRule]] = {}


def register_strategy(name: str, *, overwrite: bool = False) -> Callable[[Type[LossRule]], Type[LossRule]]:
    """Class decorator registering a :class:`LossRule` under ``name`` (``AgreementLoss(strategy=name)``)."""
    if not name or "+" in name or "," in name:
        raise ValueError(f"invalid strategy name {name!r} (non-empty, no '+' or ',')")

    def decorator(cls: Type[LossRule]) -> Type[LossRule]:
        if not (isinstance(cls, type) and issubclass(cls, LossRule)):
            raise TypeError(f"register_strategy({name!r}) decorates a subclass of rdfer.LossRule, got {cls!r}")
        if name in _STRATEGIES and not overwrite and _STRATEGIES[name] is not cls:
            raise ValueError(f"strategy {name!r} is already registered (pass overwrite=True to replace it)")
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return decorator


def list_strategies() -> List[str]:
    """Registered strategy names, in registration order (the built-in ones first)."""
    return list(_STRATEGIES)


def is_strategy(name: str) -> bool:
    return name in _STRATEGIES


def create_strategy(name: Union[str, LossRule], **options: Any) -> LossRule:
    """The rule ``name`` built with ``options`` (its keyword arguments); a rule instance passes through."""
    if isinstance(name, LossRule):
        if options:
            raise ValueError("strategy_options are given to a strategy name, not to a rule instance")
        return name
    if name not in _STRATEGIES:
        raise UnknownStrategyError(f"unknown strategy {name!r}; choose from {', '.join(_STRATEGIES)}")
    import inspect

    params = inspect.signature(_STRATEGIES[name]).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            known = ", ".join(params) or "none"
            raise ValueError(f"strategy {name!r}: unknown strategy options {unknown}; it takes: {known}")
    options = {k: _as_number(v, params[k].default) if k in params else v for k, v in options.items()}
    try:
        return _STRATEGIES[name](**options)
    except TypeError as err:  # a value of the wrong type (the names were checked above)
        raise ValueError(f"strategy {name!r}: a strategy option has a value of the wrong type "
                         f"({', '.join(f'{k}={v!r}' for k, v in options.items())}): {err}") from None


def _as_number(value: Any, default: Any) -> Any:
    """A text value of a numeric option as the number it writes (``nan``, ``1e-3``: YAML and the
    command line give them as text), so the rule's own range check judges it."""
    if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
        try:
            return float(value) if isinstance(default, float) or not value.strip().lstrip("+-").isdigit() \
                else int(value)
        except ValueError:
            return value
    return value
