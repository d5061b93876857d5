"""Training loops: plain PyTorch, seeded, device-agnostic."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from choicegrad import distributed
from choicegrad.checkpoints import Checkpointer, rng_state, seeded_rng, set_rng_state
from choicegrad.data.stream import ParquetTable
from choicegrad.data.table import TableData, check_fit_rows, score_stats
from choicegrad.device import Device
from choicegrad.errors import Interrupted
from choicegrad.io import state_problems
from choicegrad.metrics import regression_report
from choicegrad.progress import progress_bar
from choicegrad.scorer.model import Scorer, ScorerConfig, category_counts, completions, pair_rank


class ScorerFit(BaseModel):
    """How to fit a scorer. Stored with the run."""

    model_config = ConfigDict(allow_inf_nan=False)  # an inf or NaN setting would train to NaN weights

    model: ScorerConfig = Field(default_factory=ScorerConfig)
    ensemble: int = Field(1, ge=1, description="members k; score = mean - beta * std")
    beta: float = Field(0.0, ge=0.0, description="pessimism of the ensemble score")
    epochs: int | None = Field(None, ge=1, description="None: about 3e7 row visits, 1..200 epochs (auto_epochs: "
                               "at least 10 below 3 million training rows)")
    batch_size: int | None = Field(None, ge=1, description="None: n_train / 256, clipped to 128..4096")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    ranking: float = Field(0.0, ge=0.0, description="weight of the pairwise ranking loss")
    loss: Literal["mse", "logistic"] = Field("mse", description="mse: regression on the standardised score; "
                                             "logistic: a classifier of 0/1 scores whose outputs are logits")
    patience: int = Field(6, ge=1, description="epochs without validation gain before stopping (and at least "
                          "PATIENCE_STEPS optimiser steps of them: a small table's epochs are a few steps each)")
    keep: Literal["best", "last"] = Field("best", description="each member's weights: best: those of its epoch of "
                                          "lowest validation loss, stopping after `patience` epochs without gain; "
                                          "last: those after all `epochs` (no early stop; the validation rows "
                                          "lie in the table's range, the rows searched for may lie above it)")
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, ge=0, lt=0.5)
    seed: int = Field(0, ge=0, lt=2**63, description="random seed (torch takes 0 <= seed < 2**63)")
    max_minutes: float | None = Field(None, gt=0, description="time limit for the whole fit: member m of k trains "
                                      "until (m + 1) / k of it has passed (checked after every batch); a member "
                                      "whose pace cannot keep its epochs in that time has its learning-rate "
                                      "schedule shortened to the steps that fit, so it ends annealed")
    device: Device = "cpu"


@dataclass
class ScorerResult:
    scorer: Scorer
    metrics: dict[str, dict[str, float]]
    history: list[dict[str, float]]
    seconds: float


#: Row visits of an automatic epoch count (fit.epochs None), and its most epochs.
ROW_VISITS, MAX_EPOCHS = 3e7, 200


def auto_epochs(n_train: int) -> int:
    """Epochs of about ROW_VISITS row visits over n_train training rows, clipped to 1..MAX_EPOCHS: at
    least 10 below 3 million rows, and a table bigger than ROW_VISITS (in memory or streamed) one."""
    return int(np.clip(math.ceil(ROW_VISITS / n_train), 1, MAX_EPOCHS))


def auto_batch_size(n_train: int, batch_size: int | None) -> int:
    """batch_size, or n_train / 256 clipped to 128..4096; at most n_train."""
    return min(batch_size or int(np.clip(n_train // 256, 128, 4096)), n_train)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train / validation / test positions."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = max(1, int(round(n * val_fraction))), int(round(n * test_fraction))
    return perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test]


def ranking_loss(pred: torch.Tensor, target: torch.Tensor, generator: torch.Generator,
                 draw: int | None = None) -> torch.Tensor:
    """Pairwise logistic loss on random in-batch pairs: prefer the row with the higher target.

    draw: pair through a permutation of this many (>= len(pred)), so that data-parallel ranks whose
    shares differ in size draw alike from their (shared) generator."""
    j = torch.randperm(draw or len(pred), generator=generator)
    j = j[j < len(pred)].to(pred.device)
    if not len(j):
        return pred.sum() * 0.0
    sign = torch.sign(target - target[j])
    return (torch.nn.functional.softplus(-sign * (pred - pred[j])) * sign.abs()).mean()


#: Fewest optimiser steps without validation gain before a fit stops early: at 600 rows an epoch is 4
#: steps, and 6 epochs stopped fits still warming up (benchmarks/partial_rows.py, docs/choosing.md).
PATIENCE_STEPS = 120

#: A timed member's schedule follows its pace (Pace) once it has taken PACE_STEPS steps (fewer time
#: the pace poorly), when the steps that fit differ by more than PACE_TOLERANCE.
PACE_STEPS, PACE_TOLERANCE = 16, 0.02


def one_cycle(opt: torch.optim.Optimizer, lr: float, total: int, at: int = 0) -> torch.optim.lr_scheduler.OneCycleLR:
    """A one-cycle learning-rate schedule of `total` steps for `opt`, at step `at` (the optimiser's rate
    and momentum set to that step's)."""
    pct = 0.05 if 0.05 * total != 1 else 0.04  # OneCycleLR divides by zero when pct_start * total_steps == 1
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, pct_start=pct, total_steps=total)
    if at:
        sched.last_epoch = at - 1
        sched.step()
    return sched


