"""Where enumeration beats training a generator: scorer calls, seconds and exactness by space size.

For each space of 3 features x V categories (R = V^3 rows per context) and C contexts: a scorer is
fitted on a Potts landscape's table (its quality does not matter here: the reference is the
scorer's own exact top-10), then
- enumeration: the exhaustive decoder scores all R rows of every context (what `generate` does for
  a run whose space is small, choicegrad.run.small_space);
- a generator at the defaults (autoregressive + reinforce, GeneratorFit()) is trained, then decoded
  with polish at the default budget.
Reported per size: scorer calls and seconds of each, the generator's top-1 = the exact argmax (share
of contexts), the overlap of its top-10 with the exact top-10, and what `fit`'s rule decides
(enumerate when R x C <= steps x batch x samples, the rows training scores at the least).

Usage: python benchmarks/small_spaces.py [--vocab 8 15 22 47 100] [--contexts 20] [--out runs/small_spaces.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import torch

from choicegrad.bench.tasks.potts import PottsTask
from choicegrad.data.table import load_table
from choicegrad.decoding import decode, default_budget
from choicegrad.generators import GeneratorConfig, TableContext, TableObjective
from choicegrad.run import small_space, training_calls
from choicegrad.scorer.fit import ScorerFit, fit_scorer
from choicegrad.training.loop import GeneratorFit, fit_table_generator


def one_size(vocab: int, contexts: int, seed: int) -> dict:
    task = PottsTask(slots=3, vocab=vocab, contexts=contexts, seed=seed)
    data = load_table(task.table(n=max(4000, 4 * vocab * contexts), seed=seed + 1), "s?", "y", "ctx")
    scorer = fit_scorer(data, ScorerFit(epochs=3, seed=seed), progress=False).scorer
    objective = TableObjective(scorer).prepare("cpu")
    ctx = TableContext(data.ctx_cat, data.ctx_num).unique()[0]
    k = 10

    start = time.perf_counter()
    exact = decode("exhaustive", None, objective, ctx, k, mask=data.space.mask())
    enum_s = time.perf_counter() - start

    fit = GeneratorFit(seed=seed)
    res = fit_table_generator(scorer, data, GeneratorConfig(), fit, progress=False)
    start = time.perf_counter()
    polish = decode("polish", res.generator, objective, ctx, k, budget=default_budget(k),
                    generator=torch.Generator().manual_seed(seed))
    polish_s = time.perf_counter() - start

    top1 = (polish.rows[:, 0] == exact.rows[:, 0]).all(-1).float().mean().item()
    overlap = [len({tuple(r) for r in a.tolist()} & {tuple(r) for r in b.tolist()})
               for a, b in zip(polish.rows, exact.rows)]
    rows = data.space.num_rows()
    return {"vocab": vocab, "space_rows": rows, "contexts": len(ctx),
            "rule": "enumerate" if small_space(data.space, len(ctx), fit) else "train",
            "enumeration_calls": int(exact.scorer_calls), "enumeration_seconds": round(enum_s, 2),
            "training_calls": int(res.scorer_calls), "training_calls_floor": training_calls(fit),
            "training_seconds": round(res.seconds, 1), "polish_calls": int(polish.scorer_calls),
            "polish_seconds": round(polish_s, 2), "generator_top1_exact": round(top1, 3),
            "generator_top10_overlap": round(sum(overlap) / len(overlap), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, nargs="+", default=[8, 15, 22, 47, 100])
    ap.add_argument("--contexts", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    print("| rows/context | contexts | rule | enumerate: calls | s | train: calls | s | polish calls | "
          "top-1 exact | top-10 overlap |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for vocab in args.vocab:
        r = one_size(vocab, args.contexts, args.seed)
        results.append(r)
        print(f"| {r['space_rows']:,} | {r['contexts']} | {r['rule']} | {r['enumeration_calls']:,} | "
              f"{r['enumeration_seconds']} | {r['training_calls']:,} | {r['training_seconds']} | "
              f"{r['polish_calls']:,} | {r['generator_top1_exact']:.2f} | {r['generator_top10_overlap']:.1f} |",
              flush=True)
    meta = {"date": str(date.today()), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__, "results": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(meta, f, indent=2)


if __name__ == "__main__":
    main()
