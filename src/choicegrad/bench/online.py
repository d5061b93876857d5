"""Online benchmark: design rounds with a landscape's ground truth as the oracle.

    records = run_online("ehrlich", ["designer", "genetic"], seeds=[0, 1, 2], out="runs/online")

Every method starts from the same measured rows (per context, a seeded random sample of the rows
below the context's median, or of all rows: OnlineSpec.start), then proposes `batch` new rows per
context per round for `rounds` rounds; each proposal is measured by the oracle and added to what the
method knows. A row fails when the oracle has no score for it (gb1's unmeasured variants) or scores
it as infeasible (ehrlich); methods see a failure as -inf. holo-ehrlich is holo-bench's Ehrlich
function (choicegrad.bench.tasks.holo; `pip install --no-deps pytorch-holo`), 32 positions x 32
states: too large to enumerate, it starts from feasible samples of its own Markov chain and is
judged on its known range (every feasible row in [0, 1], optimum 1).

Methods (ONLINE_METHODS):
designer  choicegrad.design.Designer with its defaults (round time capped by OnlineSpec.minutes).
genetic   the genetic peer's generation (choicegrad.bench.peers.breed: tournaments of 2, uniform
          crossover, per-slot mutation at 1/S, clones moved) bred from the best `batch` measured rows
          of the context; children never measured before, distinct; random rows fill a batch the
          children cannot.
random    uniform random rows never measured before.
offline   the one-shot pipeline (scorer + autoregressive/reinforce generator + polish decoding, as
          `choicegrad fit` + `generate`) fitted once on the start rows, asked for rounds x batch rows
          at once; its "round r" is its ranks up to r x batch.
A designer with other settings is named "designer:KEY=VALUE+KEY=VALUE" (DesignConfig fields).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError
from torch import Tensor

from choicegrad.bench.metrics import normalise
from choicegrad.bench.peers import breed
from choicegrad.bench.tasks import stats as st
from choicegrad.bench.tasks.holo import HoloEhrlich
from choicegrad.bench.tasks.landscape import Landscape
from choicegrad.bench.tasks.registry import get_task, missing_data
from choicegrad.data.table import load_table
from choicegrad.decoding import decode, default_budget
from choicegrad.decoding.rows import distinct_in_order, uniform_rows
from choicegrad.design import DesignConfig, Designer, Measured
from choicegrad.errors import did_you_mean
from choicegrad.generators import GeneratorConfig, TableContext, TableObjective
from choicegrad.io import atomic_write_text, meta_problem, write_table
from choicegrad.scorer.fit import ScorerFit, fit_scorer
from choicegrad.training.loop import GeneratorFit, fit_table_generator

ONLINE_METHODS = ("designer", "genetic", "random", "offline")


@dataclass(frozen=True)
class OnlineSpec:
    """One online task: the landscape (`task` and its options), the start (`start_rows` per context
    drawn from the rows below the median, or from all rows when start="random", or the task's own
    start when start="task": holo-ehrlich's feasible chain samples), the batch per context per
    round, the rounds, and the minutes each designer round may take."""

    task: str
    start: str = "below-median"
    start_rows: int = 1024
    batch: int = 128
    rounds: int = 4
    minutes: float = 0.5
    options: tuple = ()


ONLINE_TASKS = {
    "tfbind8": OnlineSpec("tfbind8", start_rows=1024, rounds=4),
    "gb1": OnlineSpec("gb1", start_rows=1024, rounds=4),
    "ehrlich": OnlineSpec("ehrlich", start="random", start_rows=128, batch=32, rounds=8),
    "nk3": OnlineSpec("nk3", start_rows=256, rounds=4),
    "holo-ehrlich": OnlineSpec("holo-ehrlich", start="task", start_rows=512, batch=200, rounds=10,
                               options=(("states", 32), ("length", 32), ("motifs", 2), ("motif_length", 4),
                                        ("quantization", 4))),
}
#: Online tasks that are an oracle only (no table of every row's score): name -> factory(**options), with
#: factory.missing() -> what is not installed (None: nothing).
ORACLE_TASKS = {"holo-ehrlich": HoloEhrlich}


def online_task(spec: OnlineSpec, data_dir: Optional[str | Path] = None):
    """The landscape (or oracle-only task) of an online spec."""
    if spec.task in ORACLE_TASKS:
        return ORACLE_TASKS[spec.task](**dict(spec.options))
    return get_task(spec.task, data_dir=data_dir, **dict(spec.options))


class Oracle:
    """A landscape as the lab: measure(ctx (N,), rows (N, S)) -> (N,) float64 scores, -inf for a row
    that fails: no score, a row the landscape does not flag as measured (gb1's imputed variants are
    no ground truth), or the landscape's `infeasible` value (ehrlich)."""

    def __init__(self, landscape: Landscape):
        self.landscape = landscape
        self.infeasible = getattr(landscape.model, "infeasible", None)

    def measure(self, ctx: Tensor, rows: Tensor) -> Tensor:
        y = self.landscape.oracle(ctx, rows).double()
        failed = torch.isnan(y) if self.infeasible is None else torch.isnan(y) | (y == self.infeasible)
        if self.landscape.measured is not None:
            failed |= ~self.landscape.measured[ctx, self.landscape.row_index(rows)]
        return y.masked_fill(failed, float("-inf"))


def start_rows(landscape: Landscape, spec: OnlineSpec, seed: int) -> tuple[Tensor, Tensor]:
    """(ctx (N,), row index (N,)): spec.start_rows seeded random rows per context from its pool (the
    scored, measured rows; below the context's median unless spec.start == "random")."""
    scores = landscape.scores
    pool = ~torch.isnan(scores)
    if landscape.measured is not None:
        pool &= landscape.measured
    if spec.start != "random":
        pool &= scores < st.nan_stats(scores.masked_fill(~pool, float("nan")))["median"][:, None]
    short = (pool.sum(1) < spec.start_rows).nonzero()[:, 0].tolist()
    if short:
        raise ValueError(f"start_rows: {spec.start_rows} rows per context, but context(s) {short[:5]} hold fewer "
                         f"in the {spec.start} pool of {landscape.name}")
    key = torch.rand(scores.shape, generator=torch.Generator().manual_seed(seed)).masked_fill(~pool, -1.0)
    index = key.topk(spec.start_rows, dim=1).indices                                # (C, n)
    ctx = torch.arange(scores.shape[0]).repeat_interleave(spec.start_rows)
    return ctx, index.flatten()


def _ids(ctx: Tensor) -> TableContext:
    """Context ids as the one categorical column of a TableContext (for Measured)."""
    return TableContext(ctx[:, None], torch.zeros(len(ctx), 0))


class History:
    """What one method has measured: ctx (N,), rows (N, S), y (N,) float64 (-inf = failed)."""

    def __init__(self, ctx: Tensor, rows: Tensor, y: Tensor, vocab: int):
        self.ctx, self.rows, self.y, self.vocab = ctx, rows, y, max(vocab, 2)

    def add(self, ctx: Tensor, rows: Tensor, y: Tensor) -> None:
        self.ctx, self.rows, self.y = torch.cat([self.ctx, ctx]), torch.cat([self.rows, rows]), torch.cat([self.y, y])

    def seen(self, ctx: Tensor, rows: Tensor) -> Tensor:
        """(N,) bool: rows (N, S) measured before in their contexts ctx (N,)."""
        return Measured(self.rows, _ids(self.ctx), self.vocab).contains(rows, _ids(ctx))


def fill_new(history: History, cands: Tensor, n: int) -> Tensor:
    """The first n candidates per context never measured and distinct: cands (C, M, S) -> (C, n, S).
    ValueError when some context has fewer than n."""
    C, M, S = cands.shape
    fresh = ~history.seen(torch.arange(C).repeat_interleave(M), cands.flatten(0, 1)).view(C, M)
    rows, ok = distinct_in_order(cands, fresh, n, history.vocab)
    if not bool(ok.all()):
        raise ValueError("fewer new rows than the batch")
    return rows


def random_batch(history: History, allowed: Tensor, n: int, rng: torch.Generator) -> Tensor:
    """n new uniform random rows per context: (C, n, S)."""
    for factor in (2, 8, 64):
        try:
            return fill_new(history, uniform_rows(allowed, factor * n, rng), n)
        except ValueError:
            continue
    raise ValueError("the space has too few unmeasured rows for a random batch")


def genetic_batch(history: History, allowed: Tensor, n: int, rng: torch.Generator) -> Tensor:
    """n new rows per context from an elitist genetic algorithm on the measured rows: (C, n, S)."""
    C, S, _ = allowed.shape
    P = n                                                       # parents: the best n measured rows per context
    y = history.y.float()
    order = torch.as_tensor(np.lexsort((-history.y.numpy(), history.ctx.numpy())))   # by context, best first
    counts = torch.bincount(history.ctx, minlength=C)
    starts = torch.cumsum(counts, 0) - counts
    at = starts[:, None] + torch.arange(P)[None, :] % counts[:, None].clamp(min=1)
    parents, fit = history.rows[order[at]], y[order[at]]        # (C, P, S), (C, P)
    child = breed(parents, fit, allowed, 4 * n, rng)                             # (C, 4n, S)
    cands = torch.cat([child, uniform_rows(allowed, 4 * n, rng)], 1)             # random rows as the reserve
    try:
        return fill_new(history, cands, n)
    except ValueError:
        return random_batch(history, allowed, n, rng)


def _frame(landscape: Landscape, ctx: Tensor, rows: Tensor, y: Tensor) -> pd.DataFrame:
    out = landscape.space.decode(rows)
    if landscape.context_column is not None:
        out.insert(0, landscape.context_column, np.asarray(landscape.context_labels, dtype=object)[ctx.numpy()])
    out["y"] = y.numpy()
    return out


class DesignerMethod:
    """The Designer, told the start rows, asked for a batch per round."""

    def __init__(self, landscape: Landscape, spec: OnlineSpec, history: History, seed: int, options: dict):
        self.landscape = landscape
        self.designer = Designer(landscape.space.names, "y", landscape.context_column,
                                 space={s.name: s.categories for s in landscape.space.slots},
                                 config=DesignConfig(seed=seed, max_minutes=spec.minutes, **options))
        self.designer.tell(_frame(landscape, history.ctx, history.rows, history.y))

    def propose(self, n: int) -> Tensor:
        batch = self.designer.ask(n)
        C = self.landscape.num_contexts
        if len(batch) != C * n:
            raise RuntimeError(f"the designer proposed {len(batch)} rows, expected {C * n}")
        order = np.lexsort((batch["rank"].to_numpy(), _context_ids(self.landscape, batch)))
        return self.landscape.space.encode(batch.iloc[order]).view(C, n, -1)

    def tell(self, ctx: Tensor, rows: Tensor, y: Tensor) -> None:
        self.designer.tell(_frame(self.landscape, ctx, rows, y))


def _context_ids(landscape: Landscape, frame: pd.DataFrame) -> np.ndarray:
    if landscape.context_column is None:
        return np.zeros(len(frame), dtype=np.int64)
    return pd.Index(landscape.context_labels).get_indexer(frame[landscape.context_column].astype(str))


def offline_rows(landscape: Landscape, history: History, n: int, minutes: float, seed: int) -> Tensor:
    """The one-shot pipeline's n best rows per context from the start rows: (C, n, S), best first."""
    frame = _frame(landscape, history.ctx, history.rows, history.y)
    data = load_table(frame[np.isfinite(frame["y"].to_numpy())], landscape.space.names, "y",
                      landscape.context_column, space={s.name: s.categories for s in landscape.space.slots})
    scorer = fit_scorer(data, ScorerFit(seed=seed, max_minutes=minutes / 2), progress=False).scorer
    gen = fit_table_generator(scorer, data, GeneratorConfig(kind="autoregressive"),
                              GeneratorFit(seed=seed, max_minutes=minutes / 2), progress=False).generator
    ctx = TableContext(*scorer.context.encode(landscape.context_frame(), "contexts")) \
        if landscape.context_column else TableContext.empty(1)
    cands = decode("polish", gen, TableObjective(scorer), ctx, n, budget=default_budget(n),
                   generator=torch.Generator().manual_seed(seed))
    return cands.rows


def parse_method(name: str) -> tuple[str, dict]:
    """'designer' -> ('designer', {}); 'designer:min_distance=3+kappa=2' -> ('designer', {...}): a
    designer with other DesignConfig settings. ValueError for an unknown method or setting."""
    base, _, rest = name.partition(":")
    if base not in ONLINE_METHODS:
        raise ValueError(f"unknown online method {base!r}; choose from {', '.join(ONLINE_METHODS)}")
    options = {}
    for item in filter(None, rest.split("+")):
        key, _, value = item.partition("=")
        if base != "designer" or key not in DesignConfig.model_fields:
            raise ValueError(f"{name!r}: {key!r} is not a designer setting")
        try:
            options[key] = json.loads(value) if value[:1].isdigit() or value.startswith(("-", "{", "[")) else value
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name!r}: {key}={value} is not valid JSON ({exc.msg})") from None
    try:
        DesignConfig(**options)                              # bad values fail here, before any round
    except ValidationError as exc:
        raise ValueError(f"{name!r}: {meta_problem(exc)}") from None
    return base, options


