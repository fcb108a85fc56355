"""FLOP counting that does not hide recurrent and attention layers.

fvcore's ``FlopCountAnalysis`` counts **one "flop" per multiply-add** (MAC) for convolutions and
matrix products, plus a few normalisation / pooling ops, and has *no handle* for
``aten::lstm``, ``aten::gru``, ``aten::rnn_tanh`` / ``aten::rnn_relu`` or
``aten::scaled_dot_product_attention``: those layers silently count as zero. A wrapper built
from LSTMs therefore looks free in an fvcore table.

:func:`count_flops` runs fvcore with its own handles untouched and adds handles for those ops,
**in fvcore's unit** (1 per multiply-add), so the two totals can be compared directly:

* ``fvcore_total``: what ``FlopCountAnalysis(model, inputs).total()`` reports;
* ``full_total``: ``fvcore_total`` + the MACs of the ops in :data:`EXTRA_HANDLES`.

What the extra handles count (exactly; the unit tests check these against hand counts):

* **Recurrent layers** (``aten::lstm``, ``aten::gru``, ``aten::rnn_tanh``, ``aten::rnn_relu``,
  padded or packed input): every weight *matrix* of every layer and direction is multiplied with
  one vector per input token, so ``MACs = tokens * sum(numel(W) for every 2-D weight)`` with
  ``tokens = batch * time steps`` (``prod(input.shape[:-1])``; for a packed sequence, its number
  of rows). For an LSTM that is, per layer, per direction, per token,
  ``4 * hidden * (input_size + hidden)`` (``4 * hidden * input_size + 4 * hidden * proj_size
  + proj_size * hidden`` with ``proj_size``); for a GRU ``3 * ...``, for a plain RNN ``1 * ...``.
  **Not counted**: biases and the gate non-linearities / element-wise products (an LSTM cell does
  about 9 element-wise operations per hidden unit per token, a GRU about 8) -- fvcore does not
  count the bias of ``aten::linear`` / ``aten::addmm`` either, nor element-wise ops.
* ``aten::scaled_dot_product_attention``: the two dense products ``Q K^T`` and ``A V``:
  ``MACs = prod(Q.shape[:-1]) * S * (E + Ev)`` for ``Q (..., L, E)``, ``K (..., S, E)``,
  ``V (..., S, Ev)`` -- what fvcore counts when attention is written with ``@``. The softmax,
  the scale and the mask are not counted; a causal mask is counted dense (as written, not as a
  kernel may skip it).
* ``aten::baddbmm``: the batched product ``b * n * m * p`` (the added term is not counted).

Everything else fvcore has no handle for is listed in :attr:`FlopReport.uncounted_ops`, split
into :attr:`FlopReport.elementwise_uncounted` (element-wise, reductions, pooling, indexing: not
matrix work, deliberately left out of both totals, as fvcore does) and
:attr:`FlopReport.unknown_uncounted` (ops this module does not know: they may hide matrix work,
so a non-empty list means ``full_total`` may still be low).

fvcore is imported inside the functions, so ``import rdfer`` stays light.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

__all__ = [
    "FlopReport",
    "count_flops",
    "recurrent_flop_jit",
    "sdpa_flop_jit",
    "baddbmm_flop_jit",
    "EXTRA_HANDLES",
    "ELEMENTWISE_OPS",
    "UNIT",
    "count_parameters",
]

UNIT = "1 per multiply-add (fvcore's unit)"

Handle = Callable[[List[Any], List[Any]], Union[Counter, int]]


def _shape(value: Any) -> Optional[List[int]]:
    """Shape of a traced ``torch._C.Value`` when the tracer recorded it, else None."""
    if value.isCompleteTensor():
        return list(value.type().sizes())
    return None


def _is_tensor_list(value: Any) -> bool:
    return str(value.type()) in ("List[Tensor]", "Tensor[]")


def recurrent_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle for ``aten::lstm`` / ``aten::gru`` / ``aten::rnn_tanh`` / ``aten::rnn_relu``.

    Both overloads are handled: ``(input, hx, params, has_biases, num_layers, dropout, train,
    bidirectional, batch_first)`` and the packed ``(data, batch_sizes, hx, params, ...)``. The
    weights are the last ``Tensor[]`` input (for the LSTM, ``hx`` is a ``Tensor[]`` too, before
    it), built by a ``prim::ListConstruct`` whose element shapes the tracer records.

    Returns:
        ``tokens * (sum of the sizes of the 2-D weights)`` multiply-adds, where
        ``tokens = prod(input.shape[:-1])`` (batch x time, or the packed rows). Biases (1-D)
        and the element-wise gate arithmetic are not counted, like fvcore's linear handle.
    """
    data_shape = _shape(inputs[0])
    lists = [v for v in inputs if _is_tensor_list(v)]
    if data_shape is None or not lists:
        raise ValueError("recurrent_flop_jit: the traced node has no input shape or no weight list")
    params = lists[-1].node()
    if params.kind() != "prim::ListConstruct":
        raise ValueError(f"recurrent_flop_jit: weights come from {params.kind()}, not a list of tensors; cannot count")
    weight_sizes = []
    for w in params.inputs():
        shape = _shape(w)
        if shape is None:
            raise ValueError("recurrent_flop_jit: a weight of the recurrent layer has no recorded shape")
        if len(shape) == 2:  # W_ih, W_hh, W_hr; 1-D tensors are biases
            weight_sizes.append(shape[0] * shape[1])
    tokens = math.prod(data_shape[:-1])
    return int(tokens * sum(weight_sizes))


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention(Q, K, V, ...)``.

    ``Q (..., L, E)``, ``K (..., S, E)``, ``V (..., S, Ev)`` -> ``prod(Q.shape[:-1]) * S * (E + Ev)``
    multiply-adds (``Q K^T`` and ``A V``; batch/head axes broadcast from ``Q``).
    """
    q, k, v = (_shape(inputs[i]) for i in range(3))
    if q is None or k is None or v is None:
        raise ValueError("sdpa_flop_jit: query/key/value shapes were not recorded by the tracer")
    return int(math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1]))


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle for ``aten::baddbmm(input, batch1 (b, n, m), batch2 (b, m, p))``: ``b*n*m*p``."""
    b1, b2 = _shape(inputs[1]), _shape(inputs[2])
    if b1 is None or b2 is None:
        raise ValueError("baddbmm_flop_jit: operand shapes were not recorded by the tracer")
    return int(b1[0] * b1[1] * b1[2] * b2[2])


