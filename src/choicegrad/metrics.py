"""Metrics: regression quality of a scorer (R^2, Spearman) and quality of candidates against ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def r2(y_true, y_pred) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot (nan when y_true is constant)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum())
    return float("nan") if ss_tot == 0 else 1.0 - float(((y_true - y_pred) ** 2).sum()) / ss_tot


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation: Pearson correlation of average ranks (ties share their mean rank)."""
    a = pd.Series(np.asarray(y_true, float)).rank().to_numpy()
    b = pd.Series(np.asarray(y_pred, float)).rank().to_numpy()
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def regression_report(y_true, y_pred, groups=None) -> dict[str, float]:
    """{'n', 'r2', 'spearman'} pooled, plus 'spearman_per_context' (mean over groups) when given."""
    out = {"n": int(len(y_true)), "r2": r2(y_true, y_pred), "spearman": spearman(y_true, y_pred)}
    if groups is not None and len(np.unique(groups)) > 1:
        frame = pd.DataFrame({"g": groups, "t": y_true, "p": y_pred})
        per = [spearman(g.t, g.p) for _, g in frame.groupby("g") if len(g) > 2]
        out["spearman_per_context"] = float(np.nanmean(per))
    return out


def normalised(values, lo, hi):
    """(y - min) / (max - min) per context: values (B, K), lo/hi (B,) -> (B, K); 1 = the optimum."""
    return (values - lo[:, None]) / (hi - lo).clamp(min=1e-12)[:, None]


def gap_closed(values, mean, best):
    """(y - mean) / (y* - mean) per context: values (B, K), mean/best (B,) -> (B, K); 0 = a random row."""
    return (values - mean[:, None]) / (best - mean).clamp(min=1e-12)[:, None]


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
    norm = torch.where(valid, normalised(true, stats["min"], stats["max"]), nan)
    top1 = norm[:, 0]
    span = (stats["max"] - stats["min"]).clamp(min=1e-12)
    out = {
        "top1": float(top1.mean()),
        "max": float(torch.where(valid, norm, torch.full_like(norm, -torch.inf)).max(1).values.mean()),
        "median": float(torch.nanquantile(norm, 0.5, dim=1).mean()),  # mean of the middle two when even
        "gap_oracle": float(gap_closed(true[:, :1], stats["mean"], stats["max"])[:, 0].mean()),
        "hit_oracle": float((true[:, 0] >= stats["max"] - tol * span).float().mean()),
        "distinct": float(valid.sum(1).float().mean()),
        "new": float("nan") if new is None else float((new & valid).sum() / valid.sum().clamp(min=1)),
        "gap_scorer": float("nan"), "hit_scorer": float("nan"),
    }
    if scorer is not None and scorer_stats is not None:
        s_span = (scorer_stats["max"] - scorer_stats["mean"]).abs().clamp(min=1e-12)
        out["gap_scorer"] = float(gap_closed(scorer[:, :1], scorer_stats["mean"], scorer_stats["max"])[:, 0].mean())
        out["hit_scorer"] = float((scorer[:, 0] >= scorer_stats["max"] - tol * s_span).float().mean())
    return out
