"""Export a trained RDFER model for inference: ONNX (onnxruntime) or TorchScript."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch
import torch.nn as nn

from ..model.rdfer import RDFEROutput

__all__ = ["export_model"]


def export_model(
    model: nn.Module,
    path: Union[str, os.PathLike],
    fmt: str = "onnx",
    num_frames: int = 16,
    image_size: int = 112,
    channels: int = 3,
) -> Path:
    """Export ``model`` for inputs ``(B, channels, num_frames, image_size, image_size)``.

    The batch axis is dynamic; ``num_frames`` and the frame size are fixed at export (the
    re-sampler's arithmetic depends on T). Outputs keep :class:`RDFEROutput`'s field order.
    ONNX uses the TorchScript-based exporter (opset 17), which needs no extra package.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.zeros(1, channels, num_frames, image_size, image_size, device=next(model.parameters()).device)
    tmp = path.with_name(f".{path.name}.tmp")
    with torch.no_grad():
        if fmt == "onnx":
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=17, input_names=["video"],
                output_names=list(RDFEROutput._fields),
                dynamic_axes={"video": {0: "batch"}, **{k: {0: "batch"} for k in RDFEROutput._fields}},
            )
        elif fmt == "torchscript":
            traced = torch.jit.trace(model, example, strict=False)
            torch.jit.save(traced, str(tmp))
        else:
            raise ValueError(f"format must be 'onnx' or 'torchscript', got {fmt!r}")
    os.replace(tmp, path)
    return path