#: The handles :func:`count_flops` adds to fvcore's defaults (none of these ops has one in fvcore).
EXTRA_HANDLES: Dict[str, Handle] = {
    "aten::lstm": recurrent_flop_jit,
    "aten::gru": recurrent_flop_jit,
    "aten::rnn_tanh": recurrent_flop_jit,
    "aten::rnn_relu": recurrent_flop_jit,
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::baddbmm": baddbmm_flop_jit,
}

#: Ops fvcore skips that are not matrix work (element-wise arithmetic and activations,
#: reductions, pooling, indexing, resampling): left out of both totals, listed for the record.
ELEMENTWISE_OPS = frozenset(
    "aten::" + op
    for op in """
    add add_ sub sub_ rsub mul mul_ div div_ neg pow sqrt rsqrt exp log abs erf reciprocal
    sigmoid sigmoid_ tanh tanh_ relu relu_ gelu silu silu_ hardswish hardswish_ hardsigmoid elu leaky_relu
    softmax log_softmax clamp_min clamp_max where masked_fill masked_fill_ fill_ zero_ lerp nan_to_num isfinite
    mean sum max min amax amin argmax norm linalg_vector_norm var std cumsum maximum minimum topk sort
    eq ne lt le gt ge
    max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d
    adaptive_avg_pool1d adaptive_avg_pool3d adaptive_max_pool2d adaptive_max_pool3d
    upsample_bicubic2d upsample_trilinear3d upsample_linear1d upsample_nearest1d upsample_nearest3d
    index_select index index_put_ scatter scatter_add roll flip repeat pad reflection_pad2d
    replication_pad2d unbind split split_with_sizes narrow select slice stack
    """.split()
) | {"prim::PythonOp.SwishFunction"}  # pytorchvideo's x * sigmoid(x) autograd Function (X3D)


