"""A contextual pairwise-interaction ("Potts") landscape with an exact oracle.

f(c, x) = sum_s h[c, s, x_s] + sum_{s<t} J[s, t, x_s, x_t]: per-context fields plus couplings shared by
all contexts. Strong couplings make single swaps matter, as in the users' tables.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch


class PottsTask:
    """Seeded Potts landscape: `slots` x `vocab` categories, `contexts` contexts.

    oracle(ctx (N,), rows (N, S)) -> (N,) true scores; `optimum(c)` by exhaustive enumeration.
    """

    def __init__(self, slots: int = 4, vocab: int = 5, contexts: int = 3, coupling: float = 1.5, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.slots, self.vocab, self.contexts = slots, vocab, contexts
        self.h = torch.randn(contexts, slots, vocab, generator=g)
        J = torch.randn(slots, slots, vocab, vocab, generator=g) * coupling / np.sqrt(slots)
        self.J = torch.triu(torch.ones(slots, slots), diagonal=1)[..., None, None] * J

    def oracle(self, ctx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(N,) long context ids, (N, S) long rows -> (N,) float scores."""
        s = torch.arange(self.slots)
        field = self.h[ctx[:, None], s, rows].sum(1)
        pair = self.J[s[:, None], s[None, :], rows[:, :, None], rows[:, None, :]].sum((1, 2))
        return field + pair

    def all_rows(self) -> torch.Tensor:
        """(V^S, S) every row of the space."""
        return torch.tensor(list(itertools.product(range(self.vocab), repeat=self.slots)))

    def optimum(self, c: int) -> tuple[torch.Tensor, float]:
        """(S,) best row for context c and its score, by enumeration."""
        rows = self.all_rows()
        scores = self.oracle(torch.full((len(rows),), c), rows)
        i = int(scores.argmax())
        return rows[i], float(scores[i])

    def table(self, n: int = 2000, seed: int = 0, missing: float = 0.0) -> pd.DataFrame:
        """A training table: n random rows with context column `ctx`, slots `s0..`, score `y`.

        A share `missing` of feature cells is blanked (the score is still the full row's)."""
        g = torch.Generator().manual_seed(seed)
        ctx = torch.randint(self.contexts, (n,), generator=g)
        rows = torch.randint(self.vocab, (n, self.slots), generator=g)
        y = self.oracle(ctx, rows)
        letters = np.array([chr(ord("a") + v) for v in range(self.vocab)], dtype=object)
        frame = pd.DataFrame({f"s{s}": letters[rows[:, s].numpy()] for s in range(self.slots)})
        if missing:
            blank = torch.rand(n, self.slots, generator=g).numpy() < missing
            frame = frame.mask(blank)
        frame.insert(0, "ctx", [f"c{c}" for c in ctx.tolist()])
        frame["y"] = y.numpy()
        return frame
