"""Shared fixtures. Everything runs on CPU at tiny shapes (8-16 frames of 32 px, batch 2)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
# pytorchvideo and torch.jit emit deprecation noise on import; it is not ours to fix.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

REPO = Path(__file__).resolve().parents[1]
REAL_VIDEO_DIR = REPO.parent / "shared" / "data" / "real-video"


@pytest.fixture
def real_video_dir() -> Path:
    if not REAL_VIDEO_DIR.is_dir():
        pytest.skip(f"real test clips not present at {REAL_VIDEO_DIR}")
    return REAL_VIDEO_DIR


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
