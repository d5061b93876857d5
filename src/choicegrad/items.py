"""Item runs: one item per slot from lists that change per context, as a run folder (Run).

    spec = ItemSpec(slots="left,middle,right", items="items.csv", item_id="id", context="user", score="y",
                    lists="lists.csv")
    run = Run.fit("log.csv", "runs/slates", spec)                      # scorer over item attributes + pointer generator
    slates = run.generate(items="new_items.csv", lists="new_lists.csv", k=5)
    run.score(slates)                                                  # a "predicted" column

An item run holds, beside a table run's scorer.* / generator.* / config.json / run.json: items.json
(the spec: slots, item id and attribute encoding, context columns, list id, distinct, eligibility;
and, for a run fitted to the user's own reward, where that came from), items.csv (the training
catalogue: id and attributes as read) and lists.csv (the training lists: key columns and item id).
Items are scored from their attributes alone, so items never seen in training (cold start) and
lists never seen are scored and chosen from like any other.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from choicegrad.checkpoints import seeded_rng
from choicegrad.fitting import (GENERATOR_DECODERS, SCORER_METRICS, FitOptions, check_method, generate_problems,
                                minutes_left, read_scorer_result, training_summary)
from choicegrad.data.context import ContextEncoder
from choicegrad.data.items import (Catalogue, ItemEncoder, ItemLists, check_columns, check_eligible, check_lists,
                                   list_contexts, read_lists, read_log)
from choicegrad.decoding import decode
from choicegrad.errors import InputError, did_you_mean
from choicegrad.generators import GeneratorConfig, build
from choicegrad.generators.objective import DistinctItems, GeneratorLogProb, ItemObjective, ItemScorerObjective
from choicegrad.io import atomic_write_text, check_finite, read_json_object, read_table, sha256_file, versions, write_table
from choicegrad.training.contexts import ListPool
from choicegrad.training.loop import GeneratorFit, fit_generator

ITEMS_FILE = "items.json"
#: The pointer generator an item run trains: sequential (each slot sees the items chosen before it,
#: through a map per pair of slots), with one light set-attention layer of width 32 over the list
#: (SetAttention: linear in the list's length, so a list of 100,000 items costs its items, not their
#: pairs). On interacting items the layer lifts the single pick's exact optimum from about 61% to 66%
#: at about 1.4x the cost per list; full transformer layers cost 3.5x and N^2 (benchmarks/item_quality.py).
ITEM_GENERATOR = GeneratorConfig(kind="pointer", hidden=[128, 128], heads=4, attention_layers=1, attention_width=32)
#: Items per training list: longer lists are drawn as random sublists of this many (ListPool).
TRAIN_ITEMS = 16
#: Share of the training lists' items ListPool replaces by made-up items (attributes drawn from the
#: catalogue's marginals), so the generator chooses well among items it never saw (cold start).
ITEM_SYNTHETIC = 0.0
#: Scorer calls per list `generate` gives the searching decoders by default: max(4 K, ITEM_BUDGET).
ITEM_BUDGET = 64
#: How polish searches for item runs (DecodeOptions fields): it climbs from the 16 best of draws at
#: temperature 2 (unless given one): hotter draws start the climbs from more varied slates, which
#: matters most where the generator alone is weak (lists of unseen items). The climb is led by the
#: scorer's gradient (one change scored per step, best rated first); a reward that is not
#: differentiable climbs one slot per step (by_slot)
#: (benchmarks/item_lists.py part a, benchmarks/item_quality.py --item-decode, docs/items.md).
ITEM_DECODE: dict = {"starts": 16, "by_slot": True, "gradient": True, "temperature": 2.0}
#: Rows (lists x k) one generate call returns at most.
MAX_SLATES = 10_000_000
Table = Union[str, Path, pd.DataFrame]


class ItemSpec(BaseModel):
    """Which tables and columns make an item problem.

    slots: the log's slot columns (a list, or "a,b,c"); items: the items table (id and attribute
    columns); item_id: its id column (also the lists table's); attributes: the attribute columns
    (default: every other column); score: the log's score column; context: the context columns (the
    scorer's and generator's inputs, e.g. a user); lists: a table of the items each context may
    choose from (context columns, list_id if given, item id), None: the whole catalogue for every
    context of the log; list_id: a lists-table column naming a list beside the context columns (a key,
    never an input); distinct: an item at most once per slate; eligible: {slot: {attribute column:
    [allowed values]}}, the items a slot may take."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    slots: Union[str, list[str]]
    items: Any
    item_id: str = "id"
    attributes: Optional[list[str]] = None
    score: Optional[str] = None
    context: Union[str, list[str], None] = None
    lists: Any = None
    list_id: Optional[str] = None
    distinct: bool = False
    eligible: Optional[dict[str, dict[str, list[str]]]] = None

    @property
    def slot_names(self) -> list[str]:
        return _names(self.slots)

    @property
    def context_names(self) -> list[str]:
        return _names(self.context)


