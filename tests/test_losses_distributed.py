"""Two gloo processes, each holding half of the samples' statistics, flag like one process."""

# These cases pin the paper's rule: noisy_class_guard=0.0 (issue 28 made 0.5 the default;
# tests/test_robust_losses.py covers the guard).

import os
from collections import namedtuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rdfer.losses import AgreementLoss

Out = namedtuple("Out", "logits clip_logits")
N = 20


def _data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(N, 7, generator=g), torch.randn(N, 4, 7, generator=g) * 2, torch.randint(0, 7, (N,), generator=g)


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logits, clips, target = _data()
        crit = AgreementLoss(num_samples=N, strategy="agreement", t_hard=0.2, t_noisy=0.1, noisy_class_guard=0.0)
        # Two lock-step batches per process, interleaved indices like a DistributedSampler.
        for step in range(2):
            idx = torch.arange(N)[rank::world][step * 5 : (step + 1) * 5]
            crit(Out(logits[idx], clips[idx]), target[idx], idx)
        flags = crit.step_epoch()
        torch.save(flags, os.path.join(out_dir, f"flags{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    logits, clips, target = _data()
    single = AgreementLoss(num_samples=N, strategy="agreement", t_hard=0.2, t_noisy=0.1, noisy_class_guard=0.0)
    single(Out(logits, clips), target, torch.arange(N))
    expected = single.step_epoch()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"flags{rank}.pt"), expected)
    assert (expected == 1).sum() == 4 and (expected == 2).sum() == 2


def _elr_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logits, clips, target = _data()
        crit = AgreementLoss(num_samples=N, strategy="elr", num_classes=7, strategy_options={"source": "clips"})
        idx = torch.arange(N)[rank::world]
        crit(Out(logits[idx], clips[idx]), target[idx], idx)
        crit.step_epoch()  # merges the per-sample buffers a rule registered, (N, K) ones too
        torch.save(crit.elr_target, os.path.join(out_dir, f"elr{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_rule_buffers_are_merged_across_processes(tmp_path):
    logits, clips, target = _data()
    single = AgreementLoss(num_samples=N, strategy="elr", num_classes=7, strategy_options={"source": "clips"})
    single(Out(logits, clips), target, torch.arange(N))
    mp.spawn(_elr_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        assert torch.allclose(torch.load(tmp_path / f"elr{rank}.pt"), single.elr_target)
    assert (single.elr_target > 0).all()
