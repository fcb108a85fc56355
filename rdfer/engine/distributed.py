"""torchrun / DistributedDataParallel plumbing: one process, one GPU, or many, the same code."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "DeviceError", "check_device", "init_distributed", "is_main", "all_gather_objects", "all_agree",
           "barrier", "cleanup"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


class DeviceError(ValueError):
    """A ``--device`` that names no device, or one this machine does not have."""


def check_device(requested: str) -> None:
    """Raise :class:`DeviceError` unless ``requested`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``,
    ``mps``) is a device this machine has; nothing is allocated on it."""
    import re

    choose = "choose auto, cpu, cuda or cuda:N"
    if requested in ("auto", "cpu"):
        return
    match = re.fullmatch(r"cuda(?::(\d+))?", str(requested))
    if match:
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {requested}: CUDA is not available on this machine (torch "
                              f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu")
        count = torch.cuda.device_count()
        if match.group(1) is not None and int(match.group(1)) >= count:
            raise DeviceError(f"--device {requested}: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
        return
    if requested == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"--device mps: Apple's MPS is not available on this machine; {choose}")
        return
    raise DeviceError(f"--device {requested!r} is not a device rdfer can use; {choose}")


def _pick_device(requested: str, local_rank: int) -> torch.device:
    check_device(requested)
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if requested == "cuda":
            requested = f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(requested))
    return torch.device(requested)


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Backend: NCCL on GPUs, gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def all_gather_objects(obj: Any) -> List[Any]:
    """Every process's ``obj`` (a list of one element outside distributed runs)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_agree(flag: bool) -> bool:
    """True when ``flag`` is True in every process (one all-reduce under torchrun; ``flag`` outside).

    For decisions every process must take together, such as skipping a training step: under
    DDP one process skipping the backward pass alone hangs the others in the gradient all-reduce.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
