"""Table-free CLI fit on a chain-structured black box, against its exact optimum (issue 28).

The objective, per context c (20 categorical contexts, "u00".."u19"), over 12 features f00..f11 of 6
categories A..F each (6^12 = 2,176,782,336 rows per context):

    score(x, c) = sum_s u[c, s, x_s] + sum_s w[c, s, x_s, x_{s+1}]

u (unary) and w (pairwise, neighbouring features) are Gaussian tables drawn from --seed; a share
--shared of their variance is common to all contexts (contexts alike, as users of one product are),
the rest each context's own. The pairwise tables have standard deviation --pair-scale (unary: 1).
The script writes, in --out:

    chain.py          the objective, chain(frame) -> scores: a black box to choicegrad; it loads its
                      tables from chain_tables.npz beside itself (relative to its own path)
    chain_tables.npz  u, w, the labels and the context column
    space.json        {"f00": ["A", ..., "F"], ...}
    contexts.csv      one column "user", 20 rows
then runs the real command line, as a user would, at its defaults (plus --fit-args / --generate-args):

    choicegrad fit --objective chain.py:chain --space space.json --contexts contexts.csv --out run
    choicegrad generate run --objective chain.py:chain --top-k 10 --out top.csv

and judges top.csv against the exact optimum of each context, found by dynamic programming (Viterbi,
S x V^2 per context): the share of contexts whose rank-1 row is the optimum (the done-when: >= 90%),
the share whose top 10 hold it, and the gap closed by rank 1, (score - mean) / (optimum - mean) with
mean the exact mean score of uniformly random rows (1 = optimum, 0 = a random row). Objective calls
(rows scored) per context in fit and in generate are read from the commands' summary lines, and
counted independently by chain.py itself (CHAIN_CALLS_LOG; the fit's count then includes the rows
that estimate the objective's scale). A third command, `generate run --decoder argmax --top-k 1`,
says whether the trained generator's own most likely row is the optimum (training's share of the
result, apart from the search's). Prints a markdown table and writes results.json.

Usage: python benchmarks/objective_chain.py [--out runs/objective-chain] [--seeds 0 1 2]
       [--fit-seed 0] [--steps N] [--fit-args "--entropy 0.1"] [--generate-args "--budget 512"]
       [--threads 1] [--shared 0.5] [--pair-scale 1.0] [--skip-fit] [--cli "python other.py"]
--skip-fit generates again from the runs a former call left in --out (e.g. to try --generate-args);
--cli runs another choicegrad command line (e.g. a wrapper that patches a decoder).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

OBJECTIVE = '''"""A chain-structured score (written by benchmarks/objective_chain.py):
score = sum_s u[c, s, x_s] + sum_s w[c, s, x_s, x_(s+1)], tables in chain_tables.npz beside this file."""
import os
from pathlib import Path

import numpy as np

_T = np.load(Path(__file__).resolve().with_name("chain_tables.npz"))
U, W = _T["u"], _T["w"]                                  # (C, S, V), (C, S - 1, V, V)
FEATURES, LABELS, CONTEXTS = [str(f) for f in _T["features"]], _T["labels"], _T["contexts"]
COLUMN = str(_T["column"])
_LOG = os.environ.get("CHAIN_CALLS_LOG")                # the benchmark counts the rows scored


def _codes(values, labels):
    """Labels -> their index in `labels` (a vectorised lookup; ValueError for a label not there)."""
    values = np.asarray(values, dtype=str)
    order = np.argsort(labels)
    pos = np.searchsorted(labels[order], values).clip(max=len(labels) - 1)
    code = order[pos]
    if not (labels[code] == values).all():
        raise ValueError(f"unknown label {values[labels[code] != values][0]!r}")
    return code


def chain(frame):
    c = _codes(frame[COLUMN], CONTEXTS)[:, None]
    x = _codes(frame[FEATURES], LABELS)                      # (N, S)
    s = np.arange(len(FEATURES))
    score = U[c, s, x].sum(1) + W[c, s[:-1], x[:, :-1], x[:, 1:]].sum(1)
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{len(frame)}\\n")
    return score
'''


# --- the problem -----------------------------------------------------------------------------------
def make_tables(seed: int, contexts: int, slots: int, vocab: int, shared: float, pair_scale: float):
    """(u (C, S, V), w (C, S - 1, V, V)): Gaussian, a `shared` share of the variance common to all contexts."""
    rng = np.random.default_rng(seed)
    a, b = np.sqrt(shared), np.sqrt(1 - shared)
    u = a * rng.standard_normal((1, slots, vocab)) + b * rng.standard_normal((contexts, slots, vocab))
    w = a * rng.standard_normal((1, slots - 1, vocab, vocab)) + b * rng.standard_normal((contexts, slots - 1, vocab, vocab))
    return u, pair_scale * w


def viterbi(u: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact maxima of the chain: (best rows (C, S) as codes, best scores (C,))."""
    C, S, V = u.shape
    value = u[:, 0].copy()                                         # (C, V): best prefix ending in v
    back = np.zeros((C, S, V), dtype=np.int64)
    for s in range(1, S):
        cand = value[:, :, None] + w[:, s - 1] + u[:, s][:, None, :]   # (C, V_prev, V)
        back[:, s] = cand.argmax(1)
        value = cand.max(1)
    rows = np.zeros((C, S), dtype=np.int64)
    rows[:, -1] = value.argmax(1)
    for s in range(S - 1, 0, -1):
        rows[:, s - 1] = back[np.arange(C), s, rows[:, s]]
    return rows, value.max(1)


