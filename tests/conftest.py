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
def real_clip():
    """``real_clip(name) -> Path`` of a real test clip; skips the test when the clip is absent
    (pip users and machines without ``../shared/data/real-video``)."""

    def find(name: str) -> Path:
        path = REAL_VIDEO_DIR / name
        if not path.is_file():
            pytest.skip(f"real test clip not present: {path}")
        return path

    return find


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# A tiny, deterministic training recipe shared by the end-to-end tests: rdfer_small with
# GroupNorm (no batch statistics), 8 frames of 32 px, no augmentation, CPU, no workers.
GN_OPTIONS = {
    "backbone_kwargs": {"widths": [8, 16, 32, 32], "norm": "gn"},
    "detector_kwargs": {"widths": [8, 16, 16, 16], "norm": "gn"},
    "d_model": 32,
    "summary_dim": 8,
    "num_glimpses": 4,
    "clip_len": 2,
}


def tiny_config(out, **overrides):
    from rdfer.engine.config import TrainConfig

    values = dict(
        dataset="synthetic", synthetic_train=48, synthetic_test=24, noise_rate=0.25, num_frames=8, image_size=32,
        model="rdfer_small", model_options=dict(GN_OPTIONS), epochs=2, warmup_epochs=1, batch_size=8, lr=3e-3,
        min_lr=1e-4, workers=0, augment=False, device="cpu", progress=False, out=str(out), seed=0,
        strategy="agreement",  # the engine tests count the paper's flags, whatever the library default
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One trained tiny model (run folder), shared by eval / audit / analyze / export / predict tests."""
    from rdfer.engine.train import train

    out = tmp_path_factory.mktemp("trained_run")
    results = train(tiny_config(out, epochs=3))
    return out, results
