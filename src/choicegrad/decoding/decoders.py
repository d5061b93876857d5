"""Decoders: turn a trained generator into K distinct candidate rows per context.

    cands = decode("polish", gen, objective, ctx, k=16, fixed=fixed, generator=rng)
    cands = decode("polish", gen, objective, ctx, k=16, options=DecodeOptions(budget=640))
    cands.rows (B, K, S) long, cands.scores (B, K) objective values (best first), cands.valid (B, K),
    cands.scorer_calls (rows scored)

argmax      the generator's most likely row (greedy slot by slot when autoregressive)
sample      rows drawn at a temperature, first K distinct in draw order
topk        the K most likely distinct rows by beam search (exact for factorized/pointer generators;
            width >= the space size makes it exact for autoregressive ones)
rerank      M distinct rows drawn from the generator, the K best by the objective (the scorer)
polish      rerank, then steepest-ascent coordinate search on the objective from the candidates:
            each sweep scores all single-slot changes of the best still-improving candidates in one
            batched call (under a budget, a beam that narrows to the best one as the calls run out); in a
            slot of more than SEARCH_CATEGORIES categories, the changes to those the generator rates highest
anneal      rerank, then simulated annealing (local_search.anneal_from) from the best candidates: chains
            that may step down as well as up, so they leave the draws' local peaks
portfolio   for max-of-K under a scorer ensemble: polish's search, then, from the 8K best distinct rows
            by the mean among all it scored (their members' scores kept as it scored them: no further
            call), the K that maximise the expected best of the K over draws from the ensemble's spread
            (portfolio.py), not the mean's K best; with a single scorer (one member) it is polish
slices      for max-of-K under a scorer ensemble: polish's search, then K / E rows per member, each
            member's own best among all rows the search scored, taken in turn (portfolio.slices); with
            a single scorer it is polish
exhaustive  every row of a small space, the K best: the reference optimum
portfolio, slices and exhaustive also decode without a generator (gen None, options.mask given):
the search is then every row of the space. min_distance=D (rerank, polish, anneal, exhaustive): the
K rows differ pairwise in at least D slots, the best of the rows the search scored taken greedily.
register_decoder(name) adds a decoder of one's own (docs/architecture.md).

Every decoder keeps fixed slots (fixed (B, S) or (S,) long, -1 = free) at their value, returns K
distinct rows whenever the space (with the fixed slots) holds K rows -- a decoder that finds fewer
tops up with single-slot variants of what it found -- and sorts candidates by objective, best first.
K larger than the largest context's space is lowered to that size; candidates beyond the size of a
smaller context's space are marked invalid (valid False, score -inf, row -1). Contexts are decoded
in groups of at most `max_rows` rows handled at once, so memory stays bounded for any K and number
of contexts.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

import torch
from pydantic import BaseModel, ConfigDict, field_validator
from torch import Tensor

from choicegrad.decoding.local_search import (SEARCH_CATEGORIES, anneal_from, generator_ratings, led_by_gradient,
                                              move_count, polish, search_moves)
from choicegrad.decoding.rows import (MAX_ENUMERATE, allowed_choices, check_fixed, distinct_in_order, distinct_topk,
                                      enumerate_allowed, neighbour_count, space_size, union_of)
from choicegrad.decoding.portfolio import PORTFOLIO_POOL, MemberRecord, TaggedContext, choose, slices
from choicegrad.decoding.scoring import Candidates, finish, score_grid
from choicegrad.decoding.select import select_batch
from choicegrad.errors import InputError, did_you_mean
from choicegrad.estimators import MASK_VALUE
from choicegrad.generators.base import Generator, masked_log_softmax
from choicegrad.generators.context import DECODE_ELEMENTS, Context, TableContext, decode_chunk, in_context_chunks
from choicegrad.generators.objective import SCORE_CHUNK, Objective, as_objective

_NEG = float("-inf")
#: min_distance > 1 picks the K among this many times K of the best distinct rows the search scored.
SPREAD_POOL = 32


class DecodeOptions(BaseModel):
    """How `decode` searches; every field is also a keyword of decode (decode(..., budget=640)).

    fixed: (S,) or (B, S) long, -1 = free (anything torch.as_tensor takes); temperature: sampling
    temperature (sample, rerank, polish, anneal); samples: rows drawn by rerank/polish/anneal (default
    max(8K, 256), or from the budget); width: beam width of topk (default K); sweeps: polish's maximum
    sweeps without a budget; generator: the random stream (default seeded 0 on the contexts' device);
    mask: (B, S, V) or (S, V) bool choices, instead of the generator's (lets exhaustive run without a
    generator); chunk: rows per objective call; budget: scorer calls per context for rerank (all on
    draws), polish and anneal (`draw_share` of it on draws, the rest on the search from the best of
    them); the other decoders score only their K rows. Measured on the benchmark tasks, a quarter on
    draws beats a half: the trained generator's draws are good starts, and the local search, not more
    draws, finds the optimum near them. max_rows: contexts are decoded in groups so that a group's
    draws, beams and candidates (estimated by rows_per_context) stay within about this many rows.
    starts: polish climbs from this many of the best draws (default K); by_slot: polish changes one
    slot per step; gradient: polish, under a budget and on a differentiable objective, rates every
    single-slot change by the objective's gradient at the row (one call) and scores them best rated
    first, one per step (local_search.polish). min_distance: the K rows differ pairwise in at least
    this many slots (rerank, polish, anneal, exhaustive): after the search, the best of the 32K best
    rows it scored (SPREAD_POOL), greedy, each far enough from those before it; where fewer lie that
    far apart, the rest are topped up as always (single-slot variants).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    fixed: Optional[Tensor] = None
    temperature: float = 1.0
    samples: Optional[int] = None
    width: Optional[int] = None
    sweeps: int = 20
    generator: Optional[torch.Generator] = None
    mask: Optional[Tensor] = None
    chunk: int = SCORE_CHUNK
    budget: Optional[int] = None
    draw_share: float = 0.25
    max_rows: int = 1 << 20
    starts: Optional[int] = None
    by_slot: bool = False
    gradient: bool = False
    min_distance: int = 1

    @field_validator("fixed", mode="before")
    @classmethod
    def _as_tensor(cls, value: Any) -> Optional[Tensor]:
        return value if value is None or isinstance(value, Tensor) else torch.as_tensor(value, dtype=torch.long)


