"""Process group set-up for data-parallel training under ``torchrun``.

The engine is the only user: experiment code never sees ranks. When the ``torchrun``
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) are present, a process group is
started (gloo on CPU, NCCL on CUDA); otherwise everything runs in-process with world size 1.
Rank 0 is the only process that writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_distributed", "is_main_process", "resolve_device"]


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0: the one process that prints and writes shared files."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """Map a config device ("auto" | "cpu" | "cuda") to a concrete ``torch.device``.

    Raises:
        ValueError: for an unknown device name, or "cuda" without a CUDA device.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but torch.cuda.is_available() is False")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    raise ValueError(f"device must be one of 'auto', 'cpu', 'cuda', got {device!r}")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) data-parallel job."""

    rank: int  # global rank of this process
    world_size: int  # number of processes
    device: torch.device  # the device this process trains on

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a torch.distributed process group is active."""
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order (picklable objects; tensors should be on CPU)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed(device: str) -> DistContext:
    """Start (or join) the process group described by torchrun's environment, if any.

    Args:
        device: the config's device ("auto" | "cpu" | "cuda").

    Returns:
        The context; world size 1 when not launched by torchrun.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
            dist.init_process_group("nccl", device_id=torch_device)
        else:
            dist.init_process_group("gloo")
    if world_size > 1:
        rank = dist.get_rank()
        world_size = dist.get_world_size()
    return DistContext(rank=rank, world_size=world_size, device=torch_device)
