"""Item selection ("pick the 5"): fill S slots from a list of scalar items; the best item is the one
closest to 5, for every slot. Lists have random lengths, so a generator must work for any N.

By default items are whole numbers 0..10 and every list holds at least one 5 (so "closest" means
"equal to 5"); integer=False draws items uniformly from [0, 10] instead (a much finer task).

reward(selected (N, S, 1), ctx) = -sum_s |selected_s - 5| (differentiable in the selection);
accuracy(rows, ctx) = share of slots holding an item closest to 5.

ItemSelectionTask: item vectors in R^dim and a fixed reward with slot interactions; every
combination can be enumerated, so each list has a known optimum.

SlateTask: fill a page of S positions with DISTINCT items of a list, for expected clicks under a
position-based click model with a per-topic redundancy discount (alpha-DCG / alpha-nDCG's gain);
ranking items by their own attractiveness stacks the user's favourite topic and is not optimal.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from choicegrad.generators.context import ItemContext
from choicegrad.generators.objective import ItemObjective
from choicegrad.bench.metrics import gap_closed, normalise
from choicegrad.bench.tasks.base import BenchmarkTask, check_rows
from choicegrad.bench.tasks.landscape import rows_at


class ItemTask(BenchmarkTask):
    """A BenchmarkTask of kind "items": a context is a list of item vectors (ItemContext), a row picks
    one item per slot, the task's `reward(selected (N, S, D), ctx) -> (N,)` is the objective. Each
    task draws its lists (`draw`) and enumerates every combination (`enumerate(ctx)` -> (values (B,
    R), NaN for a combination a list cannot take; rows (R, S))); its optimum, value statistics and
    gap closed follow from them."""

    kind = "items"
    slots: int

    @property
    def num_slots(self) -> int:
        return self.slots

    def draw(self, n: int, generator: Optional[torch.Generator] = None) -> ItemContext:  # pragma: no cover
        raise NotImplementedError

    def reward(self, selected: Tensor, ctx: ItemContext) -> Tensor:  # pragma: no cover - each task's
        raise NotImplementedError

    def enumerate(self, ctx: ItemContext) -> tuple[Tensor, Tensor]:  # pragma: no cover - each task's
        raise NotImplementedError

    # --- the BenchmarkTask contract ----------------------------------------------------------------
    def contexts(self, n: Optional[int] = 64, seed: int = 1234) -> ItemContext:
        """n lists drawn from `seed` (the harness judges on 64 lists of seed 1234, apart from training)."""
        return self.draw(64 if n is None else n, torch.Generator().manual_seed(seed))

    def truth(self, ctx: ItemContext, rows: Tensor) -> Tensor:
        """ctx: B lists, rows (B, M, S) long item indices -> (B, M) reward of the selected items."""
        M = check_rows(rows, len(ctx), self.slots)
        with torch.no_grad():
            return ItemObjective(self.reward)(rows.reshape(-1, self.slots), ctx.repeat_interleave(M)
                                              ).reshape(len(ctx), M).float()

    def enumerate_truth(self, ctx: ItemContext) -> tuple[Tensor, Tensor]:
        return self.enumerate(ctx)

    def allowed(self, ctx: ItemContext) -> Tensor:
        """(B, S, N_max): every slot allows the items of its list."""
        return ctx.mask.unsqueeze(1).expand(-1, self.slots, -1)

    def stats(self, ctx: ItemContext) -> dict[str, Tensor]:
        """{min, max, mean, median}: (B,) each, over the valid combinations of each list."""
        return self.statistics(ctx)

    @staticmethod
    def normalise(values: Tensor, stats: dict[str, Tensor]) -> Tensor:
        """(y - min) / (max - min) per list: values (B,) or (B, M) -> same shape."""
        return normalise(values, stats)

    @staticmethod
    def gap_closed(values: Tensor, stats: dict[str, Tensor]) -> Tensor:
        """(y - mean) / (max - mean) per list: values (B,) or (B, M) -> same shape."""
        return gap_closed(values, stats)


class PickFiveTask(ItemTask):
    """Items uniform in [0, 10]; `slots` slots; list lengths drawn from `lengths` (inclusive)."""

    name = "pick-five"

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

    def accuracy(self, rows: Tensor, ctx: ItemContext) -> float:
        """Share of slots whose chosen item is closest to the target (ties count). rows (B, S) long."""
        dist = (ctx.items[..., 0] - self.target).abs().masked_fill(~ctx.mask, float("inf"))
        best = dist.min(-1).values
        chosen = dist.gather(1, rows)
        return float((chosen <= best[:, None] + 1e-9).float().mean())

    def enumerate(self, ctx: ItemContext) -> tuple[Tensor, Tensor]:
        """Every combination: (values (B, N_max**S), NaN where a padded item is used; rows (N_max**S, S))."""
        B, N, _ = ctx.items.shape
        rows = rows_at(torch.arange(N**self.slots, device=ctx.device), [N] * self.slots)
        values = self.reward(ctx.items[:, rows].flatten(0, 1), ctx).view(B, len(rows))
        return values.masked_fill(~ctx.mask[:, rows].all(-1), float("nan")), rows


class ItemSelectionTask(ItemTask):
    """Pointer-form task: fill `slots` slots from a list of item vectors in R^dim, for a fixed reward
    with interactions between slots.

    reward(e) = sum_s a_s . e_s + sum_{s<t} e_s^T B_st e_t  for the selected items e (S, dim):
    a (S, dim) and B (S, S, dim, dim) are drawn once from `seed` (B scaled by `coupling`), so the best
    item for one slot depends on the items in the others. Items are standard normal; list lengths are
    uniform in `lengths` (inclusive). The same item may fill several slots.
    """

    name = "items"

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



class SlateTask(ItemTask):
    """Pointer-form slate task: fill a page of `slots` positions with DISTINCT items from a list, for
    the expected clicks of a user under a position-based click model with a topic-redundancy discount.

    Each list is one user's candidate items. An item vector (D = 2T + 1 + noise) is

        [ e (T): the item's topic, one-hot | q (1): its quality | noise (`noise`): distractors, unused
          by the reward | z (T): the user's affinity for each topic, the same in every item of a list ]

    (the user is carried by the items so that a generator, which sees only the items, sees it too).
    Topics are uniform over T = `topics`, q and the noise standard normal, z ~ N(0, `affinity`^2) per
    topic; padded items are all zero. For the selected items e_s, q_s (s = 0..S-1, top first):

        attractiveness   a_s = sigmoid(q_s + <z, e_s> + bias)
        examination      theta_s = 1 / log2(s + 2)                 (the DCG discount: 1, .63, .5, .43)
        redundancy       n_s = sum_{j<s} <e_j, e_s>                (items of the same topic shown above)
        reward           sum_s theta_s * a_s * (1 - rho)^n_s       (expected clicks)

    i.e. the position-based model (click = examined and attracted; Craswell et al. 2008) whose gain is
    discounted per earlier item of the same topic as in alpha-DCG / alpha-nDCG (Clarke et al. 2008;
    rho = alpha = 0.5, the TREC diversity value). The user's favourite topic dominates the most
    attractive items, so `greedy_rows` (the S most attractive items, in order: the recommender that
    ignores the rest of the slate) stacks it, while the optimum mixes topics. The reward is a
    differentiable function of the selected vectors (soft topics give soft overlaps n_s); z is read
    from ctx (its first item). Rows repeating an item are not slates: enumerate/optimum/stats cover
    distinct rows only, and peers should search with distinct=True.
    """

    name = "slates"
    distinct = True

    def __init__(self, slots: int = 3, lengths: tuple[int, int] = (8, 12), topics: int = 4, noise: int = 2,
                 rho: float = 0.5, affinity: float = 1.5, bias: float = 0.0):
        lo, hi = lengths
        if slots < 1 or topics < 1 or noise < 0:
            raise ValueError(f"slots, topics >= 1 and noise >= 0 expected, got {slots}, {topics}, {noise}")
        if not slots <= lo <= hi:
            raise ValueError(f"lengths: expected (lo, hi) with slots={slots} <= lo <= hi, got {lengths}")
        if not 0 <= rho < 1:
            raise ValueError(f"rho: expected a discount in [0, 1), got {rho}")
        self.slots, self.lengths, self.topics, self.noise = int(slots), (int(lo), int(hi)), int(topics), int(noise)
        self.rho, self.affinity, self.bias = float(rho), float(affinity), float(bias)
        self.dim = 2 * self.topics + 1 + self.noise

    def draw(self, n: int, generator: Optional[torch.Generator] = None) -> ItemContext:
        """n users' item lists (padded): items (n, N_max, dim), zero past each list's length; mask (n, N_max)."""
        lo, hi = self.lengths
        T = self.topics
        dev = generator.device if generator is not None else None
        length = torch.randint(lo, hi + 1, (n,), generator=generator, device=dev)
        mask = torch.arange(hi, device=dev)[None, :] < length[:, None]
        topic = torch.randint(0, T, (n, hi), generator=generator, device=dev)
        rest = torch.randn(n, hi, 1 + self.noise, generator=generator, device=dev)       # quality, noise
        user = torch.randn(n, 1, T, generator=generator, device=dev) * self.affinity
        items = torch.cat([torch.nn.functional.one_hot(topic, T).float(), rest, user.expand(n, hi, T)], -1)
        return ItemContext(items * mask.unsqueeze(-1), mask)

    # --- the click model -----------------------------------------------------------------------------
    def examination(self, slots: Optional[int] = None, like: Optional[Tensor] = None) -> Tensor:
        """(S,) theta_s = 1 / log2(s + 2)."""
        S = self.slots if slots is None else slots
        s = torch.arange(S, dtype=like.dtype if like is not None else torch.float32,
                         device=like.device if like is not None else None)
        return 1.0 / torch.log2(s + 2.0)

    def user(self, ctx: ItemContext) -> Tensor:
        """(B, T) each list's topic affinities z (from its first item, always a real one)."""
        return ctx.items[:, 0, -self.topics:]

    def attractiveness(self, items: Tensor, user: Tensor) -> Tensor:
        """items (..., M, dim), user (..., T) -> (..., M) sigmoid(q + <z, e> + bias)."""
        T = self.topics
        return torch.sigmoid(items[..., T] + (items[..., :T] * user.unsqueeze(-2)).sum(-1) + self.bias)

    def value(self, selected: Tensor, user: Tensor) -> Tensor:
        """(N, S, dim) selected item vectors, (N, T) user affinities -> (N,) expected clicks (differentiable)."""
        S, T = selected.shape[-2], self.topics
        e = selected[..., :T]
        a = self.attractiveness(selected, user)                                          # (N, S)
        overlap = torch.einsum("nsk,njk->nsj", e, e).tril(diagonal=-1)                   # j < s only
        same_above = overlap.sum(-1)                                                     # (N, S)
        discount = torch.exp(same_above * math.log1p(-self.rho))                        # (1 - rho)^n_s
        return (self.examination(S, a) * a * discount).sum(-1)

    def reward(self, selected: Tensor, ctx: ItemContext) -> Tensor:
        """(N, S, dim) selected item vectors, ctx of length N (the users) -> (N,) expected clicks."""
        return self.value(selected, self.user(ctx).to(selected))

    def item_score(self, ctx: ItemContext) -> Tensor:
        """(B, N) each item's own attractiveness a_i (its expected clicks alone at the top); -inf past a
        list's length."""
        a = self.attractiveness(ctx.items, self.user(ctx))
        return a.masked_fill(~ctx.mask, float("-inf"))

    def greedy_rows(self, ctx: ItemContext) -> Tensor:
        """(B, S) long: the S most attractive items of each list, most attractive first (ranking by
        item_score, blind to the rest of the slate)."""
        return self.item_score(ctx).topk(self.slots, dim=1).indices

    # --- ground truth --------------------------------------------------------------------------------
    def enumerate(self, ctx: ItemContext, chunk: int = 1 << 16) -> tuple[Tensor, Tensor]:
        """Every combination: (values (B, N_max**S), NaN where a padded item is used or an item
        repeats; rows (N_max**S, S) long, slot 0 most significant). At most `chunk` combinations are
        scored at a time."""
        B, N, _ = ctx.items.shape
        S = self.slots
        rows = rows_at(torch.arange(N**S, device=ctx.device), [N] * S)
        repeat = (rows.unsqueeze(-1) == rows.unsqueeze(-2)).triu(diagonal=1).any((-2, -1))   # (R,)
        user = self.user(ctx)
        per = max(1, chunk // max(1, B))
        out = []
        with torch.no_grad():
            for start in range(0, len(rows), per):  # chunks of combinations, every list at once
                part = rows[start:start + per]
                sel = ctx.items[:, part].flatten(0, 1)                                   # (B * P, S, dim)
                v = self.value(sel, user.repeat_interleave(len(part), 0)).view(B, len(part))
                bad = ~ctx.mask[:, part].all(-1) | repeat[start:start + per]
                out.append(v.masked_fill(bad, float("nan")))
        return torch.cat(out, 1), rows

