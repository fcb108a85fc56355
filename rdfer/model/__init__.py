"""The RDFER model: re-sampler, dual-stream hierarchical network, wrapper and presets."""

from .dual_stream import DualStreamHierarchical, create_sequence_model
from .rdfer import DEFAULT_CONFIG, RDFER, RDFEROutput, RDFERPrediction, wrap_with_rdfer
from .sampler import KeyExpressionSampler, read_frames, uniform_positions

__all__ = [
    "RDFER",
    "RDFEROutput",
    "RDFERPrediction",
    "DEFAULT_CONFIG",
    "wrap_with_rdfer",
    "KeyExpressionSampler",
    "DualStreamHierarchical",
    "create_sequence_model",
    "read_frames",
    "uniform_positions",
]