class ItemRecord(BaseModel):
    """items.json."""

    model_config = ConfigDict(extra="allow")
    slots: list[str] = Field(min_length=1)
    item_id: str
    encoder: ItemEncoder
    context: ContextEncoder
    list_id: Optional[str] = None
    distinct: bool = False
    eligible: Optional[dict[str, dict[str, list[str]]]] = None
    score: Optional[str] = None
    objective: Optional[dict] = None

    @property
    def keys(self) -> list[str]:
        return [c.name for c in self.context.columns] + ([self.list_id] if self.list_id else [])


def _names(value) -> list[str]:
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else list(value)
    return [str(p).strip() for p in parts if str(p).strip()]


def _read(source: Table, name: str) -> tuple[pd.DataFrame, str]:
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True), name
    return read_table(source), str(source)


def _check_spec(spec: ItemSpec, log: Optional[pd.DataFrame], log_name: str) -> None:
    problems = []
    slots, context = spec.slot_names, spec.context_names
    if not slots:
        problems.append("slots: name the log's slot columns (e.g. --slots left,middle,right)")
    dup = sorted({s for s in slots if slots.count(s) > 1})
    if dup:
        problems.append(f"slots: {', '.join(dup)} named twice")
    clash = sorted(set(slots) & set(context))
    if clash:
        problems.append(f"context: {', '.join(clash)} also name slots")
    if spec.list_id and spec.list_id in set(slots) | set(context):
        problems.append(f'list_id: "{spec.list_id}" is also a slot or context column')
    if log is not None and not spec.score:
        problems.append("score: name the log's score column (--score)")
    if problems:
        raise InputError("items", problems)


class ItemProblem:
    """An item problem read and checked before anything is written: the catalogue, the lists (with
    their encoded contexts), eligibility, and the log when there is one."""

    def __init__(self, spec: ItemSpec, log: Optional[Table] = None):
        frame, log_name = _read(log, "log") if log is not None else (None, "log")
        _check_spec(spec, frame, log_name)
        self.spec, self.slots = spec, spec.slot_names
        items, self.items_name = _read(spec.items, "items")
        self.catalogue = Catalogue.fit(items, spec.item_id, spec.attributes, self.items_name)
        check_eligible(spec.eligible, self.slots, self.catalogue.encoder)
        self.eligible = self.catalogue.eligibility(self.slots, spec.eligible)
        if self.eligible is not None and not self.eligible.any(1).all():
            raise InputError("eligible", [
                f'slot "{slot}": no item of {self.items_name} has '
                + " and ".join(f'{col} {"|".join(map(str, vals))}' for col, vals in spec.eligible[slot].items())
                for slot, has in zip(self.slots, self.eligible.any(1)) if not has])
        context = spec.context_names
        self.log = None
        lists_frame, self.lists_name = _read(spec.lists, "lists") if spec.lists is not None else (None, "lists")
        if frame is not None:
            self.encoder = ContextEncoder.fit(frame, [(c, None) for c in context if c in frame.columns], log_name)
            self.log = read_log(frame, self.slots, spec.score, context, self.catalogue, self.encoder, log_name)
        else:
            source = lists_frame if lists_frame is not None else None
            missing = [c for c in context if source is None or c not in source.columns]
            if missing:
                raise InputError(self.lists_name, [f'no context column "{c}" in the lists table' for c in missing])
            self.encoder = ContextEncoder.fit(source, [(c, None) for c in context], self.lists_name) if context \
                else ContextEncoder(columns=[])
        keys = context + ([spec.list_id] if spec.list_id else [])
        if lists_frame is not None:
            self.lists = read_lists(lists_frame, keys, spec.item_id, self.catalogue, self.lists_name)
        elif spec.list_id:
            raise InputError("list_id", ["names a column of the lists table: give one (--lists)"])
        elif self.log is not None and context:
            self.lists = ItemLists.whole(self.log.contexts.drop_duplicates().reset_index(drop=True), len(self.catalogue))
        else:
            self.lists = ItemLists.whole(pd.DataFrame(index=[0]), len(self.catalogue))
        check_lists(self.lists, self.slots, spec.distinct, self.eligible, self.lists_name)
        self.cat, self.num = self.encoder.encode(self.lists.keys, self.lists_name)

    def record(self, objective: Optional[dict] = None) -> ItemRecord:
        return ItemRecord(slots=self.slots, item_id=self.spec.item_id, encoder=self.catalogue.encoder,
                          context=self.encoder, list_id=self.spec.list_id, distinct=self.spec.distinct,
                          eligible=self.spec.eligible, score=self.spec.score if self.log is not None else None,
                          objective=objective)

    def identity(self) -> dict:
        """What a resumed fit must share with its start: the tables' content."""
        def ident(source) -> Any:
            if source is None:
                return None
            if isinstance(source, pd.DataFrame):
                return int(pd.util.hash_pandas_object(source, index=False).sum())
            return sha256_file(source)
        spec = self.spec.model_dump(exclude={"items", "lists"})
        return {"spec": spec, "items": ident(self.spec.items), "lists": ident(self.spec.lists)}


