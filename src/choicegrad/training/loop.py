"""fit_generator: train a generator against an objective (a fitted scorer, or a reward of items).

    result = fit_generator(gen, TableObjective(scorer), TableContexts(data), GeneratorFit(method="reinforce"))

One step draws B contexts and asks the gradient estimator for a loss on the generator bound to them
as a policy (training/step.py): the same call for every estimator and every generator form. Scores
are divided by the objective's `scale` (the scorer's score std), so the entropy bonus is in "score
standard deviations per nat". Optional warm start: maximum likelihood on the best data rows of each
context (missing slots masked). Validation every `val_every` steps on fixed contexts; the best state
is kept (early stopping). Metrics go to RUN/metrics.csv; progress to stderr (choicegrad.progress).
An estimator may add trainable modules of its own (Estimator.modules: trajectory balance's log Z per
context): the same Adam trains them at the estimator's `module_lr` times the learning rate, and the
checkpoint saves them under their keys with the rest. All the loop's randomness comes from one
torch.Generator seeded with fit.seed (its state is checkpointed): the global RNG is not reseeded.

Data-parallel under torchrun (choicegrad.distributed.join first): every rank draws each step's
global batch from the same seeded generator and trains on its share of the contexts (TrainingStep;
the warm start likewise), the gradients are summed over the ranks before clipping, so the ranks stay
equal to each other and, within float tolerance, to one process at the same batch size. The sum is
one all-reduce of the flattened gradients (distributed.sum_grads), not DistributedDataParallel: the
estimators call the generator through its policy methods (logits, slot_logits, sample, log_prob),
not through forward, which is all DDP's wrapper reduces. Validation runs on rank 0 and its result is
sent to the others; saves and stops (signal, time limit) are decided together; rank 0 alone writes
metrics.csv and checkpoints, and sends its checkpoint to the others on a resume.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from choicegrad import distributed, estimators
from choicegrad.checkpoints import Checkpointer, rng_state, seeded_rng, set_rng_state
from choicegrad.errors import InputError, Interrupted
from choicegrad.data.table import TableData
from choicegrad.decoding.rows import first_occurrence, row_keys
from choicegrad.device import Device
from choicegrad.generators import GeneratorConfig, TableObjective, build
from choicegrad.generators.base import Generator
from choicegrad.generators.context import Context
from choicegrad.generators.objective import as_objective, check_scorer, score_rows
from choicegrad.progress import progress_bar
from choicegrad.training.contexts import SampledContexts, TableContexts
from choicegrad.training.log import METRIC_FIELDS, MetricsLog
from choicegrad.training.step import TrainingStep, entropy_at

__all__ = ["METRIC_FIELDS", "GeneratorFit", "GeneratorResult", "SampledContexts", "TableContexts", "fit_generator",
           "fit_table_generator"]


class GeneratorFit(BaseModel):
    """How to train a generator. Stored with the run."""

    model_config = ConfigDict(allow_inf_nan=False)  # an inf or NaN setting would train to NaN weights

    method: str = Field("reinforce", description="gradient estimator, see choicegrad.estimators.available()")
    method_options: dict[str, Any] = Field(default_factory=dict, description="the estimator's options, validated into "
                                           "its typed ones (Estimator.options_model) when training starts")
    steps: int = Field(1500, ge=0)
    batch_size: int = Field(32, ge=1, description="contexts per step")
    samples: int = Field(16, ge=1, description="rows per context for the estimators that draw several (their k or "
                         "m: Estimator.fit_defaults)")
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
    distill: Optional[float] = Field(None, ge=0, description="amortised search: weight of the likelihood of the rows a "
                                     "short local search reaches from the generator's best draw (replayed per training "
                                     "context when contexts have ids); 0 = off; None = 1 (DISTILL), but 0 for a "
                                     "single training context (nothing to amortise) and for trajectory-balance, "
                                     "whose target is exp(score/T), not the search's best rows")
    distill_sweeps: int = Field(2, ge=1, description="sweeps of single-slot changes in that search")
    beta: Optional[float] = Field(None, ge=0, description="ensemble pessimism of the scorer (None: its own)")
    val_every: int = Field(50, ge=1)
    val_samples: int = Field(64, ge=4, description="rows drawn per validation context")
    patience: Optional[int] = Field(8, ge=1, description="validations without gain before stopping (None: never)")
    keep: Literal["best", "last"] = Field("best", description="the state returned: the best by validation, or the "
                                          "last (item runs: validation ranks sampled rows, not the single pick)")
    log_every: int = Field(10, ge=1)
    grad_clip: Optional[float] = Field(1.0, gt=0)
    seed: int = Field(0, ge=0, lt=2**63, description="random seed (torch takes 0 <= seed < 2**63)")
    device: Device = "cpu"
    max_minutes: Optional[float] = Field(None, gt=0)


@dataclass
class GeneratorResult:
    generator: Generator
    history: list[dict[str, float]]
    scorer_calls: int
    seconds: float
    best_val: float
    stopped: str = "steps"


def make_schedule(fit: GeneratorFit, steps: int):
    """tau(step) from estimators.schedules."""
    if fit.tau_schedule == "constant" or fit.tau_start == fit.tau_end:
        return estimators.Constant(fit.tau_start)
    cls = estimators.Exponential if fit.tau_schedule == "exponential" else estimators.Cosine
    return cls(fit.tau_start, fit.tau_end, max(1, steps))


def distinct_per_context(rows: Tensor) -> float:
    """Mean number of distinct rows per context in rows (B, M, S)."""
    vocab = int(rows.max()) + 1 if rows.numel() else 1
    keys = row_keys(rows, max(vocab, 2))
    return float(first_occurrence(keys, torch.ones_like(keys, dtype=torch.bool)).sum(1).float().mean())


def top_distinct_value(rows: Tensor, scores: Tensor, share: float = 0.25) -> Tensor:
    """Per context, the mean score of the best ceil(share * M) distinct rows; rows a collapsed
    generator did not produce count at its worst sample's score. rows (B, M, S), scores (B, M) -> (B,)."""
    B, M, _ = rows.shape
    n = max(1, math.ceil(share * M))
    keep = first_occurrence(row_keys(rows, int(rows.max()) + 2), torch.ones(B, M, dtype=torch.bool, device=rows.device))
    worst = scores.min(1, keepdim=True).values.expand(B, M)
    s = torch.where(keep, scores, worst)
    return s.topk(n, dim=1).values.mean(1)


