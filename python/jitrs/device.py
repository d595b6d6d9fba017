"""Process and device setup, the one place for it: which device, which rank, and the numerics settings that go
with the device. Used by `train`, `sample`, `eval` and `toy`.

On a CPU, denormal floats are flushed to zero. JiT's adaLN-Zero and final layers start at zero, so the first
updates are tiny and the activations behind them denormal; x86 computes on denormals up to ~100× slower. Flushing
them made a JiT-S training step 12× faster here with the same losses to the logged digits (README, "demo").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from jitrs.errors import UserError


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank, world size and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(device: str | None, param: str = "device") -> torch.device:
    """The device asked for (default: this process's CUDA device when there is one, else the CPU), made ready:
    `torch.cuda.set_device` for CUDA, so streams and events default to it; denormals flushed on the CPU."""
    if device is None:
        want = torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            want = torch.device(device)
        except RuntimeError:
            raise UserError("not a torch device (e.g. cpu, cuda, cuda:1)", param=param, value=device) from None
    if want.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("CUDA is not available on this machine", param=param, value=device)
        if want.index is None:
            want = torch.device("cuda", local_rank())
        torch.cuda.set_device(want)
    elif want.type == "cpu":
        torch.set_flush_denormal(True)
    return want


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """torchrun's WORLD_SIZE; 1 for a plain process."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_distributed(device: str | None, backend: str | None = None) -> Dist:
    """One process, or torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK): NCCL on CUDA, gloo on CPU
    (or `backend`, e.g. gloo for jobs whose ranks only ever wait for each other)."""
    world = world_size()
    want = pick_device(device)
    if world > 1 and want.type == "cuda" and want.index != local_rank():
        want = pick_device(f"cuda:{local_rank()}")  # one GPU per process, whatever --device names
    if world == 1:
        return Dist(0, 1, want)
    if not dist.is_initialized():
        if backend is None and want.type == "cuda":
            dist.init_process_group("nccl", device_id=want)
        else:
            dist.init_process_group(backend or "gloo")
    return Dist(dist.get_rank(), world, want)


def decode_threads() -> int:
    """The usable cores shared among the processes of this node (torchrun sets LOCAL_WORLD_SIZE)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
