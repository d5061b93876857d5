"""fit_generator: train a generator against an objective (a fitted scorer, or a reward of items).

    result = fit_generator(gen, TableObjective(scorer), TableContexts(data), GeneratorFit(method="reinforce"))

One step draws B contexts, turns the generator's choices into a training signal with a gradient
estimator and takes an Adam step:
- factorized and pointer generators: any estimator of `choicegrad.estimators` on their (B, S, V) logits
  (pathwise: soft, st, gumbel, st-gumbel, gumbel-rao, reinmax; score-function: reinforce; supervised:
  weighted-ce, raml);
- autoregressive generators: `reinforce` (K rows sampled slot by slot without gradient, REINFORCE on
  their teacher-forced log-probability, baselines rloo/mean/greedy/none), `raml` and `weighted-ce`
  (likelihood of weighted rows, teacher-forced), and the pathwise methods through the sampled prefix
  (each choice enters the next slot's input as a one-hot carrying its surrogate gradient).
Scores are divided by the objective's `scale` (the scorer's score std), so the entropy bonus is in
"score standard deviations per nat". Optional warm start: maximum likelihood on the best data rows of
each context (missing slots masked). Validation every `val_every` steps on fixed contexts; the best
state is kept (early stopping). Metrics go to RUN/metrics.csv; a tqdm bar shows them on a terminal.
"""

from __future__ import annotations

import copy
import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import Tensor
from tqdm.auto import tqdm

from choicegrad import estimators
from choicegrad.data.table import TableData
from choicegrad.generators.base import Generator
from choicegrad.generators.context import Context, TableContext
from choicegrad.generators.objective import score_rows

PATHWISE = ("soft", "st", "gumbel", "st-gumbel", "gumbel-rao", "reinmax")
SCORE_FUNCTION = ("reinforce",)
SUPERVISED = ("weighted-ce", "raml")
LEARNED = ("aligner",)    # needs an Aligner (choicegrad.scorer.aligner) and data rows of each context
METHODS = PATHWISE + SCORE_FUNCTION + SUPERVISED + LEARNED
METRIC_FIELDS = ["phase", "step", "loss", "score_mean", "score_max", "entropy", "distinct", "tau",
                 "val_score", "val_best", "scorer_calls", "seconds"]


class GeneratorFit(BaseModel):
    """How to train a generator. Stored with the run."""

    method: str = Field("reinforce", description="gradient estimator, see choicegrad.estimators.available()")
    method_options: dict[str, Any] = Field(default_factory=dict, description="estimator hyperparameters")
    steps: int = Field(1500, ge=0)
    batch_size: int = Field(32, ge=1, description="contexts per step")
    samples: int = Field(16, ge=1, description="rows per context for reinforce (k) and raml (m)")
    lr: float = Field(2e-3, gt=0)
    entropy: float = Field(0.5, ge=0, description="entropy bonus coefficient (per nat, in score std units); "
                           "enough that the draws cover several basins for the decoder to climb")
    entropy_end: Optional[float] = Field(None, ge=0, description="coefficient at the end (linear); None = constant")
    tau_start: float = Field(1.0, gt=0, description="relaxation temperature at the start (pathwise methods)")
    tau_end: float = Field(0.5, gt=0)
    tau_schedule: Literal["constant", "exponential", "cosine"] = "exponential"
    warm_start_steps: int = Field(200, ge=0, description="max-likelihood steps on the best data rows first")
    warm_start_top: float = Field(0.2, gt=0, le=1, description="share of each context's best rows used")
    warm_start_batch: int = Field(256, ge=1)
    beta: Optional[float] = Field(None, ge=0, description="ensemble pessimism of the scorer (None: its own)")
    val_every: int = Field(50, ge=1)
    val_samples: int = Field(64, ge=4, description="rows drawn per validation context")
    patience: Optional[int] = Field(8, ge=1, description="validations without gain before stopping (None: never)")
    log_every: int = Field(10, ge=1)
    grad_clip: Optional[float] = Field(1.0, gt=0)
    seed: int = 0
    device: str = "cpu"
    max_minutes: Optional[float] = Field(None, gt=0)


