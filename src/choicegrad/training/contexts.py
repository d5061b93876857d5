"""Where a generator's training contexts come from: a table's contexts (with its data rows), item
lists (random sublists of given lists), or a user function that draws fresh contexts."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from choicegrad.data.table import TableData
from choicegrad.generators.context import Context, ItemContext, TableContext


class ContextPool:
    """A fixed set of contexts (an objective fit's, from a table of contexts), drawn uniformly; no
    data rows, so no warm start (TableContexts adds a table's). Validation uses up to
    `max_validation` of them."""

    def __init__(self, contexts: TableContext, device: str | torch.device = "cpu", max_validation: int = 256):
        self.device = torch.device(device)
        self.contexts = contexts.to(self.device)
        self.max_validation = max_validation

    def __len__(self) -> int:
        return len(self.contexts)

    def sample(self, n: int, generator: torch.Generator) -> TableContext:
        return self.contexts.index(self.sample_ids(n, generator))

    def sample_ids(self, n: int, generator: torch.Generator) -> Tensor:
        """(n,) ids of uniformly drawn contexts (positions in self.contexts)."""
        return torch.randint(len(self.contexts), (n,), generator=generator, device=self.device)

    def validation(self) -> TableContext:
        n = len(self.contexts)
        if n <= self.max_validation:
            return self.contexts
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: self.max_validation]
        return self.contexts.index(idx.to(self.device))


class TableContexts(ContextPool):
    """Contexts of a table: the distinct contexts of its rows, drawn uniformly, plus its rows.

    best_rows(top) -> (rows (N, S), context ids (N,)): each context's best `top` share of rows.
    """

    def __init__(self, data: TableData, device: str | torch.device = "cpu", max_validation: int = 256):
        contexts, self.group = TableContext(data.ctx_cat, data.ctx_num).unique()
        super().__init__(contexts, device, max_validation)
        self.rows, self.y = data.rows.to(device), data.y   # scores stay on the CPU: float64, read with numpy
        self.group_t = torch.as_tensor(self.group, device=device)

    def references(self, ids: Tensor, n: int, share: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n good and n bad data rows per context id: drawn from each context's best and worst
        ceil(share * rows) rows by the recorded score. ids (B,) -> good (B, n, S), bad (B, n, S)."""
        if not hasattr(self, "_ref"):
            g, y = self.group, self.y.cpu().numpy()
            order = torch.as_tensor(np.lexsort((-y, g)), device=self.device)       # by context, best first
            counts = torch.as_tensor(np.bincount(g, minlength=len(self.contexts)), device=self.device)
            starts = torch.cumsum(counts, 0) - counts
            self._ref = order, counts, starts
        order, counts, starts = self._ref
        pool = (counts[ids].float() * share).ceil().clamp(min=1)                  # (B,)
        r = torch.rand(len(ids), 2, n, generator=generator, device=self.device)
        off = (r * pool[:, None, None]).long()
        good = order[starts[ids, None] + off[:, 0]]
        bad = order[starts[ids, None] + counts[ids, None] - 1 - off[:, 1]]
        return self.rows[good], self.rows[bad]

    def best_rows(self, top: float) -> tuple[Tensor, TableContext]:
        """Each context's best ceil(top * n) rows (by the recorded score) and their contexts."""
        g, y = self.group, self.y.cpu().numpy()
        order = np.lexsort((-y, g))                                  # by context, best first
        gs = g[order]
        starts = np.searchsorted(gs, gs, side="left")
        rank = np.arange(len(gs)) - starts
        counts = np.bincount(g)
        keep = order[rank < np.ceil(top * counts[gs])]
        idx = torch.as_tensor(keep, device=self.device)
        return self.rows[idx], self.contexts.index(self.group_t[idx])

    def data_rows(self, n: int, generator: torch.Generator) -> tuple[Tensor, TableContext]:
        """n random data rows (N, S) (-1 = missing) and their contexts."""
        idx = torch.randint(len(self.rows), (n,), generator=generator, device=self.device)
        return self.rows[idx], self.contexts.index(self.group_t[idx])


class SampledContexts:
    """Contexts from a user function (n, torch.Generator) -> context batch, e.g. fresh item lists
    (unlimited unlabelled examples). Validation uses `validation_size` contexts drawn with seed 0."""

    def __init__(self, draw: Callable[[int, torch.Generator], Context], validation_size: int = 256,
                 device: str | torch.device = "cpu"):
        self.draw, self.device = draw, torch.device(device)
        self._validation = draw(validation_size, torch.Generator(device=self.device).manual_seed(0)).to(self.device)

    def sample(self, n: int, generator: torch.Generator) -> Context:
        return self.draw(n, generator).to(self.device)

    def validation(self) -> Context:
        return self._validation


class ListPool:
    """Item lists as training contexts: each draw picks lists uniformly and, from each, a random
    sublist of about half to all of its items (at most `max_items`, at least the slots when items
    are distinct, always one eligible item per slot): fresh lists every step, so the generator
    learns to choose from lists it never saw. Validation: up to `max_validation` lists, drawn once.

    lists: choicegrad.data.items.ItemLists; vectors (M, D) the catalogue's item vectors; cat / num
    (L, C) the lists' encoded context columns; eligible (S, M) bool or None. synthetic: the share of
    the training draws' items replaced by a made-up item whose every attribute block (`blocks`, the
    (start, end) columns of each attribute: a category's one-hot block stays whole) is copied from its
    own random catalogue item, i.e. drawn from the catalogue's attribute marginals, so the generator
    learns to choose among items it never saw (cold start); never in validation, and only where no
    eligibility rules (which name catalogue items) apply.
    Many parameters (__init__): the lists and their tensors, then keyword settings of the draws."""

    def __init__(self, lists, vectors: Tensor, cat: Tensor, num: Tensor, slots: int, *,
                 eligible: Optional[np.ndarray] = None, distinct: bool = False, max_items: int = 64,
                 device: str | torch.device = "cpu", max_validation: int = 256, synthetic: float = 0.0,
                 blocks: Optional[list[tuple[int, int]]] = None):
        self.device = torch.device(device)
        self.synthetic = float(synthetic) if eligible is None else 0.0
        self.blocks = blocks if blocks is not None else [(d, d + 1) for d in range(vectors.shape[1])]
        self.slots, self.distinct, self.max_items = int(slots), bool(distinct), int(max_items)
        lengths = torch.as_tensor(lists.lengths, dtype=torch.long)
        self.lengths = lengths.to(self.device)
        self.offsets = torch.as_tensor(lists.offsets[:-1], dtype=torch.long, device=self.device)
        self.members = torch.as_tensor(lists.members, dtype=torch.long, device=self.device)
        self.vectors, self.cat, self.num = vectors.to(self.device), cat.to(self.device), num.to(self.device)
        self.eligible = None if eligible is None else torch.as_tensor(eligible, device=self.device)
        n = len(lengths)
        ids = torch.arange(n) if n <= max_validation else \
            torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_validation]
        self._validation = self._draw(ids.to(self.device), torch.Generator(device=self.device).manual_seed(0))

    def __len__(self) -> int:
        return len(self.lengths)

    def sample(self, n: int, generator: torch.Generator) -> ItemContext:
        ids = torch.randint(len(self.lengths), (n,), generator=generator, device=self.device)
        ctx = self._draw(ids, generator)
        if self.synthetic > 0:
            ctx = self._synthesise(ctx, generator)
        return ctx

    def validation(self) -> ItemContext:
        return self._validation

    def _synthesise(self, ctx: ItemContext, generator: torch.Generator) -> ItemContext:
        """Replace about `synthetic` of the real items by made-up ones (see the class)."""
        B, W, _ = ctx.items.shape
        swap = (torch.rand(B, W, generator=generator, device=self.device) < self.synthetic) & ctx.mask
        items = ctx.items.clone()
        M = len(self.vectors)
        for a, b in self.blocks:
            donor = torch.randint(M, (B, W), generator=generator, device=self.device)
            items[..., a:b] = torch.where(swap.unsqueeze(-1), self.vectors[donor, a:b], items[..., a:b])
        return dataclasses.replace(ctx, items=items)

    def _draw(self, ids: Tensor, generator: torch.Generator) -> ItemContext:
        """(B,) list ids -> their random sublists as one padded ItemContext."""
        lens = self.lengths[ids]
        B, N = len(ids), int(lens.max())
        col = torch.arange(N, device=self.device)
        real = col[None, :] < lens[:, None]                                       # (B, N)
        pos = self.members[(self.offsets[ids][:, None] + col[None, :]).clamp(max=len(self.members) - 1)]
        keys = torch.rand(B, N, generator=generator, device=self.device).masked_fill(~real, -1.0)
        slot_ok = None
        if self.eligible is not None:   # one eligible item per slot always kept
            slot_ok = self.eligible[:, pos].permute(1, 0, 2) & real.unsqueeze(1)  # (B, S, N)
            pick = torch.where(slot_ok, keys.unsqueeze(1), torch.full_like(keys.unsqueeze(1), -1.0)).argmax(-1)
            keys = keys.scatter(1, pick, 2.0)
        least = torch.clamp(lens, max=self.slots if self.distinct or self.eligible is not None else 1)
        low = torch.maximum((lens + 1) // 2, least)
        span = (lens.clamp(max=self.max_items) - low).clamp(min=0)
        size = torch.minimum(low + (torch.rand(B, generator=generator, device=self.device) * (span + 1)).long(),
                             lens.clamp(max=self.max_items))
        size = torch.maximum(size, least)
        width = int(size.max())
        top = keys.topk(width, dim=1).indices                                     # (B, W): kept items first
        mask = torch.arange(width, device=self.device)[None, :] < size[:, None]
        chosen = pos.gather(1, top)
        items = self.vectors[chosen] * mask.unsqueeze(-1)
        slot_mask = None if slot_ok is None else slot_ok.gather(2, top.unsqueeze(1).expand(-1, self.slots, -1)) & mask.unsqueeze(1)
        return ItemContext(items, mask, self.cat[ids], self.num[ids], slot_mask)
