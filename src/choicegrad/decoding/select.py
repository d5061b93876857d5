"""Pick a design batch from a pool of candidates: best first, far enough apart, never twice.

    idx, ok = select_batch(pool_rows, value, n=128, min_distance=2)
    idx, ok = select_batch(pool_rows, value, n=128, draws=member_values, generator=rng)   # Thompson
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

_NEG = float("-inf")


def select_batch(rows: Tensor, value: Tensor, n: int, *, min_distance: int = 1, draws: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None, taken: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Greedy batch selection per context.

    rows (B, P, S) long pool; value (B, P) float, -inf = not allowed (measured, invalid). Each of the
    n picks takes the best allowed candidate -- by `value`, or with `draws` (k, B, P) by the values
    of one member drawn at random per pick (Thompson sampling from an ensemble) -- then rules out
    every candidate within Hamming distance < min_distance of it (the pick itself included, so
    picks are distinct). taken (B, T, S): rows already in the batch (-1 = none), which rule out
    their near candidates the same way. -> (idx (B, n) long positions in the pool, ok (B, n) bool: False where the
    pool ran out of allowed candidates; such positions repeat idx 0).
    """
    B, P, _ = rows.shape
    allowed = torch.isfinite(value)
    for t in range(taken.shape[1] if taken is not None else 0):          # T rows, each (B, P) at a time
        row = taken[:, t]
        allowed &= ~(((rows != row[:, None, :]).sum(-1) < min_distance) & (row >= 0).all(-1)[:, None])
    idx = torch.zeros(B, n, dtype=torch.long, device=rows.device)
    ok = torch.zeros(B, n, dtype=torch.bool, device=rows.device)
    batch = torch.arange(B, device=rows.device)
    for i in range(n):  # n picks, each vectorised over contexts and the pool
        if draws is not None:
            member = torch.randint(len(draws), (B,), generator=generator, device=rows.device)
            crit = draws[member, batch].nan_to_num(nan=_NEG)
        else:
            crit = value
        crit = crit.masked_fill(~allowed, _NEG)
        best = crit.max(1)
        got = torch.isfinite(best.values)
        idx[:, i] = torch.where(got, best.indices, 0)
        ok[:, i] = got
        pick = rows[batch, best.indices]                                        # (B, S)
        near = (rows != pick[:, None, :]).sum(-1) < min_distance                # (B, P)
        allowed &= ~(near & got[:, None])
    return idx, ok
