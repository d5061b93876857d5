"""`choicegrad demo`: the main job on an embedded default, for a first run after `make demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

SHARED_PARD3 = Path("../shared/data/pard3.parquet")


def run_demo(out: Path, data: Path | None = None, echo: Callable[[str], None] = print) -> dict:
    """Fit a scorer on pard3 (rows below each toxin's median) or on a built-in Potts table; print metrics."""
    from .data import load_table, split_below_quantile
    from .tasks import PottsTask
    from .train import ScorerFit, fit_scorer

    data = data or (SHARED_PARD3 if SHARED_PARD3.is_file() else None)
    if data is not None:
        echo(f"demo: {data} (features s0-s2, context toxin); scorer fitted on rows below each toxin's median")
        table = load_table(data, "s0,s1,s2", "y", "toxin")
    else:
        echo("demo: ../shared/data/pard3.parquet not found; using a built-in synthetic Potts table")
        table = load_table(PottsTask(seed=0).table(n=3000, seed=1), "s?", "y", "ctx")
    below, upper = split_below_quantile(table, 0.5)
    result = fit_scorer(table.subset(below), ScorerFit(seed=0), extra_eval={"upper": table.subset(upper)})
    result.scorer.save(out)
    echo(f"fitted on {len(below)} rows in {result.seconds:.1f} s; scorer written to {out}/")
    echo(f"{'held-out set':<14}{'rows':>7}{'R^2':>8}{'Spearman':>10}")
    for name, m in result.metrics.items():
        echo(f"{name:<14}{m['n']:>7}{m['r2']:>8.3f}{m['spearman']:>10.3f}")
    return result.metrics