@dataclass
class _ItemFit:
    """An item fit in progress: what fit_items read and decided before opening the run folder."""

    cls: Any
    log: Optional[Table]
    out: Path
    spec: ItemSpec
    options: Any                       # choicegrad.fitting.FitOptions
    problem: ItemProblem
    objective: Any
    record: Optional[dict]
    scorer_fit: Any
    generator_fit: GeneratorFit
    gen_cfg: GeneratorConfig
    request: dict = field(default_factory=dict)


def fit_items(cls, log: Optional[Table], out, spec: ItemSpec, options=None, *, objective=None,
              record: Optional[dict] = None, generator_config: Optional[GeneratorConfig] = None):
    """Run.fit for an ItemSpec (see Run.fit; options: its FitOptions): log -> item scorer -> pointer
    generator, or, given `objective` (a reward over item vectors), the generator alone."""
    from choicegrad.runfolder import run_writer

    job = _start_item_fit(cls, log, out, spec, options or FitOptions(), objective, record, generator_config)
    o = job.options
    with run_writer(job.out, job.request, overwrite=o.overwrite, resume=o.resume,
                    checkpoint_minutes=o.checkpoint_minutes) as w:
        for note in w.notes:
            o.echo(note)
        if w.finished:
            return _loaded(job)
        with w.checkpoints.catch_signals() as ckpt:
            metrics, spent, goal = _item_scorer_phase(job, w)
            res = _item_generator_phase(job, w, goal, spent, ckpt)
        _seal_items(job, w, res, metrics, spent)
    per = res.scorer_calls / max(1, len(job.problem.lists))
    o.echo(f"generator: pointer + {job.generator_fit.method}, {res.seconds:.1f} s, {res.scorer_calls:,} "
           f"{'scorer' if objective is None else 'objective'} calls ({per:,.0f} per list), validation "
           f"{res.best_val:.4g} ({res.stopped}); wrote {job.out}/")
    return _loaded(job)


def _start_item_fit(cls, log, out, spec: ItemSpec, o, objective, record, generator_config) -> _ItemFit:
    """Every check before the run folder is touched: the method, the objective or log, the folder,
    the tables (ItemProblem); the settings the fit records (its request)."""
    from choicegrad.runfolder import check_out_path
    from choicegrad.scorer.fit import ScorerFit
    from choicegrad.training.step import check_trainable

    generator_fit = item_fit(o.generator_fit or GeneratorFit())
    generator_fit = generator_fit.model_copy(update={"method": check_method(generator_fit.method, "autoregressive")})
    scorer_fit = o.scorer_fit or ScorerFit()
    if objective is not None:
        objective = as_item_objective(objective)
        check_trainable(objective, generator_fit.method)
    elif log is None:
        raise InputError("log", ["an item run needs a log to fit the scorer on, or your own reward (objective=)"])
    check_out_path(out)
    problem = ItemProblem(spec, log)
    gen_cfg = generator_config or ITEM_GENERATOR
    if o.max_minutes is not None:
        scorer_fit = scorer_fit.model_copy(update={"max_minutes": o.max_minutes / 2})
    job = _ItemFit(cls, log, Path(out), spec, o, problem, objective, record, scorer_fit, generator_fit, gen_cfg)
    job.request = {"command": "fit-items", **problem.identity(), "log": _log_identity(log),
                   "objective": None if objective is None else (record or {"name": objective.name}),
                   "scorer_fit": scorer_fit.model_dump() if objective is None else None,
                   "generator": gen_cfg.model_dump(), "generator_fit": generator_fit.model_dump()}
    return job


def _log_identity(log: Optional[Table]):
    """What the request records of the log: None, a DataFrame's content hash, or a file's sha256."""
    if log is None:
        return None
    return int(pd.util.hash_pandas_object(log, index=False).sum()) if isinstance(log, pd.DataFrame) else sha256_file(log)


def _loaded(job: _ItemFit):
    """The run written, loaded (with the user's objective given back, for a run fitted to one)."""
    run = job.cls.load(job.out)
    return run.use_objective(job.objective, job.record) if job.objective is not None else run


def _item_scorer_phase(job: _ItemFit, w) -> tuple[Optional[dict], float, Any]:
    """The item scorer fitted on the log (or read back on resume), saved with its metrics; or, for a
    run fitted to the user's reward, nothing. -> (scorer metrics, seconds, the objective to train on)."""
    from choicegrad.scorer.items import ItemScorer, fit_item_scorer

    if job.objective is not None:
        return None, 0.0, job.objective
    echo, lg = job.options.echo, job.problem.log
    if w.resuming and (w.dir / SCORER_METRICS).is_file():
        result = read_scorer_result(w.dir, ItemScorer.load)
        echo(f"scorer: resumed, fitted on {len(lg.y)} log rows")
    else:
        result = fit_item_scorer(job.problem.catalogue.vectors, lg.slots, lg.cat, lg.num, lg.y, job.problem.slots,
                                 job.problem.encoder, job.spec.score, job.scorer_fit, progress=job.options.progress)
        result.scorer.save(w.dir)
        doc = {"data": "DataFrame" if isinstance(job.log, pd.DataFrame) else str(job.log), "rows": len(lg.y),
               "fit": job.scorer_fit.model_dump(), "metrics": result.metrics, "seconds": result.seconds}
        atomic_write_text(w.dir / SCORER_METRICS, json.dumps(doc, indent=2) + "\n")
        test = result.metrics.get("test") or result.metrics.get("validation") or {}
        echo(f"scorer: fitted on {len(lg.y)} log rows in {result.seconds:.1f} s (held-out spearman "
             f"{test.get('spearman', float('nan')):.3f})")
    return result.metrics, result.seconds, ItemScorerObjective(result.scorer)


