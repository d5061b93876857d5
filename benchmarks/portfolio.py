"""Portfolio, slices and min-distance decoding against polish for max-of-K on the real landscapes, with a scorer ensemble.

    python benchmarks/portfolio.py                                  # tfbind8 and gb1, 3 seeds, 5 members (about 25 minutes; 10 with the scorers cached)
    python benchmarks/portfolio.py --tasks gb1 --seeds 0 --members 3 --out runs/portfolio
    python benchmarks/portfolio.py --fit '{"keep": "last", "epochs": 20, "model": {"activation": "relu"}}' --out runs/portfolio-upper
    python benchmarks/portfolio.py --members 1 --out runs/spread     # the suite's single scorer: polish against min_distance 2

Each task is the benchmark's (choicegrad.bench.harness: its training rows below each context's
median, its budget of scorer calls per context, K = 128 proposals judged by the ground truth), with
the scorer fitted as an ensemble of --members members (mean of the members is the objective). Per
seed the default pipeline's generator (autoregressive/reinforce) is trained once and decoded by

- polish: the default decoder, the K best rows by the ensemble's mean it finds;
- portfolio: the same search and calls, then, from the 8K best distinct rows it scored, the K rows
  that maximise the expected best over draws from the ensemble's spread (choicegrad.decoding.portfolio);
- slices: the same search and calls, then K / E rows per member, each member's own best among the
  rows the search scored, in turn (choicegrad.decoding.portfolio.slices);
- polish, min_distance D (for each D of --min-distances): the same search and calls, then the K best
  rows it scored that differ pairwise in at least D slots (`generate --min-distance D`);

beside references that enumerate the scorer (every row of every context, not under the budget): the
mean's top K, the portfolio chosen from the mean's top --pool rows, and the slices of every row
(`decode("slices", None, ...)`, what `choicegrad generate` does for an enumerated run). --fit: more
ScorerFit settings for the members (the task's spec.scorer_fit), e.g. the upper-tail settings of
docs/choosing.md. Figures: the max, median
and top-1 of the K rows' normalised truth (mean over contexts), for tfbind8 also SIX6's max alone,
and how often the portfolio's expected best under the ensemble beats the mean's top K (its own aim).
One torch thread. Prints a markdown table per task and writes every figure to OUT/portfolio.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from choicegrad.bench.harness import SPECS, build_problem, evaluate, parse_method, train_pipeline  # noqa: E402
from choicegrad.bench.metrics import normalise  # noqa: E402
from choicegrad.bench.report import machine_line  # noqa: E402
from choicegrad.decoding import Candidates, decode  # noqa: E402
from choicegrad.decoding.decoders import exhaustive  # noqa: E402
from choicegrad.decoding.portfolio import (PORTFOLIO_HYPOTHESES, choose, draws, expected_max, hypotheses,  # noqa: E402
                                          member_grid)


def per_context_max(problem, rows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) the best normalised truth among each context's valid rows (B, K, S)."""
    norm = normalise(problem.truth(rows.clamp(min=0)), problem.stats)
    return norm.masked_fill(~valid, float("-inf")).amax(1)


