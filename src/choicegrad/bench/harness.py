"""The benchmark harness: every method on the same tasks, scorer, contexts and scorer-call budget.

    results = run_benchmark(["potts", "nk3"], ["random", "anneal", "autoregressive/reinforce/polish"],
                            seeds=[0, 1, 2], out="runs/bench")

A *task* (choicegrad.bench.tasks.base.BenchmarkTask, by name from the one registry) knows the true score
of every row: its contexts, truth, statistics and training table are all the harness reads of it
(`Problem`). For a table task the harness fits one
scorer per task on the task's training table (rows below each context's median; seed 0, cached in
OUT/scorers/TASK and shared by every method and seed), enumerates the scorer over every row once
(for the scorer's gap closed and optimum), then runs each method on every context of the task:

- a peer (choicegrad.bench.peers: random, anneal, genetic, gradient-ascent, exhaustive) searches the
  scorer directly with `budget` scorer calls per context;
- a pipeline "GENERATOR/ESTIMATOR/DECODER" trains a generator with that gradient estimator (its
  training calls are counted apart, amortised over all contexts) and decodes K candidates with at
  most `budget` scorer calls per context. Pipelines that share generator, estimator and seed share
  one training run. On item tasks every generator is the pointer generator.

Item tasks: "items" (ItemSelectionTask: slot interactions, an item may fill several slots) and
"slates" (SlateTask: a page of DISTINCT items for expected clicks; its peers search distinct rows
only, its decoders score a row repeating an item -inf (DistinctItems)). Both train the pointer
generator of item runs, choicegrad.items.ITEM_GENERATOR (sequential; distinct=True on slates).

Candidates are scored by the task's ground truth (choicegrad.bench.metrics.candidate_report). Rows of
OUT/results.csv, OUT/curves.csv (quality vs diversity over sampling temperature) and
OUT/training.csv (validation score vs scorer calls) are rewritten after every method, so a long run
can be watched and an interrupted one still leaves its figures; OUT/report.md and plots come last.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pandas as pd
import torch
from torch import Tensor

from choicegrad import decoding, estimators
from choicegrad.bench import peers
from choicegrad.bench.metrics import candidate_report, normalise
from choicegrad.bench.report import write_report
from choicegrad.bench.report_format import machine_line, read_csv
from choicegrad.bench.tasks import BenchmarkTask, ItemTask, Landscape, get_task
from choicegrad.data.table import load_table
from choicegrad.decoding import Candidates, decode
from choicegrad.decoding.rows import enumerate_allowed, first_occurrence, row_keys
from choicegrad.decoding.scoring import score_grid
from choicegrad.errors import InputError, did_you_mean
from choicegrad.generators import GeneratorConfig, ItemObjective, TableContext, TableObjective, build
from choicegrad.generators.objective import DistinctItems
from choicegrad.generators.base import KINDS
from choicegrad.items import ITEM_GENERATOR
from choicegrad.progress import progress_bar
from choicegrad.scorer.aligner import AlignerFit, fit_aligner
from choicegrad.scorer.fit import ScorerFit, fit_scorer
from choicegrad.scorer.model import Scorer
from choicegrad.training.loop import GeneratorFit, SampledContexts, TableContexts, fit_generator
from choicegrad.io import atomic_write_text, write_table

TEMPERATURES = (0.25, 0.5, 1.0, 1.5, 2.0)
ESTIMATORS = tuple(estimators.available())
DEFAULT_PIPELINE = "autoregressive/reinforce/polish"


@dataclass(frozen=True)
class TaskSpec:
    """How one task is benchmarked. budget: scorer calls per context at search / decoding time."""

    name: str
    headline: str
    budget: int
    k: int = 128
    kind: str = "table"                      # the task's kind (BenchmarkTask.kind): "table", "contextual" or "items"
    protocol: str = "below-median"           # training table: "below-median" or "random" rows (contextual: "random")
    train_rows: Optional[int] = None         # subsample of the training table (None: all of it)
    scorer_epochs: Optional[int] = None
    scorer_minutes: float = 5.0
    scorer_ensemble: int = 1                 # members; the objective is mean - scorer_beta * std
    scorer_beta: float = 0.0
    scorer_fit: dict = field(default_factory=dict, hash=False)   # other ScorerFit settings, e.g. {"keep": "last"}
    steps: int = 300                         # generator training steps
    train_minutes: float = 0.5               # cap per generator training run
    options: dict = field(default_factory=dict, hash=False)
    contexts: int = 256                      # contextual tasks: unseen evaluation contexts

    @property
    def seen(self) -> bool:
        """Whether the evaluation contexts are contexts the scorer and generator trained on."""
        return self.kind == "table"


# Table tasks: budget = 1% of a context's rows (issue 7's "1% of enumeration"). Synthetic tasks fit
# the scorer on random rows (so the scorer gap measures search), real landscapes on the rows below
# each context's median (the offline-design protocol of DESIGN.md).
SPECS = {
    "potts": TaskSpec("potts", "gap_oracle", budget=2621, protocol="random", train_rows=30_000, scorer_epochs=40),
    "nk2": TaskSpec("nk2", "gap_oracle", budget=655, protocol="random", train_rows=30_000, scorer_epochs=40),
    "nk3": TaskSpec("nk3", "gap_oracle", budget=655, protocol="random", train_rows=30_000, scorer_epochs=40),
    "nk4": TaskSpec("nk4", "gap_oracle", budget=655, protocol="random", train_rows=30_000, scorer_epochs=40),
    "ehrlich": TaskSpec("ehrlich", "gap_oracle", budget=3906, protocol="random", train_rows=30_000, scorer_epochs=40),
    "items": TaskSpec("items", "top1", budget=200, k=16, kind="items"),
    # slates of distinct items, at the scorer calls per list `choicegrad generate` spends by default (ITEM_BUDGET)
    "slates": TaskSpec("slates", "top1", budget=64, k=16, kind="items"),
    "tfbind8": TaskSpec("tfbind8", "max", budget=655, scorer_epochs=8, steps=400, train_minutes=0.75),
    "gb1": TaskSpec("gb1", "max", budget=1600, scorer_epochs=40),
    "pard3": TaskSpec("pard3", "max", budget=256, scorer_epochs=60),  # 1% (80) is below K = 128
    # contextual tasks: a log of 40,000 rows, one context per row; 256 unseen evaluation contexts
    "potts-ctx": TaskSpec("potts-ctx", "gap_oracle", budget=655, k=16, kind="contextual", protocol="random",
                          train_rows=40_000, scorer_epochs=40, steps=1500, train_minutes=1.5),
    "mixed-ctx": TaskSpec("mixed-ctx", "gap_oracle", budget=655, k=16, kind="contextual", protocol="random",
                          train_rows=40_000, scorer_epochs=40, steps=1500, train_minutes=1.5),
}
STANDARD_TASKS = ("potts", "nk3", "ehrlich", "items", "slates", "tfbind8", "gb1")
STANDARD_METHODS = (
    "random", "anneal", "genetic", "gradient-ascent", "exhaustive",
    *(f"autoregressive/{e}/polish" for e in ESTIMATORS),
    *(f"autoregressive/reinforce/{d}" for d in ("argmax", "sample", "topk", "rerank", "anneal")),
    "factorized/reinforce/polish", "factorized/st-gumbel/polish",
)
# Issue 7's targets for the default pipeline (the defaults of `choicegrad fit` / `generate`), and issue
# 29's for slates: (task, metric, ">=" or "<=", value); "ratio" is the headline over the best peer's at
# the same budget.
TARGETS = (
    ("tfbind8", "max", ">=", 0.97), ("tfbind8", "median", ">=", 0.80), ("tfbind8", "distinct", ">=", 100),
    ("tfbind8", "calls_generate", "<=", 655),
    ("potts", "gap_scorer", ">=", 0.995), ("potts", "hit_scorer", ">=", 0.90), ("potts", "calls_generate", "<=", 2621),
    ("nk3", "gap_scorer", ">=", 0.98), ("nk3", "hit_scorer", ">=", 0.60), ("nk3", "calls_generate", "<=", 655),
    ("gb1", "ratio", ">=", 1.0), ("ehrlich", "ratio", ">=", 1.0), ("items", "ratio", ">=", 1.0),
    ("slates", "top1", ">=", 0.98), ("slates", "ratio", ">=", 1.0),
)
QUICK_METHODS = ("random", "anneal", "gradient-ascent", "exhaustive", DEFAULT_PIPELINE,
                 "factorized/st-gumbel/polish")


# --- methods --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    peer: Optional[str] = None
    generator: str = ""
    estimator: str = ""
    decoder: str = ""

    @property
    def family(self) -> str:
        return "peer" if self.peer else "choicegrad"


def parse_method(name: str) -> Method:
    """'anneal' (a peer), 'default' or 'GENERATOR/ESTIMATOR/DECODER' (a pipeline)."""
    if name in peers.PEERS:
        return Method(name, peer=name)
    if name == "default":
        name = DEFAULT_PIPELINE
    parts = name.split("/")
    if len(parts) != 3:
        raise ValueError(f"method {name!r}: expected a peer ({', '.join(peers.PEERS)}) or GENERATOR/ESTIMATOR/DECODER, "
                         f"e.g. {DEFAULT_PIPELINE}{did_you_mean(name, list(peers.PEERS))}")
    gen, est, dec = parts
    for value, options, what in ((gen, KINDS, "generator"), (dec, decoding.DECODERS, "decoder"),
                                 (est, estimators.available(), "gradient estimator")):
        if value not in options:
            raise ValueError(f"method {name!r}: unknown {what} {value!r}{did_you_mean(value, list(options))}; "
                             f"choose one of {', '.join(options)}")
    return Method(name, generator=gen, estimator=est, decoder=dec)


# --- one task, ready to be searched -------------------------------------------------------------
STAT_KEYS = ("min", "max", "mean")
ITEM_CONTEXTS = 64        # item tasks: lists judged, drawn apart from training (seed 1234)


@dataclass
class Problem:
    """One task (a BenchmarkTask) ready to be searched: what every method shares on it. B contexts.

    task_ctx: the B evaluation contexts as the task takes them (task.contexts); ctx: the same
    contexts as the objective and generators take them (TableContext, or the task's ItemContext);
    objective(x, ctx) -> (N,): the scorer (table and contextual tasks) or the task's reward (items);
    allowed (B, S, V) in the objective's categories; stats / scorer_stats: (B,) min, max, mean of the
    ground truth / of the objective over every row; contexts: where generator training draws
    contexts; scorer: None for item tasks; to_task (S, V): the scorer's category index -> the
    task's, per slot; seen (C, R) bool: the training rows of a table task (for the share of new
    candidates), None otherwise; data: the training TableData (None for item tasks).
    """

    spec: TaskSpec
    task: BenchmarkTask
    task_ctx: Any
    objective: Callable
    ctx: Any
    allowed: Tensor
    stats: dict
    scorer_stats: dict
    exhaustive: Candidates
    exhaustive_seconds: float
    contexts: Any
    setup: dict = field(default_factory=dict)
    scorer: Optional[Scorer] = None
    to_task: Optional[Tensor] = None
    seen: Optional[Tensor] = None
    data: Any = None
    _aligner: Any = None

    @property
    def distinct(self) -> bool:
        """Rows are slates of distinct items: peers search those only."""
        return self.task.distinct

    def task_rows(self, rows: Tensor) -> Tensor:
        """(..., S) long rows in the objective's categories -> the task's categories."""
        if self.to_task is None:
            return rows
        S = rows.shape[-1]
        return self.to_task[torch.arange(S), rows.clamp(min=0)]

    def truth(self, rows: Tensor) -> Tensor:
        """rows (B, M, S) long -> (B, M) ground truth of the B evaluation contexts."""
        return self.task.truth(self.task_ctx, self.task_rows(rows))

    def is_new(self, rows: Tensor) -> Optional[Tensor]:
        """rows (B, M, S) long -> (B, M) bool: not a training row of its context (None: not defined)."""
        if self.seen is None:
            return None
        B, M, S = rows.shape
        idx = self.task.row_index(self.task_rows(rows.reshape(B * M, S))).reshape(B, M)
        return ~self.seen[self.task_ctx].gather(1, idx)

    def new_generator(self, kind: str):
        """A fresh generator of `kind` for the task (item tasks: the pointer generator, the item runs'
        distinct one for slates)."""
        if self.scorer is not None:
            return build(GeneratorConfig(kind=kind), space=self.scorer.space, context=self.scorer.context)
        S, D = self.task.num_slots, self.ctx.items.shape[-1]
        if self.distinct:
            return build(ITEM_GENERATOR, num_slots=S, item_dim=D, sequential=True, distinct=True)
        return build(ITEM_GENERATOR, num_slots=S, item_dim=D, sequential=True)

    def aligner(self):
        """The task's Aligner over its scorer (fitted once, seed 0), or None without data rows."""
        if self.data is None:
            return None
        if self._aligner is None:
            result = fit_aligner(self.objective.scorer, self.data, AlignerFit(seed=0, max_minutes=1.0), progress=False)
            self._aligner = result.aligner
            self.setup["aligner_seconds"] = round(result.seconds, 1)
        return self._aligner


