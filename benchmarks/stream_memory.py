"""Peak resident memory of a streamed `choicegrad fit-scorer` (or `fit`) against the table's size.

    python benchmarks/stream_memory.py [--rows 1000000,10000000,50000000] [--max-minutes 3] [--out runs/stream]
    python benchmarks/stream_memory.py --tables-only --rows 50000000      # just write the tables
    python benchmarks/stream_memory.py --command fit --rows 10000000,50000000 --max-minutes 8

Writes each table as a folder of Parquet files of 1,000,000 rows (the synthetic contextual table of
benchmarks/ddp_scaling.py: 16 slots x 4 categories, a context column `user` of 10,000 levels), then
runs `choicegrad fit-scorer FOLDER --stream` on it for one epoch (or until --max-minutes of training,
after the full scan) and reads the process's peak resident set size from the kernel (getrusage of
the finished child). Prints, as JSON per table: rows, peak RSS in MB, the scan's and the fit's
seconds, the training rows and the test R^2. A table already written is reused.

--command fit runs `choicegrad fit FOLDER` instead (scorer, then a generator trained on the scan's
sample of training rows; --max-minutes is then required and bounds the whole fit), then
`choicegrad generate` for USERS_SCORED users (polish, one candidate each), and adds the candidates'
noise-free score against each user's best (exact, by max-sum over the chain) and a random row's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ddp_scaling import SLOTS, VOCAB, best_score, true_score, write_table  # noqa: E402

PART_ROWS = 1_000_000
USERS_SCORED = 1_000


def write_folder(folder: Path, rows: int) -> Path:
    """`rows` rows as part-00000.parquet, ... of PART_ROWS rows each (one landscape, each part its own rows)."""
    done = folder / ".complete"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, rows, PART_ROWS)):
        path = folder / f"part-{part:05d}.parquet"
        if not path.is_file():
            tmp = folder / f".part-{part:05d}.tmp"
            write_table(tmp, min(PART_ROWS, rows - start), part=part)
            tmp.rename(path)
    done.write_text(str(rows))
    return folder


def measure(folder: Path, out: Path, max_minutes: float | None, batch: int, workers: int,
            command: str = "fit-scorer") -> dict:
    """Run one streamed fit in a child process; its peak RSS (MB), seconds and metrics."""
    args = [sys.executable, "-m", "choicegrad", command, str(folder), "--stream", "--features", "s?,s??",
            "--score", "y", "--context", "user", "--workers", str(workers), "--out", str(out), "--overwrite"]
    args += ["--epochs", "1", "--batch-size", str(batch)] if command == "fit-scorer" else ["--scorer-epochs", "1"]
    if max_minutes:
        args += ["--max-minutes", str(max_minutes)]
    start = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "CHOICEGRAD_PROGRESS_SECONDS": "60"})
    stdout, stderr = child.communicate()
    wall = time.perf_counter() - start
    if child.returncode:
        raise SystemExit(f"{command} failed:\n{stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024   # KiB -> MiB, max over children so far
    doc = json.loads((out / "scorer_metrics.json").read_text())
    result = {"peak_rss_mb": round(peak), "wall_seconds": round(wall, 1), "scan_seconds": round(doc["scan_seconds"], 1),
              "fit_seconds": round(doc["seconds"], 1), "train_rows": doc["train_rows"],
              "test_r2": round(doc["metrics"]["test"]["r2"], 4), "held_out": doc["metrics"]["test"]["n"]}
    if command == "fit":
        result.update(generated(out))
    return result


def generated(run: Path) -> dict:
    """The fitted run's generator on USERS_SCORED users: one polished candidate each, its noise-free
    score against the user's best and a random row's (both exact for this landscape)."""
    import pandas as pd

    config = json.loads((run / "config.json").read_text())
    users = np.arange(USERS_SCORED)
    pd.DataFrame({"user": [f"u{i:05d}" for i in users]}).to_csv(run / "users.csv", index=False)
    cands = run / "candidates.csv"
    subprocess.run([sys.executable, "-m", "choicegrad", "generate", str(run), "--contexts", str(run / "users.csv"),
                    "--top-k", "1", "--out", str(cands)], check=True, capture_output=True)
    frame = pd.read_csv(cands).sort_values("user")
    x = np.stack([frame[f"s{s}"].map("abcd".index).to_numpy() for s in range(SLOTS)], 1)
    u = frame["user"].str[1:].astype(int).to_numpy()
    got, best = true_score(u, x), best_score(u)
    rng = np.random.default_rng(0)
    rand = true_score(u, rng.integers(VOCAB, size=(len(u), SLOTS)))
    return {"generator_rows": config["generator_rows"], "generator_seconds": round(config["generator_training"]["seconds"], 1),
            "candidate_true": round(float(got.mean()), 3), "best_true": round(float(best.mean()), 3),
            "random_true": round(float(rand.mean()), 3), "share_at_best": round(float(np.mean(got >= best - 1e-4)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1000000,10000000,50000000")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/stream"))
    ap.add_argument("--tables-only", action="store_true")
    ap.add_argument("--command", choices=["fit-scorer", "fit"], default="fit-scorer")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(r) for r in args.rows.split(",")]
    if args.one is not None:     # one measurement in a fresh process, so RUSAGE_CHILDREN holds this fit alone
        folder = write_folder(args.out / f"table-{args.one}", args.one)
        run = args.out / (f"fit-{args.one}" if args.command == "fit-scorer" else f"fit-generator-{args.one}")
        print(json.dumps(measure(folder, run, args.max_minutes, args.batch_size, args.workers, args.command)))
        return
    for rows in sizes:
        write_folder(args.out / f"table-{rows}", rows)
    if args.tables_only:
        return
    if args.command == "fit" and not args.max_minutes:
        ap.error("--command fit needs --max-minutes (it bounds the scorer and the generator together)")
    report = []
    for rows in sizes:
        cmd = [sys.executable, __file__, "--one", str(rows), "--batch-size", str(args.batch_size),
               "--workers", str(args.workers), "--out", str(args.out), "--command", args.command]
        if args.max_minutes:
            cmd += ["--max-minutes", str(args.max_minutes)]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        report.append({"rows": rows, **json.loads(line)})
        print(json.dumps(report[-1]), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