@dataclass
class GeneratorResult:
    generator: Generator
    history: list[dict[str, float]]
    scorer_calls: int
    seconds: float
    best_val: float
    stopped: str = "steps"
    extra: dict[str, Any] = field(default_factory=dict)


# --- where contexts come from ---------------------------------------------------------------------
class TableContexts:
    """Contexts of a table: the distinct contexts of its rows, drawn uniformly, plus its rows.

    best_rows(top) -> (rows (N, S), context ids (N,)): each context's best `top` share of rows.
    """

    def __init__(self, data: TableData, device: str | torch.device = "cpu", max_validation: int = 256):
        full = TableContext(data.ctx_cat, data.ctx_num)
        self.contexts, self.group = full.unique()
        self.contexts = self.contexts.to(device)
        self.rows, self.y = data.rows.to(device), data.y.to(device)
        self.group_t = torch.as_tensor(self.group, device=device)
        self.device = torch.device(device)
        self.max_validation = max_validation

    def __len__(self) -> int:
        return len(self.contexts)

    def sample(self, n: int, generator: torch.Generator) -> TableContext:
        return self.contexts.index(self.sample_ids(n, generator))

    def sample_ids(self, n: int, generator: torch.Generator) -> Tensor:
        """(n,) ids of uniformly drawn contexts (positions in self.contexts)."""
        return torch.randint(len(self.contexts), (n,), generator=generator, device=self.device)

    def references(self, ids: Tensor, n: int, share: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n good and n bad data rows per context id: drawn from each context's best and worst
        ceil(share * rows) rows by the recorded score. ids (B,) -> good (B, n, S), bad (B, n, S)."""
        if not hasattr(self, "_ref"):
            g, y = self.group, self.y.cpu().numpy()
            order = torch.as_tensor(np.lexsort((-y, g)), device=self.device)       # by context, best first
            counts = torch.as_tensor(np.bincount(g, minlength=len(self.contexts)), device=self.device)
            starts = torch.cumsum(counts, 0) - counts
            self._ref = order, counts, starts
        order, counts, starts = self._ref
        pool = (counts[ids].float() * share).ceil().clamp(min=1)                  # (B,)
        r = torch.rand(len(ids), 2, n, generator=generator, device=self.device)
        off = (r * pool[:, None, None]).long()
        good = order[starts[ids, None] + off[:, 0]]
        bad = order[starts[ids, None] + counts[ids, None] - 1 - off[:, 1]]
        return self.rows[good], self.rows[bad]

    def validation(self) -> TableContext:
        n = len(self.contexts)
        if n <= self.max_validation:
            return self.contexts
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: self.max_validation]
        return self.contexts.index(idx.to(self.device))

    def best_rows(self, top: float) -> tuple[Tensor, TableContext]:
        """Each context's best ceil(top * n) rows (by the recorded score) and their contexts."""
        g, y = self.group, self.y.cpu().numpy()
        order = np.lexsort((-y, g))                                  # by context, best first
        gs = g[order]
        starts = np.searchsorted(gs, gs, side="left")
        rank = np.arange(len(gs)) - starts
        counts = np.bincount(g)
        keep = order[rank < np.ceil(top * counts[gs])]
        idx = torch.as_tensor(keep, device=self.device)
        return self.rows[idx], self.contexts.index(self.group_t[idx])

    def data_rows(self, n: int, generator: torch.Generator) -> tuple[Tensor, TableContext]:
        """n random data rows (N, S) (-1 = missing) and their contexts."""
        idx = torch.randint(len(self.rows), (n,), generator=generator, device=self.device)
        return self.rows[idx], self.contexts.index(self.group_t[idx])


class SampledContexts:
    """Contexts from a user function (n, torch.Generator) -> context batch, e.g. fresh item lists
    (unlimited unlabelled examples). Validation uses `validation_size` contexts drawn with seed 0."""

    def __init__(self, draw: Callable[[int, torch.Generator], Context], validation_size: int = 256,
                 device: str | torch.device = "cpu"):
        self.draw, self.device = draw, torch.device(device)
        self._validation = draw(validation_size, torch.Generator(device=self.device).manual_seed(0)).to(self.device)

    def sample(self, n: int, generator: torch.Generator) -> Context:
        return self.draw(n, generator).to(self.device)

    def validation(self) -> Context:
        return self._validation


# --- small pieces ---------------------------------------------------------------------------------
def make_schedule(fit: GeneratorFit, steps: int):
    """tau(step) from gradients.schedules."""
    if fit.tau_schedule == "constant" or fit.tau_start == fit.tau_end:
        return estimators.Constant(fit.tau_start)
    cls = estimators.Exponential if fit.tau_schedule == "exponential" else estimators.Cosine
    return cls(fit.tau_start, fit.tau_end, max(1, steps))


def distinct_per_context(rows: Tensor) -> float:
    """Mean number of distinct rows per context in rows (B, M, S)."""
    from choicegrad.decoding.decoders import first_occurrence, row_keys

    vocab = int(rows.max()) + 1 if rows.numel() else 1
    keys = row_keys(rows, max(vocab, 2))
    return float(first_occurrence(keys, torch.ones_like(keys, dtype=torch.bool)).sum(1).float().mean())


def slot_entropy(logits: Tensor) -> Tensor:
    """(B, S, V) logits -> (B,) entropy summed over slots (nats)."""
    logp = torch.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1).sum(-1)


