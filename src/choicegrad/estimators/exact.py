"""Exact expectations and gradients by enumerating all V**S rows (tiny spaces only); used by the tests
and the benchmark to check estimators against ground truth.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from choicegrad.estimators.base import MASK_VALUE, ScoreFn, prepare

MAX_ROWS = 2_000_000


def enumerate_rows(num_slots: int, vocab: int, device=None) -> Tensor:
    """All rows of the space: (V**S, S) long, lexicographic order (last slot fastest)."""
    if vocab ** num_slots > MAX_ROWS:
        raise ValueError(f"V**S = {vocab}**{num_slots} rows is too many to enumerate (max {MAX_ROWS})")
    grids = torch.meshgrid(*[torch.arange(vocab, device=device)] * num_slots, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], -1)


def exact_expectation(logits: Tensor, score_fn: ScoreFn, *, mask: Optional[Tensor] = None,
                      fixed: Optional[Tensor] = None, rows_per_call: int = 1 << 16) -> tuple[Tensor, Tensor]:
    """E_{x ~ prod_s softmax(logits_s)}[f(x)] per context and its exact gradient w.r.t. logits.

    logits (B, S, V) -> (value (B,), grad (B, S, V)). Masked categories have probability 0, fixed
    slots are deterministic (zero gradient). f is evaluated once per row, in chunks of rows_per_call.
    """
    leaf = logits.detach().float().requires_grad_(True)
    prep = prepare(leaf, mask, fixed)
    B, S, V = prep.shape
    theta = prep.theta
    if not bool(prep.free.all()):
        pinned = torch.where(torch.nn.functional.one_hot(prep.fixed.clamp(min=0), V).bool(), 0.0, MASK_VALUE)
        theta = torch.where(prep.free[..., None], theta, pinned)
    rows = enumerate_rows(S, V, device=logits.device)                   # (R, S)
    with torch.no_grad():
        f = torch.cat([score_fn(torch.nn.functional.one_hot(chunk, V).float()).float()
                       for chunk in rows.split(rows_per_call)])           # (R,)
    logp = torch.log_softmax(theta, -1)                                   # (B, S, V)
    row_logp = logp[:, torch.arange(S, device=logits.device), rows].sum(-1)   # (B, R)
    value = (row_logp.exp() * f).sum(-1)
    (grad,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), grad
