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


class TableObjective:
    """A fitted Scorer as objective: scorer(x, ctx.cat, ctx.num, beta=beta) in its working units, the
    score's own units unless float32 cannot hold them (then standardised; scorer.to_score converts).

    beta: ensemble pessimism (mean - beta * std over members); None uses the scorer's own beta.
    `scale` (the scorer's score std, in working units) lets training code work in unit-free terms.
    """

    def __init__(self, scorer, beta: Optional[float] = None):
        self.scorer, self.beta = scorer, beta
        self.scale = float(scorer.y_std)
        self.calls = 0

    def __call__(self, x: Tensor, ctx: TableContext) -> Tensor:
        self.calls += int(x.shape[0])
        return self.scorer(x, ctx.cat, ctx.num, beta=self.beta)


class ItemObjective:
    """Reward of selected item vectors: reward(selected (N, S, D), ctx) -> (N,), higher is better.

    selected = x @ ctx.items with x the (N, S, N_items) one-hot or relaxed selection, so gradients of
    a differentiable reward reach the selection.
    """

    def __init__(self, reward: Callable[[Tensor, ItemContext], Tensor], scale: float = 1.0):
        self.reward, self.scale = reward, float(scale)
        self.calls = 0

    def __call__(self, x: Tensor, ctx: ItemContext) -> Tensor:
        self.calls += int(x.shape[0])
        if not x.is_floating_point():
            x = F.one_hot(x, ctx.items.shape[1]).to(ctx.items.dtype)
        selected = torch.einsum("bsn,bnd->bsd", x.to(ctx.items.dtype), ctx.items)
        return self.reward(selected, ctx)


Objective = Callable[[Tensor, Context], Tensor]


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
