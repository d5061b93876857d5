"""Gradient estimators: training signals from a scorer back into a generator's per-slot logits.

    est = get("st-gumbel", tau=0.5)            # or "reinforce", k=8, baseline="rloo", ...
    out = est(logits, score_fn, mask=mask, fixed=fixed, generator=gen)
    out.loss.backward()                        # gradient of -E[score], averaged over the batch

logits (B, S, V); score_fn (N, S, V) float -> (N,), higher is better. See `available()` for methods.
"""

from __future__ import annotations

from choicegrad.estimators import aligner
from choicegrad.estimators import relaxed
from choicegrad.estimators import score_function
from choicegrad.estimators import supervised  # noqa: F401  (register the methods)
from choicegrad.estimators.api import SELECT_METHODS, select, soft_lookup
from choicegrad.estimators.base import (MASK_VALUE, Estimator, EstimatorOutput, available, check_tau, get, register,
                   vocab_mask)
from choicegrad.estimators.exact import enumerate_rows, exact_expectation
from choicegrad.estimators.gumbel import conditional_gumbel, gumbel_max, gumbel_softmax, sample_gumbel
from choicegrad.estimators.schedules import Constant, Cosine, Exponential

__all__ = [
    "MASK_VALUE", "SELECT_METHODS", "Constant", "Cosine", "Estimator", "EstimatorOutput", "Exponential",
    "available", "check_tau", "conditional_gumbel", "enumerate_rows",
    "exact_expectation", "get", "gumbel_max", "gumbel_softmax", "register", "sample_gumbel", "select",
    "soft_lookup", "vocab_mask",
]
