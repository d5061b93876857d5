"""The item scorer: f(context, slate) -> score, where a slate is one item per slot and an item is a
float attribute vector of length D, for item problems (choose one item per slot from a catalogue).

An item is scored from its attributes only, never from an id, so items that never appear in the log
(cold start) are scored like any other. Slot s embeds its item as phi(x_s) + offset_s, phi one small
MLP shared by all slots; the S embeddings and the encoded context go through an MLP to one score.
Every operation is differentiable in the item vectors, and a relaxed selection x (N, S, M) of a
catalogue (M, D) is scored as x @ items: a one-hot x gives exactly the hard slate's score.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field, PositiveInt
from torch import nn

from choicegrad.data.context import ContextEncoder
from choicegrad.data.table import MIN_ROWS, score_stats
from choicegrad.errors import InputError, show_rows
from choicegrad.checkpoints import seeded_rng
from choicegrad.io import load_state, meta_problem, read_meta, read_state, save_checkpoint, versions, weights_header
from choicegrad.metrics import regression_report
from choicegrad.progress import progress_bar
from choicegrad.scorer.model import check_ensemble_weights, in_score_units
from choicegrad.scorer.fit import (PATIENCE_STEPS, Pace, ScorerFit, ScorerResult, auto_batch_size, auto_epochs,
                                   one_cycle, ranking_loss, split_indices)

KIND = "choicegrad.ItemScorer"

#: The automatic epoch count (fit.epochs None) is fit_scorer's (auto_epochs: about 3e7 row visits), but
#: at most TINY_LOG_STEPS optimiser steps or CAP_EPOCHS epochs, whichever is more:
#: a log of a few thousand rows (200 epochs of 128-row batches: 5,000 steps, tens of seconds on a CPU
#: for this model) fits in seconds, and no log takes many more steps than a million rows' 30 epochs
#: (7,300 steps; 200 epochs of 150,000 rows would be 51,000).
TINY_LOG_STEPS = 2000
CAP_EPOCHS = 30


class ItemScorerConfig(BaseModel):
    """Architecture of one ItemNet."""

    item_dim: int = Field(32, ge=1, description="per-slot item embedding width: a shared MLP of the D attributes "
                          "-> item_dim, plus a learned per-slot offset")
    context_dim: int = Field(16, ge=1, description="embedding size per categorical context column")
    hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 256], min_length=1)


class ItemNet(nn.Module):
    """One member: slate (B, S, D) of standardised item vectors + encoded context -> (B,) standardised score."""

    def __init__(self, slots: int, dim: int, context_sizes: list[int], num_numeric: int, config: ItemScorerConfig):
        super().__init__()
        E = config.item_dim
        width = max(32, 2 * E)
        self.phi = nn.Sequential(nn.Linear(dim, width), nn.SiLU(), nn.Linear(width, E))
        self.slot_offset = nn.Parameter(torch.randn(slots, E) * 0.1)
        self.context_tables = nn.ModuleList(nn.Embedding(c, config.context_dim) for c in context_sizes)
        dims = [slots * E + len(context_sizes) * config.context_dim + num_numeric, *config.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(dims[-1], 1)

    def context_features(self, ctx_cat: torch.Tensor | None, ctx_num: torch.Tensor | None,
                         like: torch.Tensor) -> list[torch.Tensor]:
        """The encoded context, as a list of (B, D_j) parts (empty without context columns)."""
        parts = [t(ctx_cat[:, j]) for j, t in enumerate(self.context_tables)]
        if ctx_num is not None and ctx_num.shape[-1]:
            parts.append(ctx_num.to(like.dtype))
        return parts

    def forward(self, items: torch.Tensor, ctx_cat: torch.Tensor | None = None,
                ctx_num: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) standardised score of standardised slates items (B, S, D)."""
        e = (self.phi(items) + self.slot_offset).flatten(1)
        return self.head(self.body(torch.cat([e, *self.context_features(ctx_cat, ctx_num, e)], 1))).squeeze(-1)


class ItemScorerMeta(BaseModel):
    """What an item scorer's JSON must hold to rebuild it (other fields, e.g. versions, are ignored)."""

    slots: list[str] = Field(min_length=1)
    dim: int = Field(ge=1)
    context: ContextEncoder
    score: str
    config: ItemScorerConfig
    k: int = Field(ge=1)
    beta: float = Field(ge=0.0)
    offset: float = Field(0.0, allow_inf_nan=False)
    unit: float = Field(1.0, gt=0.0, allow_inf_nan=False)


