"""Landscapes: contextual table tasks in which every row has a known score.

A landscape holds scores (C, R): C contexts by R = prod(vocabulary sizes) rows. Row index r <-> row by
mixed radix, slot 0 most significant, category index in the slot's vocabulary order (sorted labels,
as ChoiceSpace.from_frame builds it, so a training table read by choicegrad.data.table.load_table has the
same vocabularies). NaN marks a row without a score. Real landscapes come from long tables
(`from_frame`, `from_parquet`); synthetic ones from an analytic oracle (`from_oracle`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from choicegrad.errors import InputError, did_you_mean, show_rows
from choicegrad.data.space import ChoiceSpace, Slot, as_labels
from choicegrad.bench.metrics import gap_closed, normalise
from choicegrad.bench.tasks import stats as st
from choicegrad.bench.tasks.base import BenchmarkTask, check_rows

PROTOCOLS = ("below-median", "random")
MAX_CELLS = 1 << 26          # C x R scores kept in memory at most (256 MB of float32)

# the real landscapes of ../shared/data (see its README): slot count, context column, measured flag
REAL = {
    "tfbind8": {"slots": 8, "context": "tf", "measured": None},
    "gb1": {"slots": 4, "context": None, "measured": "source"},
    "pard3": {"slots": 3, "context": "toxin", "measured": None},
}


def radix(sizes: Sequence[int]) -> Tensor:
    """(S,) long place values of the mixed radix (slot 0 most significant)."""
    after = torch.tensor([int(v) for v in sizes[1:]] + [1], dtype=torch.long)
    return after.flip(0).cumprod(0).flip(0)


def rows_at(index: Tensor, sizes: Sequence[int]) -> Tensor:
    """(N,) long row indices -> (N, S) long rows."""
    return (index.unsqueeze(-1) // radix(sizes).to(index.device)) % torch.tensor(list(sizes), device=index.device)


class Landscape(BenchmarkTask):
    """A contextual table task with a known score for every row (a BenchmarkTask of kind "table":
    its contexts are its C context ids, every method is judged on all of them).

    name; space (slots s0..); context_column (None: context-free, C = 1); context_labels (C labels,
    [] without context); scores (C, R) float32, NaN = no score; measured (C, R) bool or None.
    Synthetic landscapes also keep `analytic` (fn(ctx (N,), rows (N, S)) -> (N,)) and `model`.
    """

    kind = "table"

    def __init__(self, name: str, space: ChoiceSpace, scores: Tensor, context_column: Optional[str] = None,
                 context_labels: Optional[Sequence[str]] = None, measured: Optional[Tensor] = None,
                 analytic: Optional[Callable[[Tensor, Tensor], Tensor]] = None, model: object = None):
        labels = list(context_labels or [])
        C = len(labels) if context_column else 1
        if context_column and not labels:
            raise ValueError(f"context_labels: context column {context_column!r} needs its labels, got none")
        if not context_column and labels:
            raise ValueError(f"context_labels: expected [] without a context column, got {len(labels)} labels")
        R = space.num_rows()
        if tuple(scores.shape) != (C, R):
            raise ValueError(f"scores: expected shape (contexts, rows) = ({C}, {R}), got {tuple(scores.shape)}")
        if measured is not None and (tuple(measured.shape) != (C, R) or measured.dtype != torch.bool):
            raise ValueError(f"measured: expected bool of shape ({C}, {R}), "
                             f"got {measured.dtype} {tuple(measured.shape)}")
        self.name, self.space, self.context_column, self.context_labels = name, space, context_column, labels
        self.scores, self.measured = scores.float(), measured
        self.analytic, self.model = analytic, model
        self._sizes = torch.tensor(space.sizes)
        self._radix = radix(space.sizes)
        self._stats: Optional[dict[str, Tensor]] = None

    def __repr__(self) -> str:
        sizes = "x".join(map(str, self.space.sizes))
        return f"Landscape({self.name!r}, contexts={self.num_contexts}, slots={sizes}, rows={self.num_rows})"

    @property
    def num_contexts(self) -> int:
        return int(self.scores.shape[0])

    @property
    def num_rows(self) -> int:
        return int(self.scores.shape[1])

    # --- rows <-> indices ------------------------------------------------------------------------
    def row_index(self, rows: Tensor) -> Tensor:
        """(N, S) long rows -> (N,) long row indices; ValueError for a category out of range."""
        S = self.space.num_slots
        if rows.dim() != 2 or rows.shape[1] != S or rows.is_floating_point():
            raise ValueError(f"rows: expected (N, {S}) long category indices, got {rows.dtype} {tuple(rows.shape)}")
        sizes = self._sizes.to(rows.device)
        bad = (rows < 0) | (rows >= sizes)
        if bool(bad.any()):
            n, s = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"rows: row {n} slot {self.space.names[s]!r} has category {int(rows[n, s])}, "
                             f"expected 0..{int(sizes[s]) - 1}")
        return (rows * self._radix.to(rows.device)).sum(-1)

    def rows_at(self, index: Tensor) -> Tensor:
        """(N,) long row indices -> (N, S) long rows."""
        return rows_at(index, self.space.sizes)

    def all_rows(self) -> Tensor:
        """(R, S) every row, in row-index order."""
        return self.rows_at(torch.arange(self.num_rows))

    # --- ground truth ----------------------------------------------------------------------------
    def _check_ctx(self, ctx: Tensor, n: int) -> Tensor:
        if ctx.shape != (n,) or ctx.is_floating_point():
            raise ValueError(f"ctx: expected ({n},) long context ids, got {ctx.dtype} {tuple(ctx.shape)}")
        if n and (int(ctx.min()) < 0 or int(ctx.max()) >= self.num_contexts):
            raise ValueError(f"ctx: context ids must lie in 0..{self.num_contexts - 1}, "
                             f"got {int(ctx.min())}..{int(ctx.max())}")
        return ctx

    def oracle(self, ctx: Tensor, rows: Tensor) -> Tensor:
        """ctx (N,) long context ids, rows (N, S) long -> (N,) true scores (NaN: no score), by lookup."""
        idx = self.row_index(rows)
        ctx = self._check_ctx(ctx, len(idx))
        return self.scores[ctx.cpu(), idx.cpu()].to(rows.device)

    def optimum(self, ctx: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """(rows (B, S) long, values (B,)): the best scored row of each context ctx (B,) (default: all C)."""
        index, values = st.nan_argmax(self.scores if ctx is None else self.scores[ctx])
        return self.rows_at(index), values

    # --- the BenchmarkTask contract ----------------------------------------------------------------
    @property
    def context_columns(self) -> Optional[list[str]]:
        return [self.context_column] if self.context_column else None

    def contexts(self, n: Optional[int] = None, seed: int = 0) -> Tensor:
        """(C,) long: every context id (the contexts of the training table; n and seed unused)."""
        return torch.arange(self.num_contexts)

    def truth(self, ctx: Tensor, rows: Tensor) -> Tensor:
        """ctx (B,) context ids, rows (B, M, S) long -> (B, M) scores (NaN: no score)."""
        M = check_rows(rows, len(ctx), self.space.num_slots)
        return self.oracle(ctx.repeat_interleave(M), rows.reshape(-1, self.space.num_slots)).reshape(len(ctx), M).float()

    def enumerate_truth(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """(scores (B, R) of contexts ctx (B,), rows (R, S)): the stored scores, in row-index order."""
        return self.scores[ctx], self.all_rows()

    def statistics(self, ctx: Tensor) -> dict[str, Tensor]:
        """{min, max, mean, median} (B,) of contexts ctx (B,), from the cached stats()."""
        return {k: v[ctx] for k, v in self.stats().items()}

    def stats(self) -> dict[str, Tensor]:
        """{min, max, mean, median}: (C,) each, over the scored rows of each context (cached)."""
        if self._stats is None:
            self._stats = st.nan_stats(self.scores)
        return dict(self._stats)

    def normalise(self, ctx: Tensor, values: Tensor) -> Tensor:
        """(y - min) / (max - min) of each value's context: ctx (N,), values (N,) -> (N,)."""
        ctx = self._check_ctx(ctx, len(values)).cpu()
        return normalise(values, {k: v[ctx] for k, v in self.stats().items()})

    def gap_closed(self, ctx: Tensor, values: Tensor) -> Tensor:
        """(y - mean) / (max - mean) of each value's context: ctx (N,), values (N,) -> (N,)."""
        ctx = self._check_ctx(ctx, len(values)).cpu()
        return gap_closed(values, {k: v[ctx] for k, v in self.stats().items()})

    # --- tables ----------------------------------------------------------------------------------
    def context_frame(self, ctx: Optional[Tensor] = None) -> pd.DataFrame:
        """One row per context ctx (B,) (default: all C) with the context column (no column without
        context)."""
        if self.context_column is None:
            return pd.DataFrame(index=range(1 if ctx is None else len(ctx)))
        labels = self.context_labels if ctx is None else [self.context_labels[int(c)] for c in ctx]
        return pd.DataFrame({self.context_column: pd.Series(labels, dtype=object)})

    def frame(self, ctx: Tensor, index: Tensor) -> pd.DataFrame:
        """Rows (ctx (N,), row index (N,)) as a table: [context column] + slot names + "y"."""
        out = self.space.decode(self.rows_at(index))
        if self.context_column is not None:
            out.insert(0, self.context_column, np.asarray(self.context_labels, dtype=object)[ctx.numpy()])
        out["y"] = self.scores[ctx, index].double().numpy()
        return out

    def training_table(self, protocol: str = "below-median", n: Optional[int] = None, seed: int = 0) -> pd.DataFrame:
        """A training table: [context column] + slot names + "y", ordered by context then row.

        "below-median": the rows strictly below their context's median (offline-design protocol),
        then a seeded subsample of n rows when n is given; "random": n (required) rows drawn uniformly
        without replacement. The pool is the scored rows, and only the measured ones when `measured`
        is set (the median is then the median of the measured rows).
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}"
                             f"{did_you_mean(protocol, PROTOCOLS)}")
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
            raise ValueError(f"n: expected a positive number of rows or None, got {n!r}")
        if protocol == "random" and n is None:
            raise ValueError('n: the "random" protocol needs the number of rows to draw')
        pool = ~torch.isnan(self.scores)
        if self.measured is not None:
            pool &= self.measured
        keep = pool
        if protocol == "below-median":
            median = self.stats()["median"] if self.measured is None else \
                st.nan_stats(self.scores.masked_fill(~pool, float("nan")))["median"]
            keep = pool & (self.scores < median[:, None])
        ctx, index = keep.nonzero(as_tuple=True)
        if n is not None:
            if n > len(ctx):
                raise ValueError(f"n: asked for {n} rows, but the {protocol} pool of {self.name} holds {len(ctx)}")
            pick = torch.randperm(len(ctx), generator=torch.Generator().manual_seed(seed))[:n].sort().values
            ctx, index = ctx[pick], index[pick]
        return self.frame(ctx, index)

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def from_frame(cls, name: str, frame: pd.DataFrame, slots: Sequence[str], score: str = "y",
                   context: Optional[str] = None, measured_column: Optional[str] = None) -> Landscape:
        """A landscape from a long table, one row per (context, row). Vocabularies: sorted labels.

        measured_column: bool, or labels where "measured" means True. Every problem (missing columns,
        missing labels, non-finite scores, duplicated rows) is reported in one InputError naming `name`.
        """
        problems = _column_problems(frame, slots, score, context, measured_column)
        if problems:
            raise InputError(name, problems)
        codes, y, problems = _coded(frame, slots, score, context)
        if problems:
            raise InputError(name, problems)
        ctx, labels = codes[context] if context else (np.zeros(len(frame), dtype=np.int64), [])
        space = ChoiceSpace(slots=[Slot(name=c, categories=codes[c][1]) for c in slots])
        C, R = max(1, len(labels)), space.num_rows()
        if C * R > MAX_CELLS:
            raise InputError(name, [f"{C} contexts x {R} rows exceed the {MAX_CELLS} scores a landscape holds"])
        rows = torch.from_numpy(np.stack([codes[c][0] for c in slots], 1))
        flat = torch.from_numpy(ctx) * R + (rows * radix(space.sizes)).sum(-1)          # (N,) cell of each data row
        duplicate = _duplicate_problem(frame, flat, ([context] if context else []) + list(slots))
        if duplicate:
            raise InputError(name, [duplicate])
        scores = torch.full((C * R,), float("nan"))
        scores[flat] = torch.tensor(y, dtype=torch.float32)
        measured = _measured_flags(frame[measured_column], flat, C, R) if measured_column else None
        return cls(name, space, scores.view(C, R), context, labels, measured)

    @classmethod
    def from_parquet(cls, path: str | Path, name: str) -> Landscape:
        """One of the real landscapes (tfbind8, gb1, pard3) from its Parquet file (../shared/data)."""
        if name not in REAL:
            raise ValueError(f"name: expected one of {', '.join(REAL)}, got {name!r}{did_you_mean(name, list(REAL))}")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: landscape file not found; get it with `choicegrad data fetch {name}`")
        spec = REAL[name]
        slots = [f"s{s}" for s in range(spec["slots"])]
        columns = slots + ["y"] + [c for c in (spec["context"], spec["measured"]) if c]
        frame = pd.read_parquet(path, columns=columns)
        return cls.from_frame(name, frame, slots, "y", spec["context"], spec["measured"])

    @classmethod
    def from_oracle(cls, name: str, space: ChoiceSpace, context_labels: Sequence[str],
                    fn: Callable[[Tensor, Tensor], Tensor], chunk: int = 1 << 18, context_column: str = "ctx",
                    model: object = None) -> Landscape:
        """Fill scores by evaluating fn(ctx (N,), rows (N, S)) -> (N,) on every row of every context,
        at most `chunk` evaluations at a time. No context labels: a context-free landscape (ctx = 0)."""
        labels = list(context_labels)
        C, R = max(1, len(labels)), space.num_rows()
        if C * R > MAX_CELLS:
            raise ValueError(f"space/context_labels: {C} contexts x {R} rows exceed the {MAX_CELLS} scores "
                             "a landscape holds; use fewer slots, categories or contexts")
        if chunk < 1:
            raise ValueError(f"chunk: expected a positive number of evaluations, got {chunk}")
        scores = torch.empty(C, R)
        per = max(1, chunk // C)
        owner = torch.arange(C)
        with torch.no_grad():
            for start in range(0, R, per):  # chunks of rows, all contexts at once
                rows = rows_at(torch.arange(start, min(R, start + per)), space.sizes)
                n = len(rows)
                scores[:, start:start + n] = fn(owner.repeat_interleave(n), rows.repeat(C, 1)).float().view(C, n)
        return cls(name, space, scores, context_column if labels else None, labels, None, fn, model)


def _column_problems(frame: pd.DataFrame, slots: Sequence[str], score: str, context: Optional[str],
                     measured_column: Optional[str]) -> list[str]:
    """Landscape.from_frame's first check: a line per column not found, no slot, no row."""
    columns = [str(c) for c in frame.columns]
    wanted = [("slot", s) for s in slots] + [("score", score)]
    wanted += [("context", context)] if context else []
    wanted += [("measured", measured_column)] if measured_column else []
    problems = [f'{role} column "{c}" not found{did_you_mean(c, columns)}' for role, c in wanted if c not in columns]
    if not slots:
        problems.append("slots: expected at least one slot column")
    if len(frame) == 0:
        problems.append("the table has no rows")
    return problems


