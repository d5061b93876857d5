"""Quality against inference budget: every pipeline and peer at several scorer-call budgets per context.

    frame = run_budgets(["potts-ctx", "items"], seeds=[0, 1, 2], out="runs/budgets")

For each task (choicegrad.bench.harness: its scorer, evaluation contexts and truth) and seed, each
pipeline GENERATOR/ESTIMATOR is trained once and decoded at every budget b (scorer calls per context:
16 = K, 64, 128, 160 = 10K, the task's benchmark budget (1% of the space) and 4 times that):

- `generator` line: the generator alone. b = 0: its most likely row (greedy, slot by slot; no scorer
  call); 0 < b <= 160: its b most likely distinct rows (topk),
  scored, best first.
- `search` line: b draws and polish from them (the default decoder of `choicegrad generate`).
- each peer (random, anneal, genetic, gradient-ascent, greedy) searches the scorer with b calls
  (distinct rows only on a task of distinct items, slates).

Quality is the ground truth of the row each method ranks first, as gap closed (table tasks) or
normalised score (items). Rows of OUT/budgets.csv hold task, method, line, seed, budget, calls, the
quality metrics, seconds and contexts per second; `area` is the mean quality over log10(budget)
from the smallest to the largest positive budget (trapezoid), so one number compares whole curves.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from choicegrad.bench import harness
from choicegrad.bench.harness import SPECS, Method, Problem, build_problem, evaluate, parse_method, train_pipeline
from choicegrad.bench.tasks.registry import missing_data
from choicegrad.decoding import Candidates, decode
from choicegrad.decoding.decoders import beam_search
from choicegrad.errors import InputError, did_you_mean
from choicegrad.io import write_table
from choicegrad.progress import progress_bar

SMALL = (16, 64, 128, 160)  # K, 4K, 128 and 10K calls; then the task's 1% of the space and 4 times that
GENERATOR_MAX = 160        # the generator-only line stops here (a wider beam is search by another name)
BUDGET_TASKS = ("potts-ctx", "mixed-ctx", "items", "slates", "ehrlich")
BUDGET_PIPELINES = ("autoregressive/reinforce", "autoregressive/trajectory-balance")
BUDGET_PEERS = ("random", "anneal", "genetic", "gradient-ascent", "greedy")
K = 16          # candidates returned per context (the top-1 is what is judged)


def quality_metric(problem: Problem) -> str:
    return "top1" if problem.spec.kind == "items" else "gap_oracle"


def _row(problem: Problem, cands: Candidates, seconds: float) -> dict:
    B = len(problem.ctx)
    return {**evaluate(problem, cands), "calls": cands.scorer_calls / B, "seconds": seconds,
            "contexts_per_s": B / max(seconds, 1e-9)}


def generator_only(problem: Problem, gen, budget: int, seed: int) -> tuple[Candidates, float]:
    """The generator's `budget` most likely distinct rows (beam search), scored, best first; budget 0:
    its most likely row (greedy beam of width 1), no scorer call."""
    start = time.perf_counter()
    if budget == 0:
        rows, _ = beam_search(gen, problem.ctx, 1)
        shape = rows.shape[:2]
        cands = Candidates(rows, torch.zeros(shape), torch.ones(shape, dtype=torch.bool), 0)
    else:
        with torch.no_grad():
            cands = decode("topk", gen, problem.objective, problem.ctx, budget,
                           generator=torch.Generator().manual_seed(seed))
    return cands, time.perf_counter() - start


def run_budgets(tasks: Sequence[str] = BUDGET_TASKS, seeds: Sequence[int] = (0, 1, 2), out: str | Path = "runs/budgets", *,
                pipelines: Sequence[str] = BUDGET_PIPELINES, peers: Sequence[str] = BUDGET_PEERS,
                budgets: Optional[Sequence[int]] = None, data_dir: Optional[str | Path] = None,
                specs: Optional[dict] = None, progress: Optional[bool] = None,
                log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> pd.DataFrame:
    """Every pipeline line and peer at every budget, for every task and seed; OUT/budgets.csv is
    rewritten after each task and seed (an interrupted run keeps what it measured).
    Many parameters: the flags of `choicegrad bench budgets` plus the harness's specs, progress and log."""
    problems = request_problems(tasks, pipelines, peers, data_dir, specs)
    if problems:
        raise InputError("run_budgets", problems)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    started = time.perf_counter()

    def say(text: str) -> None:
        log(f"[{time.perf_counter() - started:6.0f}s] {text}")

    for task in tasks:
        say(f"{task}: building the task and its scorer")
        job = _BudgetTask(task, build_problem(task, Path(data_dir) if data_dir else None, out / "scorers", specs),
                          budgets)
        rows.append(job.reference())
        bar = progress_bar(len(seeds) * (len(pipelines) + len(peers)), task, "method", progress)
        for seed in seeds:
            done = set()
            for p in pipelines:
                key = job.pipeline_key(p)
                if key not in done:    # two table generators that both mean the pointer one here: once
                    done.add(key)
                    rows += job.pipeline(p, key, seed)
                    say(job.summary(rows, "/".join(key), seed, lines=True))
                bar.update(1)
            for peer in peers:
                rows += job.peer(peer, seed)
                say(job.summary(rows, peer, seed, lines=False))
                bar.update(1)
            write_table(pd.DataFrame(rows), out / "budgets.csv")
        bar.close()
    return pd.DataFrame(rows)


