"""Candidates as a table: one row per (context, rank), the features as labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from choicegrad.decoding.scoring import Candidates


def candidates_frame(space, cands: Candidates, contexts=None) -> pd.DataFrame:
    """One table row per (context, rank): the context's columns, the features (labels), `score` and
    `rank` (1 = best). contexts: DataFrame with one row per context (None: no context columns).
    Invalid candidates (a space smaller than K) are left out."""
    valid = cands.valid.cpu().numpy()
    b_idx, r_idx = np.nonzero(valid)
    rows = cands.rows.cpu()[torch.as_tensor(b_idx, dtype=torch.long), torch.as_tensor(r_idx, dtype=torch.long)]
    parts = [] if contexts is None else [contexts.iloc[b_idx].reset_index(drop=True)]
    out = pd.concat([*parts, space.decode(rows)], axis=1)
    out["score"] = cands.scores.cpu().numpy()[b_idx, r_idx]
    out["rank"] = r_idx + 1
    return out
