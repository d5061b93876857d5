"""Design rounds as ask/tell: propose a batch, measure it, tell the results, propose again.

    d = Designer(features="s?", score="y", context="tf", space={"s0": list("ACGT"), ...})
    d.tell(measured_frame)                    # rows with feature, context and score columns
    batch = d.ask(128)                        # 128 new distinct rows per context, best first
    d.tell(batch.assign(y=lab_results))       # a score of -inf or an empty score: the row failed
    d.save("state")                           # models for the next round's warm start
    d = Designer.load("state"); d.tell(all_rows_so_far); d.ask(128)

Each `ask` refits, within `max_minutes`: the scorer ensemble on the rows that did not fail (each
member to its last epoch, ReLU units: scorer_keep, scorer; its learning rate anneals by its time
limit, ScorerFit.max_minutes), a feasibility classifier on all rows (when some failed), the pairs
of categories in neighbouring slots of a sequence that the rows which did not fail hold
(PairSupport: feasibility before any row has failed, where banned neighbours make rows fail; no
penalty where the slots show no such sign), and the autoregressive generator, which imitates the
best measured rows and, where a context's space is too large to enumerate (generator_steps), is
trained by REINFORCE on the acquisition (choicegrad.design.acquisition); each starts from the
last round's weights when it has them.

Candidates are then searched on the acquisition with measured rows kept out: polish decoding from
the generator's draws, polish climbs from the best measured rows, and uniform random rows as a
reserve (`pool` x n of each per context), or every row when the space holds at most
max(pool x n, 4096). `local_share` of the batch is picked first near the `elite` best measured
rows (a trust region; searched spaces only): every single-slot change of the best of them where
that fits, then one- and two-slot changes and crossovers of any two; the rest from all candidates
(choicegrad.decoding.select). Both picks keep to rows whose estimated P(feasible) is at least
`min_feasible`, and take others only where a context has too few.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from choicegrad import generators
from choicegrad.checkpoints import seeded_rng
from choicegrad.data.space import read_space
from choicegrad.data.spec import parse_names
from choicegrad.data.table import MIN_ROWS, TableData, load_table
from choicegrad.decoding import Candidates, decode
from choicegrad.decoding.local_search import polish, single_changes
from choicegrad.decoding.rows import MAX_ENUMERATE, change_one_slot, cross_rows, neighbour_count, uniform_rows
from choicegrad.design.acquisition import Acquisition, Measured, PairSupport, context_keys
from choicegrad.decoding.select import select_batch
from choicegrad.device import Device
from choicegrad.errors import InputError
from choicegrad.generators import GeneratorConfig, TableContext
from choicegrad.io import (atomic_write_text, check_finite, meta_problem, read_json_object, read_table, state_problems,
                           versions)
from choicegrad.runfolder import FITTED_RUN_FILES, RunLock, RunWriter, check_out_path, foreign_files, verify_run
from choicegrad.scorer.fit import ScorerFit, fit_scorer
from choicegrad.scorer.model import Scorer, ScorerConfig
from choicegrad.training.contexts import TableContexts
from choicegrad.training.loop import GeneratorFit, fit_generator

STATE_FILE = "designer.json"
#: A design state's files beside a run's: the feasibility classifier and designer.json, checked
#: against run.json like the models (and what a state written before run.json may hold).
STATE_FILES = FITTED_RUN_FILES.plus(verified=("feasibility.", "designer."),
                             legacy=("feasibility.safetensors", "feasibility.json", STATE_FILE))
#: Most candidates (contexts x batch x pool) one ask searches: beyond this the pools exhaust memory.
MAX_POOL_ROWS = 20_000_000
#: Most cells (slots x categories x slots) the single-slot changes of one elite row may hold to be
#: enumerated (a 32 x 32 space's: 32,768): beside the pools (contexts x batch x pool x slots) they are small.
MAX_NEIGHBOUR_CELLS = 65_536
#: Shares of a round's max_minutes: the scorer ensemble, the feasibility classifier (when rows
#: failed), then the generator gets this share of what is left (the search is bounded by calls).
#: Where the generator takes no REINFORCE steps the scorer has SCORER_ALONE_SHARE instead.
SCORER_SHARE, FEASIBILITY_SHARE, GENERATOR_SHARE, SCORER_ALONE_SHARE = 0.45, 0.1, 0.8, 0.85
#: REINFORCE steps of the generator (generator_steps None) where a context's space holds more than
#: MAX_ENUMERATE rows; in smaller spaces none (polish from the imitation of the best rows finds
#: the same candidates, and the scorer's time is worth more: docs/targets.md, issue 31).
GENERATOR_STEPS = 1500


class DesignConfig(BaseModel):
    """How a Designer proposes. Stored in its state."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    acquisition: Literal["ucb", "thompson"] = Field("ucb", description="ucb: mean + kappa * std of the ensemble; "
                                                    "thompson: each batch row picked by one random member")
    kappa: float = Field(1.0, ge=0, description="optimism of ucb, in ensemble standard deviations")
    ensemble: int = Field(4, ge=2, description="scorer members (the uncertainty is their spread)")
    min_distance: int = Field(1, ge=1, description="least Hamming distance between two rows of a batch")
    feasibility_weight: float = Field(1.0, ge=0, description="score std per nat of log P(feasible)")
    neighbour_pairs: bool = Field(True, description="also rate feasibility by the pairs of categories in neighbouring "
                                  "slots of a sequence (slots with the same categories) that rows which did not fail hold (PairSupport): feasible proposals before any "
                                  "row has failed, where banned neighbours (a sequence's transitions) make rows fail; "
                                  "no penalty where the slots show no sign of banned pairs")
    pool: int = Field(4, ge=1, description="candidates searched per batch row before the batch is picked")
    min_feasible: float = Field(0.5, ge=0, le=1, description="least estimated P(feasible) (the feasibility "
                                "classifier's and the neighbour pairs' together) of a proposal: rows below it are "
                                "proposed only where a context has too few rows above it (0: no floor)")
    local_share: float = Field(0.75, ge=0, le=1, description="share of the batch picked near the best measured "
                               "rows (a trust region, where the scorer is least wrong: their single-slot changes, "
                               "one- and two-slot changes and crossovers); the rest from the whole search")
    elite: int = Field(32, ge=1, description="best measured rows per context the local changes start from")
    scorer_keep: Literal["best", "last"] = Field("last", description="each scorer member's weights: those after its "
                                                 "last epoch (members differ more, and rank the top rows better), or "
                                                 "those of its best validation epoch (stopping early)")
    scorer_epochs: Optional[int] = Field(None, ge=1, description="epochs of each scorer member (None: ScorerFit's "
                                         "automatic count, within the round's time)")
    budget: Optional[int] = Field(None, ge=1, description="scorer calls per context for the search "
                                  "(None: 5 x pool x batch, at least 256)")
    max_minutes: float = Field(2.5, gt=0, description="time for one round's refits (the whole round, with the search, stays near it)")
    generator_steps: Optional[int] = Field(None, ge=0, description="REINFORCE steps of the generator on the "
                                           "acquisition, whose draws the search polishes; with 0 it only imitates "
                                           "the best measured rows (its warm start) and the scorer takes the time "
                                           "(None: GENERATOR_STEPS where a context's space holds more than "
                                           "MAX_ENUMERATE rows, else 0)")
    scorer: ScorerConfig = Field(default_factory=lambda: ScorerConfig(activation="relu"))
    seed: int = Field(0, ge=0, lt=2**62)
    device: Device = "cpu"


