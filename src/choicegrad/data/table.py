"""Tables -> validated data set: a choice space, encoded rows, context and scores.

Every problem found in a table is reported in one InputError naming the file, the column and the
first few rows (numbered from 1, header excluded). Reading and writing files is choicegrad.io's.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from choicegrad.data.context import NA_TEXT, ContextEncoder
from choicegrad.data.space import ChoiceSpace, as_labels, read_space
from choicegrad.data.spec import expand_features, parse_context, parse_names
from choicegrad.errors import InputError, did_you_mean, show_rows
from choicegrad.io import read_table


@dataclass
class TableData:
    """A validated table. rows: (N, S) long (MISSING = -1); ctx_cat: (N, C_cat) long;
    ctx_num: (N, C_num) float; y: (N,) float64 (scores of any size a float64 holds); source: the
    file (or "table") it came from, for error messages."""

    space: ChoiceSpace
    context: ContextEncoder
    score: str
    rows: torch.Tensor
    ctx_cat: torch.Tensor
    ctx_num: torch.Tensor
    y: torch.Tensor
    frame: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    source: str = "table"

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray | torch.Tensor) -> TableData:
        """The rows at `index` (positions), same space and encoders."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return TableData(
            self.space, self.context, self.score, self.rows[idx], self.ctx_cat[idx], self.ctx_num[idx],
            self.y[idx], self.frame.iloc[idx.numpy()].reset_index(drop=True), list(self.warnings), self.source,
        )

    def context_groups(self) -> np.ndarray:
        """(N,) int id of each row's categorical context (all 0 without categorical context)."""
        if self.ctx_cat.shape[1] == 0:
            return np.zeros(len(self), dtype=np.int64)
        _, inverse = np.unique(self.ctx_cat.numpy(), axis=0, return_inverse=True)
        return inverse.reshape(-1)


def load_table(
    path: str | Path | pd.DataFrame,
    features: str | Sequence[str],
    score: str,
    context: str | Sequence[str] | None = None,
    *,
    space: dict[str, list[str]] | str | Path | None = None,
    failures: bool = False,
) -> TableData:
    """Read and validate a training table; every problem is reported in one InputError.

    `features` are column names or glob patterns; `context` entries may end in ':num' or ':cat' to
    override the detected kind (numeric dtype -> numeric, else categorical). Missing feature values are
    kept as MISSING (masked later), never invented. space: declared categories per feature, or a JSON
    file of them (read_space; ChoiceSpace.declared: a table label outside them is an error). failures: a score of -inf or an empty
    score marks a row that failed (design rounds) and is kept as -inf instead of being an error.
    """
    source = "table" if isinstance(path, pd.DataFrame) else str(path)
    space_source = str(space) if isinstance(space, (str, Path)) else "space"
    declaration = read_space(space) if isinstance(space, (str, Path)) else space
    frame = path if isinstance(path, pd.DataFrame) else read_table(path)
    feats, ctx_specs = check_columns([str(c) for c in frame.columns], len(frame), source, features, score, context)
    y, notes, seen = _check_values(frame, source, feats, score, failures)
    space = ChoiceSpace.declared(frame, feats, declaration, source=space_source)
    encoder, ctx_cat, ctx_num = _encode_context(frame, source, ctx_specs)
    rows = space.encode(frame, source)
    notes += [f"{source}: {n}" for n in id_like_features(len(frame), feats, seen)]
    finite = y[np.isfinite(y)]
    if len(finite) and np.all(finite == finite[0]):
        notes.append(f'{source}: score column "{score}" is constant ({finite[0]:g} on every row); '
                     "a scorer fitted on it predicts that value everywhere")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return TableData(space, encoder, score, rows, ctx_cat, ctx_num, torch.tensor(y, dtype=torch.float64), frame, notes,
                     source)


#: Fewest rows fit_scorer accepts: a tenth (at least one row) is held out for early stopping and a
#: tenth for the test metrics, and the mean and spread of the score need several training rows.
MIN_ROWS = 10

#: A feature is flagged as an ID column when it has more than ID_MIN_CATEGORIES categories and they
#: number more than ID_SHARE of its rows: too few rows per category to learn anything about one.
ID_MIN_CATEGORIES, ID_SHARE = 1000, 0.5


def check_fit_rows(data: TableData, source: str | None = None) -> None:
    """InputError naming the table (`source`, default data.source) when it has fewer than MIN_ROWS rows."""
    if len(data) < MIN_ROWS:
        raise InputError(source or data.source, [
            f"{len(data)} row{'s' if len(data) != 1 else ''} to fit a scorer on; at least {MIN_ROWS} are needed "
            "(a tenth is held out for early stopping and a tenth for the test metrics)"])


