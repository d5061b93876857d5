"""Portfolio selection for max-of-K: K rows whose best is high under every plausible hypothesis of
the scorer ensemble, not the K best by the ensemble's mean.

    values = hypotheses(members, draws(256, E, rng))        # (B, H, P) from (B, P, E)
    pick, ok = expected_max_select(values, valid, k)         # (B, k) indices into the P candidates
    pick, ok = choose(members, valid, k, generator=rng)      # the same, a few contexts at a time

When proposals are judged by the best of them (max of K), K rows that all bet on the mean's one
hypothesis waste K - 1 of them where the ensemble is unsure. The expected best of a set under H
hypotheses, mean_h max_{i in set} f_h(x_i), is a facility-location objective: monotone and
submodular, so adding rows greedily by their gain reaches at least 1 - 1/e of the best set
(Nemhauser et al. 1978). The first row is the mean's best; each next one adds the most where the
hypotheses disagree with the rows already chosen.

`slices` bets on the members themselves rather than on draws mixing them: K / E rows per member, its
own best ones, taken in turn. Where the members' upper tails differ (nets fitted on the rows below the
median and kept at their last epoch each overfit their own way), some member's slice reaches rows
that no mixture of the members ranks near the top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from choicegrad.decoding.rows import first_occurrence, row_keys
from choicegrad.decoding.scoring import score_flat
from choicegrad.generators.context import TableContext
from choicegrad.generators.objective import Objective

#: Candidates in the pool per returned row: the best distinct rows by the mean among every row the
#: search scored.
PORTFOLIO_POOL = 8
#: Hypotheses drawn from the ensemble's spread.
PORTFOLIO_HYPOTHESES = 256
_ELEMENTS = 1 << 24          # hypotheses x candidates x contexts drawn and selected at a time (choose)


def draws(n: int, members: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
    """(n, members) standard normal mixing weights, centred over the n draws (so that the draws' mean
    is exactly the members' mean)."""
    z = torch.randn(n, members, generator=generator, device=device)
    return z - z.mean(0, keepdim=True)


def hypotheses(members: Tensor, z: Tensor) -> Tensor:
    """Draws of the score function from an ensemble's members: members (B, P, E), z (n, E) from
    `draws` -> (B, n, P).

    Draw h is mean + sum_e z_he (member_e - mean) / sqrt(E - 1): each candidate's spread is the
    members' sample standard deviation, and candidates the members move together (the same member
    rates both high) stay correlated. E == 1: every draw is the one member."""
    B, P, E = members.shape
    mean = members.mean(-1)                                                 # (B, P)
    if E == 1:
        return mean.unsqueeze(1).expand(B, z.shape[0], P)
    spread = (members - mean.unsqueeze(-1)) / math.sqrt(E - 1)              # (B, P, E)
    return mean.unsqueeze(1) + torch.einsum("he,bpe->bhp", z.to(members.dtype), spread)


def choose(members: Tensor, valid: Tensor, k: int, n: int = PORTFOLIO_HYPOTHESES,
           generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """The portfolio of k of P candidates: members (B, P, E) their members' scores, valid (B, P) ->
    (pick (B, k), ok (B, k)) as expected_max_select over n draws, a few contexts at a time (the
    draws are (B, n, P))."""
    B, P, E = members.shape
    z = draws(n, E, generator, members.device)
    per = max(1, _ELEMENTS // max(1, n * P))
    parts = [expected_max_select(hypotheses(members[i:i + per], z), valid[i:i + per], k) for i in range(0, B, per)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def expected_max_select(values: Tensor, valid: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Greedy K rows maximising the expected best, mean_h max_{i in set} values[h, i].

    values (B, H, P) each hypothesis' value of P candidates; valid (B, P) bool. -> (pick (B, k) long
    indices into P in the order chosen, ok (B, k) bool: False past a context's valid candidates).
    Where no candidate adds anything (every hypothesis' best is already chosen), the next is the one
    of highest mean value."""
    B, H, P = values.shape
    k = min(int(k), P)
    mean = values.mean(1).masked_fill(~valid, float("-inf"))                             # (B, P)
    best = torch.where(valid.unsqueeze(1), values, torch.full_like(values, float("inf"))).amin(-1)   # (B, H) floor
    spread = (mean.masked_fill(~valid, 0).amax(1) - best.mean(1)).abs().clamp(min=1e-12)          # (B,) scale of gains
    taken = ~valid
    picks, oks = [], []
    for _ in range(k):                                    # over the K rows of a set: each depends on the last
        ok = (~taken).any(1)
        gain = (values - best.unsqueeze(-1)).clamp(min=0).mean(1).masked_fill(taken, -1.0)   # (B, P)
        top = gain.max(1)
        flat = top.values <= 1e-9 * spread
        pick = torch.where(flat, mean.masked_fill(taken, float("-inf")).argmax(1), top.indices)
        pick = torch.where(ok, pick, torch.zeros_like(pick))
        chosen = values.gather(2, pick.view(B, 1, 1).expand(B, H, 1)).squeeze(-1)          # (B, H)
        best = torch.where(ok.unsqueeze(1), torch.maximum(best, chosen), best)
        taken = taken | (torch.nn.functional.one_hot(pick, P).bool() & ok.unsqueeze(1))
        picks.append(pick)
        oks.append(ok)
    return torch.stack(picks, 1), torch.stack(oks, 1)


def slices(members: Tensor, valid: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """K rows as one slice per member: member 0's best candidate not yet chosen, then member 1's, ...,
    member E-1's, then member 0's next, and so on. members (B, P, E), valid (B, P) -> (pick (B, k)
    long indices into P in the order chosen, ok (B, k) bool: False past a context's valid candidates).
    One member: its top k."""
    B, P, E = members.shape
    k = min(int(k), P)
    taken = ~valid
    picks, oks = [], []
    for i in range(k):                                    # each pick depends on the ones before it
        ok = (~taken).any(1)
        pick = members[..., i % E].masked_fill(taken, float("-inf")).argmax(1)
        pick = torch.where(ok, pick, torch.zeros_like(pick))
        taken = taken | (torch.nn.functional.one_hot(pick, P).bool() & ok.unsqueeze(1))
        picks.append(pick)
        oks.append(ok)
    return torch.stack(picks, 1), torch.stack(oks, 1)


def member_ranks(members: Tensor, valid: Tensor) -> Tensor:
    """(B, P) long: each valid candidate's best rank under any one member (0: some member's best);
    P where not valid. members (B, P, E), valid (B, P)."""
    B, P, E = members.shape
    order = members.masked_fill(~valid.unsqueeze(-1), float("-inf")).argsort(dim=1, descending=True, stable=True)
    place = torch.arange(P, device=members.device).view(1, P, 1).expand(B, P, E)
    ranks = torch.empty_like(order).scatter_(1, order, place)
    return ranks.amin(-1).masked_fill(~valid, P)


@dataclass
class TaggedContext(TableContext):
    """A TableContext whose contexts carry their position in the batch being decoded (tag (B,) long),
    kept through index, repeat_interleave and to: how MemberRecord knows whose row it scored."""

    tag: Tensor = None

    @classmethod
    def of(cls, ctx: TableContext) -> TaggedContext:
        return cls(ctx.cat, ctx.num, torch.arange(len(ctx), device=ctx.cat.device))

    def index(self, idx) -> TaggedContext:
        idx = torch.as_tensor(idx, device=self.cat.device) if not isinstance(idx, slice) else idx
        return TaggedContext(self.cat[idx], self.num[idx], self.tag[idx])

    def repeat_interleave(self, k: int) -> TaggedContext:
        return TaggedContext(self.cat.repeat_interleave(k, 0), self.num.repeat_interleave(k, 0),
                             self.tag.repeat_interleave(k, 0))

    def to(self, device) -> TaggedContext:
        return TaggedContext(self.cat.to(device), self.num.to(device), self.tag.to(device))


class MemberRecord(Objective):
    """An ensemble objective that scores as it does and keeps every hard row it scored, with its
    members' scores and the tag of its context (a TaggedContext): a search run through it leaves a
    pool to choose a portfolio from at no further scorer call (`pool`). Its calls count on it, and
    on the objective it wraps."""

    differentiable = False

    def __init__(self, inner: Objective):
        super().__init__()
        self.inner, self.members, self.scale, self.name = inner, inner.members, inner.scale, inner.name
        self._rows: list[Tensor] = []
        self._tags: list[Tensor] = []
        self._members: list[Tensor] = []
        self._scores: list[Tensor] = []

    def score(self, x: Tensor, ctx: TaggedContext) -> Tensor:
        self.inner.calls += int(x.shape[0])
        scores, members = self.inner.scores_and_members(x, ctx)
        if not x.is_floating_point():
            self._rows.append(x)
            self._tags.append(ctx.tag)
            self._members.append(members.float())
            self._scores.append(scores.float())
        return scores

    def pool(self, contexts: int, size: int, vocab: int, by: str = "mean") -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Each of the `contexts` contexts' `size` best distinct rows by score among those it scored
        (by="members": every distinct row within the `size` best of some member, at most E * size)
        -> (rows (B, P, S), scores (B, P), members (B, P, E), valid (B, P))."""
        B = contexts
        tags, rows = torch.cat(self._tags), torch.cat(self._rows)
        members, scores = torch.cat(self._members), torch.cat(self._scores)
        order = torch.argsort(tags, stable=True)
        tags, rows, members, scores = tags[order], rows[order], members[order], scores[order]
        counts = torch.bincount(tags, minlength=B)
        slot = torch.arange(len(tags), device=tags.device) - (torch.cumsum(counts, 0) - counts)[tags]
        M, S, E = max(1, int(counts.max())), rows.shape[-1], members.shape[-1]
        pad_rows = torch.full((B, M, S), -1, dtype=torch.long, device=rows.device)
        pad_members = torch.zeros(B, M, E, device=rows.device)
        pad_scores = torch.full((B, M), float("-inf"), device=rows.device)
        pad_rows[tags, slot] = rows
        pad_members[tags, slot] = members
        pad_scores[tags, slot] = scores
        keep = first_occurrence(row_keys(pad_rows, vocab), torch.isfinite(pad_scores))
        if by == "members":
            rank = member_ranks(pad_members, keep)
            top = (-rank.float()).masked_fill(rank >= size, float("-inf")).topk(min(E * int(size), M), dim=1)
        else:
            top = pad_scores.masked_fill(~keep, float("-inf")).topk(min(int(size), M), dim=1)   # (B, P)
        P, idx, valid = top.indices.shape[1], top.indices, torch.isfinite(top.values)
        return (pad_rows.gather(1, idx.unsqueeze(-1).expand(B, P, S)),
                pad_scores.gather(1, idx).masked_fill(~valid, float("-inf")),
                pad_members.gather(1, idx.unsqueeze(-1).expand(B, P, E)), valid)

    def compact(self, contexts: int, size: int, vocab: int, by: str = "mean", slack: int = 8) -> None:
        """Keep only what `pool` (the same arguments) would return, once it holds more than `slack`
        times that: bounded memory over an enumeration. Exact: a row outside a subset's pool stays
        outside the pool of any superset."""
        bound = contexts * size * (self.members if by == "members" else 1)
        if sum(len(r) for r in self._rows) <= slack * bound:
            return
        rows, scores, members, valid = self.pool(contexts, size, vocab, by)
        tags = torch.arange(contexts, device=rows.device)[:, None].expand(valid.shape)
        self._rows, self._tags = [rows[valid]], [tags[valid]]
        self._members, self._scores = [members[valid]], [scores[valid]]


def member_grid(objective, rows: Tensor, ctx, valid: Tensor, chunk: int) -> tuple[Tensor, int]:
    """Every member's score of rows (B, P, S) where valid (B, P) -> ((B, P, E), calls: the rows scored)."""
    B, P, S = rows.shape
    owner = torch.arange(B, device=rows.device)[:, None].expand(B, P)[valid]
    out = torch.zeros(B, P, objective.members, device=rows.device)
    if bool(valid.any()):
        out[valid] = score_flat(objective.member_scores, rows[valid], owner, ctx, chunk)
    return out, int(valid.sum())


def expected_max(values: Tensor, pick: Tensor, ok: Tensor) -> Tensor:
    """(B,) mean_h max over the picked candidates of values (B, H, P); pick, ok (B, k)."""
    B, H, P = values.shape
    got = values.gather(2, pick.unsqueeze(1).expand(B, H, pick.shape[1]))
    return got.masked_fill(~ok.unsqueeze(1), float("-inf")).amax(-1).mean(1)


__all__ = ["PORTFOLIO_HYPOTHESES", "PORTFOLIO_POOL", "MemberRecord", "TaggedContext", "choose", "draws",
           "expected_max", "expected_max_select", "hypotheses", "member_grid", "member_ranks", "slices"]