def request_problems(tasks: Sequence[str], pipelines: Sequence[str], peers: Sequence[str],
                     data_dir: Optional[str | Path] = None, specs: Optional[dict] = None) -> list[str]:
    """A line per unknown task, pipeline GENERATOR/ESTIMATOR or peer (exhaustive is none here) of
    run_budgets ('tasks: ...', 'pipelines: ...', 'peers: ...') and per real landscape whose data is not
    found: checked before any work. specs: task settings beside SPECS (run_budgets')."""
    known = {**SPECS, **(specs or {})}
    problems = [f"tasks: unknown task {t!r}{did_you_mean(t, list(known))}; choose from {', '.join(known)}"
                for t in tasks if t not in known]
    for p in pipelines:
        try:
            parse_method(f"{p}/polish")
        except ValueError as exc:
            problems.append(f"pipelines: {p!r}: {str(exc).split(': ', 1)[-1]}")
    problems += [f"peers: unknown peer {p!r}{did_you_mean(p, list(harness.peers.PEERS))}" for p in peers
                 if p not in harness.peers.PEERS or p == "exhaustive"]
    return problems + missing_data(tasks, data_dir)


class _BudgetTask:
    """One task of run_budgets: its problem, the budgets it is run at (`budgets`, default SMALL and the
    task's benchmark budget and 4 times it) and the columns its rows share."""

    def __init__(self, task: str, problem: Problem, budgets: Optional[Sequence[int]]):
        spec = problem.spec
        self.task, self.problem, self.metric = task, problem, quality_metric(problem)
        self.budgets = sorted(set(budgets or (*SMALL, spec.budget, 4 * spec.budget)))
        self.base = {"task": task, "seen": spec.seen, "contexts": len(problem.ctx), "metric": self.metric}

    def reference(self) -> dict:
        """The exhaustive optimum's row (seed and budget -1)."""
        problem = self.problem
        return {**self.base, "method": "exhaustive", "line": "reference", "seed": -1, "budget": -1,
                **evaluate(problem, problem.exhaustive), "calls": problem.exhaustive.scorer_calls / len(problem.ctx),
                "seconds": problem.exhaustive_seconds, "contexts_per_s": math.nan}

    def pipeline_key(self, pipeline: str) -> tuple[str, str]:
        """(generator, estimator) of "GENERATOR/ESTIMATOR" as trained here (the pointer generator on items)."""
        gen_kind, est = pipeline.split("/")
        return ("pointer" if self.problem.spec.kind == "items" else gen_kind), est

    def pipeline(self, pipeline: str, key: tuple[str, str], seed: int) -> list[dict]:
        """Train the pipeline once; its generator line (budget 0 and budgets up to GENERATOR_MAX) and
        its search line (budgets above K)."""
        problem = self.problem
        trained = train_pipeline(problem, Method(pipeline, None, *key), seed, False)
        gen, name, rows = trained[0].generator, "/".join(key), []
        for b in (0, *[b for b in self.budgets if b <= GENERATOR_MAX]):
            cands, sec = generator_only(problem, gen, b, seed)
            rows.append({**self.base, "method": name, "line": "generator", "seed": seed, "budget": b,
                         **_row(problem, cands, sec), "seconds_train": trained[0].seconds})
        for b in self.budgets:
            if b <= K:
                continue     # at K calls, search is the generator's own K rows
            start = time.perf_counter()
            cands = decode("polish", gen, problem.objective, problem.ctx, K, budget=b,
                           generator=torch.Generator().manual_seed(seed))
            rows.append({**self.base, "method": name, "line": "search", "seed": seed, "budget": b,
                         **_row(problem, cands, time.perf_counter() - start), "seconds_train": trained[0].seconds})
        return rows

    def peer(self, peer: str, seed: int) -> list[dict]:
        """The peer's rows, one per budget (min(K, budget) candidates)."""
        problem, rows = self.problem, []
        for b in self.budgets:
            start = time.perf_counter()
            cands = harness.peers.search(peer, problem.objective, problem.ctx, problem.allowed, min(K, b),
                                         budget=b, generator=torch.Generator().manual_seed(seed),
                                         distinct=problem.distinct)
            rows.append({**self.base, "method": peer, "line": "peer", "seed": seed, "budget": b,
                         **_row(problem, cands, time.perf_counter() - start), "seconds_train": 0.0})
        return rows

    def summary(self, rows: list[dict], method: str, seed: int, lines: bool) -> str:
        """The log line of one method and seed: quality at each budget (lines: prefixed by the line's initial)."""
        last = [r for r in rows if (r["task"], r["method"], r["seed"]) == (self.task, method, seed)]
        return f"{self.task} seed {seed} {method}: " + ", ".join(
            f"{r['line'][0] if lines else ''}{r['budget']} {r[self.metric]:.3f}" for r in last)