def validate(gen: Generator, objective, ctx: Context, fit: GeneratorFit) -> tuple[float, float, int]:
    """(value, mean distinct rows, scorer calls) of the generator on validation contexts: the mean
    over contexts of `top_distinct_value` of `val_samples` rows drawn with a fixed seed."""
    rng = torch.Generator(device=ctx.device).manual_seed(fit.seed + 1)
    with torch.no_grad():
        rows = gen.sample(ctx, fit.val_samples, generator=rng)
        scores, calls = score_rows(objective, rows, ctx)
    return float(top_distinct_value(rows, scores).mean()), distinct_per_context(rows), calls


#: The training state's own keys (`_Loop.state`); an estimator's modules are saved beside them under theirs.
STATE_KEYS = ("gen", "opt", "rng", "phase", "warm_step", "step", "calls", "bad", "best_val", "best_state", "running",
              "log", "seconds", "distill")


class _Loop:
    """The state of one fit_generator call: optimiser, RNG, log, best validation state, call count,
    and where it is (warm-start step, training step), so that a checkpoint resumes to the same result."""

    def __init__(self, gen: Generator, objective, contexts, fit: GeneratorFit, run_dir, aligner,
                 checkpoint: Optional[Checkpointer] = None):
        self.start, self.before = time.perf_counter(), 0.0
        self.budget = 60 * fit.max_minutes if fit.max_minutes else math.inf
        self.world = world = distributed.current()
        if fit.batch_size < world.size:
            raise InputError("batch_size", [f"{fit.batch_size} contexts per step cannot be shared by {world.size} "
                                            "data-parallel ranks (torchrun): each needs at least one; ask for a "
                                            f"batch of at least {world.size} contexts"])
        self.device = device = torch.device(fit.device)
        self.rng = torch.Generator(device=device).manual_seed(fit.seed)
        objective = as_objective(objective).prepare(device)
        self.gen, self.objective, self.contexts, self.fit = gen.to(device).train(), objective, contexts, fit
        self.step_fn = TrainingStep(self.gen, objective, contexts, fit, aligner)
        groups = [{"params": list(self.gen.parameters())}]
        self.modules = self.step_fn.modules      # the estimator's own trainable modules (most have none)
        clash = sorted(set(self.modules) & set(STATE_KEYS))
        if clash:
            raise ValueError(f"{fit.method}'s modules {clash} take keys of the training state {STATE_KEYS}")
        if len(self.modules):
            groups.append({"params": list(self.modules.parameters()), "lr": self.step_fn.estimator.module_lr * fit.lr})
        self.opt = torch.optim.Adam(groups, lr=fit.lr)
        self.calls, self.bad, self.warm_step, self.step, self.phase = 0, 0, 0, 0, "warm"
        self.best_val, self.best_state = -math.inf, None
        self.running = {"score_mean": 0.0, "entropy": 0.0}
        self.ckpt = checkpoint
        state = checkpoint.load("generator") if checkpoint is not None and world.main else None
        if world.distributed:   # rank 0's start (its generator, its checkpoint): other ranks read no file
            buffers = [*self.gen.buffers(), *self.modules.buffers()]
            distributed.broadcast_tensors(self.parameters() + [b for b in buffers if b.is_floating_point()])
            state = distributed.share(state)
        if state is not None:
            checkpoint.restore("generator", state, self.restore)
        self.log = MetricsLog(Path(run_dir) / "metrics.csv" if run_dir is not None and world.main else None,
                              rows=state["log"] if state is not None else ())

    def parameters(self) -> list[Tensor]:
        """Every parameter the optimiser updates (the generator's, and the estimator's modules')."""
        return [p for group in self.opt.param_groups for p in group["params"]]

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def out_of_time(self) -> bool:
        """Past the time limit; data-parallel ranks decide together (their clocks differ)."""
        if not self.world.distributed:
            return self.seconds() > self.budget
        if math.isinf(self.budget):   # no limit on any rank: nothing to decide
            return False
        return bool(distributed.max_ranks([int(self.seconds() > self.budget)], self.device)[0])

    def state(self) -> dict:
        state = {"gen": self.gen.state_dict(), "opt": self.opt.state_dict(), "rng": rng_state(self.rng),
                 "phase": self.phase, "warm_step": self.warm_step, "step": self.step, "calls": self.calls,
                 "bad": self.bad, "best_val": self.best_val, "best_state": self.best_state, "running": self.running,
                 "log": self.log.rows, "seconds": self.seconds()}
        for key, module in self.modules.items():
            state[key] = module.state_dict()
        if self.step_fn.distill is not None:
            state["distill"] = self.step_fn.distill.state()
        return state

    def restore(self, state: dict) -> None:
        self.gen.load_state_dict(state["gen"])
        for key, module in self.modules.items():
            if state.get(key) is not None:      # checkpoints from before the module have none
                module.load_state_dict(state[key])
        if self.step_fn.distill is not None and state.get("distill") is not None:
            self.step_fn.distill.restore(state["distill"])
        self.opt.load_state_dict(state["opt"])
        set_rng_state(self.rng, state["rng"])
        for key in ("phase", "warm_step", "step", "calls", "bad", "best_val", "best_state", "running"):
            setattr(self, key, state[key])
        self.before = state["seconds"]

    def checkpoint(self, name: str, force: bool = False) -> None:
        """Save when the checkpointer says so (or `force`: the end of a phase); stop after a signal.
        Data-parallel ranks decide together, or one would wait for the others forever."""
        if self.world.distributed:
            if self.ckpt is None:
                return
            save, signum = distributed.max_ranks([int(self.ckpt.tick(name) or force), int(self.ckpt.stop or 0)],
                                                 self.device)
            if save or signum:
                if self.world.main:
                    self.ckpt.save("generator", self.state())
                else:
                    self.ckpt.saved_elsewhere()
            if signum:
                raise Interrupted(signum, self.ckpt.label, name)
            return
        if self.ckpt is not None and (self.ckpt.tick(name) or force):
            self.ckpt.save("generator", self.state())
            self.ckpt.check_stop(name)

    def warm_start(self) -> None:
        """Maximum likelihood on each context's best data rows, over their observed slots only
        (Generator.log_prob: for an autoregressive generator the observed prefix in its order; a row
        with nothing there to learn is left out)."""
        fit = self.fit
        if fit.warm_start_steps == 0 or not hasattr(self.contexts, "best_rows"):
            return
        rows, ctx = self.contexts.best_rows(fit.warm_start_top)
        useful = torch.nonzero(self.gen.observed(rows).any(-1)).squeeze(1)
        if len(useful) < len(rows):
            rows, ctx = rows[useful], ctx.index(useful)
        if len(rows) == 0:
            return
        while self.warm_step < fit.warm_start_steps and not self.out_of_time():
            step = self.warm_step
            idx = torch.randint(len(rows), (min(fit.warm_start_batch, len(rows)),), generator=self.rng,
                                device=rows.device)
            if self.world.distributed:     # this rank's share of the global batch's mean (a share may be empty)
                mine = self.world.shard(idx)
                nll = -self.gen.log_prob(rows[mine], ctx.index(mine)).sum() / len(idx)
            else:
                nll = -self.gen.log_prob(rows[idx], ctx.index(idx)).mean()
            self.opt.zero_grad(set_to_none=True)
            nll.backward()
            if self.world.distributed:
                nll = torch.tensor(distributed.sum_grads(self.parameters(), [float(nll.detach())])[0])
            if fit.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.gen.parameters(), fit.grad_clip)
            self.opt.step()
            if step % fit.log_every == 0 or step == fit.warm_start_steps - 1:
                self.log.log({"phase": "warm", "step": step, "loss": float(nll.detach()), "seconds": self.seconds()})
            self.warm_step += 1
            self.checkpoint("warm")

    def check_validation(self, step: int) -> None:
        """Validate, keep the best state, count validations without gain; log the result."""
        self.gen.eval()
        if self.world.distributed:    # the ranks' generators are equal: rank 0 validates, all decide alike
            val, dist, calls = distributed.from_main(lambda: validate(self.gen, self.objective, self.val_ctx, self.fit))
        else:
            val, dist, calls = validate(self.gen, self.objective, self.val_ctx, self.fit)
        self.calls += calls
        if val > self.best_val + 1e-9:
            self.best_val, self.best_state, self.bad = val, copy.deepcopy(self.gen.state_dict()), 0
        else:
            self.bad += 1
        self.log.log({"phase": "val", "step": step, "val_score": val, "val_best": self.best_val, "distinct": dist,
                      "scorer_calls": self.calls, "seconds": self.seconds()})

    def train_step(self, step: int, tau: float) -> tuple[Tensor, dict]:
        """One optimiser step; returns (loss, stats)."""
        self.gen.train()
        loss, stats = self.step_fn(tau, entropy_at(self.fit, step), self.rng)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.world.distributed:    # the global batch's gradient, loss and scorer calls
            total, calls = distributed.sum_grads(self.parameters(), [float(loss.detach()), stats["scorer_calls"]])
            loss, stats = torch.tensor(total), {**stats, "scorer_calls": round(calls)}
        if self.fit.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.gen.parameters(), self.fit.grad_clip)
        self.opt.step()
        self.calls += int(stats["scorer_calls"])
        return loss, stats

    def log_train(self, step: int, tau: float, loss: Tensor, stats: dict, bar) -> None:
        with torch.no_grad():
            dist = distinct_per_context(self.gen.sample(self.diag_ctx, 64, generator=self.rng))
        self.log.log({"phase": "train", "step": step, "loss": float(loss.detach()), "score_mean": stats["score_mean"],
                      "score_max": stats["score_max"], "entropy": stats["entropy"], "distinct": dist,
                      "tau": tau if self.step_fn.uses_tau else "", "scorer_calls": self.calls,
                      "seconds": self.seconds()})
        bar.set_postfix(score=f"{self.running['score_mean']:.4g}", H=f"{self.running['entropy']:.2f}",
                        distinct=f"{dist:.0f}/64")

    def run(self, progress: Optional[bool]) -> str:
        """Warm start, then train until steps, patience or the deadline; returns why it stopped."""
        fit = self.fit
        self.val_ctx = self.contexts.validation()
        self.diag_ctx = self.val_ctx.index(slice(0, 8))
        if self.phase == "warm":
            self.warm_start()
            self.check_validation(0)
            self.phase = "train"
            self.checkpoint("warm", force=True)
        schedule = make_schedule(fit, fit.steps)
        bar = progress_bar(fit.steps, f"fit generator ({fit.method})", "step", progress)
        bar.update(self.step)
        stopped = "steps"
        while self.step < fit.steps:
            step = self.step = self.step + 1
            tau = schedule(step - 1)
            loss, stats = self.train_step(step, tau)
            for key in self.running:
                self.running[key] = stats[key] if step == 1 else 0.9 * self.running[key] + 0.1 * stats[key]
            bar.update(1)
            if step % fit.log_every == 0 or step == fit.steps:
                self.log_train(step, tau, loss, stats, bar)
            out_of_time = self.out_of_time()
            if step % fit.val_every == 0 or step == fit.steps or out_of_time:
                self.check_validation(step)
                if fit.patience is not None and self.bad >= fit.patience and step < fit.steps:
                    stopped = "early stopping"
                    break
            if out_of_time:
                stopped = "time limit"
                break
            self.checkpoint("generator")
        bar.close()
        return stopped


