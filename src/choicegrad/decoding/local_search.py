"""Local search from scored candidates: steepest-ascent coordinate search (polish) and simulated
annealing (anneal_from), both under a scorer-call budget per context.

    cands = polish(objective, ctx, start, allowed, budget=left)
    cands = anneal_from(objective, ctx, allowed, start, budget=left, generator=rng)

start: Candidates (rows (B, K, S), scores (B, K) best first); allowed (B, S, V) bool. Both return the
K best distinct rows among the start and every row scored on the way; scorer_calls adds to start's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
from torch import Tensor

from choicegrad.decoding.rows import change_one_slot, distinct_topk, neighbour_count, union_of
from choicegrad.decoding.scoring import Candidates, score_grid
from choicegrad.generators.context import Context, in_context_chunks
from choicegrad.generators.objective import SCORE_CHUNK, Objective

_NEG = float("-inf")


#: Local search (polish, and the amortised search of training) tries at most this many categories
#: per slot: where a slot has more, the ones the generator rates highest for the context
#: (`search_moves`). Vocabularies of this size or less (every benchmark task's) are searched whole.
SEARCH_CATEGORIES = 512


def search_moves(allowed: Tensor, logits: "Optional[Tensor | dict[int, Tensor]]" = None,
                 limit: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """The categories a single-slot change may set, per context and slot: (moves (B, S, m) long, ok
    (B, S, m) bool). Every category (m = V, in order) when V <= limit (default SEARCH_CATEGORIES) or
    without logits. Else m = limit: in a slot whose allowed categories all lie below `limit`, those
    (in order); in a wider slot s, the `limit` allowed ones with the highest logits[s] (B, V_s) (the
    generator's, for its contexts: a dict of the wide slots' own_logits, or (B, S, V) for all)."""
    B, S, V = allowed.shape
    limit = SEARCH_CATEGORIES if limit is None else int(limit)
    if V <= limit or logits is None:
        return torch.arange(V, device=allowed.device).expand(B, S, V), allowed
    moves = torch.arange(limit, device=allowed.device).repeat(B, S, 1)
    ok = allowed[..., :limit].clone()
    for s in wide_slots(allowed, limit):             # over the few slots wider than `limit`
        rate = (logits[s] if isinstance(logits, dict) else logits[:, s]).detach().float()
        top = rate.masked_fill(~allowed[:, s, :rate.shape[-1]], float("-inf")).topk(limit, -1).indices
        moves[:, s], ok[:, s] = top, allowed[:, s].gather(-1, top)
    return moves, ok


def wide_slots(allowed: Tensor, limit: Optional[int] = None) -> list[int]:
    """The slots with an allowed category at `limit` (default SEARCH_CATEGORIES) or past it, in some context."""
    V = allowed.shape[-1]
    limit = SEARCH_CATEGORIES if limit is None else int(limit)
    if V <= limit:
        return []
    return union_of(allowed)[:, limit:].any(-1).nonzero().squeeze(1).tolist()


def generator_ratings(gen, ctx: Context, allowed: Tensor) -> Optional[dict[int, Tensor]]:
    """search_moves' logits for the wide slots of `allowed`: the generator's own_logits (an
    autoregressive generator's with nothing chosen, its first slot's exactly); None without any."""
    wide = wide_slots(allowed)
    return dict(zip(wide, gen.own_logits(ctx, wide))) if wide else None


def move_count(moves: Tensor, movable: Tensor, V: int) -> Tensor:
    """(B,) single-slot changes of a row with these moves (B, S, m): every allowed category but the
    row's own when moves are the whole vocabulary (m = V); else, as the row's own category may not
    be among them, every movable one (a bound for budgets)."""
    return neighbour_count(movable) if moves.shape[-1] == V else movable.sum((-2, -1))


def polish(objective: Objective, ctx: Context, start: Candidates, allowed: Tensor, sweeps: int = 20,
           chunk: int = SCORE_CHUNK, max_elements: int = 1 << 25, budget: "Optional[int | Tensor]" = None,
           moves: Optional[tuple[Tensor, Tensor]] = None, by_slot: bool = False, gradient: bool = False) -> Candidates:
    """Steepest-ascent coordinate search from every valid candidate; the K best distinct rows among
    the candidates and every neighbour scored on the way.

    Each sweep builds all single-slot changes (B, P, S, m) of P still-improving candidates, scores
    them in one batched call, and moves each candidate to its best neighbour if that is better; a
    candidate with no better neighbour is at a local peak and stops. sweeps: at most this many.
    budget: at most this many neighbours scored per context (an int, or (B,) per context), spent
    best-first: each sweep climbs only the best still-improving candidates, as many as leave half the
    calls for the sweeps after it, so the beam narrows as the budget runs down and the best
    candidates climb to their peaks (sweeps is then no limit). moves: (moves (B, S, m), movable) from
    search_moves, the categories a change may set (default: every allowed one, m = V).
    by_slot: one slot per step (_polish_by_slot). gradient: changes rated by the objective's gradient
    and scored best rated first, one per step (_polish_by_gradient; a differentiable objective under a
    budget only, else the climb by_slot asks for). Many parameters: the start and its space, then
    keyword-defaulted limits of the search (sweeps, chunk, max_elements, budget) and its moves.
    """
    B, K, S = start.rows.shape
    moves, movable = moves if moves is not None else search_moves(allowed)
    m = moves.shape[-1]
    if budget is not None:  # per context, (B,)
        budget = torch.as_tensor(budget, dtype=torch.float32, device=allowed.device).expand(B)
    per = max(1, max_elements // max(1, K * S * m * S))  # contexts per pass, bounding the neighbour grid
    V = allowed.shape[-1]
    climb = _polish_by_gradient if led_by_gradient(objective, gradient, budget) else \
        _polish_by_slot if by_slot else _polish
    if B <= per:
        return climb(objective, ctx, start, (moves, movable), V, sweeps, chunk, budget)
    out = in_context_chunks(lambda c, r, s, v, mv, ok, b: climb(objective, c, Candidates(r, s, v, 0), (mv, ok), V,
                                                                sweeps, chunk, b),
                            ctx, per, start.rows, start.scores, start.valid, moves, movable, budget)
    return dataclasses.replace(out, scorer_calls=start.scorer_calls + out.scorer_calls)


def _beam(active: Tensor, cur_score: Tensor, left: Tensor, size: Tensor, budget: Optional[Tensor],
          ) -> tuple[int, Optional[Tensor], Optional[Tensor]]:
    """The candidates (B, K) a polish step climbs -> (P, pick (B, P) their indices, on (B, P) whether
    each context climbs it); P == 0 (pick, on None): no room left. The beam is the best still-improving
    candidates; under a budget only as many as leave `left` (B,) room for as many again next step at
    `size` (B,) calls each, so the best candidates climb furthest (down to one, to its peak)."""
    beam = active.sum(1).float()
    if budget is not None:
        beam = torch.minimum(beam, torch.floor(left / (2 * size.clamp(min=1))).clamp(min=1))
        beam = torch.where(left >= size, beam, torch.zeros_like(beam))
    P = int(beam.max())
    if P == 0:
        return 0, None, None
    pick = torch.where(active, cur_score, torch.full_like(cur_score, _NEG)).topk(P, dim=1).indices   # (B, P)
    on = (torch.arange(P, device=active.device)[None, :] < beam[:, None]) & active.gather(1, pick)
    return P, pick, on


class _Climb:
    """What both polish loops carry: every candidate's current row (B, K, S) and score (B, K), which
    candidates still climb (B, K), the calls left per context (B,) under `budget` (inf without), the K
    best distinct rows seen (the result) and the scorer calls spent."""

    def __init__(self, start: Candidates, V: int, budget: Optional[Tensor] = None):
        self.V = V
        self.current, self.cur_score = start.rows.clone(), start.scores.clone()
        self.active = start.valid.clone()
        B = start.rows.shape[0]
        self.left = torch.full((B,), math.inf, device=start.rows.device) if budget is None else budget.clone()
        self.best = (start.rows, start.scores, start.valid)
        self.calls = start.scorer_calls

    def rows(self, pick: Tensor) -> Tensor:
        """The current rows (B, P, S) of the picked candidates (B, P)."""
        return self.current.gather(1, pick.unsqueeze(-1).expand(*pick.shape, self.current.shape[-1]))

    def step(self, objective: Objective, ctx: Context, chunk: int, pick: Tensor, on: Tensor, cand: Tensor,
             ok: Tensor) -> Tensor:
        """The picked candidates (B, P) climbing where `on` (B, P): score their neighbours cand
        (B, P, N, S) where ok (B, P, N), move each to its best neighbour if that is better, archive
        every neighbour scored. -> improve (B, P)."""
        B, P, N, S = cand.shape
        flat_rows, flat_ok = cand.reshape(B, P * N, S), ok.reshape(B, P * N)
        nb_scores, n = score_grid(objective, flat_rows, ctx, flat_ok, chunk)
        self.calls += n
        best_nb = nb_scores.reshape(B, P, N).max(-1)
        base = self.rows(pick)
        base_score = self.cur_score.gather(1, pick)
        improve = on & (best_nb.values > base_score + 1e-7)
        moved = cand.gather(2, best_nb.indices[..., None, None].expand(B, P, 1, S))[:, :, 0]
        self.current = self.current.scatter(1, pick.unsqueeze(-1).expand(B, P, S),
                                            torch.where(improve.unsqueeze(-1), moved, base))
        self.cur_score = self.cur_score.scatter(1, pick, torch.where(improve, best_nb.values, base_score))
        rows, scores, valid = self.best
        self.best = distinct_topk(torch.cat([rows, flat_rows], 1), torch.cat([scores, nb_scores], 1), rows.shape[1],
                                  self.V, torch.cat([valid, flat_ok], 1))
        return improve

    def result(self) -> Candidates:
        return Candidates(*self.best, self.calls)


def single_changes(base: Tensor, moves: Tensor) -> tuple[Tensor, Tensor]:
    """Every single-slot change of rows base (B, P, S) to the categories moves (B, S, m):
    (rows (B, P, S, m, S), row (b, p, s, j) with slot s set to moves[b, s, j]; new (B, P, S, m), where
    that differs from the row's own category)."""
    B, P, S = base.shape
    m = moves.shape[-1]
    eye = torch.arange(S, device=base.device)
    rows = base.unsqueeze(2).unsqueeze(3).expand(B, P, S, m, S).clone()
    rows[:, :, eye, :, eye] = moves.unsqueeze(1).expand(B, P, S, m).permute(2, 0, 1, 3)    # slot s := its move
    return rows, moves.unsqueeze(1) != base.unsqueeze(-1)


def _polish(objective: Objective, ctx: Context, start: Candidates, moves: tuple[Tensor, Tensor], V: int,
            sweeps: int, chunk: int, budget: Optional[Tensor] = None) -> Candidates:
    """polish on contexts whose slots may take moves (B, S, m) where movable (B, S, m) (moves: the
    pair); V: the vocabulary."""
    moves, movable = moves
    B, K, S = start.rows.shape
    m = moves.shape[-1]
    climb = _Climb(start, V, budget)
    size = move_count(moves, movable, V).float()                                   # (B,) neighbours of a row
    sweep = 0
    while bool(climb.active.any()) and (budget is not None or sweep < sweeps):
        sweep += 1
        P, pick, on = _beam(climb.active, climb.cur_score, climb.left, size, budget)
        if P == 0:
            break
        base = climb.rows(pick)                                                          # (B, P, S)
        nb, new = single_changes(base, moves)                                            # (B, P, S, m, S)
        ok = movable.unsqueeze(1) & new & on[:, :, None, None]
        climb.left = climb.left - ok.sum((1, 2, 3)).float()
        improve = climb.step(objective, ctx, chunk, pick, on, nb.reshape(B, P, S * m, S), ok.reshape(B, P, S * m))
        climb.active = climb.active.scatter(1, pick, climb.active.gather(1, pick) & (improve | ~on))   # at a peak: done
    return climb.result()


def _polish_by_slot(objective: Objective, ctx: Context, start: Candidates, moves: tuple[Tensor, Tensor], V: int,
                    sweeps: int, chunk: int, budget: Optional[Tensor] = None) -> Candidates:
    """polish one slot at a time (cyclic coordinate ascent): each step sets slot s = step mod S of the
    beam's candidates to its best category (m rows each, not S m), so a budget buys S times more moves.
    A candidate is at a single-slot peak once S steps in a row (S - 1 after a move) changed nothing."""
    moves, movable = moves
    B, K, S = start.rows.shape
    m = moves.shape[-1]
    climb = _Climb(start, V, budget)
    stale = torch.full((B, K), -1, dtype=torch.long, device=start.rows.device)          # steps since the last move
    own = moves.shape[-1] == V
    for step in range(sweeps * S if budget is None else 1 << 30):
        if not bool(climb.active.any()):
            break
        s = step % S
        size = movable[:, s].sum(-1).float() - (1 if own else 0)          # (B,) rows one step costs
        P, pick, on = _beam(climb.active, climb.cur_score, climb.left, size, budget)
        if P == 0:
            break
        base = climb.rows(pick)                                                          # (B, P, S)
        nb = base.unsqueeze(2).expand(B, P, m, S).clone()                                # (B, P, m, S)
        nb[..., s] = moves[:, s].unsqueeze(1).expand(B, P, m)
        ok = movable[:, s].unsqueeze(1) & (moves[:, s].unsqueeze(1) != base[..., s:s + 1]) & on[..., None]
        climb.left = climb.left - ok.sum((1, 2)).float()
        improve = climb.step(objective, ctx, chunk, pick, on, nb, ok)
        was = stale.gather(1, pick)
        now = torch.where(improve, torch.zeros_like(was), torch.where(on, was + 1, was))
        stale = stale.scatter(1, pick, now)
        climb.active = climb.active & (stale < S - 1)
    return climb.result()


def led_by_gradient(objective: Objective, gradient: bool, budget) -> bool:
    """Whether polish(gradient=...) climbs led by the gradient: asked, on a differentiable
    objective, under a budget (else the climb by_slot asks for)."""
    return bool(gradient) and objective.differentiable and budget is not None


def _polish_by_gradient(objective: Objective, ctx: Context, start: Candidates, moves: tuple[Tensor, Tensor],
                        V: int, sweeps: int, chunk: int, budget: Optional[Tensor] = None) -> Candidates:
    """polish led by the objective's gradient (first improvement, one climber per context). The best
    still-climbing candidate takes the gradient g (S, V) of the objective at its one-hot row (one
    call: forward and backward together, as gradient ascent counts them), which rates every
    single-slot change to first order, g[s, v] - g[s, row_s]. It then scores the changes best rated
    first, one row per step, and moves to the first that scores higher (and takes the gradient
    there). Once every change is scored without a gain it is at a single-slot peak, and the next
    candidate climbs. So a step costs one call per context, where a sweep of `_polish` costs every
    neighbour. A climber with a single call left scores a change instead (in plain order). Needs a
    differentiable objective; one that fails on soft rows with gradients (a user's reward through
    numpy) climbs in plain order, without further gradient calls. polish runs it under a budget
    only (sweeps then bounds nothing)."""
    moves, movable = moves
    B, K, S = start.rows.shape
    m = moves.shape[-1]
    dev = start.rows.device
    climb = _Climb(start, V, budget)
    at = torch.arange(B, device=dev)
    climber = torch.full((B,), -1, dtype=torch.long, device=dev)           # the candidate climbing, per context
    rated = torch.zeros(B, S, m, device=dev)                                 # its changes' first-order gains
    tried = torch.zeros(B, S, m, dtype=torch.bool, device=dev)               # its changes scored since its last move
    graded = True                                                            # the objective gave gradients so far
    while True:
        live = climb.active.any(1) & (climb.left >= 1)
        if not bool(live.any()):
            break
        best = torch.where(climb.active, climb.cur_score, torch.full_like(climb.cur_score, _NEG)).argmax(1)
        fresh = live & (best != climber)                                     # a new climber, or one that moved
        climber = torch.where(live, best, climber)
        row = climb.current[at, climber]                                     # (B, S)
        if bool(fresh.any()):
            which = fresh.nonzero().squeeze(1)
            grad = torch.zeros(len(which), S, V, device=dev)   # no gradient: every change rated alike, plain order
            room = climb.left[which] >= 2                      # a gradient needs a row left to score after it
            which_grad = which[room]
            if graded and len(which_grad):
                try:
                    with torch.enable_grad():
                        x = torch.nn.functional.one_hot(row[which_grad], V).float().requires_grad_(True)
                        value = objective(x, ctx.index(which_grad))
                        if value.requires_grad:                  # else flat in x (e.g. it rounds soft rows)
                            grad[room] = torch.autograd.grad(value.sum(), x)[0].float()
                except (RuntimeError, TypeError, ValueError):    # a reward that cannot carry gradients (numpy inside)
                    graded = False                               # the hard rows will show any real error
                climb.calls += len(which_grad)
                climb.left[which_grad] -= 1
            own = grad.gather(2, row[which].unsqueeze(-1))
            gain = grad.gather(2, moves[which]) - own
            rated[which] = torch.nan_to_num(gain, nan=-1e30, posinf=-1e30, neginf=-1e30)
            tried[which] = False
        open_ = movable & ~tried & (moves != row.unsqueeze(-1))
        flat = rated.masked_fill(~open_, _NEG).flatten(1).max(1)
        has = open_.flatten(1).any(1)
        go = live & has & (climb.left >= 1)
        peak = live & ~has                                                   # nothing left to score: a peak
        climb.active[at[peak], climber[peak]] = False
        if not bool(go.any()):
            continue
        s_idx, j_idx = flat.indices // m, flat.indices % m
        cand = row.clone()
        cand[at, s_idx] = moves[at, s_idx, j_idx]
        tried.view(B, -1)[at[go], flat.indices[go]] = True
        climb.left = climb.left - go.float()
        pick = climber.clamp(min=0).unsqueeze(1)
        improve = climb.step(objective, ctx, chunk, pick, go.unsqueeze(1), cand[:, None, None, :], go[:, None, None])
        climber = torch.where(improve[:, 0], torch.full_like(climber, -1), climber)   # it moved: a new gradient
    return climb.result()


class Archive:
    """The k best distinct hard rows seen so far, per context, and the scorer calls spent."""

    def __init__(self, B: int, k: int, S: int, V: int, device):
        self.k, self.V = k, V
        self.rows = torch.full((B, 0, S), -1, dtype=torch.long, device=device)
        self.scores = torch.full((B, 0), _NEG, device=device)
        self.valid = torch.zeros(B, 0, dtype=torch.bool, device=device)
        self.calls = 0

    def add(self, rows: Tensor, scores: Tensor, valid: Optional[Tensor] = None) -> None:
        """rows (B, M, S), scores (B, M), valid (B, M) (default: finite scores)."""
        valid = torch.isfinite(scores) if valid is None else valid
        self.rows, self.scores, self.valid = distinct_topk(
            torch.cat([self.rows, rows], 1), torch.cat([self.scores, scores], 1), self.k, self.V,
            torch.cat([self.valid, valid], 1))

    def score(self, objective: Objective, rows: Tensor, ctx: Context, chunk: int,
              valid: Optional[Tensor] = None) -> Tensor:
        """Score rows (B, M, S) (where valid), count the calls, archive them -> (B, M) scores."""
        scores, n = score_grid(objective, rows, ctx, valid, chunk)
        self.calls += n
        self.add(rows, scores, valid)
        return scores

    def result(self) -> Candidates:
        return Candidates(self.rows, self.scores, self.valid, self.calls)


def anneal_from(objective: Objective, ctx: Context, allowed: Tensor, start: Candidates, budget: "int | Tensor",
                generator: torch.Generator, chains: Optional[int] = None, t0: float = 0.3, t1: float = 0.01,
                chunk: int = SCORE_CHUNK) -> Candidates:
    """Simulated annealing (anneal_chains, as the benchmark's `anneal` peer) warm-started from scored
    candidates: `chains` (default min(16, max(1, budget // 128))) chains start at the best valid rows
    of `start` (rows (B, K, S), scores (B, K) best first) and spend `budget` (an int, or (B,) per
    context) more calls per context. -> the K best distinct rows among start and every row scored;
    scorer_calls adds to start's.
    Many parameters: the start and its budget, then anneal_chains' settings (chains, t0, t1, chunk)."""
    B, K, S = start.rows.shape
    V = allowed.shape[-1]
    arch = Archive(B, K, S, V, allowed.device)
    arch.add(start.rows, start.scores, start.valid)
    arch.calls = start.scorer_calls
    left = torch.as_tensor(budget, dtype=torch.long, device=allowed.device).expand(B)
    top = int(left.max())
    if top < 1:
        return arch.result()
    if not bool(start.valid.any(1).all()):
        raise ValueError("anneal_from needs at least one valid start row per context")
    P = min(int(chains or min(16, max(1, top // 128))), top)
    scores = torch.where(start.valid, start.scores, torch.full_like(start.scores, _NEG))
    n_valid = start.valid.sum(1, keepdim=True).clamp(min=1)
    pick = torch.arange(P, device=allowed.device)[None, :] % n_valid                   # best rows, cycled
    rows = start.rows.gather(1, pick.unsqueeze(-1).expand(B, P, S)).clamp(min=0)
    return anneal_chains(objective, ctx, allowed, arch, rows, scores.gather(1, pick), P, left, t0, t1,
                         generator, chunk, scale_rows=scores)


def anneal_chains(objective: Objective, ctx: Context, allowed: Tensor, arch: Archive, first: Tensor,
                  first_scores: Tensor, P: int, left: "int | Tensor", t0: float, t1: float,
                  generator: Optional[torch.Generator], chunk: int, scale_rows: Optional[Tensor] = None,
                  ) -> Candidates:
    """P Metropolis chains per context from the best of `first` (B, M, S) / `first_scores` (B, M),
    spending `left` calls (an int, or (B,) per context) into `arch`; single-slot proposals
    (change_one_slot); temperatures are t0 -> t1 (geometric) times the std of the scores `scale_rows`
    (B, M') (default first_scores; -inf entries ignored). -> arch.result().

    Many parameters: the one chain loop behind both anneal_from and the `anneal` peer, which start it
    from different rows and archives."""
    B, M, S = first.shape
    ref = first_scores if scale_rows is None else scale_rows
    fin = torch.isfinite(ref)
    n = fin.sum(1)
    mean = torch.where(fin, ref, 0).sum(1) / n.clamp(min=1)
    var = torch.where(fin, (ref - mean[:, None]) ** 2, 0).sum(1) / (n - 1).clamp(min=1)
    std = torch.where(n > 1, var.sqrt(), torch.zeros_like(var))
    fallback = std[std > 0].mean() if bool((std > 0).any()) else torch.tensor(1.0, device=allowed.device)
    scale = torch.where(std > 0, std, fallback)[:, None]                                # (B, 1)
    top = first_scores.topk(P, dim=1).indices
    current = first.gather(1, top.unsqueeze(-1).expand(B, P, S))
    cur_score = first_scores.gather(1, top)
    left = torch.as_tensor(left, dtype=torch.long, device=allowed.device).expand(B)
    steps = math.ceil(int(left.max()) / P)
    for i in range(steps):
        n = (left - i * P).clamp(0, P)                              # the last steps may move fewer chains
        temp = scale * t0 * (t1 / t0) ** (i / max(steps - 1, 1))
        prop = change_one_slot(current, allowed, generator)
        moving = torch.arange(P, device=allowed.device)[None, :] < n[:, None]
        score = arch.score(objective, prop, ctx, chunk, moving)
        u = torch.rand(B, P, generator=generator, device=allowed.device)
        delta = score - cur_score
        accept = moving & ((delta >= 0) | (u < torch.exp((delta / temp).clamp(max=0))))
        current = torch.where(accept.unsqueeze(-1), prop, current)
        cur_score = torch.where(accept, score, cur_score)
    return arch.result()