def _coded(frame: pd.DataFrame, slots: Sequence[str], score: str, context: Optional[str]
           ) -> tuple[dict[str, tuple[np.ndarray, list[str]]], np.ndarray, list[str]]:
    """The slot and context columns as codes (_factorize), the scores (N,) float64, and a line per
    non-finite score and per column with missing labels."""
    codes = {c: _factorize(frame[c]) for c in list(slots) + ([context] if context else [])}
    y = pd.to_numeric(frame[score], errors="coerce").to_numpy(dtype=np.float64)
    problems = []
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        problems.append(f'score column "{score}": expected finite numbers, got missing/non-numeric at {show_rows(bad)}')
    for c, (code, _) in codes.items():
        absent = np.flatnonzero(code < 0)
        if len(absent):
            role = "context" if c == context else "slot"
            problems.append(f'{role} column "{c}": missing value at {show_rows(absent)}')
    return codes, y, problems


def _duplicate_problem(frame: pd.DataFrame, flat: Tensor, cols: list[str]) -> Optional[str]:
    """The line naming the first two data rows in the same cell (flat (N,)) and how many repeat one, or None."""
    order = torch.argsort(flat, stable=True)
    same = flat[order[1:]] == flat[order[:-1]]
    if not bool(same.any()):
        return None
    first, again = order[:-1][same].numpy(), order[1:][same].numpy()
    shown = frame.iloc[int(first[0])][cols].to_dict()
    return (f"duplicate row: data rows {int(first[0]) + 1} and {int(again[0]) + 1} are both "
            f"{shown} ({len(again)} duplicate(s) in all, at {show_rows(np.sort(again))})")