def fit_generator(gen: Generator, objective, contexts, fit: Optional[GeneratorFit] = None, *,
                  run_dir: Optional[str | Path] = None, progress: Optional[bool] = None,
                  aligner=None, checkpoint: Optional[Checkpointer] = None) -> GeneratorResult:
    """Train `gen` to maximise `objective` over contexts from `contexts` (TableContexts or
    SampledContexts). Writes RUN/metrics.csv when run_dir is given; progress: see
    choicegrad.progress.progress_bar. The generator is returned in eval mode with its best validation
    state. aligner: the Aligner the `aligner` method needs (reference rows come from `contexts`' data).
    checkpoint: save the training state there every few minutes, at the end of the warm start and on
    SIGINT/SIGTERM (phase "generator"), and continue from it when it holds one (bit-identical on CPU,
    time limits aside).

    Under torchrun (choicegrad.distributed.join first) every rank calls this with the same arguments
    and trains on its share of each step's `batch_size` contexts (see the module docstring): the
    result equals one process's at the same seed and batch size, within float tolerance, on every
    rank. InputError when batch_size is smaller than the number of ranks."""
    loop = _Loop(gen, objective, contexts, fit or GeneratorFit(), run_dir, aligner, checkpoint)
    try:
        stopped = loop.run(progress)
    finally:
        loop.log.close()
    if loop.best_state is None:          # no validation score was a number
        raise InputError("objective", ["every validation score was NaN: the scorer or objective returns NaN for "
                                       "these rows and contexts (e.g. context values beyond what it was fitted on)"])
    if loop.fit.keep == "best":
        loop.gen.load_state_dict(loop.best_state)
    return GeneratorResult(loop.gen.eval(), loop.log.rows, loop.calls, loop.seconds(), loop.best_val, stopped)


def fit_table_generator(scorer, data: TableData, config=None, fit: Optional[GeneratorFit] = None, *,
                        run_dir: Optional[str | Path] = None, progress: Optional[bool] = None,
                        aligner=None, checkpoint: Optional[Checkpointer] = None) -> GeneratorResult:
    """Build a generator for the scorer's space and context and fit it on the contexts of `data`
    (warm start on `data`'s best rows), maximising the scorer (with `fit.beta` pessimism)."""
    check_scorer(scorer, "fit_table_generator")
    fit = fit or GeneratorFit()
    with seeded_rng(fit.seed, fit.device):    # the generator's initial weights from fit.seed; the caller's RNG left as it was
        gen = build(config or GeneratorConfig(), space=scorer.space, context=scorer.context)
    contexts = TableContexts(data, device=fit.device)
    return fit_generator(gen, TableObjective(scorer, beta=fit.beta), contexts, fit, run_dir=run_dir, progress=progress,
                         aligner=aligner, checkpoint=checkpoint)

