"""Optional dependencies ("extras") and the error that names the one to install.

| extra | what needs it |
|---|---|
| ``faces`` | ``rdfer predict`` / :func:`rdfer.predict_video` with face detection (OpenCV's Haar cascade) |
| ``viz`` | ``rdfer analyze`` (matplotlib figures, scikit-learn t-SNE); confusion.png is skipped without it |
| ``export`` | ``rdfer export --format onnx`` (onnx; onnxruntime to run the exported model) |
| ``tensorboard`` | TensorBoard event files in the run folder (skipped without it) |
"""

from __future__ import annotations

import importlib.util
from typing import Dict, Sequence

__all__ = ["EXTRAS", "MissingExtraError", "require_extra"]

#: extra name -> the import names it provides.
EXTRAS: Dict[str, Sequence[str]] = {
    "faces": ("cv2",),
    "viz": ("matplotlib", "sklearn"),
    "export": ("onnx", "onnxruntime"),
    "tensorboard": ("tensorboard",),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def require_extra(extra: str, what: str, modules: Sequence[str] = ()) -> None:
    """Raise :class:`MissingExtraError` before any work starts when ``extra``'s modules are missing.

    Args:
        extra: a key of :data:`EXTRAS`.
        what: the feature, for the message (e.g. ``"rdfer analyze"``).
        modules: the import names actually needed (default: all of the extra's).
    """
    missing = [m for m in (modules or EXTRAS[extra]) if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"{what} needs {' and '.join(missing)}, not installed: pip install 'rdfer[{extra}]' "
            f"(or 'rdfer[all]')"
        )
