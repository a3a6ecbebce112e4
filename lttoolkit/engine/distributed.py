"""Distributed training through PyTorch's own engine (torchrun, DistributedDataParallel).

``torchrun --nproc_per_node=N -m lttoolkit train CONFIG`` needs no code change:
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
address; :func:`distributed_session` starts the process group from them (NCCL
on GPUs, gloo on the CPU) and ends it when training is done. Multi-node
torchrun works the same way.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from lttoolkit.errors import ConfigError

__all__ = [
    "DistributedInfo",
    "distributed_session",
    "current",
    "shard_indices",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "broadcast_buffers",
]


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process stands: rank, world size and local rank (0/1/0 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistributedInfo:
    """The running process group's view, or a single-process one."""
    if dist.is_available() and dist.is_initialized():
        return DistributedInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistributedInfo()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


@contextmanager
def distributed_session(device_type: str) -> Iterator[DistributedInfo]:
    """Start a process group when launched by torchrun (``WORLD_SIZE`` > 1), end it afterwards.

    Args:
        device_type: ``"cuda"`` selects NCCL and pins this process to ``cuda:LOCAL_RANK``;
            anything else selects gloo.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1 or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    local_rank = _env_int("LOCAL_RANK", 0)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def shard_indices(length: int, info: DistributedInfo) -> list[int]:
    """Indices ``rank, rank + world, ...`` of ``range(length)``: disjoint shards, no padding.

    Evaluation uses this so that summed per-rank counts equal the single-process counts.

    >>> shard_indices(5, DistributedInfo(rank=1, world_size=2))
    [1, 3]
    """
    return list(range(info.rank, length, info.world_size))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes in place (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every process (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (e.g. a run folder name with a timestamp)."""
    if dist.is_available() and dist.is_initialized():
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]
    return obj


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every process.

    DDP keeps parameters equal but each rank's last forward updates its own running
    statistics; evaluating and checkpointing rank 0's buffers everywhere keeps the
    distributed evaluation equal to a single-process evaluation of the checkpoint.
    """
    if dist.is_available() and dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