def chain_score(u: np.ndarray, w: np.ndarray, c: np.ndarray, x: np.ndarray) -> np.ndarray:
    s = np.arange(u.shape[1])
    return u[c[:, None], s, x].sum(1) + w[c[:, None], s[:-1], x[:, :-1], x[:, 1:]].sum(1)


def write_problem(folder: Path, seed: int, args, tables_only: bool = False) -> dict:
    """Write the problem's files in `folder` (tables_only: write nothing) -> its tables and labels."""
    features = [f"f{s:02d}" for s in range(args.features)]
    labels = [chr(ord("A") + v) for v in range(args.categories)]
    contexts = [f"u{c:02d}" for c in range(args.contexts)]
    u, w = make_tables(seed, args.contexts, args.features, args.categories, args.shared, args.pair_scale)
    if tables_only:
        return {"u": u, "w": w, "features": features, "labels": labels, "contexts": contexts}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "chain_tables.npz", u=u, w=w, features=np.array(features), labels=np.array(labels),
             contexts=np.array(contexts), column=np.array("user"))
    (folder / "chain.py").write_text(OBJECTIVE)
    (folder / "space.json").write_text(json.dumps({f: labels for f in features}, indent=1) + "\n")
    pd.DataFrame({"user": contexts}).to_csv(folder / "contexts.csv", index=False)
    return {"u": u, "w": w, "features": features, "labels": labels, "contexts": contexts}


# --- the command line ------------------------------------------------------------------------------
def choicegrad(args: list[str], cwd: Path, env: dict, cli: str = "") -> tuple[str, float]:
    """Run `choicegrad ARGS` (this interpreter's, or the command `cli`), echo it; -> (its stdout + stderr,
    wall seconds)."""
    print("$ choicegrad " + " ".join(shlex.quote(a) for a in args), flush=True)
    start = time.perf_counter()
    command = shlex.split(cli) if cli else [sys.executable, "-m", "choicegrad"]
    done = subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    text = done.stdout + done.stderr
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip() and not re.search(r"\d+/\d+ step", line)]
    print("\n".join("  " + line for line in lines[-6:]), flush=True)     # its summary, not its progress bar
    if done.returncode != 0:
        sys.exit(f"choicegrad {args[0]} failed (exit {done.returncode}):\n{text[-3000:]}")
    return text, seconds


def logged_rows(path: Path) -> int:
    return sum(int(line) for line in path.read_text().split()) if path.exists() else 0


def number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    return float(m.group(1).replace(",", "")) if m else float("nan")


