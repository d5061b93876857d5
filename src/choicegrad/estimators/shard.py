"""One rank's share of a global batch of contexts, for data-parallel training that draws what one
process draws.

    shard = BatchShard.of(rng, size=B, world=distributed.current())
    out = estimator(policy_of(gen, ctx.index(shard.slice)), score_fn, generator=shard)

Under torchrun every rank holds the same torch.Generator (same seed, same draws so far). Passed as
`generator=` in place of it, a BatchShard makes every random draw of an estimator or a generator
(they all go through `choicegrad.estimators.gumbel.uniform`) at the GLOBAL batch's shape and keeps
this rank's rows [lo, hi): each context's noise is the one it gets in one process, and the shared
generator advances alike on every rank. `whole` gathers a per-context tensor over the ranks, for the
few batch-wide statistics an estimator takes (weighted-ce's row weights, reinforce's "mean"
baseline, trajectory balance's first log Z). A torch function given a BatchShard directly raises
TypeError: a draw that bypasses `uniform` cannot desynchronise the ranks silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from choicegrad import distributed
from choicegrad.distributed import share_sizes


@dataclass(frozen=True)
class BatchShard:
    """This rank's rows [lo, hi) of a global batch of `size` contexts, and the generator every rank
    shares. bounds: every rank's (lo, hi), in rank order (they tile [0, size)); rank: this one's."""

    generator: torch.Generator
    size: int
    bounds: tuple[tuple[int, int], ...]
    rank: int

    @classmethod
    def of(cls, generator: torch.Generator, size: int, world) -> "BatchShard":
        """The share of rank world.rank among world.size ranks: contiguous parts of the batch
        positions that differ in length by at most one (choicegrad.distributed.World.shard)."""
        lengths = share_sizes(size, world.size)
        starts = [sum(lengths[:r]) for r in range(world.size)]
        return cls(generator, size, tuple((s, s + n) for s, n in zip(starts, lengths)), world.rank)

    @property
    def lo(self) -> int:
        return self.bounds[self.rank][0]

    @property
    def hi(self) -> int:
        return self.bounds[self.rank][1]

    @property
    def slice(self) -> slice:
        """This rank's positions of the global batch."""
        return slice(self.lo, self.hi)

    def __len__(self) -> int:
        return self.hi - self.lo

    def uniform(self, shape, batch_dim: int = 0, device=None) -> Tensor:
        """fp32 Uniform[0, 1) draws of `shape` (its `batch_dim` this share's length): the global
        batch's draw of that shape with the batch dimension `size`, cut to this rank's rows."""
        shape = tuple(int(s) for s in shape)
        if shape[batch_dim] != len(self):
            raise ValueError(f"a draw of shape {shape} under data parallelism: dimension {batch_dim} must be this "
                             f"rank's {len(self)} of the {self.size} contexts of the batch; a draw of any other size "
                             "would leave the ranks' shared random generator out of step")
        full = shape[:batch_dim] + (self.size,) + shape[batch_dim + 1:]
        u = torch.rand(full, generator=self.generator, device=device, dtype=torch.float32)
        return u.narrow(batch_dim, self.lo, len(self))

    def window(self, start: int, end: int) -> "BatchShard":
        """The share of the global rows [start, end) alone, as a batch of its own: for a draw made in
        chunks of contexts, chunk by chunk (this rank's part of a chunk may be empty)."""
        def cut(lo: int, hi: int) -> tuple[int, int]:
            lo, hi = min(max(lo, start), end), max(min(hi, end), start)
            return lo - start, max(lo, hi) - start

        return BatchShard(self.generator, end - start, tuple(cut(lo, hi) for lo, hi in self.bounds), self.rank)

    def local(self, start: int, end: int) -> slice:
        """This rank's positions (in its share) of the global rows [start, end)."""
        lo, hi = self.window(start, end).bounds[self.rank]
        lo, hi = (min(max(v + start - self.lo, 0), len(self)) for v in (lo, hi))
        return slice(lo, hi)

    def whole(self, part: Tensor) -> Tensor:
        """The global batch's tensor (size, ...) from every rank's share `part` (len(self), ...),
        gathered over the ranks in rank order; no gradient."""
        if part.shape[0] != len(self):
            raise ValueError(f"whole: expected this rank's {len(self)} rows, got {tuple(part.shape)}")
        return distributed.gather_parts(part.detach(), [hi - lo for lo, hi in self.bounds])

    def mine(self, full: Tensor, dim: int = 0) -> Tensor:
        """This rank's rows of a global (size, ...) tensor (along `dim`)."""
        return full.narrow(dim, self.lo, len(self))


def batch_shard(generator) -> Optional[BatchShard]:
    """`generator` when it is a BatchShard, else None (one process: a plain torch.Generator)."""
    return generator if isinstance(generator, BatchShard) else None
