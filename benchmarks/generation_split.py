"""Where generation time goes for 20,000 unseen contexts at K = 16 (after benchmarks/unseen_speed.py).

    python benchmarks/generation_split.py [--run runs/unseen-speed/run]

Times, separately, on the run `unseen_speed.py` fitted: the generator's beam search of 16 rows per
context, scoring those 320,000 rows, sampling 16 rows per context, and the greedy row alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from choicegrad import Run
from choicegrad.bench.tasks.contextual import potts_ctx
from choicegrad.decoding.decoders import beam_search
from choicegrad.generators.context import TableContext
from choicegrad.generators.objective import TableObjective, score_rows


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/unseen-speed/run"))
    ap.add_argument("--contexts", type=int, default=20_000)
    args = ap.parse_args()
    run = Run.load(args.run)
    gen, objective = run.generator.eval(), TableObjective(run.scorer.eval())
    frame = potts_ctx().contexts(args.contexts, seed=2)
    ctx = TableContext(*run.scorer.context.encode(frame))
    (rows, _), beam = timed(lambda: beam_search(gen, ctx, 16))
    _, scoring = timed(lambda: score_rows(objective, rows, ctx))
    with torch.no_grad():
        _, sampling = timed(lambda: gen.sample(ctx, 16))
        _, greedy = timed(lambda: gen.greedy(ctx))
    print(f"beam16 {beam:.1f}s, scoring {rows.shape[0] * rows.shape[1]:,} rows {scoring:.1f}s, sampling 16 "
          f"{sampling:.1f}s, greedy {greedy:.2f}s ({args.contexts / greedy:,.0f} contexts/s); generator parameters "
          f"{sum(p.numel() for p in gen.parameters()):,}")


if __name__ == "__main__":
    main()
