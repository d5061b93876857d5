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
exhaustive       decoding.decoders.exhaustive: every allowed row, the reference optimum; ignores the
                 budget.

Scorer calls: one per row passed to the objective -- a hard row scored, or a soft row evaluated
(one gradient-ascent step of P starts costs P calls per context, forward and backward together).
random, anneal and genetic spend exactly `budget` calls in every context; gradient-ascent spends
all its soft calls and at most its hard share (it never re-scores an archived row), so
scorer_calls <= B * budget. Genetic never re-scores its elites.

Candidates are the k best DISTINCT rows among every hard row scored during the search (a running
archive, decoding.local_search.Archive). A peer never scores rows beyond its budget to fill the
archive: a context that saw fewer than k distinct rows (a budget below k, a space smaller than k)
returns invalid tails (valid False, score -inf, row -1), which the benchmark reports as fewer
distinct candidates.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from choicegrad.decoding.decoders import exhaustive
from choicegrad.decoding.local_search import Archive, anneal_chains
from choicegrad.decoding.rows import change_one_slot, first_occurrence, row_keys, uniform_rows
from choicegrad.decoding.scoring import Candidates
from choicegrad.errors import did_you_mean
from choicegrad.generators.context import Context
from choicegrad.generators.objective import SCORE_CHUNK, Objective

PEERS = ("random", "anneal", "genetic", "gradient-ascent", "exhaustive")
_NEG = float("-inf")
_OPTIONS = {
    "random": ("chunk",),
    "anneal": ("chains", "init", "t0", "t1", "chunk"),
    "genetic": ("population", "elite", "tournament", "mutation", "chunk"),
    "gradient-ascent": ("starts", "lr", "tau", "every", "hard_share", "init_scale", "chunk"),
    "exhaustive": ("chunk",),
}