def beam_search(gen: Generator, ctx: Context, width: int, fixed: Optional[Tensor] = None,
                temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The `width` most likely rows under the generator, slot by slot in its order.

    -> rows (B, W, S) long, log_probs (B, W) best first (-inf and row -1 where the space has fewer
    than W rows). Exact top-W for generators without slot dependencies; for autoregressive ones it is
    exact once W >= the number of rows.
    """
    with torch.no_grad():
        mask = gen.choice_mask(ctx)
        allowed = allowed_choices(mask, check_fixed(fixed, mask))
        with gen.decoding():
            return in_context_chunks(lambda c, a: _beam(gen, c, int(width), a, temperature), ctx,
                                     decode_chunk(int(width), mask.shape[-1]), allowed)


def _beam(gen: Generator, ctx: Context, W: int, allowed: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    B, S, V = allowed.shape
    rows = torch.full((B, W, S), -1, dtype=torch.long, device=allowed.device)
    lp = torch.full((B, W), _NEG, device=allowed.device)
    lp[:, 0] = 0.0
    feats, carry = (gen.features(ctx), None) if gen.autoregressive else (None, None)
    static = None if gen.autoregressive else masked_log_softmax(gen.logits(ctx).float() / temperature)
    for p, s in enumerate(gen.order):
        Vs, once = V, False
        if gen.autoregressive:          # shares_first: every beam alike before the first slot; own categories only
            once = p == 0                 # nothing chosen yet: every row of a context has the same logits
            logits, carry = gen.slot_logits(feats, rows[:, :1] if once else rows, s, carry, padded=False)
            Vs = logits.shape[-1]
            # a choice the generator itself rules out (a repeat under distinct items) is no row
            logp = masked_log_softmax(logits.float() / temperature).masked_fill(logits <= MASK_VALUE / 2, _NEG)
            logp = logp.expand(B, W, Vs)
            if once and carry is not None:
                carry = [c.expand(-1, W, -1) for c in carry]
        else:
            logp = static[:, s].unsqueeze(1).expand(B, W, V)
        logp = torch.where(allowed[:, s, :Vs].unsqueeze(1), logp, torch.full_like(logp, _NEG))
        if once and Vs >= W:            # one live beam: the W best of its Vs choices
            top = logp[:, 0].topk(W, dim=1)
            beam, cat = torch.zeros_like(top.indices), top.indices
        else:
            top = (lp.unsqueeze(-1) + logp).reshape(B, W * Vs).topk(W, dim=1)
            beam, cat = top.indices // Vs, top.indices % Vs
        parent = (beam + torch.arange(B, device=beam.device).unsqueeze(1) * W).reshape(-1)   # (B*W,) row copies
        rows = rows.reshape(B * W, S).index_select(0, parent).reshape(B, W, S)
        if carry is not None and not once and p < S - 1:   # after `once` every row's is alike; the last is never read
            carry = [t.reshape(B * W, t.shape[-1]).index_select(0, parent).reshape(B, W, t.shape[-1]) for t in carry]
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


def exhaustive(objective: Objective, ctx: Context, k: int, allowed: Tensor, chunk: int = 1 << 16,
               each: Optional[Callable[[], None]] = None) -> Candidates:
    """The k best rows of the allowed space by the objective, enumerating it in chunks (each: called
    after every chunk, e.g. to compact what a MemberRecord objective keeps)."""
    B, S, V = allowed.shape
    total = int(space_size(union_of(allowed)[None])[0].item())
    if total > MAX_ENUMERATE:
        raise InputError("decoder", [f"exhaustive decoding needs at most {MAX_ENUMERATE} rows, this space has {total}"])
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
        if each is not None:
            each()
    return Candidates(best_rows, best_scores, best_valid, calls)


def rows_per_context(k: int, o: DecodeOptions) -> int:
    """About how many rows a decoder handles at once per context: the largest of its K candidates
    (8K for sample's rounds of draws), the beam width, the draws and the budget."""
    return max(8 * k, int(o.width or 0), int(o.samples or 0), int(o.budget or 0), 256)


# --- one function per decoder: (gen, objective, ctx, k, allowed, fixed, options, generator) -> Candidates ---
def _argmax(gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    rows, _ = beam_search(gen, ctx, 1, fixed)
    return finish(objective, ctx, rows, rows[..., 0] >= 0, k, allowed, generator=rng)


def _topk(gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    rows, lp = beam_search(gen, ctx, max(k, int(o.width or k)), fixed)
    return finish(objective, ctx, rows[:, :k], torch.isfinite(lp[:, :k]), k, allowed, generator=rng)


def _sample(gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    draws = gen.sample(ctx, max(2 * k, 32), o.temperature, fixed, rng)
    enough = space_size(allowed).clamp(max=k)
    for _ in range(3):  # a few more rounds when the draws repeat a lot
        _, v = distinct_in_order(draws, torch.ones(draws.shape[:2], dtype=torch.bool, device=draws.device),
                                 k, allowed.shape[-1])
        if bool((v.sum(1) >= enough).all()):
            break
        draws = torch.cat([draws, gen.sample(ctx, max(2 * k, 32), o.temperature, fixed, rng)], 1)
    return finish(objective, ctx, draws, torch.ones(draws.shape[:2], dtype=torch.bool, device=draws.device),
                  k, allowed, generator=rng)


def _reranked(name: str, gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng,
              moves: Optional[tuple[Tensor, Tensor]] = None, top_up: bool = True, step: Optional[int] = None,
              ) -> tuple[Candidates, int, Optional[Tensor]]:
    """Draw distinct rows, score them, keep the K best: rerank's result and the start of polish and
    anneal. -> (candidates, rows drawn per context m, calls left per context (B,) or None without a
    budget). moves: polish's (search_moves), which set how many calls one sweep of a row needs.
    top_up: fewer than K distinct draws are topped up with random rows (else left invalid). step: the
    calls one step of the search needs, if not a sweep of a row's neighbours (polish led by the gradient: 2).
    Many parameters: a decoder's eight (as register_decoder calls it) and the variant's name, moves and top_up."""
    budget, samples = o.budget, o.samples
    if budget is not None and int(budget) < 1:
        raise InputError("budget", [f"expected an integer >= 1 scorer call per context, got {budget}"])
    m = int(samples or (max(8 * k, 256) if budget is None else budget if name == "rerank"
                        else max(1, int(budget * o.draw_share))))
    if budget is not None and samples is None and name != "rerank":
        reach = neighbour_count(allowed) if moves is None else move_count(*moves, allowed.shape[-1])
        room = int(budget) - (int(reach.max()) if step is None else step)   # leave one row's neighbours
        if moves is not None and room < m:   # a large slot: one row's sweep would eat the draws' share
            m = int(budget)
        else:
            m = max(1, min(m, room)) if room >= 1 else int(budget)  # else all on draws: no sweep would fit
    draws, fresh = distinct_draws(gen, ctx, m, o.temperature, fixed, rng, allowed)  # (B, M, S), (B, M)
    scores, calls = score_grid(objective, draws, ctx, fresh, chunk=o.chunk)
    rows, top, ok = distinct_topk(draws, scores, k, allowed.shape[-1], fresh)
    cands = finish(objective, ctx, rows, ok, k, allowed, top, calls, rng) if top_up else Candidates(rows, top, ok, calls)
    left = None
    if budget is not None:  # per context: its distinct draws and the top-up rows finish scored
        spent = fresh.sum(1) + (cands.valid.sum(1) - ok.sum(1)).clamp(min=0)
        left = (int(budget) - spent).clamp(min=0)
    return cands, m, left


def _rerank(gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    return _reranked("rerank", gen, objective, ctx, k, allowed, fixed, o, rng)[0]


def _search_moves(gen, ctx, allowed: Tensor) -> Optional[tuple[Tensor, Tensor]]:
    """polish's moves (search_moves) in slots of more than SEARCH_CATEGORIES categories: the ones the
    generator rates highest per context (generator_ratings), taken in chunks of contexts (at most
    DECODE_ELEMENTS logits at a time). None where every category is tried (small vocabularies)."""
    B, S, V = allowed.shape
    if V <= SEARCH_CATEGORIES or gen is None:
        return None
    width = sum(gen.sizes) if getattr(gen, "ragged", False) else S * V       # logits a context computes
    return in_context_chunks(lambda c, a: search_moves(a, generator_ratings(gen, c, a)), ctx,
                             max(1, DECODE_ELEMENTS // (2 * width)), allowed)


def _polish(gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    moves = _search_moves(gen, ctx, allowed)
    starts = max(int(k), int(o.starts or k))
    step = 2 if led_by_gradient(objective, o.gradient, o.budget) else None   # a step: a gradient and one row
    if starts == k:
        cands, _, left = _reranked("polish", gen, objective, ctx, k, allowed, fixed, o, rng, moves, step=step)
        if left is not None and not bool((left > 0).any()):
            return cands
        return polish(objective, ctx, cands, allowed, o.sweeps, o.chunk, budget=left, moves=moves, by_slot=o.by_slot,
                      gradient=o.gradient)
    cands, _, left = _reranked("polish", gen, objective, ctx, starts, allowed, fixed, o, rng, moves, top_up=False,
                               step=step)
    if left is not None and step is not None:   # the gradient climb's calls score no row: keep finish's top-up
        left = (left - (k - cands.valid.sum(1)).clamp(min=0)).clamp(min=0)
    if left is None or bool((left > 0).any()):
        cands = polish(objective, ctx, cands, allowed, o.sweeps, o.chunk, budget=left, moves=moves, by_slot=o.by_slot,
                      gradient=o.gradient)
    return finish(objective, ctx, cands.rows, cands.valid, k, allowed, cands.scores, cands.scorer_calls, rng)


def _pooled(search: Callable[..., Candidates], by: str, size: int,
            select: Callable[[Tensor, Tensor, Tensor, Tensor, int, torch.Generator], tuple[Tensor, Tensor]],
            gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    """`search` run through a MemberRecord (exhaustive: compacted after every chunk), then
    select(rows (B, P, S), scores (B, P), members (B, P, E), valid (B, P), k, rng) -> (pick, ok) picks
    K rows of its pool of `size` per context (MemberRecord.pool's `by`); finish tops them up."""
    B, S, V = allowed.shape
    record = MemberRecord(objective)
    tagged = TaggedContext.of(ctx)
    if search is _exhaustive:
        cands = exhaustive(record, tagged, k, allowed, o.chunk, each=lambda: record.compact(B, size, V, by))
    else:
        cands = search(gen, record, tagged, k, allowed, fixed, o, rng)
    rows, scores, members, valid = record.pool(B, size, V, by)
    pick, ok = select(rows, scores, members, valid, k, rng)
    ok &= valid.gather(1, pick)
    chosen = rows.gather(1, pick.unsqueeze(-1).expand(B, pick.shape[1], S))
    return finish(objective, ctx, chosen, ok, k, allowed, scores.gather(1, pick), cands.scorer_calls, rng)


def _from_members(by: str, size: int, select: Callable[..., tuple[Tensor, Tensor]],
                  gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    """portfolio and slices: polish's search (every row of the space without a generator), then
    `select` K rows of its pool; one hypothesis (or contexts that are not a table's): the mean's best."""
    search = _polish if gen is not None else _exhaustive
    if objective.members < 2 or not isinstance(ctx, TableContext):
        return search(gen, objective, ctx, k, allowed, fixed, o, rng)
    return _pooled(search, by, size, select, gen, objective, ctx, k, allowed, fixed, o, rng)


def _spread(search: Callable[..., Candidates], gen, objective, ctx, k, allowed, fixed, o: DecodeOptions,
            rng) -> Candidates:
    """decode(..., min_distance=D): `search`, then the K best rows by the objective among the
    SPREAD_POOL * K best it scored, each at least D slots from every one picked before it (select_batch)."""
    def select(rows, scores, members, valid, n, g):
        return select_batch(rows, scores.masked_fill(~valid, _NEG), n, min_distance=o.min_distance)
    return _pooled(search, "mean", SPREAD_POOL * k, select, gen, objective, ctx, k, allowed, fixed, o, rng)


def _portfolio(gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    return _from_members("mean", PORTFOLIO_POOL * k, lambda r, s, m, v, n, g: choose(m, v, n, generator=g),
                         gen, objective, ctx, k, allowed, fixed, o, rng)


def _slices(gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    return _from_members("members", k, lambda r, s, m, v, n, g: slices(m, v, n), gen, objective, ctx, k, allowed, fixed,
                         o, rng)


def _anneal(gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    cands, m, left = _reranked("anneal", gen, objective, ctx, k, allowed, fixed, o, rng)
    if left is not None and not bool((left > 0).any()):
        return cands
    return anneal_from(objective, ctx, allowed, cands, m if left is None else left, rng, chunk=o.chunk)


def _exhaustive(gen, objective, ctx, k, allowed, fixed, o: DecodeOptions, rng) -> Candidates:
    c = exhaustive(objective, ctx, k, allowed, o.chunk)
    return finish(objective, ctx, c.rows, c.valid, k, allowed, c.scores, c.scorer_calls, rng)


_DECODE: dict[str, Callable[..., Candidates]] = {
    "argmax": _argmax, "sample": _sample, "topk": _topk, "rerank": _rerank, "polish": _polish,
    "anneal": _anneal, "portfolio": _portfolio, "slices": _slices, "exhaustive": _exhaustive,
}
DECODERS = tuple(_DECODE)
#: Decoders that take no generator: they enumerate the space (MAX_ENUMERATE rows at most).
ENUMERATING = ("exhaustive", "portfolio", "slices")
#: Decoders that take min_distance > 1: they choose the K among every row their search scored.
SPREADING = ("rerank", "polish", "anneal", "exhaustive")


def register_decoder(name: str) -> Callable[[Callable[..., Candidates]], Callable[..., Candidates]]:
    """Decorator adding a decoder to `decode` under `name` (and to DECODERS, so Run.generate and the
    benchmark's GENERATOR/ESTIMATOR/DECODER pipelines take it); ValueError for a name already taken.

        @register_decoder("greedy-then-polish")
        def mine(gen, objective, ctx, k, allowed, fixed, options, generator) -> Candidates: ...

    The function gets B contexts at a time (decode groups them by options.max_rows): gen, the
    objective, ctx, k (already lowered to the space's size), allowed (B, S, V) bool (the generator's
    choices with the fixed slots pinned), fixed (B, S) long or None, options (DecodeOptions) and the
    torch.Generator; `choicegrad.decoding.scoring.finish(objective, ctx, rows, valid, k, allowed)`
    turns any rows (B, M, S) into the K distinct, topped-up, sorted Candidates decode promises."""
    def add(fn: Callable[..., Candidates]) -> Callable[..., Candidates]:
        global DECODERS
        if name in _DECODE:
            raise ValueError(f"a decoder named {name!r} exists already; choose another name")
        _DECODE[name] = fn
        DECODERS = tuple(_DECODE)
        return fn
    return add


def decode_problems(name: str, k: int, temperature: float = 1.0, samples: Optional[int] = None,
                    budget: Optional[int] = None, draw_share: float = 0.25, min_distance: int = 1) -> list[str]:
    """'argument: problem' lines for bad decode arguments (empty when all are fine): what decode
    raises as one InputError, and what a caller can check before any work (Run.generate's options)."""
    problems = []
    if int(k) < 1:
        problems.append(f"k: expected an integer >= 1, got {k}")
    if name not in DECODERS:
        problems.append(f'decoder: unknown decoder "{name}"{did_you_mean(name, DECODERS)}; '
                        f'choose one of {", ".join(DECODERS)}')
    if temperature <= 0:
        problems.append(f"temperature: expected a number > 0, got {temperature}")
    if samples is not None and samples < 1:
        problems.append(f"samples: expected an integer >= 1, got {samples}")
    if budget is not None and budget < 1:
        problems.append(f"budget: expected an integer >= 1 scorer call per context, got {budget}")
    if not 0 < draw_share <= 1:
        problems.append(f"draw_share: expected a share in (0, 1], got {draw_share}")
    if int(min_distance) < 1:
        problems.append(f"min_distance: expected an integer >= 1 (slots in which two rows differ), got {min_distance}")
    elif int(min_distance) > 1 and name in DECODERS and name not in SPREADING:
        problems.append(f"min_distance: {name} does not take it; min_distance > 1 needs a decoder that scores more "
                        f"rows than it returns: {', '.join(SPREADING)}")
    return problems


def decode(name: str, gen: Optional[Generator], objective: Objective, ctx: Context, k: int,
           options: Optional[DecodeOptions] = None, **overrides: Any) -> Candidates:
    """K distinct candidates per context by decoder `name` (see the module docstring).

    gen: the generator (not needed by 'exhaustive' when options.mask (B, S, V) is given); objective:
    f(x, ctx) -> scores (the scorer); ctx: B contexts; options: DecodeOptions (default: its
    defaults); overrides: DecodeOptions fields as keywords, e.g. decode(..., budget=640, fixed=fixed).
    -> Candidates rows (B, K, S), scores (B, K) best first, valid (B, K), scorer_calls.
    InputError("decode") listing every bad argument (decode_problems), and naming `decoder` or
    `fixed` for a decoder or fixed slots the space cannot take.
    """
    unknown = sorted(set(overrides) - set(DecodeOptions.model_fields))
    if unknown:
        raise TypeError(f"decode() got unexpected keyword argument(s) {', '.join(unknown)}; "
                        f"options: {', '.join(DecodeOptions.model_fields)}")
    o = options if options is not None else DecodeOptions()
    if overrides:
        o = DecodeOptions(**{**dict(o), **overrides})
    problems = decode_problems(name, k, o.temperature, o.samples, o.budget, o.draw_share, o.min_distance)
    if o.min_distance > 1 and not isinstance(ctx, TableContext):
        problems.append("min_distance: rows a distance apart are chosen for a table's contexts only, not item lists")
    if problems:
        raise InputError("decode", problems)
    rng = o.generator if o.generator is not None else torch.Generator(device=ctx.device).manual_seed(0)
    objective = as_objective(objective)
    with torch.no_grad():
        gen_mask = gen.choice_mask(ctx) if o.mask is None else o.mask.expand(len(ctx), -1, -1)
        fixed = check_fixed(o.fixed, gen_mask)
        allowed = allowed_choices(gen_mask, fixed)
        if gen is None and name not in ENUMERATING:
            raise InputError("decoder", [f"{name} needs a generator; only {', '.join(ENUMERATING)} decode without one "
                                         "(by enumerating the space)"])
        k = int(min(int(k), max(1.0, float(space_size(allowed).max()))))   # no more candidates than rows
        per = max(1, int(o.max_rows) // rows_per_context(k, o))            # contexts per group
        run = _DECODE[name] if o.min_distance == 1 else partial(_spread, _DECODE[name])
        return in_context_chunks(lambda c, a, f: run(gen, objective, c, k, a, f, o, rng), ctx, per, allowed, fixed)