def _scorer_for(spec: TaskSpec, frame: pd.DataFrame, data, cache: Path):
    """Fit (or load the cached) scorer of a task's training table."""
    fit = ScorerFit(**{"epochs": spec.scorer_epochs, "max_minutes": spec.scorer_minutes, "seed": 0,
                       "ensemble": spec.scorer_ensemble, "beta": spec.scorer_beta, **spec.scorer_fit})
    key = hashlib.sha1(json.dumps([spec.name, spec.options, len(frame), float(frame["y"].sum()), fit.model_dump()],
                                  sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = cache / f"{spec.name}-{key}"
    if (folder / "scorer.safetensors").is_file():
        info = json.loads((folder / "fit.json").read_text())
        return Scorer.load(folder), info
    result = fit_scorer(data, fit, progress=False)
    info = {"seconds": round(result.seconds, 1), "rows": len(data), "metrics": result.metrics}
    result.scorer.save(folder)
    (folder / "fit.json").write_text(json.dumps(info, indent=2))
    return result.scorer, info


def _category_map(scorer: Scorer, task: BenchmarkTask) -> Tensor:
    """(S, V) scorer category index -> task category index per slot (vocabularies are both label sets)."""
    to_task = torch.full((task.num_slots, scorer.space.max_size), -1, dtype=torch.long)
    for s, (mine, theirs) in enumerate(zip(scorer.space.slots, task.space.slots)):
        where = {label: i for i, label in enumerate(theirs.categories)}
        to_task[s, : len(mine.categories)] = torch.tensor([where[c] for c in mine.categories])
    return to_task


def scorer_problem(task: BenchmarkTask, spec: TaskSpec, cache: Path) -> Problem:
    """A table or contextual task: one scorer fitted on the task's training table (spec.protocol,
    spec.train_rows, seed 0; cached in `cache`); methods judged on task.contexts(spec.contexts,
    seed=1): a table task's own contexts (seen), a contextual task's contexts drawn apart from the
    log (unseen)."""
    frame = task.training_table(spec.protocol, n=spec.train_rows, seed=0)
    data = load_table(frame, task.space.names, "y", task.context_columns)
    scorer, info = _scorer_for(spec, frame, data, cache)
    task_ctx = task.contexts(spec.contexts, seed=1)
    if task.context_columns:
        ctx = TableContext(*scorer.context.encode(task.context_frame(task_ctx), f"task {spec.name}"))
    else:
        ctx = TableContext.empty(1)
    B = len(ctx)
    allowed = scorer.space.mask().unsqueeze(0).expand(B, -1, -1)
    objective = TableObjective(scorer)
    exhaustive, ex_seconds, scorer_stats = _scorer_enumeration(objective, ctx, allowed, spec.k)
    truth_stats = task.statistics(task_ctx)
    stats = {k: truth_stats[k].float() for k in STAT_KEYS}
    to_task = _category_map(scorer, task)
    seen = _training_rows(task, frame, data, to_task) if task.kind == "table" else None
    setup = {"scorer_seconds": info["seconds"], "scorer_rows": info["rows"], "contexts": B,
             **({} if task.kind == "table" else {"seen": False}),
             "scorer_test": info["metrics"].get("test", {}), "exhaustive_seconds": round(ex_seconds, 2)}
    return Problem(spec, task, task_ctx, objective, ctx, allowed, stats, scorer_stats, exhaustive, ex_seconds,
                   TableContexts(data), setup, scorer, to_task, seen, data)


def _training_rows(task: Landscape, frame: pd.DataFrame, data, to_task: Tensor) -> Tensor:
    """(C, R) bool: the rows of a landscape's training table, per context."""
    S = task.num_slots
    train_rows = to_task[torch.arange(S), data.rows.clamp(min=0)]
    if task.context_column:
        labels = {label: i for i, label in enumerate(task.context_labels)}
        ctx_ids = torch.tensor(frame[task.context_column].astype(str).map(labels).to_numpy(), dtype=torch.long)
    else:
        ctx_ids = torch.zeros(len(frame), dtype=torch.long)
    seen = torch.zeros(task.num_contexts, task.num_rows, dtype=torch.bool)
    seen[ctx_ids, task.row_index(train_rows)] = True
    return seen


def _scorer_enumeration(objective, ctx, allowed, k: int) -> tuple[Candidates, float, dict]:
    """The scorer on every row of every context, once: the exhaustive peer's k best rows, the seconds
    it took, and the scorer's max / mean / min per context (for its gap closed)."""
    start = time.perf_counter()
    full, every = _objective_landscape(objective, ctx, allowed)
    top = full.topk(k, dim=1)
    exhaustive = Candidates(every[top.indices], top.values, torch.ones_like(top.values, dtype=torch.bool),
                            full.numel())
    seconds = time.perf_counter() - start
    return exhaustive, seconds, {"max": full.max(1).values, "mean": full.mean(1), "min": full.min(1).values}


def _objective_landscape(objective, ctx, allowed, chunk: int = 1 << 16) -> tuple[Tensor, Tensor]:
    """(B, R) objective of every row of every context, and the (R, S) rows (allowed is the same
    in every context)."""
    B = len(ctx)
    rows, ok, total = enumerate_allowed(allowed[:1])
    out = torch.empty(B, total)
    per = max(1, chunk // max(1, B))
    for start in range(0, total, per):
        part = rows[start:start + per]
        scores, _ = score_grid(objective, part.unsqueeze(0).expand(B, -1, -1), ctx, chunk=chunk)
        out[:, start:start + per] = scores
    return out, rows


def items_problem(task: ItemTask, spec: TaskSpec, contexts: int = ITEM_CONTEXTS) -> Problem:
    """An item task on `contexts` lists drawn apart from training (unseen lists; seed 1234). The
    task's reward is the objective; a task with distinct items (SlateTask) is searched and decoded
    through DistinctItems (a row repeating an item scores -inf), its peers with distinct=True, its
    generator the item runs' pointer generator with distinct=True."""
    ctx = task.contexts(contexts, seed=1234)
    values, _ = task.enumerate_truth(ctx)
    finite = torch.isfinite(values)
    scale = float(values[finite].std()) or 1.0
    reward = ItemObjective(task.reward, scale=scale)
    objective = DistinctItems(reward) if task.distinct else reward
    allowed = task.allowed(ctx)
    truth_stats = task.statistics(ctx)
    stats = {k: truth_stats[k].float() for k in STAT_KEYS}
    start = time.perf_counter()
    exhaustive = peers.search("exhaustive", objective, ctx, allowed, spec.k, budget=1, generator=torch.Generator(),
                              distinct=task.distinct)
    ex_seconds = time.perf_counter() - start
    setup = {"contexts": contexts, "exhaustive_seconds": round(ex_seconds, 2), "max_items": ctx.items.shape[1],
             "distinct": task.distinct}
    return Problem(spec, task, ctx, objective, ctx, allowed, stats, dict(stats), exhaustive, ex_seconds,
                   SampledContexts(task.draw), setup)


def build_problem(name: str, data_dir: Optional[Path], cache: Path, specs: Optional[dict] = None) -> Problem:
    """The registered task `name` (get_task with its spec's options) ready to be searched."""
    specs = {**SPECS, **(specs or {})}
    if name not in specs:
        raise ValueError(f"unknown task {name!r}{did_you_mean(name, list(specs))}; choose from {', '.join(specs)}")
    spec = specs[name]
    task = get_task(spec.name, data_dir=data_dir, **spec.options)
    if task.kind != spec.kind:
        raise ValueError(f"task {name!r}: its spec says kind {spec.kind!r}, the task is of kind {task.kind!r}")
    if task.kind == "items":
        return items_problem(task, spec)
    return scorer_problem(task, spec, cache)


# --- measuring ----------------------------------------------------------------------------------
class PeakMemory:
    """Peak resident memory (MB) of this process above its level at entry (Linux: resets VmHWM)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        self.start = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak_mb = max(0.0, self._status("VmHWM") - self.start)

    @staticmethod
    def _status(key: str) -> float:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate(problem: Problem, cands: Candidates) -> dict[str, float]:
    """Ground-truth metrics of candidates (B, K) ordered best first by the objective."""
    true = problem.truth(cands.rows.clamp(min=0))
    new = problem.is_new(cands.rows.clamp(min=0))
    return candidate_report(true, cands.valid, stats=problem.stats, scorer=cands.scores,
                            scorer_stats=problem.scorer_stats, new=new)


def quality_diversity(problem: Problem, gen, seed: int, temperatures=TEMPERATURES) -> list[dict]:
    """Per temperature: K rows sampled from the generator -> distinct count, median / max normalised
    truth of the K samples, truth of the sample the objective ranks first (diagnostic calls, not counted)."""
    out = []
    rng = torch.Generator().manual_seed(10_000 + seed)
    for t in temperatures:
        with torch.no_grad():
            rows = gen.sample(problem.ctx, problem.spec.k, t, None, rng)
            scores, _ = score_grid(problem.objective, rows, problem.ctx)
        norm = normalise(problem.truth(rows), problem.stats)
        keys = row_keys(rows, problem.allowed.shape[-1])
        distinct = first_occurrence(keys, torch.ones_like(keys, dtype=torch.bool)).sum(1).float()
        first = norm.gather(1, scores.argmax(1, keepdim=True))[:, 0]
        out.append({"temperature": t, "distinct": float(distinct.mean()), "median": float(norm.quantile(0.5, dim=1).mean()),
                    "max": float(norm.max(1).values.mean()), "top1": float(first.mean())})
    return out


def run_peer(problem: Problem, method: Method, seed: int) -> dict:
    spec = problem.spec
    if method.peer == "exhaustive":  # computed once per task, when the problem was built
        cands, seconds, mem = problem.exhaustive, problem.exhaustive_seconds, float("nan")
    else:
        with PeakMemory() as pm:
            start = time.perf_counter()
            cands = peers.search(method.peer, problem.objective, problem.ctx, problem.allowed, spec.k,
                                 budget=spec.budget, generator=torch.Generator().manual_seed(seed),
                                 distinct=problem.distinct)
            seconds = time.perf_counter() - start
        mem = pm.peak_mb
    return {**evaluate(problem, cands), "calls_generate": cands.scorer_calls / len(problem.ctx), "calls_train": 0,
            "seconds_train": 0.0, "seconds_generate": seconds, "peak_mb": mem}


def train_pipeline(problem: Problem, method: Method, seed: int, progress: bool):
    spec = problem.spec
    torch.manual_seed(seed)
    gen = problem.new_generator(method.generator)
    fit = GeneratorFit(method=method.estimator, steps=spec.steps, seed=seed, max_minutes=spec.train_minutes)
    with PeakMemory() as pm:
        aligner = problem.aligner() if estimators.get_class(method.estimator).needs_aligner else None
        result = fit_generator(gen, problem.objective, problem.contexts, fit, progress=progress, aligner=aligner)
    return result, pm.peak_mb


def run_pipeline(problem: Problem, method: Method, seed: int, trained) -> dict:
    spec = problem.spec
    result, train_mb = trained
    with PeakMemory() as pm:
        start = time.perf_counter()
        cands = decode(method.decoder, result.generator, problem.objective, problem.ctx, spec.k,
                       budget=spec.budget, generator=torch.Generator().manual_seed(seed))
        seconds = time.perf_counter() - start
    return {**evaluate(problem, cands), "calls_generate": cands.scorer_calls / len(problem.ctx),
            "calls_train": result.scorer_calls, "seconds_train": result.seconds, "seconds_generate": seconds,
            "peak_mb": max(train_mb, pm.peak_mb)}


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_table(frame, path)


def _kept(out: Path, tasks: Sequence[str]) -> tuple[dict[str, pd.DataFrame], dict, list[str]]:
    """What `update` keeps of an earlier run in OUT: its csv frames and setup without `tasks`, and
    its order of tasks. InputError for a file that is not a benchmark output."""
    from choicegrad.io import read_json_object

    frames, order = {}, []
    for name in ("results", "curves", "training"):
        old = read_csv(out / f"{name}.csv")
        if old is None:
            continue
        if "task" not in old.columns:
            raise InputError("--update", [f"{out / name}.csv has no task column: not a choicegrad bench output"])
        order += [t for t in dict.fromkeys(old["task"]) if t not in order]
        frames[name] = old[~old["task"].isin(tasks)]
    path = out / "setup.json"
    setup = read_json_object(path) if path.is_file() else {}
    return frames, {k: v for k, v in setup.items() if k not in tasks}, order


def _joined(kept: Optional[pd.DataFrame], rows: list[dict], order: Sequence[str] = ()) -> pd.DataFrame:
    """Kept rows and new ones, tasks in `order` (a re-run task keeps its place), others after."""
    new = pd.DataFrame(rows)
    if kept is None or not len(kept):
        return new
    if not rows:
        return kept.reset_index(drop=True)
    frame = pd.concat([kept, new], ignore_index=True)
    rank = {t: i for i, t in enumerate(dict.fromkeys([*order, *frame["task"]]))}
    return frame.sort_values("task", key=lambda c: c.map(rank), kind="stable").reset_index(drop=True)


def run_benchmark(tasks: Sequence[str], methods: Sequence[str], seeds: Sequence[int], out: str | Path, *,
                  data_dir: Optional[str | Path] = None, progress: Optional[bool] = None,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
                  report: bool = True, specs: Optional[dict[str, TaskSpec]] = None,
                  update: bool = False) -> pd.DataFrame:
    """Run every method on every task for every seed; write OUT/results.csv, curves.csv,
    training.csv, setup.json and (report=True) OUT/report.md with plots. Returns the results.
    specs: task settings replacing those of SPECS by name (e.g. smaller tasks for a quick check).
    update: keep the other tasks' results already in OUT and replace only those of `tasks` (re-run
    one task of a suite); setup.json records each update under "_updates".
    Many parameters: the flags of `choicegrad bench` plus the log, report and specs that scripts set."""
    parsed = [parse_method(m) for m in methods]
    known = {**SPECS, **(specs or {})}
    for t in tasks:
        if t not in known:
            raise ValueError(f"unknown task {t!r}{did_you_mean(t, list(known))}; choose from {', '.join(known)}")
    bench = _BenchRun(Path(out), tasks, update, progress, log)
    data_dir = Path(data_dir) if data_dir is not None else None
    for task_name in tasks:
        bench.say(f"{task_name}: building the task and its scorer")
        bench.run_task(task_name, build_problem(task_name, data_dir, bench.out / "scorers", specs), parsed, seeds)
    frame = bench.joined("results")
    if report and len(frame):
        write_report(bench.out)
    return frame


class _BenchRun:
    """One run_benchmark call: OUT, the rows measured so far (results, curves, training), what an
    update keeps of OUT (kept frames, setup, the order of tasks) and the clock. Every csv is rewritten
    after each method, setup.json after each task."""

    def __init__(self, out: Path, tasks: Sequence[str], update: bool, progress: Optional[bool],
                 log: Callable[[str], None]):
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.tasks, self.progress, self.log = out, tasks, progress, log
        self.rows: dict[str, list[dict]] = {"results": [], "curves": [], "training": []}
        self.kept: dict[str, pd.DataFrame] = {}
        self.setup: dict = {}
        self.order: list[str] = []
        self.update = update and (out / "results.csv").is_file()    # nothing to keep: an ordinary run
        if self.update:
            self.kept, self.setup, self.order = _kept(out, tasks)
        else:
            self.setup["_machine"] = machine_line()
        self.updates = list(self.setup.get("_updates", []))
        self.started = time.perf_counter()

    def say(self, text: str) -> None:
        self.log(f"[{time.perf_counter() - self.started:6.0f}s] {text}")

    def joined(self, name: str) -> pd.DataFrame:
        """OUT/NAME.csv as it stands: kept rows and the new ones (_joined)."""
        return _joined(self.kept.get(name), self.rows[name], self.order)

    def run_task(self, task_name: str, problem: Problem, methods: Sequence[Method], seeds: Sequence[int]) -> None:
        spec = problem.spec
        self.setup[task_name] = {**problem.setup, "budget": spec.budget, "k": spec.k, "steps": spec.steps,
                                 "headline": spec.headline}
        bar = progress_bar(len(methods) * len(seeds), task_name, "run", self.progress)
        for seed in seeds:
            trained: dict[tuple[str, str], Any] = {}      # (generator, estimator) -> its training, shared by decoders
            for method in methods:
                self.run_method(task_name, problem, method, seed, trained, seed == seeds[0])
                bar.update(1)
            self.write_extras()
        bar.close()
        self.setup[task_name].update(problem.setup)   # e.g. the aligner's fitting time, known only now
        self.write_setup(task_name)

    def run_method(self, task_name: str, problem: Problem, method: Method, seed: int, trained: dict,
                   first: bool) -> None:
        """One method on the task for one seed -> a results row (a pipeline trained once per `trained`
        key); nothing for a method the task cannot run (told on the `first` seed) or one already run."""
        spec = problem.spec
        gen_kind = "pointer" if spec.kind == "items" else method.generator
        if method.estimator and estimators.get_class(method.estimator).needs_aligner and problem.data is None:
            if first:
                self.log(f"{task_name}: {method.name} skipped: the aligner needs data rows, this task has none")
            return
        if method.peer:
            row = run_peer(problem, method, seed)
            name = method.name
        else:
            name = f"{gen_kind}/{method.estimator}/{method.decoder}"
            if any(r["method"] == name and r["seed"] == seed and r["task"] == task_name for r in self.rows["results"]):
                return  # e.g. two table generators that both mean the pointer generator here
            key = (gen_kind, method.estimator)
            if key not in trained:
                trained[key] = self.train(task_name, problem, Method(name, None, method.generator, method.estimator),
                                          gen_kind, seed)
            row = run_pipeline(problem, Method(name, None, method.generator, method.estimator, method.decoder),
                               seed, trained[key])
        self.record({"task": task_name, "method": name, "family": method.family,
                     "generator": "" if method.peer else gen_kind, "estimator": method.estimator,
                     "decoder": method.decoder, "seed": seed, "contexts": len(problem.ctx), "seen": spec.seen,
                     "k": spec.k, **row, "headline": spec.headline, "budget": spec.budget})

    def train(self, task_name: str, problem: Problem, method: Method, gen_kind: str, seed: int):
        """train_pipeline, its validation history added to the training rows and its quality-diversity
        curve to the curves rows. -> train_pipeline's (result, peak MB)."""
        trained = train_pipeline(problem, method, seed, bool(self.progress))
        res, label = trained[0], f"{gen_kind}/{method.estimator}"
        self.rows["training"] += [{"task": task_name, "method": label, "seed": seed, "step": h["step"],
                                   "scorer_calls": h.get("scorer_calls"), "seconds": h.get("seconds"),
                                   "val_score": h.get("val_score")}
                                  for h in res.history if h.get("phase") == "val"]
        self.rows["curves"] += [{"task": task_name, "method": label, "seed": seed, **c}
                                for c in quality_diversity(problem, res.generator, seed)]
        return trained

    def record(self, r: dict) -> None:
        """Add a results row, log its figures and rewrite OUT/results.csv."""
        self.rows["results"].append(r)
        headline = r["headline"]
        head = "" if headline in ("max", "median") else f"{headline} {r[headline]:.3f}, "
        self.say(f"{r['task']} seed {r['seed']} {r['method']}: {head}max {r['max']:.3f}, median {r['median']:.3f}, "
                 f"distinct {r['distinct']:.0f}, calls/context {r['calls_generate']:.0f}")
        _write_csv(self.joined("results"), self.out / "results.csv")

    def write_extras(self) -> None:
        """Rewrite OUT/curves.csv and training.csv (an update also drops the re-run task's old rows)."""
        for name in ("curves", "training"):
            if self.rows[name] or self.update:
                frame = self.joined(name)
                if len(frame):
                    _write_csv(frame, self.out / f"{name}.csv")
                else:
                    (self.out / f"{name}.csv").unlink(missing_ok=True)

    def write_setup(self, task_name: str) -> None:
        """Rewrite OUT/setup.json after `task_name`: the wall time, or (update) the tasks updated so far."""
        if self.update:
            done = list(self.tasks[:self.tasks.index(task_name) + 1])
            self.setup["_updates"] = self.updates + [{"tasks": done, "date": time.strftime("%Y-%m-%d"),
                                                      "seconds": round(time.perf_counter() - self.started, 1)}]
            self.setup = {k: self.setup[k] for k in dict.fromkeys([*self.order, *self.setup]) if k in self.setup}
        else:
            self.setup["_wall_seconds"] = round(time.perf_counter() - self.started, 1)
        atomic_write_text(self.out / "setup.json", json.dumps(self.setup, indent=2, default=float) + "\n")