def search(name: str, objective: Objective, ctx: Context, allowed: Tensor, k: int, *, budget: int,
           generator: torch.Generator, **options: Any) -> Candidates:
    """The k best distinct rows per context found by peer `name` (see the module docstring).

    objective: f(x, ctx) -> (N,); ctx: B contexts; allowed: (B, S, V) bool (or (S, V), shared);
    k: candidates per context; budget: scorer calls per context (ignored by exhaustive);
    generator: the random stream (on allowed's device) -- the same seed gives the same candidates.
    -> Candidates(rows (B, k, S), scores (B, k) best first, valid (B, k), scorer_calls).
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}{did_you_mean(name, PEERS)}; choose one of {', '.join(PEERS)}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if int(budget) < 1:
        raise ValueError(f"budget must be >= 1 scorer call per context, got {budget}")
    unknown = [o for o in options if o not in _OPTIONS[name]]
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for peer {name!r}{did_you_mean(unknown[0], _OPTIONS[name])}; "
                         f"options: {', '.join(_OPTIONS[name])}")
    allowed = torch.as_tensor(allowed, dtype=torch.bool)
    if allowed.dim() == 2:
        allowed = allowed.unsqueeze(0).expand(len(ctx), -1, -1)
    if allowed.dim() != 3 or allowed.shape[0] != len(ctx):
        raise ValueError(f"allowed must have shape (B, S, V) with B={len(ctx)} contexts, got {tuple(allowed.shape)}")
    empty = ~allowed.any(-1)
    if bool(empty.any()):
        raise ValueError(f"allowed has no category at (context, slot) {empty.nonzero()[:5].tolist()}")
    k, budget = int(k), int(budget)
    if name == "exhaustive":
        return exhaustive(objective, ctx, k, allowed, options.get("chunk", 1 << 16))
    fn = {"random": _random, "anneal": _anneal, "genetic": _genetic, "gradient-ascent": _gradient_ascent}[name]
    return fn(objective, ctx, allowed, k, budget, generator, **options)


# --- shared pieces --------------------------------------------------------------------------------
def _opt(options: dict, key: str, default):
    value = options.get(key)
    return default if value is None else value


def _positive(name: str, value, integer: bool = True):
    if (int(value) if integer else float(value)) <= 0 or (integer and int(value) != value):
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value}")
    return int(value) if integer else float(value)


# --- the peers ------------------------------------------------------------------------------------
def _random(objective, ctx, allowed, k, budget, generator, chunk: int = SCORE_CHUNK) -> Candidates:
    B, S, V = allowed.shape
    arch = Archive(B, k, S, V, allowed.device)
    per = max(1, chunk // max(B, 1))
    for start in range(0, budget, per):
        arch.score(objective, uniform_rows(allowed, min(per, budget - start), generator), ctx, chunk)
    return arch.result()


def _anneal(objective, ctx, allowed, k, budget, generator, **o) -> Candidates:
    B, S, V = allowed.shape
    chunk = _opt(o, "chunk", SCORE_CHUNK)
    P = min(_positive("chains", _opt(o, "chains", min(16, max(1, budget // 128)))), budget)
    init = min(budget, max(P, _positive("init", _opt(o, "init", max(P, budget // 10)))))
    t0, t1 = _positive("t0", _opt(o, "t0", 0.3), False), _positive("t1", _opt(o, "t1", 0.01), False)
    arch = Archive(B, k, S, V, allowed.device)
    first = uniform_rows(allowed, init, generator)
    first_scores = arch.score(objective, first, ctx, chunk)
    return anneal_chains(objective, ctx, allowed, arch, first, first_scores, P, budget - init, t0, t1,
                         generator, chunk)


def _genetic(objective, ctx, allowed, k, budget, generator, **o) -> Candidates:
    B, S, V = allowed.shape
    dev = allowed.device
    chunk = _opt(o, "chunk", SCORE_CHUNK)
    N = min(budget, _positive("population", _opt(o, "population", min(32, max(2, budget // 8)))))
    E = min(N - 1, _positive("elite", _opt(o, "elite", max(1, N // 8)))) if N > 1 else 0
    T = _positive("tournament", _opt(o, "tournament", 2))
    rate = float(_opt(o, "mutation", 1.0 / S))
    if not 0 <= rate <= 1:
        raise ValueError(f"mutation must be a per-slot rate in [0, 1], got {rate}")
    arch = Archive(B, k, S, V, dev)
    pop = uniform_rows(allowed, N, generator)
    fit = arch.score(objective, pop, ctx, chunk)
    left = budget - N
    C = N - E
    while left > 0 and C > 0:
        n = min(C, left)
        cand = torch.randint(N, (2, B, n, T), generator=generator, device=dev)        # tournaments
        win = fit.unsqueeze(1).unsqueeze(0).expand(2, B, n, N).gather(3, cand).argmax(3, keepdim=True)
        parent = cand.gather(3, win).squeeze(3)                                        # (2, B, n)
        p1 = pop.gather(1, parent[0].unsqueeze(-1).expand(B, n, S))
        p2 = pop.gather(1, parent[1].unsqueeze(-1).expand(B, n, S))
        child = torch.where(torch.rand(B, n, S, generator=generator, device=dev) < 0.5, p1, p2)
        mutate = torch.rand(B, n, S, generator=generator, device=dev) < rate
        child = torch.where(mutate, uniform_rows(allowed, n, generator), child)
        clone = (child == p1).all(-1) | (child == p2).all(-1)
        child = torch.where(clone.unsqueeze(-1), change_one_slot(child, allowed, generator), child)
        child_fit = arch.score(objective, child, ctx, chunk)
        left -= n
        keep = fit.topk(N - n, dim=1).indices                                          # elites (and more if n < C)
        pop = torch.cat([pop.gather(1, keep.unsqueeze(-1).expand(B, N - n, S)), child], 1)
        fit = torch.cat([fit.gather(1, keep), child_fit], 1)
    return arch.result()


def _gradient_ascent(objective, ctx, allowed, k, budget, generator, **o) -> Candidates:
    B, S, V = allowed.shape
    dev = allowed.device
    chunk = _opt(o, "chunk", SCORE_CHUNK)
    P = min(budget, _positive("starts", _opt(o, "starts", min(64, max(1, budget // 40)))))
    lr = _positive("lr", _opt(o, "lr", 0.3), False)
    tau = _positive("tau", _opt(o, "tau", 1.0), False)
    every = _positive("every", _opt(o, "every", 5))
    init_scale = float(_opt(o, "init_scale", 1.0))
    share = float(_opt(o, "hard_share", 0.5))
    if not 0 < share <= 1:
        raise ValueError(f"hard_share must be in (0, 1], got {share}")
    # budget per context: G soft steps of P soft rows, E evaluations of R >= P hard rows each
    hard = min(budget, max(P, round(budget * share)))
    G = (budget - hard) // P
    E = max(1, min(math.ceil(G / every), hard // P))
    R = hard // E
    at = {round((e + 1) * G / E) for e in range(E)}                      # soft steps after which to evaluate

    arch = Archive(B, k, S, V, dev)
    logits = (torch.randn(B, P, S, V, generator=generator, device=dev) * init_scale).requires_grad_(True)
    mask = allowed.unsqueeze(1).expand(B, P, S, V)
    opt = torch.optim.Adam([logits], lr=lr)
    rep = ctx.repeat_interleave(P)

    def probs() -> Tensor:
        return torch.softmax(torch.where(mask, logits, torch.full_like(logits, _NEG)) / tau, -1)

    spent = torch.zeros(B, dtype=torch.long, device=dev)                 # hard rows scored, per context
    evals = 0

    def evaluate() -> None:
        """Score each start's argmax row, then rows sampled from its soft row, skipping rows already
        archived or repeated: up to R new rows per context (what earlier evaluations saved carries
        over; the last one may spend all of the hard share that is left)."""
        nonlocal spent, evals
        evals += 1
        with torch.no_grad():
            avail = (hard - spent) if evals >= E else (evals * R - spent)               # (B,)
            p = probs()
            rows = p.argmax(-1)                                                        # (B, P, S)
            extra = 2 * int(avail.max())
            if extra > 0:
                which = torch.arange(extra, device=dev) % P
                draws = torch.multinomial(p[:, which].reshape(-1, V), 1, generator=generator)
                rows = torch.cat([rows, draws.reshape(B, extra, S)], 1)
            keys = row_keys(rows, V)
            known = ((keys.unsqueeze(2) == row_keys(arch.rows, V).unsqueeze(1)) & arch.valid.unsqueeze(1)).any(2)
            new = first_occurrence(keys, ~known)
            take = new & (new.long().cumsum(1) <= avail.unsqueeze(1))
            if bool(take.any()):
                arch.score(objective, rows, ctx, chunk, take)
            spent = spent + take.sum(1)

    if G == 0:
        evaluate()
    for g in range(1, G + 1):
        soft = probs().reshape(B * P, S, V)
        value = objective(soft, rep).float()
        arch.calls += B * P
        # the gradient of the logits only: a scorer's own parameters get no .grad from the search
        logits.grad = torch.autograd.grad(-value.sum(), logits)[0]
        opt.step()
        if g in at:
            evaluate()
    return arch.result()
