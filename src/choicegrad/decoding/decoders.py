"""Decoders: turn a trained generator into K distinct candidate rows per context.

    cands = decode("polish", gen, objective, ctx, k=16, fixed=fixed, generator=rng)
    cands.rows (B, K, S) long, cands.scores (B, K) objective values (best first), cands.valid (B, K),
    cands.scorer_calls (rows scored)

argmax      the generator's most likely row (greedy slot by slot when autoregressive)
sample      rows drawn at a temperature, first K distinct in draw order
topk        the K most likely distinct rows by beam search (exact for factorized/pointer generators;
            width >= the space size makes it exact for autoregressive ones)
rerank      M distinct rows drawn from the generator, the K best by the objective (the scorer)
polish      rerank, then steepest-ascent coordinate search on the objective from the candidates:
            each sweep scores all single-slot changes of the best still-improving candidates in one
            batched call (under a budget, a beam that narrows to the best one as the calls run out)
anneal      rerank, then simulated annealing (search.anneal_from) from the best candidates: chains
            that may step down as well as up, so they leave the draws' local peaks
exhaustive  every row of a small space, the K best: the reference optimum

Every decoder keeps fixed slots (fixed (B, S) or (S,) long, -1 = free) at their value, returns K
distinct rows whenever the space (with the fixed slots) holds K rows -- a decoder that finds fewer
tops up with single-slot variants of what it found -- and sorts candidates by objective, best first.
Candidates beyond the size of a tiny space are marked invalid (valid False, score -inf, row -1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from choicegrad.generators.base import Generator, masked_log_softmax, rows_to_inputs
from choicegrad.generators.context import Context
from choicegrad.generators.objective import Objective

DECODERS = ("argmax", "sample", "topk", "rerank", "polish", "anneal", "exhaustive")
MAX_ENUMERATE = 5_000_000
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


# --- distinct rows --------------------------------------------------------------------------------
_HASH = torch.randint(1, 2**62, (1024,), generator=torch.Generator().manual_seed(12345)) | 1


def row_keys(rows: Tensor, vocab: int) -> Tensor:
    """(..., S) long rows -> (...,) int64 keys, equal iff rows are equal (exact mixed radix when
    vocab**S < 2**62, else a 64-bit multiplicative hash). Keys are >= 0."""
    S = rows.shape[-1]
    r = rows.clamp(min=0)
    if S * math.log2(max(vocab, 2)) < 62:
        radix = vocab ** torch.arange(S - 1, -1, -1, device=rows.device, dtype=torch.long)
        return (r * radix).sum(-1)
    mult = _HASH[:S].to(rows.device) if S <= len(_HASH) else _HASH.repeat(S // len(_HASH) + 1)[:S].to(rows.device)
    return ((r + 1) * mult).sum(-1) & (2**62 - 1)


def first_occurrence(keys: Tensor, valid: Tensor) -> Tensor:
    """(B, M) keys, (B, M) bool -> (B, M) bool: valid and not equal to an earlier valid key."""
    B, M = keys.shape
    sentinel = -1 - torch.arange(M, device=keys.device).expand(B, M)   # invalid entries never collide
    k = torch.where(valid, keys, sentinel)
    order = torch.argsort(k, dim=1, stable=True)
    sk = k.gather(1, order)
    dup_sorted = torch.zeros_like(valid)
    dup_sorted[:, 1:] = sk[:, 1:] == sk[:, :-1]
    dup = torch.zeros_like(valid).scatter(1, order, dup_sorted)
    return valid & ~dup


def _pad(rows: Tensor, scores: Tensor, valid: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    B, M, S = rows.shape
    if M >= k:
        return rows, scores, valid
    extra = k - M
    return (torch.cat([rows, rows.new_full((B, extra, S), -1)], 1),
            torch.cat([scores, scores.new_full((B, extra), _NEG)], 1),
            torch.cat([valid, valid.new_zeros((B, extra))], 1))


def distinct_topk(rows: Tensor, scores: Tensor, k: int, vocab: int, valid: Optional[Tensor] = None,
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """The k best distinct rows per context. rows (B, M, S), scores (B, M) -> rows (B, k, S),
    scores (B, k) best first, valid (B, k); fewer than k distinct valid rows leaves invalid tails."""
    ok = torch.isfinite(scores) if valid is None else valid & torch.isfinite(scores)
    keep = first_occurrence(row_keys(rows, vocab), ok)
    s = torch.where(keep, scores, torch.full_like(scores, _NEG))
    rows, s, keep = _pad(rows, s, keep, k)
    top = s.topk(k, dim=1)
    out_rows = rows.gather(1, top.indices.unsqueeze(-1).expand(-1, -1, rows.shape[-1]))
    out_valid = keep.gather(1, top.indices)
    return torch.where(out_valid.unsqueeze(-1), out_rows, -1), top.values, out_valid


def distinct_in_order(rows: Tensor, valid: Tensor, k: int, vocab: int) -> tuple[Tensor, Tensor]:
    """The first k distinct valid rows per context, in their order. -> rows (B, k, S), valid (B, k)."""
    B, M, S = rows.shape
    keep = first_occurrence(row_keys(rows, vocab), valid)
    priority = torch.where(keep, torch.arange(M, device=rows.device).expand(B, M).float(),
                           torch.full((B, M), float("inf"), device=rows.device))
    rows, priority, keep = _pad(rows, -priority, keep, k)
    top = priority.topk(k, dim=1)
    out_rows = rows.gather(1, top.indices.unsqueeze(-1).expand(-1, -1, S))
    out_valid = keep.gather(1, top.indices)
    return torch.where(out_valid.unsqueeze(-1), out_rows, -1), out_valid


# --- the space a decoder may use ------------------------------------------------------------------
def allowed_choices(gen_mask: Tensor, fixed: Optional[Tensor]) -> Tensor:
    """(B, S, V) bool: valid categories, restricted to the fixed value on fixed slots."""
    if fixed is None:
        return gen_mask
    B, S, V = gen_mask.shape
    f = fixed.to(gen_mask.device).expand(B, S)
    pinned = torch.nn.functional.one_hot(f.clamp(min=0), V).bool()
    return torch.where((f >= 0).unsqueeze(-1), pinned & gen_mask, gen_mask)


def check_fixed(fixed: Optional[Tensor], mask: Tensor) -> Optional[Tensor]:
    """Validate fixed (S,) or (B, S) against the mask (B, S, V); returns (B, S) long or None."""
    if fixed is None:
        return None
    B, S, V = mask.shape
    f = torch.as_tensor(fixed, dtype=torch.long, device=mask.device)
    if tuple(f.shape) not in ((S,), (B, S)):
        raise ValueError(f"fixed must have shape (S,)={(S,)} or (B, S)={(B, S)}, got {tuple(f.shape)}")
    f = f.expand(B, S)
    if bool(((f < -1) | (f >= V)).any()):
        raise ValueError(f"fixed values must be -1 (free) or a category in [0, {V})")
    ok = mask.gather(-1, f.clamp(min=0).unsqueeze(-1)).squeeze(-1) | (f < 0)
    if not bool(ok.all()):
        raise ValueError(f"fixed uses invalid categories at (context, slot) {(~ok).nonzero()[:5].tolist()}")
    return f


def neighbour_count(allowed: Tensor) -> Tensor:
    """(B,) long: single-slot changes of a row in the allowed space (B, S, V)."""
    return (allowed.sum(-1) - 1).clamp(min=0).sum(-1)


def space_size(allowed: Tensor) -> Tensor:
    """(B,) float64: rows per context in the allowed space (B, S, V)."""
    return allowed.sum(-1).double().prod(-1)


def enumerate_allowed(allowed: Tensor, start: int = 0, stop: Optional[int] = None) -> tuple[Tensor, Tensor, int]:
    """Rows start..stop of the product of the categories allowed in any context.

    allowed (B, S, V) -> (rows (R, S) long, ok (B, R) bool: allowed in that context, total rows).
    """
    union = allowed.any(0)                                                    # (S, V)
    counts = union.sum(-1)                                                    # (S,)
    total = int(torch.prod(counts.double()).item())
    stop = total if stop is None else min(stop, total)
    cats = torch.argsort((~union).to(torch.int8), dim=-1, stable=True)       # allowed categories first
    idx = torch.arange(start, stop, device=allowed.device)
    digits = []
    for s in range(union.shape[0] - 1, -1, -1):  # S digits of a mixed-radix number, last slot fastest
        digits.append(idx % counts[s])
        idx = idx // counts[s]
    d = torch.stack(digits[::-1], -1)                                        # (R, S)
    rows = cats.gather(1, d.T).T
    S = rows.shape[1]
    ok = allowed[:, torch.arange(S, device=rows.device), rows].all(-1)       # (B, R)
    return rows, ok, total


# --- scoring ------------------------------------------------------------------------------------
def score_flat(objective: Objective, rows: Tensor, owner: Tensor, ctx: Context, chunk: int = 1 << 16) -> Tensor:
    """Objective of rows (N, S) whose contexts are ctx.index(owner) (N,) -> (N,), in chunks, no grad."""
    outs = []
    with torch.no_grad():
        for start in range(0, len(rows), chunk):
            sl = slice(start, start + chunk)
            outs.append(objective(rows[sl], ctx.index(owner[sl])).float())
    return torch.cat(outs) if outs else torch.zeros(0, device=rows.device)


def score_grid(objective: Objective, rows: Tensor, ctx: Context, valid: Optional[Tensor] = None,
               chunk: int = 1 << 16) -> tuple[Tensor, int]:
    """Objective of rows (B, M, S) for B contexts -> ((B, M) scores, -inf where not valid; calls)."""
    B, M, S = rows.shape
    valid = torch.ones(B, M, dtype=torch.bool, device=rows.device) if valid is None else valid
    owner = torch.arange(B, device=rows.device)[:, None].expand(B, M)[valid]
    flat = score_flat(objective, rows[valid], owner, ctx, chunk)
    out = torch.full((B, M), _NEG, device=rows.device)
    out[valid] = flat
    return out, int(valid.sum())


# --- completing and finishing -------------------------------------------------------------------
def complete_distinct(rows: Tensor, valid: Tensor, k: int, allowed: Tensor,
                      generator: Optional[torch.Generator] = None, rounds: int = 64) -> tuple[Tensor, Tensor]:
    """Top up to min(k, space size) distinct rows per context with single-slot variants of the rows
    found (random slot, random allowed category), then, if still short and the space is small, with
    enumerated rows. rows (B, M, S), valid (B, M) -> rows (B, k, S), valid (B, k); found rows first."""
    B, S, V = allowed.shape
    dev = allowed.device
    rows, valid = distinct_in_order(rows, valid, k, V)
    target = space_size(allowed).clamp(max=k).long()
    free_slot = (allowed.sum(-1) > 1).float()                                 # (B, S)
    for _ in range(rounds):
        have = valid.sum(1)
        short = have < target
        if not bool(short.any()):
            return rows, valid
        P = k
        weights = valid.float() + (have == 0).float()[:, None] * 1e-3       # any row when none valid
        parent = torch.multinomial(weights, P, replacement=True, generator=generator)       # (B, P)
        base = rows.gather(1, parent.unsqueeze(-1).expand(-1, -1, S))
        base = torch.where(base < 0, allowed.float().argmax(-1).unsqueeze(1).expand(-1, P, -1), base)
        slot_w = free_slot + (free_slot.sum(1, keepdim=True) == 0).float()
        slot = torch.multinomial(slot_w, P, replacement=True, generator=generator)          # (B, P)
        cat_w = allowed.float().gather(1, slot.unsqueeze(-1).expand(-1, -1, V))            # (B, P, V)
        cat = torch.multinomial(cat_w.reshape(B * P, V), 1, generator=generator).reshape(B, P)
        prop = base.scatter(2, slot.unsqueeze(-1), cat.unsqueeze(-1))
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

    `scores` (B, M) are reused where given (NaN = unknown); other valid rows are scored now."""
    B, M, S = rows.shape
    V = allowed.shape[-1]
    top_rows, top_valid = distinct_in_order(rows, valid, k, V)
    top_rows, top_valid = complete_distinct(top_rows, top_valid, k, allowed, generator)
    s = torch.full(top_valid.shape, float("nan"), device=rows.device)
    if scores is not None:  # recover the known scores of kept rows by key match, (B, k, M)
        src_keys = torch.where(valid, row_keys(rows, V), torch.full((B, M), -1, dtype=torch.long, device=rows.device))
        match = (row_keys(top_rows, V).unsqueeze(2) == src_keys.unsqueeze(1)) & top_valid.unsqueeze(2)
        got = scores.gather(1, match.float().argmax(2))
        s = torch.where(match.any(2), got, s)
    need = top_valid & torch.isnan(s)
    if bool(need.any()):
        fresh, n = score_grid(objective, top_rows, ctx, need)
        s = torch.where(need, fresh, s)
        calls += n
    s = torch.where(top_valid, s, torch.full_like(s, _NEG))
    order = s.argsort(dim=1, descending=True, stable=True)
    return Candidates(top_rows.gather(1, order.unsqueeze(-1).expand(-1, -1, S)), s.gather(1, order),
                      top_valid.gather(1, order), calls)