class Pace:
    """The pace of one timed member, from its first timed batch (`began`: (elapsed, step)): `length`
    says how long its one-cycle schedule should be to end by the deadline, so that a member the
    deadline cuts ends annealed, not at a high learning rate."""

    def __init__(self) -> None:
        self.began: tuple[float, int] | None = None

    def length(self, sched: torch.optim.lr_scheduler.OneCycleLR, most: int, deadline: float,
               elapsed: float) -> int | None:
        """The steps the pace fits before `deadline` (never more than `most`, the epochs' steps) when
        they differ from sched's length by more than PACE_TOLERANCE, else None (keep it); timed over
        at least PACE_STEPS steps. Data-parallel ranks pass the same elapsed time, so they agree."""
        if not math.isfinite(deadline):
            return None
        done, total = sched.last_epoch, sched.total_steps
        if self.began is None:
            self.began = (elapsed, done)
            return None
        spent, taken = elapsed - self.began[0], done - self.began[1]
        if taken < PACE_STEPS or spent <= 0:
            return None
        fits = min(most, max(done + 1, int(done + taken / spent * (deadline - elapsed))))
        return fits if abs(fits - total) > PACE_TOLERANCE * total else None


#: Least noise variance (in standard deviations of the score, squared) the mixture loss of partial
#: rows assumes: an exact fit of the complete rows would otherwise make it a hard minimum.
NOISE_FLOOR = 1e-3


def mixture_loss(f: torch.Tensor, weights: torch.Tensor, target: torch.Tensor, noise: torch.Tensor | float,
                 kind: str = "mse", exact: torch.Tensor | None = None) -> torch.Tensor:
    """(P,) loss of partial rows from their completions' predictions f (P, C), weights (P, C) and
    exact (P,) bool (completions; None: all exact) and targets (P,): the negative log-likelihood of the
    target under the mixture of the row's completions, in the units of the complete rows' loss.

    mse, exact rows: -2 noise log sum_c w_c exp(-(y - f_c)^2 / (2 noise)), noise the residual variance
    (detached), so one completion of weight 1 gives (y - f)^2 exactly; the completions that explain y
    take the gradient, as the missing category that produced y would. mse, drawn rows (a few of many
    completions, rarely the one that produced y): the mixture's Gaussian approximation instead,
    (y - m)^2 noise / (noise + v) with m, v the draws' mean and (detached) variance, a regression on
    the mean weighted down where the missing slots matter. logistic: binary cross-entropy of y against
    the mixture's probability sum_c w_c sigmoid(f_c)."""
    logw = torch.log(weights.to(f.dtype))
    if kind == "logistic":
        log_one = torch.logsumexp(logw + torch.nn.functional.logsigmoid(f), 1)
        log_zero = torch.logsumexp(logw + torch.nn.functional.logsigmoid(-f), 1)
        return -(target * log_one + (1 - target) * log_zero)
    mixture = -2 * noise * torch.logsumexp(logw - (target[:, None] - f) ** 2 / (2 * noise), 1)
    if exact is None or bool(exact.all()):
        return mixture
    w = weights.to(f.dtype)
    mean = (w * f).sum(1)
    var = (w * (f - mean[:, None]) ** 2).sum(1).detach()
    return torch.where(exact, mixture, (target - mean) ** 2 * noise / (noise + var))


