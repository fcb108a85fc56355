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
        noisy_class_guard=0.0,
        logit_adjustment=0.0,  # the paper's loss (the default "auto" depends on the drawn class counts)
    )
    values.update(overrides)
    return TrainConfig(**values)


def assert_resume_is_bit_identical(tmp_path, **cfg) -> None:
    """Training ``cfg`` straight through, and stopped after epoch 1 then resumed, gives the same
    weights (bit for bit) and the same test metrics."""
    from safetensors.torch import load_file

    from rdfer.engine.train import train

    straight = train(tiny_config(tmp_path / "straight", **cfg))
    train(tiny_config(tmp_path / "resumed", stop_after=1, **cfg))
    resumed = train(tiny_config(tmp_path / "resumed", resume=True, **cfg))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert straight["test_last_epoch"] == resumed["test_last_epoch"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One trained tiny model (run folder), shared by eval / audit / analyze / export / predict tests."""
    from rdfer.engine.train import train

    out = tmp_path_factory.mktemp("trained_run")
    results = train(tiny_config(out, epochs=3))
    return out, results


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """No test reaches the network (issue 27): a Python-level connection to anything but this
    machine fails at once, saying why. Loopback and Unix sockets (multiprocessing, a test's own
    listener) still work; tests/test_reliability_inputs.py also checks FFmpeg's C-level opens."""
    import errno
    import ipaddress
    import socket

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        host = address[0] if isinstance(address, tuple) else address
        try:
            local = ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            local = host == "localhost"
        if not local:
            raise OSError(errno.ENETUNREACH, f"the tests never use the network (connection to {address!r} blocked "
                          f"by tests/conftest.py)")

    def connect(self, address):
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(self, address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
