"""Benchmark metrics: quality of candidates against a task's ground truth (normalised score, gap closed,
optimum hits), per context. stats: dict of (B,) tensors min, max, mean over every row of each context."""

from __future__ import annotations

import torch
from torch import Tensor


def _per_row(stat: Tensor, values: Tensor) -> Tensor:
    """(B,) stat broadcast against values (B,) or (B, M)."""
    return stat.view(-1, *([1] * (values.dim() - 1))).to(values.device, values.dtype)


def normalise(values: Tensor, stats: dict[str, Tensor]) -> Tensor:
    """(y - min) / (max - min) per context: values (B,) or (B, M), stats of (B,) -> same shape; 1 = optimum."""
    lo, hi = _per_row(stats["min"], values), _per_row(stats["max"], values)
    return (values - lo) / (hi - lo).clamp(min=1e-12)


def gap_closed(values: Tensor, stats: dict[str, Tensor]) -> Tensor:
    """(y - mean) / (max - mean) per context: values (B,) or (B, M) -> same shape; 0 = an average row."""
    mean, hi = _per_row(stats["mean"], values), _per_row(stats["max"], values)
    return (values - mean) / (hi - mean).clamp(min=1e-12)


def candidate_report(true, valid, *, stats, scorer=None, scorer_stats=None, new=None, tol: float = 1e-6
                     ) -> dict[str, float]:
    """Quality of K candidates per context, candidates ordered best first by the scorer.

    true (B, K): ground-truth scores; valid (B, K) bool; stats: dict of (B,) tensors min, max, mean
    of the ground truth over every row of each context; scorer (B, K) and scorer_stats (mean, max):
    the same on the scorer (for the gap closed and optimum hits on the scorer); new (B, K) bool: the
    candidate is not a training row (None: not defined). Hits compare values (ties count as hits).
    Returns means over contexts: top1, max, median (normalised), gap_oracle, gap_scorer, hit_oracle,
    hit_scorer, distinct (valid candidates), new (share of valid candidates).
    """
    nan = torch.full_like(true, float("nan"))
    norm = torch.where(valid, normalise(true, stats), nan)
    top1 = norm[:, 0]
    span = (stats["max"] - stats["min"]).clamp(min=1e-12)
    out = {
        "top1": float(top1.mean()),
        "max": float(torch.where(valid, norm, torch.full_like(norm, -torch.inf)).max(1).values.mean()),
        "median": float(torch.nanquantile(norm, 0.5, dim=1).mean()),  # mean of the middle two when even
        "gap_oracle": float(gap_closed(true[:, :1], stats)[:, 0].mean()),
        "hit_oracle": float((true[:, 0] >= stats["max"] - tol * span).float().mean()),
        "distinct": float(valid.sum(1).float().mean()),
        "new": float("nan") if new is None else float((new & valid).sum() / valid.sum().clamp(min=1)),
        "gap_scorer": float("nan"), "hit_scorer": float("nan"),
    }
    if scorer is not None and scorer_stats is not None:
        s_span = (scorer_stats["max"] - scorer_stats["mean"]).abs().clamp(min=1e-12)
        out["gap_scorer"] = float(gap_closed(scorer[:, :1], scorer_stats)[:, 0].mean())
        out["hit_scorer"] = float((scorer[:, 0] >= scorer_stats["max"] - tol * s_span).float().mean())
    return out