def fit_scorer(data: TableData, fit: ScorerFit | None = None, progress: bool | None = None,
               extra_eval: dict[str, TableData] | None = None, checkpoint: Checkpointer | None = None,
               init: Scorer | None = None) -> ScorerResult:
    """Fit a Scorer on `data` (MSE on the standardised score, optional ranking loss, early stopping).

    A random `val_fraction` of rows drives early stopping (fit.keep "best"; with "last" every epoch
    runs and the last weights are kept), `test_fraction` is held out for the reported
    metrics; `extra_eval` adds named held-out sets (e.g. the unseen upper half of each context).
    progress: see choicegrad.progress.progress_bar. checkpoint: save the training state there every
    few minutes and on SIGINT/SIGTERM (phase "scorer"), and continue from it when it holds one: the
    result is then bit-identical to an uninterrupted fit on CPU (time limits aside). init: start from
    this scorer's weights (a warm start, e.g. the last design round's) where its members have the
    same shapes; otherwise from a fresh initialisation.

    Under torchrun (choicegrad.distributed.join first), every rank takes its share of each global
    batch of `batch_size` rows and the gradients are averaged (DistributedDataParallel): with the same
    seed the model equals one process's at the same batch size, within float tolerance (the ranking
    loss, if on, pairs rows within each rank's share; dropout masks differ). Only rank 0 reads and
    saves checkpoints; it sends the state to the others on a resume.
    """
    check_fit_rows(data)
    fit = fit or ScorerFit()
    with seeded_rng(fit.seed, fit.device):      # initialisation, dropout and completions draw from it
        training = _ScorerTraining(data, fit, checkpoint, init)
        training.run(progress)
    scorer = training.scorer.eval()
    metrics = {"validation": _report(scorer, data.subset(training.val_idx))}
    if len(training.test_idx):
        metrics["test"] = _report(scorer, data.subset(training.test_idx))
    for name, sub in (extra_eval or {}).items():
        metrics[name] = _report(scorer, sub)
    return ScorerResult(scorer.cpu(), metrics, training.history, training.elapsed())


def fit_scorer_stream(table: ParquetTable, fit: ScorerFit | None = None, progress: bool | None = None,
                      checkpoint: Checkpointer | None = None, init: Scorer | None = None,
                      workers: int = 0) -> ScorerResult:
    """fit_scorer on a Parquet dataset bigger than memory (choicegrad.data.stream.scan_parquet):
    every epoch streams the training rows (workers: DataLoader processes decoding Parquet), the
    validation and test rows are the table's held-out sets. Memory stays bounded whatever the rows.

    fit.val_fraction / test_fraction / seed were used by the scan (scan_parquet's), not here. Under
    torchrun each rank streams its own row groups (a rank that runs out first takes empty batches, so
    every rank runs as many steps), so the model depends on the number of ranks and workers, unlike
    fit_scorer's. A resume re-reads the interrupted epoch up to where it stopped (same batches)."""
    fit = fit or ScorerFit()
    with seeded_rng(fit.seed, fit.device):
        training = _StreamTraining(table, fit, checkpoint, init, workers)
        training.run(progress)
    scorer = training.scorer.eval()
    metrics = {"validation": _report(scorer, table.validation)}
    if len(table.test):
        metrics["test"] = _report(scorer, table.test)
    return ScorerResult(scorer.cpu(), metrics, training.history, training.elapsed())


def _report(scorer: Scorer, sub: TableData) -> dict[str, float]:
    """Held-out regression metrics of `scorer` on `sub` (predicted in chunks of 65,536 rows)."""
    pred = scorer.predict(sub.rows, sub.ctx_cat, sub.ctx_num).numpy()
    return regression_report(sub.y.numpy(), pred, sub.context_groups())


