"""Contextual tasks: landscapes driven by context *features*, trained on a log, judged on unseen contexts.

A context is a numeric vector c (d columns c0..c{d-1}, drawn N(0, 1)) and, for the mixed task, a
categorical column `site`. The landscape is a Potts model whose fields and couplings are functions of
the context through a fixed random map:

    f(c, x) = sum_s h(c)[s, x_s] + sum_{s<t} J(c)[s, t, x_s, x_t]
    h(c) = h0 + g_site + tanh(c A) H            (A: d x 16, H: 16 -> S x V)
    J(c) = J0 + sum_r tanh(c B)_r J_r            (B: d x r, J_r shared pairwise tables)

so the best row moves with c in a nonlinear way and two contexts almost never share a best row.
The training table is a log with one context per row (`log`): what a recommender logs, one user per
row. Evaluation contexts (`contexts`) are fresh draws from another seed: no evaluation context was
seen in training (a site level was; its numbers were not). `enumerate` gives the truth of every row
of every evaluation context, for the optimum and the normalisation.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from choicegrad.bench.tasks import stats as st
from choicegrad.bench.tasks.base import BenchmarkTask, check_rows
from choicegrad.bench.tasks.landscape import rows_at
from choicegrad.bench.tasks.synthetic import category_labels, grid_space
from choicegrad.data.space import ChoiceSpace

HIDDEN = 16


class ContextualTask(BenchmarkTask):
    """A Potts landscape whose fields and couplings depend on context features (see the module doc);
    a BenchmarkTask of kind "contextual": its contexts are tables of context columns (`contexts`).

    name; space (slots s0.., categories a, b, ...); numeric: the numeric context columns c0..;
    sites: levels of the categorical column `site` (0: no such column); oracle(num (N, d), site (N,),
    rows (N, S)) -> (N,).
    """

    kind = "contextual"

    def __init__(self, name: str = "potts-ctx", slots: int = 8, vocab: int = 4, dims: int = 8, sites: int = 0,
                 coupling: float = 1.5, rank: int = 4, seed: int = 0):
        if slots < 2 or vocab < 2 or dims < 1 or sites < 0 or rank < 1:
            raise ValueError(f"slots, vocab, dims, sites, rank: expected >= 2, 2, 1, 0, 1; "
                             f"got {slots}, {vocab}, {dims}, {sites}, {rank}")
        g = torch.Generator().manual_seed(seed)
        S, V = slots, vocab
        self.name, self.slots, self.vocab, self.dims, self.sites = name, S, V, dims, sites
        self.space: ChoiceSpace = grid_space(S, V)
        self.h0 = torch.randn(S, V, generator=g) * 0.5
        self.A = torch.randn(dims, HIDDEN, generator=g) / math.sqrt(dims) * 1.5
        self.H = torch.randn(HIDDEN, S, V, generator=g) / math.sqrt(HIDDEN) * 1.5
        self.site_fields = torch.randn(max(sites, 1), S, V, generator=g) * (0.8 if sites else 0.0)
        upper = torch.triu(torch.ones(S, S), diagonal=1)[..., None, None]
        self.J0 = upper * torch.randn(S, S, V, V, generator=g) * coupling / math.sqrt(S)
        self.B = torch.randn(dims, rank, generator=g) / math.sqrt(dims) * 1.5
        self.Jr = upper * torch.randn(rank, S, S, V, V, generator=g) * coupling / math.sqrt(S * rank)

    def __repr__(self) -> str:
        return (f"ContextualTask({self.name!r}, slots={self.slots}x{self.vocab}, numeric={self.dims}, "
                f"sites={self.sites})")

    # --- columns ---------------------------------------------------------------------------------
    @property
    def numeric(self) -> list[str]:
        return [f"c{j}" for j in range(self.dims)]

    @property
    def context_columns(self) -> list[str]:
        """The context columns as `choicegrad fit --context` takes them (kinds spelled out)."""
        return (["site:cat"] if self.sites else []) + [f"{c}:num" for c in self.numeric]

    @property
    def num_rows(self) -> int:
        return self.vocab ** self.slots

    def site_labels(self) -> list[str]:
        width = len(str(max(self.sites - 1, 0)))
        return [f"site{i:0{width}d}" for i in range(self.sites)]

    # --- the landscape ---------------------------------------------------------------------------
    def fields(self, num: Tensor, site: Tensor) -> Tensor:
        """(N, d), (N,) -> (N, S, V) fields h(c)."""
        z = torch.tanh(num @ self.A)
        return self.h0 + torch.einsum("nh,hsv->nsv", z, self.H) + self.site_fields[site.clamp(min=0)]

    def oracle(self, num: Tensor, site: Tensor, rows: Tensor) -> Tensor:
        """num (N, d) float, site (N,) long (zeros without sites), rows (N, S) long -> (N,) true scores."""
        S = self.slots
        s = torch.arange(S)
        field = self.fields(num, site).gather(2, rows[:, :, None])[..., 0].sum(1)
        xs, xt = rows[:, :, None].expand(-1, S, S), rows[:, None, :].expand(-1, S, S)
        pair0 = self.J0[s[:, None], s[None, :], xs, xt].sum((1, 2))
        pairs = self.Jr[:, s[:, None], s[None, :], xs, xt].sum((2, 3))          # (r, N)
        return field + pair0 + (torch.tanh(num @ self.B) * pairs.T).sum(1)

    def enumerate(self, num: Tensor, site: Tensor, chunk: int = 1 << 21) -> Tensor:
        """(C, R) true score of every row (row-index order, slot 0 most significant) per context."""
        C, R = len(num), self.num_rows
        rows = rows_at(torch.arange(R), [self.vocab] * self.slots)
        out = torch.empty(C, R)
        S = self.slots
        s = torch.arange(S)
        xs, xt = rows[:, :, None].expand(-1, S, S), rows[:, None, :].expand(-1, S, S)
        pair0 = self.J0[s[:, None], s[None, :], xs, xt].sum((1, 2))              # (R,)
        pairs = self.Jr[:, s[:, None], s[None, :], xs, xt].sum((2, 3))           # (r, R)
        h = self.fields(num, site)                                                 # (C, S, V)
        w = torch.tanh(num @ self.B)                                               # (C, r)
        onehot = torch.nn.functional.one_hot(rows, self.vocab).float().reshape(R, -1)   # (R, S*V)
        per = max(1, chunk // R)
        for start in range(0, C, per):
            sl = slice(start, start + per)
            out[sl] = h[sl].reshape(-1, S * self.vocab) @ onehot.T + pair0 + w[sl] @ pairs
        return out

    # --- tables ----------------------------------------------------------------------------------
    def draw(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """n contexts: (num (n, d), site (n,) long)."""
        g = torch.Generator().manual_seed(seed)
        num = torch.randn(n, self.dims, generator=g)
        site = torch.randint(max(self.sites, 1), (n,), generator=g) if self.sites else torch.zeros(n, dtype=torch.long)
        return num, site

    def frame_of(self, num: Tensor, site: Tensor) -> pd.DataFrame:
        """Contexts as a table: [site] + c0..c{d-1}."""
        frame = pd.DataFrame(num.double().numpy(), columns=self.numeric)
        if self.sites:
            frame.insert(0, "site", np.asarray(self.site_labels(), dtype=object)[site.numpy()])
        return frame

    def contexts(self, n: int = 256, seed: int = 1) -> pd.DataFrame:
        """n evaluation contexts as a table; seed >= 1 keeps them apart from the log's (seed 0)."""
        return self.frame_of(*self.draw(n, 10_000 + seed))

    def encode(self, frame: pd.DataFrame) -> tuple[Tensor, Tensor]:
        """A context table (as `contexts` writes it) -> (num (N, d), site (N,))."""
        num = torch.tensor(frame[self.numeric].to_numpy(dtype=np.float64), dtype=torch.float32)
        if self.sites:
            where = {label: i for i, label in enumerate(self.site_labels())}
            site = torch.tensor(frame["site"].map(where).to_numpy(dtype=np.int64))
        else:
            site = torch.zeros(len(frame), dtype=torch.long)
        return num, site

    def log(self, n: int = 40_000, seed: int = 0, rows: Optional[Tensor] = None) -> pd.DataFrame:
        """A training log: n rows, each with its own context and a uniform random row, and its score y."""
        num, site = self.draw(n, seed)
        g = torch.Generator().manual_seed(seed + 1)
        rows = torch.randint(self.vocab, (n, self.slots), generator=g) if rows is None else rows
        frame = self.frame_of(num, site)
        labels = np.asarray(category_labels(self.vocab), dtype=object)
        for s in range(self.slots):
            frame[f"s{s}"] = labels[rows[:, s].numpy()]
        frame["y"] = self.oracle(num, site, rows).double().numpy()
        return frame

    # --- the BenchmarkTask contract ----------------------------------------------------------------
    def context_frame(self, ctx: pd.DataFrame) -> pd.DataFrame:
        """The contexts are already a context table."""
        return ctx

    def truth(self, ctx: pd.DataFrame, rows: Tensor) -> Tensor:
        """ctx: B contexts (a table as `contexts` writes it), rows (B, M, S) long -> (B, M)."""
        num, site = self.encode(ctx)
        M = check_rows(rows, len(num), self.slots)
        return self.oracle(num.repeat_interleave(M, 0), site.repeat_interleave(M), rows.reshape(-1, self.slots)
                           ).reshape(len(num), M).float()

    def enumerate_truth(self, ctx: pd.DataFrame) -> tuple[Tensor, Tensor]:
        """(values (B, R), rows (R, S)) of every row of every context of the table ctx."""
        return self.enumerate(*self.encode(ctx)), rows_at(torch.arange(self.num_rows), [self.vocab] * self.slots)

    def statistics(self, ctx: pd.DataFrame) -> dict[str, Tensor]:
        """{min, max, mean, median} (B,): every row has a score, so plain reductions (float32 mean)."""
        true = self.enumerate(*self.encode(ctx))
        return {"min": true.min(1).values, "max": true.max(1).values, "mean": true.mean(1),
                "median": st.nan_stats(true)["median"]}

    def training_table(self, protocol: str = "random", n: Optional[int] = None, seed: int = 0) -> pd.DataFrame:
        """The log (`log`): n (default 40,000) rows, each with its own context and a uniform random row;
        "random" is the only protocol (a context is seen once, so it has no median)."""
        if protocol != "random":
            raise ValueError(f'protocol: a contextual task\'s log has uniform random rows, expected "random", '
                             f"got {protocol!r}")
        return self.log(40_000 if n is None else n, seed)


def potts_ctx(seed: int = 0, **options) -> ContextualTask:
    """8 slots x 4 categories, 8 numeric context columns."""
    return ContextualTask("potts-ctx", seed=seed, **options)


def mixed_ctx(seed: int = 0, **options) -> ContextualTask:
    """8 slots x 4 categories, a categorical `site` (8 levels) and 4 numeric context columns."""
    return ContextualTask("mixed-ctx", **{"dims": 4, "sites": 8, "seed": seed + 7, **options})