def request_problems(tasks: Sequence[str], methods: Sequence[str], data_dir: Optional[str | Path] = None) -> list[str]:
    """A line per unknown task or method of run_online ('tasks: ...', 'methods: ...') and per real
    landscape whose data is not found: checked before any round."""
    problems = [f'tasks: unknown task "{t}"{did_you_mean(t, list(ONLINE_TASKS))}; choose from {", ".join(ONLINE_TASKS)}'
                for t in tasks if t not in ONLINE_TASKS]
    for m in methods:
        try:
            parse_method(m)
        except ValueError as exc:
            problems.append(f"methods: {str(exc).splitlines()[0]}{did_you_mean(m, ONLINE_METHODS)}")
    named = list(dict.fromkeys(ONLINE_TASKS[t].task for t in tasks if t in ONLINE_TASKS))
    oracles = [f"tasks: {p}" for p in (ORACLE_TASKS[n].missing() for n in named if n in ORACLE_TASKS) if p]
    return problems + oracles + missing_data([n for n in named if n not in ORACLE_TASKS], data_dir)


def task_specs(tasks: Sequence[str], rounds: Optional[int] = None, batch: Optional[int] = None,
               minutes: Optional[float] = None) -> dict[str, OnlineSpec]:
    """ONLINE_TASKS' specs of `tasks`, with rounds, batch and designer minutes replaced where given."""
    change = {k: v for k, v in (("rounds", rounds), ("batch", batch), ("minutes", minutes)) if v is not None}
    return {t: replace(ONLINE_TASKS[t], **change) for t in tasks}