def run_seed(seed: int, args, env: dict) -> dict:
    folder = Path(args.out) / f"seed{seed}"
    C = args.contexts
    fit_log, gen_log = folder / "calls_fit.log", folder / "calls_generate.log"
    if args.skip_fit:           # generate again from the run (and problem) a former call fitted
        if not (folder / "run").is_dir():
            sys.exit(f"--skip-fit: {folder / 'run'} does not exist; run without --skip-fit first")
        p = write_problem(folder, seed, args, tables_only=True)
        fit_text, fit_s = (folder / "fit.log").read_text(), float((folder / "fit_seconds.txt").read_text())
    else:
        p = write_problem(folder, seed, args)
        fit_log.unlink(missing_ok=True)
        fit_cmd = ["fit", "--objective", "chain.py:chain", "--space", "space.json", "--contexts", "contexts.csv",
                   "--out", "run", "--overwrite", "--seed", str(args.fit_seed), *shlex.split(args.fit_args)]
        if args.steps is not None:
            fit_cmd += ["--steps", str(args.steps)]
        fit_text, fit_s = choicegrad(fit_cmd, folder, {**env, "CHAIN_CALLS_LOG": str(fit_log.resolve())}, args.cli)
        (folder / "fit.log").write_text(fit_text)
        (folder / "fit_seconds.txt").write_text(f"{fit_s}\n")
    gen_log.unlink(missing_ok=True)
    gen_cmd = ["generate", "run", "--objective", "chain.py:chain", "--top-k", str(args.top_k), "--out", "top.csv",
               *shlex.split(args.generate_args)]
    gen_text, gen_s = choicegrad(gen_cmd, folder, {**env, "CHAIN_CALLS_LOG": str(gen_log.resolve())}, args.cli)
    choicegrad(["generate", "run", "--objective", "chain.py:chain", "--decoder", "argmax", "--top-k", "1",
                "--out", "argmax.csv"], folder, env, args.cli)

    u, w = p["u"], p["w"]
    best_rows, best = viterbi(u, w)
    mean = u.mean(2).sum(1) + w.mean((2, 3)).sum(1)                  # exact mean over uniform random rows
    top = pd.read_csv(folder / "top.csv", dtype=str, keep_default_na=False)
    code = {label: i for i, label in enumerate(p["labels"])}
    ctx_code = {name: i for i, name in enumerate(p["contexts"])}
    c = top["user"].map(ctx_code).to_numpy()
    x = np.stack([top[f].map(code).to_numpy() for f in p["features"]], 1)
    rank = top["rank"].astype(int).to_numpy()
    score = chain_score(u, w, c, x)
    reported = top[[col for col in top.columns if col not in (*p["features"], "user", "rank")][0]].astype(float)
    assert np.allclose(score, reported.to_numpy(), atol=1e-4), "generate's scores differ from the objective's"
    is_opt = (x == best_rows[c]).all(1)
    first = rank == 1
    assert sorted(c[first]) == list(range(C)), "a context has no rank-1 row"
    order = np.argsort(c[first])
    top1, top1_opt = score[first][order], is_opt[first][order]
    in_top = np.array([is_opt[c == i].any() for i in range(C)])
    gap = (top1 - mean) / (best - mean)
    mode = pd.read_csv(folder / "argmax.csv", dtype=str, keep_default_na=False).sort_values("user")
    mode_x = np.stack([mode[f].map(code).to_numpy() for f in p["features"]], 1)
    mode_exact = (mode_x == best_rows[mode["user"].map(ctx_code).to_numpy()]).all(1)
    # the generator's entropy and distinct draws at the end of training, from the run's log
    metrics = pd.read_csv(folder / "run" / "metrics.csv")
    trained = metrics[metrics["phase"] == "train"]
    return {
        "seed": seed,
        "top1_exact": float(top1_opt.mean()),
        "top10_has_optimum": float(in_top.mean()),
        "generator_mode_exact": float(mode_exact.mean()),
        "gap_closed_mean": float(gap.mean()),
        "gap_closed_min": float(gap.min()),
        "missed_by_mean": float((best - top1)[~top1_opt].mean()) if (~top1_opt).any() else 0.0,
        "optimum_minus_mean": float((best - mean).mean()),
        "fit_calls_per_context": number(r"\(([\d,]+) per context", fit_text),
        "fit_rows_per_context_counted": logged_rows(fit_log) / C,
        "generate_calls_per_context": number(r"\(([\d,]+) objective calls\)", gen_text) / C,
        "generate_rows_per_context_counted": logged_rows(gen_log) / C,
        "scale": number(r"objective: scale ([\d.e+-]+)", fit_text),
        "fit_steps": int(trained["step"].max()) if len(trained) else 0,
        "fit_stopped": (re.search(r"validation [^(]*\(([^)]*)\)", fit_text) or [None, "?"])[1],
        "final_entropy": float(trained["entropy"].iloc[-1]) if len(trained) else float("nan"),
        "final_distinct_of_64": float(trained["distinct"].iloc[-1]) if len(trained) else float("nan"),
        "fit_seconds": fit_s,
        "generate_seconds": gen_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/objective-chain", help="folder for the problems, runs and results.json")
    ap.add_argument("--seed", type=int, default=None, help="one objective seed (same as --seeds SEED)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="objective seeds (tables), one problem each")
    ap.add_argument("--fit-seed", type=int, default=0, help="choicegrad fit --seed")
    ap.add_argument("--steps", type=int, default=None, help="choicegrad fit --steps (default: the CLI's)")
    ap.add_argument("--fit-args", default="", help='more `choicegrad fit` flags, e.g. "--entropy 0.1"')
    ap.add_argument("--generate-args", default="", help='more `choicegrad generate` flags, e.g. "--budget 512"')
    ap.add_argument("--skip-fit", action="store_true", help="generate again from the runs a former call fitted in --out")
    ap.add_argument("--results", default="results.json", help="file name of the results in --out")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--contexts", type=int, default=20)
    ap.add_argument("--features", type=int, default=12)
    ap.add_argument("--categories", type=int, default=6)
    ap.add_argument("--shared", type=float, default=0.5, help="share of the tables' variance common to all contexts")
    ap.add_argument("--pair-scale", type=float, default=1.0, help="std of the pairwise tables (unary: 1)")
    ap.add_argument("--cli", default="", help="the command that runs choicegrad (default: this Python's -m choicegrad)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the commands (default: as set)")
    args = ap.parse_args()
    seeds = [args.seed] if args.seed is not None else args.seeds
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = [run_seed(seed, args, env) for seed in seeds]
    wall = time.perf_counter() - start

    cols = [("seed", "seed", "{}"), ("top1_exact", "top-1 exact", "{:.0%}"),
            ("top10_has_optimum", "optimum in top 10", "{:.0%}"),
            ("generator_mode_exact", "generator's mode exact", "{:.0%}"), ("gap_closed_mean", "gap closed", "{:.4f}"),
            ("gap_closed_min", "worst gap closed", "{:.4f}"), ("fit_calls_per_context", "fit calls / ctx", "{:,.0f}"),
            ("generate_calls_per_context", "generate calls / ctx", "{:,.0f}"), ("fit_steps", "fit steps", "{:.0f}"),
            ("fit_seconds", "fit (s)", "{:.0f}"), ("generate_seconds", "generate (s)", "{:.1f}")]
    space = args.categories ** args.features
    print(f"\nChain objective, {args.features} features x {args.categories} categories ({space:,} rows per context), "
          f"{args.contexts} contexts, shared {args.shared}, pair scale {args.pair_scale}; fit {args.fit_args or '(defaults)'}"
          f"{f' --steps {args.steps}' if args.steps is not None else ''}; generate --top-k {args.top_k} "
          f"{args.generate_args or '(defaults: polish)'}; {os.cpu_count()} CPU cores, {datetime.date.today()}, "
          f"{wall:.0f} s in all\n")
    print("| " + " | ".join(h for _, h, _ in cols) + " |")
    print("|" + "|".join("---:" for _ in cols) + "|")
    for r in results:
        print("| " + " | ".join(f.format(r[k]) for k, _, f in cols) + " |")
    if len(results) > 1:
        mean = {k: float(np.mean([r[k] for r in results])) for k, _, _ in cols[1:]}
        print("| mean | " + " | ".join(f.format(mean[k]) for k, _, f in cols[1:]) + " |")
    summary = {"settings": {**vars(args), "seeds": seeds}, "rows_per_context": space, "seconds": wall,
               "machine": f"{os.cpu_count()} CPU cores, {platform.platform()}, Python {platform.python_version()}",
               "date": datetime.date.today().isoformat(), "results": results}
    (Path(args.out) / args.results).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {Path(args.out) / args.results}")


if __name__ == "__main__":
    main()
