"""The scorer: f(context, row) -> score, for hard rows (indices) and soft rows (probabilities).

A soft row is one probability vector per slot; it is looked up as `probs @ table`, the same function
as a one-hot linear layer, so a one-hot row gives exactly the hard lookup and gradients flow from the
score back to a generator's probabilities.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field
from torch import nn

from choicegrad.data.context import ContextEncoder
from choicegrad.data.space import ChoiceSpace
from choicegrad.errors import InputError, show_rows
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


ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}


class ScorerConfig(BaseModel):
    """Architecture of one EmbeddingScorer."""

    embed_dim: int = Field(16, ge=1, description="embedding size per slot category")
    context_dim: int = Field(16, ge=1, description="embedding size per categorical context column")
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    activation: Literal["silu", "relu", "leaky_relu"] = Field(
        "silu", description="of the hidden layers: silu is smooth; relu and leaky_relu are piecewise linear, and "
        "with keep='last' in ScorerFit reach further into a table's unseen upper tail (docs/targets.md, tfbind8)")
    pairwise: int | None = Field(None, ge=0, description="add a pairwise term: a table per slot pair, mixed per "
                                 "context from 1 + this many context-dependent tables (0 = off; None = 8 when the "
                                 f"tables hold at most {PAIR_PARAMS:,} numbers and, in fit_scorer, the training "
                                 f"rows number at least {PAIR_ROWS_PER_CELL} per pair of categories, else off)")
    missing: Literal["marginal", "embedding"] = Field(
        "marginal", description="a row's missing slots (-1): 'marginal' scores the row as the mean of its completions' "
        "scores, each missing slot's categories weighted by their share of the training rows (fit and predict alike; "
        "see completions); 'embedding' uses a learned per-slot missing embedding instead (scorers written before "
        "this option; worse than dropping partial training rows, docs/choosing.md)")
    completions: int = Field(16, ge=1, description="marginal: a row whose missing slots have at most this many joint "
                             "completions is scored (and fitted) over all of them exactly; one with more over this "
                             "many stratified draws")


def category_counts(rows: torch.Tensor, max_size: int) -> torch.Tensor:
    """(S, V_max) float64 count of each slot's categories among rows (N, S) long (-1 = missing: not counted)."""
    S = rows.shape[1]
    seen = rows >= 0
    flat = (rows + max_size * torch.arange(S, device=rows.device))[seen]
    return torch.bincount(flat, minlength=S * max_size).reshape(S, max_size).double()


