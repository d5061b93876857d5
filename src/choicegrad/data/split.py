"""Hold-out splits of a table: the rows below each context's score quantile, and the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd

from choicegrad.data.table import TableData
from choicegrad.errors import InputError


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