def _item_generator_phase(job: _ItemFit, w, goal, spent: float, ckpt):
    """The pointer generator trained on random sublists of the training lists (ListPool) to maximise
    `goal` (DistinctItems of it for a distinct run: its search never reaches a repeat), with the
    goal's scale estimated where not given, in what is left of max_minutes."""
    problem, spec, o = job.problem, job.spec, job.options
    if spec.distinct:
        goal = DistinctItems(goal)
    pool = ListPool(problem.lists, problem.catalogue.vectors, problem.cat, problem.num, len(problem.slots),
                    eligible=problem.eligible, distinct=spec.distinct, max_items=TRAIN_ITEMS,
                    device=job.generator_fit.device, synthetic=ITEM_SYNTHETIC, blocks=problem.catalogue.encoder.blocks)
    if not goal.scale_given:
        goal.scale = estimate_item_scale(goal.prepare(job.generator_fit.device), pool, seed=job.generator_fit.seed)
        goal.scale_given = True
        o.echo(f"objective: scale {goal.scale:.4g} (the spread of its rewards over random slates; give "
               "ItemObjective(reward, scale=...) to set it)")
    if o.max_minutes is not None:
        job.generator_fit = job.generator_fit.model_copy(update={"max_minutes": minutes_left(o.max_minutes, spent, 1)})
    with seeded_rng(job.generator_fit.seed, job.generator_fit.device):     # the generator's initial weights
        gen = build(job.gen_cfg, num_slots=len(problem.slots), item_dim=problem.catalogue.encoder.dim,
                    context=problem.encoder, sequential=True, distinct=spec.distinct,
                    item_scaling=problem.catalogue.encoder.scaling())
    return fit_generator(gen, goal, pool, job.generator_fit, run_dir=w.dir, progress=o.progress, checkpoint=ckpt)


def _seal_items(job: _ItemFit, w, res, metrics: Optional[dict], spent: float) -> None:
    """The generator, items.json, items.csv, lists.csv and config.json written; the run committed."""
    from choicegrad import generators

    problem = job.problem
    generators.save(res.generator.cpu(), w.dir, {"items": True})
    item_record = problem.record(None if job.objective is None else {**(job.record or {}), "name": job.objective.name})
    atomic_write_text(w.dir / ITEMS_FILE, item_record.model_dump_json(indent=2) + "\n")
    write_table(problem.catalogue.frame, w.dir / "items.csv")
    write_table(problem.lists.table(problem.catalogue, job.spec.item_id), w.dir / "lists.csv")
    config = {"kind": "items", "log": job.request["log"], "slots": problem.slots, "score": job.spec.score,
              "context": job.spec.context_names, "items": len(problem.catalogue), "lists": len(problem.lists),
              "log_rows": None if problem.log is None else len(problem.log.y), "scorer_metrics": metrics,
              "generator": job.gen_cfg.model_dump(), "generator_fit": job.generator_fit.model_dump(),
              "generator_training": training_summary(res), "seconds": spent + res.seconds, "versions": versions()}
    atomic_write_text(w.dir / "config.json", json.dumps(config, indent=2) + "\n")
    w.commit()


def estimate_item_scale(objective, pool: ListPool, seed: int = 0, rows: int = 64) -> float:
    """The reward's spread under uniform random slates of the pool's validation lists (mean over
    lists of the std of `rows` slates each; 1.0 when they do not vary)."""
    from choicegrad.decoding.rows import uniform_rows

    ctx = pool.validation()
    allowed = ctx.allowed(pool.slots)
    draws = uniform_rows(allowed, rows, torch.Generator(device=allowed.device).manual_seed(seed))
    with torch.no_grad():
        values = objective(draws.reshape(-1, pool.slots), ctx.repeat_interleave(rows)).double().reshape(len(ctx), rows)
    values = values.masked_fill(~torch.isfinite(values), float("nan")).cpu().numpy()   # repeated items (distinct): left out
    seen = np.isfinite(values).sum(1) > 1
    spread = float(np.nanstd(values[seen], axis=1).mean()) if seen.any() else float("nan")
    return spread if np.isfinite(spread) and spread > 0 else 1.0


#: GeneratorFit settings an item run takes unless given (benchmarks/item_quality.py: interacting items,
#: 2-core CPU, 2026-12-06): longer training with the entropy bonus fading, and the last state kept
#: (validation ranks sampled slates, not the single pick, and kept earlier, worse states). Twice the
#: steps lift the single pick on a reward of one's own but not the cold start on a fitted scorer
#: (docs/items.md, part d), so 2,000 stays.
ITEM_FIT = {"steps": 2000, "entropy_end": 0.01, "patience": None, "keep": "last"}