def _one_task(args: tuple) -> str:
    """Worker of run_budgets_parallel: one task in its own process, one torch thread."""
    task, seeds, out, kwargs = args
    torch.set_num_threads(1)
    run_budgets([task], seeds, out, progress=False, **kwargs)
    return str(Path(out) / "budgets.csv")


def run_budgets_parallel(tasks: Sequence[str], seeds: Sequence[int], out: str | Path, jobs: int, **kwargs) -> pd.DataFrame:
    """run_budgets with one worker process per task, `jobs` at a time (each with one torch thread: on a
    small machine two 1-thread processes do twice the work of one 2-thread process on these small
    models); each task writes OUT/tasks/TASK/, the rows are then gathered into OUT/budgets.csv."""
    import concurrent.futures
    import multiprocessing

    out = Path(out)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    work = [(t, list(seeds), str(out / "tasks" / t), kwargs) for t in tasks]
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths = list(pool.map(_one_task, work))
    frame = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    write_table(frame, out / "budgets.csv")
    return frame


# --- summaries ------------------------------------------------------------------------------------
def curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of quality, calls and contexts/s per (task, method, line, budget)."""
    frame = frame[frame["line"] != "reference"].copy()
    frame["quality"] = [r[r["metric"]] for _, r in frame.iterrows()]
    g = frame.groupby(["task", "method", "line", "budget"], sort=False)
    out = g.agg(quality=("quality", "mean"), quality_std=("quality", "std"), calls=("calls", "mean"),
                contexts_per_s=("contexts_per_s", "mean"), seconds=("seconds", "mean"), n=("seed", "nunique"))
    return out.reset_index()


def curve_area(budgets: Sequence[float], quality: Sequence[float]) -> float:
    """Mean quality over log10(budget) between the smallest and largest positive budget (trapezoid)."""
    pts = sorted((float(b), float(q)) for b, q in zip(budgets, quality) if b > 0 and np.isfinite(q))
    if len(pts) < 2:
        return pts[0][1] if pts else math.nan
    x = np.log10([b for b, _ in pts])
    y = np.array([q for _, q in pts])
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def line_curve(curve: pd.DataFrame, task: str, method: str) -> pd.DataFrame:
    """One method's curve as a user would run it: the generator alone up to K calls, then search
    (pipelines); the peer's own points otherwise."""
    sub = curve[(curve["task"] == task) & (curve["method"] == method)]
    if (sub["line"] == "peer").any():
        return sub.sort_values("budget")
    gen = sub[(sub["line"] == "generator") & (sub["budget"] <= K)]
    return pd.concat([gen, sub[sub["line"] == "search"]]).sort_values("budget")
