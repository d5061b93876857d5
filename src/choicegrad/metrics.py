"""Metrics: regression quality of a scorer (R^2, Spearman). Candidate quality against ground truth is
a benchmark metric: choicegrad.bench.metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd


def r2(y_true, y_pred) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot (nan when y_true is constant); computed on
    both divided by max|y_true|, so squares of scores near 1e300 or 1e-200 neither overflow nor vanish."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    top = float(np.abs(y_true).max()) if len(y_true) else 0.0
    if 0 < top < np.inf:
        y_true, y_pred = y_true / top, y_pred / top
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum())
    return float("nan") if ss_tot == 0 else 1.0 - float(((y_true - y_pred) ** 2).sum()) / ss_tot


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation: Pearson correlation of average ranks (ties share their mean rank)."""
    a = pd.Series(np.asarray(y_true, float)).rank().to_numpy()
    b = pd.Series(np.asarray(y_pred, float)).rank().to_numpy()
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def regression_report(y_true, y_pred, groups=None) -> dict[str, float | None]:
    """{'n', 'r2', 'spearman'} pooled, plus 'spearman_per_context' (mean over groups) when given. A
    metric that is undefined (a constant score, too few rows) is None, never NaN: it is written as
    JSON null and shown as n/a."""
    out = {"n": int(len(y_true)), "r2": r2(y_true, y_pred), "spearman": spearman(y_true, y_pred)}
    if groups is not None and len(np.unique(groups)) > 1:
        frame = pd.DataFrame({"g": groups, "t": y_true, "p": y_pred})
        per = [v for _, g in frame.groupby("g") if len(g) > 2 and np.isfinite(v := spearman(g.t, g.p))]
        out["spearman_per_context"] = float(np.mean(per)) if per else float("nan")
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


def metric_text(value: float | None, width: int = 0) -> str:
    """A metric for a table: 3 decimals, or n/a where it is undefined (None)."""
    return f"{'n/a' if value is None else f'{value:.3f}':>{width}}"