def warm_start(scorer: Scorer, init: Scorer) -> bool:
    """Copy `init`'s member weights into `scorer` where every member's parameters have the same
    shapes (member i from init's member i mod k); True when copied. A space, context or
    architecture that changed leaves `scorer` as it is."""
    new, old = scorer.members, init.members
    if state_problems(new[0], old[0].state_dict()):
        return False
    with torch.no_grad():
        for i, member in enumerate(new):
            member.load_state_dict(old[i % len(old)].state_dict())
    return True


class _ScorerTraining:
    """The state of one fit_scorer call, member by member, epoch by epoch, batch by batch, so that a
    checkpoint taken between any two batches resumes to the same result.

    With max_minutes, member m trains until (m + 1) / k of the time has passed (at least one batch),
    checked after every batch, and its one-cycle schedule follows its pace (`pace`): cut at the
    deadline mid-schedule, its last weights would be those of a high learning rate."""

    def __init__(self, data: TableData, fit: ScorerFit, checkpoint: Checkpointer | None,
                 init: Scorer | None = None):
        self.train_idx, self.val_idx, self.test_idx = split_indices(len(data), fit.val_fraction, fit.test_fraction,
                                                                    fit.seed)
        y_mean, y_std = score_stats(data.y[self.train_idx]) if fit.loss == "mse" else (0.0, 1.0)  # logits as they are
        # a partial row's missing slots are scored over their categories at their training shares
        marginals = category_counts(data.rows[self.train_idx], data.space.max_size)
        self.setup(data, fit, checkpoint, init, len(self.train_idx), (y_mean, y_std), marginals, data)
        self.train_t = torch.as_tensor(self.train_idx, device=self.device)
        self.val_t = torch.as_tensor(self.val_idx, device=self.device)
        self.steps_per_epoch = max(1, math.ceil(self.n_train / self.batch_size))
        self.resume()

    def setup(self, source: TableData | ParquetTable, fit: ScorerFit, checkpoint: Checkpointer | None,
              init: Scorer | None, n_train: int, stats: tuple[float, float], marginals: torch.Tensor,
              held: TableData) -> None:
        """The state both fits share: the scorer of `source`'s space, context and score (its pairwise
        term decided on n_train rows; score stats (mean, std); marginals (S, V_max) category counts),
        warm-started from `init`; `held`'s rows on the device (the rows batches and validation index),
        their standardised targets; the epochs, batch size and position."""
        self.fit, self.ckpt, self.start = fit, checkpoint, time.perf_counter()
        self.world = distributed.current()
        self.gen = torch.Generator().manual_seed(fit.seed)       # the batch order and ranking pairs
        self.device = torch.device(fit.device)
        self.y_mean, self.y_std = stats
        self.n_train = n_train
        # the automatic pairwise term is decided on the training rows as well as the space
        model = fit.model.model_copy(update={"pairwise": pair_rank(fit.model, source.space.sizes, n_train)})
        self.scorer = Scorer(source.space, source.context, source.score, model, k=fit.ensemble, beta=fit.beta,
                             y_mean=self.y_mean, y_std=self.y_std)
        if init is not None:
            warm_start(self.scorer, init)
        self.scorer.set_marginals(marginals)
        self.scorer.to(self.device)
        self.tensors = [t.to(self.device) for t in (held.rows, held.ctx_cat, held.ctx_num)]
        self.target = self.standardise(held.y)
        self.budget = 60 * fit.max_minutes if fit.max_minutes else math.inf
        self.epochs = fit.epochs or auto_epochs(n_train)
        self.batch_size = auto_batch_size(n_train, fit.batch_size)
        self.history: list[dict[str, float]] = []
        self.member, self.epoch, self.pos, self.total = 0, 0, 0, 0.0
        self.order: torch.Tensor | None = None
        self.opt = self.sched = self.model = None
        self.best, self.best_state, self.bad = math.inf, None, 0
        self.before = 0.0                                   # seconds spent before a resume

    def resume(self) -> None:
        """Continue from the checkpoint's state when it holds one (rank 0 reads it and sends it to
        the other ranks, which read no file)."""
        ckpt = self.ckpt
        state = ckpt.load("scorer") if ckpt is not None and self.world.main else None
        if self.world.distributed:
            state = distributed.share(state)
        if state is not None:
            ckpt.restore("scorer", state, self.restore)

    def standardise(self, y: torch.Tensor) -> torch.Tensor:
        """Scores (N,) -> the working units (N,) float32 on the device."""
        return ((y.double() - self.y_mean) / self.y_std).float().to(self.device)

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start

    def _new_member(self) -> None:
        member = self.scorer.members[self.member]
        self.model = member
        if self.world.distributed:   # gradients averaged over the ranks
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(member, device_ids=ids, gradient_as_bucket_view=True)
        self.opt = torch.optim.AdamW(member.parameters(), lr=self.fit.lr, weight_decay=self.fit.weight_decay)
        self.sched = self.schedule(self.total_steps())
        self.best, self.best_state, self.bad, self.epoch, self.order = math.inf, None, 0, 0, None
        self.pacer = Pace()

    def schedule(self, total: int, at: int = 0) -> torch.optim.lr_scheduler.OneCycleLR:
        """The member's one-cycle schedule of `total` steps, at step `at` (one_cycle)."""
        return one_cycle(self.opt, self.fit.lr, total, at)

    def pace(self, deadline: float, elapsed: float) -> None:
        """Fit the schedule to the member's pace (Pace), timed from its first batch (or the first
        after a resume)."""
        fits = self.pacer.length(self.sched, self.total_steps(), deadline, elapsed)
        if fits is not None:
            self.sched = self.schedule(fits, at=self.sched.last_epoch)

    def total_steps(self) -> int:
        """Optimiser steps of the current member (its learning-rate schedule's length)."""
        return self.epochs * self.steps_per_epoch

    def patience(self) -> int:
        """Epochs without validation gain that stop the member: fit.patience, or more when they are
        fewer than PATIENCE_STEPS optimiser steps."""
        return max(self.fit.patience, math.ceil(PATIENCE_STEPS / self.steps_per_epoch))

    def state(self) -> dict:
        return {"model": self.scorer.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "rng": rng_state(self.gen), "member": self.member, "epoch": self.epoch, "pos": self.pos,
                "total": self.total, "order": self.order, "best": self.best, "best_state": self.best_state,
                "bad": self.bad, "history": self.history, "seconds": self.elapsed()}

    def restore(self, state: dict) -> None:
        self.scorer.load_state_dict(state["model"])
        self.member = state["member"]
        self._new_member()
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        set_rng_state(self.gen, state["rng"])
        for key in ("epoch", "pos", "total", "order", "best", "best_state", "bad", "history"):
            setattr(self, key, state[key])
        if not self.world.main:
            self.total = 0.0         # the saved total is the ranks' sum: rank 0 carries it on
        if self.order is not None:
            self.order = self.order.to(self.device)
        self.before = state["seconds"]

    def loss(self, pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.fit.loss == "logistic":
            return torch.nn.functional.binary_cross_entropy_with_logits(pred, target, reduction=reduction)
        return torch.nn.functional.mse_loss(pred, target, reduction=reduction)

    def row_losses(self, model, member, rows: torch.Tensor, cat: torch.Tensor, num: torch.Tensor,
                   target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction (B,), loss (B,)) of rows (B, S) through `model` (the member, or its data-parallel
        wrapper), in one forward. A "marginal" member scores a row with missing slots as the weighted mean
        of its completions, and its loss is mixture_loss, whose noise is the complete rows' mean loss
        (else the partial rows' best completion's), at least NOISE_FLOOR."""
        part = (rows < 0).any(1) if member.marginal else None
        if part is None or not bool(part.any()):
            pred = model(rows, cat, num)
            return pred, self.loss(pred, target, reduction="none")
        whole, idx = (~part).nonzero().squeeze(1), part.nonzero().squeeze(1)
        filled, weights, exact = completions(rows[idx], member.marginals, member.sizes, member.config.completions,
                                             member.training)
        P, C, S = filled.shape

        def rows_of(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t[whole], t[idx].repeat_interleave(C, 0)])

        f = model(torch.cat([rows[whole], filled.reshape(P * C, S)]), rows_of(cat), rows_of(num))
        fc, fp = f[:len(whole)], f[len(whole):].reshape(P, C)
        lc = self.loss(fc, target[whole], reduction="none")
        noise = lc if len(whole) else torch.where(weights > 0, (target[idx, None] - fp) ** 2, math.inf).amin(1)
        lp = mixture_loss(fp, weights, target[idx], noise.detach().mean().clamp(min=NOISE_FLOOR), self.fit.loss, exact)
        pred = (fp * weights.to(fp.dtype)).sum(1)
        out = f.new_zeros(len(rows)).index_copy(0, whole, fc).index_copy(0, idx, pred)
        return out, f.new_zeros(len(rows)).index_copy(0, whole, lc).index_copy(0, idx, lp)

    def val_loss(self, member) -> float:
        member.eval()
        chunk = 65536 // (member.config.completions if member.marginal else 1)   # partial rows expand C-fold
        with torch.no_grad():
            losses = [self.row_losses(member, member, *(t[b] for t in self.tensors), self.target[b])[1].sum()
                      for b in self.world.shard(self.val_t).split(chunk)]
        member.train()
        return distributed.sum_ranks(float(sum(losses)), self.device) / len(self.val_t)

    def train_batch(self, member, batch: torch.Tensor) -> None:
        """One optimiser step on the global batch (N,) of row positions (this rank's share of it)."""
        if self.world.distributed:
            # sum over this rank's rows / N, times the ranks DDP averages over: the global batch's mean
            mine = self.world.shard(batch)
            pred, losses = self.row_losses(self.model, member, *(t[mine] for t in self.tensors), self.target[mine])
            share = self.world.size / len(batch)
            loss = losses.sum() * share
            if self.fit.ranking:   # each rank's pair mean weighted by its pairs
                loss = loss + self.fit.ranking * len(mine) * share * ranking_loss(
                    pred, self.target[mine], self.gen, draw=len(batch))
            self.total += float(loss.detach()) * len(batch) / self.world.size    # this rank's sum
        else:
            pred, losses = self.row_losses(member, member, *(t[batch] for t in self.tensors), self.target[batch])
            loss = losses.mean()
            if self.fit.ranking:
                loss = loss + self.fit.ranking * ranking_loss(pred, self.target[batch], self.gen)
            self.total += float(loss.detach()) * len(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()

    def run_epoch(self, member, deadline: float) -> bool:
        """Train the rest of the current epoch; True when the member's time ran out."""
        member.train()
        if self.order is None:
            self.order = self.train_t[torch.randperm(len(self.train_t), generator=self.gen).to(self.device)]
            self.pos, self.total = 0, 0.0
        batches = self.order.split(self.batch_size)
        while self.pos < len(batches):
            self.train_batch(member, batches[self.pos])
            self.pos += 1
            if self.after_batch(deadline):
                return True
        return False

    def after_batch(self, deadline: float) -> bool:
        """Save when it is time (or a signal came, then stop), and fit the schedule to the pace; True
        when the member's time ran out or its schedule ended. Data-parallel ranks decide together
        (collective_checks)."""
        if self.world.distributed:
            elapsed = self.collective_checks()
        else:
            if self.ckpt is not None and self.ckpt.tick("scorer"):
                self.ckpt.save("scorer", self.state())
                self.ckpt.check_stop("scorer")
            elapsed = self.elapsed()
        self.pace(deadline, elapsed)
        return elapsed > deadline or self.sched.last_epoch >= self.sched.total_steps

    def collective_checks(self) -> float:
        """Data-parallel ranks decide together whether to save or stop on a signal (raising Interrupted
        with the same signal on every rank), or one rank would wait for the others forever -> the
        ranks' longest elapsed time in seconds (shared as whole milliseconds), which the time limit
        and the pace are judged on alike."""
        ckpt = self.ckpt
        save = ckpt is not None and ckpt.tick("scorer")
        signum = (ckpt.stop or 0) if ckpt is not None else 0
        save, ms, signum = distributed.max_ranks([int(save), int(self.elapsed() * 1000), int(signum)], self.device)
        if (save or signum) and ckpt is not None:
            total = distributed.sum_ranks(self.total, self.device)    # the epoch's loss so far, every rank's
            if self.world.main:
                ckpt.save("scorer", {**self.state(), "total": total})
            else:
                ckpt.saved_elsewhere()
        if signum:
            raise Interrupted(signum, ckpt.label if ckpt is not None else "the fit", "scorer")
        return ms / 1000

    def run(self, progress: bool | None) -> None:
        fit = self.fit
        bar = progress_bar(fit.ensemble * self.epochs, "fit scorer", "epoch", progress)
        bar.update(self.member * self.epochs + self.epoch)
        while self.member < fit.ensemble:
            member = self.scorer.members[self.member]
            if self.opt is None:
                self._new_member()
            deadline = self.budget * (self.member + 1) / fit.ensemble
            while self.epoch < self.epochs:
                out_of_time = self.run_epoch(member, deadline)
                vl = self.val_loss(member)
                train_loss = distributed.sum_ranks(self.total, self.device) / self.n_train
                self.history.append({"member": self.member, "epoch": self.epoch, "train_loss": train_loss,
                                     "val_mse": vl})
                bar.update(1)
                bar.set_postfix(member=self.member, train=f"{train_loss:.4f}", val=f"{vl:.4f}")
                if vl < self.best - 1e-5:
                    self.best, self.bad = vl, 0
                    if fit.keep == "best":       # keep "last" never restores it: no copy to make or checkpoint
                        self.best_state = {k: v.detach().clone() for k, v in member.state_dict().items()}
                else:
                    self.bad += 1
                self.epoch, self.order = self.epoch + 1, None
                if (self.bad >= self.patience() and fit.keep == "best") or out_of_time:
                    break
            bar.update(self.epochs - self.epoch)
            if self.best_state is not None and fit.keep == "best":
                member.load_state_dict(self.best_state)
            self.member, self.opt = self.member + 1, None
        bar.close()


class _StreamTraining(_ScorerTraining):
    """_ScorerTraining on a ParquetTable: batches stream from its row groups each epoch; validation
    runs on its held-out rows, in memory. Epoch e of member m reads the row groups in the order of
    table epoch m * epochs + e, so members see different orders."""

    def __init__(self, table: ParquetTable, fit: ScorerFit, checkpoint: Checkpointer | None,
                 init: Scorer | None, workers: int):
        self.table, self.workers = table, workers
        val = table.validation
        stats = (table.y_mean, table.y_std) if fit.loss == "mse" else (0.0, 1.0)
        marginals = (table.category_counts if table.category_counts is not None
                     else category_counts(val.rows, table.space.max_size))
        self.setup(table, fit, checkpoint, init, table.train_rows, stats, marginals, val)
        self.val_t = torch.arange(len(val), device=self.device)
        self.resume()

    def table_epoch(self) -> int:
        return self.member * self.epochs + self.epoch

    def patience(self) -> int:
        """fit.patience: a streamed table's epochs are long."""
        return self.fit.patience

    def total_steps(self) -> int:
        base = self.member * self.epochs
        return sum(self.table.steps(base + e, self.batch_size, self.world.size, self.workers)
                   for e in range(self.epochs))

    def run_epoch(self, member, deadline: float) -> bool:
        """Stream the rest of the current epoch; True when the member's time ran out."""
        member.train()
        if self.order is None:            # a new epoch (order marks one begun, as in _ScorerTraining)
            self.order = torch.zeros(0, dtype=torch.long)
            self.pos, self.total = 0, 0.0
        batches = self.table.batches(self.table_epoch(), self.batch_size, self.world.rank, self.world.size,
                                     self.workers)
        for rows, cat, num, y in itertools.islice(batches, self.pos, None):
            self.train_rows(rows.to(self.device), cat.to(self.device), num.to(self.device), self.standardise(y))
            self.pos += 1
            if self.after_batch(deadline):
                return True
        return False

    def train_rows(self, rows: torch.Tensor, cat: torch.Tensor, num: torch.Tensor, target: torch.Tensor) -> None:
        """One optimiser step on this rank's rows (b, S) of a global batch of batch_size rows: the
        loss is their sum over batch_size / ranks, so a full global batch's gradient is its mean."""
        pred, losses = self.row_losses(self.model, self.scorer.members[self.member], rows, cat, num, target)
        scale = self.world.size / self.batch_size
        loss = losses.sum() * scale
        if self.fit.ranking:
            loss = loss + self.fit.ranking * len(rows) * scale * ranking_loss(pred, target, self.gen,
                                                                              draw=self.batch_size)
        self.total += float(loss.detach()) / scale
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