def run_method(landscape: Landscape, spec: OnlineSpec, method: str, seed: int,
               echo: Callable[[str], None] = lambda line: None, task: Optional[str] = None) -> list[dict]:
    """Rounds of one method from the start rows: one record per round (round 0: the start), named
    `task` (default: the landscape's name)."""
    task = task or landscape.name
    base, options = parse_method(method)
    oracle = Oracle(landscape)
    C, S = landscape.num_contexts, landscape.space.num_slots
    if spec.start == "task":                                   # an oracle-only task's own start
        rows0 = landscape.start(spec.start_rows, seed)
        ctx0 = torch.zeros(len(rows0), dtype=torch.long)
    else:
        ctx0, index0 = start_rows(landscape, spec, seed)
        rows0 = landscape.rows_at(index0)
    history = History(ctx0, rows0, oracle.measure(ctx0, rows0), landscape.space.max_size)
    allowed = landscape.space.mask().expand(C, -1, -1)
    rng = torch.Generator().manual_seed(seed)
    judge = Judge(landscape)
    run = {"task": task, "method": method, "seed": seed}
    records = [judge.record(run, history, 0, 0, 0.0)]
    agent = DesignerMethod(landscape, spec, history, seed, options) if base == "designer" else None
    offline = None
    if base == "offline":
        t0 = time.perf_counter()
        offline = offline_rows(landscape, history, spec.rounds * spec.batch, spec.minutes * 2, seed)
        offline_seconds = time.perf_counter() - t0
    failed_rows = History(ctx0[:0], rows0[:0], history.y[:0], landscape.space.max_size)
    for r in range(1, spec.rounds + 1):
        t0 = time.perf_counter()
        if base == "designer":
            batch = agent.propose(spec.batch)
        elif base == "genetic":
            batch = genetic_batch(history, allowed, spec.batch, rng)
        elif base == "random":
            batch = random_batch(history, allowed, spec.batch, rng)
        else:                                                  # offline: its ranks (r - 1) x batch .. r x batch
            batch = offline[:, (r - 1) * spec.batch: r * spec.batch]
        seconds = time.perf_counter() - t0 + (offline_seconds if base == "offline" and r == 1 else 0.0)
        ctx = torch.arange(C).repeat_interleave(spec.batch)
        rows = batch.reshape(-1, S)
        y = oracle.measure(ctx, rows)
        repeats = int(failed_rows.seen(ctx, rows).sum()) if len(failed_rows.y) else 0
        history.add(ctx, rows, y)
        bad = ~torch.isfinite(y)
        failed_rows.add(ctx[bad], rows[bad], y[bad])
        if agent is not None:
            agent.tell(ctx, rows, y)
        rec = judge.record(run, history, r, r * spec.batch, seconds, batch=(ctx, y))
        rec["failed_repeats"] = repeats
        records.append(rec)
        echo(f"{task} {method} seed {seed} round {r}: best {rec['best']:.3f}, solved {rec['solved']:.2f}, "
             f"batch median {rec['batch_median']:.3f}, failed {rec['failed_share']:.2f}, {seconds:.1f} s")
    return records


