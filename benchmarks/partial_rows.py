"""Training rows with missing features: keep them (the default, marginal: the mixture over their
completions; or the learned missing embedding), drop them, or have none missing (reference).

    OMP_NUM_THREADS=1 python benchmarks/partial_rows.py --generator --out runs/partial_rows.json
    python benchmarks/partial_rows.py --settings 3x8-600 --seeds 0

Truth (Truth): a Potts landscape (choicegrad.bench.tasks.potts: per-context fields, strong pairwise
couplings, `--coupling`) plus per-context couplings, contexts c0..c2. Per seed: `rows` random rows
(scores with the setting's noise), then a share `--partial` of them get `blanks` random features
emptied (the score stays the full row's). Settings: SETTINGS (slots x categories - rows [- blanks,
noise]). Each cell fits a scorer through the public path (load_table -> fit_scorer, default
ScorerFit but the seed and the missing treatment) on:

    complete   the same rows, nothing blanked (the reference: what the blanked cells cost)
    embedding  the partial rows kept, ScorerConfig(missing="embedding") (the learned missing embedding)
    dropped    the partial rows deleted
    marginal   the partial rows kept, ScorerConfig(missing="marginal") (the default)

and reads it against the truth over the whole space, per context (mean over contexts): Spearman of
the scorer's predictions, and the true score of the scorer's argmax, normalised (y - min) / (max -
min) (1 = the optimum). --generator also fits a generator (fit_table_generator, reinforce, short)
on the scorer and reads its top-1 (polish, K = 1) the same way. Prints a markdown table (mean ± std
over seeds) and writes every number as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from choicegrad import ScorerConfig, ScorerFit, fit_scorer, load_table
from choicegrad.bench.metrics import normalise
from choicegrad.bench.tasks.potts import PottsTask
from choicegrad.metrics import spearman
from choicegrad.training.contexts import TableContexts

TREATMENTS = ("complete", "embedding", "dropped", "marginal")


class Truth(PottsTask):
    """PottsTask (per-context fields h, shared couplings J) plus per-context couplings K_c of
    `context_coupling` times J's scale: score(c, x) = sum_s h[c, s, x_s] + sum_{s<t} (J + K_c)[s, t, x_s, x_t]."""

    def __init__(self, slots: int, vocab: int, contexts: int, coupling: float, context_coupling: float, seed: int):
        super().__init__(slots=slots, vocab=vocab, contexts=contexts, coupling=coupling, seed=seed)
        g = torch.Generator().manual_seed(seed + 10_000)
        scale = context_coupling * coupling / np.sqrt(slots)
        K = torch.randn(contexts, slots, slots, vocab, vocab, generator=g) * scale
        self.K = torch.triu(torch.ones(slots, slots), diagonal=1)[None, ..., None, None] * K

    def oracle(self, ctx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        s = torch.arange(self.slots)
        pair = self.K[ctx[:, None, None], s[:, None], s[None, :], rows[:, :, None], rows[:, None, :]].sum((1, 2))
        return super().oracle(ctx, rows) + pair


@dataclass
class Setting:
    name: str
    slots: int
    vocab: int
    rows: int
    blanks: int        # features emptied in each partial row
    noise: float = 0.0  # Gaussian noise on the recorded score, as a share of its standard deviation


SETTINGS = {s.name: s for s in (
    Setting("3x8-3000", 3, 8, 3000, 1),
    Setting("3x8-600", 3, 8, 600, 1),
    Setting("3x8-600-2blank", 3, 8, 600, 2),
    Setting("5x8-1500-2blank", 5, 8, 1500, 2),
    Setting("3x8-600-noisy", 3, 8, 600, 1, noise=0.3),
)}


def make_table(task: PottsTask, s: Setting, partial: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """(the full table (ctx, s0.., y; y with the setting's noise), (N,) bool: the rows to blank)."""
    frame = task.table(n=s.rows, seed=seed)
    rng = np.random.default_rng(seed)
    chosen = rng.random(s.rows) < partial
    frame["y"] += s.noise * frame["y"].std() * rng.standard_normal(s.rows)
    return frame, chosen


def blank(frame: pd.DataFrame, chosen: np.ndarray, s: Setting, seed: int) -> pd.DataFrame:
    """frame with `s.blanks` distinct random features emptied in each chosen row."""
    rng = np.random.default_rng(seed + 1)
    out = frame.copy()
    feats = [f"s{i}" for i in range(s.slots)]
    for r in np.flatnonzero(chosen):
        for f in rng.choice(feats, size=s.blanks, replace=False):
            out.at[r, f] = None
    return out


def truth(task: PottsTask, scorer) -> dict[str, float]:
    """Spearman (mean over contexts) and the normalised true score of the scorer's argmax, over every row."""
    every = task.all_rows()                                              # (V^S, S) in category order
    letters = [chr(ord("a") + v) for v in range(task.vocab)]
    # the scorer's categories are the labels' sorted order: a..h is category order, so rows map 1:1
    assert all(slot.categories == letters for slot in scorer.space.slots)
    rho, top1 = [], []
    for c in range(task.contexts):
        true = task.oracle(torch.full((len(every),), c), every).double()
        ctx = pd.DataFrame({"ctx": [f"c{c}"] * len(every)})
        cat, num = scorer.context.encode(ctx)
        pred = scorer.predict(every, cat, num)
        rho.append(spearman(true.numpy(), pred.numpy()))
        stats = {"min": true.min()[None], "max": true.max()[None]}
        top1.append(float(normalise(true[pred.argmax()][None], stats)[0]))
    return {"spearman": float(np.mean(rho)), "argmax": float(np.mean(top1))}


def generator_top1(task: PottsTask, scorer, data, seed: int, steps: int) -> float:
    """Normalised true score of the top-1 row (the default decoder, polish) of a generator fitted
    briefly on the scorer (fit_table_generator: warm start on the data's best rows), mean over contexts."""
    from choicegrad.decoding import decode
    from choicegrad.generators import GeneratorConfig
    from choicegrad.generators.objective import TableObjective
    from choicegrad.training.loop import GeneratorFit, fit_table_generator

    res = fit_table_generator(scorer, data, GeneratorConfig(), GeneratorFit(method="reinforce", steps=steps, seed=seed),
                              progress=False)
    ctx = TableContexts(data).contexts
    cands = decode("polish", res.generator.eval(), TableObjective(scorer), ctx, 1,
                   generator=torch.Generator().manual_seed(seed))
    every, names = task.all_rows(), scorer.context.categorical[0].categories
    out = []
    for b in range(len(ctx)):
        c = int(names[int(ctx.cat[b, 0])][1:])                           # "c2" -> 2
        true = task.oracle(torch.full((len(every),), c), every).double()
        got = task.oracle(torch.tensor([c]), cands.rows[b, :1].cpu()).double()
        out.append(float(normalise(got, {"min": true.min()[None], "max": true.max()[None]})[0]))
    return float(np.mean(out))


def run_cell(task, s: Setting, treatment: str, full: pd.DataFrame, chosen: np.ndarray, seed: int,
             args) -> dict[str, float]:
    frame = full if treatment == "complete" else blank(full, chosen, s, seed)
    if treatment == "dropped":
        frame = frame[~chosen].reset_index(drop=True)
    missing = "embedding" if treatment == "embedding" else "marginal"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        data = load_table(frame, "s?", "y", "ctx")
    start = time.perf_counter()
    patience = {} if args.patience is None else {"patience": args.patience}
    res = fit_scorer(data, ScorerFit(model=ScorerConfig(missing=missing), seed=seed, **patience), progress=False)
    out = {"rows": len(frame), "partial": int((data.rows < 0).any(1).sum()), "seconds": time.perf_counter() - start,
           "epochs": len(res.history), **truth(task, res.scorer)}
    if args.generator:
        out["generator_top1"] = generator_top1(task, res.scorer, data, seed, args.generator_steps)
    return out


def summarise(cells: list[dict], metrics: list[str]) -> str:
    lines = ["| setting | treatment | rows (partial) | " + " | ".join(metrics) + " | fit s |",
             "|---|---|---|" + "---|" * len(metrics) + "---|"]
    df = pd.DataFrame(cells)
    for (setting, treatment), g in df.groupby(["setting", "treatment"], sort=False):
        vals = [f"{g[m].mean():.3f} ± {g[m].std(ddof=0):.3f}" for m in metrics]
        lines.append(f"| {setting} | {treatment} | {g['rows'].mean():,.0f} ({g['partial'].mean():,.0f}) | "
                     + " | ".join(vals) + f" | {g['seconds'].mean():.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help=f"comma-separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--treatments", default=",".join(TREATMENTS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--partial", type=float, default=0.4, help="share of rows with blanked features")
    ap.add_argument("--coupling", type=float, default=2.0, help="Potts pairwise strength (PottsTask)")
    ap.add_argument("--context-coupling", type=float, default=0.5,
                    help="per-context couplings, as a multiple of the shared couplings' scale")
    ap.add_argument("--contexts", type=int, default=3)
    ap.add_argument("--generator", action="store_true", help="also a short generator fit and its top-1")
    ap.add_argument("--generator-steps", type=int, default=200)
    ap.add_argument("--patience", type=int, default=None, help="ScorerFit.patience (default: the library's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write every cell as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cells = []
    for name in args.settings.split(","):
        s = SETTINGS[name]
        for seed in (int(x) for x in args.seeds.split(",")):
            task = Truth(s.slots, s.vocab, args.contexts, args.coupling, args.context_coupling, seed)
            full, chosen = make_table(task, s, args.partial, seed)
            for treatment in args.treatments.split(","):
                cell = {"setting": name, "treatment": treatment, "seed": seed,
                        **run_cell(task, s, treatment, full, chosen, seed, args)}
                cells.append(cell)
                print(json.dumps(cell), flush=True)
    metrics = ["spearman", "argmax"] + (["generator_top1"] if args.generator else [])
    table = summarise(cells, metrics)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: str(v) for k, v in vars(args).items()}
        args.out.write_text(json.dumps({"args": settings, "machine": platform.platform(), "torch": torch.__version__,
                                        "cells": cells, "table": table}, indent=1))


if __name__ == "__main__":
    main()