def _check_size(m: ItemScorerMeta, header: dict[str, list[int]], source: Path) -> None:
    """InputError naming the JSON unless the model its settings describe is the one the weights file
    declares: as many members, and one member's and the scorer's own shapes (built on the meta device:
    no memory), checked before the k members are built."""
    with torch.device("meta"):
        one = ItemScorer(m.slots, m.dim, m.context, m.score, m.config)
    want = {k: list(v.shape) for k, v in one.state_dict().items()}
    have = {k: v for k, v in header.items() if not k.startswith("members.") or k.startswith("members.0.")}
    check_ensemble_weights(m.k, want, have, header, source)


class ItemScorer(nn.Module):
    """An ensemble of k ItemNets over slates of item attribute vectors.

    forward(selected (N, S, D), ctx_cat (N, C_cat) long, ctx_num (N, C_num) float) returns mean - beta *
    std over members in working units: the standardised score, (score - offset) / unit with offset and
    unit the training rows' score mean and std (unlike Scorer, whose working units are the score's own
    wherever float32 holds them), so an objective built on it has scale 1; predict and to_score give
    float64 scores in the score's units. Item vectors are standardised by the buffers item_mean and
    item_std (D,), the training catalogue's, an affine map, so a relaxed selection x @ items with rows
    of x summing to 1 is standardised exactly as its items are. The buffers y_mean and y_std hold the
    score's training mean and std in working units (0 and 1), as Scorer's do.

    Many parameters (__init__): what the weights file's meta records (slots, item width, context,
    score name, config, k, beta, the score's mean and std), which load passes back in.
    """

    def __init__(self, slots: list[str], item_dim_in: int, context: ContextEncoder, score_name: str,
                 config: ItemScorerConfig, k: int = 1, beta: float = 0.0, y_mean: float = 0.0, y_std: float = 1.0):
        super().__init__()
        self.slots, self.dim, self.context, self.score_name, self.config = list(slots), int(item_dim_in), context, \
            score_name, config
        self.beta = float(beta)
        self.members = nn.ModuleList(
            ItemNet(len(slots), self.dim, context.cardinalities, len(context.numeric), config) for _ in range(k))
        self.register_buffer("item_mean", torch.zeros(self.dim))
        self.register_buffer("item_std", torch.ones(self.dim))
        if not (math.isfinite(y_mean) and math.isfinite(y_std) and y_std > 0):
            raise ValueError(f"y_mean and y_std must be finite and y_std positive, got {y_mean} and {y_std}")
        self.offset, self.unit = float(y_mean), float(y_std)
        self.register_buffer("y_mean", torch.tensor((float(y_mean) - self.offset) / self.unit))
        self.register_buffer("y_std", torch.tensor(float(y_std) / self.unit))

    def set_item_stats(self, vectors: torch.Tensor) -> None:
        """Standardise items by the per-attribute mean and std of vectors (M, D) (std 1 where constant)."""
        v = vectors.detach().double()
        std = v.std(0) if len(v) > 1 else torch.zeros(self.dim, dtype=torch.float64)
        self.item_mean.copy_(v.mean(0))
        self.item_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def standardise(self, selected: torch.Tensor) -> torch.Tensor:
        """(..., D) raw item vectors -> the standardised ones members take."""
        return (selected.to(self.item_mean.dtype) - self.item_mean) / self.item_std

    def to_score(self, values) -> np.ndarray:
        """Working-unit values (tensor or array) -> float64 scores in the score's own units."""
        return in_score_units(values, self.offset, self.unit)

    def member_scores(self, selected: torch.Tensor, ctx_cat=None, ctx_num=None) -> torch.Tensor:
        """(k, N) scores of each member, in working units."""
        if selected.dim() != 3 or tuple(selected.shape[1:]) != (len(self.slots), self.dim):
            raise InputError("selected", [f"expected item vectors of shape (N, {len(self.slots)}, {self.dim}) "
                                          f"(rows, slots, attributes), got {tuple(selected.shape)}"])
        items = self.standardise(selected)
        raw = torch.stack([m(items, ctx_cat, ctx_num) for m in self.members])
        return raw * self.y_std + self.y_mean

    def forward(self, selected: torch.Tensor, ctx_cat=None, ctx_num=None, beta: float | None = None) -> torch.Tensor:
        """(N,) score of slates selected (N, S, D); mean - beta * std over members, in working units."""
        scores = self.member_scores(selected, ctx_cat, ctx_num)
        beta = self.beta if beta is None else beta
        if len(self.members) == 1 or beta == 0:
            return scores.mean(0)
        return scores.mean(0) - beta * scores.std(0)

    @torch.no_grad()
    def predict(self, selected: torch.Tensor, ctx_cat: torch.Tensor, ctx_num: torch.Tensor,
                batch_size: int = 65536) -> torch.Tensor:
        """(N,) float64 scores of slates (N, S, D) in the score's own units, in batches on the scorer's device."""
        self.eval()
        dev = self.y_mean.device
        out = [self(selected[i:i + batch_size].to(dev), ctx_cat[i:i + batch_size].to(dev),
                    ctx_num[i:i + batch_size].to(dev)).cpu() for i in range(0, len(selected), batch_size)]
        return torch.from_numpy(self.to_score(torch.cat(out) if out else torch.zeros(0)))

    # --- persistence: safetensors + JSON -------------------------------------------------------
    def save(self, run_dir, name: str = "scorer") -> None:
        meta = {
            "kind": KIND,
            "slots": self.slots,
            "dim": self.dim,
            "context": self.context.model_dump(),
            "score": self.score_name,
            "config": self.config.model_dump(),
            "k": len(self.members),
            "beta": self.beta,
            "offset": self.offset,
            "unit": self.unit,
            "versions": versions(),
        }
        save_checkpoint(run_dir, name, self.state_dict(), meta)

    @classmethod
    def load(cls, run_dir, map_location: str | torch.device = "cpu", name: str = "scorer") -> ItemScorer:
        """The item scorer saved in RUN as NAME.{json,safetensors}; InputError naming either file when
        it is not an item scorer checkpoint (a table scorer's, say) or they do not match."""
        meta = read_meta(run_dir, name)
        source = Path(run_dir) / f"{name}.json"
        if meta.get("kind") != KIND:
            kind = meta.get("kind")
            table = " (a table scorer: choicegrad.Scorer.load reads it)" if kind == "choicegrad.Scorer" else ""
            raise InputError(str(source), [f"not a choicegrad item scorer checkpoint: its kind is "
                                           f"{kind!r}, not {KIND!r}{table}"])
        try:
            m = ItemScorerMeta.model_validate(meta)
            _check_size(m, weights_header(Path(run_dir) / f"{name}.safetensors"), source)
            model = cls(m.slots, m.dim, m.context, m.score, m.config, k=m.k, beta=m.beta)
        except (ValueError, RuntimeError, MemoryError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(str(source), [f"not a choicegrad item scorer checkpoint: {meta_problem(exc)}"]) from None
        model.offset, model.unit = m.offset, m.unit
        load_state(model, read_state(model, run_dir, name, meta), Path(run_dir) / f"{name}.safetensors")
        return model.to(map_location).eval()


def _check_log(vectors, slots_idx, ctx_cat, ctx_num, y, slots: list[str], context: ContextEncoder) -> None:
    """InputError naming the item log for every way its tensors do not fit together."""
    problems: list[str] = []
    S, C_cat, C_num = len(slots), len(context.cardinalities), len(context.numeric)
    if not S:
        problems.append("no slots")
    if vectors.dim() != 2 or not vectors.is_floating_point() or not len(vectors) or not vectors.shape[1]:
        problems.append(f"vectors: expected a non-empty (items, attributes) float tensor, got {vectors.dtype} "
                        f"{tuple(vectors.shape)}")
    elif not bool(torch.isfinite(vectors).all()):
        bad = torch.nonzero(~torch.isfinite(vectors).all(1)).squeeze(1).tolist()
        problems.append(f"vectors: {len(bad)} item(s) with attributes that are not finite numbers, e.g. item "
                        f"{', '.join(map(str, bad[:5]))} (indices into vectors)")
    R = len(slots_idx) if slots_idx.dim() else 0
    if slots_idx.dim() != 2 or slots_idx.shape[1] != S or slots_idx.is_floating_point():
        problems.append(f"slots_idx: expected a ({R}, {S}) integer tensor (one item per slot), got {slots_idx.dtype} "
                        f"{tuple(slots_idx.shape)}")
    elif vectors.dim() == 2 and R:
        out = torch.nonzero(((slots_idx < 0) | (slots_idx >= len(vectors))).any(1)).squeeze(1).numpy()
        if len(out):
            problems.append(f"slots_idx: item index outside 0..{len(vectors) - 1} at {show_rows(out)}")
    for name, t, cols in (("ctx_cat", ctx_cat, C_cat), ("ctx_num", ctx_num, C_num), ("y", y, None)):
        want = (R,) if cols is None else (R, cols)
        if tuple(t.shape) != want:
            problems.append(f"{name}: expected shape {want} (one per log row; the context encoder has {C_cat} "
                            f"categorical and {C_num} numeric columns), got {tuple(t.shape)}")
    if tuple(ctx_cat.shape) == (R, C_cat) and R and C_cat:
        size = torch.tensor(context.cardinalities)
        out = torch.nonzero(((ctx_cat < 0) | (ctx_cat >= size)).any(1)).squeeze(1).numpy()
        if len(out):
            problems.append(f"ctx_cat: category index outside the context encoder's at {show_rows(out)}")
    for name, t in (("ctx_num", ctx_num), ("y", y)):
        if t.shape[:1] == (R,) and t.is_floating_point():
            bad = torch.nonzero(~torch.isfinite(t.reshape(R, -1) if R else t).all(-1)).squeeze(1).numpy()
            if len(bad):
                problems.append(f"{name}: not a finite number at {show_rows(bad)}")
    if R < MIN_ROWS:
        problems.append(f"{R} row{'s' if R != 1 else ''} to fit a scorer on; at least {MIN_ROWS} are needed "
                        "(a tenth is held out for early stopping and a tenth for the test metrics)")
    if problems:
        raise InputError("item log", problems)


def _diverged(member: int, epoch: int, lr: float) -> InputError:
    return InputError("item scorer fit", [f"training diverged (member {member}, epoch {epoch}: the loss is not a "
                                          "finite number) before any finite validation loss; no scorer is made. Try "
                                          f"a lower learning rate than {lr:g}, or check the scale of the item "
                                          "attributes"])


def _predict_log(scorer: ItemScorer, vectors: torch.Tensor, slots_idx: torch.Tensor, ctx_cat: torch.Tensor,
                 ctx_num: torch.Tensor, chunk: int = 65536) -> np.ndarray:
    """(n,) float64 scores of log rows, their slates gathered a chunk at a time (never all at once)."""
    return np.concatenate([np.zeros(0)] + [
        scorer.predict(vectors[slots_idx[i:i + chunk]], ctx_cat[i:i + chunk], ctx_num[i:i + chunk], chunk).numpy()
        for i in range(0, len(slots_idx), chunk)])


def _report(scorer: ItemScorer, vectors, slots_idx, ctx_cat, ctx_num, y, rows: np.ndarray) -> dict:
    """Held-out regression metrics on log rows `rows`; InputError if any prediction is not finite."""
    pred = _predict_log(scorer, vectors, slots_idx[rows], ctx_cat[rows], ctx_num[rows])
    bad = np.flatnonzero(~np.isfinite(pred))
    if len(bad):
        raise InputError("item scorer fit", [f"the fitted scorer predicts {pred[bad[0]]} for held-out log "
                                             f"{show_rows(rows[bad])}: training diverged; try a lower learning rate"])
    cat = ctx_cat[rows].numpy()
    groups = np.unique(cat, axis=0, return_inverse=True)[1].reshape(-1) if cat.shape[1] else None
    return regression_report(y[rows].double().numpy(), pred, groups)


def fit_item_scorer(vectors: torch.Tensor, slots_idx: torch.Tensor, ctx_cat: torch.Tensor, ctx_num: torch.Tensor,
                    y: torch.Tensor, slots: list[str], context: ContextEncoder, score_name: str,
                    fit: ScorerFit | None = None, config: ItemScorerConfig | None = None,
                    progress: bool | None = None) -> ScorerResult:
    """Fit an ItemScorer on a log: row r chose item slots_idx[r, s] (an index into the catalogue
    vectors (M, D)) in slot s, in context (ctx_cat[r], ctx_num[r]) (encoded by `context`), and scored y[r].

    MSE on the standardised score (fit.loss "logistic": binary cross-entropy of 0/1 scores; fit.ranking
    adds the pairwise ranking loss), AdamW + OneCycle, early stopping on the validation loss, k members
    trained one after another from different initialisations. fit.model (the table scorer's
    architecture) is ignored: `config` gives this one. fit.epochs None: fit_scorer's (auto_epochs), but
    at most TINY_LOG_STEPS steps or CAP_EPOCHS epochs, whichever is more. fit.max_minutes: member m of
    k trains until (m + 1) / k of it has passed. Metrics are fit_scorer's (n, r2, spearman,
    spearman_per_context) on the validation and test rows; InputError when training diverges
    (non-finite losses before any finite validation loss, or predictions). Randomness: the fit's own
    generator and torch's global RNGs seeded with fit.seed inside (seeded_rng), the caller's untouched.
    Many parameters: the log's five tensors and what names them (slots, context, score), then the fit's settings."""
    start = time.perf_counter()
    fit, config = fit or ScorerFit(), config or ItemScorerConfig()
    vectors, slots_idx = torch.as_tensor(vectors).cpu(), torch.as_tensor(slots_idx).cpu()
    ctx_cat = torch.as_tensor(ctx_cat, dtype=torch.long).cpu()
    ctx_num, y = torch.as_tensor(ctx_num).cpu(), torch.as_tensor(y).cpu()
    _check_log(vectors, slots_idx, ctx_cat, ctx_num, y, slots, context)
    slots_idx = slots_idx.long()
    with seeded_rng(fit.seed, fit.device):        # member initialisation and dropout draw from it
        gen = torch.Generator().manual_seed(fit.seed)                  # batch order and ranking pairs
        device = torch.device(fit.device)
        train_idx, val_idx, test_idx = split_indices(len(y), fit.val_fraction, fit.test_fraction, fit.seed)
        y_mean, y_std = score_stats(y[train_idx]) if fit.loss == "mse" else (0.0, 1.0)  # logits as they are
        scorer = ItemScorer(slots, vectors.shape[1], context, score_name, config, k=fit.ensemble, beta=fit.beta,
                            y_mean=y_mean, y_std=y_std)
        scorer.set_item_stats(vectors)
        scorer.to(device)
        log = _DeviceLog(scorer.standardise(vectors.to(device)).detach(),   # (M, D): members take standardised items
                         slots_idx.to(device), ctx_cat.to(device), ctx_num.float().to(device),
                         ((y.double() - y_mean) / y_std).float().to(device), fit.loss)
        trainer = _MemberTrainer(log, torch.as_tensor(train_idx, device=device),
                                 torch.as_tensor(val_idx, device=device), fit, gen, start, progress)
        for m, member in enumerate(scorer.members):
            trainer.train(m, member)
        trainer.bar.close()
    scorer = scorer.eval().cpu()
    report = (vectors.cpu(), slots_idx, ctx_cat, ctx_num.float(), y)
    metrics = {"validation": _report(scorer, *report, val_idx)}
    if len(test_idx):
        metrics["test"] = _report(scorer, *report, test_idx)
    return ScorerResult(scorer, metrics, trainer.history, time.perf_counter() - start)


@dataclass
class _DeviceLog:
    """A log on the fit's device: standardised items (M, D), slots (N, S) long, ctx_cat (N, C_cat)
    long, ctx_num (N, C_num) float, the standardised target (N,) float, and the fit's loss name."""

    items: torch.Tensor
    idx: torch.Tensor
    cat: torch.Tensor
    num: torch.Tensor
    target: torch.Tensor
    loss_name: str

    def predict(self, member: ItemNet, rows: torch.Tensor) -> torch.Tensor:
        """(b,) member predictions for the log's rows (b,)."""
        return member(self.items[self.idx[rows]], self.cat[rows], self.num[rows])

    def loss(self, pred: torch.Tensor, t: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.loss_name == "logistic":
            return nn.functional.binary_cross_entropy_with_logits(pred, t, reduction=reduction)
        return nn.functional.mse_loss(pred, t, reduction=reduction)


class _MemberTrainer:
    """Trains the members of one fit_item_scorer fit one after another: its schedule (batch size,
    epochs, patience, time budget), progress bar and history of per-epoch losses."""

    def __init__(self, log: _DeviceLog, train_t: torch.Tensor, val_t: torch.Tensor, fit: ScorerFit,
                 gen: torch.Generator, start: float, progress: bool | None):
        self.log, self.train_t, self.val_t, self.fit, self.gen, self.start = log, train_t, val_t, fit, gen, start
        self.n_train = n_train = len(train_t)
        self.batch_size = auto_batch_size(n_train, fit.batch_size)
        self.steps_per_epoch = math.ceil(n_train / self.batch_size)
        self.epochs = fit.epochs or min(auto_epochs(n_train),
                                        max(CAP_EPOCHS, math.ceil(TINY_LOG_STEPS / self.steps_per_epoch)))
        self.patience = max(fit.patience, math.ceil(PATIENCE_STEPS / self.steps_per_epoch))
        self.budget = 60 * fit.max_minutes if fit.max_minutes else math.inf
        self.history: list[dict[str, float]] = []
        self.bar = progress_bar(fit.ensemble * self.epochs, "fit item scorer", "epoch", progress)

    @torch.no_grad()
    def val_loss(self, member: ItemNet) -> float:
        member.eval()
        total = sum(float(self.log.loss(self.log.predict(member, b), self.log.target[b], "sum"))
                    for b in self.val_t.split(65536))
        member.train()
        return total / len(self.val_t)

    def train(self, m: int, member: ItemNet) -> None:
        """Train member m with early stopping, leaving it at its best epoch's weights. With a time
        limit its one-cycle schedule follows its pace (Pace), ending annealed by its deadline."""
        fit, epochs = self.fit, self.epochs
        opt = torch.optim.AdamW(member.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
        self.sched, self.pace = one_cycle(opt, fit.lr, epochs * self.steps_per_epoch), Pace()
        best, best_state, bad = math.inf, None, 0
        deadline = self.budget * (m + 1) / fit.ensemble
        member.train()
        for epoch in range(epochs):
            train_loss, late = self.epoch(member, opt, deadline)
            vl = self.val_loss(member)
            self.history.append({"member": m, "epoch": epoch, "train_loss": train_loss, "val_mse": vl})
            self.bar.update(1)
            self.bar.set_postfix(member=m, train=f"{train_loss:.4f}", val=f"{vl:.4f}")
            if not (math.isfinite(vl) and math.isfinite(train_loss)):
                if best_state is None:
                    self.bar.close()
                    raise _diverged(m, epoch, fit.lr)
                break           # the weights went bad: keep the best epoch's
            if vl < best - 1e-5:
                best, bad = vl, 0
                best_state = {k: v.detach().clone() for k, v in member.state_dict().items()}
            else:
                bad += 1
            if bad >= self.patience or late:
                break
        self.bar.update(epochs - 1 - epoch)
        if best_state is not None:
            member.load_state_dict(best_state)

    def epoch(self, member: ItemNet, opt, deadline: float) -> tuple[float, bool]:
        """One pass over the training rows in a fresh order -> (mean training loss, whether the
        member's deadline passed or its schedule ended, ending the pass early)."""
        log, fit = self.log, self.fit
        order = self.train_t[torch.randperm(self.n_train, generator=self.gen).to(self.train_t.device)]
        seen = 0.0
        for b in order.split(self.batch_size):
            pred = log.predict(member, b)
            loss = log.loss(pred, log.target[b])
            if fit.ranking:
                loss = loss + fit.ranking * ranking_loss(pred, log.target[b], self.gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.sched.step()
            seen += float(loss.detach()) * len(b)
            elapsed = self.elapsed()
            fits = self.pace.length(self.sched, self.epochs * self.steps_per_epoch, deadline, elapsed)
            if fits is not None:
                self.sched = one_cycle(opt, fit.lr, fits, at=self.sched.last_epoch)
            if elapsed > deadline or self.sched.last_epoch >= self.sched.total_steps:
                return seen / self.n_train, True
        return seen / self.n_train, False

    def elapsed(self) -> float:
        """Seconds since the fit began."""
        return time.perf_counter() - self.start
