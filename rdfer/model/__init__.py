"""The RDFER model: re-sampler, dual-stream hierarchical network, wrapper and presets."""

from .dual_stream import DualStreamHierarchical, create_sequence_model
from .rdfer import DEFAULT_CONFIG, RDFER, RDFEROutput, RDFERPrediction, wrap_with_rdfer
from .pair import NETWORK_CHOICES, NetworkPair, PairOutput
from .sampler import KeyExpressionSampler, read_frames, uniform_positions

__all__ = [
    "RDFER",
    "RDFEROutput",
    "RDFERPrediction",
    "NetworkPair",
    "PairOutput",
    "NETWORK_CHOICES",
    "DEFAULT_CONFIG",
    "wrap_with_rdfer",
    "KeyExpressionSampler",
    "DualStreamHierarchical",
    "create_sequence_model",
    "read_frames",
    "uniform_positions",
]
