"""Tables (CSV/Parquet) -> validated data set: a choice space, encoded rows, context and scores.

Every problem found in a table is reported in one InputError naming the file, the column and the
first few rows (numbered from 1, header excluded).
"""

from __future__ import annotations

import csv
import fnmatch
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel

from choicegrad.errors import InputError, did_you_mean, show_rows
from choicegrad.data.space import ChoiceSpace, as_labels

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file; InputError for a missing file, bad format or duplicate columns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), ["file not found"])
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(str(path), [f'unsupported file type "{suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    try:
        if suffix == ".csv":
            with path.open(newline="") as fh:
                header = next(csv.reader(fh), [])
            frame = pd.read_csv(path, keep_default_na=True)
        else:
            import pyarrow.parquet as pq

            header = pq.read_schema(path).names
            frame = pd.read_parquet(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(str(path), [f"cannot read as {suffix[1:]}: {exc}"]) from None
    dupes = sorted(n for n, c in Counter(header).items() if c > 1)
    if dupes:
        raise InputError(str(path), [f"duplicate column name{'s' if len(dupes) > 1 else ''}: {', '.join(dupes)}"])
    return frame


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write CSV or Parquet atomically (temporary file in the same folder, then rename)."""
    from choicegrad.io import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(str(path), [f'unsupported output type "{suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)


class ContextColumn(BaseModel):
    """How one context column is encoded: categorical (embedded) or numeric (standardised)."""

    name: str
    kind: Literal["categorical", "numeric"]
    categories: list[str] | None = None
    mean: float | None = None
    std: float | None = None


class ContextEncoder(BaseModel):
    """Encodes context columns into (categorical indices, standardised numbers)."""

    columns: list[ContextColumn] = []

    @property
    def categorical(self) -> list[ContextColumn]:
        return [c for c in self.columns if c.kind == "categorical"]

    @property
    def numeric(self) -> list[ContextColumn]:
        return [c for c in self.columns if c.kind == "numeric"]

    @property
    def cardinalities(self) -> list[int]:
        return [len(c.categories or []) for c in self.categorical]

    @classmethod
    def fit(cls, frame: pd.DataFrame, specs: Sequence[tuple[str, str | None]]) -> ContextEncoder:
        """Fit from `frame`. `specs` are (column, kind or None = detect: numeric dtype -> numeric)."""
        columns = []
        for name, kind in specs:
            values = frame[name]
            if kind is None:
                numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype)
                kind = "numeric" if numeric else "categorical"
            if kind == "numeric":
                x = values.to_numpy(dtype=float)
                std = float(np.std(x))
                columns.append(ContextColumn(name=name, kind="numeric", mean=float(np.mean(x)), std=std if std > 0 else 1.0))
            else:
                columns.append(ContextColumn(name=name, kind="categorical", categories=sorted(set(as_labels(values).dropna()))))
        return cls(columns=columns)

    def encode(self, frame: pd.DataFrame, source: str = "contexts") -> tuple[torch.Tensor, torch.Tensor]:
        """frame -> ((N, C_cat) long, (N, C_num) float). Unknown or missing values raise InputError."""
        problems: list[str] = []
        n = len(frame)
        cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, col in enumerate(self.categorical):
            if col.name not in frame.columns:
                problems.append(f'missing context column "{col.name}"{did_you_mean(col.name, frame.columns)}')
                continue
            labels = as_labels(frame[col.name])
            codes = pd.Index(col.categories or []).get_indexer(labels.to_numpy())
            absent = np.flatnonzero(labels.isna().to_numpy())
            unknown = np.flatnonzero((codes < 0) & ~labels.isna().to_numpy())
            if len(absent):
                problems.append(f'context column "{col.name}": missing value at {show_rows(absent)}')
            if len(unknown):
                vals = sorted(set(labels.iloc[unknown]))[:5]
                problems.append(
                    f'context column "{col.name}": unknown value {", ".join(map(repr, vals))} at {show_rows(unknown)}; '
                    f"known: {', '.join((col.categories or [])[:8])}{' ...' if len(col.categories or []) > 8 else ''}"
                )
            cat[:, j] = codes
        for j, col in enumerate(self.numeric):
            if col.name not in frame.columns:
                problems.append(f'missing context column "{col.name}"{did_you_mean(col.name, frame.columns)}')
                continue
            x = pd.to_numeric(frame[col.name], errors="coerce").to_numpy(dtype=float)
            bad = np.flatnonzero(~np.isfinite(x))
            if len(bad):
                problems.append(f'context column "{col.name}": expected finite numbers, got missing/non-numeric/inf at {show_rows(bad)}')
            num[:, j] = (x - col.mean) / col.std
        if problems:
            raise InputError(source, problems)
        return torch.from_numpy(cat), torch.from_numpy(num)


@dataclass
class TableData:
    """A validated table. rows: (N, S) long (MISSING = -1); ctx_cat: (N, C_cat) long;
    ctx_num: (N, C_num) float; y: (N,) float."""

    space: ChoiceSpace
    context: ContextEncoder
    score: str
    rows: torch.Tensor
    ctx_cat: torch.Tensor
    ctx_num: torch.Tensor
    y: torch.Tensor
    frame: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray | torch.Tensor) -> TableData:
        """The rows at `index` (positions), same space and encoders."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return TableData(
            self.space, self.context, self.score, self.rows[idx], self.ctx_cat[idx], self.ctx_num[idx],
            self.y[idx], self.frame.iloc[idx.numpy()].reset_index(drop=True), list(self.warnings),
        )

    def context_groups(self) -> np.ndarray:
        """(N,) int id of each row's categorical context (all 0 without categorical context)."""
        if self.ctx_cat.shape[1] == 0:
            return np.zeros(len(self), dtype=np.int64)
        _, inverse = np.unique(self.ctx_cat.numpy(), axis=0, return_inverse=True)
        return inverse.reshape(-1)


def parse_names(spec: str | Sequence[str] | None) -> list[str]:
    """'a,b, c' or ['a', 'b,c'] -> ['a', 'b', 'c']."""
    if spec is None:
        return []
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [p.strip() for part in parts for p in str(part).split(",") if p.strip()]


def expand_features(patterns: Sequence[str], columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Expand glob patterns ('s*') against `columns`, keeping order; returns (names, problems)."""
    names, problems = [], []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            hits = [c for c in columns if fnmatch.fnmatchcase(str(c), pat)]
            if not hits:
                problems.append(f'feature pattern "{pat}" matches no column')
            names.extend(h for h in hits if h not in names)
        elif pat not in names:
            names.append(pat)
    return names, problems


def parse_context(spec: Sequence[str]) -> list[tuple[str, str | None]]:
    """['tf', 'temp:num', 'site:cat'] -> [('tf', None), ('temp', 'numeric'), ('site', 'categorical')]."""
    kinds = {"num": "numeric", "numeric": "numeric", "cat": "categorical", "categorical": "categorical"}
    out = []
    for item in spec:
        name, _, kind = item.partition(":")
        if kind and kind not in kinds:
            raise InputError("--context", [f'"{item}": kind must be one of num, cat (got "{kind}")'])
        out.append((name, kinds.get(kind) if kind else None))
    return out


def load_table(
    path: str | Path | pd.DataFrame,
    features: str | Sequence[str],
    score: str,
    context: str | Sequence[str] | None = None,
) -> TableData:
    """Read and validate a training table; every problem is reported in one InputError.

    `features` are column names or glob patterns; `context` entries may end in ':num' or ':cat' to
    override the detected kind (numeric dtype -> numeric, else categorical). Missing feature values are
    kept as MISSING (masked later), never invented.
    """
    source = "table" if isinstance(path, pd.DataFrame) else str(path)
    frame = path if isinstance(path, pd.DataFrame) else read_table(path)
    columns = [str(c) for c in frame.columns]
    feats, problems = expand_features(parse_names(features), columns)
    ctx_specs = parse_context(parse_names(context))
    notes: list[str] = []

    wanted = [("feature", f) for f in feats] + [("score", score)] + [("context", c) for c, _ in ctx_specs]
    for role, name in wanted:
        if name not in columns:
            problems.append(f'{role} column "{name}" not found{did_you_mean(name, columns)}; columns: {", ".join(columns[:12])}')
    used = Counter(name for _, name in wanted)
    for name, count in used.items():
        if count > 1:
            problems.append(f'column "{name}" is named {count} times across --features/--score/--context')
    if not feats:
        problems.append("no feature columns given")
    if len(frame) == 0:
        problems.append("the table has no rows")
    if problems:
        raise InputError(source, problems)

    y = pd.to_numeric(frame[score], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        problems.append(f'score column "{score}": expected finite numbers, got missing/non-numeric/inf at {show_rows(bad)}')
    for f in feats:
        labels = as_labels(frame[f])
        distinct = labels.dropna().nunique()
        if distinct == 0:
            problems.append(f'feature column "{f}" has no values (every row is missing)')
        elif distinct == 1:
            notes.append(f'{source}: feature column "{f}" has a single category ({labels.dropna().iloc[0]!r}); nothing to choose there')
    if problems:
        raise InputError(source, problems)

    space = ChoiceSpace.from_frame(frame, feats)
    try:
        encoder = ContextEncoder.fit(frame, ctx_specs)
        ctx_cat, ctx_num = encoder.encode(frame, source)
    except ValueError as exc:  # a column forced to :num that holds text
        if isinstance(exc, InputError):
            raise
        raise InputError(source, [f"context: {exc}"]) from None
    rows = space.encode(frame, source)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if not math.isfinite(float(np.std(y))) or float(np.std(y)) == 0.0:
        notes.append(f'{source}: score column "{score}" is constant')
    return TableData(space, encoder, score, rows, ctx_cat, ctx_num, torch.tensor(y, dtype=torch.float32), frame, notes)


def split_below_quantile(data: TableData, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Offline-design protocol: positions of rows whose score is below the q-quantile of their own
    context (the training pool), and of the rest (the unseen upper part, held out)."""
    if not 0 < q < 1:
        raise InputError("--train-quantile", [f"expected a number strictly between 0 and 1, got {q}"])
    frame = pd.DataFrame({"g": data.context_groups(), "y": data.y.numpy()})
    cut = frame.groupby("g")["y"].transform(lambda s: s.quantile(q)).to_numpy()
    below = frame["y"].to_numpy() < cut
    return np.flatnonzero(below), np.flatnonzero(~below)


def hold_out_upper(data: TableData, q: float | None) -> tuple[TableData, dict[str, TableData]]:
    """(training table, extra held-out sets): with q, the rows below each context's q-quantile and
    {"upper": the rest}; without q, the whole table and no extra set."""
    if q is None:
        return data, {}
    below, upper = split_below_quantile(data, q)
    return data.subset(below), {"upper": data.subset(upper)}
