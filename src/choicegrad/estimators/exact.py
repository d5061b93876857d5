"""Exact expectations and gradients by enumerating all V**S rows (tiny spaces only); used by the tests
and the benchmark to check estimators against ground truth.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from choicegrad.estimators.base import ScoreFn
from choicegrad.estimators.policy import LogitsPolicy

MAX_ROWS = 2_000_000


def enumerate_rows(num_slots: int, vocab: int, device=None) -> Tensor:
    """All rows of the space: (V**S, S) long, lexicographic order (last slot fastest)."""
    if vocab ** num_slots > MAX_ROWS:
        raise ValueError(f"V**S = {vocab}**{num_slots} rows is too many to enumerate (max {MAX_ROWS})")
    grids = torch.meshgrid(*[torch.arange(vocab, device=device)] * num_slots, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], -1)


def exact_objective(policy, score_fn: ScoreFn, *, rows_per_call: int = 1 << 16) -> Tensor:
    """E_{x ~ policy}[f(x)] per context by enumerating every row: (B,), differentiable in whatever the
    policy's log-probabilities depend on (logits, or a generator's parameters).

    Rows that break a fixed slot or use a masked category have probability 0. score_fn sees the rows
    context-major in chunks of at most rows_per_call ((N, S, V) one-hot, as for an estimator).
    """
    B, S, V = policy.mask.shape
    rows = enumerate_rows(S, V, device=policy.mask.device)              # (R, S)
    R = rows.shape[0]
    every = rows.unsqueeze(0).expand(B, R, S)
    flat = every.reshape(B * R, S)
    with torch.no_grad():
        f = torch.cat([score_fn(F.one_hot(chunk, V).float()).float()
                       for chunk in flat.split(rows_per_call)]).reshape(B, R)
    ok = policy.mask.gather(-1, every.transpose(1, 2)).transpose(1, 2).all(-1)            # (B, R)
    ok &= ((policy.fixed[:, None, :] < 0) | (every == policy.fixed[:, None, :])).all(-1)
    prob = torch.where(ok, policy.log_prob(every).exp(), torch.zeros(B, R, device=f.device))
    return (prob * f).sum(-1)


def exact_expectation(logits: Tensor, score_fn: ScoreFn, *, mask: Optional[Tensor] = None,
                      fixed: Optional[Tensor] = None, rows_per_call: int = 1 << 16) -> tuple[Tensor, Tensor]:
    """E_{x ~ prod_s softmax(logits_s)}[f(x)] per context and its exact gradient w.r.t. logits.

    logits (B, S, V) -> (value (B,), grad (B, S, V)). Masked categories have probability 0, fixed
    slots are deterministic (zero gradient). f is evaluated once per row, in chunks of rows_per_call.
    """
    leaf = logits.detach().float().requires_grad_(True)
    value = exact_objective(LogitsPolicy.from_logits(leaf, mask, fixed), score_fn, rows_per_call=rows_per_call)
    (grad,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), grad
