"""Dual-stream hierarchical network (paper Fig. 2b, Algorithm 1).

Two sequence models, ``S_m`` (short-term facial movement, within a clip) and ``S_e`` (long-term
emotional change, across clips), shared by both streams:

* movement-emotion: ``f_me = mean_n1 S_e( mean_n2 S_m(F along n2) )``
* emotion-movement: ``f_em = mean_n2 S_m( mean_n1 S_e(F along n1) )`` (the strided view)
* ``f = f_me + f_em`` (``fusion="concat"``: ``[f_me, f_em]``).
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple, Union

import torch
import torch.nn as nn
from einops import rearrange

from ..backbones.former_dfer import TransformerBlock

__all__ = ["RecurrentSequence", "create_sequence_model", "SEQUENCE_MODELS", "DualStreamHierarchical"]


class RecurrentSequence(nn.Module):
    """An LSTM/GRU as a sequence model ``(N, L, d) -> (N, L, d)``."""

    def __init__(self, cell: str, dim: int, bidirectional: bool, num_layers: int = 1) -> None:
        super().__init__()
        if bidirectional and dim % 2:
            raise ValueError(f"a bidirectional sequence model needs an even d_model, got {dim}")
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        hidden = dim // 2 if bidirectional else dim
        self.rnn = rnn(dim, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


SEQUENCE_MODELS: Dict[str, Callable[[int], nn.Module]] = {
    "bilstm": lambda d: RecurrentSequence("lstm", d, bidirectional=True),
    "lstm": lambda d: RecurrentSequence("lstm", d, bidirectional=False),
    "bigru": lambda d: RecurrentSequence("gru", d, bidirectional=True),
    "gru": lambda d: RecurrentSequence("gru", d, bidirectional=False),
    "transformer": lambda d: TransformerBlock(d, heads=8 if d % 8 == 0 else 1, mlp_dim=2 * d),
}


def create_sequence_model(spec: Union[str, Callable[[int], nn.Module]], dim: int) -> nn.Module:
    """A sequence model by name (``bilstm``, ``lstm``, ``bigru``, ``gru``, ``transformer``) or
    by a factory ``f(d_model) -> nn.Module`` mapping ``(N, L, d) -> (N, L, d)``."""
    if callable(spec):
        return spec(dim)
    if spec not in SEQUENCE_MODELS:
        raise ValueError(f"unknown sequence_model {spec!r}; choose from {sorted(SEQUENCE_MODELS)} or pass a factory")
    return SEQUENCE_MODELS[spec](dim)


class DualStreamHierarchical(nn.Module):
    """Tokens -> video feature ``f`` and clip tokens (SPEC 3.4).

    Args:
        dim: token size ``d``.
        n_clips, clip_len: ``n1`` and ``n2``.
        token_level: ``"frame"`` (input ``(B, n1*n2, d)``) or ``"clip"`` (input ``(B, n1, d)``;
            the backbone itself modelled the movement, so only ``S_e`` exists).
        sequence_model: name or factory, see :func:`create_sequence_model`.
        fusion: ``"sum"`` (Algorithm 1) or ``"concat"`` (the paper's prose).
        dual_stream: False keeps only the movement-emotion stream (Table III).
        hierarchical: False runs ``S_m`` and ``S_e`` over the flat ``n`` frames and sums
            their pooled outputs (Table III's "ensemble of two sequence models").

    Forward returns ``(f, clip_tokens)``: ``(B, out_dim)`` and ``(B, n1, d)``; the clip tokens
    are always ``mean_n2 S_m(F along n2)`` (frame-level) or the backbone's clip vectors.
    """

    def __init__(
        self,
        dim: int,
        n_clips: int,
        clip_len: int,
        token_level: str,
        sequence_model: Union[str, Callable[[int], nn.Module]] = "bilstm",
        fusion: str = "sum",
        dual_stream: bool = True,
        hierarchical: bool = True,
    ) -> None:
        super().__init__()
        if fusion not in ("sum", "concat"):
            raise ValueError(f"fusion must be 'sum' or 'concat', got {fusion!r}")
        if token_level == "clip" and not (dual_stream and hierarchical):
            raise ValueError(
                "dual_stream=False and hierarchical=False apply to frame-level backbones only: a "
                "clip-level backbone (3D CNN, CNN-LSTM, Former-DFER) already models the movement "
                "inside each clip, so there is one stream (S_e over the clips) and no hierarchy to remove."
            )
        if not hierarchical and not dual_stream:
            raise ValueError(
                "hierarchical=False already replaces both streams by an ensemble of two flat "
                "sequence models; leave dual_stream=True with it."
            )
        self.n_clips, self.clip_len, self.token_level = n_clips, clip_len, token_level
        self.fusion, self.dual_stream, self.hierarchical = fusion, dual_stream, hierarchical
        self.emotion = create_sequence_model(sequence_model, dim)  # S_e
        self.movement = create_sequence_model(sequence_model, dim) if token_level == "frame" else None  # S_m
        two = token_level == "frame" and dual_stream and fusion == "concat"
        self.out_dim = 2 * dim if two else dim

    def _fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b if self.fusion == "sum" else torch.cat([a, b], dim=-1)

    def forward(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.token_level == "clip":
            return self.emotion(tokens).mean(dim=1), tokens
        b = tokens.shape[0]
        grid = rearrange(tokens, "b (n1 n2) d -> b n1 n2 d", n1=self.n_clips)
        # S_m within each clip of n2 consecutive frames, pooled over n2 -> clip tokens.
        clip_tokens = self.movement(rearrange(grid, "b n1 n2 d -> (b n1) n2 d")).mean(dim=1)
        clip_tokens = rearrange(clip_tokens, "(b n1) d -> b n1 d", b=b)
        if not self.hierarchical:
            flat = self._fuse(self.movement(tokens).mean(dim=1), self.emotion(tokens).mean(dim=1))
            return flat, clip_tokens
        f_me = self.emotion(clip_tokens).mean(dim=1)
        if not self.dual_stream:
            return f_me, clip_tokens
        # S_e across clips on the strided view (frames j, j+n2, ...), pooled over n1, then S_m.
        strided = self.emotion(rearrange(grid, "b n1 n2 d -> (b n2) n1 d")).mean(dim=1)
        f_em = self.movement(rearrange(strided, "(b n2) d -> b n2 d", b=b)).mean(dim=1)
        return self._fuse(f_me, f_em), clip_tokens
