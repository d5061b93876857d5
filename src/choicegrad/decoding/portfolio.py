"""Portfolio selection for max-of-K: K rows whose best is high under every plausible hypothesis of
the scorer ensemble, not the K best by the ensemble's mean.

    values = hypotheses(members, n=256, generator=rng)      # (B, H, P) from (B, P, E)
    pick = expected_max_select(values, valid, k)             # (B, k) indices into the P candidates

When proposals are judged by the best of them (max of K), K rows that all bet on the mean's one
hypothesis waste K - 1 of them where the ensemble is unsure. The expected best of a set under H
hypotheses, mean_h max_{i in set} f_h(x_i), is a facility-location objective: monotone and
submodular, so adding rows greedily by their gain reaches at least 1 - 1/e of the best set
(Nemhauser et al. 1978). The first row is the mean's best; each next one adds the most where the
hypotheses disagree with the rows already chosen.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from choicegrad.decoding.rows import first_occurrence, row_keys
from choicegrad.generators.objective import Objective

#: Candidates in the pool per returned row: the best distinct rows by the mean among every row the
#: search scored.
PORTFOLIO_POOL = 8
#: Hypotheses drawn from the ensemble's spread.
PORTFOLIO_HYPOTHESES = 256
_ELEMENTS = 1 << 24          # hypotheses x candidates x contexts selected at a time


def hypotheses(members: Tensor, n: int = PORTFOLIO_HYPOTHESES, generator: Optional[torch.Generator] = None) -> Tensor:
    """n draws of the score function from an ensemble's members: members (B, P, E) -> (B, n, P).

    Draw h is mean + sum_e z_he (member_e - mean) / sqrt(E - 1), z ~ N(0, I): each candidate's
    spread is the members' sample standard deviation, and candidates the members move together
    (the same member rates both high) stay correlated. E == 1: every draw is the one member."""
    B, P, E = members.shape
    mean = members.mean(-1)                                                 # (B, P)
    if E == 1:
        return mean.unsqueeze(1).expand(B, n, P)
    z = torch.randn(n, E, generator=generator, device=members.device, dtype=members.dtype)
    spread = (members - mean.unsqueeze(-1)) / math.sqrt(E - 1)              # (B, P, E)
    return mean.unsqueeze(1) + torch.einsum("he,bpe->bhp", z, spread)


def expected_max_select(values: Tensor, valid: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Greedy K rows maximising the expected best, mean_h max_{i in set} values[h, i].

    values (B, H, P) each hypothesis' value of P candidates; valid (B, P) bool. -> (pick (B, k) long
    indices into P in the order chosen, ok (B, k) bool: False past a context's valid candidates).
    Where no candidate adds anything (every hypothesis' best is already chosen), the next is the one
    of highest mean value."""
    B, H, P = values.shape
    per = max(1, _ELEMENTS // max(1, H * P))
    if B > per:
        parts = [expected_max_select(values[i:i + per], valid[i:i + per], k) for i in range(0, B, per)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
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


class MemberRecord(Objective):
    """An ensemble objective that scores as it does and keeps every hard row it scored, with its
    members' scores and a key of its context: a search run through it leaves a pool to choose a
    portfolio from at no further scorer call (`pool`)."""

    differentiable = False

    def __init__(self, inner: Objective):
        super().__init__()
        self.inner, self.members, self.scale, self.name = inner, inner.members, inner.scale, inner.name
        self._rows: list[Tensor] = []
        self._keys: list[Tensor] = []
        self._members: list[Tensor] = []
        self._scores: list[Tensor] = []

    def score(self, x: Tensor, ctx) -> Tensor:
        scores, members = self.inner.scores_and_members(x, ctx)
        if not x.is_floating_point():
            self._rows.append(x)
            self._keys.append(context_keys(ctx))
            self._members.append(members.float())
            self._scores.append(scores.float())
        return scores

    def pool(self, ctx, size: int, vocab: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Each context's `size` best distinct rows by score among those recorded -> (rows (B, P, S),
        scores (B, P), members (B, P, E), valid (B, P)); contexts with equal features share theirs."""
        B = len(ctx)
        rows, keys = torch.cat(self._rows), torch.cat(self._keys)
        members, scores = torch.cat(self._members), torch.cat(self._scores)
        own, group = torch.unique(context_keys(ctx), return_inverse=True)             # (G,), (B,)
        at = torch.searchsorted(own, keys).clamp(max=len(own) - 1)
        hit = own[at] == keys
        at, rows, members, scores = at[hit], rows[hit], members[hit], scores[hit]
        order = torch.argsort(at, stable=True)
        at, rows, members, scores = at[order], rows[order], members[order], scores[order]
        counts = torch.bincount(at, minlength=len(own))
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(at), device=at.device) - start[at]
        M, S, E = max(1, int(counts.max())), rows.shape[-1], members.shape[-1]
        pad_rows = torch.full((len(own), M, S), -1, dtype=torch.long, device=rows.device)
        pad_members = torch.zeros(len(own), M, E, device=rows.device)
        pad_scores = torch.full((len(own), M), float("-inf"), device=rows.device)
        pad_rows[at, slot], pad_members[at, slot], pad_scores[at, slot] = rows, members, scores
        keep = first_occurrence(row_keys(pad_rows, vocab), torch.isfinite(pad_scores))
        P = min(int(size), M)
        top = pad_scores.masked_fill(~keep, float("-inf")).topk(P, dim=1)              # (G, P)
        pick = top.indices[group]                                                      # (B, P)
        rows_out = pad_rows[group].gather(1, pick.unsqueeze(-1).expand(B, P, S))
        members_out = pad_members[group].gather(1, pick.unsqueeze(-1).expand(B, P, E))
        return rows_out, top.values[group], members_out, torch.isfinite(top.values[group])


def context_keys(ctx) -> Tensor:
    """(N,) int64 keys of a context batch's features, equal for equal contexts (a 64-bit hash of the
    categorical codes and the numbers' bits; one key for a batch without features)."""
    parts = [t.long() for t in (getattr(ctx, "cat", None),) if t is not None and t.numel()]
    num = getattr(ctx, "num", None)
    if num is not None and num.numel():
        parts.append(num.float().contiguous().view(torch.int32).long())
    if not parts:
        return torch.zeros(len(ctx), dtype=torch.long)
    cols = torch.cat(parts, 1)
    key = torch.zeros(len(cols), dtype=torch.long, device=cols.device)
    for c in range(cols.shape[1]):                     # over the few context columns
        key = key * 1_000_003 + cols[:, c] + 1
    return key


def member_grid(objective, rows: Tensor, ctx, valid: Tensor, chunk: int) -> tuple[Tensor, int]:
    """Every member's score of rows (B, P, S) where valid (B, P) -> ((B, P, E), calls: the rows scored)."""
    B, P, S = rows.shape
    owner = torch.arange(B, device=rows.device)[:, None].expand(B, P)[valid]
    flat = rows[valid]
    outs = []
    with torch.no_grad():
        for start in range(0, len(flat), chunk):
            sl = slice(start, start + chunk)
            outs.append(objective.member_scores(flat[sl], ctx.index(owner[sl])).float())
    E = objective.members
    out = torch.zeros(B, P, E, device=rows.device)
    if outs:
        out[valid] = torch.cat(outs)
    return out, int(valid.sum())


def expected_max(values: Tensor, pick: Tensor, ok: Tensor) -> Tensor:
    """(B,) mean_h max over the picked candidates of values (B, H, P); pick, ok (B, k)."""
    B, H, P = values.shape
    got = values.gather(2, pick.unsqueeze(1).expand(B, H, pick.shape[1]))
    return got.masked_fill(~ok.unsqueeze(1), float("-inf")).amax(-1).mean(1)


__all__ = ["PORTFOLIO_HYPOTHESES", "PORTFOLIO_POOL", "MemberRecord", "context_keys", "expected_max",
           "expected_max_select", "hypotheses", "member_grid"]
