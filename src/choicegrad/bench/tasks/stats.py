"""NaN-aware summaries of ground-truth scores, shared by table landscapes and item tasks.

NaN marks a row without a score (an unmeasured row, or an item combination that uses padding).
"""

from __future__ import annotations

import torch
from torch import Tensor

STAT_NAMES = ("min", "max", "mean", "median")


def nan_stats(values: Tensor) -> dict[str, Tensor]:
    """values (B, M) -> {min, max, mean, median}: (B,) each, over the non-NaN entries of each row.

    The median of an even count is the mean of the two middle values (as pandas / numpy). A row with
    no value gives NaN everywhere.
    """
    ok = ~torch.isnan(values)
    count = ok.sum(-1)
    lo = values.masked_fill(~ok, float("inf")).amin(-1)
    hi = values.masked_fill(~ok, float("-inf")).amax(-1)
    mean = (values.double().nan_to_num(0.0).sum(-1) / count.clamp(min=1)).to(values.dtype)
    ordered = values.masked_fill(~ok, float("inf")).sort(-1).values                  # NaN pushed last
    a = ((count - 1).clamp(min=0) // 2).unsqueeze(-1)
    b = (count // 2).clamp(max=values.shape[-1] - 1).unsqueeze(-1)
    median = (ordered.gather(-1, a) + ordered.gather(-1, b)).squeeze(-1) / 2
    empty = count == 0
    nan = torch.full_like(lo, float("nan"))
    return {k: torch.where(empty, nan, v) for k, v in zip(STAT_NAMES, (lo, hi, mean, median))}


def nan_argmax(values: Tensor) -> tuple[Tensor, Tensor]:
    """values (B, M) -> (index (B,) long, value (B,)) of the best non-NaN entry of each row."""
    best = values.masked_fill(torch.isnan(values), float("-inf")).max(-1)
    return best.indices, values.gather(-1, best.indices.unsqueeze(-1)).squeeze(-1)