class StateFile(BaseModel):
    """What designer.json must hold (other fields, e.g. versions and last, are kept as they are)."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["choicegrad.Designer"]
    spec: dict[str, Any]
    config: dict[str, Any]
    rounds: int = Field(ge=0, lt=2**31, strict=True)


def read_state(path: Union[str, Path]) -> StateFile:
    """FOLDER/designer.json validated; InputError naming the file and each bad field."""
    file = Path(path) / STATE_FILE
    try:
        return StateFile.model_validate(read_json_object(file))
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(str(file), [f"not a designer state: {meta_problem(exc)}"]) from None


class Designer:
    """Ask/tell design rounds over a choice space (see the module docstring).

    features: names or glob patterns; score: the score column; context: context columns (as in
    load_table); space: declared categories per feature (dict or JSON file), so categories never
    measured can be proposed. measured: every row told so far (a DataFrame); scorer, feasibility,
    generator: the models of the last ask (None before). rounds: asks so far; last: facts about
    the last ask (seconds per phase, scorer calls, rows, failed rows).
    """

    def __init__(self, features: Union[str, list[str]], score: str = "y",
                 context: Union[str, list[str], None] = None,
                 space: Union[dict[str, list[str]], str, Path, None] = None, config: Optional[DesignConfig] = None):
        self.features, self.score, self.context = features, score, context
        # the declaration itself is what a saved state must match: a file is read once, here
        self.space = read_space(space) if isinstance(space, (str, Path)) else space
        self._space_source = str(space) if isinstance(space, (str, Path)) else "space"
        self._data: Optional[TableData] = None                 # the measured rows, validated by tell()
        self.config = config or DesignConfig()
        self.measured: Optional[pd.DataFrame] = None
        self.scorer: Optional[Scorer] = None
        self.feasibility: Optional[Scorer] = None
        self.pairs: Optional[PairSupport] = None
        self.generator = None
        self.rounds = 0
        self.last: dict = {}

    # --- data ------------------------------------------------------------------------------------
    def table(self) -> TableData:
        """The measured rows validated as a table (failed rows hold -inf), as the last tell() loaded them."""
        if self._data is None:
            raise InputError("ask", ["nothing measured yet: tell(rows, scores) first"])
        return self._data

    def _load(self, frame: pd.DataFrame, source: Optional[str]) -> TableData:
        """`frame` validated as a table; InputError naming `source` (the file the rows came from,
        None: "table") and the space file."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")          # single-category and ID notes: not a design error
                data = load_table(frame, self.features, self.score, self.context, space=self.space, failures=True)
        except InputError as exc:
            name = {"space": self._space_source, "table": source or exc.source}.get(exc.source, exc.source)
            raise InputError(name, exc.problems) from None
        if source is not None:
            data.source = source
        return data

    def tell(self, rows: Union[pd.DataFrame, str, Path], scores=None) -> None:
        """Add measured rows (a DataFrame, or a CSV/Parquet file whose name the errors give): feature
        and context columns, and the score column unless `scores` ((N,) numbers; -inf, NaN or None for
        a row that failed) is given. InputError (nothing added) for a bad table."""
        source = str(rows) if isinstance(rows, (str, Path)) else None
        frame = (read_table(rows) if source is not None else rows).reset_index(drop=True).copy()
        if scores is not None:
            values = list(scores)                          # load_table checks them: text is an error
            if len(values) != len(frame):
                raise InputError("scores", [f"{len(values)} scores for {len(frame)} rows"])
            frame[self.score] = pd.Series(values, dtype=object)
        combined = frame if self.measured is None else pd.concat([self.measured, frame], ignore_index=True)
        # errors number the rows of `combined`: the file's own rows only when it is the first told
        self._data = self._load(combined, source if self.measured is None else "the measured rows")
        self.measured = combined

    # --- one round ---------------------------------------------------------------------------------
    def ask(self, n: int, contexts: Union[pd.DataFrame, str, Path, None] = None, *, progress: Optional[bool] = False,
            echo: Callable[[str], None] = lambda line: None) -> pd.DataFrame:
        """n new distinct rows per context, never measured in that context, best first: the context
        columns, the features, `predicted` (ensemble mean, score units), `uncertainty` (ensemble
        std), `p_feasible` (only when some measured row failed) and `rank` (1 = best).

        contexts: a DataFrame or CSV/Parquet file of context columns (default: the measured
        contexts; a categorical value never measured is an InputError). Fewer than n
        rows come back for a context only when its space holds fewer rows not yet measured (at the
        batch's min_distance); frame.attrs["short"] counts such contexts. progress: bars of the fits
        (None: on a terminal, plain lines elsewhere; see choicegrad.progress); echo: one line per phase."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError("n", [f"expected a batch size >= 1, got {n!r}"])
        cfg = self.config
        data = self.table()
        ok = self._scored(data)
        seed = cfg.seed + self.rounds
        frame, ctx = self._contexts(data, contexts)
        if len(ctx) * n * cfg.pool > MAX_POOL_ROWS:
            raise InputError("n", [f"{n:,} rows for each of {len(ctx):,} contexts searches {len(ctx) * n * cfg.pool:,} "
                                   f"candidates; at most {MAX_POOL_ROWS:,}: ask for fewer rows or fewer contexts"])
        start = time.perf_counter()
        acq, timing, steps = self._fit_models(data, ok, seed, start, progress, echo)
        t0 = time.perf_counter()
        calls_before = acq.calls
        rows, ok_batch = self._search(data, acq, ctx, int(n), seed)
        timing["search"] = time.perf_counter() - t0
        out = self._frame(rows, ok_batch, ctx, frame, acq)
        self.rounds += 1
        self.last = {"round": self.rounds, "rows": len(data), "failed": int((~ok).sum()), "seconds": timing,
                     "generator_steps": steps,
                     "search_calls_per_context": (acq.calls - calls_before) / max(1, len(ctx)),
                     "short": out.attrs["short"]}
        echo(f"round {self.rounds}: {len(out)} rows for {len(ctx)} context(s) in "
             f"{time.perf_counter() - start:.1f} s")
        return out

    def _scored(self, data: TableData) -> np.ndarray:
        """(N,) bool: the measured rows with a score (the others failed); InputError for fewer than
        MIN_ROWS, or a min_distance beyond the slots."""
        S = data.space.num_slots
        if self.config.min_distance > S:
            raise InputError("min_distance", [f"{self.config.min_distance} slots apart is more than the {S} slots a "
                                              "row has"])
        ok = np.isfinite(data.y.numpy())
        if ok.sum() < MIN_ROWS:
            raise InputError(data.source, [f"{int(ok.sum())} of {len(data)} measured rows have a score (the others "
                                           f"failed); at least {MIN_ROWS} are needed to fit a scorer"])
        return ok

    def _fit_models(self, data: TableData, ok: np.ndarray, seed: int, start: float, progress, echo,
                    ) -> tuple[Acquisition, dict[str, float], int]:
        """Fit the round's scorer (on the scored rows, repeats merged), feasibility classifier (when
        some row failed) and generator (on the acquisition, in what is left of the time budget
        counted from `start`) -> (the acquisition, seconds per fit, the generator's REINFORCE steps)."""
        cfg, timing = self.config, {}
        budget_s = 60 * cfg.max_minutes
        feasible, differing = _merge_repeats(data.subset(np.flatnonzero(ok)))
        if differing:
            echo(f"warning: {differing} row(s) were measured more than once (same context and features) with different "
                 "scores; the scorer learns the mean of each")
        all_failed = _contexts_all_failed(data, ok)
        if all_failed:
            echo(f"warning: every measured row failed in {len(all_failed)} context(s) ({', '.join(all_failed[:5])}"
                 f"{' ...' if len(all_failed) > 5 else ''}): their proposals rest on the other contexts and on which "
                 "rows failed")

        steps = self.generator_steps(data)
        share = SCORER_SHARE if steps else SCORER_ALONE_SHARE
        res = fit_scorer(feasible, ScorerFit(model=cfg.scorer, ensemble=cfg.ensemble, seed=seed, test_fraction=0.0,
                                             keep=cfg.scorer_keep, epochs=cfg.scorer_epochs,
                                             max_minutes=share * cfg.max_minutes, device=cfg.device),
                         progress=progress, init=self.scorer)
        self.scorer = res.scorer.to(cfg.device).eval().requires_grad_(False)
        timing["scorer"] = res.seconds
        echo(f"scorer: {cfg.ensemble} members on {len(feasible)} rows in {res.seconds:.1f} s")

        t0 = time.perf_counter()
        self.feasibility = None if ok.all() else self._fit_feasibility(data, ok, seed, progress)
        timing["feasibility"] = time.perf_counter() - t0

        self.pairs = _pair_support(feasible, cfg) if cfg.neighbour_pairs else None
        acq = Acquisition(self.scorer, cfg.kappa if cfg.acquisition == "ucb" else 0.0, self.feasibility,
                          cfg.feasibility_weight, pairs=self.pairs)
        left = max(0.05, (budget_s - (time.perf_counter() - start)) / 60)
        t0 = time.perf_counter()
        self._fit_generator(feasible, acq, seed, steps, GENERATOR_SHARE * left, progress)
        timing["generator"] = time.perf_counter() - t0
        return acq, timing, steps

    def _fit_feasibility(self, data: TableData, ok: np.ndarray, seed: int, progress) -> Scorer:
        """A classifier of rows that do not fail (logistic loss on 0/1), on every measured row."""
        cfg = self.config
        labels = data.subset(np.arange(len(data)))
        labels.y = torch.as_tensor(ok, dtype=torch.float64)
        fit = ScorerFit(model=cfg.scorer, ensemble=2, loss="logistic", seed=seed + 1, test_fraction=0.0,
                        max_minutes=FEASIBILITY_SHARE * cfg.max_minutes, device=cfg.device)
        return fit_scorer(labels, fit, progress=progress, init=self.feasibility).scorer.to(
            cfg.device).eval().requires_grad_(False)

    def generator_steps(self, data: TableData) -> int:
        """The generator's REINFORCE steps this round: config.generator_steps, or its automatic count."""
        if self.config.generator_steps is not None:
            return self.config.generator_steps
        return GENERATOR_STEPS if data.space.num_rows() > MAX_ENUMERATE else 0

    def _fit_generator(self, feasible: TableData, acq: Acquisition, seed: int, steps: int, minutes: float,
                       progress) -> None:
        cfg = self.config
        with seeded_rng(seed):          # the weights' initialisation, the caller's global RNG untouched
            gen = generators.build(GeneratorConfig(kind="autoregressive"), space=self.scorer.space,
                                   context=self.scorer.context)
        warm = self.generator is not None and not state_problems(gen, self.generator.state_dict())
        if warm:
            gen.load_state_dict(self.generator.state_dict())
        fit = GeneratorFit(method="reinforce", steps=steps, seed=seed, device=cfg.device,
                           max_minutes=minutes, warm_start_steps=50 if warm else 200)
        res = fit_generator(gen, acq, TableContexts(feasible, device=cfg.device), fit, progress=progress)
        self.generator = res.generator

    def _contexts(self, data: TableData, contexts) -> tuple[pd.DataFrame, TableContext]:
        """(context columns, their encoding) of the contexts to propose for (default: the measured
        ones); InputError naming the file (or "contexts") for unknown values, before any fitting."""
        columns = [c.name for c in data.context.columns]
        dev = torch.device(self.config.device)
        if not columns:
            return pd.DataFrame(index=range(1)), TableContext.empty(1).to(dev)
        source = str(contexts) if isinstance(contexts, (str, Path)) else "contexts"
        if contexts is None:
            contexts = data.frame[columns]
        elif isinstance(contexts, (str, Path)):
            contexts = read_table(contexts)
        if len(contexts) == 0:
            raise InputError(source, ["the table has no rows"])
        frame = contexts[columns].drop_duplicates().reset_index(drop=True) if set(columns) <= set(contexts.columns) \
            else contexts
        return frame, TableContext(*data.context.encode(frame, source)).to(dev)

    def _search(self, data: TableData, acq: Acquisition, ctx: TableContext, n: int, seed: int):
        """(rows (B, n, S), ok (B, n)): the batch per context, picked from the searched pools."""
        cfg = self.config
        dev = torch.device(cfg.device)
        rng = torch.Generator(device=dev).manual_seed(seed)
        complete = (data.rows >= 0).all(1)
        measured = Measured(data.rows[complete].to(dev),
                            TableContext(data.ctx_cat[complete], data.ctx_num[complete]).to(dev),
                            self.scorer.space.max_size)
        pools, local = self._pools(data, acq, ctx, measured, n, rng)
        rows = torch.cat([r for r, _ in pools], 1)
        value = torch.cat([v.float() for _, v in pools], 1)
        B, P = rows.shape[:2]
        flat, flat_ctx = rows.clamp(min=0).flatten(0, 1), ctx.repeat_interleave(P)
        valid = (rows >= 0).all(-1)
        seen = measured.contains(flat, flat_ctx).view(B, P)
        value = value.masked_fill(seen | ~valid | ~torch.isfinite(value), float("-inf"))
        draws = None
        if cfg.acquisition == "thompson":
            with torch.no_grad():
                draws = acq.members(flat, flat_ctx).view(-1, B, P)
        plausible = None
        if cfg.min_feasible > 0:
            with torch.no_grad():
                log_p = acq.log_p_feasible(flat, flat_ctx)
            if log_p is not None:
                plausible = (log_p >= math.log(cfg.min_feasible)).view(B, P)
        picked, ok = self._pick(rows, value, draws, local, plausible, n, rng)
        return _best_first(picked, ok, acq, ctx)

    def _pools(self, data: TableData, acq: Acquisition, ctx: TableContext, measured: Measured, n: int,
               rng: torch.Generator) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], Optional[torch.Tensor]]:
        """The candidate pools [(rows (B, P_i, S), values (B, P_i))]: the whole space when it is small,
        else the generator's polished draws, the measured elite climbed, uniform rows and the elite's
        local changes, in that order -> (pools, the last pool's rows, None for the whole space)."""
        cfg, space = self.config, self.scorer.space
        dev = torch.device(cfg.device)
        B, total = len(ctx), space.num_rows()
        size = min(cfg.pool * n, total)
        if total <= max(size, 4096) and total <= MAX_ENUMERATE:     # every row is a candidate
            cands = decode("exhaustive", self.generator, acq, ctx, total)
            return [(cands.rows, cands.scores)], None
        budget = cfg.budget or max(5 * size, 256)
        search = measured.excluding(acq)
        allowed = space.mask().to(dev).expand(B, -1, -1)
        drawn = decode("polish", self.generator, search, ctx, size, budget=budget // 2, generator=rng)
        start, elite, has = self._elite_start(data, ctx, search, size)
        climbed = polish(search, ctx, start, allowed, budget=budget - budget // 2)
        reserve = uniform_rows(allowed, size, rng)
        local = _changes(elite, has, allowed, size, rng)                       # (B, size, S), -1 = none
        pools = [(drawn.rows, drawn.scores), (climbed.rows, climbed.scores)]
        for extra in (reserve, local):
            with torch.no_grad():
                v = acq(extra.clamp(min=0).flatten(0, 1), ctx.repeat_interleave(size)).view(B, size)
            pools.append((extra, v))
        return pools, local

    def _elite_start(self, data: TableData, ctx: TableContext, search, size: int):
        """(Candidates (B, size, S): the elite scored by `search`, padded invalid; elite (B, E, S); has (B, E))."""
        elite, has = self._elite(data, ctx, self.config.elite)
        B, E, S = elite.shape
        dev = torch.device(self.config.device)
        with torch.no_grad():
            elite_value = search(elite.clamp(min=0).flatten(0, 1), ctx.repeat_interleave(E)).view(B, E)
        start = Candidates(torch.cat([elite, elite.new_full((B, size - E, S), -1)], 1) if size > E else elite,
                           torch.cat([elite_value.float().masked_fill(~has, float("-inf")),
                                      torch.full((B, max(0, size - E)), float("-inf"), device=dev)], 1),
                           torch.cat([has, has.new_zeros((B, max(0, size - E)))], 1), B * E)
        return start, elite, has

    def _pick(self, rows: torch.Tensor, value: torch.Tensor, draws: Optional[torch.Tensor],
              local: Optional[torch.Tensor], plausible: Optional[torch.Tensor], n: int,
              rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(picked (B, n, S), ok (B, n)) from the pooled rows (B, P, S) / values (B, P): local_share of
        n from the local pool (the last, `local`; none without one), then as many more as each context
        still needs from all pools, both among the `plausible` candidates (B, P) bool (estimated
        P(feasible) >= min_feasible; None: all), then from the rest where a context is still short;
        the ok picks first."""
        cfg = self.config
        B, P, S = rows.shape
        n_local = round(cfg.local_share * n) if local is not None else 0
        floor = value if plausible is None else value.masked_fill(~plausible, float("-inf"))
        every = slice(None)                                     # slices: views of the pool, not copies
        passes = [(slice(P - local.shape[1], P), floor, n_local)] if n_local else []     # the local pool is last
        passes.append((every, floor, n))
        if plausible is not None:
            passes.append((every, value, n))
        taken = rows.new_zeros((B, 0, S))
        parts, oks = [], []
        for at, v, k in passes:
            if oks and bool((torch.cat(oks, 1).sum(1) >= n).all()):
                break
            idx, ok = select_batch(rows[:, at], v[:, at], k, min_distance=cfg.min_distance,
                                   draws=None if draws is None else draws[:, :, at], generator=rng, taken=taken)
            got = torch.where(ok[..., None], rows[:, at].gather(1, idx[..., None].expand(-1, -1, S)), -1)
            taken = torch.cat([taken, got], 1)
            parts.append(got)
            oks.append(ok)
        picked, ok = torch.cat(parts, 1), torch.cat(oks, 1)
        first = (~ok).to(torch.int8).argsort(dim=1, stable=True)[:, :n]           # the ok picks, in order
        return picked.gather(1, first[..., None].expand(-1, -1, S)), ok.gather(1, first)

    def _elite(self, data: TableData, ctx: TableContext, top: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The best `top` measured rows that did not fail of each context in ctx: (rows (B, top, S),
        -1 where a context has fewer; has (B, top) bool)."""
        B, S = len(ctx), data.rows.shape[1]
        dev = ctx.device
        y = data.y.numpy()
        ok = np.flatnonzero(np.isfinite(y) & (data.rows >= 0).all(1).numpy())
        keys = context_keys(TableContext(data.ctx_cat[ok], data.ctx_num[ok]).to(dev)).cpu().numpy()
        order = ok[np.lexsort((-y[ok], keys))]                       # by context key, best first
        sorted_keys = np.sort(keys)
        want = context_keys(ctx).cpu().numpy()
        first = np.searchsorted(sorted_keys, want, side="left")
        count = np.searchsorted(sorted_keys, want, side="right") - first
        at = first[:, None] + np.arange(top)[None, :]
        has = np.arange(top)[None, :] < count[:, None]
        if not len(order):
            return torch.full((B, top, S), -1, dtype=torch.long, device=dev), torch.zeros(B, top, dtype=torch.bool,
                                                                                        device=dev)
        rows = data.rows[torch.as_tensor(order[np.where(has, at, 0).clip(max=len(order) - 1)])].to(dev)
        has_t = torch.as_tensor(has, device=dev)
        return torch.where(has_t[..., None], rows, -1), has_t

    def _frame(self, rows: torch.Tensor, ok: torch.Tensor, ctx: TableContext, frame: pd.DataFrame,
               acq: Acquisition) -> pd.DataFrame:
        B, n, S = rows.shape
        keep = ok.flatten().cpu().numpy()
        flat = rows.flatten(0, 1)
        flat_ctx = ctx.repeat_interleave(n)
        with torch.no_grad():
            members = self.scorer.member_scores(flat, flat_ctx.cat, flat_ctx.num)     # (k, B * n)
            p_ok = None
            if self.feasibility is not None:      # shown once some row failed: the classifier, and the pairs' view
                p_ok = acq.log_p_feasible(flat, flat_ctx).exp()
        owner = np.repeat(np.arange(B), n)[keep]
        out = frame.iloc[owner].reset_index(drop=True) if len(frame.columns) else pd.DataFrame(index=range(len(owner)))
        feats = self.scorer.space.decode(flat[torch.as_tensor(keep, device=flat.device)])
        out = pd.concat([out, feats], axis=1)
        out["predicted"] = self.scorer.to_score(members.mean(0))[keep]
        out["uncertainty"] = (members.std(0).double().cpu().numpy() * self.scorer.unit)[keep]
        if p_ok is not None:
            out["p_feasible"] = p_ok.double().cpu().numpy()[keep]
        out["rank"] = np.tile(np.arange(1, n + 1), B)[keep]
        for column in ("predicted", "uncertainty", "p_feasible"):
            if column in out:
                check_finite(out[column].to_numpy(), "ask", f"the {column} value")
        out.attrs["short"] = int((ok.sum(1) < n).sum())
        return out

    # --- state between rounds ------------------------------------------------------------------------
    def spec(self) -> dict:
        """What a saved state must share with the Designer that loads it: the feature and context
        columns (resolved against the measured rows when there are some: 's?' and 's0,s1,s2' agree),
        the score column and the declared space."""
        if self.measured is not None:
            data = self.table()
            features, context = data.space.names, [f"{c.name}:{c.kind[:3]}" for c in data.context.columns]
        else:
            features, context = parse_names(self.features), parse_names(self.context)
        return {"features": features, "score": self.score, "context": context, "space": self.space}

    def save(self, path: Union[str, Path], lock: Optional[RunLock] = None) -> None:
        """Write the models and the round count to folder `path` (a run folder: atomic, locked,
        replacing the previous state only once complete). Needs a finished ask. lock: the folder's
        RunLock when the caller holds it for the whole round (`choicegrad propose` does)."""
        if self.scorer is None or self.generator is None:
            raise InputError("save", ["nothing to save: ask() fits the models first"])
        check_state_folder(path)
        request = {"command": "design-state", **json.loads(json.dumps(self.spec(), default=str))}
        # weights are written from the CPU
        with RunWriter(path, request, overwrite=True, name="state", lock=lock, resumable=False, files=STATE_FILES) as w:
            self.scorer.save(w.dir)
            if self.feasibility is not None:
                self.feasibility.save(w.dir, "feasibility")
            generators.save(self.generator, w.dir, {"space": self.scorer.space.model_dump(),
                                                    "context": self.scorer.context.model_dump()})
            doc = {"kind": "choicegrad.Designer", "spec": request, "config": self.config.model_dump(),
                   "rounds": self.rounds, "last": self.last, "versions": versions()}
            atomic_write_text(w.dir / STATE_FILE, json.dumps(doc, indent=2, default=str) + "\n")
            w.commit()

    def warm_from(self, path: Union[str, Path]) -> None:
        """Take the models and round count of a saved state (written by `save` for the same features,
        score, context and space); InputError naming the folder otherwise."""
        path = Path(path)
        verify_run(path, STATE_FILES)
        doc = read_state(path)
        spec = {k: v for k, v in doc.spec.items() if k != "command"}
        mine = json.loads(json.dumps(self.spec(), default=str))
        diff = [f"{k}: the state has {spec.get(k)!r}, this round {mine[k]!r}" for k in mine if spec.get(k) != mine[k]]
        if diff:
            hint = [] if self.measured is not None else ["tell() the measured rows first, so that column patterns "
                                                         "resolve to names"]
            raise InputError(str(path), ["the state was written for another design (use another folder, or delete "
                                         "it to start from scratch)"] + diff + hint)
        dev = self.config.device
        self.scorer = Scorer.load(path, dev)
        self.feasibility = Scorer.load(path, dev, name="feasibility") if (path / "feasibility.json").is_file() else None
        self.generator, _ = generators.load(path, dev)
        self.rounds = doc.rounds

    @classmethod
    def load(cls, path: Union[str, Path], config: Optional[DesignConfig] = None) -> Designer:
        """A Designer from a saved state, with its stored settings (or `config`); tell it the
        measured rows before asking."""
        verify_run(path, STATE_FILES)
        doc = read_state(path)
        spec = doc.spec
        try:
            config = config or DesignConfig.model_validate(doc.config)
        except ValueError as exc:
            raise InputError(str(Path(path) / STATE_FILE), [f"not a designer state: {meta_problem(exc)}"]) from None
        d = cls(spec.get("features"), spec.get("score", "y"), spec.get("context"), spec.get("space"), config)
        d.warm_from(path)
        return d



def check_state_folder(path: Union[str, Path], name: str = "state") -> None:
    """InputError naming `name` unless `path` is absent, an empty folder or a designer state: a
    state is replaced each round, and another folder must never be."""
    path = check_out_path(path, name)
    if path.is_dir() and any(path.iterdir()) and not (path / STATE_FILE).is_file():
        raise InputError(name, [f"{path} holds other files and no {STATE_FILE}: it is not a design state, and a "
                                "round would replace it; give a new or empty folder"])
    foreign = foreign_files(path, STATE_FILES) if path.is_dir() and (path / STATE_FILE).is_file() else []
    if foreign:
        raise InputError(name, [f"{path} holds files choicegrad did not write there ({', '.join(foreign[:5])}); a "
                                "round replaces the state, so move them out first"])


def _pair_support(feasible: TableData, cfg: DesignConfig) -> PairSupport:
    """PairSupport of the complete rows that did not fail (feasible: the scorer's rows), on cfg's device."""
    rows = feasible.rows[(feasible.rows >= 0).all(1)]
    return PairSupport.fit(rows, [slot.categories for slot in feasible.space.slots]).to(torch.device(cfg.device))


def _merge_repeats(data: TableData) -> tuple[TableData, int]:
    """Rows measured more than once (same features, missing ones included, and context) as one row
    scoring their mean: (the table without repeats, how many such rows had different scores)."""
    num = data.ctx_num.numpy().astype(np.float64).view(np.int64)          # exact values, as bits
    key = np.concatenate([data.rows.numpy(), data.ctx_cat.numpy(), num], axis=1)
    if len(key) == 0:
        return data, 0
    _, first, inverse, counts = np.unique(key, axis=0, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if len(first) == len(data):
        return data, 0
    y = data.y.numpy()
    mean = np.bincount(inverse, weights=y) / counts
    spread = np.bincount(inverse, weights=(y - mean[inverse]) ** 2) > 0
    merged = data.subset(first)
    merged.y = torch.as_tensor(mean, dtype=torch.float64)
    return merged, int(spread.sum())


def _contexts_all_failed(data: TableData, ok: np.ndarray) -> list[str]:
    """The categorical contexts (as 'col=value' text) whose every measured row failed."""
    if not data.context.categorical:
        return []
    groups = data.context_groups()
    succeeded = np.bincount(groups, weights=ok.astype(np.float64), minlength=groups.max() + 1)
    names = [c.name for c in data.context.categorical]
    out = []
    for g in np.flatnonzero(succeeded == 0):
        row = int(np.flatnonzero(groups == g)[0])
        out.append(", ".join(f"{n}={data.context.categorical[j].categories[int(data.ctx_cat[row, j])]}"
                             for j, n in enumerate(names)))
    return out


def _changes(elite: torch.Tensor, has: torch.Tensor, allowed: torch.Tensor, m: int,
             rng: torch.Generator) -> torch.Tensor:
    """m rows per context near its elite rows (best first, E of them): the first half every
    single-slot change of the best elite rows, in their order (as many rows as fit; skipped where one
    row's changes exceed MAX_NEIGHBOUR_CELLS), the rest in thirds: one of the elite rows (uniform among those
    a context has) with one slot changed, with two, and the uniform crossover of two of them (one slot
    moved where it copies a parent). (B, m, S); -1 rows where a context has
    no elite row, and where the first half runs out of changes (repeated best rows' changes, or fewer
    allowed changes than it holds)."""
    B, E, S = elite.shape
    count = has.sum(1)
    V = allowed.shape[-1]
    changes = int(neighbour_count(allowed).min()) if B else 0                 # a row's single-slot changes
    near = min(m // 2, E * changes) if changes and S * V * S <= MAX_NEIGHBOUR_CELLS else 0
    parts = []
    if near:
        k = min(E, -(-near // changes))                                         # best rows whose changes fill it
        rows, new = single_changes(elite[:, :k], torch.arange(V, device=elite.device).expand(B, S, V))  # (B, k, S, V, S)
        ok = allowed[:, None] & new & has[:, :k, None, None]
        key = torch.rand(B, k, S * V, generator=rng, device=elite.device) + torch.arange(k, device=elite.device)[:, None]
        order = key.masked_fill(~ok.reshape(B, k, -1), float("inf")).flatten(1).argsort(1)[:, :near]   # by rank, then at random
        flat = rows.reshape(B, k * S * V, S).gather(1, order[..., None].expand(-1, -1, S))
        good = ok.reshape(B, -1).gather(1, order)
        parts.append(torch.where(good[..., None], flat, -1))
    rest = m - near
    pick = (torch.rand(B, 3, rest, generator=rng, device=elite.device) * count.clamp(min=1)[:, None, None]).long()
    base, mate, other = (elite.clamp(min=0).gather(1, p[..., None].expand(B, rest, S)) for p in pick.unbind(1))
    one = change_one_slot(base, allowed, rng)
    two = change_one_slot(one, allowed, rng)
    child = cross_rows(mate, other, rng)
    clone = (child == mate).all(-1, keepdim=True) | (child == other).all(-1, keepdim=True)
    child = torch.where(clone, change_one_slot(child, allowed, rng), child)      # a parent again: one slot moved
    kind = torch.rand(B, rest, 1, generator=rng, device=elite.device)
    parts.append(torch.where(kind < 1 / 3, one, torch.where(kind < 2 / 3, two, child)))
    rows = torch.cat(parts, 1)
    return torch.where((count > 0)[:, None, None], rows, -1)


def _best_first(rows: torch.Tensor, ok: torch.Tensor, acq: Acquisition, ctx: TableContext):
    """The batch ordered by the acquisition, best first, rows that are not ok last: (rows, ok)."""
    B, n, S = rows.shape
    with torch.no_grad():
        v = acq(rows.clamp(min=0).flatten(0, 1), ctx.repeat_interleave(n)).view(B, n).float()
    order = v.masked_fill(~ok, float("-inf")).argsort(dim=1, descending=True, stable=True)
    return rows.gather(1, order[..., None].expand(B, n, S)), ok.gather(1, order)
