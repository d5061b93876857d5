"""A 10^5-item catalogue: fit scorer and generator, then time generation for 1,000 contexts.

    python benchmarks/large_catalogue.py [--items 100000] [--rows 200000] [--users 1000] [--max-minutes 6]
        [--generator factorized] [--extra-slots 0] [--out runs/catalogue]

Writes a table with one feature `item` from a catalogue of --items categories (declared in
space.json: most items are never measured), two features `a`, `b` of 8 categories, --extra-slots
more features `e0`, `e1`, ... of 4 categories each (which the score ignores: a wide table with one
huge slot), and a `user` context column: a user likes the items near its own place in the
catalogue, and a == b. Then runs, as a new user would:

    choicegrad fit TABLE --features item,a,b[,e0,...] --score y --context user --space space.json
        --generator G --max-minutes M --out RUN
    choicegrad generate RUN --contexts users.csv --top-k 128 --decoder D --out candidates.csv   (D: sample, polish)

and prints, as JSON, the fit's seconds and peak resident memory, and for each decoder the seconds
of the generate command (from its process start to the file written, imports included; the import
time alone is measured apart), the seconds of Run.generate alone in one process (the run loaded
first), and the mean score of the 128 candidates per user. --reuse keeps a fitted run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_table(out: Path, items: int, rows: int, users: int, extra: int = 0, seed: int = 0) -> None:
    """table.parquet, space.json (the whole catalogue) and users.csv (every user once). Items are
    drawn with Zipf-like popularity (p ~ 1 / (rank + 10)), so popular items have many rows and most
    of the catalogue none; y = the affinity of the user's group to the item's cluster (50 x 50) + the
    item's own quality + 0.5 when a == b + noise."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    popularity = 1.0 / (np.arange(items) + 10.0)
    order = rng.permutation(items)                                  # popularity unrelated to the item's number
    user = rng.integers(users, size=rows)
    item = order[rng.choice(items, size=rows, p=popularity / popularity.sum())]
    a, b = rng.integers(8, size=(2, rows))
    affinity = rng.normal(size=(50, 50))
    quality = rng.normal(size=items) * 0.5
    y = affinity[user % 50, item % 50] + quality[item] + 0.5 * (a == b) + rng.normal(size=rows) * 0.1
    names = np.array([f"i{i:06d}" for i in range(items)])
    out.mkdir(parents=True, exist_ok=True)
    extras = {f"e{j}": rng.integers(4, size=rows) for j in range(extra)}
    pd.DataFrame({"user": [f"u{u:05d}" for u in user], "item": names[item], "a": a, "b": b, **extras, "y": y}).to_parquet(
        out / "table.parquet", index=False)
    (out / "space.json").write_text(json.dumps({"item": names.tolist()}))
    pd.DataFrame({"user": [f"u{u:05d}" for u in range(users)]}).to_csv(out / "users.csv", index=False)


def run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one choicegrad command in a fresh process."""
    code = ("import resource, runpy, sys, time; t = time.perf_counter(); sys.argv = ['choicegrad'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('choicegrad', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('SECONDS', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
            " file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    line = [x for x in done.stderr.splitlines() if x.startswith("SECONDS")][-1].split()
    return float(line[1]), float(line[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--max-minutes", type=float, default=6.0)
    ap.add_argument("--decoders", default="sample,polish")
    ap.add_argument("--generator", default="factorized", choices=["factorized", "autoregressive"])
    ap.add_argument("--extra-slots", type=int, default=0, help="features of 4 categories beside the catalogue")
    ap.add_argument("--out", type=Path, default=Path("runs/catalogue"))
    ap.add_argument("--reuse", action="store_true", help="keep a run already fitted in OUT/run (generation only)")
    args = ap.parse_args()
    if not (args.out / "table.parquet").is_file():
        write_table(args.out, args.items, args.rows, args.users, args.extra_slots)
    features = ",".join(["item", "a", "b"] + [f"e{j}" for j in range(args.extra_slots)])
    report: dict = {"items": args.items, "rows": args.rows, "users": args.users, "features": len(features.split(",")),
                    "generator": args.generator}
    if args.reuse and (args.out / "run" / "run.json").is_file():
        fit_s = fit_mb = float("nan")
    else:
        fit_s, fit_mb = run(["fit", str(args.out / "table.parquet"), "--features", features, "--score", "y",
                             "--context", "user", "--space", str(args.out / "space.json"), "--generator", args.generator,
                             "--max-minutes", str(args.max_minutes), "--out", str(args.out / "run"), "--overwrite"])
    scorer = json.loads((args.out / "run" / "scorer_metrics.json").read_text())
    config = json.loads((args.out / "run" / "config.json").read_text())
    report["fit"] = {"seconds": None if fit_s != fit_s else round(fit_s, 1),     # None: a reused run
                     "peak_rss_mb": None if fit_mb != fit_mb else round(fit_mb),
                     "scorer_test_r2": round(scorer["metrics"]["test"]["r2"], 3),
                     "generator": config.get("generator_training"),
                     "layout": json.loads((args.out / "run" / "generator.json").read_text())["config"].get("layout")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, pandas, choicegrad.cli"], check=True)
    imports = time.perf_counter() - start
    report["import_seconds"] = round(imports, 1)
    for decoder in args.decoders.split(","):
        out = args.out / f"candidates-{decoder}.csv"
        seconds, mb = run(["generate", str(args.out / "run"), "--contexts", str(args.out / "users.csv"),
                           "--top-k", "128", "--decoder", decoder, "--out", str(out)])
        import pandas as pd

        got = pd.read_csv(out)
        report[f"generate_{decoder}"] = {"seconds": round(seconds, 1), "peak_rss_mb": round(mb), "rows": len(got),
                                         "distinct_per_user": float(got.groupby("user").size().mean()),
                                         "mean_score": round(float(got["score"].mean()), 4)}
    from choicegrad.run import Run                 # the same, in this process: generation alone, the run loaded once

    import pandas as pd

    loaded, users = Run.load(args.out / "run"), pd.read_csv(args.out / "users.csv")
    for decoder in args.decoders.split(","):
        start = time.perf_counter()
        loaded.generate(users, k=128, decoder=decoder)
        report[f"generate_{decoder}"]["in_process_seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