def aim(problem, rows: torch.Tensor, valid: torch.Tensor, rng_seed: int) -> torch.Tensor:
    """(B,) the expected best of rows (B, K, S) over 256 draws of the ensemble (the portfolio's aim)."""
    members, _ = member_grid(problem.objective, rows, problem.ctx, valid, 1 << 16)
    values = hypotheses(members, draws(PORTFOLIO_HYPOTHESES, members.shape[-1], torch.Generator().manual_seed(rng_seed)))
    K = rows.shape[1]
    every = torch.arange(K).expand(len(rows), K)
    return expected_max(values, every, valid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="tfbind8,gb1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--pool", type=int, default=1024, help="the enumerated reference's pool: the mean's top rows")
    ap.add_argument("--out", type=Path, default=Path("runs/portfolio"))
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--fit", default="{}", help="more ScorerFit settings of the members (JSON)")
    ap.add_argument("--min-distances", default="2", help="polish with these min_distance values too ('' for none)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_line(), "members": args.members, "fit": json.loads(args.fit), "tasks": {}}
    method = parse_method("autoregressive/reinforce/polish")
    for name in args.tasks.split(","):
        spec = dataclasses.replace(SPECS[name], scorer_ensemble=args.members,
                                   scorer_fit={**SPECS[name].scorer_fit, **json.loads(args.fit)})
        start = time.perf_counter()
        problem = build_problem(name, args.data_dir, args.out / "scorers", specs={name: spec})
        setup = time.perf_counter() - start
        labels = [str(x) for x in problem.task.context_labels] if getattr(problem.task, "context_labels", None) else []
        six6 = labels.index("SIX6") if "SIX6" in labels else None
        rows_out = {}

        def record(label: str, cands: Candidates, calls: float, seed_values: dict) -> None:
            metrics = evaluate(problem, cands)
            best = per_context_max(problem, cands.rows, cands.valid)
            entry = {"max": metrics["max"], "median": metrics["median"], "top1": metrics["top1"], "calls": calls}
            if six6 is not None:
                entry["SIX6 max"] = float(best[six6])
            seed_values.setdefault(label, []).append(entry)

        # references on the enumerated scorer: the mean's top K, and the portfolio of its top `pool`
        B, K = len(problem.ctx), spec.k
        top = exhaustive(problem.objective, problem.ctx, args.pool, problem.allowed)
        mean_top = Candidates(top.rows[:, :K], top.scores[:, :K], top.valid[:, :K], 0)
        members, _ = member_grid(problem.objective, top.rows, problem.ctx, top.valid, 1 << 16)
        pick, ok = choose(members, top.valid, K, generator=torch.Generator().manual_seed(0))
        port_rows = top.rows.gather(1, pick.unsqueeze(-1).expand(B, K, top.rows.shape[-1]))
        enumerated = {}
        record("mean's top K (enumerated scorer)", mean_top, float("nan"), enumerated)
        record(f"portfolio of the mean's top {args.pool} (enumerated scorer)",
               Candidates(port_rows, top.scores.gather(1, pick), ok, 0), float("nan"), enumerated)
        record("slices of every row (enumerated scorer)", decode("slices", None, problem.objective, problem.ctx, K,
                                                                  mask=problem.allowed), float("nan"), enumerated)
        runs: dict = {}
        beats = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            trained = train_pipeline(problem, method, seed, progress=False)
            gen = trained[0].generator
            spread = [("polish", int(d)) for d in args.min_distances.split(",") if d]
            for decoder, distance in [("polish", 1), ("portfolio", 1), ("slices", 1), *spread]:
                cands = decode(decoder, gen, problem.objective, problem.ctx, K, budget=spec.budget,
                               min_distance=distance, generator=torch.Generator().manual_seed(seed))
                label = decoder if distance == 1 else f"{decoder}, min_distance {distance}"
                record(label, cands, cands.scorer_calls / B, runs)
                rows_out[(seed, label)] = cands
            a = aim(problem, rows_out[(seed, "portfolio")].rows, rows_out[(seed, "portfolio")].valid, 100 + seed)
            b = aim(problem, rows_out[(seed, "polish")].rows, rows_out[(seed, "polish")].valid, 100 + seed)
            beats.append(float((a > b + 1e-6).float().mean()))
            print(f"{name} seed {seed}: " + ", ".join(f"{d} max {runs[d][-1]['max']:.3f}" for d in runs),
                  flush=True)
        table = {}
        for label, entries in {**enumerated, **runs}.items():
            keys = entries[0].keys()
            table[label] = {k: (sum(e[k] for e in entries) / len(entries)) for k in keys}
            table[label]["seeds"] = len(entries)
        report["tasks"][name] = {"contexts": B, "budget": spec.budget, "k": K, "setup_seconds": round(setup, 1),
                                 "methods": table, "portfolio aim beats polish (share of contexts)": sum(beats) / len(beats)}
        cols = ["max", "median", "top1"] + (["SIX6 max"] if six6 is not None else []) + ["calls"]
        print(f"\n### {name} ({B} contexts, K = {K}, budget {spec.budget} calls, {args.members}-member ensemble)\n")
        print("| method | " + " | ".join(cols) + " | seeds |")
        print("|:---|" + "---:|" * (len(cols) + 1))
        for label, row in table.items():
            cells = [f"{row[c]:.3f}" if c != "calls" else ("-" if row[c] != row[c] else f"{row[c]:.0f}") for c in cols]
            print(f"| {label} | " + " | ".join(cells) + f" | {row['seeds']} |")
        print(f"\nportfolio's expected best over the ensemble above polish's in {report['tasks'][name]['portfolio aim beats polish (share of contexts)']:.0%} of contexts")
    (args.out / "portfolio.json").write_text(json.dumps(report, indent=2))
    print(f"\n{machine_line()}")


if __name__ == "__main__":
    main()
