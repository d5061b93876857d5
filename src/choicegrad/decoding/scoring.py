"""Scoring rows with the objective, and turning found rows into K distinct, scored, sorted Candidates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from choicegrad.decoding.rows import (MAX_ENUMERATE, change_one_slot, distinct_in_order, enumerate_allowed,
                                      per_context, row_keys, space_size)
from choicegrad.generators.context import Context
from choicegrad.generators.objective import SCORE_CHUNK, Objective

_NEG = float("-inf")


def default_budget(k: int) -> int:
    """Scorer calls per context `choicegrad generate` gives rerank/polish/anneal for K candidates:
    max(5K, 256), e.g. 640 for K = 128 (1% of a tfbind8 context is 655)."""
    return max(5 * int(k), 256)


@dataclass
class Candidates:
    """rows (B, K, S) long (-1 where invalid); scores (B, K) float (-inf where invalid), best first;
    valid (B, K) bool; scorer_calls: rows passed to the objective."""

    rows: Tensor
    scores: Tensor
    valid: Tensor
    scorer_calls: int


def score_flat(objective: Objective, rows: Tensor, owner: Tensor, ctx: Context, chunk: int = SCORE_CHUNK) -> Tensor:
    """Objective of rows (N, S) whose contexts are ctx.index(owner) (N,) -> (N,), in chunks, no grad
    (any f(rows, ctx) of the same form: an objective's member_scores gives (N, members))."""
    outs = []
    with torch.no_grad():
        for start in range(0, len(rows), chunk):
            sl = slice(start, start + chunk)
            outs.append(objective(rows[sl], ctx.index(owner[sl])).float())
    return torch.cat(outs) if outs else torch.zeros(0, device=rows.device)


def score_grid(objective: Objective, rows: Tensor, ctx: Context, valid: Optional[Tensor] = None,
               chunk: int = SCORE_CHUNK) -> tuple[Tensor, int]:
    """Objective of rows (B, M, S) for B contexts -> ((B, M) scores, -inf where not valid; calls)."""
    B, M, S = rows.shape
    valid = torch.ones(B, M, dtype=torch.bool, device=rows.device) if valid is None else valid
    owner = torch.arange(B, device=rows.device)[:, None].expand(B, M)[valid]
    flat = score_flat(objective, rows[valid], owner, ctx, chunk)
    out = torch.full((B, M), _NEG, device=rows.device)
    out[valid] = flat
    return out, int(valid.sum())


def complete_distinct(rows: Tensor, valid: Tensor, k: int, allowed: Tensor,
                      generator: Optional[torch.Generator] = None, rounds: int = 64) -> tuple[Tensor, Tensor]:
    """Top up to min(k, space size) distinct rows per context with single-slot variants of the rows
    found (change_one_slot), then, if still short and the space is small, with enumerated rows.
    rows (B, M, S), valid (B, M) -> rows (B, k, S), valid (B, k); found rows first."""
    B, S, V = allowed.shape
    rows, valid = distinct_in_order(rows, valid, k, V)
    target = space_size(allowed).clamp(max=k).long()
    first = per_context(allowed, lambda a: a.to(torch.uint8).argmax(-1))         # (B, S) first allowed category
    for _ in range(rounds):
        have = valid.sum(1)
        short = have < target
        if not bool(short.any()):
            return rows, valid
        P = k
        weights = valid.float() + (have == 0).float()[:, None] * 1e-3       # any row when none valid
        parent = torch.multinomial(weights, P, replacement=True, generator=generator)       # (B, P)
        base = rows.gather(1, parent.unsqueeze(-1).expand(-1, -1, S))
        base = torch.where(base < 0, first.unsqueeze(1).expand(-1, P, -1), base)
        prop = change_one_slot(base, allowed, generator)
        prop_ok = short[:, None].expand(B, P)
        rows, valid = distinct_in_order(torch.cat([rows, prop], 1), torch.cat([valid, prop_ok], 1), k, V)
    short = valid.sum(1) < target
    if bool(short.any()) and int(space_size(allowed).max()) <= MAX_ENUMERATE:
        every, ok, _ = enumerate_allowed(allowed)
        every = every.unsqueeze(0).expand(B, -1, -1)
        rows, valid = distinct_in_order(torch.cat([rows, every], 1), torch.cat([valid, ok & short[:, None]], 1), k, V)
    return rows, valid


def finish(objective: Objective, ctx: Context, rows: Tensor, valid: Tensor, k: int, allowed: Tensor,
           scores: Optional[Tensor] = None, calls: int = 0, generator: Optional[torch.Generator] = None,
           ) -> Candidates:
    """Distinct, topped-up, scored and sorted candidates from rows (B, M, S) / valid (B, M).

    `scores` (B, M) are reused where given (NaN = unknown); other valid rows are scored now.
    Many parameters: what scores (objective, ctx), the rows, and what is known of them already
    (scores, calls) or draws the top-up rows (generator); every decoder ends here."""
    B, M, S = rows.shape
    V = allowed.shape[-1]
    top_rows, top_valid = distinct_in_order(rows, valid, k, V)
    top_rows, top_valid = complete_distinct(top_rows, top_valid, k, allowed, generator)
    s = torch.full(top_valid.shape, float("nan"), device=rows.device)
    if scores is not None and M > 0:  # recover the known scores of kept rows: look their keys up among the source's
        src_keys = torch.where(valid, row_keys(rows, V), torch.full((B, M), -1, dtype=torch.long, device=rows.device))
        sorted_keys, order = src_keys.sort(dim=1, stable=True)
        want = row_keys(top_rows, V)                                                       # (B, k)
        pos = torch.searchsorted(sorted_keys, want).clamp(max=M - 1)
        hit = (sorted_keys.gather(1, pos) == want) & top_valid
        s = torch.where(hit, scores.gather(1, order.gather(1, pos)), s)
    need = top_valid & torch.isnan(s)
    if bool(need.any()):
        fresh, n = score_grid(objective, top_rows, ctx, need)
        s = torch.where(need, fresh, s)
        calls += n
    s = torch.where(top_valid, s, torch.full_like(s, _NEG))
    order = s.argsort(dim=1, descending=True, stable=True)
    return Candidates(top_rows.gather(1, order.unsqueeze(-1).expand(-1, -1, S)), s.gather(1, order),
                      top_valid.gather(1, order), calls)
