"""Item selection ("pick the 5"): fill S slots from a list of scalar items; the best item is the one
closest to 5, for every slot. Lists have random lengths, so a generator must work for any N.

By default items are whole numbers 0..10 and every list holds at least one 5 (so "closest" means
"equal to 5"); integer=False draws items uniformly from [0, 10] instead (a much finer task).

reward(selected (N, S, 1), ctx) = -sum_s |selected_s - 5| (differentiable in the selection);
accuracy(rows, ctx) = share of slots holding an item closest to 5.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..generators.context import ItemContext


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
