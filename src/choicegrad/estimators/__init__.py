"""Gradient estimators: training signals from a scorer back into any policy over rows.

    est = get("st-gumbel", tau=0.5)            # or "reinforce", k=8, baseline="rloo", ...
    out = est(logits, score_fn, mask=mask, fixed=fixed, generator=rng)   # per-slot logits (B, S, V)
    out = est(gen.policy(ctx), score_fn, generator=rng)                  # any generator, same loss
    out.loss.backward()                        # gradient of -E[score], averaged over the batch
                                               # (trajectory-balance: of its TB loss, see there)

score_fn (N, S, V) float -> (N,), higher is better. `available()` is the one list of method names;
`Policy` (policy.py) is what an estimator asks of a generator; one module per family.
"""

from __future__ import annotations

from choicegrad.estimators import (  # noqa: F401  (register the methods)
    aligner, relaxed, score_function, supervised, trajectory_balance)
from choicegrad.estimators.api import SELECT_METHODS, select, soft_lookup
from choicegrad.estimators.base import MASK_VALUE, check_tau, vocab_mask
from choicegrad.estimators.contract import Estimator, EstimatorOutput, available, families, get, get_class, register
from choicegrad.estimators.exact import enumerate_rows, exact_expectation, exact_objective
from choicegrad.estimators.gumbel import conditional_gumbel, gumbel_max, gumbel_softmax, sample_gumbel
from choicegrad.estimators.policy import LogitsPolicy, Policy
from choicegrad.estimators.schedules import Constant, Cosine, Exponential

__all__ = [
    "MASK_VALUE", "SELECT_METHODS", "Constant", "Cosine", "Estimator", "EstimatorOutput", "Exponential",
    "LogitsPolicy", "Policy", "available", "check_tau", "conditional_gumbel", "enumerate_rows",
    "exact_expectation", "exact_objective", "families", "get", "get_class", "gumbel_max", "gumbel_softmax", "register",
    "sample_gumbel", "select", "soft_lookup", "vocab_mask",
]
