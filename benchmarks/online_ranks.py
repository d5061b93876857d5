"""Why the designer misses tfbind8's optima: how its last round's scorer ranks each context's optimum.

Runs the designer of `choicegrad bench-online` (the same start rows, batch, rounds and minutes per
round as `make online`, designer defaults unless --designer) on one task whose every row has a
known score, then scores every row of each context with the scorer the last round was proposed
from, and prints per context: whether the optimum was measured (normalised best >= 0.9995, as the
harness's `solved`), the scorer's rank of the optimum and of the best measured row among all rows
(0 = its first choice), and the Spearman correlation of the scorer with the truth on all rows and
on the top 1% of rows by truth. A small space only: every row is scored (tfbind8: 65,536 per TF).

    python benchmarks/online_ranks.py                       # tfbind8, seed 0
    python benchmarks/online_ranks.py --seed 1 --designer '{"local_share": 0.75}'
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch

from choicegrad.bench.online import ONLINE_TASKS, DesignerMethod, History, Oracle, online_task, start_rows
from choicegrad.bench.report import machine_line
from choicegrad.generators import TableContext
from choicegrad.metrics import spearman

SOLVED = 0.9995


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="tfbind8", choices=[t for t in ONLINE_TASKS if t != "holo-ehrlich"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--designer", default="{}", help="DesignConfig settings as JSON (default: its defaults)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    spec = ONLINE_TASKS[args.task]
    land = online_task(spec)
    if land.num_rows > 5_000_000:
        raise SystemExit(f"{args.task}: {land.num_rows:,} rows per context is too many to score every one")
    oracle = Oracle(land)
    ctx0, index0 = start_rows(land, spec, args.seed)
    rows0 = land.rows_at(index0)
    history = History(ctx0, rows0, oracle.measure(ctx0, rows0), land.space.max_size)
    agent = DesignerMethod(land, spec, history, args.seed, json.loads(args.designer))
    C, S = land.num_contexts, land.space.num_slots
    t0 = time.perf_counter()
    for _ in range(spec.rounds):
        batch = agent.propose(spec.batch).reshape(-1, S)
        ctx = torch.arange(C).repeat_interleave(spec.batch)
        y = oracle.measure(ctx, batch)
        history.add(ctx, batch, y)
        agent.tell(ctx, batch, y)
    seconds = time.perf_counter() - t0

    designer, truth = agent.designer, land.scores.double()              # truth (C, R)
    every = land.all_rows()
    measured = land.row_index(history.rows)
    records = []
    for c in range(C):
        frame = land.context_frame(torch.tensor([c]))
        cat, num = designer.table().context.encode(frame, "context") if len(frame.columns) else (
            torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0))
        tc = TableContext(cat, num)
        with torch.no_grad():
            mean = designer.scorer.member_scores(every, tc.cat.expand(len(every), -1),
                                                 tc.num.expand(len(every), -1)).mean(0).double()
        t = truth[c]
        ok = ~torch.isnan(t)
        norm = (t - t[ok].min()) / (t[ok].max() - t[ok].min())
        mine = measured[(history.ctx == c) & torch.isfinite(history.y)]
        best_row = mine[norm[mine].argmax()]
        optimum = int(torch.where(ok, t, -np.inf).argmax())
        top = ok & (t >= t[ok].quantile(0.99))
        records.append({"context": land.context_labels[c] if land.context_column else "-",
                        "solved": bool(norm[mine].max() >= SOLVED), "best": float(norm[mine].max()),
                        "rank_optimum": int((mean > mean[optimum]).sum()),
                        "rank_best_measured": int((mean > mean[best_row]).sum()),
                        "spearman": float(spearman(mean[ok], t[ok])),
                        "spearman_top1pct": float(spearman(mean[top], t[top]))})
    out = pd.DataFrame(records)
    print(machine_line())
    print(f"{args.task}, seed {args.seed}, designer {args.designer}: {spec.rounds} rounds of {spec.batch} in "
          f"{seconds:.0f} s; the last round's scorer over all {land.num_rows:,} rows of each context")
    print(out.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    missed = out[~out["solved"]]
    print(f"solved {out['solved'].mean():.0%} of contexts; where not, the optimum's median rank "
          f"{missed['rank_optimum'].median():,.0f} (best measured row's {missed['rank_best_measured'].median():,.0f}); "
          f"median Spearman {out['spearman'].median():.3f}, on the top 1% {out['spearman_top1pct'].median():.3f}")


if __name__ == "__main__":
    main()
