"""Data-parallel scorer fit: rows/s of 1 process x 2 threads against 2 processes x 1 thread (gloo).

    python benchmarks/ddp_scaling.py [--rows 200000] [--epochs 2] [--batch-size 1024] [--out runs/ddp-scaling]
    python benchmarks/ddp_scaling.py --table-only --rows 10000000 --out runs/scale10m   # just write the table

Writes a synthetic contextual table as Parquet, in chunks (16 slots x 4 categories, one categorical
context column `user` of 10,000 levels; the score is a per-user term per slot plus couplings of
neighbouring slots, with noise), then fits the scorer on it with `choicegrad fit-scorer` twice, with
the same seed, epochs and global batch: as one process with 2 threads, and under torchrun as 2
processes with 1 thread each. Prints, as JSON, rows/s for each (training rows x epochs / fit
seconds), their ratio, and the time of one gradient all-reduce of the scorer's size between the 2
ranks (gloo, mean of 50), measured apart so the overhead per step is known.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SLOTS, VOCAB, USERS = 16, 4, 10_000


def landscape(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """(field (USERS, SLOTS, VOCAB), coupling (SLOTS - 1, VOCAB, VOCAB), the generator after them)."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(USERS, SLOTS, VOCAB)).astype(np.float32) * 0.5       # per-user preference
    coupling = rng.normal(size=(SLOTS - 1, VOCAB, VOCAB)).astype(np.float32)        # neighbouring slots
    return field, coupling, rng


def true_score(u: np.ndarray, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N,) noise-free score of rows x (N, SLOTS) of categories 0..VOCAB-1 for users u (N,)."""
    field, coupling, _ = landscape(seed)
    return (field[u[:, None], np.arange(SLOTS)[None, :], x].sum(1)
            + coupling[np.arange(SLOTS - 1)[None, :], x[:, :-1], x[:, 1:]].sum(1))


def best_score(u: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N,) the highest noise-free score of each user's row (max-sum over the chain of slots)."""
    field, coupling, _ = landscape(seed)
    best = field[u, 0]                                                             # (N, VOCAB)
    for s in range(1, SLOTS):
        best = (best[:, :, None] + coupling[s - 1][None]).max(1) + field[u, s]
    return best.max(1)


def write_table(path: Path, rows: int, seed: int = 0, chunk: int = 1_000_000, part: int | None = None) -> Path:
    """The synthetic table, `rows` rows written `chunk` at a time (memory bounded by the chunk).
    part: one part of a larger table: the same landscape (from `seed`), its own rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    field, coupling, rng = landscape(seed)
    if part is not None:
        rng = np.random.default_rng([seed, part])
    letters = np.array(list("abcd"))
    users = np.array([f"u{i:05d}" for i in range(USERS)])
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            u = rng.integers(USERS, size=n)
            x = rng.integers(VOCAB, size=(n, SLOTS))
            y = field[u[:, None], np.arange(SLOTS)[None, :], x].sum(1)
            y += coupling[np.arange(SLOTS - 1)[None, :], x[:, :-1], x[:, 1:]].sum(1)
            y += rng.normal(size=n).astype(np.float32) * 0.1
            table = pa.table({"user": users[u], **{f"s{s}": letters[x[:, s]] for s in range(SLOTS)},
                              "y": y.astype(np.float64)})
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table, row_group_size=min(n, 262_144))
    finally:
        if writer is not None:
            writer.close()
    return path


def fit(table: Path, out: Path, processes: int, epochs: int, batch: int) -> float:
    """Seconds of the scorer fit (from scorer_metrics.json) of one `choicegrad fit-scorer` run."""
    args = ["fit-scorer", str(table), "--features", "s?,s??", "--score", "y", "--context", "user",
            "--epochs", str(epochs), "--batch-size", str(batch), "--out", str(out), "--overwrite"]
    threads = 2 // processes
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if processes == 1:
        cmd = [sys.executable, "-m", "choicegrad", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "choicegrad", *args]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return float(json.loads((out / "scorer_metrics.json").read_text())["seconds"])


def probe(numel: int, repeats: int = 50) -> None:
    """Run under torchrun: rank 0 prints the mean seconds of one all-reduce of `numel` float32."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    t = torch.randn(numel)
    for _ in range(5):
        dist.all_reduce(t)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(t)
    seconds = (time.perf_counter() - start) / repeats
    if dist.get_rank() == 0:
        print(json.dumps({"allreduce_seconds": seconds}))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=Path("runs/ddp-scaling"))
    ap.add_argument("--table-only", action="store_true", help="write the table and stop")
    ap.add_argument("--probe", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe is not None:
        probe(args.probe)
        return
    table = args.out / f"table-{args.rows}.parquet"
    if not table.is_file():
        write_table(table, args.rows)
    if args.table_only:
        print(table)
        return
    one = fit(table, args.out / "one", 1, args.epochs, args.batch_size)
    two = fit(table, args.out / "two", 2, args.epochs, args.batch_size)
    from safetensors import safe_open

    with safe_open(str(args.out / "two" / "scorer.safetensors"), "pt") as f:
        numel = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          __file__, "--probe", str(numel)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                         check=True, capture_output=True, text=True).stdout
    allreduce = json.loads(out.strip().splitlines()[-1])["allreduce_seconds"]
    train_rows = int(round(args.rows * 0.8))                       # ScorerFit's 10% validation, 10% test
    steps = args.epochs * -(-train_rows // args.batch_size)
    report = {"rows": args.rows, "epochs": args.epochs, "global_batch": args.batch_size, "parameters": numel,
              "seconds_1x2": round(one, 1), "seconds_2x1": round(two, 1),
              "rows_per_s_1x2": round(train_rows * args.epochs / one), "rows_per_s_2x1": round(train_rows * args.epochs / two),
              "ratio_2x1_over_1x2": round(one / two, 3), "allreduce_ms": round(1000 * allreduce, 3),
              "allreduce_share_of_2x1": round(steps * allreduce / two, 3)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