def item_fit(fit: GeneratorFit) -> GeneratorFit:
    """`fit` with ITEM_FIT where it leaves them unset."""
    return fit.model_copy(update={k: v for k, v in ITEM_FIT.items() if k not in fit.model_fields_set})


def as_item_objective(objective):
    """An Objective over item lists: an ItemObjective, or a function reward(selected (N, S, D), ctx)."""
    from choicegrad.generators.objective import Objective

    if isinstance(objective, Objective):
        return objective
    if callable(objective):
        return ItemObjective(objective)
    raise InputError("objective", [f"expected a reward function reward(selected (N, S, D), ctx) -> (N,) or an "
                                   f"ItemObjective, got {type(objective).__name__}"])


class ItemRun:
    """What Run holds of an item run: the record, the training catalogue and lists, the scorer
    (None for a run fitted to the user's own reward)."""

    def __init__(self, record: ItemRecord, catalogue: Catalogue, lists: ItemLists):
        self.record, self.catalogue, self.lists = record, catalogue, lists

    @classmethod
    def read(cls, folder: Path) -> ItemRun:
        try:
            record = ItemRecord.model_validate(read_json_object(folder / ITEMS_FILE))
        except ValueError as exc:
            if isinstance(exc, InputError):
                raise
            from choicegrad.io import meta_problem
            raise InputError(str(folder / ITEMS_FILE), [f"not an item run record: {meta_problem(exc)}"]) from None
        catalogue = Catalogue.read(read_table(folder / "items.csv"), record.encoder, str(folder / "items.csv"))
        lists = read_lists(read_table(folder / "lists.csv"), record.keys, record.item_id, catalogue,
                           str(folder / "lists.csv"))
        return cls(record, catalogue, lists)


def _catalogue(run, items: Optional[Table]) -> Catalogue:
    state: ItemRun = run.items
    if items is None:
        return state.catalogue
    frame, name = _read(items, "items")
    return state.catalogue.extended(Catalogue.read(frame, state.record.encoder, name))


def _lists(run, catalogue: Catalogue, lists: Optional[Table], contexts: Optional[Table], items_given: bool):
    """(lists, their name): the lists table given; else the contexts given, each with the whole
    catalogue; else the training lists (with new items given: the training contexts, each with the
    whole catalogue)."""
    state: ItemRun = run.items
    keys = state.record.keys
    if lists is not None:
        frame, name = _read(lists, "lists")
        return read_lists(frame, keys, state.record.item_id, catalogue, name), name
    if contexts is not None:
        frame, name = _read(contexts, "contexts")
        if state.record.list_id:
            raise InputError("contexts", [f"this run's lists are named by \"{state.record.list_id}\": give lists (--lists)"])
        check_columns(frame, [c.name for c in state.record.context.columns], name, "context")
        if len(frame) == 0:
            raise InputError(name, ["the table has no rows"])
        return ItemLists.whole(frame[[c.name for c in state.record.context.columns]].drop_duplicates().reset_index(drop=True),
                               len(catalogue)), name
    if items_given:
        return ItemLists.whole(state.lists.keys, len(catalogue)), "the training contexts"
    positions = catalogue.index.get_indexer(state.catalogue.ids[state.lists.members])
    return ItemLists(state.lists.keys, positions.astype(np.int64), state.lists.offsets), "the training lists"


def parse_item_fix(fix, slots: list[str], catalogue: Catalogue, eligible: Optional[np.ndarray] = None,
                   distinct: bool = False) -> Optional[torch.Tensor]:
    """{'left': 'item7'} or ['left=item7'] -> (S,) long catalogue positions, -1 = free; InputError('fix')
    also for an item the slot may not take (eligible (S, M)) or, with distinct items, one item fixed
    in two slots."""
    if not fix:
        return None
    if isinstance(fix, dict):
        pairs = [(str(k), str(v)) for k, v in fix.items()]
    else:
        parts = [p for item in ([fix] if isinstance(fix, str) else fix) for p in item.split(",") if p.strip()]
        pairs = [tuple(t.strip() for t in p.partition("=")[::2]) for p in parts]
    out = torch.full((len(slots),), -1, dtype=torch.long)
    problems = []
    for slot, item in pairs:
        if not slot or not item:
            problems.append(f'"{slot}={item}": expected SLOT=ITEM_ID')
        elif slot not in slots:
            problems.append(f'unknown slot "{slot}"{did_you_mean(slot, slots)}; slots: {", ".join(slots)}')
        elif item not in catalogue.index:
            problems.append(f'slot "{slot}": no item "{item}" in the items{did_you_mean(item, catalogue.ids[:1000])}')
        elif out[slots.index(slot)] >= 0:
            problems.append(f'slot "{slot}" fixed twice')
        else:
            s = slots.index(slot)
            out[s] = int(catalogue.index.get_loc(item))
            if eligible is not None and not eligible[s, out[s]]:
                problems.append(f'slot "{slot}": item "{item}" is not eligible there (the run\'s eligibility rules)')
    if distinct and not problems:
        for item in {int(p) for p in out.tolist() if p >= 0}:
            where = [slots[s] for s in torch.nonzero(out == item).flatten().tolist()]
            if len(where) > 1:
                problems.append(f'item "{catalogue.ids[item]}" fixed in slots {", ".join(where)}: the run\'s slates hold '
                                "distinct items")
    if problems:
        raise InputError("fix", problems)
    return out


