"""gb1 with a pessimistic ensemble scorer: does mean - beta * std keep search away from the scorer's
false optimum?

The standard suite fits one scorer on gb1's rows below the median; its global optimum is a row whose
true score is low, so the better a method searches the scorer, the worse its candidates are in truth.
This runs the gb1 task of the suite again with a K-member ensemble scorer (the objective every method
searches is mean - beta * std over members), for each beta given, and prints the summary: headline
(max of 128), median, top-1 and the scorer-optimum hits per method, mean over seeds.

Usage: python benchmarks/gb1_pessimism.py [--out runs/gb1-pessimism] [--members 4] [--betas 0,1]
       [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from choicegrad.bench.harness import DEFAULT_PIPELINE, SPECS, run_benchmark
from choicegrad.bench.report import summarise

METHODS = ("random", "anneal", "genetic", "gradient-ascent", "exhaustive", DEFAULT_PIPELINE,
           "autoregressive/soft/polish", "factorized/st-gumbel/polish")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gb1-pessimism")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--betas", default="0,1")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| scorer | method | max | median | top1 | hit_scorer | ratio to best peer |")
    print("|:---|:---|---:|---:|---:|---:|---:|")
    for beta in (float(b) for b in args.betas.split(",")):
        spec = replace(SPECS["gb1"], scorer_ensemble=args.members, scorer_beta=beta)
        frame = run_benchmark(["gb1"], METHODS, seeds, f"{args.out}/beta{beta:g}", specs={"gb1": spec},
                              report=False, progress=False, log=lambda m: None)
        for _, r in summarise(frame).iterrows():
            print(f"| {args.members} members, beta {beta:g} | {r['method']} | {r['max_mean']:.3f} | {r['median_mean']:.3f} | "
                  f"{r['top1_mean']:.3f} | {r['hit_scorer_mean']:.3f} | {r['ratio_to_best_peer']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