@dataclasses.dataclass
class FlopReport:
    """What :func:`count_flops` found. All counts are in multiply-adds (fvcore's unit).

    Attributes:
        fvcore_total: fvcore's total with its default handles.
        full_total: ``fvcore_total`` + the MACs of the ops in :data:`EXTRA_HANDLES`.
        by_operator: full count per operator, named as fvcore names them (``conv``,
            ``linear``, ...; from our handles: ``lstm``, ``gru``, ``rnn_tanh``, ``rnn_relu``,
            ``scaled_dot_product_attention``, ``baddbmm``).
        extra_by_operator: the part of ``by_operator`` that fvcore does not count.
        by_module: ``{module name: {"fvcore": int, "full": int}}`` for the root (``""``) and
            its descendants down to ``module_depth``.
        uncounted_ops: ``{op: times seen}`` for every op with no handle after ours.
        elementwise_uncounted / unknown_uncounted: ``uncounted_ops`` split into known
            non-matrix ops (:data:`ELEMENTWISE_OPS`) and the rest.
    """

    fvcore_total: int
    full_total: int
    by_operator: Dict[str, int]
    extra_by_operator: Dict[str, int]
    by_module: Dict[str, Dict[str, int]]
    uncounted_ops: Dict[str, int]
    elementwise_uncounted: Dict[str, int]
    unknown_uncounted: Dict[str, int]

    @property
    def added(self) -> int:
        """MACs fvcore missed: ``full_total - fvcore_total``."""
        return self.full_total - self.fvcore_total

    @property
    def missed_share(self) -> float:
        """Share of the full count that fvcore missed, in [0, 1] (0 for an empty model)."""
        return self.added / self.full_total if self.full_total else 0.0

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict, with ``unit``, ``added`` and ``missed_share`` included."""
        return {"unit": UNIT, **dataclasses.asdict(self), "added": self.added, "missed_share": self.missed_share}


def _split_extra(counter: Mapping[str, int], extra_keys: Iterable[str]) -> Tuple[int, int]:
    """(full, fvcore-only) totals of one operator Counter."""
    full = int(sum(counter.values()))
    extra = int(sum(counter.get(k, 0) for k in set(extra_keys)))
    return full, full - extra


def _tagged(op: str, handle: Handle, seen_keys: set, reserved: frozenset) -> Handle:
    """Wrap ``handle`` so the operator names it emits are remembered (they are not fvcore's)."""

    def wrapped(inputs: List[Any], outputs: List[Any]) -> Counter:
        result = handle(inputs, outputs)
        if not isinstance(result, Counter):  # a plain number: name it after the op, as fvcore does
            result = Counter({op.split("::")[-1]: int(result)})
        if reserved & set(result):
            raise ValueError(f"count_flops: the handle for {op} emits {sorted(reserved & set(result))}, names fvcore uses")
        seen_keys.update(result)
        return result

    return wrapped


def count_flops(
    model: nn.Module,
    inputs: Union[torch.Tensor, Tuple[Any, ...]],
    *,
    extra_handles: Optional[Mapping[str, Optional[Handle]]] = None,
    module_depth: int = 1,
) -> FlopReport:
    """Count a model's FLOPs with fvcore and with the recurrent/attention ops fvcore skips.

    The model is traced once (``torch.jit.trace`` through fvcore) in eval mode under
    ``torch.no_grad()``; its train/eval mode is restored afterwards.

    Args:
        model: any traceable module.
        inputs: the forward's input tensor, or a tuple of positional inputs, e.g. a video
            ``(1, 3, T, H, W)``. FLOPs scale with the batch; tables use batch 1.
        extra_handles: more ``{"aten::op": handle}`` entries for ops fvcore has no handle for
            (or ``{"aten::op": None}`` to drop one of ours: the op is then listed as uncounted).
            A handle has fvcore's signature ``(inputs, outputs) -> int | Counter`` and counts
            multiply-adds; what it returns goes to ``full_total`` only. Overriding one of fvcore's own handles is an error
            (``fvcore_total`` would no longer be fvcore's).
        module_depth: depth of the ``by_module`` breakdown (0: the root only).

    Returns:
        A :class:`FlopReport`, counts in multiply-adds.
    """
    from fvcore.nn import FlopCountAnalysis  # lazy: heavy, and only needed here

    handles: Dict[str, Optional[Handle]] = dict(EXTRA_HANDLES)
    handles.update(extra_handles or {})
    # None drops a handle: the op is then reported as uncounted (fvcore's None would hide it).
    handles = {op: h for op, h in handles.items() if h is not None}
    fvcore_ops = _fvcore_default_ops()
    clash = sorted(op for op in handles if op in fvcore_ops)
    if clash:
        raise ValueError(f"count_flops: fvcore already has handles for {clash}; extra_handles adds ops it lacks")
    if not isinstance(inputs, tuple):
        inputs = (inputs,)
    extra_keys: set = set()
    analysis = FlopCountAnalysis(model, inputs)
    reserved = frozenset(op.split("::")[-1] for op in fvcore_ops)
    analysis.set_op_handle(**{op: _tagged(op, h, extra_keys, reserved) for op, h in handles.items()})
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            per_module = analysis.by_module_and_operator()
            uncounted = dict(analysis.unsupported_ops())
    finally:
        model.train(was_training)

    full, fvcore_only = _split_extra(per_module[""], extra_keys)
    by_module: Dict[str, Dict[str, int]] = {}
    for name, counter in per_module.items():
        if (name.count(".") + 1 if name else 0) <= module_depth:
            f, v = _split_extra(counter, extra_keys)
            by_module[name] = {"fvcore": v, "full": f}
    return FlopReport(
        fvcore_total=fvcore_only,
        full_total=full,
        by_operator={k: int(v) for k, v in sorted(per_module[""].items())},
        extra_by_operator={k: int(v) for k, v in sorted(per_module[""].items()) if k in extra_keys},
        by_module=by_module,
        uncounted_ops=dict(sorted(uncounted.items())),
        elementwise_uncounted={k: v for k, v in sorted(uncounted.items()) if k in ELEMENTWISE_OPS},
        unknown_uncounted={k: v for k, v in sorted(uncounted.items()) if k not in ELEMENTWISE_OPS},
    )


def _fvcore_default_ops() -> frozenset:
    """The ops fvcore's FlopCountAnalysis has default handles for."""
    try:
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS  # private, but stable since 2021

        return frozenset(_DEFAULT_SUPPORTED_OPS)
    except ImportError:  # a future fvcore: skip the check rather than fail
        return frozenset()


def count_parameters(model: nn.Module, modules: Iterable[str] = ()) -> Dict[str, int]:
    """Parameter counts: ``{"total": ..., <name>: ...}`` for each named submodule in ``modules``."""
    counts = {"total": sum(p.numel() for p in model.parameters())}
    named = dict(model.named_modules())
    for name in modules:
        if name in named:
            counts[name] = sum(p.numel() for p in named[name].parameters())
    return counts