def top_distinct_value(rows: Tensor, scores: Tensor, share: float = 0.25) -> Tensor:
    """Per context, the mean score of the best ceil(share * M) distinct rows; rows a collapsed
    generator did not produce count at its worst sample's score. rows (B, M, S), scores (B, M) -> (B,)."""
    from choicegrad.decoding.decoders import first_occurrence, row_keys

    B, M, _ = rows.shape
    n = max(1, math.ceil(share * M))
    keep = first_occurrence(row_keys(rows, int(rows.max()) + 2), torch.ones(B, M, dtype=torch.bool, device=rows.device))
    worst = scores.min(1, keepdim=True).values.expand(B, M)
    s = torch.where(keep, scores, worst)
    return s.topk(n, dim=1).values.mean(1)


class MetricsLog:
    """Rows of METRIC_FIELDS appended to RUN/metrics.csv (flushed per row) and kept in memory."""

    def __init__(self, path: Optional[Path]):
        self.rows: list[dict[str, float]] = []
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("w", newline="")
            self._writer = csv.DictWriter(self._fh, fieldnames=METRIC_FIELDS)
            self._writer.writeheader()

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self._fh is not None:
            self._writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


# --- the loop -------------------------------------------------------------------------------------
class _Step:
    """One training step's loss for a (generator, method) pair."""

    def __init__(self, gen: Generator, objective, contexts, fit: GeneratorFit, aligner=None):
        self.gen, self.objective, self.contexts, self.fit = gen, objective, contexts, fit
        self.method = estimators.base.normalize_name(fit.method)
        if self.method not in estimators.available():
            raise estimators.base.unknown_name_error(fit.method, estimators.available())
        self.scale = float(getattr(objective, "scale", 1.0)) or 1.0
        opts = dict(fit.method_options)
        self.baseline = opts.pop("baseline", "rloo") if self.method == "reinforce" else None
        if self.method == "reinforce":
            self.k = int(opts.pop("k", fit.samples))
            opts.pop("entropy", None)  # the entropy bonus is applied here, for every method
            if self.baseline == "rloo" and self.k < 2:
                raise ValueError("reinforce with the rloo baseline needs samples >= 2")
            opts.update(k=self.k, baseline=self.baseline)
        if self.method == "raml":
            self.m = int(opts.setdefault("m", fit.samples))
            self.raml_temperature = float(opts.get("temperature", 1.0))
        if self.method == "weighted-ce":
            self.wce = dict(weighting=opts.get("weighting", "softmax"), temperature=float(opts.get("temperature", 1.0)))
        self.relax_k = int(opts.get("k", 10)) if self.method == "gumbel-rao" else 10
        if self.method == "aligner":
            if aligner is None or not hasattr(contexts, "references"):
                raise ValueError("the aligner method needs an Aligner (fit_generator(..., aligner=...)) and a table of "
                                 "data rows for its reference rows")
            self.aligner = aligner
            self.references = int(opts.pop("references", 8))
            self.reference_share = float(opts.pop("reference_share", 0.2))
        self.estimator = estimators.get(self.method, **opts)
        self.uses_tau = self.method in PATHWISE
        self.has_data = hasattr(contexts, "data_rows")

    def score(self, x: Tensor, ctx: Context) -> Tensor:
        """Objective in scale units: x (N, S) long or (N, S, V) float, ctx of N -> (N,)."""
        return self.objective(x, ctx) / self.scale

    def __call__(self, tau: float, entropy_coef: float, rng: torch.Generator) -> tuple[Tensor, dict]:
        fit, gen = self.fit, self.gen
        if gen.autoregressive:
            return self._autoregressive(tau, entropy_coef, rng)
        target_scores, pre_calls = None, 0
        if self.method == "weighted-ce":
            if self.has_data:
                targets, ctx = self.contexts.data_rows(fit.batch_size, rng)
            else:  # no data: imitate the best of `samples` own rows per context (cross-entropy method)
                ctx = self.contexts.sample(fit.batch_size, rng)
                own = gen.sample(ctx, fit.samples, generator=rng)
                with torch.no_grad():
                    f, n = score_rows(self.score, own, ctx)
                best = f.argmax(1)
                ar = torch.arange(len(ctx), device=own.device)
                targets, target_scores, pre_calls = own[ar, best], f[ar, best], n
        elif self.method == "raml" and self.has_data:
            targets, ctx = self.contexts.data_rows(fit.batch_size, rng)
        elif self.method == "aligner":
            ctx, targets = None, None
            ids = self.contexts.sample_ids(fit.batch_size, rng)
            ctx = self.contexts.contexts.index(ids)
            pre_calls = self._aligner_options(ids, ctx, rng)
        else:
            ctx, targets = self.contexts.sample(fit.batch_size, rng), None
        B = len(ctx)

        def score_fn(x: Tensor) -> Tensor:
            return self.score(x, ctx.repeat_interleave(x.shape[0] // B))

        logits = gen.logits(ctx)
        extra: dict[str, Any] = {}
        if self.estimator.uses_tau:
            extra["tau"] = tau
        if targets is not None:
            extra["targets"] = targets
        if target_scores is not None:
            extra["target_scores"] = target_scores
        if self.method == "aligner":
            extra.update(self._aligner_extra)
        out = self.estimator(logits, score_fn, mask=gen.choice_mask(ctx), generator=rng, **extra)
        H = slot_entropy(logits).mean()
        loss = out.loss - entropy_coef * H
        return loss, {"score_mean": float(out.scores.float().mean()) * self.scale,
                      "score_max": float(out.scores.float().max()) * self.scale,
                      "entropy": float(H.detach()), "scorer_calls": out.scorer_calls + pre_calls}

    def _aligner_options(self, ids: Tensor, ctx: TableContext, rng: torch.Generator) -> int:
        """Embed each context's good and bad reference rows; set the estimator's call options."""
        good, bad = self.contexts.references(ids, self.references, self.reference_share, rng)   # (B, n, S)
        B, n, S = good.shape
        rep = ctx.repeat_interleave(2 * n)
        with torch.no_grad():
            z = self.aligner.embed(torch.cat([good, bad], 1).reshape(B * 2 * n, S), rep.cat, rep.num)
        z = z.reshape(B, 2 * n, -1)
        aligner = self.aligner
        self._aligner_extra = {"embed": lambda x: aligner.embed(x, ctx.cat, ctx.num),
                               "positives": z[:, :n], "negatives": z[:, n:]}
        return B * 2 * n

    def _autoregressive(self, tau: float, entropy_coef: float, rng: torch.Generator) -> tuple[Tensor, dict]:
        fit, gen, m = self.fit, self.gen, self.method
        if m == "aligner":
            from choicegrad.estimators.aligner import aligner_loss

            ids = self.contexts.sample_ids(fit.batch_size, rng)
            ctx = self.contexts.contexts.index(ids)
            calls = self._aligner_options(ids, ctx, rng)
            est = self.estimator
            x, _, step_logits = gen.relaxed_sample(ctx, est.relaxation, tau, generator=rng)
            loss = aligner_loss(self._aligner_extra["embed"](x), self._aligner_extra["positives"],
                                self._aligner_extra["negatives"], est.temperature).mean()
            with torch.set_grad_enabled(est.score_weight > 0):
                f = self.score(x, ctx)
            if est.score_weight > 0:
                loss = loss - est.score_weight * f.mean()
            H = slot_entropy(step_logits).mean()
            return loss - entropy_coef * H, {"score_mean": float(f.detach().mean()) * self.scale,
                                             "score_max": float(f.detach().max()) * self.scale,
                                             "entropy": float(H.detach()), "scorer_calls": calls + len(ctx)}
        if m in PATHWISE:
            ctx = self.contexts.sample(fit.batch_size, rng)
            x, _, step_logits = gen.relaxed_sample(ctx, m, tau, generator=rng, k=self.relax_k)
            f = self.score(x, ctx)
            H = slot_entropy(step_logits).mean()
            loss = -f.mean() - entropy_coef * H
            return loss, {"score_mean": float(f.detach().mean()) * self.scale,
                          "score_max": float(f.detach().max()) * self.scale, "entropy": float(H.detach()),
                          "scorer_calls": len(ctx)}
        if m == "weighted-ce":
            from choicegrad.estimators.supervised import row_weights

            if not self.has_data:
                raise ValueError("weighted-ce with an autoregressive generator needs data rows (a table)")
            rows, ctx = self.contexts.data_rows(fit.batch_size, rng)
            filled = torch.where(rows >= 0, rows, gen.sample(ctx, 1, generator=rng)[:, 0])
            with torch.no_grad():
                f = self.score(filled, ctx)
            w = row_weights(f, self.wce["weighting"], self.wce["temperature"])
            ll = gen.log_prob(rows, ctx)
            H = gen.conditional_entropy(rows.unsqueeze(1).clamp(min=0), ctx).mean()
            loss = -(w * ll).mean() - entropy_coef * H
            return loss, {"score_mean": float(f.mean()) * self.scale, "score_max": float(f.max()) * self.scale,
                          "entropy": float(H.detach()), "scorer_calls": len(ctx)}
        # score-function family on sampled rows: reinforce, raml (self-sampled candidates)
        ctx = self.contexts.sample(fit.batch_size, rng)
        K = self.k if m == "reinforce" else self.m
        rows = gen.sample(ctx, K, generator=rng)                              # (B, K, S), no grad
        B = len(ctx)
        extra_rows = None
        if m == "reinforce" and self.baseline == "greedy":
            from choicegrad.decoding.decoders import beam_search

            extra_rows = beam_search(gen, ctx, 1)[0]                           # (B, 1, S)
        with torch.no_grad():
            allr = rows if extra_rows is None else torch.cat([rows, extra_rows], 1)
            f_all, calls = score_rows(self.score, allr, ctx)
        f = f_all[:, :K]
        logp = gen.log_prob(rows, ctx)                                         # (B, K), one pass
        if m == "reinforce":
            if self.baseline == "rloo":
                b = (f.sum(1, keepdim=True) - f) / (K - 1)
            elif self.baseline == "mean":
                n = B * K
                b = (f.sum() - f) / (n - 1) if n > 1 else torch.zeros_like(f)
            elif self.baseline == "greedy":
                b = f_all[:, K:].expand(B, K)
            else:
                b = torch.zeros_like(f)
            loss = -((f - b).detach() * logp).mean()
        else:  # raml on the generator's own samples
            w = torch.softmax(f / self.raml_temperature, 1).detach()
            loss = -(w * logp).sum(1).mean()
        H = gen.conditional_entropy(rows, ctx).mean()
        loss = loss - entropy_coef * H
        return loss, {"score_mean": float(f.mean()) * self.scale, "score_max": float(f.max()) * self.scale,
                      "entropy": float(H.detach()), "scorer_calls": calls}


def warm_start(gen: Generator, contexts, fit: GeneratorFit, opt: torch.optim.Optimizer, rng: torch.Generator,
               log: MetricsLog, deadline: float, start: float) -> int:
    """Maximum likelihood on each context's best data rows (missing slots masked). Returns steps run."""
    if fit.warm_start_steps == 0 or not hasattr(contexts, "best_rows"):
        return 0
    rows, ctx = contexts.best_rows(fit.warm_start_top)
    if len(rows) == 0:
        return 0
    for step in range(fit.warm_start_steps):
        idx = torch.randint(len(rows), (min(fit.warm_start_batch, len(rows)),), generator=rng, device=rows.device)
        nll = -gen.log_prob(rows[idx], ctx.index(idx)).mean()
        opt.zero_grad(set_to_none=True)
        nll.backward()
        if fit.grad_clip:
            torch.nn.utils.clip_grad_norm_(gen.parameters(), fit.grad_clip)
        opt.step()
        if step % fit.log_every == 0 or step == fit.warm_start_steps - 1:
            log.log({"phase": "warm", "step": step, "loss": float(nll.detach()), "seconds": time.perf_counter() - start})
        if time.perf_counter() > deadline:
            return step + 1
    return fit.warm_start_steps


def validate(gen: Generator, objective, ctx: Context, fit: GeneratorFit) -> tuple[float, float, int]:
    """(value, mean distinct rows, scorer calls) of the generator on validation contexts: the mean
    over contexts of `top_distinct_value` of `val_samples` rows drawn with a fixed seed."""
    from choicegrad.generators.objective import score_rows

    rng = torch.Generator(device=ctx.device).manual_seed(fit.seed + 1)
    with torch.no_grad():
        rows = gen.sample(ctx, fit.val_samples, generator=rng)
        scores, calls = score_rows(objective, rows, ctx)
    return float(top_distinct_value(rows, scores).mean()), distinct_per_context(rows), calls


def fit_generator(gen: Generator, objective, contexts, fit: Optional[GeneratorFit] = None, *,
                  run_dir: Optional[str | Path] = None, progress: Optional[bool] = None,
                  aligner=None) -> GeneratorResult:
    """Train `gen` to maximise `objective` over contexts from `contexts` (TableContexts or
    SampledContexts). Writes RUN/metrics.csv when run_dir is given; progress=None shows a bar on a
    terminal only. The generator is returned in eval mode with its best validation state.
    aligner: the Aligner the `aligner` method needs (reference rows come from `contexts`' data)."""
    fit = fit or GeneratorFit()
    start = time.perf_counter()
    deadline = start + 60 * fit.max_minutes if fit.max_minutes else math.inf
    device = torch.device(fit.device)
    torch.manual_seed(fit.seed)
    rng = torch.Generator(device=device).manual_seed(fit.seed)
    gen = gen.to(device).train()
    scorer = getattr(objective, "scorer", None)
    if scorer is not None:
        scorer.to(device).eval().requires_grad_(False)
    step_fn = _Step(gen, objective, contexts, fit, aligner)
    log = MetricsLog(Path(run_dir) / "metrics.csv" if run_dir is not None else None)
    opt = torch.optim.Adam(gen.parameters(), lr=fit.lr)
    calls = 0
    try:
        warm_start(gen, contexts, fit, opt, rng, log, deadline, start)
        val_ctx = contexts.validation()
        diag_ctx = val_ctx.index(slice(0, 8))
        schedule = make_schedule(fit, fit.steps)
        best_val, best_state, bad, stopped = -math.inf, None, 0, "steps"
        val, dist, calls_v = validate(gen, objective, val_ctx, fit)
        best_val, best_state = val, copy.deepcopy(gen.state_dict())
        calls += calls_v
        log.log({"phase": "val", "step": 0, "val_score": val, "val_best": best_val, "distinct": dist,
                 "scorer_calls": calls, "seconds": time.perf_counter() - start})
        bar = tqdm(total=fit.steps, desc=f"fit generator ({fit.method})", unit="step", file=sys.stderr,
                   disable=(not progress) if progress is not None else None, leave=False)
        run = {"score_mean": 0.0, "entropy": 0.0}
        for step in range(1, fit.steps + 1):
            frac = (step - 1) / max(1, fit.steps - 1)
            ent = fit.entropy if fit.entropy_end is None else fit.entropy + (fit.entropy_end - fit.entropy) * frac
            tau = schedule(step - 1)
            gen.train()
            loss, stats = step_fn(tau, ent, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if fit.grad_clip:
                torch.nn.utils.clip_grad_norm_(gen.parameters(), fit.grad_clip)
            opt.step()
            calls += int(stats["scorer_calls"])
            for key in run:
                run[key] = stats[key] if step == 1 else 0.9 * run[key] + 0.1 * stats[key]
            bar.update(1)
            if step % fit.log_every == 0 or step == fit.steps:
                with torch.no_grad():
                    dist = distinct_per_context(gen.sample(diag_ctx, 64, generator=rng))
                log.log({"phase": "train", "step": step, "loss": float(loss.detach()), "score_mean": stats["score_mean"],
                         "score_max": stats["score_max"], "entropy": stats["entropy"], "distinct": dist,
                         "tau": tau if step_fn.uses_tau else "", "scorer_calls": calls, "seconds": time.perf_counter() - start})
                bar.set_postfix(score=f"{run['score_mean']:.4g}", H=f"{run['entropy']:.2f}", distinct=f"{dist:.0f}/64")
            out_of_time = time.perf_counter() > deadline
            if step % fit.val_every == 0 or step == fit.steps or out_of_time:
                gen.eval()
                val, dist, calls_v = validate(gen, objective, val_ctx, fit)
                calls += calls_v
                if val > best_val + 1e-9:
                    best_val, best_state, bad = val, copy.deepcopy(gen.state_dict()), 0
                else:
                    bad += 1
                log.log({"phase": "val", "step": step, "val_score": val, "val_best": best_val, "distinct": dist,
                         "scorer_calls": calls, "seconds": time.perf_counter() - start})
                if fit.patience is not None and bad >= fit.patience and step < fit.steps:
                    stopped = "early stopping"
                    break
            if out_of_time:
                stopped = "time limit"
                break
        bar.close()
    finally:
        log.close()
    gen.load_state_dict(best_state)
    return GeneratorResult(gen.eval(), log.rows, calls, time.perf_counter() - start, best_val, stopped)


def fit_table_generator(scorer, data: TableData, config=None, fit: Optional[GeneratorFit] = None, *,
                        run_dir: Optional[str | Path] = None, progress: Optional[bool] = None,
                        aligner=None) -> GeneratorResult:
    """Build a generator for the scorer's space and context and fit it on the contexts of `data`
    (warm start on `data`'s best rows), maximising the scorer (with `fit.beta` pessimism)."""
    from choicegrad.generators import GeneratorConfig, TableObjective, build

    fit = fit or GeneratorFit()
    torch.manual_seed(fit.seed)
    gen = build(config or GeneratorConfig(), space=scorer.space, context=scorer.context)
    contexts = TableContexts(data, device=fit.device)
    return fit_generator(gen, TableObjective(scorer, beta=fit.beta), contexts, fit, run_dir=run_dir, progress=progress,
                         aligner=aligner)