# --- the decoders -------------------------------------------------------------------------------
def beam_search(gen: Generator, ctx: Context, width: int, fixed: Optional[Tensor] = None,
                temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The `width` most likely rows under the generator, slot by slot in its order.

    -> rows (B, W, S) long, log_probs (B, W) best first (-inf and row -1 where the space has fewer
    than W rows). Exact top-W for generators without slot dependencies; for autoregressive ones it is
    exact once W >= the number of rows.
    """
    B = len(ctx)
    with torch.no_grad():
        mask = gen.choice_mask(ctx)
        fixed = check_fixed(fixed, mask)
        allowed = allowed_choices(mask, fixed)
        _, S, V = mask.shape
        W = int(width)
        dev = mask.device
        rows = torch.full((B, W, S), -1, dtype=torch.long, device=dev)
        lp = torch.full((B, W), _NEG, device=dev)
        lp[:, 0] = 0.0
        flat_ctx = ctx.repeat_interleave(W) if gen.autoregressive else None
        feats = gen.features(flat_ctx) if gen.autoregressive else None
        static = None if gen.autoregressive else masked_log_softmax(gen.logits(ctx).float() / temperature)
        for s in gen.order:
            if gen.autoregressive:
                logits = gen.logits(flat_ctx, rows_to_inputs(rows.reshape(B * W, S), V), features=feats)[:, s]
                logp = masked_log_softmax(logits.float() / temperature).reshape(B, W, V)
            else:
                logp = static[:, s].unsqueeze(1).expand(B, W, V)
            logp = torch.where(allowed[:, s].unsqueeze(1), logp, torch.full_like(logp, _NEG))
            total = (lp.unsqueeze(-1) + logp).reshape(B, W * V)
            top = total.topk(W, dim=1)
            beam, cat = top.indices // V, top.indices % V
            rows = rows.gather(1, beam.unsqueeze(-1).expand(-1, -1, S)).clone()
            rows[:, :, s] = cat
            lp = top.values
        ok = torch.isfinite(lp)
        return torch.where(ok.unsqueeze(-1), rows, -1), lp


def distinct_draws(gen: Generator, ctx: Context, m: int, temperature: float, fixed: Optional[Tensor],
                   generator: Optional[torch.Generator], allowed: Tensor, rounds: int = 4) -> tuple[Tensor, Tensor]:
    """Up to m distinct rows per context drawn from the generator, in draw order: rounds of m draws
    until every context has m distinct rows (or its whole space), so a peaked generator does not
    spend scorer calls on repeats. -> rows (B, m, S), valid (B, m) (False past the distinct rows)."""
    V = allowed.shape[-1]
    want = space_size(allowed).clamp(max=m)
    draws = gen.sample(ctx, m, temperature, fixed, generator)
    rows, valid = distinct_in_order(draws, torch.ones(draws.shape[:2], dtype=torch.bool, device=draws.device), m, V)
    for _ in range(rounds - 1):
        if bool((valid.sum(1) >= want).all()):
            break
        more = gen.sample(ctx, m, temperature, fixed, generator)
        rows, valid = distinct_in_order(torch.cat([rows, more], 1),
                                        torch.cat([valid, torch.ones(more.shape[:2], dtype=torch.bool, device=more.device)], 1), m, V)
    return rows, valid


def polish(objective: Objective, ctx: Context, start: Candidates, allowed: Tensor, sweeps: int = 20,
           chunk: int = 1 << 16, max_elements: int = 1 << 25, budget: "Optional[int | Tensor]" = None) -> Candidates:
    """Steepest-ascent coordinate search from every valid candidate; the K best distinct rows among
    the candidates and every neighbour scored on the way.

    Each sweep builds all single-slot changes (B, P, S, V) of P still-improving candidates, scores
    them in one batched call, and moves each candidate to its best neighbour if that is better; a
    candidate with no better neighbour is at a local peak and stops. sweeps: at most this many.
    budget: at most this many neighbours scored per context (an int, or (B,) per context), spent
    best-first: each sweep climbs only the best still-improving candidates, as many as leave half the
    calls for the sweeps after it, so the beam narrows as the budget runs down and the best
    candidates climb to their peaks (sweeps is then no limit).
    """
    B, K, S = start.rows.shape
    V = allowed.shape[-1]
    if budget is not None:  # per context, (B,)
        budget = torch.as_tensor(budget, dtype=torch.float32, device=allowed.device).expand(B)
    per = max(1, max_elements // max(1, K * S * V * S))  # contexts per pass, bounding the neighbour grid
    if B > per:
        parts = [_polish(objective, ctx.index(torch.arange(i, min(i + per, B), device=allowed.device)),
                         Candidates(start.rows[i:i + per], start.scores[i:i + per], start.valid[i:i + per], 0),
                         allowed[i:i + per], sweeps, chunk, None if budget is None else budget[i:i + per])
                 for i in range(0, B, per)]
        return Candidates(torch.cat([p.rows for p in parts]), torch.cat([p.scores for p in parts]),
                          torch.cat([p.valid for p in parts]), start.scorer_calls + sum(p.scorer_calls for p in parts))
    return _polish(objective, ctx, start, allowed, sweeps, chunk, budget)


def _polish(objective: Objective, ctx: Context, start: Candidates, allowed: Tensor, sweeps: int,
            chunk: int, budget: Optional[Tensor] = None) -> Candidates:
    rows, scores, valid = start.rows, start.scores, start.valid
    B, K, S = rows.shape
    V = allowed.shape[-1]
    dev = rows.device
    calls = start.scorer_calls
    left = torch.full((B,), math.inf, device=dev) if budget is None else budget.clone()
    best_rows, best_scores, best_valid = rows, scores, valid
    current, cur_score, active = rows.clone(), scores.clone(), valid.clone()
    size = neighbour_count(allowed).float()                                        # (B,) neighbours of a row
    eye = torch.arange(S, device=dev)
    change = torch.arange(V, device=dev)
    sweep = 0
    while bool(active.any()) and (budget is not None or sweep < sweeps):
        sweep += 1
        # the beam: the best still-improving candidates; under a budget only as many as leave room for
        # as many again next sweep, so the best candidates climb furthest (down to one, to its peak)
        beam = active.sum(1).float()
        if budget is not None:
            beam = torch.minimum(beam, torch.floor(left / (2 * size.clamp(min=1))).clamp(min=1))
            beam = torch.where(left >= size, beam, torch.zeros_like(beam))
        P = int(beam.max())
        if P == 0:
            break
        pick = torch.where(active, cur_score, torch.full_like(cur_score, _NEG)).topk(P, dim=1).indices   # (B, P)
        on = (torch.arange(P, device=dev)[None, :] < beam[:, None]) & active.gather(1, pick)
        base = current.gather(1, pick.unsqueeze(-1).expand(B, P, S))                    # (B, P, S)
        nb = base.unsqueeze(2).unsqueeze(3).expand(B, P, S, V, S).clone()                # (B, P, S, V, S)
        nb[:, :, eye, :, eye] = change.view(1, 1, 1, V).expand(B, P, S, V).permute(2, 0, 1, 3)  # slot s := v
        ok = allowed.unsqueeze(1) & (change.view(1, 1, 1, V) != base.unsqueeze(-1)) & on[:, :, None, None]
        left = left - ok.sum((1, 2, 3)).float()
        flat_rows = nb.reshape(B, P * S * V, S)
        nb_scores, n = score_grid(objective, flat_rows, ctx, ok.reshape(B, P * S * V), chunk)
        calls += n
        best_nb = nb_scores.reshape(B, P, S * V).max(-1)
        base_score = cur_score.gather(1, pick)
        improve = on & (best_nb.values > base_score + 1e-7)
        moved = flat_rows.reshape(B, P, S * V, S).gather(2, best_nb.indices[..., None, None].expand(B, P, 1, S))[:, :, 0]
        current = current.scatter(1, pick.unsqueeze(-1).expand(B, P, S),
                                  torch.where(improve.unsqueeze(-1), moved, base))
        cur_score = cur_score.scatter(1, pick, torch.where(improve, best_nb.values, base_score))
        active = active.scatter(1, pick, active.gather(1, pick) & (improve | ~on))       # at a peak: done
        best_rows, best_scores, best_valid = distinct_topk(
            torch.cat([best_rows, flat_rows], 1), torch.cat([best_scores, nb_scores], 1), K, V,
            torch.cat([best_valid, ok.reshape(B, P * S * V)], 1))
    return Candidates(best_rows, best_scores, best_valid, calls)


def exhaustive(objective: Objective, ctx: Context, k: int, allowed: Tensor, chunk: int = 1 << 16) -> Candidates:
    """The k best rows of the allowed space by the objective, enumerating it in chunks."""
    B, S, V = allowed.shape
    total = int(space_size(allowed.any(0, keepdim=True))[0].item())
    if total > MAX_ENUMERATE:
        raise ValueError(f"exhaustive decoding needs at most {MAX_ENUMERATE} rows, this space has {total}")
    per = max(1, chunk // max(B, 1))
    best_rows = torch.full((B, 0, S), -1, dtype=torch.long, device=allowed.device)
    best_scores = torch.full((B, 0), _NEG, device=allowed.device)
    best_valid = torch.zeros(B, 0, dtype=torch.bool, device=allowed.device)
    calls = 0
    for start in range(0, total, per):
        rows, ok, _ = enumerate_allowed(allowed, start, start + per)
        grid = rows.unsqueeze(0).expand(B, -1, -1)
        scores, n = score_grid(objective, grid, ctx, ok, chunk)
        calls += n
        best_rows, best_scores, best_valid = distinct_topk(
            torch.cat([best_rows, grid], 1), torch.cat([best_scores, scores], 1), k, V,
            torch.cat([best_valid, ok], 1))
    return Candidates(best_rows, best_scores, best_valid, calls)


def decode(name: str, gen: Optional[Generator], objective: Objective, ctx: Context, k: int, *,
           fixed: Optional[Tensor] = None, temperature: float = 1.0, samples: Optional[int] = None,
           width: Optional[int] = None, sweeps: int = 20, generator: Optional[torch.Generator] = None,
           mask: Optional[Tensor] = None, chunk: int = 1 << 16, budget: Optional[int] = None,
           draw_share: float = 0.25) -> Candidates:
    """K distinct candidates per context by decoder `name` (see the module docstring).

    gen: the generator (not needed by 'exhaustive' when `mask` (B, S, V) is given); objective:
    f(x, ctx) -> scores (the scorer); ctx: B contexts; fixed: (S,) or (B, S) long, -1 = free;
    temperature: sampling temperature (sample, rerank, polish); samples: rows drawn by rerank/polish
    (default max(8K, 256)); width: beam width of topk (default K); sweeps: polish's maximum sweeps;
    budget: scorer calls per context for rerank (all on draws), polish and anneal (`draw_share` of it
    on draws, the rest on the search from the best of them); the other decoders score only their K rows.
    Measured on the benchmark tasks, a quarter on draws beats a half: the trained generator's draws
    are good starts, and the local search, not more draws, finds the optimum near them.
    """
    from choicegrad.errors import did_you_mean

    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}{did_you_mean(name, DECODERS)}; choose one of {', '.join(DECODERS)}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < draw_share <= 1:
        raise ValueError(f"draw_share must be in (0, 1], got {draw_share}")
    k = int(k)
    generator = generator if generator is not None else torch.Generator(device=ctx.device).manual_seed(0)
    with torch.no_grad():
        gen_mask = gen.choice_mask(ctx) if mask is None else mask.expand(len(ctx), -1, -1)
        fixed = check_fixed(fixed, gen_mask)
        allowed = allowed_choices(gen_mask, fixed)
        if name == "exhaustive":
            c = exhaustive(objective, ctx, k, allowed, chunk)
            return finish(objective, ctx, c.rows, c.valid, k, allowed, c.scores, c.scorer_calls, generator)
        if gen is None:
            raise ValueError(f"decoder {name!r} needs a generator")
        B = len(ctx)
        if name == "argmax":
            rows, _ = beam_search(gen, ctx, 1, fixed)
            return finish(objective, ctx, rows, rows[..., 0] >= 0, k, allowed, generator=generator)
        if name == "topk":
            rows, lp = beam_search(gen, ctx, max(k, int(width or k)), fixed)
            return finish(objective, ctx, rows[:, :k], torch.isfinite(lp[:, :k]), k, allowed, generator=generator)
        if name == "sample":
            draws = gen.sample(ctx, max(2 * k, 32), temperature, fixed, generator)
            for _ in range(3):  # a few more rounds when the draws repeat a lot
                _, v = distinct_in_order(draws, torch.ones(draws.shape[:2], dtype=torch.bool, device=draws.device),
                                         k, allowed.shape[-1])
                if bool((v.sum(1) >= space_size(allowed).clamp(max=k)).all()):
                    break
                draws = torch.cat([draws, gen.sample(ctx, max(2 * k, 32), temperature, fixed, generator)], 1)
            return finish(objective, ctx, draws, torch.ones(draws.shape[:2], dtype=torch.bool, device=draws.device),
                          k, allowed, generator=generator)
        if budget is not None and int(budget) < 1:
            raise ValueError(f"budget must be >= 1 scorer call per context, got {budget}")
        m = int(samples or (max(8 * k, 256) if budget is None else budget if name == "rerank"
                            else max(1, int(budget * draw_share))))
        if budget is not None and samples is None and name != "rerank":
            room = int(budget) - int(neighbour_count(allowed).max())    # leave one row's neighbours
            m = max(1, min(m, room)) if room >= 1 else int(budget)      # else all on draws: no sweep would fit
        draws, fresh = distinct_draws(gen, ctx, m, temperature, fixed, generator, allowed)  # (B, M, S), (B, M)
        scores, calls = score_grid(objective, draws, ctx, fresh, chunk=chunk)
        rows, top, ok = distinct_topk(draws, scores, k, allowed.shape[-1], fresh)
        cands = finish(objective, ctx, rows, ok, k, allowed, top, calls, generator)
        if name == "rerank":
            return cands
        left = None
        if budget is not None:  # per context: its distinct draws and the top-up rows finish scored
            spent = fresh.sum(1) + (cands.valid.sum(1) - ok.sum(1)).clamp(min=0)
            left = (int(budget) - spent).clamp(min=0)
            if not bool((left > 0).any()):
                return cands
        if name == "anneal":
            from choicegrad.bench.peers import anneal_from

            return anneal_from(objective, ctx, allowed, cands, m if left is None else left, generator, chunk=chunk)
        return polish(objective, ctx, cands, allowed, sweeps, chunk, budget=left)


def candidates_frame(space, cands: Candidates, contexts=None):
    """One table row per (context, rank): the context's columns, the features (labels), `score` and
    `rank` (1 = best). contexts: DataFrame with one row per context (None: no context columns).
    Invalid candidates (a space smaller than K) are left out."""
    import numpy as np
    import pandas as pd

    valid = cands.valid.cpu().numpy()
    b_idx, r_idx = np.nonzero(valid)
    rows = cands.rows.cpu()[torch.as_tensor(b_idx, dtype=torch.long), torch.as_tensor(r_idx, dtype=torch.long)]
    parts = [] if contexts is None else [contexts.iloc[b_idx].reset_index(drop=True)]
    out = pd.concat([*parts, space.decode(rows)], axis=1)
    out["score"] = cands.scores.cpu().numpy()[b_idx, r_idx]
    out["rank"] = r_idx + 1
    return out
