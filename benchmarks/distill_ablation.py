"""Amortised search on and off: the default generator trained with GeneratorFit(distill=W) for each W.

    python benchmarks/distill_ablation.py ehrlich 0,1
    python benchmarks/distill_ablation.py potts-ctx 0,1 1.5       # minutes of training per run

Builds the benchmark task (choicegrad.bench.harness: its scorer, cached in --cache, and its evaluation
contexts), trains autoregressive/reinforce once per weight (seed 0), then prints per weight the
generator alone at 0, 16 and 128 calls and polish at the task's budget (its candidate count), each as
ground-truth gap closed / gap closed on the scorer (items: normalised top-1), and polish's headline
metric (e.g. gb1's max of 128) and median.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from choicegrad.bench.budgets import generator_only
from choicegrad.bench.harness import build_problem, evaluate
from choicegrad.decoding import decode
from choicegrad.training.loop import GeneratorFit, fit_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("weights", help="comma-separated distill weights, e.g. 0,1; 'default' = fit's default")
    ap.add_argument("minutes", nargs="?", type=float, default=None, help="training minutes (default: the task's)")
    ap.add_argument("--cache", type=Path, default=Path("runs/distill/scorers"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="generator training steps (default: the task's)")
    ap.add_argument("--temperatures", default="1", help="comma-separated draw temperatures for polish")
    args = ap.parse_args()
    p = build_problem(args.task, None, args.cache)
    ref = evaluate(p, p.exhaustive)
    print(args.task, "built; exhaustive", {k: round(v, 3) for k, v in ref.items() if k in ("gap_oracle", "gap_scorer", "top1")},
          flush=True)
    metric = "top1" if p.spec.kind == "items" else "gap_oracle"
    for w in (None if w == "default" else float(w) for w in args.weights.split(",")):
        torch.manual_seed(args.seed)
        gen = p.new_generator("autoregressive")
        fit = GeneratorFit(method="reinforce", steps=args.steps or p.spec.steps, seed=args.seed,
                           max_minutes=args.minutes or p.spec.train_minutes, distill=w)
        res = fit_generator(gen, p.objective, p.contexts, fit, progress=False)
        out = [f"distill {w} seed {args.seed}: {res.seconds:.0f}s {res.history[-1]['step']} steps "
               f"calls {res.scorer_calls / 1e6:.2f}M"]
        for b in (0, 16, 128):
            cands, _ = generator_only(p, res.generator, b, args.seed)
            r = evaluate(p, cands)
            out.append(f"g{b} {r[metric]:.3f}/{r['gap_scorer']:.3f}")
        for t in (float(t) for t in args.temperatures.split(",")):
            cands = decode("polish", res.generator, p.objective, p.ctx, p.spec.k, budget=p.spec.budget,
                           temperature=t, generator=torch.Generator().manual_seed(args.seed))
            r = evaluate(p, cands)
            out.append(f"polish{p.spec.budget}@T{t:g} {r[metric]:.3f}/{r['gap_scorer']:.3f}, its {p.spec.k} rows' "
                       f"{p.spec.headline} {r[p.spec.headline]:.3f}, median {r['median']:.3f}")
        print(", ".join(out), flush=True)


if __name__ == "__main__":
    main()