class Judge:
    """A round's figures by the landscape's ground truth, normalised per context ((y - min) / (max - min)
    over the rows with ground truth: truth (C, R), `stats` of them), means over contexts. An
    oracle-only task (no `scores`) gives its known range as `stats`; its top_share is NaN."""

    def __init__(self, landscape: Landscape):
        self.landscape = landscape
        if getattr(landscape, "scores", None) is None:
            self.truth, self.stats = None, landscape.stats
        else:
            self.truth = truth_mask(landscape)
            self.stats = st.nan_stats(landscape.scores.masked_fill(~self.truth, float("nan")))

    def record(self, run: dict, history: History, r: int, calls: int, seconds: float,
               batch: Optional[tuple[Tensor, Tensor]] = None) -> dict:
        """One row of online.csv: `run` (task, method, seed), round r after `calls` calls per context,
        best-so-far figures of `history` and (batch: the round's ctx (N,), y (N,)) the batch's."""
        C = self.landscape.num_contexts
        rec = {**run, "round": r, "calls": calls, "contexts": C, **self.best(history), "seconds": seconds,
               "batch_median": float("nan"), "failed_share": float("nan"), "failed_repeats": 0}
        if batch is not None:
            ctx, yb = batch
            vals = yb.float().masked_fill(~torch.isfinite(yb), float("nan"))
            norm = normalise(vals, {k: v[ctx] for k, v in self.stats.items()}).nan_to_num(0.0)   # failed: the worst
            rec["batch_median"] = float(norm.view(C, -1).median(1).values.mean())
            rec["failed_share"] = float((~torch.isfinite(yb)).float().mean())
        return rec

    def best(self, history: History) -> dict:
        """best (normalised best-so-far), solved (share of contexts at their optimum) and top_share
        (share of the rows with ground truth at least as good as the best so far), means over contexts."""
        stats = self.stats
        C = self.landscape.num_contexts
        y = history.y.float().masked_fill(~torch.isfinite(history.y), float("-inf"))
        best = torch.full((C,), float("-inf")).scatter_reduce(0, history.ctx, y, "amax")
        best_norm = normalise(best.clamp(min=float(stats["min"].min())), stats).clamp(min=0)
        solved = best >= stats["max"] - 1e-6
        if self.truth is None:
            top_share = torch.full((C,), float("nan"))
        else:
            top_share = ((self.landscape.scores >= best[:, None]) & self.truth).sum(1).float() / self.truth.sum(1)
        return {"best": float(best_norm.mean()), "solved": float(solved.float().mean()),
                "top_share": float(top_share.mean())}


