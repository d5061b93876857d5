"""A contextual NK landscape with interaction order k.

Every slot s has a neighbourhood N(s) = (s, n_1, ..., n_{k-1}): itself and k-1 other slots, distinct,
drawn at random (seeded) and shared by all contexts. The score of row x in context c is

    f(c, x) = (1 / S) * sum_s [ (1 - w) * T[s, x_N(s)] + w * U[c, s, x_N(s)] ]

with T (S, V^k) tables shared by all contexts and U (C, S, V^k) one table set per context, all
entries uniform in [0, 1), and w = `weight` in [0, 1]. Each term depends on exactly the k slots of
its neighbourhood, so the interaction order is k in every context; the per-context tables move the
optimum from context to context. Table values are continuous, so ties at the optimum have
probability zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

ORDERS = (2, 3, 4)


class NKModel:
    """Seeded NK landscape: `slots` x `vocab` categories, interaction order k, `contexts` contexts.

    neighbours: (S, k) long, column 0 = the slot itself; shared: (S, V^k); tables: (C, S, V^k).
    """

    def __init__(self, k: int = 3, slots: int = 8, vocab: int = 4, contexts: int = 32, weight: float = 0.5,
                 seed: int = 0):
        if k not in ORDERS:
            raise ValueError(f"k: interaction order must be one of {', '.join(map(str, ORDERS))}, got {k!r}")
        if slots < k:
            raise ValueError(f"slots: interaction order k={k} needs at least {k} slots, got {slots}")
        if vocab < 2:
            raise ValueError(f"vocab: expected at least 2 categories, got {vocab}")
        if contexts < 1:
            raise ValueError(f"contexts: expected at least 1, got {contexts}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight: expected a share in [0, 1] for the per-context tables, got {weight}")
        g = torch.Generator().manual_seed(seed)
        self.k, self.slots, self.vocab, self.contexts, self.weight = k, slots, vocab, contexts, float(weight)
        draw = torch.rand(slots, slots, generator=g).fill_diagonal_(float("inf"))   # never pick itself
        others = draw.argsort(-1)[:, : k - 1]
        self.neighbours = torch.cat([torch.arange(slots)[:, None], others], 1)       # (S, k)
        self.shared = torch.rand(slots, vocab**k, generator=g)
        self.tables = torch.rand(contexts, slots, vocab**k, generator=g)
        self.place = vocab ** torch.arange(k - 1, -1, -1)                            # (k,)

    def terms(self, ctx: Tensor, rows: Tensor) -> Tensor:
        """ctx (N,) long, rows (N, S) long -> (N, S) contribution of each slot's term (before 1/S)."""
        keys = (rows[:, self.neighbours] * self.place.to(rows.device)).sum(-1)      # (N, S)
        s = torch.arange(self.slots, device=rows.device)
        own = self.tables.to(rows.device)[ctx[:, None], s, keys]
        return (1 - self.weight) * self.shared.to(rows.device)[s, keys] + self.weight * own

    def __call__(self, ctx: Tensor, rows: Tensor) -> Tensor:
        """ctx (N,) long context ids, rows (N, S) long -> (N,) scores."""
        return self.terms(ctx, rows).mean(-1)
