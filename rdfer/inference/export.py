"""Export a trained RDFER model for inference: ONNX (onnxruntime) or TorchScript."""

from __future__ import annotations

import io
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Union

import torch
import torch.nn as nn

from ..model.rdfer import RDFEROutput

__all__ = ["export_model", "HARMLESS_EXPORT_WARNINGS"]

#: Warnings that tracing rdfer's model always raises and that do not make the export wrong, as
#: (category, message regex, module regex). Each is checked by tests/test_inference.py, which
#: compares both exports with PyTorch at another batch size than the one traced:
HARMLESS_EXPORT_WARNINGS = (
    # The re-sampler reads T (fixed at export by design) as a Python number: a constant is right.
    (torch.jit.TracerWarning, r"Converting a tensor to a Python (boolean|float|integer|number)", r"rdfer\.model\.sampler"),
    # The LSTMs start from zero states, which ONNX builds for any batch size (batch 3 is tested).
    (UserWarning, r"Exporting a model to ONNX with a batch_size other than 1", r""),
    # torch's deprecation notices for torch.jit.trace / save, the exporter rdfer uses on purpose.
    (FutureWarning, r"`torch\.jit\.\w+` is deprecated", r""),
)


@contextmanager
def _without_harmless_warnings():
    with warnings.catch_warnings():
        for category, message, module in HARMLESS_EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


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
    ONNX uses the TorchScript-based exporter (opset 17); it needs the ``onnx`` package
    (``pip install 'rdfer[export]'``). The tracer warnings listed in
    :data:`HARMLESS_EXPORT_WARNINGS` are silenced; any other warning is shown.

    The file is written atomically (a temporary beside it, renamed into place): a failed export
    leaves no temporary and the previous file intact; a full disk raises
    :class:`~rdfer.engine.checkpoint.DiskFullError` naming the file.
    """
    from ..engine.checkpoint import atomic_path

    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"format must be 'onnx' or 'torchscript', got {fmt!r}")
    if fmt == "onnx":
        from ..extras import require_extra

        require_extra("export", "ONNX export", ("onnx",))  # torch's own message does not name the package
    path = Path(path)
    model = model.eval()
    example = torch.zeros(1, channels, num_frames, image_size, image_size, device=next(model.parameters()).device)
    # Exported into memory, then written by Python: a failed write is then an OSError (ENOSPC on
    # a full disk), not a C++ exception with its trace, and atomic_path turns it into one line.
    buffer = io.BytesIO()
    with torch.no_grad(), _without_harmless_warnings():
        if fmt == "onnx":
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=17, input_names=["video"],
                output_names=list(RDFEROutput._fields),
                dynamic_axes={"video": {0: "batch"}, **{k: {0: "batch"} for k in RDFEROutput._fields}},
            )
        else:
            traced = torch.jit.trace(model, example, strict=False)
            torch.jit.save(traced, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    return path
