"""Pathwise (relaxed / straight-through) estimators; they need a score_fn differentiable w.r.t. x.

Each asks the policy for a relaxed row (`Policy.relaxed`, built on the relaxations of api.py) and maximises its score.
"""

from __future__ import annotations

from typing import Optional

import torch

from choicegrad.estimators.base import ScoreFn, call_scorer, check_int, check_tau, hard_rows, score_stats
from choicegrad.estimators.contract import Estimator, EstimatorOutput, register


class _Relaxed(Estimator):
    """Common driver: a relaxed row from the policy (fixed slots kept), scored with gradient;
    loss = -mean score. Subclasses only name the relaxation (see `select`)."""

    uses_tau = True
    family = "pathwise"
    call_options = ("tau",)
    soft_forward = False  # True when the scorer sees soft rows (soft, gumbel)

    def __init__(self, *, tau: float = 1.0, score_hard: bool = False):
        self.tau = check_tau(tau)
        self.score_hard = bool(score_hard)

    def estimate(self, policy, score_fn: ScoreFn, generator: Optional[torch.Generator],
                 tau: Optional[float] = None) -> EstimatorOutput:
        tau = self.tau if tau is None else check_tau(tau)
        B, S, V = policy.mask.shape
        x, index, ent = policy.relaxed(self.name, tau, generator, k=getattr(self, "k", 10))   # k: gumbel-rao draws
        scores = call_scorer(score_fn, x, grad=True)                       # (B,)
        stats = score_stats(scores, ent)
        stats["tau"] = tau
        calls = B
        if self.soft_forward and self.score_hard:
            hard = call_scorer(score_fn, hard_rows(index, V), grad=False)
            stats["hard_score_mean"] = float(hard.float().mean())
            calls += B
        return EstimatorOutput(sample=index, samples=index[:, None], scores=scores.detach()[:, None],
                               loss=-scores.mean(), scorer_calls=calls, stats=stats, entropy=ent)


@register("soft")
class Soft(_Relaxed):
    """Deterministic relaxation: score_fn(softmax(logits / tau)). `sample` is argmax(logits) and
    `scores` the soft input's score; score_hard=True also scores the argmax rows (stats['hard_score_mean'])."""

    soft_forward = True


@register("st")
class StraightThrough(_Relaxed):
    """Deterministic straight-through: forward one-hot argmax(logits), backward softmax(logits / tau)."""


@register("gumbel")
class Gumbel(_Relaxed):
    """Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017): scorer sees softmax((logits + G) / tau).
    `sample` is the argmax of that relaxed sample (an exact categorical draw); `scores` are soft scores."""

    soft_forward = True


@register("st-gumbel")
class STGumbel(_Relaxed):
    """Straight-through Gumbel-softmax: hard Gumbel-max sample forward, Gumbel-softmax gradient."""


@register("gumbel-rao")
class GumbelRao(_Relaxed):
    """Gumbel-Rao (Paulus, Maddison, Krause 2020): ST-Gumbel whose backward is averaged over `k`
    Gumbel draws conditioned on the sampled category (same expectation as st-gumbel, lower variance)."""

    def __init__(self, *, tau: float = 1.0, k: int = 10, score_hard: bool = False):
        super().__init__(tau=tau, score_hard=score_hard)
        self.k = check_int(k, "k")


@register("reinmax")
class ReinMax(_Relaxed):
    """ReinMax (Liu et al. 2023): second-order straight-through; forward D ~ softmax(logits)."""
