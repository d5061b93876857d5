"""Peer baselines that search the scorer directly, under a scorer-call budget per context.

    cands = search("anneal", objective, ctx, allowed, k=128, budget=655, generator=rng)
    cands.rows (B, K, S) long, cands.scores (B, K) best first, cands.valid (B, K),
    cands.scorer_calls (rows scored over all B contexts)

objective f(x, ctx) -> (N,) scores, higher is better; x (N, S) long rows, or (N, S, V) float soft rows
(gradient-ascent only). ctx: B contexts (TableContext or ItemContext). allowed (B, S, V) bool: the
categories allowed per context and slot (padded items and categories beyond a slot's vocabulary False).

Peers (options with their defaults; every peer but exhaustive spends at most `budget` calls per context):

random           `budget` uniform random allowed rows.
anneal           simulated annealing: `chains` = min(16, max(1, budget // 128)) parallel chains per
                 context, started at the best of `init` = max(chains, budget // 10) random rows;
                 single-slot proposals (a random free slot to a different random allowed category);
                 Metropolis acceptance at a geometric temperature t0 = 0.3 -> t1 = 0.01, both times
                 the score scale (std of the initial rows' scores, per context); runs until the budget is spent.
genetic          `population` = min(32, max(2, budget // 8)) per context; `elite` = max(1, population // 8)
                 best kept unchanged (not re-scored); children by `tournament` = 2 selection, uniform
                 crossover and per-slot mutation to a random allowed category at rate `mutation` = 1/S;
                 a child equal to a parent gets one slot changed to a different allowed category.
gradient-ascent  `starts` = min(64, max(1, budget // 40)) random logits (B, P, S, V) per context (N(0,
                 `init_scale` = 1)), masked to the allowed categories; Adam (`lr` = 0.3) ascends the
                 objective of the soft rows softmax(logits / `tau` = 1). `hard_share` = 0.5 of the budget
                 goes to hard rows: after every `every` = 5 soft steps (and after the last) each start's
                 argmax row plus rows sampled from its softmax(logits / tau) are scored -- only rows not
                 already in the archive nor repeated, so converged starts spend fewer calls (what
                 is saved carries over to later evaluations; what is left at the end is not spent).
greedy           slot-by-slot best response (cyclic coordinate ascent) with random restarts: from a
                 uniform random allowed row, for slot s = 0, 1, .., S-1, 0, .. score every allowed
                 category in slot s with the other slots held and keep the best (a strict improvement
                 only); a row that no slot improves for S steps running is a local peak, and the chain
                 restarts from a fresh random row (`restart` = True; False: stop there, spending less).
                 `sweeps` = None (no limit): a start may take at most this many sweeps (S steps each)
                 before it restarts (sweeps=1, restart=False: one sweep only). A step scores the row
                 already held only once; where fewer calls are left than categories, a random subset
                 of them. One chain per context; runs until the budget is spent.
exhaustive       decoding.decoders.exhaustive: every allowed row, the reference optimum; ignores the
                 budget.

register_peer(name, options) adds a search function of one's own under `name` (docs/architecture.md).

distinct=True (search's keyword, default False; for pointer tasks, e.g. slates, where slots share one
list of items): no row holding the same category (item) in two slots is scored or returned. random
draws rows slot by slot, each slot uniform over its allowed items not used by the earlier slots;
genetic repairs each child the same way (a slot repeating an earlier one is redrawn) and un-clones
with anneal's move; anneal proposes "one slot to a different allowed item, swapping with the slot
that holds it" (the swap only where that slot allows the item); greedy leaves out the items held by
the other slots; exhaustive skips rows with repeats; gradient-ascent's soft rows are unconstrained,
its hard rows with repeats are not scored. A row that cannot be completed without a repeat (slots
with too few items of their own) is not scored, so such contexts may spend less than `budget`; a
context allowing fewer categories in all than there are slots is an error.
distinct costs (B, M, S, V) boolean tables per step for anneal and genetic (M chains / children).

Scorer calls: one per row passed to the objective -- a hard row scored, or a soft row evaluated
(one gradient-ascent step of P starts costs P calls per context, forward and backward together).
random, anneal, genetic and greedy (with restarts) spend exactly `budget` calls in every context;
gradient-ascent spends all its soft calls and at most its hard share (it never re-scores an archived row), so
scorer_calls <= B * budget. Genetic never re-scores its elites.

Candidates are the k best DISTINCT rows among every hard row scored during the search (a running
archive, decoding.local_search.Archive). A peer never scores rows beyond its budget to fill the
archive: a context that saw fewer than k distinct rows (a budget below k, a space smaller than k)
returns invalid tails (valid False, score -inf, row -1), which the benchmark reports as fewer
distinct candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from choicegrad.decoding.decoders import exhaustive
from choicegrad.decoding.local_search import Archive, anneal_chains
from choicegrad.decoding.rows import (MAX_ENUMERATE, change_one_slot, cross_rows, enumerate_allowed, first_occurrence, row_keys,
                                     space_size, uniform_rows, union_of)
from choicegrad.decoding.scoring import Candidates
from choicegrad.errors import InputError, did_you_mean
from choicegrad.generators.context import Context
from choicegrad.generators.objective import SCORE_CHUNK, Objective

PEERS = ("random", "anneal", "genetic", "gradient-ascent", "greedy", "exhaustive")
_NEG = float("-inf")
_OPTIONS = {
    "random": ("chunk",),
    "anneal": ("chains", "init", "t0", "t1", "chunk"),
    "genetic": ("population", "elite", "tournament", "mutation", "chunk"),
    "gradient-ascent": ("starts", "lr", "tau", "every", "hard_share", "init_scale", "chunk"),
    "greedy": ("sweeps", "restart", "chunk"),
    "exhaustive": ("chunk",),
}


def search(name: str, objective: Objective, ctx: Context, allowed: Tensor, k: int, *, budget: int,
           generator: torch.Generator, distinct: bool = False, **options: Any) -> Candidates:
    """The k best distinct rows per context found by peer `name` (see the module docstring).

    objective: f(x, ctx) -> (N,); ctx: B contexts; allowed: (B, S, V) bool (or (S, V), shared);
    k: candidates per context; budget: scorer calls per context (ignored by exhaustive);
    generator: the random stream (on allowed's device) -- the same seed gives the same candidates.
    distinct: no row with the same category in two slots is scored or returned (pointer tasks:
    slates of distinct items).
    -> Candidates(rows (B, k, S), scores (B, k) best first, valid (B, k), scorer_calls).
    """
    if name not in PEERS:
        raise InputError("name", [f"unknown peer {name!r}{did_you_mean(name, PEERS)}; "
                                  f"choose one of {', '.join(PEERS)}"])
    if int(k) < 1:
        raise InputError("k", [f"k must be >= 1, got {k}"])
    if int(budget) < 1:
        raise InputError("budget", [f"budget must be >= 1 scorer call per context, got {budget}"])
    unknown = [o for o in options if o not in _OPTIONS[name]]
    if unknown:
        raise InputError("options", [f"unknown option {unknown[0]!r} for peer {name!r}"
                                     f"{did_you_mean(unknown[0], _OPTIONS[name])}; options: {', '.join(_OPTIONS[name])}"])
    allowed = torch.as_tensor(allowed, dtype=torch.bool)
    if allowed.dim() == 2:
        allowed = allowed.unsqueeze(0).expand(len(ctx), -1, -1)
    if allowed.dim() != 3 or allowed.shape[0] != len(ctx):
        raise InputError("allowed", [f"allowed must have shape (B, S, V) with B={len(ctx)} contexts, "
                                     f"got {tuple(allowed.shape)}"])
    empty = ~allowed.any(-1)
    if bool(empty.any()):
        raise InputError("allowed", [f"allowed has no category at (context, slot) {empty.nonzero()[:5].tolist()}"])
    k, budget, distinct = int(k), int(budget), bool(distinct)
    if distinct:
        short = allowed.any(1).sum(-1) < allowed.shape[1]
        if bool(short.any()):
            raise InputError("distinct", [f"distinct: contexts {short.nonzero()[:5, 0].tolist()} allow fewer "
                                          f"categories than the {allowed.shape[1]} slots, so every row repeats one"])
    if name == "exhaustive":
        if distinct:
            return _exhaustive_distinct(objective, ctx, k, allowed, options.get("chunk", 1 << 16))
        return exhaustive(objective, ctx, k, allowed, options.get("chunk", 1 << 16))
    return _SEARCH[name](objective, ctx, allowed, k, budget, generator, distinct=distinct, **options)


def register_peer(name: str, options: tuple[str, ...] = ("chunk",)) -> Callable[[Callable[..., Candidates]],
                                                                             Callable[..., Candidates]]:
    """Decorator adding a search function to `search` under `name` (and to PEERS, so the benchmark's
    --peers and methods take it); options: the keywords it accepts (search refuses others).
    ValueError for a name already taken.

        @register_peer("my-walk", options=("steps", "chunk"))
        def walk(objective, ctx, allowed, k, budget, generator, distinct=False, **options) -> Candidates: ...

    It gets allowed (B, S, V) bool already checked, k and budget as ints, and must spend at most
    `budget` scorer calls per context (decoding.local_search.Archive keeps the k best distinct rows
    and counts the calls)."""
    def add(fn: Callable[..., Candidates]) -> Callable[..., Candidates]:
        global PEERS
        if name in _OPTIONS:
            raise ValueError(f"a peer named {name!r} exists already; choose another name")
        _OPTIONS[name], _SEARCH[name] = tuple(options), fn
        PEERS = (*PEERS, name)
        return fn
    return add


# --- shared pieces --------------------------------------------------------------------------------
def _opt(options: dict, key: str, default):
    value = options.get(key)
    return default if value is None else value


def _positive(name: str, value, integer: bool = True):
    if (int(value) if integer else float(value)) <= 0 or (integer and int(value) != value):
        raise InputError(name, [f"{name} must be a positive {'integer' if integer else 'number'}, got {value}"])
    return int(value) if integer else float(value)


def _repeats(rows: Tensor) -> Tensor:
    """(..., S) long rows -> (...,) bool: some category in two slots."""
    return (rows.unsqueeze(-1) == rows.unsqueeze(-2)).triu(diagonal=1).any((-2, -1))


def _repair(rows: Tensor, allowed: Tensor, generator: torch.Generator) -> Tensor:
    """rows (B, M, S) with every slot that repeats an earlier slot's category redrawn uniformly among
    its allowed categories not used by the earlier slots (left as it is where none is). -> (B, M, S)."""
    B, M, S = rows.shape
    rows = rows.clone()
    for s in range(1, S):                                                          # over slots
        clash = (rows[..., s:s + 1] == rows[..., :s]).any(-1)                     # (B, M)
        if not bool(clash.any()):
            continue
        b, m = clash.nonzero(as_tuple=True)
        free = allowed[b, s].scatter(1, rows[b, m, :s], False)                     # (n, V)
        has = free.any(1)
        pick = torch.multinomial(free.float() + (~has).float()[:, None], 1, generator=generator)[:, 0]
        rows[b, m, s] = torch.where(has, pick, rows[b, m, s])
    return rows


def _distinct_rows(allowed: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """(B, n, S) rows without repeats (where the slots allow), slot by slot: each slot uniform over
    its allowed categories not used by the earlier slots (uniform over the distinct rows when every
    slot allows the same categories)."""
    return _repair(uniform_rows(allowed, n, generator), allowed, generator)


def _move_distinct(rows: Tensor, allowed: Tensor, generator: torch.Generator) -> Tensor:
    """rows (B, M, S) with one slot moved to a different allowed category; where another slot t holds
    that category, the two swap (allowed only where slot t allows the moved slot's old category). The
    slot is uniform over the slots with a move, the category uniform over its moves; a row without any
    move stays. Keeps rows distinct. -> (B, M, S)."""
    B, M, S = rows.shape
    V = allowed.shape[-1]
    dev = rows.device
    owner = torch.full((B, M, V), -1, dtype=torch.long, device=dev).scatter(
        2, rows, torch.arange(S, device=dev).expand(B, M, S))                    # slot holding each category
    # at[b, m, t, s]: slot t allows row[s]; back[b, m, s, c]: the slot holding c allows row[s]
    at = allowed.unsqueeze(1).expand(B, M, S, V).gather(3, rows.unsqueeze(2).expand(B, M, S, S))
    back = at.transpose(2, 3).gather(3, owner.clamp(min=0).unsqueeze(2).expand(B, M, S, V))
    cats = torch.arange(V, device=dev)
    ok = allowed.unsqueeze(1) & (cats != rows.unsqueeze(-1)) & ((owner < 0).unsqueeze(2) | back)   # (B, M, S, V)
    can = ok.any(-1)                                                               # (B, M, S)
    movable = can.any(-1)                                                          # (B, M)
    slot = torch.multinomial((can | ~movable.unsqueeze(-1)).float().reshape(B * M, S), 1,
                             generator=generator).reshape(B, M)
    w = ok.gather(2, slot[..., None, None].expand(B, M, 1, V))[:, :, 0]            # (B, M, V)
    cat = torch.multinomial((w | ~w.any(-1, keepdim=True)).float().reshape(B * M, V), 1,
                            generator=generator).reshape(B, M)
    old = rows.gather(2, slot.unsqueeze(-1))[..., 0]
    other = owner.gather(2, cat.unsqueeze(-1))[..., 0]                             # (B, M), -1: unused
    out = rows.scatter(2, slot.unsqueeze(-1), cat.unsqueeze(-1))
    swapped = out.scatter(2, other.clamp(min=0).unsqueeze(-1), old.unsqueeze(-1))
    out = torch.where((other >= 0).unsqueeze(-1), swapped, out)
    return torch.where(movable.unsqueeze(-1), out, rows)


# --- the peers ------------------------------------------------------------------------------------
def _random(objective, ctx, allowed, k, budget, generator, distinct: bool = False,
            chunk: int = SCORE_CHUNK) -> Candidates:
    B, S, V = allowed.shape
    arch = Archive(B, k, S, V, allowed.device)
    per = max(1, chunk // max(B, 1))
    for start in range(0, budget, per):
        n = min(per, budget - start)
        if distinct:
            rows = _distinct_rows(allowed, n, generator)
            arch.score(objective, rows, ctx, chunk, ~_repeats(rows))
        else:
            arch.score(objective, uniform_rows(allowed, n, generator), ctx, chunk)
    return arch.result()


@dataclass(frozen=True)
class _AnnealOptions:
    """anneal's knobs for one budget: `chains` chains per context from the best of `init` random rows,
    temperatures t0 -> t1 (times the score scale), `chunk` rows per objective call."""

    chains: int
    init: int
    t0: float
    t1: float
    chunk: int

    @classmethod
    def parse(cls, o: dict, budget: int) -> "_AnnealOptions":
        """The options given (search's **options) with their defaults for `budget`; InputError naming a bad one."""
        chunk = _opt(o, "chunk", SCORE_CHUNK)
        P = min(_positive("chains", _opt(o, "chains", min(16, max(1, budget // 128)))), budget)
        init = min(budget, max(P, _positive("init", _opt(o, "init", max(P, budget // 10)))))
        t0, t1 = _positive("t0", _opt(o, "t0", 0.3), False), _positive("t1", _opt(o, "t1", 0.01), False)
        return cls(P, init, t0, t1, chunk)


def _anneal(objective, ctx, allowed, k, budget, generator, distinct: bool = False, **o) -> Candidates:
    B, S, V = allowed.shape
    opt = _AnnealOptions.parse(o, budget)
    if distinct:
        return _anneal_distinct(objective, ctx, allowed, k, budget, generator, opt)
    arch = Archive(B, k, S, V, allowed.device)
    first = uniform_rows(allowed, opt.init, generator)
    first_scores = arch.score(objective, first, ctx, opt.chunk)
    return anneal_chains(objective, ctx, allowed, arch, first, first_scores, opt.chains, budget - opt.init, opt.t0,
                         opt.t1, generator, opt.chunk)


def _anneal_distinct(objective, ctx, allowed, k, budget, generator, opt: _AnnealOptions) -> Candidates:
    """decoding.local_search.anneal_chains (the same start, chains, temperatures and budget) with
    distinct rows: the first rows by _distinct_rows, proposals by _move_distinct; a row with a repeat
    (one that could not be repaired) is not scored and not taken."""
    B, S, V = allowed.shape
    dev = allowed.device
    arch = Archive(B, k, S, V, dev)
    first = _distinct_rows(allowed, opt.init, generator)
    first_scores = arch.score(objective, first, ctx, opt.chunk, ~_repeats(first))
    P, left = opt.chains, budget - opt.init
    fin = torch.isfinite(first_scores)
    n = fin.sum(1)
    mean = torch.where(fin, first_scores, 0).sum(1) / n.clamp(min=1)
    var = torch.where(fin, (first_scores - mean[:, None]) ** 2, 0).sum(1) / (n - 1).clamp(min=1)
    std = torch.where(n > 1, var.sqrt(), torch.zeros_like(var))
    fallback = std[std > 0].mean() if bool((std > 0).any()) else torch.tensor(1.0, device=dev)
    scale = torch.where(std > 0, std, fallback)[:, None]                                  # (B, 1)
    top = first_scores.topk(P, dim=1).indices
    current = first.gather(1, top.unsqueeze(-1).expand(B, P, S))
    cur_score = first_scores.gather(1, top)
    steps = math.ceil(left / P)
    for i in range(steps):
        n = min(P, left - i * P)                                        # the last step may move fewer chains
        temp = scale * opt.t0 * (opt.t1 / opt.t0) ** (i / max(steps - 1, 1))
        prop = _move_distinct(current, allowed, generator)
        moving = (torch.arange(P, device=dev) < n)[None, :] & ~_repeats(prop)
        score = arch.score(objective, prop, ctx, opt.chunk, moving)
        u = torch.rand(B, P, generator=generator, device=dev)
        delta = score - cur_score
        accept = moving & ((delta >= 0) | (u < torch.exp((delta / temp).clamp(max=0))))
        current = torch.where(accept.unsqueeze(-1), prop, current)
        cur_score = torch.where(accept, score, cur_score)
    return arch.result()


def breed(pop: Tensor, fit: Tensor, allowed: Tensor, n: int, generator: torch.Generator, *, tournament: int = 2,
          mutation: Optional[float] = None, distinct: bool = False) -> Tensor:
    """One generation of the genetic algorithm: n children per context of a population.

    pop (B, P, S) long rows with fitness fit (B, P) (-inf: failed); allowed (B, S, V). Two parents per
    child by tournaments of `tournament` (the fitter of that many uniform draws), uniform crossover,
    per-slot mutation to a random allowed category at rate `mutation` (default 1/S); distinct: a slot
    repeating an earlier one redrawn (_repair). A child equal to a parent gets one slot changed to a
    different allowed category (anneal's move under distinct). -> (B, n, S) long. The genetic peer
    breeds from its population; the online benchmark's genetic method from the best measured rows.
    """
    B, P, S = pop.shape
    dev = pop.device
    rate = 1.0 / S if mutation is None else mutation
    cand = torch.randint(P, (2, B, n, tournament), generator=generator, device=dev)  # tournaments
    win = fit.unsqueeze(1).unsqueeze(0).expand(2, B, n, P).gather(3, cand).argmax(3, keepdim=True)
    parent = cand.gather(3, win).squeeze(3)                                        # (2, B, n)
    p1 = pop.gather(1, parent[0].unsqueeze(-1).expand(B, n, S))
    p2 = pop.gather(1, parent[1].unsqueeze(-1).expand(B, n, S))
    child = cross_rows(p1, p2, generator)
    mutate = torch.rand(B, n, S, generator=generator, device=dev) < rate
    child = torch.where(mutate, uniform_rows(allowed, n, generator), child)
    if distinct:
        child = _repair(child, allowed, generator)
    clone = (child == p1).all(-1) | (child == p2).all(-1)
    move = _move_distinct(child, allowed, generator) if distinct else change_one_slot(child, allowed, generator)
    return torch.where(clone.unsqueeze(-1), move, child)


def _genetic(objective, ctx, allowed, k, budget, generator, distinct: bool = False, **o) -> Candidates:
    B, S, V = allowed.shape
    dev = allowed.device
    chunk = _opt(o, "chunk", SCORE_CHUNK)
    N = min(budget, _positive("population", _opt(o, "population", min(32, max(2, budget // 8)))))
    E = min(N - 1, _positive("elite", _opt(o, "elite", max(1, N // 8)))) if N > 1 else 0
    T = _positive("tournament", _opt(o, "tournament", 2))
    rate = float(_opt(o, "mutation", 1.0 / S))
    if not 0 <= rate <= 1:
        raise InputError("mutation", [f"mutation must be a per-slot rate in [0, 1], got {rate}"])
    arch = Archive(B, k, S, V, dev)
    pop = _distinct_rows(allowed, N, generator) if distinct else uniform_rows(allowed, N, generator)
    fit = arch.score(objective, pop, ctx, chunk, ~_repeats(pop) if distinct else None)
    left = budget - N
    C = N - E
    while left > 0 and C > 0:
        n = min(C, left)
        child = breed(pop, fit, allowed, n, generator, tournament=T, mutation=rate, distinct=distinct)
        child_fit = arch.score(objective, child, ctx, chunk, ~_repeats(child) if distinct else None)
        left -= n
        keep = fit.topk(N - n, dim=1).indices                                          # elites (and more if n < C)
        pop = torch.cat([pop.gather(1, keep.unsqueeze(-1).expand(B, N - n, S)), child], 1)
        fit = torch.cat([fit.gather(1, keep), child_fit], 1)
    return arch.result()


@dataclass(frozen=True)
class _AscentPlan:
    """gradient-ascent's knobs and its budget per context: G soft steps of P soft rows, then after
    each soft step in `at` one of E evaluations of up to R new hard rows (`hard` in all)."""

    P: int
    lr: float
    tau: float
    every: int
    init_scale: float
    chunk: int
    hard: int
    G: int
    E: int
    R: int
    at: frozenset

    @classmethod
    def parse(cls, o: dict, budget: int) -> "_AscentPlan":
        """The options given (search's **options) with their defaults, split over `budget`; InputError
        naming a bad one."""
        chunk = _opt(o, "chunk", SCORE_CHUNK)
        P = min(budget, _positive("starts", _opt(o, "starts", min(64, max(1, budget // 40)))))
        lr = _positive("lr", _opt(o, "lr", 0.3), False)
        tau = _positive("tau", _opt(o, "tau", 1.0), False)
        every = _positive("every", _opt(o, "every", 5))
        init_scale = float(_opt(o, "init_scale", 1.0))
        share = float(_opt(o, "hard_share", 0.5))
        if not 0 < share <= 1:
            raise InputError("hard_share", [f"hard_share must be in (0, 1], got {share}"])
        hard = min(budget, max(P, round(budget * share)))
        G = (budget - hard) // P
        E = max(1, min(math.ceil(G / every), hard // P))
        at = frozenset(round((e + 1) * G / E) for e in range(E))          # soft steps after which to evaluate
        return cls(P, lr, tau, every, init_scale, chunk, hard, G, E, hard // E, at)


def _gradient_ascent(objective, ctx, allowed, k, budget, generator, distinct: bool = False, **o) -> Candidates:
    B, S, V = allowed.shape
    dev = allowed.device
    plan = _AscentPlan.parse(o, budget)
    P = plan.P
    arch = Archive(B, k, S, V, dev)
    logits = (torch.randn(B, P, S, V, generator=generator, device=dev) * plan.init_scale).requires_grad_(True)
    mask = allowed.unsqueeze(1).expand(B, P, S, V)
    opt = torch.optim.Adam([logits], lr=plan.lr)
    rep = ctx.repeat_interleave(P)

    def probs() -> Tensor:
        return torch.softmax(torch.where(mask, logits, torch.full_like(logits, _NEG)) / plan.tau, -1)

    spent = torch.zeros(B, dtype=torch.long, device=dev)                 # hard rows scored, per context
    evals = 0

    def evaluate() -> None:
        """Score each start's argmax row, then rows sampled from its soft row, skipping rows already
        archived or repeated: up to R new rows per context (what earlier evaluations saved carries
        over; the last one may spend all of the hard share that is left)."""
        nonlocal spent, evals
        evals += 1
        with torch.no_grad():
            avail = (plan.hard - spent) if evals >= plan.E else (evals * plan.R - spent)   # (B,)
            p = probs()
            rows = p.argmax(-1)                                                        # (B, P, S)
            extra = 2 * int(avail.max())
            if extra > 0:
                which = torch.arange(extra, device=dev) % P
                draws = torch.multinomial(p[:, which].reshape(-1, V), 1, generator=generator)
                rows = torch.cat([rows, draws.reshape(B, extra, S)], 1)
            keys = row_keys(rows, V)
            known = ((keys.unsqueeze(2) == row_keys(arch.rows, V).unsqueeze(1)) & arch.valid.unsqueeze(1)).any(2)
            new = first_occurrence(keys, ~known & ~_repeats(rows) if distinct else ~known)
            take = new & (new.long().cumsum(1) <= avail.unsqueeze(1))
            if bool(take.any()):
                arch.score(objective, rows, ctx, plan.chunk, take)
            spent = spent + take.sum(1)

    if plan.G == 0:
        evaluate()
    for g in range(1, plan.G + 1):
        soft = probs().reshape(B * P, S, V)
        value = objective(soft, rep).float()
        arch.calls += B * P
        # the gradient of the logits only: a scorer's own parameters get no .grad from the search
        logits.grad = torch.autograd.grad(-value.sum(), logits)[0]
        opt.step()
        if g in plan.at:
            evaluate()
    return arch.result()


def _greedy(objective, ctx, allowed, k, budget, generator, distinct: bool = False, **o) -> Candidates:
    B, S, V = allowed.shape
    chunk = _opt(o, "chunk", SCORE_CHUNK)
    sweeps = o.get("sweeps")
    sweeps = None if sweeps is None else _positive("sweeps", sweeps)
    restart = bool(_opt(o, "restart", True))
    arch = Archive(B, k, S, V, allowed.device)
    chains = _GreedyChains(allowed, budget, generator, distinct, sweeps, restart)
    idle, i = 0, 0
    while True:
        live = chains.active & (chains.left > 0)
        if not bool(live.any()) or idle > 2 * S + 2:     # spent; or nothing left to score anywhere
            break
        s, i = i % S, i + 1
        cand = chains.candidates(s, live)
        best, best_cat = chains.best_in_slot(objective, ctx, arch, s, cand, chunk)
        idle = idle + 1 if not bool(cand.any()) else 0
        chains.step(s, live, best, best_cat, cand.sum(1))
    return arch.result()


class _GreedyChains:
    """greedy's one chain per context: the row it holds cur (B, S) and its score (B,), whether that row
    was scored (known), the steps without a move (stale) and since the chain's start (steps), the calls
    left and whether the chain still runs (active), all (B,)."""

    def __init__(self, allowed: Tensor, budget: int, generator: torch.Generator, distinct: bool,
                 sweeps: Optional[int], restart: bool):
        B, S, V = allowed.shape
        dev = allowed.device
        self.allowed, self.generator, self.distinct, self.sweeps, self.restart = allowed, generator, distinct, sweeps, restart
        self.cur = self.fresh()                                                    # (B, S)
        self.score = torch.full((B,), _NEG, device=dev)
        self.known = torch.zeros(B, dtype=torch.bool, device=dev)
        self.stale = torch.zeros(B, dtype=torch.long, device=dev)
        self.steps = torch.zeros(B, dtype=torch.long, device=dev)
        self.left = torch.full((B,), budget, dtype=torch.long, device=dev)
        self.active = torch.ones(B, dtype=torch.bool, device=dev)

    def fresh(self) -> Tensor:
        """(B, S) uniform random allowed rows (distinct ones under distinct)."""
        return (_distinct_rows if self.distinct else uniform_rows)(self.allowed, 1, self.generator)[:, 0]

    def candidates(self, s: int, live: Tensor) -> Tensor:
        """(B, V) bool: the categories of slot s to score in the live chains -- allowed, not held by the
        other slots (distinct), not the held row once scored, and where fewer calls are left than
        categories a random subset of them."""
        B, S, V = self.allowed.shape
        cur = self.cur
        cand = self.allowed[:, s] & live[:, None]
        if self.distinct and S > 1:
            others = torch.cat([cur[:, :s], cur[:, s + 1:]], 1)
            cand = cand & ~torch.zeros_like(cand).scatter(1, others, True) & ~_repeats(others)[:, None]
        cats = torch.arange(V, device=cand.device)
        cand = cand & ~(self.known[:, None] & (cats == cur[:, s:s + 1]))          # the held row: scored once
        short = cand.sum(1) > self.left
        if bool(short.any()):                                                      # the last calls: a random subset
            noise = torch.rand(B, V, generator=self.generator, device=cand.device).masked_fill(~cand, 2.0)
            rank = noise.argsort(1).argsort(1)
            cand = cand & (~short[:, None] | (rank < self.left[:, None]))
        return cand

    def best_in_slot(self, objective, ctx, arch: Archive, s: int, cand: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
        """Score the held rows with slot s set to each candidate category (cand (B, V)) into `arch`, in
        blocks of categories -> the best score (B,) (-inf: none scored) and its category (B,) (the held
        one where none)."""
        B, S, _ = self.allowed.shape
        per = max(1, chunk // max(B, 1))
        m = int(cand.sum(1).max())
        best = torch.full((B,), _NEG, device=cand.device)
        best_cat = self.cur[:, s].clone()
        if m == 0:
            return best, best_cat
        order = torch.argsort((~cand).to(torch.int8), dim=1, stable=True)[:, :m]          # (B, m) candidates first
        for lo in range(0, m, per):                                                # blocks of categories
            part = order[:, lo:lo + per]
            ok = cand.gather(1, part)
            rows = self.cur.unsqueeze(1).expand(B, part.shape[1], S).clone()
            rows[:, :, s] = part
            sc = arch.score(objective, rows, ctx, chunk, ok)
            top = sc.max(1)
            better = top.values > best
            best = torch.where(better, top.values, best)
            best_cat = torch.where(better, part.gather(1, top.indices[:, None])[:, 0], best_cat)
        return best, best_cat

    def step(self, s: int, live: Tensor, best: Tensor, best_cat: Tensor, spent: Tensor) -> None:
        """Move the live chains to slot s's best category where it improves, having spent `spent` (B,)
        calls; a chain at a local peak (or past its sweeps) restarts from a fresh row, or stops
        (restart=False)."""
        S = self.allowed.shape[1]
        self.left = self.left - spent
        moved = live & (best > self.score)
        self.cur[:, s] = torch.where(moved, best_cat, self.cur[:, s])
        self.score = torch.where(moved, best, self.score)
        self.known = self.known | (live & (spent > 0))
        self.stale = torch.where(moved, torch.ones_like(self.stale), self.stale + live.long())
        self.steps = self.steps + live.long()
        done = live & (self.stale >= S)                                            # a local peak
        if self.sweeps is not None:
            done = done | (live & (self.steps >= self.sweeps * S))
        if not self.restart:
            self.active = self.active & ~done
        elif bool(done.any()):
            self.cur = torch.where(done.unsqueeze(-1), self.fresh(), self.cur)
            self.score = torch.where(done, torch.full_like(self.score, _NEG), self.score)
            self.known, self.stale, self.steps = self.known & ~done, self.stale * ~done, self.steps * ~done


def _exhaustive_distinct(objective, ctx, k, allowed, chunk: int = 1 << 16) -> Candidates:
    """decoding.decoders.exhaustive over the allowed rows without repeats."""
    B, S, V = allowed.shape
    total = int(space_size(union_of(allowed)[None])[0].item())
    if total > MAX_ENUMERATE:
        raise InputError("allowed", [f"exhaustive decoding needs at most {MAX_ENUMERATE} rows, this space has {total}"])
    arch = Archive(B, k, S, V, allowed.device)
    per = max(1, chunk // max(B, 1))
    for start in range(0, total, per):
        rows, ok, _ = enumerate_allowed(allowed, start, start + per)
        arch.score(objective, rows.unsqueeze(0).expand(B, -1, -1), ctx, chunk, ok & ~_repeats(rows)[None])
    return arch.result()


#: name -> search function (exhaustive is search's own branch)
_SEARCH: dict[str, Callable[..., Candidates]] = {
    "random": _random, "anneal": _anneal, "genetic": _genetic, "gradient-ascent": _gradient_ascent, "greedy": _greedy,
}
