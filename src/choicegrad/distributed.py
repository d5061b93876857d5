"""Data-parallel training across the processes torchrun starts: torch.distributed, nothing more.

    torchrun --nproc-per-node=2 -m choicegrad fit-scorer table.csv --features 's?' --score y --out runs/one

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for each process; `join`
makes them one process group (nccl for CUDA devices, gloo for the CPU). Every rank reads the table,
takes its share of every global batch and trains a DistributedDataParallel copy of the model; rank 0
alone writes the run folder and logs. Without WORLD_SIZE > 1 every function here is a no-op for one
process, so the same code path serves both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: rank, size (processes) and local_rank (on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, index: Tensor) -> Tensor:
        """This rank's contiguous part of `index` (N,): parts differ in length by at most one, and
        a rank may get none when N < size (it still joins every collective)."""
        return index.tensor_split(self.size)[self.rank] if self.distributed else index


def current() -> World:
    """The world of this process: its process group's, or one process when there is none."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def is_main() -> bool:
    """Whether this process is rank 0 (or the only one): by its process group, else by torchrun's
    RANK (so it holds before joining and after leaving)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def join(device: str) -> tuple[World, str]:
    """Join torchrun's process group when this process was started by it with WORLD_SIZE > 1.

    -> (the world, this rank's device: "cuda" becomes "cuda:LOCAL_RANK" so each rank has its own GPU).
    The backend is nccl for CUDA and gloo for the CPU."""
    if not launched() or not dist.is_available():
        return current(), device
    from choicegrad.errors import InputError

    dev = torch.device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda" and dev.index is not None:
        raise InputError("--device", [f'"{device}" under torchrun: every rank would use the same GPU; pass "cuda" '
                                      "and each rank takes GPU LOCAL_RANK"])
    if dev.type not in ("cpu", "cuda"):
        raise InputError("--device", [f'"{device}" under torchrun: data-parallel training runs on cpu (gloo) or '
                                      "cuda (nccl)"])
    if dev.type == "cuda":
        device = f"cuda:{local}"
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return current(), device


def leave() -> None:
    """Leave the process group (at the end of a command), when there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def max_ranks(values: Sequence[int], device: torch.device | str = "cpu") -> list[int]:
    """Each value's maximum over the ranks, for decisions every rank must take together (save, stop,
    which signal)."""
    if not current().distributed:
        return [int(v) for v in values]
    t = torch.tensor([int(v) for v in values], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if current().distributed:
        dist.barrier()


def sum_ranks(value: float, device: torch.device | str = "cpu") -> float:
    """The sum of `value` over the ranks (in float64)."""
    if not current().distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def share(obj: Any = None) -> Any:
    """Rank 0's `obj` on every rank (a picklable object sent over the process group, never read from
    a file)."""
    if not current().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_main(fn: Callable[[], Any]) -> Any:
    """fn() computed on rank 0 and sent to every rank (a file check or read that the other ranks,
    perhaps on other machines, must not do themselves); just fn() in one process."""
    if not current().distributed:
        return fn()
    return share(fn() if current().main else None)