def completions(rows: torch.Tensor, probs: torch.Tensor, sizes: torch.Tensor, limit: int,
                random: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The completions of partial rows over their missing slots, and their weights.

    rows (P, S) long, -1 = missing; probs (S, V_max) each slot's category probabilities (rows sum to 1);
    sizes (S,) long categories per slot. -> (filled (P, C, S) long, weights (P, C), each row's summing
    to 1, exact (P,) bool: the row's completions are all of them). A row whose missing slots have at
    most `limit` joint completions gets every one of them,
    weighted by the product of their categories' probabilities (weight 0 pads it to C); a row with more
    gets C = limit draws of weight 1/C, stratified per slot (Latin hypercube over the inverse CDF),
    randomised when `random` (training: torch's global RNG), else fixed (predictions repeat).
    C = min(limit, the most completions of any row).
    """
    P, S = rows.shape
    V = probs.shape[1]
    dev = rows.device
    miss = rows < 0
    radix = torch.where(miss, sizes[None, :].to(dev), torch.ones_like(rows))       # (P, S)
    total = radix.double().prod(1)                                                 # inf beyond float64: sampled
    C = int(min(limit, float(total.max()))) if P else 1
    exact = total <= limit                                                         # (P,)
    j = torch.arange(C, device=dev)
    # enumerated: completion j's digit in each missing slot, in mixed radix (strides clamped: only
    # exact rows use them, whose strides are at most `limit`)
    stride = (torch.cumprod(radix.double(), 1) / radix).clamp(max=limit + 1).long()
    digit = (j[None, :, None] // stride[:, None, :]) % radix[:, None, :]           # (P, C, S)
    p = probs.to(torch.float64).flatten()
    slot = torch.arange(S, device=dev) * V
    one = torch.ones((), dtype=p.dtype, device=dev)
    w_exact = torch.where(miss[:, None, :], p[(digit + slot).clamp(max=S * V - 1)], one)
    w_exact = w_exact.prod(-1) * (j[None, :] < total[:, None])                     # (P, C)
    w_exact = w_exact / w_exact.sum(1, keepdim=True).clamp(min=1e-300)
    # drawn: per slot, C strata of [0, 1), each row's slots paired at random, read through the CDF
    if random:
        strata = torch.argsort(torch.rand(P, C, S, device=dev), dim=1)
        u = (strata + torch.rand(P, C, S, device=dev)) / C
    else:
        strata = torch.argsort(torch.rand(C, S, generator=torch.Generator().manual_seed(0)), dim=0).to(dev)
        u = ((strata + 0.5) / C).expand(P, C, S)
    cdf = probs.to(torch.float64).cumsum(1)
    cdf = (cdf / cdf[:, -1:].clamp(min=1e-300) + torch.arange(S, device=dev, dtype=torch.float64)[:, None]).flatten()
    cdf[S * V - 1] = S + 1.0            # u + s < S: never past the last slot's end
    at = torch.searchsorted(cdf, u.double() + torch.arange(S, device=dev, dtype=torch.float64), right=True)
    drawn = (at - slot).clamp(min=0, max=V - 1)
    fill = torch.where(exact[:, None, None], digit, drawn)
    filled = torch.where(miss[:, None, :], fill, rows[:, None, :])
    weights = torch.where(exact[:, None], w_exact, torch.full_like(w_exact, 1.0 / C))
    return filled, weights.float(), exact


class EmbeddingScorer(nn.Module):
    """Per-slot embedding tables + encoded context -> MLP -> one score (the users' EstimatorNet).

    Slot s has categories 0..V_s-1 in a padded table (S, V_max, E). A row index of -1 (missing):
    with config.missing "marginal" (default) the row's score is the mean of its completions' scores,
    the missing slots' categories weighted by `marginals` (S, V_max), their shares of the training rows
    (`completions`); with "embedding", a learned per-slot "missing" embedding. Outputs are in
    standardised units; `Scorer` maps them back.
    """

    def __init__(self, sizes: list[int], context_sizes: list[int], num_numeric: int, config: ScorerConfig):
        super().__init__()
        self.config = config
        S, V, E = len(sizes), max(sizes), config.embed_dim
        self.register_buffer("mask", torch.arange(V)[None, :] < torch.tensor(sizes)[:, None], persistent=False)
        self.table = nn.Parameter(torch.randn(S, V, E) * 0.3 * self.mask[..., None])
        self.marginal = config.missing == "marginal"
        self.register_buffer("sizes", torch.tensor(sizes), persistent=False)
        if self.marginal:   # uniform until fit_scorer sets the training rows' shares (Scorer.set_marginals)
            self.register_buffer("marginals", self.mask / self.mask.sum(1, keepdim=True))
        else:
            self.missing = nn.Parameter(torch.zeros(S, E))
        self.context_tables = nn.ModuleList(nn.Embedding(c, config.context_dim) for c in context_sizes)
        dims = [S * E + len(context_sizes) * config.context_dim + num_numeric, *config.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), ACTIVATIONS[config.activation]()]
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

    def embed(self, x: torch.Tensor, complete: bool = False) -> torch.Tensor:
        """(B, S) long indices (-1 = missing) or (B, S, V_max) probabilities -> (B, S, E). complete: hard
        rows known to miss nothing (what forward embeds in "marginal" mode: rows or their completions)."""
        if x.dtype in (torch.int64, torch.int32):
            S, V = self.table.shape[:2]
            # an embedding lookup, not table[s, x]: its CPU backward sums each row's gradients in one
            # order whatever the threads (advanced indexing's scatter-add does not), so fits repeat.
            # Hard rows never index the padding, so the table is used unmasked (the mask's product
            # copies all S x V_max x E numbers: most of a wide table's scoring time)
            e = nn.functional.embedding(x.clamp(min=0) + V * torch.arange(S, device=x.device), self.table.flatten(0, 1))
            if not self.marginal:
                return torch.where((x < 0)[..., None], self.missing.to(e.dtype), e)
            if complete:
                return e
            # a latent of a partial row (forward scores its completions instead): a missing slot as its
            # categories' mean embedding, the soft row of its marginal; computed for those slots only
            b, s = (x < 0).nonzero(as_tuple=True)
            if not len(b):
                return e
            slots, which = torch.unique(s, return_inverse=True)
            mean = torch.einsum("kv,kve->ke", self.marginals.index_select(0, slots).to(e.dtype),
                                self.table.index_select(0, slots))
            return e.index_put((b, s), nn.functional.embedding(which, mean))   # a lookup: its backward repeats
        table = self.table * self.mask[..., None]  # padding contributes nothing, even under soft input
        return torch.einsum("bsv,sve->bse", x.to(table.dtype), table)

    def context_features(self, ctx_cat: torch.Tensor | None, ctx_num: torch.Tensor | None, like: torch.Tensor) -> list[torch.Tensor]:
        """The encoded context, as a list of (B, D_j) parts (empty without context columns)."""
        parts = [t(ctx_cat[:, j]) for j, t in enumerate(self.context_tables)]
        if ctx_num is not None and ctx_num.shape[-1]:
            parts.append(ctx_num.to(like.dtype))
        return parts

    def latent(self, x: torch.Tensor, ctx_cat: torch.Tensor | None = None, ctx_num: torch.Tensor | None = None,
               complete: bool = False) -> torch.Tensor:
        """Last hidden layer, (B, H). ctx_cat: (B, C_cat) long; ctx_num: (B, C_num) float; complete: see embed."""
        e = self.embed(x, complete).flatten(1)
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
        """(B,) standardised score of hard rows (B, S) or soft rows (B, S, V_max); a hard row with
        missing slots (-1) scores as the weighted mean over its completions in "marginal" mode."""
        if self.marginal and not x.is_floating_point():
            part = (x < 0).any(1)
            if bool(part.any()):
                return self._marginal(x, part, ctx_cat, ctx_num)
        return self._score(x, ctx_cat, ctx_num)

    def _score(self, x: torch.Tensor, ctx_cat: torch.Tensor | None, ctx_num: torch.Tensor | None) -> torch.Tensor:
        """forward of rows with no missing slot, or any rows in "embedding" mode."""
        out = self.head(self.latent(x, ctx_cat, ctx_num, complete=True)).squeeze(-1)
        return out + self.pair_term(x, ctx_cat, ctx_num) if self.pair_rank else out

    def _marginal(self, x: torch.Tensor, part: torch.Tensor, ctx_cat: torch.Tensor | None,
                  ctx_num: torch.Tensor | None) -> torch.Tensor:
        """(B,) scores of rows x (B, S) of which `part` (B,) bool have missing slots: the complete rows and
        every partial row's C completions in one forward, each partial row's the weighted sum of its C."""
        whole, idx = (~part).nonzero().squeeze(1), part.nonzero().squeeze(1)
        filled, weights, _ = completions(x[idx], self.marginals, self.sizes, self.config.completions, self.training)
        P, C, S = filled.shape

        def rows_of(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else torch.cat([t[whole], t[idx].repeat_interleave(C, 0)])

        f = self._score(torch.cat([x[whole], filled.reshape(P * C, S)]), rows_of(ctx_cat), rows_of(ctx_num))
        mixed = (f[len(whole):].reshape(P, C) * weights.to(f.dtype)).sum(1)
        out = f.new_zeros(len(x)).index_copy(0, whole, f[:len(whole)])
        return out.index_copy(0, idx, mixed)


class PartialRowsWarning(UserWarning):
    """Rows scored with some features missing (Scorer.predict_frame)."""


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


def check_ensemble_weights(k: int, want: dict[str, list[int]], have: dict[str, list[int]],
                           header: dict[str, list[int]], source: Path) -> None:
    """InputError naming `source` (an ensemble's JSON) unless the weights file's header holds k members
    ("members.<i>." keys) and the shapes `want` its settings describe where `have` (the header's
    entries to compare) holds them."""
    held = {int(key.split(".")[1]) for key in header if key.startswith("members.") and key.split(".")[1].isdigit()}
    if len(held) != k:
        raise InputError(str(source), [f"k: {k} ensemble members, but the weights beside it hold {len(held)}; the two "
                                       "files do not belong together"])
    if want != have:
        wrong = sorted(set(want) ^ set(have)) or [key for key in want if want[key] != have[key]]
        raise InputError(str(source), [f"its settings describe other weights than the file beside it holds ({wrong[0]}: "
                                       f"{want.get(wrong[0])} against {have.get(wrong[0])}); the two files do not "
                                       "belong together"])


def in_score_units(values, offset: float, unit: float) -> np.ndarray:
    """Working-unit values (tensor or array) -> float64 scores in the score's own units."""
    v = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float64)
    return v * unit + offset


def _check_size(m: ScorerMeta, header: dict[str, list[int]], source: Path) -> None:
    """InputError naming scorer.json unless the model its settings describe is the one the weights file
    declares: as many members, and one member's shapes (built on the meta device: no memory), checked
    before the k members are built."""
    config = m.config
    if config.pairwise is None:
        config = config.model_copy(update={"pairwise": pair_rank(config, m.space.sizes)})
    with torch.device("meta"):
        member = EmbeddingScorer(m.space.sizes, m.context.cardinalities, len(m.context.numeric), config)
    want = {f"members.0.{k}": list(v.shape) for k, v in member.state_dict().items()}
    have = {k: v for k, v in header.items() if k.startswith("members.0.")}
    check_ensemble_weights(m.k, want, have, header, source)


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

    def set_marginals(self, counts: torch.Tensor) -> None:
        """Each slot's category shares from counts (S, V_max) (category_counts of the training rows),
        which "marginal" members weight a missing slot's completions by; a slot never observed: uniform."""
        mask = self.members[0].mask.to(counts.device)
        counts = counts.double() * mask
        shares = torch.where(counts.sum(1, keepdim=True) > 0, counts, mask.double())
        shares = shares / shares.sum(1, keepdim=True)
        for m in self.members:
            if m.marginal:
                m.marginals.copy_(shares.to(m.marginals))

    def to_score(self, values) -> np.ndarray:
        """Working-unit values (tensor or array) -> float64 scores in the score's own units."""
        return in_score_units(values, self.offset, self.unit)

    def member_scores(self, x, ctx_cat=None, ctx_num=None) -> torch.Tensor:
        """(k, B) scores of each member, in working units."""
        raw = torch.stack([m(x, ctx_cat, ctx_num) for m in self.members])
        return raw * self.y_std + self.y_mean

    def forward(self, x, ctx_cat=None, ctx_num=None, beta: float | None = None) -> torch.Tensor:
        """(B,) score of hard rows (B, S) or soft rows (B, S, V_max); mean - beta * std over members."""
        return self.combine(self.member_scores(x, ctx_cat, ctx_num), beta)

    def combine(self, scores: torch.Tensor, beta: float | None = None) -> torch.Tensor:
        """(B,) the ensemble's score from its members' (k, B): mean - beta * std (beta None: the scorer's)."""
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
        if self.config.missing == "marginal" and bool((rows < 0).any()):   # partial rows expand to their completions
            batch_size = max(1, batch_size // self.config.completions)
        out = [self(rows[i:i + batch_size].to(dev), ctx_cat[i:i + batch_size].to(dev), ctx_num[i:i + batch_size].to(dev)).cpu()
               for i in range(0, len(rows), batch_size)]
        return torch.from_numpy(self.to_score(torch.cat(out) if out else torch.zeros(0)))

    def predict_frame(self, frame: pd.DataFrame, source: str = "rows", unknown: str = "error") -> np.ndarray:
        """Score the rows of a table (feature and context columns by name).

        Unknown feature categories raise, unless unknown="missing" scores them as missing slots. Rows
        with missing features are scored (see ScorerConfig.missing) with a PartialRowsWarning saying
        how many and which; a row with no feature observed is an InputError naming `source` and it."""
        problems: list[str] = []
        rows = ctx = None
        try:
            rows = self.space.encode(frame, source, unknown=unknown)
        except InputError as exc:
            problems += exc.problems
        if rows is not None and rows.shape[1]:
            missing = (rows < 0).numpy()
            empty = np.flatnonzero(missing.all(1))
            if len(empty):
                problems.append(f"no feature observed at {show_rows(empty)}: nothing to score; fill in at least one "
                                f"of {', '.join(self.space.names[:8])}{' ...' if len(self.space.names) > 8 else ''}")
            partial = np.flatnonzero(missing.any(1) & ~missing.all(1))
            if len(partial):
                how = ("each scored as the mean over its missing features' categories, weighted by their shares of "
                       "the training rows" if self.config.missing == "marginal" else
                       "each scored with the scorer's learned missing-feature embedding")
                warnings.warn(PartialRowsWarning(f"{len(partial)} of {len(rows)} rows have missing features "
                                                 f"({show_rows(partial)}): {how}"), stacklevel=2)
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
        if isinstance(meta.get("config"), dict):   # written before the pairwise term / marginal missing slots
            meta["config"] = {"pairwise": 0, "missing": "embedding", **meta["config"]}
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
