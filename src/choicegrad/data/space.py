"""Choice spaces: ordered slots, each with its own vocabulary, and rows <-> category indices.

A row is one category index per slot; `MISSING` (-1) marks a slot that a data row does not observe.
Vocabularies are sorted label strings, so the same table read from CSV or Parquet, in any row order,
gives the same space.
"""

from __future__ import annotations

import decimal
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from typing import Optional

from pydantic import BaseModel, field_validator

from choicegrad.errors import InputError, did_you_mean, show_rows
from choicegrad.io import read_json_object

MISSING = -1


_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE, _FALSE = ("True", "true", "TRUE"), ("False", "false", "FALSE")
#: Longest text read as a number (longer digit strings are identifiers, and Python's int() refuses
#: more than 4,300 digits).
MAX_NUMBER_TEXT = 400


def label_of(value) -> Optional[str]:
    """One cell as a category label, whatever its neighbours: None for a missing value (None, NaN,
    pandas' NA); a number in one canonical form, whether stored as a number or written as text
    (3, 3.0, "3.0", "+3", "003" and "3e0" are all "3"; 2.5 and "2.50" are "2.5"); booleans as
    "True"/"False" (also written true/TRUE); any other text as it is (NA, None, n/a included).
    ValueError for a list, record or array: not one label."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value != value:
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, decimal.Decimal):                # Parquet decimal columns
        return label_of(str(value)) if value.is_finite() else str(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_NUMBER_TEXT:                   # not a measured number: an identifier, kept as text
            return value
        if _INTEGER.fullmatch(text):
            return str(int(text))
        if _DECIMAL.fullmatch(text):
            number = float(text)
            return label_of(number) if math.isfinite(number) else value   # 1e400: beyond a float64, kept as written
        if text in _TRUE or text in _FALSE:
            return "True" if text in _TRUE else "False"
        return value
    if isinstance(value, (list, tuple, dict, set, np.ndarray)):
        raise ValueError(f"{type(value).__name__} {str(value)[:40]!r}")
    return str(value)


_NUMBER_START = frozenset("+-.0123456789")


def _labels_of(uniques) -> list:
    """label_of of each unique value; text that cannot read as a number or a boolean (it neither
    starts like a number nor parses as one, is no true/false word, has no blanks around it) is its
    own label, found without a Python call per value (ids: one distinct value per row)."""
    if len(uniques) <= 1000:
        return [label_of(u) for u in uniques]
    uniques = np.asarray(uniques, dtype=object)      # an Arrow-backed string array too
    text = pd.Series(uniques, dtype=object)
    is_str = text.map(type).eq(str).to_numpy()
    if not is_str.any():
        return [label_of(u) for u in uniques]
    words = text.where(is_str, "0")
    stripped = words.str.strip()
    starts = stripped.str[:1].isin(_NUMBER_START).to_numpy().copy()
    # starts like a number and reads as one (e.g. "3-17" does not): label_of decides
    starts[starts] = ~np.isnan(pd.to_numeric(stripped[starts], errors="coerce").to_numpy(dtype=float))
    own = (is_str & words.eq(stripped).to_numpy() & ~starts & ~stripped.isin(_TRUE + _FALSE).to_numpy()
           & stripped.str.len().gt(0).to_numpy())
    labels = list(uniques)
    for i in np.flatnonzero(~own):
        labels[i] = label_of(uniques[i])
    return labels


def as_labels(values: pd.Series, source: str = "table") -> pd.Series:
    """Category labels as strings (object dtype), missing values as None: label_of of each cell, so a
    value gets the same label in any column, file or format. InputError naming `source` and the
    column for cells holding lists, records or arrays (nested Parquet types)."""
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        labels = _labels_of(uniques)
    except (TypeError, ValueError) as exc:     # unhashable (a list or an array) or nested
        nested = np.flatnonzero(values.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray))).to_numpy())
        if not len(nested):
            raise InputError(source, [f'column "{values.name}": a value cannot be read as a label ({exc})']) from None
        first = values.iloc[nested[0]]
        raise InputError(source, [f'column "{values.name}" holds lists or records, not one label per cell (e.g. '
                                  f"{str(first)[:40]!r} at {show_rows(nested)}); flatten it into one column per "
                                  "element, or join each into text"]) from None
    table = np.array(labels + [None], dtype=object)
    return pd.Series(table[codes], index=values.index, dtype=object)


class Slot(BaseModel):
    """One slot (feature) and its vocabulary."""

    name: str
    categories: list[str]

    @field_validator("categories")
    @classmethod
    def _unique_nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a slot needs at least one category")
        if len(set(v)) != len(v):
            raise ValueError("categories must be unique")
        return v


class ChoiceSpace(BaseModel):
    """Ordered slots with their own vocabularies."""

    slots: list[Slot]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, features: Sequence[str]) -> ChoiceSpace:
        """Build the space from the distinct non-missing labels of each feature column (sorted)."""
        return cls(
            slots=[
                Slot(name=f, categories=sorted(set(as_labels(frame[f]).dropna())))
                for f in features
            ]
        )

    @classmethod
    def declared(cls, frame: pd.DataFrame, features: Sequence[str], declaration: dict[str, list[str]] | None,
                 source: str = "space") -> ChoiceSpace:
        """The space of `features`: each declared feature takes the categories `declaration` lists, in
        that order (measured or not: 20 amino acids, 4 bases, a catalogue), the others the distinct
        labels of `frame` (sorted, as from_frame). InputError naming `source` for a declared name that
        is not a feature; labels of `frame` outside the declaration are reported by `encode`."""
        if not declaration:
            return cls.from_frame(frame, features)
        problems = [f'"{name}" is not among the features ({", ".join(features[:12])}){did_you_mean(name, features)}'
                    for name in declaration if name not in features]
        declared = {f: [label_of(c) for c in cats] for f, cats in declaration.items() if f in features}
        for f, cats in declared.items():
            dup = sorted(c for c, n in Counter(cats).items() if n > 1 or c is None)
            if dup or not cats:
                problems.append(f'"{f}": expected distinct, non-empty labels (a cell that reads as a number is that '
                                f"number: 1 and 1.0 are one label), got {', '.join(map(repr, dup[:5])) or 'none'}")
        if problems:
            raise InputError(source, problems)
        return cls(slots=[Slot(name=f, categories=declared[f]) if f in declared
                          else Slot(name=f, categories=sorted(set(as_labels(frame[f]).dropna()))) for f in features])

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.slots]

    @property
    def sizes(self) -> list[int]:
        return [len(s.categories) for s in self.slots]

    @property
    def num_slots(self) -> int:
        return len(self.slots)

    @property
    def max_size(self) -> int:
        return max(self.sizes)

    def num_rows(self) -> int:
        """How many distinct complete rows the space holds (exact: a Python int, however large)."""
        return math.prod(self.sizes)

    def mask(self) -> torch.Tensor:
        """(S, V_max) bool: True where a slot has a category at that index (padding is False)."""
        sizes = torch.tensor(self.sizes)
        return torch.arange(self.max_size)[None, :] < sizes[:, None]

    def index_of(self, slot: str, label: str) -> int:
        """Category index of `label` in `slot`; InputError naming both when absent."""
        if slot not in self.names:
            raise InputError("--fix", [f'unknown feature "{slot}"{did_you_mean(slot, self.names)}'])
        cats = self.slots[self.names.index(slot)].categories
        if label not in cats:
            raise InputError(
                "--fix",
                [f'feature "{slot}" has no category "{label}"{did_you_mean(label, cats)}'],
            )
        return cats.index(label)

    def encode(self, frame: pd.DataFrame, source: str = "rows", allow_missing: bool = True,
               unknown: str = "error") -> torch.Tensor:
        """Feature columns of `frame` -> (N, S) long indices, MISSING where a value is absent.

        Unknown categories are an error unless `unknown="missing"` asks to treat them as missing
        (never mapped to another category); missing values are an error when `allow_missing` is
        False. Every problem is reported in one InputError naming `source`.
        """
        if unknown not in ("error", "missing"):
            raise InputError("--unknown", [f'expected "error" or "missing", got "{unknown}"'])
        problems: list[str] = []
        out = np.full((len(frame), self.num_slots), MISSING, dtype=np.int64)
        for s, slot in enumerate(self.slots):
            if slot.name not in frame.columns:
                problems.append(f'missing feature column "{slot.name}"')
                continue
            labels = as_labels(frame[slot.name], source)
            codes = pd.Index(slot.categories).get_indexer(labels.to_numpy()).astype(np.int64)
            absent = labels.isna().to_numpy()
            unknown_at = np.flatnonzero((codes < 0) & ~absent)
            if len(unknown_at) and unknown == "missing":
                codes[unknown_at] = MISSING
            elif len(unknown_at):
                problems.append(unknown_labels(f'column "{slot.name}"', labels, unknown_at, slot.categories))
            if not allow_missing and absent.any():
                problems.append(f'column "{slot.name}": missing value at {show_rows(np.flatnonzero(absent))}')
            out[:, s] = codes
        if problems:
            raise InputError(source, problems)
        return torch.from_numpy(out)

    def decode(self, rows: torch.Tensor) -> pd.DataFrame:
        """(N, S) long indices -> DataFrame of labels (None where MISSING)."""
        idx = rows.detach().cpu().numpy()
        cols = {}
        for s, slot in enumerate(self.slots):
            cats = np.array(slot.categories + [None], dtype=object)
            cols[slot.name] = cats[np.where(idx[:, s] < 0, len(slot.categories), idx[:, s])]
        return pd.DataFrame(cols)


def unknown_labels(column: str, labels: pd.Series, at: np.ndarray, known: Sequence[str],
                   noun: str = "category") -> str:
    """The problem line for labels (N,) at positions `at` that are not among `known`: the column, up
    to five of the values, their rows and the known labels ('column "s0": unknown category 'z' at
    row 2; known: a, b'). noun: "category" (features) or "value" (context columns)."""
    values = sorted(set(labels.iloc[at]))[:5]
    nouns = noun if len(values) == 1 else {"category": "categories"}.get(noun, noun + "s")
    return (f"{column}: unknown {nouns} {', '.join(map(repr, values))} at {show_rows(at)}; "
            f"known: {_preview(known)}")


def _preview(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def read_space(path: str | Path) -> dict[str, list[str]]:
    """A space declaration file: a JSON object {"feature": ["category", ...], ...}. Categories are
    strings (integral numbers become labels as in tables: 3 -> "3"), unique, at least one per
    feature. InputError naming the file and every bad entry."""
    doc = read_json_object(path)
    problems, out = [], {}
    if not doc:
        problems.append('expected at least one feature, e.g. {"s0": ["A", "C", "G", "T"]}')
    for name, cats in doc.items():
        if not isinstance(cats, list) or not cats:
            problems.append(f'"{name}": expected a non-empty list of categories, got {json.dumps(cats)[:60]}')
            continue
        labels = []
        for c in cats:
            if isinstance(c, bool) or not isinstance(c, (str, int, float)):
                problems.append(f'"{name}": category {json.dumps(c)[:40]} is not a label (a string or a number)')
                break
            if isinstance(c, str) and not c.strip():
                problems.append(f'"{name}": category {json.dumps(c)} is empty; an empty cell is a missing value, '
                                "never a category")
                break
            labels.append(label_of(c))           # as a table's cell: "1.0" and 1 are both the label "1"
        else:
            dup = sorted(c for c, n in Counter(labels).items() if n > 1)
            if dup:
                problems.append(f'"{name}": categor{"ies" if len(dup) > 1 else "y"} {", ".join(map(repr, dup[:5]))} '
                                "listed more than once")
            out[str(name)] = labels
    if problems:
        raise InputError(str(path), problems)
    return out
