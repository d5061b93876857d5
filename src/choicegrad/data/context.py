"""Context columns -> tensors: categorical columns as indices, numeric columns standardised.

New contexts: a numeric column takes any finite value, inside its training range or not (the scorer
extrapolates); ContextEncoder.out_of_range names the values far outside it (FAR_OUTSIDE training
standard deviations beyond [min, max]), which Run.generate warns about (ContextRangeWarning). A
categorical column has one embedding per training category and none for an unseen one: encode
raises InputError for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel

from choicegrad.data.space import as_labels, unknown_labels
from choicegrad.errors import InputError, did_you_mean, show_rows


#: A numeric context value is "far outside" its training range when it lies more than this many
#: training standard deviations below the training min or above the training max.
FAR_OUTSIDE = 1.0
#: Encoders saved before min/max were kept: the training range is taken as mean +- this many std.
FALLBACK_STDS = 3.0


class ContextRangeWarning(UserWarning):
    """A numeric context value far outside the range the scorer was trained on (see ContextEncoder.out_of_range)."""


class ContextColumn(BaseModel):
    """How one context column is encoded: categorical (embedded) or numeric (standardised).

    Numeric columns keep the training mean and std (std 1 for a constant column) and the training
    range min/max (None in encoders saved before it was kept: see `training_range`)."""

    name: str
    kind: Literal["categorical", "numeric"]
    categories: list[str] | None = None
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None

    def training_range(self) -> tuple[float, float]:
        """(min, max) seen in training; mean +- FALLBACK_STDS std for an encoder saved without them."""
        mean, std = self.mean or 0.0, self.std or 1.0
        lo = self.min if self.min is not None else mean - FALLBACK_STDS * std
        hi = self.max if self.max is not None else mean + FALLBACK_STDS * std
        return lo, hi


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
    def fit(cls, frame: pd.DataFrame, specs: Sequence[tuple[str, str | None]], source: str = "table") -> ContextEncoder:
        """Fit from `frame` (read from `source`). `specs` are (column, kind or None = detect: numeric
        for a numeric dtype, or, in a CSV file (frame.attrs["text"]), for a column whose every cell
        reads as a number apart from markers like NA, which encode then reports as missing;
        otherwise categorical)."""
        columns = []
        for name, kind in specs:
            values = frame[name]
            if kind is None:
                kind = "numeric" if reads_as_numbers(values, frame.attrs.get("text", False)) else "categorical"
            if kind == "numeric":
                x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
                text = np.flatnonzero(values.notna().to_numpy() & np.isnan(x))
                if len(text):
                    raise ValueError(f'column "{name}" is read as numbers (:num) but holds text, e.g. '
                                     f'{values.iloc[text[0]]!r} at {show_rows(text)}; leave out ":num" to use its '
                                     "values as categories")
                x = x[np.isfinite(x)]   # missing values are reported by encode, with their rows
                mean, std = moments(x)
                columns.append(ContextColumn(name=name, kind="numeric", mean=mean, std=std,
                                             min=float(x.min()) if len(x) else None,
                                             max=float(x.max()) if len(x) else None))
            else:
                columns.append(ContextColumn(name=name, kind="categorical",
                                             categories=sorted(set(as_labels(values, source).dropna()))))
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
            labels = as_labels(frame[col.name], source)
            codes = pd.Index(col.categories or []).get_indexer(labels.to_numpy())
            absent = np.flatnonzero(labels.isna().to_numpy())
            unknown = np.flatnonzero((codes < 0) & ~labels.isna().to_numpy())
            if len(absent):
                problems.append(f'context column "{col.name}": missing value at {show_rows(absent)}')
            if len(unknown):
                problems.append(unknown_labels(f'context column "{col.name}"', labels, unknown, col.categories or [],
                                               "value")
                                + "; the scorer has no embedding for a category unseen in training: drop these rows, "
                                "or refit on a table that includes the category")
            cat[:, j] = codes
        for j, col in enumerate(self.numeric):
            if col.name not in frame.columns:
                problems.append(f'missing context column "{col.name}"{did_you_mean(col.name, frame.columns)}')
                continue
            x = pd.to_numeric(frame[col.name], errors="coerce").to_numpy(dtype=float)
            bad = np.flatnonzero(~np.isfinite(x))
            if len(bad):
                problems.append(f'context column "{col.name}": expected finite numbers, got missing/non-numeric/inf at {show_rows(bad)}')
            z = _standardise(x, col.mean, col.std)
            far = np.flatnonzero(np.isfinite(x) & ~np.isfinite(z))
            if len(far):
                problems.append(f'context column "{col.name}": {x[far[0]]:g} at {show_rows(far)} is too far from the '
                                f"training values (mean {col.mean:.6g}, std {col.std:.6g}) to be standardised")
            num[:, j] = z
        if problems:
            raise InputError(source, problems)
        return torch.from_numpy(cat), torch.from_numpy(num)

    def out_of_range(self, frame: pd.DataFrame) -> list[str]:
        """One line per numeric column of `frame` with values far outside the training range: more
        than FAR_OUTSIDE training std below its min or above its max (std 1 for a constant column).
        Names the column, the number of rows, the first rows, and the range seen against the range
        trained on. Missing columns and non-finite values are left to `encode`."""
        notes = []
        for col in self.numeric:
            if col.name not in frame.columns:
                continue
            x = pd.to_numeric(frame[col.name], errors="coerce").to_numpy(dtype=float)
            lo, hi = col.training_range()
            margin = FAR_OUTSIDE * (col.std or 1.0)
            with np.errstate(invalid="ignore"):
                far = np.flatnonzero(np.isfinite(x) & ((x < lo - margin) | (x > hi + margin)))
            if len(far):
                seen = x[np.isfinite(x)]
                trained = (f"{lo:.6g} .. {hi:.6g}" if col.min is not None else
                           f"about {lo:.6g} .. {hi:.6g} (mean +- {FALLBACK_STDS:g} std: saved without its range)")
                notes.append(f'context column "{col.name}": {len(far)} row(s) far outside the training range '
                             f"(more than {margin:.3g}, {FAR_OUTSIDE:g} training std, beyond it) at {show_rows(far)}: "
                             f"values {seen.min():.6g} .. {seen.max():.6g}, trained on {trained}; the scorer "
                             "extrapolates there, so its scores are less reliable")
        return notes


#: Text that stands for a missing number in a numeric column (pandas' default NA strings). Feature
#: and categorical context labels keep such text as it is: there only an empty cell is missing.
NA_TEXT = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def reads_as_numbers(values: pd.Series, text: bool) -> bool:
    """Whether a column holds numbers: a numeric dtype (not bool), or, read from text (`text`: a CSV
    file, where pandas leaves a column of numbers with an NA among them as text), cells that are all
    numbers or missing-number markers (NA_TEXT), at least one a number."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return False
    if pd.api.types.is_numeric_dtype(values.dtype):
        return True
    present = values.dropna() if text else values.iloc[:0]
    if not len(present) or not all(isinstance(v, str) for v in present.unique()):
        return False
    numbers = pd.to_numeric(present, errors="coerce")
    blank = present.str.strip().isin(NA_TEXT)
    return bool(numbers.notna().any() and (numbers.notna() | blank).all())


def moments(x: np.ndarray) -> tuple[float, float]:
    """(mean, std) of finite values x, std 1.0 when they do not vary; computed on x / max|x| where
    the plain sums overflow (values near the largest float64)."""
    if not len(x):
        return 0.0, 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(np.mean(x)), float(np.std(x))
        if not (np.isfinite(mean) and np.isfinite(std)):
            top = float(np.abs(x).max())
            mean, std = float(np.mean(x / top)) * top, float(np.std(x / top)) * top
    return mean, (std if std > 0 else 1.0)


def _standardise(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(x - mean) / std as float32 values; inf where even x / std - mean / std is beyond a float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = (x - mean) / std
        redo = np.isfinite(x) & ~np.isfinite(z)
        if redo.any():
            z[redo] = x[redo] / std - mean / std
        z[np.abs(z) > np.finfo(np.float32).max] = np.inf
    return z
