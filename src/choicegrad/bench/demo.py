"""`choicegrad demo`: the main job end to end on an embedded default, for a first run after `make demo`.

1. fit a scorer on the rows below each context's median score (the offline-design protocol),
2. fit a generator guided by that scorer (`choicegrad fit` does the same),
3. generate the top rows per context (`choicegrad generate`), and
4. look their TRUE scores up in the full landscape, which the scorer never saw above the median.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from choicegrad.bench.tasks import PottsTask
from choicegrad.bench.tasks.registry import SHARED_DATA_DIR
from choicegrad.io import read_table
from choicegrad.metrics import metric_text
from choicegrad.run import Run, TableSpec
from choicegrad.scorer.fit import ScorerFit
from choicegrad.training.loop import GeneratorFit

SHARED_PARD3 = SHARED_DATA_DIR / "pard3.parquet"
TOP_K = 5


def _potts_landscape():
    """Built-in fallback: a Potts table (training) and its full landscape (truth)."""
    task = PottsTask(seed=0)
    rows = task.all_rows()
    frames = []
    for c in range(task.contexts):
        y = task.oracle(torch.full((len(rows),), c), rows).numpy()
        f = pd.DataFrame({f"s{s}": [chr(ord("a") + v) for v in rows[:, s].tolist()] for s in range(task.slots)})
        f.insert(0, "ctx", f"c{c}")
        f["y"] = y
        frames.append(f)
    return task.table(n=3000, seed=1), pd.concat(frames, ignore_index=True), [f"s{s}" for s in range(task.slots)], "ctx"


def run_demo(out: Path, data: Path | None = None, echo: Callable[[str], None] = print) -> dict:
    """Fit scorer + generator on pard3 (or a built-in Potts table), generate, print true scores."""
    data = data or (SHARED_PARD3 if SHARED_PARD3.is_file() else None)
    if data is not None:
        echo(f"demo: {data} (features s0-s2, context toxin); scorer fitted on rows below each toxin's median")
        full = read_table(data)
        table, features, context = full, ["s0", "s1", "s2"], "toxin"
    else:
        echo(f"demo: {SHARED_PARD3} not found; using a built-in synthetic Potts table")
        table, full, features, context = _potts_landscape()

    def show(metrics: dict) -> None:
        echo(f"{'held-out set':<14}{'rows':>7}{'R^2':>8}{'Spearman':>10}")
        for name, m in metrics.items():
            echo(f"{name:<14}{m['n']:>7}{metric_text(m['r2'], 8)}{metric_text(m['spearman'], 10)}")

    run = Run.fit(table, out, TableSpec(features=features, score="y", context=context, train_quantile=0.5),
                  scorer_fit=ScorerFit(epochs=40), generator_fit=GeneratorFit(steps=400, beta=0.0),
                  max_minutes=1.5, overwrite=True, echo=echo, progress=False, on_scorer=show,
                  force_generator=True)   # the demo shows the generator; fit alone would enumerate this space
    echo(f"(the demo forces the generator to show it: with {run.config['space_rows']:,} rows per {context}, `choicegrad "
         "fit` alone would enumerate this space instead, and `generate` return the exact top-K)")
    found = run.generate(k=TOP_K, decoder="polish")
    scorer_calls = found.attrs["scorer_calls"]
    keys = [context, *features]
    truth = full[keys + ["y"]].astype({c: str for c in keys})
    found = found.astype({c: str for c in keys}).merge(truth, on=keys, how="left")
    stats = truth.groupby(context)["y"].agg(["min", "max", "median"])
    found["normalised"] = (found["y"] - found[context].map(stats["min"])) / (
        found[context].map(stats["max"]) - found[context].map(stats["min"]))
    echo(f"\ngenerated with `choicegrad generate {out} --top-k {TOP_K}` (decoder polish, {scorer_calls} scorer "
         f"calls); true = lookup in the full landscape, normalised = (y - min) / (max - min) per {context}")
    summary = {}
    for value, group in found.groupby(context, sort=False):
        best_train = float(table[table[context].astype(str) == value]["y"].quantile(0.5))
        echo(f"\n{context} = {value}: landscape max {stats.loc[value, 'max']:.3f}, median {stats.loc[value, 'median']:.3f}; "
             f"the scorer saw only rows below {best_train:.3f}")
        echo(f"  {'rank':>4}  {'row':<12}{'predicted':>10}{'true':>9}{'normalised':>12}")
        for _, r in group.iterrows():
            echo(f"  {r['rank']:>4}  {' '.join(r[f] for f in features):<12}{r['score']:>10.3f}{r['y']:>9.3f}{r['normalised']:>12.3f}")
        summary[value] = {"top1": float(group["normalised"].iloc[0]), "max": float(group["normalised"].max())}
    return {"scorer": run.config["scorer_metrics"], "generated": summary}
