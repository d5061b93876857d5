"""Context columns -> tensors: categorical columns as indices, numeric columns standardised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel

from choicegrad.data.space import as_labels
from choicegrad.errors import InputError, did_you_mean, show_rows


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
                x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
                text = np.flatnonzero(values.notna().to_numpy() & np.isnan(x))
                if len(text):
                    raise ValueError(f'column "{name}" is read as numbers (:num) but holds text, e.g. '
                                     f'{values.iloc[text[0]]!r} at {show_rows(text)}; leave out ":num" to use its '
                                     "values as categories")
                x = x[np.isfinite(x)]   # missing values are reported by encode, with their rows
                std = float(np.std(x)) if len(x) else 0.0
                columns.append(ContextColumn(name=name, kind="numeric", mean=float(np.mean(x)) if len(x) else 0.0,
                                             std=std if std > 0 else 1.0))
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
