"""The scorer: f(context, row) -> score, for hard rows (indices) and soft rows (probabilities).

A soft row is one probability vector per slot; it is looked up as `probs @ table`, the same function
as a one-hot linear layer, so a one-hot row gives exactly the hard lookup and gradients flow from the
score back to a generator's probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field
from torch import nn

from choicegrad.data.context import ContextEncoder
from choicegrad.data.space import ChoiceSpace
from choicegrad.errors import InputError
from choicegrad.io import load_state, meta_problem, read_meta, read_state, save_checkpoint, versions, weights_header


PAIR_PARAMS = 4_000_000
PAIR_ROWS_PER_CELL = 100


def pair_rank(config: "ScorerConfig", sizes: list[int], rows: int | None = None) -> int:
    """The context rank of the pairwise term for this space: config.pairwise, or automatically 8 when
    its tables hold at most PAIR_PARAMS numbers and (when the training `rows` are known) there are at
    least PAIR_ROWS_PER_CELL rows per V_max^2 pair of categories, else 0 (too few rows per cell overfit)."""
    if config.pairwise is not None:
        return config.pairwise
    S, V = len(sizes), max(sizes)
    enough = rows is None or rows >= PAIR_ROWS_PER_CELL * V * V
    return 8 if enough and 9 * S * S * V * V <= PAIR_PARAMS else 0


class ScorerConfig(BaseModel):
    """Architecture of one EmbeddingScorer."""

    embed_dim: int = Field(16, ge=1, description="embedding size per slot category")
    context_dim: int = Field(16, ge=1, description="embedding size per categorical context column")
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pairwise: int | None = Field(None, ge=0, description="add a pairwise term: a table per slot pair, mixed per "
                                 "context from 1 + this many context-dependent tables (0 = off; None = 8 when the "
                                 f"tables hold at most {PAIR_PARAMS:,} numbers and, in fit_scorer, the training "
                                 f"rows number at least {PAIR_ROWS_PER_CELL} per pair of categories, else off)")


class EmbeddingScorer(nn.Module):
    """Per-slot embedding tables + encoded context -> MLP -> one score (the users' EstimatorNet).

    Slot s has categories 0..V_s-1 in a padded table (S, V_max, E); a row index of -1 (missing) uses a
    learned per-slot "missing" embedding. Outputs are in standardised units; `Scorer` maps them back.
    """

    def __init__(self, sizes: list[int], context_sizes: list[int], num_numeric: int, config: ScorerConfig):
        super().__init__()
        self.config = config
        S, V, E = len(sizes), max(sizes), config.embed_dim
        self.register_buffer("mask", torch.arange(V)[None, :] < torch.tensor(sizes)[:, None], persistent=False)
        self.table = nn.Parameter(torch.randn(S, V, E) * 0.3 * self.mask[..., None])
        self.missing = nn.Parameter(torch.zeros(S, E))
        self.context_tables = nn.ModuleList(nn.Embedding(c, config.context_dim) for c in context_sizes)
        dims = [S * E + len(context_sizes) * config.context_dim + num_numeric, *config.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(dims[-1], 1)
        self.pair_rank = pair_rank(config, sizes)
        if self.pair_rank:
            # score += sum_{s<t} sum_r g_r(context) W_r[s, t, x_s, x_t], g = (1, linear(context features)):
            # second-order interactions explicitly, which an MLP on embeddings learns only approximately
            R = 1 + (self.pair_rank if dims[0] > S * E else 0)
            pair_mask = (torch.triu(torch.ones(S, S), diagonal=1)[:, :, None, None]
                         * (self.mask[:, None, :, None] & self.mask[None, :, None, :]))
            self.register_buffer("pair_mask", pair_mask, persistent=False)
            self.pair = nn.Parameter(torch.zeros(R, S, S, V, V))
            self.pair_gate = nn.Linear(dims[0] - S * E, R - 1) if R > 1 else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S) long indices (-1 = missing) or (B, S, V_max) probabilities -> (B, S, E)."""
        if x.dtype in (torch.int64, torch.int32):
            S, V = self.table.shape[:2]
            # an embedding lookup, not table[s, x]: its CPU backward sums each row's gradients in one
            # order whatever the threads (advanced indexing's scatter-add does not), so fits repeat.
            # Hard rows never index the padding, so the table is used unmasked (the mask's product
            # copies all S x V_max x E numbers: most of a wide table's scoring time)
            e = nn.functional.embedding(x.clamp(min=0) + V * torch.arange(S, device=x.device), self.table.flatten(0, 1))
            return torch.where((x < 0)[..., None], self.missing.to(e.dtype), e)
        table = self.table * self.mask[..., None]  # padding contributes nothing, even under soft input
        return torch.einsum("bsv,sve->bse", x.to(table.dtype), table)

    def context_features(self, ctx_cat: torch.Tensor | None, ctx_num: torch.Tensor | None, like: torch.Tensor) -> list[torch.Tensor]:
        """The encoded context, as a list of (B, D_j) parts (empty without context columns)."""
        parts = [t(ctx_cat[:, j]) for j, t in enumerate(self.context_tables)]
        if ctx_num is not None and ctx_num.shape[-1]:
            parts.append(ctx_num.to(like.dtype))
        return parts

    def latent(self, x: torch.Tensor, ctx_cat: torch.Tensor | None = None, ctx_num: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden layer, (B, H). ctx_cat: (B, C_cat) long; ctx_num: (B, C_num) float."""
        e = self.embed(x).flatten(1)
        return self.body(torch.cat([e, *self.context_features(ctx_cat, ctx_num, e)], dim=1))

    def pair_term(self, x: torch.Tensor, ctx_cat: torch.Tensor | None = None, ctx_num: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) the pairwise term: hard rows (B, S) are one-hot, soft rows (B, S, V_max) used as they are."""
        if x.is_floating_point():
            p = x.to(self.pair.dtype)
        else:  # one-hot; a missing slot (-1) takes part in no pair
            p = nn.functional.one_hot(x.clamp(min=0), self.mask.shape[1]).to(self.pair.dtype) * (x >= 0)[..., None]
        W = self.pair * self.pair_mask
        q = torch.einsum("bsv,rstvw->brtw", p, W)                                # (B, R, S, V)
        per_r = torch.einsum("brtw,btw->br", q, p)                               # (B, R)
        gate = torch.ones_like(per_r[:, :1])
        if self.pair_gate is not None:
            gate = torch.cat([gate, self.pair_gate(torch.cat(self.context_features(ctx_cat, ctx_num, per_r), 1))], 1)
        return (per_r * gate).sum(1)

    def forward(self, x: torch.Tensor, ctx_cat: torch.Tensor | None = None, ctx_num: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) standardised score."""
        out = self.head(self.latent(x, ctx_cat, ctx_num)).squeeze(-1)
        return out + self.pair_term(x, ctx_cat, ctx_num) if self.pair_rank else out


def working_units(y_mean: float, y_std: float) -> tuple[float, float]:
    """(offset, unit) of the float32 scores a Scorer computes with: (score - offset) / unit.

    (0, 1), the score's own units, wherever float32 resolves the scores (std within 1e-20..1e20 and
    |mean| at most 1e4 std); else (mean, std): standardised, so scores of any size a float64 holds
    (1e300, 1e-45, 1e9 +- 1) keep their order and spread."""
    if 1e-20 <= y_std <= 1e20 and abs(y_mean) <= 1e4 * y_std:
        return 0.0, 1.0
    return float(y_mean), float(y_std)


class ScorerMeta(BaseModel):
    """What scorer.json must hold to rebuild a Scorer (other fields, e.g. versions, are ignored)."""

    space: ChoiceSpace
    context: ContextEncoder
    score: str
    config: ScorerConfig
    k: int = Field(ge=1)
    beta: float = Field(ge=0.0)
    offset: float = Field(0.0, allow_inf_nan=False)
    unit: float = Field(1.0, gt=0.0, allow_inf_nan=False)


def _check_size(m: ScorerMeta, header: dict[str, list[int]], source: Path) -> None:
    """InputError naming scorer.json unless the model its settings describe is the one the weights file
    declares: as many members, and one member's shapes (built on the meta device: no memory), checked
    before the k members are built."""
    held = {int(k.split(".")[1]) for k in header if k.startswith("members.") and k.split(".")[1].isdigit()}
    if len(held) != m.k:
        raise InputError(str(source), [f"k: {m.k} ensemble members, but the weights beside it hold {len(held)}; the two "
                                       "files do not belong together"])
    config = m.config
    if config.pairwise is None:
        config = config.model_copy(update={"pairwise": pair_rank(config, m.space.sizes)})
    with torch.device("meta"):
        member = EmbeddingScorer(m.space.sizes, m.context.cardinalities, len(m.context.numeric), config)
    want = {f"members.0.{k}": list(v.shape) for k, v in member.state_dict().items()}
    have = {k: v for k, v in header.items() if k.startswith("members.0.")}
    if want != have:
        wrong = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        raise InputError(str(source), [f"its settings describe other weights than the file beside it holds ({wrong[0]}: "
                                       f"{want.get(wrong[0])} against {have.get(wrong[0])}); the two files do not "
                                       "belong together"])


class Scorer(nn.Module):
    """An ensemble of k EmbeddingScorers with the table schema they were fitted on.

    forward returns mean - beta * std over members in working units, (score - offset) / unit (see
    working_units: the score's own units unless float32 cannot hold them); predict returns float64
    scores in the score's units. beta > 0 is the "pessimistic" score: generators exploit scorer
    errors, pessimism keeps them where members agree. The buffers y_mean and y_std hold the score's
    training mean and std in working units.
    """

    def __init__(self, space: ChoiceSpace, context: ContextEncoder, score_name: str,
                 config: ScorerConfig, k: int = 1, beta: float = 0.0,
                 y_mean: float = 0.0, y_std: float = 1.0):
        super().__init__()
        if config.pairwise is None:  # resolve "automatic" now, so the saved config rebuilds the same model
            config = config.model_copy(update={"pairwise": pair_rank(config, space.sizes)})
        self.space, self.context, self.score_name, self.config = space, context, score_name, config
        self.beta = float(beta)
        self.members = nn.ModuleList(
            EmbeddingScorer(space.sizes, context.cardinalities, len(context.numeric), config) for _ in range(k)
        )
        self.offset, self.unit = working_units(float(y_mean), float(y_std))
        self.register_buffer("y_mean", torch.tensor((float(y_mean) - self.offset) / self.unit))
        self.register_buffer("y_std", torch.tensor(float(y_std) / self.unit))

    def to_score(self, values) -> np.ndarray:
        """Working-unit values (tensor or array) -> float64 scores in the score's own units."""
        v = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float64)
        return v * self.unit + self.offset

    def member_scores(self, x, ctx_cat=None, ctx_num=None) -> torch.Tensor:
        """(k, B) scores of each member, in working units."""
        raw = torch.stack([m(x, ctx_cat, ctx_num) for m in self.members])
        return raw * self.y_std + self.y_mean

    def forward(self, x, ctx_cat=None, ctx_num=None, beta: float | None = None) -> torch.Tensor:
        """(B,) score of hard rows (B, S) or soft rows (B, S, V_max); mean - beta * std over members."""
        scores = self.member_scores(x, ctx_cat, ctx_num)
        beta = self.beta if beta is None else beta
        if len(self.members) == 1 or beta == 0:
            return scores.mean(0)
        return scores.mean(0) - beta * scores.std(0)

    def latent(self, x, ctx_cat=None, ctx_num=None) -> torch.Tensor:
        """(B, k * H): members' last hidden layers, concatenated."""
        return torch.cat([m.latent(x, ctx_cat, ctx_num) for m in self.members], dim=1)

    @torch.no_grad()
    def predict(self, rows: torch.Tensor, ctx_cat: torch.Tensor, ctx_num: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
        """(N,) float64 scores of hard rows in the score's own units, in batches on the scorer's device."""
        self.eval()
        dev = self.y_mean.device
        out = [self(rows[i:i + batch_size].to(dev), ctx_cat[i:i + batch_size].to(dev), ctx_num[i:i + batch_size].to(dev)).cpu()
               for i in range(0, len(rows), batch_size)]
        return torch.from_numpy(self.to_score(torch.cat(out) if out else torch.zeros(0)))

    def predict_frame(self, frame: pd.DataFrame, source: str = "rows", unknown: str = "error") -> np.ndarray:
        """Score the rows of a table (feature and context columns by name).

        Unknown feature categories raise, unless unknown="missing" scores them as missing slots."""
        problems: list[str] = []
        rows = ctx = None
        try:
            rows = self.space.encode(frame, source, unknown=unknown)
        except InputError as exc:
            problems += exc.problems
        try:
            ctx = self.context.encode(frame, source)
        except InputError as exc:
            problems += exc.problems
        if problems:
            raise InputError(source, problems)
        return self.predict(rows, *ctx).numpy()

    # --- persistence: safetensors + JSON -------------------------------------------------------
    def save(self, run_dir, name: str = "scorer") -> None:
        meta = {
            "kind": "choicegrad.Scorer",
            "space": self.space.model_dump(),
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
    def load(cls, run_dir, map_location: str | torch.device = "cpu", name: str = "scorer") -> Scorer:
        """The scorer saved in RUN as NAME.{json,safetensors}; InputError naming either file when it
        is not a scorer checkpoint or they do not match."""
        meta = read_meta(run_dir, name)
        if isinstance(meta.get("config"), dict):
            meta["config"] = {"pairwise": 0, **meta["config"]}   # written before the pairwise term existed
        try:
            m = ScorerMeta.model_validate(meta)
            _check_size(m, weights_header(Path(run_dir) / f"{name}.safetensors"), Path(run_dir) / f"{name}.json")
            model = cls(m.space, m.context, m.score, m.config, k=m.k, beta=m.beta)
        except (ValueError, RuntimeError, MemoryError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(str(Path(run_dir) / f"{name}.json"), [f"not a choicegrad scorer checkpoint: {meta_problem(exc)}"]) from None
        model.offset, model.unit = m.offset, m.unit
        load_state(model, read_state(model, run_dir, name, meta), Path(run_dir) / f"{name}.safetensors")
        return model.to(map_location).eval()