def generate_items(run, *, items: Optional[Table] = None, lists: Optional[Table] = None,
                   contexts: Optional[Table] = None, k: int = 10, decoder: Optional[str] = None, fix=None,
                   temperature: Optional[float] = None, samples: Optional[int] = None, budget: Optional[int] = None,
                   beta: Optional[float] = None, seed: int = 0) -> pd.DataFrame:
    """Run.generate for an item run: the top-k distinct slates per list (see Run.generate; many
    parameters: its keywords). temperature None: polish's ITEM_DECODE temperature, else 1."""
    decoder = decoder or "polish"
    problems = generate_problems(k, decoder, temperature, samples, budget, seed)
    if problems:
        raise InputError("generate", problems)
    asked = _read_lists(run, items, lists, contexts, fix)
    if len(asked.lists) * k > MAX_SLATES:
        raise InputError("k", [f"{k:,} slates for each of {len(asked.lists):,} lists is more than {MAX_SLATES:,} rows"])
    objective, column = _slate_objective(run, decoder, beta)
    search = dict(ITEM_DECODE) if decoder == "polish" else {}
    if temperature is not None:
        search["temperature"] = temperature
    options = dict(samples=samples, generator=torch.Generator(device=run.device).manual_seed(seed),
                   budget=budget if budget is not None or samples is not None else max(4 * k, ITEM_BUDGET), **search)
    result, calls, short = _decode_lists(run, asked, objective, column, decoder, k, options)
    if column == "predicted" and run.scorer is not None:
        result[column] = run.scorer.to_score(result[column].to_numpy())
    check_finite(result[column].to_numpy(), "generate", "the predicted score")
    result.attrs.update(decoder=decoder, scorer_calls=int(calls) if column == "predicted" else 0,
                        contexts=len(asked.lists), short=short)
    return result


@dataclass
class _AskedLists:
    """What generate decodes: the lists, the catalogue (the run's items and any new ones), each slot's
    eligible items (S, M) or None, the lists' encoded context columns, the fixed slots."""

    lists: ItemLists
    catalogue: Catalogue
    eligible: Optional[np.ndarray]
    cat: torch.Tensor
    num: torch.Tensor
    fixed: Optional[torch.Tensor]


def _read_lists(run, items, lists, contexts, fix) -> _AskedLists:
    """The tables generate was given, read and checked against the run (InputError naming them)."""
    record = run.items.record
    catalogue = _catalogue(run, items)
    item_lists, name = _lists(run, catalogue, lists, contexts, items is not None)
    eligible = catalogue.eligibility(record.slots, record.eligible)
    check_lists(item_lists, record.slots, record.distinct, eligible, name)
    cat, num = record.context.encode(item_lists.keys, name)
    fixed = parse_item_fix(fix, record.slots, catalogue, eligible, record.distinct)
    return _AskedLists(item_lists, catalogue, eligible, cat, num, fixed)


def _slate_objective(run, decoder: str, beta: Optional[float]):
    """(what the decoder scores slates with, the output column): the run's scorer or the user's
    reward ("predicted"; a distinct run's refuses slates repeating an item), else, for a run fitted
    to a reward it does not hold, the generator's own log-probability ("log_prob", argmax, sample
    and topk only)."""
    if run.scorer is not None:
        objective, column = ItemScorerObjective(run.scorer, beta=beta), "predicted"
    elif run.objective is not None:
        objective, column = run.objective, "predicted"
    else:
        if decoder not in GENERATOR_DECODERS:
            raise InputError("objective", [
                f"decoder {decoder} scores slates with the reward the run was fitted to, which a run folder never "
                "holds: give it (Run.use_objective) or decode with the generator alone: " + ", ".join(GENERATOR_DECODERS)])
        objective, column = GeneratorLogProb(run.generator), "log_prob"
    if run.items.record.distinct and column == "predicted":
        objective = DistinctItems(objective)
    return objective.prepare(run.device), column


def _decode_lists(run, asked: _AskedLists, objective, column: str, decoder: str, k: int, options: dict,
                  ) -> tuple[pd.DataFrame, int, int]:
    """Decode every list, in chunks of padded lists (list_contexts). -> (the slates, lists in order and
    best first per list; objective calls spent; lists with fewer than k slates)."""
    record = run.items.record
    frames, calls, short = [], 0, 0
    for which, ctx, pos in list_contexts(asked.lists, asked.catalogue, asked.cat, asked.num, asked.eligible,
                                         len(record.slots)):
        fixed = None if asked.fixed is None else \
            _fixed_positions(asked.fixed, pos, asked.lists, which, record.slots, asked.catalogue)
        ctx = ctx.to(run.device)
        before = objective.calls
        cands = decode(decoder, run.generator, objective, ctx, k, fixed=fixed, **options)
        if record.distinct:   # the decoders' top-up changes one slot at a time, which may repeat an item
            with torch.no_grad():
                cands = complete_distinct_items(cands, objective, ctx, k, run.generator.choice_mask(ctx),
                                                fixed, options["generator"])
        calls += objective.calls - before
        frame = _slates_frame(cands, pos, which, asked.lists, asked.catalogue, record, column)
        frames.append(frame)
        got = frame["__list"].value_counts().reindex(which, fill_value=0).to_numpy()    # slates per list
        short += int((got < k).sum())
    result = pd.concat(frames, ignore_index=True)
    order = np.lexsort((result["rank"].to_numpy(), result.pop("__list").to_numpy()))
    return result.iloc[order].reset_index(drop=True), calls, short