def _measured_flags(flag: pd.Series, flat: Tensor, C: int, R: int) -> Tensor:
    """(C, R) bool: the cells whose data row is flagged measured (a bool column, or the label "measured")."""
    if pd.api.types.is_bool_dtype(flag.dtype):
        ok = flag.to_numpy(dtype=bool)
    else:
        ok = (as_labels(flag) == "measured").to_numpy(dtype=bool)
    measured = torch.zeros(C * R, dtype=torch.bool)
    measured[flat] = torch.tensor(ok)
    return measured.view(C, R)


def _factorize(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """A column -> ((N,) int64 index into its sorted labels, -1 where missing; sorted labels).

    Labels as choicegrad.data.space.as_labels writes them, found on the distinct values only (fast on
    millions of rows), so the vocabulary matches ChoiceSpace.from_frame / load_table.
    """
    code, uniques = pd.factorize(values, use_na_sentinel=True)
    names = as_labels(pd.Series(uniques))
    labels = sorted(set(names.dropna()))
    to_label = pd.Index(labels).get_indexer(names.to_numpy()).astype(np.int64)
    return np.where(code < 0, -1, to_label[np.maximum(code, 0)] if len(to_label) else -1), labels


def tfbind8(path: str | Path) -> Landscape:
    """TFBind8: 25 transcription factors (context "tf") x 4^8 DNA 8-mers."""
    return Landscape.from_parquet(path, "tfbind8")


def gb1(path: str | Path) -> Landscape:
    """GB1: 20^4 protein variants, no context; `measured` flags the 149,361 measured rows."""
    return Landscape.from_parquet(path, "gb1")


def pard3(path: str | Path) -> Landscape:
    """ParD3: 2 toxins (context "toxin") x 20^3 antitoxin variants."""
    return Landscape.from_parquet(path, "pard3")
