"""Time one design round of `choicegrad propose` (refit + search + write) on a large table.

The table: 50,000 measured rows of 32 slots x 32 categories (v00..v31) scored by a seeded Potts
landscape (fields per context + shared couplings) over 4 contexts, 2% of the rows failed (empty
score). The round is the CLI as a lab runs it, defaults (--max-minutes 2.5), batch 128 per context,
in a fresh process: the figure is its wall time, start-up and reading the table included, once from
scratch (into an empty --state folder) and once warm-started from the state that round wrote.

Usage: python benchmarks/propose_speed.py [--rows 50000] [--slots 32] [--vocab 32] [--batch 128] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from choicegrad.bench.tasks import PottsTask


def table(rows: int, slots: int, vocab: int, seed: int = 0) -> pd.DataFrame:
    task = PottsTask(slots=slots, vocab=vocab, contexts=4, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    ctx = torch.randint(4, (rows,), generator=g)
    x = torch.randint(vocab, (rows, slots), generator=g)
    labels = np.array([f"v{v:02d}" for v in range(vocab)], dtype=object)
    frame = pd.DataFrame({f"s{s}": labels[x[:, s].numpy()] for s in range(slots)})
    frame.insert(0, "ctx", [f"c{c}" for c in ctx.tolist()])
    y = task.oracle(ctx, x).double().numpy()
    y[np.random.default_rng(seed).random(rows) < 0.02] = np.nan          # failed rows
    frame["y"] = y
    return frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", type=Path, default=None, help="folder for the table, state and proposals (default: temp)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="propose-speed-"))
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "state", ignore_errors=True)                   # the first round starts from scratch
    measured = out / "measured.parquet"
    table(args.rows, args.slots, args.vocab).to_parquet(measured, index=False)
    result = {"rows": args.rows, "slots": args.slots, "vocab": args.vocab, "contexts": 4, "batch": args.batch}
    for name in ("cold", "warm"):
        cmd = [sys.executable, "-m", "choicegrad", "propose", str(measured), "--features", "s*", "--score", "y",
               "--context", "ctx", "--batch", str(args.batch), "--out", str(out / f"next-{name}.csv"),
               "--state", str(out / "state")]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"propose failed ({proc.returncode}): {proc.stderr[-2000:]}")
        state = json.loads((out / "state" / "designer.json").read_text())
        proposed = pd.read_csv(out / f"next-{name}.csv")
        result[name] = {"seconds": round(seconds, 1), "phases": {k: round(v, 1) for k, v in
                                                                  state["last"]["seconds"].items()},
                        "proposed": len(proposed), "under_3_minutes": seconds < 180}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
