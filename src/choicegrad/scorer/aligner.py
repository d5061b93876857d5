"""Aligner: a learned behavioural similarity between rows, in the scorer's latent space.

    aligner = fit_aligner(scorer, table, AlignerFit(steps=1000)).aligner
    z = aligner.embed(rows, ctx_cat, ctx_num)          # (N, D), unit length; rows hard or soft
    cos = aligner.similarity(a, b, ctx_cat, ctx_num)   # (N,) in [-1, 1]

One swapped category can turn a good row into a bad one, so "how many categories match" (Hamming,
per-feature cross-entropy) is the wrong distance between rows. The aligner is a projection head on
`scorer.latent` trained so that the cosine of two rows of the same context tracks how alike their
scores are. Training batches hold G contexts x R rows each: data rows (their measured scores) and
single-slot edits of them (scored as the data row plus the scorer's predicted change), so
single-swap pairs are in every batch. The loss is a soft-target contrastive loss with in-batch
negatives: for row i, softmax_j(cos(z_i, z_j) / temperature) over the other rows j of its context
is matched (cross-entropy) to p_ij ~ exp(-|y_i - y_j| / bandwidth), y in score standard deviations.
Soft rows (N, S, V) go through the scorer's soft lookup, so gradients reach a generator's choices.
The scorer is frozen unless `finetune`; then its weights are saved with the aligner.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from choicegrad.checkpoints import seeded_rng
from choicegrad.decoding.rows import change_one_slot
from choicegrad.progress import progress_bar


class AlignerFit(BaseModel):
    """How to build and train an aligner. Stored with it."""

    model_config = ConfigDict(allow_inf_nan=False)  # an inf or NaN setting would train to NaN weights

    dim: int = Field(32, ge=2, description="aligner space dimension")
    hidden: int = Field(128, ge=1, description="width of the projection head's hidden layer")
    temperature: float = Field(0.1, gt=0, description="contrastive softmax temperature")
    bandwidth: float = Field(0.25, gt=0, description="score difference (in score stds) at which targets fall by e")
    edits: float = Field(0.5, ge=0, lt=1, description="share of each context's batch rows that are single-slot edits")
    finetune: bool = Field(False, description="also train the scorer's weights (saved with the aligner)")
    steps: int = Field(1000, ge=0)
    contexts_per_batch: int = Field(8, ge=1)
    rows_per_context: int = Field(32, ge=4)
    lr: float = Field(2e-3, gt=0)
    seed: int = Field(0, ge=0, lt=2**63, description="random seed (torch takes 0 <= seed < 2**63)")
    max_minutes: Optional[float] = Field(None, gt=0)


class Aligner(nn.Module):
    """Projection head over scorer.latent: rows -> unit vectors whose cosine tracks behaviour."""

    def __init__(self, scorer, config: Optional[AlignerFit] = None):
        super().__init__()
        self.config = config or AlignerFit()
        self.scorer = scorer
        latent = sum(m.config.hidden[-1] for m in scorer.members)
        self.head = nn.Sequential(nn.Linear(latent, self.config.hidden), nn.SiLU(),
                                  nn.Linear(self.config.hidden, self.config.dim))
        if not self.config.finetune:
            scorer.requires_grad_(False)

    def embed(self, x: Tensor, ctx_cat: Optional[Tensor] = None, ctx_num: Optional[Tensor] = None) -> Tensor:
        """(N, S) long rows or (N, S, V) soft rows -> (N, D) unit vectors (differentiable in soft x)."""
        return F.normalize(self.head(self.scorer.latent(x, ctx_cat, ctx_num)), dim=-1)

    def similarity(self, a: Tensor, b: Tensor, ctx_cat: Optional[Tensor] = None,
                   ctx_num: Optional[Tensor] = None) -> Tensor:
        """(N,) cosine of rows a and b (each (N, S) or (N, S, V)) in the same contexts."""
        return (self.embed(a, ctx_cat, ctx_num) * self.embed(b, ctx_cat, ctx_num)).sum(-1)

    def save(self, run_dir) -> None:
        """RUN/aligner.safetensors + RUN/aligner.json (the head; the scorer too when fine-tuned)."""
        from choicegrad import io as checkpoint

        state = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        if self.config.finetune:
            state.update({f"scorer.{k}": v for k, v in self.scorer.state_dict().items()})
        checkpoint.save_checkpoint(run_dir, "aligner", state, {"kind": "choicegrad.Aligner", "config": self.config.model_dump(),
                                                    "versions": checkpoint.versions()})

    @classmethod
    def load(cls, run_dir, scorer, map_location="cpu") -> "Aligner":
        """The aligner saved in RUN over `scorer` (the run's scorer; replaced by its fine-tuned copy)."""
        from choicegrad import io as checkpoint
        from choicegrad.errors import InputError

        meta = checkpoint.read_meta(run_dir, "aligner")
        try:
            config = AlignerFit.model_validate(meta["config"])
            latent = sum(m.config.hidden[-1] for m in scorer.members)      # the head's shapes, before it is built
            head = {"head.0.weight": [config.hidden, latent], "head.0.bias": [config.hidden],
                    "head.2.weight": [config.dim, config.hidden], "head.2.bias": [config.dim]}
            held = checkpoint.weights_header(Path(run_dir) / "aligner.safetensors")
            if any(held.get(k) != v for k, v in head.items()):
                raise InputError(str(Path(run_dir) / "aligner.json"), [
                    "its settings describe another projection head than the weights beside it hold; the two files "
                    "do not belong together"])
            model = cls(scorer, config)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{Path(run_dir) / 'aligner.json'}",
                             [f"not a choicegrad aligner checkpoint: {checkpoint.meta_problem(exc)}"]) from None
        weights = Path(run_dir) / "aligner.safetensors"
        expect = {f"head.{k}": v.shape for k, v in model.head.state_dict().items()}
        if config.finetune:
            expect.update({f"scorer.{k}": v.shape for k, v in scorer.state_dict().items()})
        state = checkpoint.read_weights(weights, expect, checkpoint.weights_digest(meta, run_dir, "aligner"))
        checkpoint.load_state(model.head, {k[5:]: v for k, v in state.items() if k.startswith("head.")}, weights)
        if config.finetune:
            checkpoint.load_state(scorer, {k[7:]: v for k, v in state.items() if k.startswith("scorer.")}, weights)
        return model.to(map_location).eval()


