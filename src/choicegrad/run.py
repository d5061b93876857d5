"""A run folder: the one way to fit, load and use a scorer + generator (+ aligner) together.

    run = Run.fit("table.csv", "runs/one", TableSpec(features="s?", score="y", context="ctx"),
                  generator_fit=GeneratorFit(method="reinforce", steps=400))
    run = Run.load("runs/one")                   # validated: the files belong together
    top = run.generate(k=10, fix={"s0": "a"})    # DataFrame: context columns, features, score, rank

RUN holds scorer.{safetensors,json}, scorer_metrics.json, generator.{safetensors,json},
aligner.{safetensors,json} and aligner_fit.json (the `aligner` method only), contexts.csv (distinct
training contexts, when there are context columns), metrics.csv (generator training), config.json
(resolved settings and results) and run.json (run id and every file's sha256: see
choicegrad.runfolder for how a run folder is built, locked, resumed and checked). Errors name the
library argument (`fix`, `k`, `decoder`, ...) or the file; the CLI maps arguments to its flags.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from choicegrad import distributed, generators
from choicegrad.fitting import (GENERATOR_DECODERS, SCORER_METRICS, FitOptions, check_method, generate_problems, minutes_left,
                                read_config, read_scorer_result, training_summary)
from choicegrad.checkpoints import seeded_rng
from choicegrad.device import check_device
from choicegrad.io import (atomic_write_text, check_finite, meta_problem, read_json_object, read_table, sha256_file,
                           versions, write_table)
from choicegrad.data import ChoiceSpace, ContextEncoder
from choicegrad.data.context import ContextRangeWarning
from choicegrad.data.space import read_space
from choicegrad.data.split import hold_out_upper
from choicegrad.data.stream import GENERATOR_ROWS, ParquetTable, parquet_files, scan_parquet
from choicegrad.data.table import TableData, load_table
from choicegrad.decoding import candidates_frame, decode, default_budget
from choicegrad.decoding.decoders import ENUMERATING
from choicegrad.decoding.fix import Fix, parse_fix
from choicegrad.decoding.rows import MAX_ENUMERATE
from choicegrad.errors import InputError
from choicegrad.estimators import get_class
from choicegrad.generators import GeneratorConfig, TableContext, TableObjective, check_generator_fits
from choicegrad.generators.objective import GeneratorLogProb, as_objective
from choicegrad.runfolder import RankView, RunWriter, check_out_path, read_run, run_writer
from choicegrad.scorer.aligner import Aligner, AlignerFit, fit_aligner
from choicegrad.scorer.fit import ScorerFit, ScorerResult, fit_scorer, fit_scorer_stream
from choicegrad.scorer.model import Scorer
from choicegrad.training.contexts import ContextPool, TableContexts
from choicegrad.training.loop import GeneratorFit, GeneratorResult, fit_generator, fit_table_generator
from choicegrad.training.step import check_trainable

RUN_FILES = ("scorer.safetensors", "scorer.json", "generator.safetensors", "generator.json")
#: What a run fitted to the user's own objective records of it (never the code itself).
OBJECTIVE_FILE = "objective.json"
#: What marks an item run (choicegrad.items).
ITEMS_FILE = "items.json"
#: Most rows (contexts x k) one Run.generate call returns: beyond this the table itself, not the search,
#: would exhaust memory.
MAX_GENERATE_ROWS = 10_000_000
#: Settings added to a fit's request after runs were first written, with the value an older run had:
#: an interrupted run from before them resumes only as it was started (choicegrad.runfolder).
ADDED_SETTINGS = {"generator_fit.distill": 0.0, "generator_fit.distill_sweeps": 2, "scorer_fit.keep": "best",
                  "scorer_fit.model.activation": "silu"}


class ObjectiveRecord(BaseModel):
    """objective.json: the file and name the objective came from (load_objective's FILE.py:NAME), its
    sha256, its kind (frame: a black box; module: a torch module; python: given in Python), and its
    scale (given by the user, or estimated from random rows)."""

    model_config = ConfigDict(extra="allow")
    file: Optional[str] = None
    name: str
    sha256: Optional[str] = None
    kind: Literal["frame", "module", "python"]
    differentiable: bool
    scale: float = Field(gt=0, allow_inf_nan=False)
    scale_estimated: bool


class TableSpec(BaseModel):
    """Which columns of the training table to use (as in load_table), and the offline-design split.

    train_quantile: fit only on the rows below this score quantile of their context (the rest is
    reported as the 'upper' held-out set). space: every category each feature may take, as a dict
    or a JSON file of one (see choicegrad.data.space.read_space); default: the table's labels."""

    features: Union[str, list[str]]
    score: str
    context: Union[str, list[str], None] = None
    train_quantile: Optional[float] = None
    space: Union[str, dict[str, list[str]], None] = None


def check_out_dir(out: str | Path, name: str = "out") -> None:
    """InputError naming `name` when `out` exists and is not a folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(name, [f"{out} exists and is not a folder"])


def _check_pair(run_dir: Path, scorer: Scorer, meta: dict) -> None:
    """InputError naming generator.json unless the generator was trained for this scorer's space and context."""
    shape, problems = meta.get("shape", {}), []
    space_ok = shape.get("sizes") == scorer.space.sizes and (
        "space" not in meta or ChoiceSpace.model_validate(meta["space"]) == scorer.space)
    if not space_ok:
        problems.append("generator.json and scorer.json describe different choice spaces")
    context_ok = (shape.get("cardinalities") == scorer.context.cardinalities
                  and shape.get("num_numeric") == len(scorer.context.numeric)
                  and ("context" not in meta or ContextEncoder.model_validate(meta["context"]) == scorer.context))
    if not context_ok:
        problems.append("generator.json and scorer.json describe different context columns")
    if problems:
        raise InputError(str(run_dir / "generator.json"), problems + [f"{run_dir} mixes files of different runs"])


def _read_contexts(source: str | Path, context: ContextEncoder) -> tuple[pd.DataFrame, TableContext]:
    """A table of contexts -> (its context columns (N, C), their encoding); InputError naming the file."""
    frame = read_table(source)
    if len(frame) == 0:
        raise InputError(str(source), ["the table has no rows"])
    ctx = TableContext(*context.encode(frame, str(source)))   # unknown values: InputError
    return frame[[c.name for c in context.columns]].reset_index(drop=True), ctx


def default_decoder(has_generator: bool, scorer, k: int, beta: Optional[float] = None, min_distance: int = 1) -> str:
    """generate's decoder when none is asked for: slices for k > 1 rows from a scorer ensemble without
    pessimism (beta, else the scorer's, 0: slices bet on the members' disagreement, which pessimism
    avoids; benchmarks/portfolio.py, 5 members, 3 seeds, polish's search and calls: max of 128 on gb1
    polish 0.914, portfolio 0.944, slices 0.954; tfbind8 0.955 for all three), over polish's search or,
    without a generator, over every row; else (or with min_distance > 1, which slices does not take)
    exhaustive without a generator (an enumerated small space), polish with one."""
    ensemble = scorer is not None and len(scorer.members) > 1
    pessimism = (scorer.beta if beta is None else beta) if scorer is not None else 0.0
    if ensemble and pessimism == 0 and k > 1 and min_distance == 1:
        return "slices"
    return "polish" if has_generator else "exhaustive"


class Run:
    """A fitted run folder: scorer (None for a run fitted to the user's own objective), generator,
    optional aligner, config (config.json as a dict), the training contexts (contexts.csv as a
    DataFrame; None without context columns), the choice space and context columns, and for an
    objective run its record (objective.json) and, once given (use_objective), the objective.
    Many parameters (__init__): one per run-folder part; the loaders of each kind of run give a different few."""

    def __init__(self, out: Path, scorer: Optional[Scorer], generator, aligner: Optional[Aligner] = None,
                 config: Optional[dict] = None, contexts: Optional[pd.DataFrame] = None,
                 device: str | torch.device = "cpu", *, space: Optional[ChoiceSpace] = None,
                 context: Optional[ContextEncoder] = None, objective_record: Optional[dict] = None, items=None,
                 scorer_only: bool = False):
        self.out, self.scorer, self.generator, self.aligner = Path(out), scorer, generator, aligner
        self.scorer_only = scorer_only     # loaded for scoring alone (Run.load(scorer_only=True))
        self.items = items             # an item run's ItemRun (choicegrad.items), else None
        self.config, self.contexts, self.device = config or {}, contexts, torch.device(device)
        if items is not None:
            self.space, self.context = None, items.record.context
        else:
            self.space = space if space is not None else scorer.space
            self.context = context if context is not None else scorer.context
        self.objective_record, self.objective = objective_record, None

    @property
    def context_columns(self) -> list[str]:
        return [c.name for c in self.context.columns]

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", *, scorer_only: bool = False) -> Run:
        """Load and validate RUN onto `device`: the files are present, readable and those of one run
        (run.json), the generator was trained for the scorer's space and context, contexts.csv
        encodes. InputError names the file. scorer_only: read a table run's scorer alone (what
        Run.score needs; a run written by fit_scorer_run holds nothing else): no generator, aligner
        or training contexts, so generate refuses.

            run = Run.load("runs/one", device="cuda")
        """
        run_dir = Path(path)
        device = check_device(device)
        if not run_dir.is_dir() and not run_dir.parent.is_dir():
            raise InputError(str(run_dir), ["no such run folder (written by choicegrad fit)"])
        # verified and read on one folder, even if a fit with overwrite=True swaps in a new run meanwhile
        return read_run(run_dir, lambda folder: cls._read(folder, run_dir, device, scorer_only))

    @classmethod
    def _read(cls, folder: Path, run_dir: Path, device: torch.device, scorer_only: bool = False) -> Run:
        """The run in `folder` (run_dir held open: choicegrad.runfolder.read_run), as Run(run_dir, ...)."""
        if not folder.is_dir():
            raise InputError(str(run_dir), ["no such run folder (written by choicegrad fit)"])
        if (folder / ITEMS_FILE).is_file():
            return cls._read_item_run(folder, run_dir, device)
        if (folder / OBJECTIVE_FILE).is_file():
            return cls._read_objective_run(folder, run_dir, device)
        if scorer_only:      # what score reads, no more (config.json, a report, is not verified)
            return cls(run_dir, Scorer.load(folder, device), None, device=device, scorer_only=True)
        config = read_config(folder / "config.json")
        enumerated = bool(config.get("enumerated"))      # a small space: no generator (Run.fit)
        needed = [f for f in RUN_FILES if not (enumerated and f.startswith("generator."))]
        missing = [str(folder / f) for f in needed if not (folder / f).is_file()]
        if missing:
            hint = " (written by choicegrad fit)"
            raise InputError(str(folder), [f"missing run file {m}" + (hint if "generator" in m else "") for m in missing])
        scorer = Scorer.load(folder, device)
        gen = None
        if not enumerated:
            gen, meta = generators.load(folder, device)
            _check_pair(folder, scorer, meta)
        # the aligner gets its own copy: a fine-tuned aligner replaces the weights of the scorer it is given
        aligner = Aligner.load(folder, copy.deepcopy(scorer), device) if (folder / "aligner.json").is_file() else None
        contexts = None
        if scorer.context.columns and (folder / "contexts.csv").is_file():
            contexts = _read_contexts(folder / "contexts.csv", scorer.context)[0]
        return cls(run_dir, scorer, gen, aligner, config, contexts, device)

    @classmethod
    def _read_objective_run(cls, folder: Path, run_dir: Path, device: torch.device) -> Run:
        """A run fitted to the user's own objective: generator, objective.json, contexts, no scorer."""
        try:
            record = ObjectiveRecord.model_validate(read_json_object(folder / OBJECTIVE_FILE)).model_dump()
        except ValueError as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(str(folder / OBJECTIVE_FILE), [f"not an objective record: {meta_problem(exc)}"]) from None
        config = read_config(folder / "config.json")
        if config.get("enumerated"):           # a small space: no generator, the space and contexts in config.json
            gen, meta, source = None, {"space": config.get("space"), "context": config.get("context_encoder")}, "config.json"
        else:
            (gen, meta), source = generators.load(folder, device), "generator.json"
        try:
            space, context = ChoiceSpace.model_validate(meta["space"]), ContextEncoder.model_validate(meta["context"])
        except (KeyError, ValueError) as exc:
            raise InputError(str(folder / source), [f"no choice space and context columns: {meta_problem(exc)}"]) from None
        contexts = None
        if context.columns and (folder / "contexts.csv").is_file():
            contexts = _read_contexts(folder / "contexts.csv", context)[0]
        return cls(run_dir, None, gen, None, config, contexts, device, space=space,
                   context=context, objective_record=record)

    @classmethod
    def _read_item_run(cls, folder: Path, run_dir: Path, device: torch.device) -> Run:
        """An item run (choicegrad.items): items.json, items.csv, lists.csv, the pointer generator and,
        unless fitted to the user's own reward, the item scorer."""
        from choicegrad.items import ItemRun
        from choicegrad.scorer.items import ItemScorer

        state = ItemRun.read(folder)
        gen, _ = generators.load(folder, device)
        if gen.kind != "pointer" or gen.num_slots != len(state.record.slots) or gen.item_dim != state.record.encoder.dim:
            raise InputError(str(folder / "generator.json"), ["the generator was not trained for this run's slots and "
                                                              f"items: {run_dir} mixes files of different runs"])
        scorer = None
        if state.record.objective is None:
            scorer = ItemScorer.load(folder, device)
            if scorer.slots != state.record.slots or scorer.dim != state.record.encoder.dim:
                raise InputError(str(folder / "scorer.json"), ["the scorer was not fitted on this run's slots and items: "
                                                               f"{run_dir} mixes files of different runs"])
        record = None if state.record.objective is None else {"kind": "python", "differentiable": True, "scale": 1.0,
                                                               "scale_estimated": False, **state.record.objective}
        return cls(run_dir, scorer, gen, None, read_config(folder / "config.json"), None, device,
                   objective_record=record, items=state)

    def score(self, rows: pd.DataFrame | str | Path, *, items: pd.DataFrame | str | Path | None = None,
              beta: Optional[float] = None, unknown: Literal["error", "missing"] = "error") -> pd.DataFrame:
        """The rows with their predicted score: a table run's rows (features and context columns, a
        table or a CSV/Parquet path) get a `score` column (replacing one already there), what
        `choicegrad score` writes; an item run's slates (context columns, slot columns of item ids;
        `items`: items beyond the run's own) a `predicted` column. beta overrides the scorer's
        ensemble pessimism; unknown="missing" scores an unknown feature category as a missing one
        (else an InputError naming `rows`). Rows with missing features are scored with a
        PartialRowsWarning (choicegrad.scorer.model). InputError for a run without a scorer.

            scored = Run.load("runs/one", scorer_only=True).score("rows.csv")
        """
        if self.items is not None:
            from choicegrad.items import score_slates

            return score_slates(self, rows, items=items, beta=beta)
        if items is not None:
            raise InputError("items", [f"{self.out} was fitted on a table, not item lists (an ItemSpec)"])
        if unknown not in ("error", "missing"):
            raise InputError("unknown", [f'expected "error" or "missing", got "{unknown}"'])
        if self.scorer is None:
            record = self.objective_record or {}
            source = f"{record.get('file') or 'a Python objective'}:{record.get('name')}"
            raise InputError(str(self.out), [f"this run was fitted to your own objective ({source}) and has no scorer: "
                                             "score the rows with that function itself"])
        name = str(rows) if isinstance(rows, (str, Path)) else "rows"
        frame = read_table(rows) if isinstance(rows, (str, Path)) else rows.reset_index(drop=True)
        old = self.scorer.beta
        self.scorer.beta = old if beta is None else beta
        try:
            values = self.scorer.predict_frame(frame, name, unknown=unknown)
        finally:
            self.scorer.beta = old
        check_finite(values, name, "the predicted score")
        return frame.assign(score=values)

    def _contexts(self, contexts: pd.DataFrame | str | Path | None) -> tuple[Optional[pd.DataFrame], TableContext]:
        """(context columns or None without context columns, their encoding on the run's device)."""
        if not self.context_columns:
            if contexts is not None:
                name = contexts if isinstance(contexts, (str, Path)) else "contexts"
                warnings.warn(f"the run has no context columns; {name} is ignored", UserWarning, stacklevel=3)
            return None, TableContext.empty(1).to(self.device)
        given = contexts is not None   # the training contexts need no range check
        if contexts is None:
            if self.contexts is None:
                missing = self.out / "contexts.csv"
                raise InputError("contexts", [f"missing run file {missing}; pass a table of contexts"])
            contexts = self.contexts
        if isinstance(contexts, (str, Path)):
            frame, ctx = _read_contexts(contexts, self.context)
        else:
            if len(contexts) == 0:
                raise InputError("contexts", ["the table has no rows"])
            ctx = TableContext(*self.context.encode(contexts, "contexts"))
            frame = contexts[self.context_columns].reset_index(drop=True)
        for note in self.context.out_of_range(frame) if given else []:   # allowed; the model extrapolates
            warnings.warn(note, ContextRangeWarning, stacklevel=3)
        return frame, ctx.to(self.device)

    def generate(self, contexts: pd.DataFrame | str | Path | None = None, *, k: int = 10, decoder: Optional[str] = None,
                 fix: Fix = None, temperature: Optional[float] = None, samples: Optional[int] = None,
                 budget: Optional[int] = None, beta: Optional[float] = None, seed: int = 0,
                 items: pd.DataFrame | str | Path | None = None, lists: pd.DataFrame | str | Path | None = None,
                 min_distance: int = 1) -> pd.DataFrame:
        """The top-k distinct rows per context: one row per (context, rank) with the context columns,
        the features, `score` and `rank` (what `choicegrad generate` writes).
        Many parameters: one per flag of `choicegrad generate`.

        decoder: None is polish (slices when the scorer is an ensemble without pessimism and k > 1: the
        same search, then each member's own best rows in turn), or exhaustive (the exact top-k) for a
        run whose space was enumerated instead of training a generator (small_space; slices there too
        for an ensemble, over every row); portfolio: the k rows of the highest expected best over
        draws from the members' spread (decoding.portfolio). min_distance: the k rows differ pairwise in at
        least this many features (rerank, polish, anneal, exhaustive; None decoder: polish, or exhaustive
        for an enumerated run): the best of the rows the search scored, each far enough from those before
        it. contexts: DataFrame or CSV/Parquet path of
        contexts (None: the run's training contexts), new
        ones included: a numeric value outside the training range is allowed, far outside it (more
        than one training std beyond min/max) a ContextRangeWarning; a category unseen in training
        is an InputError (the scorer has no embedding for it);
        fix: {'feature': 'category'} or ['feature=category', ...]; samples/budget/temperature as in
        decode (budget None: default_budget(k) unless samples is given; temperature None: 1, but 2 for
        an item run's polish, items.ITEM_DECODE); beta overrides the scorer's
        ensemble pessimism. frame.attrs holds decoder (the one used), scorer_calls, contexts (count) and short (contexts with
        fewer than k rows: the space, with `fix`, is smaller). Scores are float64 in the score's units;
        InputError('k') beyond MAX_GENERATE_ROWS rows in all.

            run.generate(k=5, decoder="rerank", fix={"s0": "a"})

        An item run (choicegrad.items) returns the top-k slates per list: the key columns, one column
        per slot holding item ids, `predicted` (or `log_prob` without a scorer or reward) and `rank`.
        lists: a table of lists (context columns, list id if the run has one, item id), lists never
        seen included; items: an items table (id and attributes), added to the run's own (an id in
        both takes the new attributes): items never seen are scored from their attributes; without
        lists, each context (`contexts`, else the training ones) chooses from the whole catalogue.
        fix: {'slot': 'item id'}; budget default max(4k, 64) scorer calls per list.
        """
        if self.items is not None:
            from choicegrad.items import generate_items

            if min_distance != 1:
                raise InputError("min_distance", ["rows a distance apart are chosen for a table's runs; an item run's "
                                                  "slates take min_distance 1"])
            return generate_items(self, items=items, lists=lists, contexts=contexts, k=k, decoder=decoder, fix=fix,
                                  temperature=temperature, samples=samples, budget=budget, beta=beta, seed=seed)
        if items is not None or lists is not None:
            raise InputError("items", ["items and lists are for a run fitted on item lists (an ItemSpec); this run "
                                       "was fitted on a table"])
        decoder = self._generate_decoder(decoder, k, temperature, samples, budget, seed, beta,   # before anything is read
                                         min_distance)
        fixed = parse_fix(fix, self.space)
        frame, ctx = self._contexts(contexts)
        rows_k = self._rows_per_context(k, fixed, len(ctx))
        objective, column = self._objective(decoder, beta, frame)
        if decoder in ("portfolio", "slices") and objective.members < 2:
            warnings.warn(f"decoder {decoder}: {objective.name} has one hypothesis (a scorer of one member, or an "
                          f"objective of your own), so {decoder} decodes as "
                          f"{'polish' if self.generator is not None else 'exhaustive'}; fit the scorer with --ensemble 5 "
                          f"(ScorerFit(ensemble=5)) for {decoder} over its members", stacklevel=2)
        rng = torch.Generator(device=self.device).manual_seed(seed)
        mask = None if self.generator is not None else self.space.mask().to(self.device)
        # InputError('decoder') e.g. for exhaustive on a space too large to enumerate
        cands = decode(decoder, self.generator, objective, ctx, rows_k, fixed=fixed, mask=mask,
                       temperature=1.0 if temperature is None else temperature, samples=samples, generator=rng,
                       budget=budget if budget is not None or samples is not None else default_budget(rows_k),
                       min_distance=min_distance)
        result = candidates_frame(self.space, cands, frame)
        values = result.pop("score").to_numpy()
        result.insert(len(result.columns) - 1, column, self.scorer.to_score(values) if self.scorer is not None else values)
        check_finite(result[column].to_numpy(), "generate", f"the generated {column.replace('_', ' ')}")
        result.attrs.update(decoder=decoder, scorer_calls=int(cands.scorer_calls) if column == "score" else 0, contexts=len(ctx),
                            short=int((cands.valid.cpu().numpy().sum(1) < k).sum()))
        return result

    def _generate_decoder(self, decoder: Optional[str], k: int, temperature: Optional[float], samples: Optional[int],
                          budget: Optional[int], seed: int, beta: Optional[float] = None, min_distance: int = 1) -> str:
        """The decoder generate uses (None: default_decoder);
        InputError('generate') for bad settings or a decoder this run cannot use."""
        if self.scorer_only:
            raise InputError(str(self.out), ["loaded with scorer_only=True, for scoring: load the whole run to generate"])
        if decoder is None:
            decoder = default_decoder(self.generator is not None, self.scorer, k, beta, min_distance)
        problems = generate_problems(k, decoder, temperature, samples, budget, seed, min_distance)
        if self.generator is None and decoder not in ENUMERATING and not problems:
            rows = self.space.num_rows()
            problems.append(f"decoder: {decoder} needs a generator; this run has none (each context's space holds "
                            f"{rows:,} rows, enumerated instead): exhaustive returns the exact top-k, portfolio and "
                            "slices choose from every row for an ensemble scorer; fit with force_generator=True for a "
                            "generator")
        if problems:
            raise InputError("generate", problems)
        return decoder

    def _rows_per_context(self, k: int, fixed: Optional[torch.Tensor], contexts: int) -> int:
        """min(k, the rows of the space with `fixed` slots pinned); InputError('k') beyond MAX_GENERATE_ROWS in all."""
        pinned = [-1] * self.space.num_slots if fixed is None else fixed.tolist()
        space_rows = math.prod(size for size, f in zip(self.space.sizes, pinned) if f < 0)
        rows_k = int(min(k, space_rows))   # no more candidates than the space (with `fix`) holds
        if contexts * rows_k > MAX_GENERATE_ROWS:
            raise InputError("k", [f"{rows_k:,} rows for each of {contexts:,} contexts is {contexts * rows_k:,} rows; "
                                   f"at most {MAX_GENERATE_ROWS:,} per call: ask for fewer rows or fewer contexts"])
        return rows_k

    def _objective(self, decoder: str, beta: Optional[float], frame: Optional[pd.DataFrame]):
        """(what the decoder scores rows with, the output column): the run's scorer ("score"), the
        user's objective bound to the contexts asked for ("score"), or, for an objective run given
        none, the generator's own log-probability ("log_prob"; argmax, sample and topk only)."""
        if self.scorer is not None:
            return TableObjective(self.scorer, beta=beta), "score"
        if self.objective is not None:
            return self.objective.bind(self.space, self.context, frame).prepare(self.device), "score"
        record = self.objective_record or {}
        if self.generator is None:
            raise InputError("objective", [
                f"this run has no generator (its space is enumerated): generating scores every row with the objective "
                f"it was fitted to ({record.get('file', '?')}:{record.get('name', '?')}), which a run folder never "
                "imports by itself: give it (Run.use_objective)"])
        if decoder not in GENERATOR_DECODERS:
            raise InputError("objective", [
                f"decoder {decoder} scores rows with the objective the run was fitted to "
                f"({record.get('file', '?')}:{record.get('name', '?')}), which a run folder never imports by itself: "
                "give it (Run.use_objective), or decode with the generator "
                f"alone: {', '.join(GENERATOR_DECODERS)}"])
        return GeneratorLogProb(self.generator), "log_prob"

    def use_objective(self, objective, record: Optional[dict] = None, changed: bool = False) -> Run:
        """Give an objective run its objective again (for decoders that score: rerank, polish, anneal,
        exhaustive). record: load_objective's record of the file it came from, checked against the one
        the run was fitted with (same sha256) unless `changed` says a different file is intended."""
        if self.objective_record is None:
            raise InputError("objective", ["this run was fitted with its own scorer; it needs no objective"])
        if record is not None and record.get("sha256") != self.objective_record.get("sha256") and not changed:
            raise InputError("objective", [
                f"{record.get('file')}:{record.get('name')} differs from the file the run was fitted with "
                f"({self.objective_record.get('file')}, sha256 {str(self.objective_record.get('sha256'))[:12]}..., now "
                f"{str(record.get('sha256'))[:12]}...): the generator learned the old one. Say it is intended "
                "(changed=True), or fit again"])
        if self.items is not None:
            from choicegrad.items import as_item_objective

            self.objective = as_item_objective(objective)
        else:
            self.objective = as_objective(objective)
        return self

    @classmethod
    def fit(cls, data: str | Path | pd.DataFrame, out: str | Path, table, options: Optional[FitOptions] = None,
            **keywords: Any) -> Run:
        """Table -> scorer -> (aligner) -> generator, written to `out` as one run; returns Run.load(out).

        table: a TableSpec, or an ItemSpec for item lists (choicegrad.items): then `data` is the log,
        the scorer is fitted over item attributes and the generator is the pointer generator
        (generator, stream and workers do not apply). options: a FitOptions, whose fields are also
        keywords (Run.fit(data, out, table, generator_fit=GeneratorFit(steps=400), overwrite=True));
        keywords override the options' fields.

        A small space is enumerated instead (small_space: when scoring every row of every training
        context costs no more scorer calls than training would): no generator is trained, it says
        so, and generate returns the exact top-K by enumeration; force_generator trains one anyway.
        The run is built in a hidden sibling folder and moved into place when complete
        (choicegrad.runfolder); checkpoints are saved every `checkpoint_minutes`, at the end of each
        phase and on SIGINT/SIGTERM, which raise Interrupted. A streamed table (stream, or a folder)
        is read as fit_scorer_run does; the scan also keeps a uniform sample of about GENERATOR_ROWS
        training rows, on which the generator phase (contexts, warm start, aligner) works;
        max_minutes then counts the scan too.

        The phases: _start_fit and _open_run (shared with fit_scorer_run), _scorer_phase,
        _generator_phase, _seal. Started by torchrun (WORLD_SIZE > 1), it trains data-parallel
        (choicegrad.distributed): the scorer as fit_scorer_run does, then the generator (see
        choicegrad.training.loop), each rank on its share of every step's batch of contexts; rank 0
        alone writes the run and echoes, and every rank returns rank 0's Run.load(out). "cuda" means
        each rank's own GPU. InputError('batch_size') when generator_fit.batch_size is smaller than
        the number of ranks.

            Run.fit("t.csv", "runs/one", TableSpec(features="s?", score="y", context="ctx", train_quantile=0.5),
                    scorer_fit=ScorerFit(seed=1), generator_fit=GeneratorFit(method="st-gumbel", seed=1))
        """
        from choicegrad.items import ItemSpec, fit_items

        o = fit_options(options, keywords)
        if isinstance(table, ItemSpec):
            return fit_items(cls, data, out, table, o)
        job = _start_fit(data, out, table, o, with_generator=True)
        with _open_run(job, _fit_request(job), GENERATOR_ROWS) as w:
            if w.finished:
                return distributed.from_main(lambda: cls.load(job.out))
            job.plan_generator()
            with w.checkpoints.catch_signals() as ckpt:
                result = _scorer_phase(w, job)
                if job.options.on_scorer is not None:
                    job.options.on_scorer(result.metrics)
                trained = _generator_phase(job, w, result, ckpt)
            if not job.world.main:       # rank 0 writes the run; the others wait for it, then take its Run
                distributed.barrier()
                w.commit()
                return distributed.from_main(lambda: None)
            _seal(job, w, result, trained)
        _say_done(job, trained)
        return distributed.from_main(lambda: cls.load(job.out))

    @classmethod
    def fit_objective(cls, objective, out: str | Path, *, space: Union[str, Path, dict, None] = None,
                      contexts: pd.DataFrame | Mapping | str | Path | None = None,
                      table: Optional[tuple[Union[str, Path, pd.DataFrame], TableSpec]] = None,
                      record: Optional[dict] = None, items=None, options: Optional[FitOptions] = None,
                      **keywords: Any) -> Run:
        """A generator fitted to the user's own objective (choicegrad.objectives: FrameObjective for a
        black box on labelled rows, ModuleObjective for a torch module; or any Objective), written to
        `out` as one run (no scorer; objective.json records where the objective came from, never its
        code); returns Run.load(out) with the objective attached.

        space: {feature: [labels]} or a JSON file of one: the choice space, in the objective's labels
        (required without a table). contexts: a DataFrame ({column: values} too) or CSV/Parquet file of the contexts to
        train for; its columns are the context columns, typed as a table's (numbers numeric, else
        categorical); None: one problem without context. table: (a table, TableSpec) whose rows give
        the generator's warm start, ranked by the objective (its score column, if any, is not used),
        and its contexts when `contexts` is None. record: load_objective's record of the file the
        objective came from. The objective's scale, unless given, is estimated from random rows and
        echoed. A small space is enumerated instead of training (small_space), unless force_generator.
        Otherwise as Run.fit (method, steps, time limit, resume, overwrite, checkpoints): options and
        keywords are the FitOptions that apply to an objective (OBJECTIVE_RUN_OPTIONS).
        items: an ItemSpec (choicegrad.items) for item lists: the objective is a reward over the chosen
        items' vectors, reward(selected (N, S, D), ctx) -> (N,) (a function or an ItemObjective), and
        space / contexts / table do not apply.

            run = Run.fit_objective(cg.FrameObjective(simulate), "runs/own", space="space.json",
                                    contexts="contexts.csv", generator_fit=GeneratorFit(steps=800))
        """
        o = fit_options(options, keywords, OBJECTIVE_RUN_OPTIONS, "Run.fit_objective")
        if items is not None:   # item lists: a reward over the chosen items' vectors (choicegrad.items)
            from choicegrad.items import fit_items

            return fit_items(cls, None, out, items, o, objective=objective, record=record)
        job = _start_objective_fit(objective, out, space, contexts, table, record, o)
        with _writer(job.out, job.request, job.options) as w:
            if w.finished:
                return cls.load(job.out).use_objective(job.objective, job.record)
            res = _objective_generator_phase(job, w)
            _seal_objective(job, w, res)
        o = job.options
        if res is None:
            o.echo(small_space_note(job.plan, "objective") + f"; wrote {job.out}/")
        else:
            o.echo(f"generator: {o.generator} + {o.generator_fit.method} on {job.record['name']}, {res.seconds:.1f} s, "
                   f"{_calls_summary(res.scorer_calls, job.space, len(job.ctx), 'objective')}, validation "
                   f"{res.best_val:.4g} ({res.stopped}); wrote {job.out}/")
        return cls.load(job.out).use_objective(job.objective, job.record)


#: The FitOptions fields that Run.fit_objective takes (no scorer, no streamed table).
OBJECTIVE_RUN_OPTIONS = ("generator", "generator_fit", "max_minutes", "resume", "overwrite", "checkpoint_minutes",
                         "echo", "progress", "force_generator")


@dataclass
class _ObjectiveFit:
    """An objective fit under way (Run.fit_objective), carried from phase to phase: the objective
    bound to its space and contexts, its record (objective.json), the choice space, context columns,
    contexts (frame (N, C), encoded ctx), the warm-start table (or None), the plan to enumerate
    instead (or None), the options resolved and the request a resume must match."""

    out: Path
    objective: Any
    record: dict
    space: ChoiceSpace
    encoder: ContextEncoder
    frame: pd.DataFrame
    ctx: TableContext
    data: Optional[TableData]
    gen_cfg: GeneratorConfig
    options: FitOptions
    plan: Optional[dict]
    request: dict


def _start_objective_fit(objective, out, space, contexts, table, record: Optional[dict], o: FitOptions,
                         ) -> _ObjectiveFit:
    """Everything Run.fit_objective checks and resolves before the run folder is touched: the method
    trains on this objective, the space, contexts and warm start, the memory, the plan, the objective's
    scale (estimated from random rows unless given, and echoed) and its record."""
    from choicegrad.objectives import estimate_scale

    generator_fit = o.generator_fit or GeneratorFit()
    generator_fit = generator_fit.model_copy(update={"method": check_method(generator_fit.method, o.generator)})
    if o.max_minutes is not None:
        generator_fit = generator_fit.model_copy(update={"max_minutes": o.max_minutes})
    o = o.model_copy(update={"generator_fit": generator_fit})
    objective = as_objective(objective)
    check_trainable(objective, generator_fit.method)      # before anything is read or written
    out = check_out_path(out)
    space_, encoder, frame, data = _objective_problem(space, contexts, table)
    gen_cfg = GeneratorConfig(kind=o.generator)
    check_generator_fits(gen_cfg, space_, device=generator_fit.device)
    ctx = TableContext(*encoder.encode(frame, "contexts")).unique()[0] if encoder.columns else TableContext.empty(1)
    objective.bind(space_, encoder, frame)
    if data is not None:      # the warm start ranks the table's complete rows by the objective
        data = _scored_by(objective.prepare(generator_fit.device), data, generator_fit.device)
    plan = None if o.force_generator else small_space(space_, len(ctx), generator_fit)
    # estimated even when the space is enumerated: it is cheap, and calls the function before the run is written
    estimated = not objective.scale_given
    if estimated:
        objective.scale = estimate_scale(objective.prepare(generator_fit.device), space_, ctx.to(generator_fit.device),
                                         seed=generator_fit.seed)
        o.echo(f"objective: scale {objective.scale:.4g} (the spread of its scores over random rows; give scale= "
               "to set it)")
    record = {**(record or {"file": None, "name": objective.name, "sha256": None, "kind": "python"}),
              "differentiable": bool(objective.differentiable), "scale": float(objective.scale),
              "scale_estimated": estimated}
    ObjectiveRecord.model_validate(record)
    contexts_key = int(pd.util.hash_pandas_object(frame, index=False).sum()) if len(frame.columns) else 0
    request = {"command": "fit-objective", "objective": {k: record[k] for k in ("file", "name", "sha256", "kind")},
               "space": space_.model_dump(), "contexts_hash": contexts_key, "generator": gen_cfg.model_dump(),
               "generator_fit": generator_fit.model_dump(), **({"force_generator": True} if o.force_generator else {}),
               **({"table_hash": int(pd.util.hash_pandas_object(data.frame, index=False).sum())} if data is not None
                  else {})}
    return _ObjectiveFit(out, objective, record, space_, encoder, frame, ctx, data, gen_cfg, o, plan, request)


def _objective_generator_phase(job: _ObjectiveFit, w: RunWriter) -> Optional[GeneratorResult]:
    """The generator trained on the objective (warm-started from the table, if any), saved into the
    run; None where the space is enumerated instead."""
    if job.plan is not None:
        return None
    fit = job.options.generator_fit
    with seeded_rng(fit.seed, fit.device):       # the generator's initial weights; the caller's RNG left alone
        gen = generators.build(job.gen_cfg, space=job.space, context=job.encoder)
    source = TableContexts(job.data, device=fit.device) if job.data is not None else ContextPool(job.ctx, device=fit.device)
    with w.checkpoints.catch_signals() as ckpt:
        res = fit_generator(gen, job.objective, source, fit, run_dir=w.dir, progress=job.options.progress,
                            checkpoint=ckpt)
    generators.save(res.generator.cpu(), w.dir, {"space": job.space.model_dump(), "context": job.encoder.model_dump()})
    return res


def _seal_objective(job: _ObjectiveFit, w: RunWriter, res: Optional[GeneratorResult]) -> None:
    """The training contexts, objective.json and config.json written beside the generator, then the
    run sealed and moved into place."""
    if job.encoder.columns:
        write_table(job.frame[[c.name for c in job.encoder.columns]].drop_duplicates().reset_index(drop=True),
                    w.dir / "contexts.csv")
    atomic_write_text(w.dir / OBJECTIVE_FILE, json.dumps(job.record, indent=2) + "\n")
    config = {"objective": job.record, "features": job.space.names, "context": [c.name for c in job.encoder.columns],
              "contexts": len(job.ctx), "space_rows": job.space.num_rows(),
              "generator": None if res is None else job.gen_cfg.model_dump(),
              "generator_fit": job.options.generator_fit.model_dump(),
              "generator_training": None if res is None else training_summary(res), "enumerated": job.plan,
              "seconds": 0.0 if res is None else res.seconds, "versions": versions(),
              **({"space": job.space.model_dump(), "context_encoder": job.encoder.model_dump()} if res is None else {})}
    atomic_write_text(w.dir / "config.json", json.dumps(config, indent=2) + "\n")
    w.commit()


def _objective_problem(space, contexts, table) -> tuple[ChoiceSpace, ContextEncoder, pd.DataFrame, Optional[TableData]]:
    """(choice space, context columns, the contexts as a frame, the warm-start table or None) of an
    objective fit: from the declared space and contexts, or from a table (its features and context
    columns), either overriding the other where both are given."""
    declared = read_space(space) if isinstance(space, (str, Path)) else space
    data = None
    if table is not None:
        source, spec = table
        frame = source if isinstance(source, pd.DataFrame) else read_table(source)
        score = spec.score if spec.score in frame.columns else None
        if score is None:                 # an objective fit needs no measured score: a placeholder column
            score = "__choicegrad_unscored__"
            frame = frame.assign(**{score: 0.0})
        data = load_table(frame, spec.features, score, spec.context, space=declared or spec.space)
        for note in data.warnings:
            if "constant" not in note:
                warnings.warn(note, UserWarning, stacklevel=3)
        space_, encoder = data.space, data.context
        if contexts is None:
            names = [c.name for c in encoder.columns]
            return space_, encoder, data.frame[names].drop_duplicates().reset_index(drop=True), data
    if declared is None and table is None:
        raise InputError("space", ["an objective fit without a table needs the choice space: {feature: [labels]}, or "
                                   "a JSON file of one"])
    if table is None:
        space_ = ChoiceSpace.declared(pd.DataFrame(), list(declared), declared)
    if contexts is None:
        return space_, ContextEncoder(columns=[]), pd.DataFrame(index=range(1)), data
    frame = read_table(contexts) if isinstance(contexts, (str, Path)) else pd.DataFrame(contexts).reset_index(drop=True)
    name = str(contexts) if isinstance(contexts, (str, Path)) else "contexts"
    if len(frame) == 0:
        raise InputError(name, ["the table has no rows"])
    if table is not None:
        encoder.encode(frame, name)            # the table's context columns, and values it knows
    else:
        clash = sorted(set(frame.columns) & set(space_.names))
        if clash:
            raise InputError(name, [f"column{'s' if len(clash) > 1 else ''} {', '.join(clash)} also name features of "
                                    "the space; a context column must be another column"])
        encoder = ContextEncoder.fit(frame, [(str(c), None) for c in frame.columns], name)
        encoder.encode(frame, name)
    return space_, encoder, frame, data


def _scored_by(objective, data: TableData, device) -> TableData:
    """`data` with its scores replaced by the objective's (rows with a missing feature: -inf, never a
    warm-start row), for the warm start to learn the objective's best rows."""
    from choicegrad.decoding.scoring import score_flat

    complete = (data.rows >= 0).all(1)
    y = torch.full((len(data),), float("-inf"), dtype=torch.float64)
    idx = torch.nonzero(complete).reshape(-1)
    if len(idx):
        ctx = TableContext(data.ctx_cat[idx], data.ctx_num[idx]).to(device)
        y[idx] = score_flat(objective, data.rows[idx].to(device), torch.arange(len(idx), device=device), ctx).double().cpu()
    scored = data.subset(np.arange(len(data)))
    scored.y = y
    return scored


def training_calls(fit: GeneratorFit) -> int:
    """The rows a generator's training scores at the least: steps x contexts per step x rows per
    context (validation, distillation's search and the warm start come on top)."""
    return fit.steps * fit.batch_size * fit.samples


ENUMERATION_SPEEDUP = 3
"""Rows scored per second enumerating (forward only, in large chunks) over rows scored per second
training a generator (forward and backward, small batches): 48,000 against 16,000 on a 3-feature
space of 103,823 rows, 20 contexts, 1 thread (benchmarks/small_spaces.py, 2026-12-06)."""


def small_space(space: ChoiceSpace, contexts: int, fit: GeneratorFit) -> Optional[dict]:
    """The plan when enumerating beats training: every training context's space enumerated once
    (rows x contexts scorer calls, each ENUMERATION_SPEEDUP times cheaper than a training call)
    costs no more time than training a generator would (training_calls), and a context's space fits
    the exhaustive decoder (MAX_ENUMERATE rows). None otherwise.
    -> {space_rows, contexts, enumeration_calls, training_calls}."""
    rows = space.num_rows()
    spend = training_calls(fit)
    if rows > MAX_ENUMERATE or rows * max(1, contexts) > ENUMERATION_SPEEDUP * spend:
        return None
    return {"space_rows": rows, "contexts": int(contexts), "enumeration_calls": rows * max(1, contexts),
            "training_calls": spend}


def small_space_note(plan: dict, calls: str = "scorer") -> str:
    return (f"generator: not trained: each context's space holds {plan['space_rows']:,} rows, so enumerating all "
            f"{plan['contexts']:,} context(s) ({plan['enumeration_calls']:,} {calls} calls, {ENUMERATION_SPEEDUP}x cheaper "
            f"each than in training) costs less than training a generator would (at least {plan['training_calls']:,} "
            "calls); generate returns the exact top-K by enumeration (for an ensemble scorer, the members' best "
            "rows in turn: slices over every row) (force a generator with force_generator=True)")


Writer = Union[RunWriter, RankView]


#: The FitOptions fields that fit_scorer_run takes (the others are the generator's).
SCORER_RUN_OPTIONS = ("scorer_fit", "resume", "overwrite", "checkpoint_minutes", "echo", "progress", "stream", "workers")


def fit_options(options: Optional[FitOptions] = None, keywords: Mapping[str, Any] = {},
                allowed: Iterable[str] = FitOptions.model_fields, caller: str = "Run.fit") -> FitOptions:
    """`options` (default FitOptions()) with `keywords` set on it, validated. TypeError for a keyword
    that is not an option (as Python says of an unknown keyword); InputError naming each bad value."""
    allowed = list(allowed)
    unknown = sorted(set(keywords) - set(allowed))
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {', '.join(unknown)}; "
                        f"options: {', '.join(allowed)}")
    try:
        return FitOptions.model_validate({**dict(options or FitOptions()), **keywords})
    except ValidationError as exc:
        raise InputError(caller, [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None


def _quiet(line: str) -> None:
    """The echo of a data-parallel rank other than 0: rank 0 alone speaks."""


@dataclass
class _TableFit:
    """A table fit under way (Run.fit, fit_scorer_run), carried from phase to phase. options: with
    scorer_fit and generator_fit set, on this rank's device, quiet on ranks other than 0; asked: the
    (scorer, generator) devices as asked ("cuda", not this rank's "cuda:1"); data_table: the table
    read (a stream: None until _open_run scans it); extra: held-out sets beside the split. After
    plan_generator: rows (what the generator learns from: a stream's sample), the context columns,
    the count of training contexts, and plan (small_space's, or None to train a generator)."""

    data: str | Path | pd.DataFrame
    out: Path
    table: TableSpec
    options: FitOptions
    world: distributed.World
    asked: tuple[str, str]
    stream: bool
    gen_cfg: GeneratorConfig
    data_table: Union[TableData, ParquetTable, None] = None
    extra: dict = field(default_factory=dict)
    scanned: float = 0.0
    rows: Optional[TableData] = None
    ctx_cols: list[str] = field(default_factory=list)
    n_contexts: int = 1
    plan: Optional[dict] = None

    def streamed(self) -> dict:
        """The settings a streamed fit's resume must keep: a streamed epoch's batches depend on the
        ranks and workers."""
        return {"stream": True, "workers": self.options.workers, "ranks": self.world.size} if self.stream else {}

    def plan_generator(self) -> None:
        """Once the folder is open (a stream scanned): the memory check and the time left of a
        stream, the generator's rows, the training contexts, and whether to enumerate instead."""
        o = self.options
        if self.stream:
            check_generator_fits(self.gen_cfg, self.data_table.space, device=o.generator_fit.device)
            if o.max_minutes is not None:
                left = minutes_left(o.max_minutes, self.scanned, 2)
                self.options = o.model_copy(update={"scorer_fit": o.scorer_fit.model_copy(update={"max_minutes": left})})
        self.rows = self.data_table.sample if self.stream else self.data_table
        self.ctx_cols = [c.name for c in self.rows.context.columns]
        self.n_contexts = len(self.rows.frame[self.ctx_cols].drop_duplicates()) if self.ctx_cols else 1
        self.plan = None if o.force_generator else small_space(self.rows.space, self.n_contexts, o.generator_fit)


@dataclass
class _Trained:
    """The generator phase's outcome: the aligner's config.json entry (the aligner method only), the
    generator's training (None where the space is enumerated), seconds spent on all phases so far."""

    aligner_info: Optional[dict]
    res: Optional[GeneratorResult]
    spent: float


def _start_fit(data, out: str | Path, table: TableSpec, o: FitOptions, with_generator: bool) -> _TableFit:
    """The first step of Run.fit and fit_scorer_run, before the run folder is touched: the options
    resolved (the estimator's name normalised), torchrun's ranks joined (each on its own device, all
    but rank 0 quiet), `out` checked and the table read (a stream only checked: _open_run scans it in
    the folder's lock), then, with a generator to fit, its memory checked."""
    scorer_fit, generator_fit = o.scorer_fit or ScorerFit(), o.generator_fit or GeneratorFit()
    if with_generator:
        generator_fit = generator_fit.model_copy(update={"method": check_method(generator_fit.method, o.generator)})
    asked = scorer_fit.device, generator_fit.device
    world, device = distributed.join(generator_fit.device if with_generator else scorer_fit.device)
    if world.distributed:
        if with_generator:
            _check_ranks(scorer_fit, generator_fit, world)
        scorer_fit = scorer_fit.model_copy(update={"device": device})
        generator_fit = generator_fit.model_copy(update={"device": device})
        if not world.main:
            o = o.model_copy(update={"echo": _quiet, "progress": False, "on_scorer": None})
    out = check_out_path(out)
    stream = o.stream or (isinstance(data, (str, Path)) and Path(data).is_dir())
    job = _TableFit(data, out, table, o, world, asked, stream, GeneratorConfig(kind=o.generator))
    if stream:
        _check_stream(data, table, o.workers)
    else:
        job.data_table, job.extra = _load(data, table, o.echo)
        if with_generator:
            check_generator_fits(job.gen_cfg, job.data_table.space, device=generator_fit.device)
    if o.max_minutes is not None:
        scorer_fit = scorer_fit.model_copy(update={"max_minutes": o.max_minutes / 2})
    job.options = o.model_copy(update={"scorer_fit": scorer_fit, "generator_fit": generator_fit})
    return job


def _check_ranks(scorer_fit: ScorerFit, generator_fit: GeneratorFit, world: distributed.World) -> None:
    """InputError when data-parallel ranks cannot share the fit: the scorer and generator on two
    device kinds, or fewer contexts per generator step than ranks."""
    if scorer_fit.device != generator_fit.device:
        raise InputError("device", [f'the scorer ("{scorer_fit.device}") and the generator '
                                    f'("{generator_fit.device}") train on one device kind under torchrun'])
    if generator_fit.batch_size < world.size:
        raise InputError("batch_size", [f"{generator_fit.batch_size} contexts per generator step cannot be "
                                        f"shared by {world.size} data-parallel ranks (torchrun): each needs "
                                        f"at least one; ask for a batch of at least {world.size} contexts"])


@contextmanager
def _writer(out: Path, request: dict, o: FitOptions) -> Iterator[Writer]:
    """The run folder `out` locked and ready to write (choicegrad.runfolder.run_writer), its notes echoed."""
    with run_writer(out, request, overwrite=o.overwrite, resume=o.resume, checkpoint_minutes=o.checkpoint_minutes,
                    added_settings=ADDED_SETTINGS) as w:
        for note in w.notes:
            o.echo(note)
        yield w


@contextmanager
def _open_run(job: _TableFit, request: dict, sample_rows: int = 0) -> Iterator[Writer]:
    """The shared open-the-run step of Run.fit and fit_scorer_run: the folder locked (_writer) and,
    unless it already holds the finished run, a streamed table scanned, in the lock, so that a
    refusal (a run already there) comes before the long scan; the scan keeps a sample of about
    `sample_rows` training rows (the generator's)."""
    o = job.options
    with _writer(job.out, request, o) as w:
        if job.stream and not w.finished:
            job.data_table = distributed.from_main(
                lambda: _scan(job.data, job.table, o.scorer_fit, o.progress, o.echo, sample_rows))
            job.scanned = job.data_table.scan_seconds
        yield w


def _fit_request(job: _TableFit) -> dict:
    """The settings of a Run.fit that its resume must share (the devices as asked)."""
    o = job.options
    return _request("fit", job.data, job.table, scorer_fit={**o.scorer_fit.model_dump(), "device": job.asked[0]},
                    generator=job.gen_cfg.model_dump(),
                    generator_fit={**o.generator_fit.model_dump(), "device": job.asked[1]},
                    **job.streamed(), **({"force_generator": True} if o.force_generator else {}))


def _generator_phase(job: _TableFit, w: Writer, result: ScorerResult, ckpt) -> _Trained:
    """The generator for the fitted scorer, with the aligner its method needs, in what is left of
    max_minutes; none where the space is enumerated instead (job.plan). The aligner is fitted (or
    read back) by rank 0 alone, and sent to the others."""
    o, plan, generator_fit = job.options, job.plan, job.options.generator_fit
    aligner, aligner_info, res = None, None, None
    if plan is None and get_class(generator_fit.method).needs_aligner:  # the learned similarity the method pulls through
        aligner, aligner_info = distributed.from_main(lambda: _aligner_phase(
            w, result.scorer, job.rows, generator_fit.seed,
            minutes_left(o.max_minutes, job.scanned + result.seconds, 3), o.progress, o.echo))
    spent = job.scanned + result.seconds + (aligner_info["seconds"] if aligner_info else 0.0)
    if o.max_minutes is not None:
        generator_fit = generator_fit.model_copy(update={"max_minutes": minutes_left(o.max_minutes, spent, 1)})
        job.options = o.model_copy(update={"generator_fit": generator_fit})      # as config.json records it
    if plan is None:
        res = fit_table_generator(result.scorer, job.rows, job.gen_cfg, generator_fit, run_dir=w.dir,
                                  progress=o.progress, aligner=aligner, checkpoint=ckpt)
    return _Trained(aligner_info, res, spent)


def _seal(job: _TableFit, w: RunWriter, result: ScorerResult, trained: _Trained) -> None:
    """Rank 0's last phase: the generator, the training contexts and config.json (resolved settings
    and results) written beside the scorer, then the run sealed and moved into place."""
    o, res, rows, scorer = job.options, trained.res, job.rows, result.scorer
    if res is not None:
        generators.save(res.generator.cpu(), w.dir, {"space": scorer.space.model_dump(),
                                                     "context": scorer.context.model_dump()})
    if job.ctx_cols:
        write_table(rows.frame[job.ctx_cols].drop_duplicates().reset_index(drop=True), w.dir / "contexts.csv")
    config = {"data": w.request["data"], "features": scorer.space.names, "score": job.table.score,
              "context": job.ctx_cols, "train_quantile": job.table.train_quantile, "rows": len(job.data_table),
              **({"streamed": True, "generator_rows": len(rows), "scan_seconds": job.scanned} if job.stream else {}),
              "scorer_fit": o.scorer_fit.model_dump(), "scorer_metrics": result.metrics,
              "scorer_seconds": result.seconds, "space_rows": scorer.space.num_rows(),
              "contexts": job.n_contexts, "generator": None if res is None else job.gen_cfg.model_dump(),
              "generator_fit": o.generator_fit.model_dump(), "aligner": trained.aligner_info,
              "generator_training": None if res is None else training_summary(res),
              "enumerated": job.plan, "seconds": trained.spent + (res.seconds if res is not None else 0.0),
              "versions": versions()}
    atomic_write_text(w.dir / "config.json", json.dumps(config, indent=2) + "\n")
    distributed.barrier()        # every rank done with the folder before rank 0 moves it
    w.commit()


def _say_done(job: _TableFit, trained: _Trained) -> None:
    o, res = job.options, trained.res
    if res is None:
        o.echo(small_space_note(job.plan) + f"; wrote {job.out}/")
    else:
        o.echo(f"generator: {o.generator} + {o.generator_fit.method}, {res.seconds:.1f} s, "
               f"{_calls_summary(res.scorer_calls, job.rows.space, job.n_contexts)}, "
               f"validation {res.best_val:.4g} ({res.stopped}); wrote {job.out}/")


def fit_scorer_run(data: str | Path | pd.DataFrame, out: str | Path, table: TableSpec,
                   scorer_fit: Optional[ScorerFit] = None, options: Optional[FitOptions] = None,
                   **keywords: Any) -> ScorerResult:
    """Table -> scorer, written to `out` as one run (scorer.*, scorer_metrics.json, run.json), with
    the same folder rules, checkpoints and resume as Run.fit. What `choicegrad fit-scorer` does.
    options/keywords: the FitOptions that apply to a scorer alone (SCORER_RUN_OPTIONS: resume,
    overwrite, checkpoint_minutes, echo, progress, stream, workers).

    stream (implied by a folder): read a Parquet file or folder as a stream (choicegrad.data.stream),
    never whole: one scan, in the run's folder lock, then every epoch streams the training rows,
    read by `workers` DataLoader processes (0: in this one). Started by torchrun (WORLD_SIZE > 1), it
    trains data-parallel (choicegrad.distributed): every rank reads the table (a streamed table: rank
    0 scans it, each rank streams its own row groups), rank 0 alone writes the run and logs; "cuda"
    means each rank's own GPU."""
    o = fit_options(options, {**keywords, **({"scorer_fit": scorer_fit} if scorer_fit is not None else {})},
                    SCORER_RUN_OPTIONS, "fit_scorer_run")
    job = _start_fit(data, out, table, o, with_generator=False)
    o = job.options
    request = _request("fit-scorer", data, table, scorer_fit={**o.scorer_fit.model_dump(), "device": job.asked[0]},
                       **job.streamed())
    with _open_run(job, request) as w:
        if w.finished:
            return distributed.from_main(lambda: read_scorer_result(job.out))
        with w.checkpoints.catch_signals():
            result = _scorer_phase(w, job)
        distributed.barrier()            # every rank done with the folder before rank 0 moves it
        w.commit()
    return result


def _check_stream(data, table: TableSpec, workers: int) -> None:
    """InputError for what a streamed fit cannot take: a DataFrame, a path that is not Parquet, a
    train quantile (per-context quantiles need the whole table), negative workers."""
    if isinstance(data, pd.DataFrame):
        raise InputError("stream", ["streams a Parquet file or a folder of them, not a DataFrame"])
    if table.train_quantile is not None:
        raise InputError("train_quantile", ["needs each context's score quantile, so the whole table in memory; "
                                            "it does not combine with a streamed table (stream=True or a folder)"])
    if workers < 0:
        raise InputError("workers", [f"expected 0 or more DataLoader processes, got {workers}"])
    parquet_files(data)


def _scan(data, table: TableSpec, fit: ScorerFit, progress: Optional[bool], echo: Callable[[str], None],
          sample_rows: int = 0) -> ParquetTable:
    """The streamed table's one scan (its split from the fit's seed and fractions, a sample of
    `sample_rows` training rows); warnings echoed."""
    space = read_space(table.space) if isinstance(table.space, str) else table.space
    scanned = scan_parquet(data, table.features, table.score, table.context, space=space, seed=fit.seed,
                           val_fraction=fit.val_fraction, test_fraction=fit.test_fraction, sample_rows=sample_rows,
                           progress=progress)
    for note in scanned.warnings:
        echo(f"warning: {note}")
    return scanned


def _load(data: str | Path | pd.DataFrame, table: TableSpec, echo: Callable[[str], None]):
    """The training table and its held-out upper part, before any folder is touched."""
    data_table = load_table(data, table.features, table.score, table.context, space=table.space)
    for note in data_table.warnings:
        echo(f"warning: {note}")
    return hold_out_upper(data_table, table.train_quantile)


#: Tables up to this size are identified by their sha256 in a run's settings (a resume must read the same
#: rows); larger ones, and streamed folders, by size and modification time.
HASHED_TABLE_BYTES = 1 << 30


def _request(command: str, data: str | Path | pd.DataFrame, table: TableSpec, **settings) -> dict:
    """The settings a resumed run must share with its start, the table's identity included."""
    if isinstance(data, (str, Path)) and Path(data).is_dir():      # a streamed folder: its Parquet files
        stats = [Path(f).stat() for f in parquet_files(data)]
        source = {"data": os.path.abspath(data), "data_bytes": sum(st.st_size for st in stats),
                  "data_mtime_ns": max(st.st_mtime_ns for st in stats), "data_files": len(stats)}
    elif isinstance(data, (str, Path)):
        stat = Path(data).stat()
        source = {"data": os.path.abspath(data), "data_bytes": stat.st_size, "data_mtime_ns": stat.st_mtime_ns}
        if stat.st_size <= HASHED_TABLE_BYTES:     # the content itself: a table rewritten in place is another table
            source["data_sha256"] = sha256_file(data)
    else:
        source = {"data": "DataFrame", "data_hash": int(pd.util.hash_pandas_object(data, index=False).sum())}
    return {"command": command, **source, "table": table.model_dump(), **settings}


def _scorer_phase(w: Writer, job: _TableFit) -> ScorerResult:
    """Fit the scorer of `job` into the run being written (scorer.*, then scorer_metrics.json, which
    marks the phase done), or read it back when a resumed run has it already. A ParquetTable streams
    (read by options.workers DataLoader processes)."""
    data, data_table, table, extra = job.data, job.data_table, job.table, job.extra
    fit, progress, echo, workers = job.options.scorer_fit, job.options.progress, job.options.echo, job.options.workers
    if distributed.from_main(lambda: w.resuming and (w.dir / SCORER_METRICS).is_file()):
        result = distributed.from_main(lambda: read_scorer_result(w.dir))
        echo(f"scorer: resumed, fitted on {len(data_table)} rows in {result.seconds:.1f} s")
        return result
    if isinstance(data_table, ParquetTable):
        result = fit_scorer_stream(data_table, fit, progress=progress, checkpoint=w.checkpoints, workers=workers)
    else:
        result = fit_scorer(data_table, fit, extra_eval=extra, progress=progress, checkpoint=w.checkpoints)
    if not distributed.current().main:
        return result
    result.scorer.save(w.dir)
    doc = {"data": str(data) if isinstance(data, (str, Path)) else "DataFrame", "rows": len(data_table),
           **({"streamed": True, "train_rows": data_table.train_rows, "scan_seconds": data_table.scan_seconds}
              if isinstance(data_table, ParquetTable) else {}),
           "train_quantile": table.train_quantile, "fit": fit.model_dump(), "metrics": result.metrics,
           "seconds": result.seconds}
    atomic_write_text(w.dir / SCORER_METRICS, json.dumps(doc, indent=2) + "\n")
    echo(f"scorer: fitted on {len(data_table)} rows in {result.seconds:.1f} s")
    return result


def _calls_summary(calls: int, space: ChoiceSpace, contexts: int, what: str = "scorer") -> str:
    """'N scorer calls (C per context, against R rows in each context's space)': what training spent
    beside what enumerating would."""
    rows = space.num_rows()
    return (f"{calls:,} {what} calls ({calls / max(1, contexts):,.0f} per context, against {rows:,} rows in each "
            "context's space)")


def _aligner_phase(w: RunWriter, scorer: Scorer, data: TableData, seed: int, minutes: Optional[float],
                   progress: Optional[bool], echo: Callable[[str], None]) -> tuple[Aligner, dict]:
    """Fit and save the aligner the `aligner` method needs, or read it back when a resumed run has it;
    (aligner, its config.json entry). A kill during this short phase refits it from the start."""
    info_path = w.dir / "aligner_fit.json"
    if w.resuming and info_path.is_file():
        echo("aligner: resumed")
        return Aligner.load(w.dir, copy.deepcopy(scorer)), read_config(info_path)
    al = fit_aligner(copy.deepcopy(scorer), data, AlignerFit(seed=seed, max_minutes=minutes), progress=progress)
    al.aligner.save(w.dir)
    info = {"config": al.aligner.config.model_dump(), "seconds": al.seconds,
            "final_loss": float(np.mean([h["loss"] for h in al.history[-50:]])) if al.history else None}
    atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    echo(f"aligner: fitted in {al.seconds:.1f} s")
    return al.aligner, info
