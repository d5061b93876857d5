"""Objectives: what a generator maximises, as a function of rows and their contexts.

An objective is called as f(x, ctx) -> (N,) with x (N, S) long rows or (N, S, V) float one-hot/soft
rows and ctx a context batch of length N; higher is better. `score_rows` evaluates (B, M, S) rows for
B contexts in bounded chunks and counts scorer calls (rows scored).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from choicegrad.generators.context import Context, ItemContext, TableContext


class Objective:
    """The one contract every estimator, generator, decoder, the Designer and the training loop read.

    objective(x, ctx) -> (N,) scores, higher is better: x (N, S) long rows (category indices in the
    choice space's label order) or (N, S, V) float one-hot or soft rows (V the largest vocabulary;
    slot s uses its first V_s entries), ctx a context batch of N (TableContext or ItemContext).
    differentiable: whether gradients reach soft x (the relaxed and straight-through estimators need
    it; score-function ones do not). scale: the score's typical spread in its own units: training
    works in units of it (the entropy bonus is per nat in scale units). calls: rows scored so far.
    prepare(device): move to `device` and freeze (eval, no parameter gradients) before use.
    bind(space, context, contexts): attach the choice space and context columns (a no-op but for
    objectives on labelled rows). scale_given: False when `scale` is to be estimated from random
    rows before training. name: how errors and a run's objective.json name it. members: the score's
    hypotheses (a scorer ensemble's members, 1 otherwise); scores_and_members(x, ctx) -> (score (N,),
    each one's score (N, members)) from one evaluation, and member_scores(x, ctx) the latter, counted
    (the portfolio decoder's input; an objective with members > 1 implements scores_and_members).

    Subclasses implement score(x, ctx); __call__ counts the rows. TableObjective (a fitted scorer),
    ItemObjective (a reward over item vectors), FrameObjective (a black box on labelled rows) and
    ModuleObjective (a torch module on one-hot rows) are the four kinds.
    """

    differentiable: bool = True
    scale: float = 1.0
    scale_given: bool = True      # False: `scale` is a placeholder, to be estimated from draws before training
    members: int = 1              # hypotheses of the score (a scorer ensemble's members); see member_scores

    def __init__(self) -> None:
        self.calls = 0
        self.name = type(self).__name__      # how errors and run records name it

    def prepare(self, device: torch.device | str) -> Objective:
        return self

    def bind(self, space, context, contexts=None) -> Objective:
        """Bind to a choice space and context columns (objectives on labelled rows need them); others
        are ready as they are."""
        return self

    def score(self, x: Tensor, ctx: Context) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        self.calls += int(x.shape[0])
        return self.score(x, ctx)

    def member_scores(self, x: Tensor, ctx: Context) -> Tensor:
        """(N, members) the score under each hypothesis (counted as calls, like __call__); one
        hypothesis: the score itself."""
        self.calls += int(x.shape[0])
        return self.scores_and_members(x, ctx)[1]

    def scores_and_members(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """(score (N,), member scores (N, members)) of one evaluation, not counted (a wrapper counts)."""
        s = self.score(x, ctx)
        return s, s.unsqueeze(-1)


def check_scorer(scorer, name: str) -> None:
    """InputError naming `name` unless `scorer` is a fitted choicegrad Scorer, with the way to use
    anything else (a user's own torch model or function) as an objective."""
    from choicegrad.scorer.model import Scorer

    if not isinstance(scorer, Scorer):
        from choicegrad.errors import InputError

        raise InputError(name, [
            f"expected a fitted choicegrad Scorer (fit_scorer(table).scorer or Run.load(run).scorer), got "
            f"{type(scorer).__name__}. Your own model is an objective instead: cg.ModuleObjective(net) for a torch "
            "module forward(features, context) on one-hot rows, cg.FrameObjective(f) for a function of a DataFrame "
            "of labelled rows; train a generator for it with cg.Run.fit_objective(objective, out, space=..., "
            "contexts=...)"])


class TableObjective(Objective):
    """A fitted Scorer as objective: scorer(x, ctx.cat, ctx.num, beta=beta) in its working units, the
    score's own units unless float32 cannot hold them (then standardised; scorer.to_score converts).

    beta: ensemble pessimism (mean - beta * std over members); None uses the scorer's own beta.
    `scale` is the scorer's score std, in working units.
    """

    def __init__(self, scorer, beta: Optional[float] = None):
        super().__init__()
        check_scorer(scorer, "TableObjective")
        self.scorer, self.beta = scorer, beta
        self.scale = float(scorer.y_std)

    def prepare(self, device: torch.device | str) -> TableObjective:
        self.scorer.to(device).eval().requires_grad_(False)
        return self

    def score(self, x: Tensor, ctx: TableContext) -> Tensor:
        return self.scorer(x, ctx.cat, ctx.num, beta=self.beta)

    @property
    def members(self) -> int:
        return len(self.scorer.members)

    def scores_and_members(self, x: Tensor, ctx: TableContext) -> tuple[Tensor, Tensor]:
        """score(x, ctx) (N,) and member_scores (N, members) from one pass of the members (not counted)."""
        members = self.scorer.member_scores(x, ctx.cat, ctx.num)
        return self.scorer.combine(members, self.beta), members.T


class ItemObjective(Objective):
    """Reward of selected item vectors: reward(selected (N, S, D), ctx) -> (N,), higher is better.

    selected = x @ ctx.items with x the (N, S, N_items) one-hot or relaxed selection, so gradients of
    a differentiable reward reach the selection. scale: the reward's typical spread (None: estimated
    from random slates before training, as Run.fit_objective does).
    """

    def __init__(self, reward: Callable[[Tensor, ItemContext], Tensor], scale: Optional[float] = None):
        super().__init__()
        self.reward, self.scale, self.scale_given = reward, 1.0 if scale is None else float(scale), scale is not None
        self.name = getattr(reward, "__name__", type(self).__name__)

    def score(self, x: Tensor, ctx: ItemContext) -> Tensor:
        if not x.is_floating_point():
            x = F.one_hot(x, ctx.items.shape[1]).to(ctx.items.dtype)
        selected = torch.einsum("bsn,bnd->bsd", x.to(ctx.items.dtype), ctx.items)
        return self.reward(selected, ctx)


class ItemScorerObjective(ItemObjective):
    """A fitted ItemScorer (choicegrad.scorer.items) as objective: scorer(x @ ctx.items, ctx.cat,
    ctx.num, beta) in standardised units (scale 1; scorer.to_score gives the score's units)."""

    def __init__(self, scorer, beta: Optional[float] = None):
        super().__init__(lambda selected, ctx: scorer(selected, ctx.cat, ctx.num, beta=beta), scale=1.0)
        self.scorer, self.beta = scorer, beta
        self.name = "ItemScorer"

    def prepare(self, device: torch.device | str) -> ItemScorerObjective:
        self.scorer.to(device).eval().requires_grad_(False)
        return self


class HardRowsAdjusted(Objective):
    """Another objective, its hard rows' scores adjusted: scores as `inner` does, then hard rows
    (N, S) long go through adjust(x, values, ctx); soft rows stay as `inner` scores them. Its calls
    are the inner objective's (counted there); prepare prepares the inner objective."""

    def __init__(self, inner: Objective):
        super().__init__()
        self.inner, self.name = inner, inner.name
        self.differentiable, self.scale, self.scale_given = inner.differentiable, inner.scale, inner.scale_given

    @property
    def calls(self) -> int:
        return self.inner.calls

    @calls.setter
    def calls(self, value: int) -> None:
        pass                                          # counted by the inner objective

    def prepare(self, device: torch.device | str) -> HardRowsAdjusted:
        self.inner.prepare(device)
        return self

    def adjust(self, x: Tensor, values: Tensor, ctx: Context) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        values = self.inner(x, ctx)
        return values if x.is_floating_point() else self.adjust(x, values, ctx)


class DistinctItems(HardRowsAdjusted):
    """Another objective on rows whose items are all different: a hard row (N, S) holding an item
    twice scores -inf (what a decoder's search then never keeps); other rows, and soft rows, as the
    inner objective scores them."""

    def adjust(self, x: Tensor, values: Tensor, ctx: Context) -> Tensor:
        same = (x.unsqueeze(-1) == x.unsqueeze(-2)) & ~torch.eye(x.shape[-1], dtype=torch.bool, device=x.device)
        return values.masked_fill(same.flatten(1).any(1), float("-inf"))


class GeneratorLogProb(Objective):
    """A generator's own log-probability of rows, as what decoders rank by when no objective is at
    hand (argmax, sample, topk: the generator alone). Not a score of the rows' quality."""

    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def score(self, x: Tensor, ctx: Context) -> Tensor:
        return self.generator.log_prob(x, ctx)


class CallableObjective(Objective):
    """A function f(x, ctx) -> (N,) tensor on choicegrad's own rows and contexts (see Objective): an
    oracle, a test function. `differentiable` and `scale` as the caller states them."""

    def __init__(self, fn: Callable[[Tensor, Context], Tensor], differentiable: bool = True, scale: float = 1.0):
        super().__init__()
        self.fn, self.differentiable, self.scale = fn, bool(differentiable), float(scale)

    def score(self, x: Tensor, ctx: Context) -> Tensor:
        return self.fn(x, ctx)


def as_objective(objective, name: str = "objective") -> Objective:
    """An Objective as it is, a function f(x, ctx) -> (N,) wrapped (CallableObjective); InputError
    naming `name` and the expected forms otherwise."""
    if isinstance(objective, Objective):
        return objective
    if callable(objective) and not isinstance(objective, torch.nn.Module):
        return CallableObjective(objective)
    from choicegrad.errors import InputError

    raise InputError(name, [f"expected a choicegrad Objective (TableObjective for a fitted scorer; FrameObjective(f) "
                            "for a function of a DataFrame of labelled rows; ModuleObjective(net) for a torch module "
                            f"on one-hot rows) or a function f(x, ctx) -> (N,) scores; got {type(objective).__name__}"])


SCORE_CHUNK = 1 << 14
"""Rows per scorer call when many rows are scored: larger chunks spend more time on fresh memory
than they save in calls (320,000 rows of an 8-slot scorer: 2.1 s at 65,536 rows per chunk, 1.1 s at
16,384, 2 cores)."""


def score_rows(objective: Objective, rows: Tensor, ctx: Context, chunk: int = SCORE_CHUNK,
               grad: bool = False) -> tuple[Tensor, int]:
    """Scores of rows (B, M, S) long (or (B, M, S, V) float) for contexts ctx (len B) -> ((B, M), calls).

    The B * M rows are scored in chunks of at most `chunk` rows (one logical call); no gradient
    unless grad=True.
    """
    B, M = rows.shape[:2]
    flat = rows.reshape(B * M, *rows.shape[2:])
    owner = torch.arange(B, device=rows.device).repeat_interleave(M)
    outs = []
    with torch.set_grad_enabled(grad):
        for start in range(0, B * M, chunk):
            sl = slice(start, min(start + chunk, B * M))
            outs.append(objective(flat[sl], ctx.index(owner[sl])).float())
    scores = torch.cat(outs) if outs else torch.zeros(0, device=rows.device)
    return scores.reshape(B, M), B * M
