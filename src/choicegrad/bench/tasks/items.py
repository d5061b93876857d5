"""Item selection ("pick the 5"): fill S slots from a list of scalar items; the best item is the one
closest to 5, for every slot. Lists have random lengths, so a generator must work for any N.

By default items are whole numbers 0..10 and every list holds at least one 5 (so "closest" means
"equal to 5"); integer=False draws items uniformly from [0, 10] instead (a much finer task).

reward(selected (N, S, 1), ctx) = -sum_s |selected_s - 5| (differentiable in the selection);
accuracy(rows, ctx) = share of slots holding an item closest to 5.

ItemSelectionTask: item vectors in R^dim and a fixed reward with slot interactions; every
combination can be enumerated, so each list has a known optimum.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from choicegrad.generators.context import ItemContext
from choicegrad.bench.metrics import gap_closed, normalise
from choicegrad.bench.tasks import stats as st
from choicegrad.bench.tasks.landscape import rows_at


class PickFiveTask:
    """Items uniform in [0, 10]; `slots` slots; list lengths drawn from `lengths` (inclusive)."""

    def __init__(self, slots: int = 3, lengths: tuple[int, int] = (4, 16), target: float = 5.0,
                 integer: bool = True):
        self.slots, self.lengths, self.target, self.integer = slots, lengths, float(target), integer

    def draw(self, n: int, generator: Optional[torch.Generator] = None, lengths: Optional[tuple[int, int]] = None,
             ) -> ItemContext:
        """n item lists (padded): items (n, N_max, 1), mask (n, N_max)."""
        lo, hi = lengths or self.lengths
        dev = generator.device if generator is not None else None
        length = torch.randint(lo, hi + 1, (n,), generator=generator, device=dev)
        mask = torch.arange(hi, device=dev)[None, :] < length[:, None]
        if self.integer:
            items = torch.randint(0, 11, (n, hi, 1), generator=generator, device=dev).float()
            where = (torch.rand(n, generator=generator, device=dev) * length).long()      # plant one target
            items[torch.arange(n, device=dev), where, 0] = self.target
        else:
            items = torch.rand(n, hi, 1, generator=generator, device=dev) * 10.0
        return ItemContext(items * mask.unsqueeze(-1), mask)

    def reward(self, selected: Tensor, ctx: ItemContext) -> Tensor:
        """(N, S, 1) selected item vectors -> (N,)."""
        return -(selected[..., 0] - self.target).abs().sum(-1)

    def best_items(self, ctx: ItemContext) -> Tensor:
        """(B,) index of the item closest to the target in each list."""
        dist = (ctx.items[..., 0] - self.target).abs().masked_fill(~ctx.mask, float("inf"))
        return dist.argmin(-1)

    def accuracy(self, rows: Tensor, ctx: ItemContext) -> float:
        """Share of slots whose chosen item is closest to the target (ties count). rows (B, S) long."""
        dist = (ctx.items[..., 0] - self.target).abs().masked_fill(~ctx.mask, float("inf"))
        best = dist.min(-1).values
        chosen = dist.gather(1, rows)
        return float((chosen <= best[:, None] + 1e-9).float().mean())


class ItemSelectionTask:
    """Pointer-form task: fill `slots` slots from a list of item vectors in R^dim, for a fixed reward
    with interactions between slots.

    reward(e) = sum_s a_s . e_s + sum_{s<t} e_s^T B_st e_t  for the selected items e (S, dim):
    a (S, dim) and B (S, S, dim, dim) are drawn once from `seed` (B scaled by `coupling`), so the best
    item for one slot depends on the items in the others. Items are standard normal; list lengths are
    uniform in `lengths` (inclusive). The same item may fill several slots.
    """

    def __init__(self, slots: int = 3, dim: int = 4, lengths: tuple[int, int] = (6, 12), coupling: float = 1.0,
                 seed: int = 0):
        lo, hi = lengths
        if slots < 1 or dim < 1:
            raise ValueError(f"slots, dim: expected at least 1 each, got {slots}, {dim}")
        if not 1 <= lo <= hi:
            raise ValueError(f"lengths: expected (lo, hi) with 1 <= lo <= hi, got {lengths}")
        g = torch.Generator().manual_seed(seed)
        self.slots, self.dim, self.lengths, self.coupling = slots, dim, (int(lo), int(hi)), float(coupling)
        self.linear = torch.randn(slots, dim, generator=g) / dim**0.5                      # (S, D)
        pair = torch.randn(slots, slots, dim, dim, generator=g) * coupling / dim**0.5
        self.pair = torch.triu(torch.ones(slots, slots), diagonal=1)[..., None, None] * pair  # (S, S, D, D)

    def draw(self, n: int, generator: Optional[torch.Generator] = None) -> ItemContext:
        """n item lists (padded): items (n, N_max, dim), zero past each list's length; mask (n, N_max)."""
        lo, hi = self.lengths
        dev = generator.device if generator is not None else None
        length = torch.randint(lo, hi + 1, (n,), generator=generator, device=dev)
        mask = torch.arange(hi, device=dev)[None, :] < length[:, None]
        items = torch.randn(n, hi, self.dim, generator=generator, device=dev)
        return ItemContext(items * mask.unsqueeze(-1), mask)

    def value(self, selected: Tensor) -> Tensor:
        """(N, S, dim) selected item vectors -> (N,) reward (differentiable)."""
        a, B = self.linear.to(selected), self.pair.to(selected)
        return torch.einsum("nsd,sd->n", selected, a) + torch.einsum("nsd,stde,nte->n", selected, B, selected)

    def reward(self, selected: Tensor, ctx: ItemContext) -> Tensor:
        """(N, S, dim) selected item vectors, ctx of length N (unused: the reward is fixed) -> (N,)."""
        return self.value(selected)

    def enumerate(self, ctx: ItemContext, chunk: int = 1 << 16) -> tuple[Tensor, Tensor]:
        """Every combination: (values (B, N_max**S), NaN where a padded item is used; rows (N_max**S, S)
        long, slot 0 most significant). At most `chunk` combinations are scored at a time."""
        B, N, _ = ctx.items.shape
        rows = rows_at(torch.arange(N**self.slots, device=ctx.device), [N] * self.slots)
        per = max(1, chunk // max(1, B))
        out = []
        with torch.no_grad():
            for start in range(0, len(rows), per):  # chunks of combinations, every list at once
                part = rows[start:start + per]
                v = self.value(ctx.items[:, part].flatten(0, 1)).view(B, len(part))
                out.append(v.masked_fill(~ctx.mask[:, part].all(-1), float("nan")))
        return torch.cat(out, 1), rows

    def optimum(self, ctx: ItemContext) -> tuple[Tensor, Tensor]:
        """(rows (B, S) long, values (B,)): the best valid combination of each list."""
        values, rows = self.enumerate(ctx)
        index, best = st.nan_argmax(values)
        return rows[index], best

    def stats(self, ctx: ItemContext) -> dict[str, Tensor]:
        """{min, max, mean, median}: (B,) each, over the valid combinations of each list."""
        return st.nan_stats(self.enumerate(ctx)[0])

    @staticmethod
    def normalise(values: Tensor, stats: dict[str, Tensor]) -> Tensor:
        """(y - min) / (max - min) per list: values (B,) or (B, M) -> same shape."""
        return normalise(values, stats)

    @staticmethod
    def gap_closed(values: Tensor, stats: dict[str, Tensor]) -> Tensor:
        """(y - mean) / (max - mean) per list: values (B,) or (B, M) -> same shape."""
        return gap_closed(values, stats)
