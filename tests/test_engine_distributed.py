"""torchrun with 2 gloo processes gives the metrics of 1 process for the same global batch."""

import json
import os
import subprocess
import sys

import pytest

from conftest import GN_OPTIONS, REPO


def _run(tmp_path, nproc):
    out = tmp_path / f"np{nproc}"
    opts = [f"--model-option={k}={json.dumps(v)}" for k, v in GN_OPTIONS.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "rdfer", "train", "synthetic", "--synthetic-train", "32", "--synthetic-test", "16",
           "--noise-rate", "0.25", "--num-frames", "8", "--image-size", "32", "--epochs", "2",
           "--warmup-epochs", "1", "--batch-size", "8", "--lr", "3e-3", "--min-lr", "1e-4", "--workers", "0",
           "--no-augment", "--device", "cpu", "--quiet", "--out", str(out)] + opts
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "results.json").read_text())


def test_two_processes_match_one(tmp_path):
    rows1, res1 = _run(tmp_path, 1)
    rows2, res2 = _run(tmp_path, 2)
    for a, b in zip(rows1, rows2):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["flagged_hard"] == b["flagged_hard"] and a["flagged_noisy"] == b["flagged_noisy"]
    t1, t2 = res1["test_last_epoch"], res2["test_last_epoch"]
    assert t2["num_samples"] == t1["num_samples"] == 16  # DistributedSampler padding removed
    assert t1["war"] == pytest.approx(t2["war"], abs=1 / 16 + 1e-9)