def soft_contrastive_loss(z: Tensor, y: Tensor, group: Tensor, temperature: float, bandwidth: float) -> Tensor:
    """z (N, D) unit vectors, y (N,) scores (score-std units), group (N,) context of each row.

    Mean over rows of the cross-entropy between p_ij ~ exp(-|y_i - y_j| / bandwidth) and
    softmax_j(z_i . z_j / temperature), j over the other rows of the same group."""
    same = (group[:, None] == group[None, :]) & ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(~same, float("-inf"))
    target = torch.softmax((-(y[:, None] - y[None, :]).abs() / bandwidth).masked_fill(~same, float("-inf")), 1)
    has = same.any(1)
    logp = torch.log_softmax(logits[has], 1).masked_fill(~same[has], 0.0)
    return -(target[has] * logp).sum(1).mean()


def single_edits(rows: Tensor, sizes: Tensor, generator: torch.Generator) -> Tensor:
    """Each row (N, S) with one random slot changed to a different random category of that slot
    (sizes (S,): categories per slot; decoding.rows.change_one_slot)."""
    allowed = torch.arange(int(sizes.max()), device=rows.device) < sizes.to(rows.device)[:, None]   # (S, V)
    return change_one_slot(rows.unsqueeze(0), allowed.unsqueeze(0), generator)[0]


@dataclass
class AlignerResult:
    aligner: Aligner
    history: list[dict[str, float]]
    seconds: float


def fit_aligner(scorer, data, fit: Optional[AlignerFit] = None, progress: Optional[bool] = None) -> AlignerResult:
    """Train an aligner over `scorer` on the rows of `data` (TableData), see the module docstring.
    Its draws come from its own generator, and the head's initialisation (and the scorer's dropout,
    when fine-tuned) from torch's global RNG seeded with fit.seed inside (seeded_rng): the caller's
    global state is left as it was."""
    fit = fit or AlignerFit()
    device = next(iter(scorer.parameters()), torch.empty(0)).device
    with seeded_rng(fit.seed, device):
        return _fit_aligner(scorer, data, fit, progress)


def _fit_aligner(scorer, data, fit: AlignerFit, progress: Optional[bool]) -> AlignerResult:
    start = time.perf_counter()
    deadline = start + 60 * fit.max_minutes if fit.max_minutes else math.inf
    rng = torch.Generator().manual_seed(fit.seed)
    aligner = Aligner(scorer, fit)
    scorer.eval()
    params = list(aligner.head.parameters()) + (list(scorer.parameters()) if fit.finetune else [])
    opt = torch.optim.Adam(params, lr=fit.lr)
    groups = torch.as_tensor(data.context_groups(), dtype=torch.long)
    order = torch.argsort(groups, stable=True)
    counts = torch.bincount(groups)
    starts = torch.cumsum(counts, 0) - counts
    usable = torch.nonzero(counts >= 2).flatten()
    if len(usable) == 0:
        raise ValueError("fit_aligner needs a context with at least 2 rows")
    sizes = torch.tensor(scorer.space.sizes)
    y_std = float(scorer.y_std) or 1.0
    G, R = fit.contexts_per_batch, fit.rows_per_context
    n_edit = int(round(fit.edits * R))
    history: list[dict[str, float]] = []
    bar = progress_bar(fit.steps, "fit aligner", "step", progress)
    aligner.train()
    for step in range(fit.steps):
        g = usable[torch.randint(len(usable), (G,), generator=rng)]                           # (G,)
        off = (torch.rand(G, R - n_edit, generator=rng) * counts[g, None]).long()
        idx = order[starts[g, None] + off].flatten()                                         # data rows
        rows, cat, num = data.rows[idx], data.ctx_cat[idx], data.ctx_num[idx]
        y = ((data.y[idx] - scorer.offset) / (scorer.unit * y_std)).float()   # the scorer's working units, in stds
        grp = g.repeat_interleave(R - n_edit)
        if n_edit:
            pick = torch.randint(R - n_edit, (G, n_edit), generator=rng) + (torch.arange(G) * (R - n_edit))[:, None]
            base = pick.flatten()
            edited = single_edits(rows[base], sizes, rng)
            with torch.no_grad():
                delta = (scorer(edited, cat[base], num[base]) - scorer(rows[base], cat[base], num[base])) / y_std
            rows = torch.cat([rows, edited])
            cat, num = torch.cat([cat, cat[base]]), torch.cat([num, num[base]])
            y, grp = torch.cat([y, y[base] + delta]), torch.cat([grp, grp[base]])
        z = aligner.embed(rows, cat, num)
        loss = soft_contrastive_loss(z, y, grp, fit.temperature, fit.bandwidth)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"step": step, "loss": float(loss.detach())})
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean([h['loss'] for h in history[-20:]]):.4f}")
        if time.perf_counter() > deadline:
            break
    bar.close()
    aligner.eval()
    return AlignerResult(aligner, history, time.perf_counter() - start)
