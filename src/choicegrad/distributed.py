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
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


#: How long a rank waits in a collective for the others: work that rank 0 does alone comes first
#: (the scan of a streamed table, about 500,000 rows/s here; the aligner), and nccl's own default
#: of 10 minutes would abort the waiting ranks of a scan of 300M rows.
WAIT_MINUTES = 120


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


def share_sizes(n: int, ranks: int) -> list[int]:
    """How many of n items each of `ranks` ranks takes in World.shard: contiguous parts that differ
    by at most one, the first ones larger."""
    return [n // ranks + (r < n % ranks) for r in range(ranks)]


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
        raise InputError("device", [f'"{device}" under torchrun: every rank would use the same GPU; pass "cuda" '
                                    "and each rank takes GPU LOCAL_RANK"])
    if dev.type not in ("cpu", "cuda"):
        raise InputError("device", [f'"{device}" under torchrun: data-parallel training runs on cpu (gloo) or '
                                    "cuda (nccl)"])
    if dev.type == "cuda":
        device = f"cuda:{local}"
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(minutes=WAIT_MINUTES))
    return current(), device


def leave() -> None:
    """Leave the process group (at the end of a command), when there is one: every rank first waits
    for the others, so that none tears its connections down while another still uses them (gloo
    aborted a rank at exit, "terminate called without an active exception", when one left early)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:           # a rank already gone (it failed): nothing left to wait for
            pass
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
    perhaps on other machines, must not do themselves); just fn() in one process. When fn raises on
    rank 0, every rank raises: the same InputError, or an InputError saying rank 0 failed."""
    if not current().distributed:
        return fn()
    from choicegrad.errors import InputError

    if not current().main:
        tag, *rest = share()
        if tag == "error":
            raise InputError(rest[0], rest[1])
        return rest[0]
    try:
        value = fn()
    except InputError as exc:
        share(("error", exc.source, exc.problems))
        raise
    except BaseException as exc:
        share(("error", "rank 0", [f"failed: {type(exc).__name__}: {exc}"]))
        raise
    share(("ok", value))
    return value


def gather_parts(part: Tensor, sizes: Sequence[int]) -> Tensor:
    """Every rank's `part` (sizes[rank], ...) joined along dimension 0 in rank order: the global
    batch's tensor (sum(sizes), ...) on every rank (parts padded to the largest for the collective)."""
    if not current().distributed:
        return part
    width = max(sizes)
    padded = part.new_zeros((width,) + tuple(part.shape[1:]))
    padded[: part.shape[0]] = part
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[:n] for o, n in zip(out, sizes)])


def sum_grads(params: Sequence[Tensor], extra: Sequence[float] = ()) -> list[float]:
    """Sum every parameter's gradient over the ranks in place, with one flat all-reduce; -> the
    sums of `extra` (numbers added up alongside, e.g. this rank's part of the loss).

    A parameter without a gradient counts as zeros, and gets the sum unless no rank had one (it
    then keeps None, as in one process, where the optimiser skips it). For training loops whose
    models are called through other methods than forward (DistributedDataParallel reduces only
    what forward calls produce). No-op in one process."""
    if not current().distributed:
        return [float(v) for v in extra]
    device = params[0].device
    parts = [p.grad.reshape(-1).float() if p.grad is not None else torch.zeros(p.numel(), device=device)
             for p in params]
    flags = torch.tensor([float(p.grad is not None) for p in params] + [float(v) for v in extra], device=device)
    flat = torch.cat(parts + [flags])
    dist.all_reduce(flat)
    n = flat.numel() - len(flags)
    seen = flat[n: n + len(params)].tolist()
    for p, g, had in zip(params, flat[:n].split([p.numel() for p in params]), seen):
        if had:
            p.grad = g.reshape(p.shape).to(p.dtype)
    return flat[n + len(params):].tolist()


def broadcast_tensors(tensors: Sequence[Tensor]) -> None:
    """Rank 0's values of `tensors` (parameters, buffers) copied in place on every rank."""
    if not current().distributed:
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)