def truth_mask(landscape: Landscape) -> Tensor:
    """(C, R) bool: rows with ground truth (scored, and flagged measured where the landscape flags rows)."""
    return ~torch.isnan(landscape.scores) if landscape.measured is None else landscape.measured


def run_online(tasks: Sequence[str], methods: Sequence[str], seeds: Sequence[int], out: str | Path,
               echo: Callable[[str], None] = print, specs: Optional[dict[str, OnlineSpec]] = None,
               data_dir: Optional[str | Path] = None, append: bool = False) -> pd.DataFrame:
    """Every (task, method, seed): rounds from the same start. Writes OUT/online.csv (one row per
    round) after each run, so a long benchmark shows its progress; returns the records. append:
    keep OUT/online.csv's other (task, method, seed) runs and OUT/specs.json's other tasks."""
    specs = {**ONLINE_TASKS, **(specs or {})}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    kept: dict = {}
    if append and (out / "online.csv").is_file():
        old = pd.read_csv(out / "online.csv")
        redo = old["task"].isin(tasks) & old["method"].isin(methods) & old["seed"].isin(seeds)
        records = old[~redo].to_dict("records")
        kept = json.loads((out / "specs.json").read_text()) if (out / "specs.json").is_file() else {}
    for task in tasks:
        spec = specs[task]
        landscape = online_task(spec, data_dir)
        for method in methods:
            for seed in seeds:
                records += run_method(landscape, spec, method, seed, echo, task)
                write_table(pd.DataFrame(records), out / "online.csv")
        atomic_write_text(out / "specs.json", json.dumps({**kept, **{t: asdict(specs[t]) for t in tasks}}, indent=2) + "\n")
    return pd.DataFrame(records)


def area(curve: pd.DataFrame) -> float:
    """Area under best-so-far above the start's best, against calls from the start (calls 0) to the
    last round, per call: what the rounds added (the start alone gives 0)."""
    c = curve.sort_values("calls")
    x, y = c["calls"].to_numpy(dtype=float), c["best"].to_numpy(dtype=float)
    if len(x) < 2 or x[-1] <= x[0]:
        return math.nan
    gain = y - y[0]
    return float(((gain[1:] + gain[:-1]) / 2 * np.diff(x)).sum() / (x[-1] - x[0]))
