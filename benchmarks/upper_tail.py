"""The suite's tfbind8 and gb1 with a scorer fitted for the upper tail: does the max of 128 pass the
scorer ceiling when the scorer keeps training past its best validation epoch?

`benchmarks/tfbind8_scorers.py` finds that keeping the weights of the best validation epoch (the
validation rows lie below the median, as the training rows do) and a smooth activation hold the
scorer's own top 128 down on tfbind8. This runs the standard suite's tasks again (their training
rows, budgets and K; choicegrad.bench.harness) once with the suite's scorer and once with the same
scorer fitted with --fit's ScorerFit settings, and prints the headline (max of 128), median and
top-1 per method, mean over seeds, with the ratio of the default pipeline to the best peer.

    python benchmarks/upper_tail.py                                         # about 8 minutes
    python benchmarks/upper_tail.py --tasks gb1 --seeds 0 --fit '{"keep": "last", "epochs": 20}'
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from choicegrad.bench.harness import DEFAULT_PIPELINE, SPECS, run_benchmark
from choicegrad.bench.report import machine_line, summarise

PEERS = ("random", "anneal", "genetic", "gradient-ascent")
METHODS = (*PEERS, "exhaustive", DEFAULT_PIPELINE, "autoregressive/soft/polish")
UPPER_TAIL = {"keep": "last", "epochs": 20, "model": {"activation": "relu"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/upper-tail")
    ap.add_argument("--tasks", default="tfbind8,gb1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fit", default=json.dumps(UPPER_TAIL), help="ScorerFit settings of the second scorer (JSON)")
    ap.add_argument("--more-methods", default="", help="comma-separated, e.g. autoregressive/reinforce/portfolio "
                    "with an ensemble ('ensemble': 5 in --fit; the suite's scorer is one member)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = json.loads(args.fit)
    print(f"{machine_line()}; seeds {args.seeds}; upper-tail scorer: {json.dumps(settings)}\n")
    print("| task | scorer | method | max | median | top1 | ratio to the best peer |")
    print("|:---|:---|:---|---:|---:|---:|---:|")
    for task in args.tasks.split(","):
        for label, extra in (("suite", {}), ("upper tail", settings)):
            spec = replace(SPECS[task], scorer_fit=extra)
            methods = (*METHODS, *[m for m in args.more_methods.split(",") if m])
            frame = run_benchmark([task], methods, seeds, f"{args.out}/{task}-{'suite' if not extra else 'tail'}",
                                  specs={task: spec}, report=False, progress=False, log=lambda m: None)
            for _, r in summarise(frame).iterrows():
                print(f"| {task} | {label} | {r['method']} | {r['max_mean']:.3f} | {r['median_mean']:.3f} | "
                      f"{r['top1_mean']:.3f} | {r['ratio_to_best_peer']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