def id_like_features(n: int, feats: Sequence[str], seen: Sequence[int]) -> list[str]:
    """A note for each feature whose distinct values in the table (`seen`, one count per feature; a
    declared catalogue's unmeasured categories do not count) number more than ID_MIN_CATEGORIES and
    more than ID_SHARE of its n rows: likely an ID, which a scorer cannot learn from."""
    return [f'feature column "{f}" has {size} categories for {n} rows: it looks like an ID, which the scorer '
            "cannot learn from (a category seen once says nothing about the next); drop it, or use it as --context"
            for f, size in zip(feats, seen) if size > ID_MIN_CATEGORIES and size > ID_SHARE * n]


def score_stats(y: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """(mean, sample std) of finite scores in float64, without overflow or underflow at any size a
    float64 holds (computed on y / max|y|); std 1.0 where fewer than 2 scores differ, so standardising
    never divides by 0."""
    y = np.asarray(y, dtype=np.float64)
    top = float(np.abs(y).max()) if len(y) else 0.0
    if not math.isfinite(top):
        raise ValueError("scores must be finite numbers")
    if top == 0.0:
        return 0.0, 1.0
    z = y / top
    std = float(z.std(ddof=1)) * top if len(y) > 1 else 0.0
    return float(z.mean()) * top, (std if std > 0 else 1.0)


def check_columns(
    columns: Sequence[str], rows: int, source: str, features: str | Sequence[str], score: str,
    context: str | Sequence[str] | None,
) -> tuple[list[str], list[tuple[str, str | None]]]:
    """Resolve the column specs against a table's `columns`: (feature names, context specs).
    InputError for absent or repeated columns, no features or no rows."""
    columns = list(columns)
    feats, problems = expand_features(parse_names(features), columns)
    ctx_specs = parse_context(parse_names(context))
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
    if rows == 0:
        problems.append("the table has no rows")
    if problems:
        raise InputError(source, problems)
    return feats, ctx_specs


def _check_values(frame: pd.DataFrame, source: str, feats: Sequence[str], score: str,
                  failures: bool = False) -> tuple[np.ndarray, list[str], list[int]]:
    """(scores (N,) float, notes, distinct values of each feature): InputError for non-finite scores
    or an all-missing feature; a note for each feature with a single category. failures: -inf and
    empty scores are allowed (as -inf)."""
    problems: list[str] = []
    notes: list[str] = []
    seen: list[int] = []
    y = pd.to_numeric(frame[score], errors="coerce").to_numpy(dtype=float, copy=True)
    if failures:     # an empty cell, or text such as NA or n/a: a measurement that failed
        empty = frame[score].isna().to_numpy() | frame[score].astype(str).str.strip().isin(NA_TEXT).to_numpy()
        y[empty | (y == -np.inf)] = -np.inf
        bad = np.flatnonzero(np.isnan(y) | (y == np.inf))
        if len(bad):
            problems.append(f'score column "{score}": expected numbers, -inf or an empty cell (a failed row), got '
                            f'text/+inf at {show_rows(bad)}')
    else:
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            problems.append(f'score column "{score}": expected finite numbers, got missing/non-numeric/inf at {show_rows(bad)}')
    for f in feats:
        labels = as_labels(frame[f], source)
        distinct = labels.dropna().nunique()
        seen.append(int(distinct))
        if distinct == 0:
            problems.append(f'feature column "{f}" has no values (every row is missing)')
        elif distinct == 1:
            notes.append(f'{source}: feature column "{f}" has a single category ({labels.dropna().iloc[0]!r}); nothing to choose there')
    if problems:
        raise InputError(source, problems)
    return y, notes, seen


def _encode_context(
    frame: pd.DataFrame, source: str, ctx_specs: Sequence[tuple[str, str | None]],
) -> tuple[ContextEncoder, torch.Tensor, torch.Tensor]:
    """Fit the context encoder on `frame` and encode it: (encoder, (N, C_cat) long, (N, C_num) float)."""
    try:
        encoder = ContextEncoder.fit(frame, ctx_specs, source)
        ctx_cat, ctx_num = encoder.encode(frame, source)
    except ValueError as exc:  # a column forced to :num that holds text
        if isinstance(exc, InputError):
            raise
        raise InputError(source, [f"context: {exc}"]) from None
    return encoder, ctx_cat, ctx_num