def distinct_item_rows(allowed: torch.Tensor, n: int, generator: Optional[torch.Generator] = None,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """n rows per list of distinct items: each slot uniform over its allowed items (allowed (B, S, N)
    bool) that no slot filled before it took, the most constrained slots (fixed ones) first. ->
    rows (B, n, S) long, ok (B, n) (False where a slot had no item left)."""
    B, S, V = allowed.shape
    dev = allowed.device
    rows = torch.zeros(B, n, S, dtype=torch.long, device=dev)
    taken = torch.zeros(B, n, V, dtype=torch.bool, device=dev)
    ok = torch.ones(B, n, dtype=torch.bool, device=dev)
    for s in allowed.sum(-1).float().mean(0).argsort(stable=True).tolist():   # a loop over slots
        free = allowed[:, s].unsqueeze(1) & ~taken                                  # (B, n, V)
        has = free.any(-1)
        ok &= has
        weights = (free | ~has.unsqueeze(-1)).reshape(B * n, V).float()            # none left: any (not ok)
        pick = torch.multinomial(weights, 1, generator=generator).reshape(B, n)
        rows[:, :, s] = pick
        taken.scatter_(2, pick.unsqueeze(-1), True)
    return rows, ok


def complete_distinct_items(cands, objective, ctx, k: int, mask: torch.Tensor, fixed: Optional[torch.Tensor],
                            generator: Optional[torch.Generator] = None, rounds: int = 4, max_cells: int = 1 << 24):
    """Candidates (B, K, S) -> Candidates (B, k, S): their rows of distinct items (a row holding an
    item twice dropped), topped up to k per list where the list (its eligible items, the fixed
    slots) holds that many, with rows of distinct items drawn uniformly (distinct_item_rows) and
    scored by `objective`; best first. mask: the generator's (B, S, N) choice mask; at most `rounds`
    rounds of draws, each over groups of lists of at most `max_cells` (draws x items) cells. Many
    parameters: the decoding's own (candidates, objective, lists, mask, fixed slots, random stream)."""
    from choicegrad.decoding.rows import allowed_choices, distinct_in_order, row_keys
    from choicegrad.decoding.scoring import Candidates, score_grid

    rows, scores, ok = _distinct_candidates(cands, k)
    B, _, S = rows.shape
    V = mask.shape[-1]
    allowed = allowed_choices(mask, fixed)
    calls = cands.scorer_calls
    n = max(2 * k, 32)
    for _ in range(rounds):
        short = torch.nonzero(ok.sum(1) < k).flatten()
        if not len(short):
            break
        step = max(1, max_cells // (n * V))
        for start in range(0, len(short), step):   # a loop over groups of short lists (bounded memory)
            b = short[start:start + step]
            draws, fresh = distinct_item_rows(allowed[b].contiguous(), n, generator)
            merged, keep = distinct_in_order(torch.cat([rows[b], draws], 1), torch.cat([ok[b], fresh], 1), k, V)
            old_keys = torch.where(ok[b], row_keys(rows[b], V), -1)
            match = (row_keys(merged, V).unsqueeze(-1) == old_keys.unsqueeze(1)) & keep.unsqueeze(-1)   # (b, k, K)
            known = match.any(-1)
            nan = torch.full(known.shape, float("nan"), dtype=scores.dtype, device=scores.device)
            s = torch.where(known, scores[b].gather(1, match.float().argmax(-1)), nan)
            need = keep & ~known
            if bool(need.any()):
                new, spent = score_grid(objective, merged, ctx.index(b), need)
                s = torch.where(need, new.to(s.dtype), s)
                calls += spent
            keep = keep & torch.isfinite(s)
            rows[b] = torch.where(keep.unsqueeze(-1), merged, -1)
            scores[b], ok[b] = s.masked_fill(~keep, float("-inf")), keep
    scores = scores.masked_fill(~ok, float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    return Candidates(rows.gather(1, order.unsqueeze(-1).expand(-1, -1, S)), scores.gather(1, order),
                      ok.gather(1, order), calls)


def _distinct_candidates(cands, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first k candidates as (rows (B, k, S), scores (B, k), ok (B, k)), padded to k, ok only where
    valid, scored finite and no item repeated."""
    rows, scores = cands.rows[:, :k].clone(), cands.scores[:, :k].float().clone()
    B, _, S = rows.shape
    same = (rows.unsqueeze(-1) == rows.unsqueeze(-2)) & ~torch.eye(S, dtype=torch.bool, device=rows.device)
    ok = cands.valid[:, :k] & torch.isfinite(scores) & ~same.flatten(-2).any(-1)
    if rows.shape[1] < k:
        pad = k - rows.shape[1]
        rows = torch.cat([rows, rows.new_full((B, pad, S), -1)], 1)
        scores = torch.cat([scores, scores.new_full((B, pad), float("-inf"))], 1)
        ok = torch.cat([ok, ok.new_zeros((B, pad))], 1)
    return rows, scores, ok


def _fixed_positions(fixed: torch.Tensor, pos: torch.Tensor, item_lists: ItemLists, which: np.ndarray,
                     slots: list[str], catalogue: Catalogue) -> torch.Tensor:
    """(S,) catalogue positions -> (b, S) positions within each list of the chunk; InputError('fix')
    naming the lists that do not hold a fixed item."""
    out = torch.full((len(pos), len(slots)), -1, dtype=torch.long)
    problems = []
    for s in torch.nonzero(fixed >= 0).flatten().tolist():   # a loop over fixed slots
        hit = pos == fixed[s]
        has = hit.any(1)
        if not bool(has.all()):
            missing = np.flatnonzero(~has.numpy())[:3]
            names = "; ".join(", ".join(f"{c}={v}" for c, v in item_lists.keys.iloc[which[m]].items()) or "the list"
                              for m in missing)
            problems.append(f'slot "{slots[s]}": item "{catalogue.ids[int(fixed[s])]}" is not in {int((~has).sum()):,} '
                            f"list(s): {names}")
        out[:, s] = hit.float().argmax(1)
    if problems:
        raise InputError("fix", problems)
    return out


def _slates_frame(cands, pos: torch.Tensor, which: np.ndarray, item_lists: ItemLists, catalogue: Catalogue,
                  record: ItemRecord, column: str) -> pd.DataFrame:
    """One row per (list, rank): key columns, slot columns (item ids), the score column, rank."""
    rows, valid = cands.rows.cpu(), cands.valid.cpu()
    scores = cands.scores.cpu().double()
    valid = valid & torch.isfinite(scores)
    b, r = torch.nonzero(valid, as_tuple=True)
    chosen = pos[b.unsqueeze(1), rows[b, r]]                                      # (n, S) catalogue positions
    frame = item_lists.keys.iloc[which[b.numpy()]].reset_index(drop=True)
    for s, slot in enumerate(record.slots):
        frame[slot] = catalogue.ids[chosen[:, s].numpy()]
    frame[column] = scores[b, r].numpy()
    frame["rank"] = r.numpy() + 1
    frame["__list"] = which[b.numpy()]
    return frame


def read_slates(run, slates: Table, items: Optional[Table] = None):
    """An item run's slates (context columns, slot columns of item ids) read against its catalogue
    (plus `items`): (the table, its name, an ItemLog of it (item positions, encoded contexts), the
    catalogue). InputError naming the file, column and rows."""
    record = run.items.record
    frame, name = _read(slates, "slates")
    check_columns(frame, [*record.slots, *(c.name for c in record.context.columns)], name, "slate")
    catalogue = _catalogue(run, items)
    lg = read_log(frame.assign(__score=0.0), record.slots, "__score", [c.name for c in record.context.columns],
                  catalogue, record.context, name)
    return frame, name, lg, catalogue


def score_slates(run, slates: Table, items: Optional[Table] = None, beta: Optional[float] = None) -> pd.DataFrame:
    """Run.score for an item run: the slates (context columns, slot columns of item ids) with a
    `predicted` column (the score's units). InputError naming the file, column and rows."""
    state: ItemRun = run.items
    record = state.record
    if run.scorer is None:
        raise InputError(str(run.out), ["this run was fitted to your own reward and has no scorer: score slates with "
                                        "that function itself"])
    frame, name, lg, catalogue = read_slates(run, slates, items)
    if "predicted" in frame.columns:
        warnings.warn(f'{name} already has a "predicted" column; it is replaced', UserWarning, stacklevel=3)
    if record.distinct:
        twice = np.flatnonzero((lg.slots.unsqueeze(-1) == lg.slots.unsqueeze(-2)).sum((1, 2)).numpy() > len(record.slots))
        if len(twice):
            from choicegrad.errors import show_rows
            warnings.warn(f"{name}: the run was fitted for distinct items; {show_rows(twice)} hold an item twice",
                          UserWarning, stacklevel=3)
    scorer = run.scorer
    old = scorer.beta
    if beta is not None:
        scorer.beta = beta
    try:
        selected = catalogue.vectors[lg.slots]
        values = scorer.predict(selected.to(run.device), lg.cat.to(run.device), lg.num.to(run.device))
    finally:
        scorer.beta = old
    out = frame.assign(predicted=np.asarray(values.cpu(), dtype=np.float64))
    check_finite(out["predicted"].to_numpy(), name, "the predicted score")
    return out


__all__ = ["ITEM_GENERATOR", "ItemRecord", "ItemRun", "ItemSpec", "fit_items", "generate_items", "score_slates"]
