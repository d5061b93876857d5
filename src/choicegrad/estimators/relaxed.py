"""Pathwise (relaxed / straight-through) estimators; they need a score_fn differentiable w.r.t. x.

Functional forms work on masked fp32 logits theta (..., V) and return (x (..., V), index (...,)):
x is what the scorer sees (soft rows, or exact one-hot rows carrying a surrogate gradient) and index is
the hard category. The registered estimators wrap them for (B, S, V) logits with masks and fixed slots.

References: Gumbel-softmax: Jang, Gu, Poole 2017 / Maddison, Mnih, Teh 2017; straight-through: Bengio,
Leonard, Courville 2013; Gumbel-Rao: Paulus, Maddison, Krause 2020; ReinMax: Liu et al. 2023.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from choicegrad.estimators.base import (MASK_VALUE, Estimator, EstimatorOutput, Prepared, ScoreFn, apply_fixed,
                   apply_fixed_index, call_scorer, check_int, check_tau, one_hot, register, score_stats)
from choicegrad.estimators.gumbel import conditional_gumbel, gumbel_max, sample_gumbel

_TINY = torch.finfo(torch.float32).tiny


def _straight(hard: Tensor, surrogate: Tensor) -> Tensor:
    """Forward value `hard` exactly, gradient of `surrogate`."""
    return hard + (surrogate - surrogate.detach())


def relax_soft(theta: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """softmax(theta / tau) and the argmax category (deterministic)."""
    return torch.softmax(theta / tau, -1), theta.detach().argmax(-1)


def relax_st(theta: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """Straight-through: forward one-hot argmax(theta), backward through softmax(theta / tau)."""
    index = theta.detach().argmax(-1)
    return _straight(one_hot(index, theta.shape[-1]), torch.softmax(theta / tau, -1)), index


def relax_gumbel(theta: Tensor, tau: float, generator: Optional[torch.Generator]) -> tuple[Tensor, Tensor]:
    """Gumbel-softmax relaxed sample softmax((theta + G) / tau); index = argmax(theta + G) ~ softmax(theta)."""
    z = theta + sample_gumbel(theta.shape, generator=generator, device=theta.device)
    return torch.softmax(z / tau, -1), z.detach().argmax(-1)


def relax_st_gumbel(theta: Tensor, tau: float, generator: Optional[torch.Generator]) -> tuple[Tensor, Tensor]:
    """Straight-through Gumbel-softmax: forward Gumbel-max one-hot, backward softmax((theta + G) / tau)."""
    y, index = relax_gumbel(theta, tau, generator)
    return _straight(one_hot(index, theta.shape[-1]), y), index


def relax_gumbel_rao(theta: Tensor, tau: float, k: int, generator: Optional[torch.Generator],
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Gumbel-Rao: forward one-hot D ~ softmax(theta); backward through the mean over k conditional
    Gumbel draws G | D of softmax((theta + G) / tau) (G held fixed, as in ST-Gumbel).

    Returns (x, index, soft) with soft (..., V) the averaged relaxed sample.
    """
    index = gumbel_max(theta, generator=generator)
    z = conditional_gumbel(theta, index, k, generator=generator)   # (k, ..., V), detached
    soft = torch.softmax((theta + (z - theta.detach())) / tau, -1).mean(0)
    return _straight(one_hot(index, theta.shape[-1]), soft), index, soft


def relax_reinmax(theta: Tensor, tau: float, generator: Optional[torch.Generator]) -> tuple[Tensor, Tensor]:
    """ReinMax (Liu et al. 2023, Algorithm 2): forward D ~ softmax(theta); gradient
    2 J(pi_1)^T g - 1/2 J(pi_0)^T g with pi_0 = softmax(theta), pi_1 = (D + softmax(theta / tau)) / 2,
    J(p) = diag(p) - p p^T. Written as in the paper: pi_1 <- softmax(sg(log pi_1 - theta) + theta).
    """
    pi0 = torch.softmax(theta, -1)
    index = gumbel_max(theta, generator=generator)
    D = one_hot(index, theta.shape[-1])
    pi1 = (D + torch.softmax(theta / tau, -1)) / 2
    # log pi_1 is -inf where pi_1 underflows (masked categories); use the finite mask value there.
    shift = torch.where(pi1 > 0, torch.log(pi1.clamp_min(_TINY)) - theta, torch.full_like(pi1, MASK_VALUE))
    pi1 = torch.softmax(shift.detach() + theta, -1)
    pi2 = 2 * pi1 - pi0 / 2
    return _straight(D, pi2), index


class _Relaxed(Estimator):
    """Common driver: relax, put fixed slots back, score with gradient, loss = -mean score."""

    uses_tau = True
    call_options = ("tau",)
    soft_forward = False  # True when the scorer sees soft rows (soft, gumbel)

    def __init__(self, *, tau: float = 1.0, score_hard: bool = False):
        self.tau = check_tau(tau)
        self.score_hard = bool(score_hard)

    def _relax(self, theta: Tensor, tau: float, generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError  # pragma: no cover

    def estimate(self, prep: Prepared, score_fn: ScoreFn, generator: Optional[torch.Generator],
                 tau: Optional[float] = None) -> EstimatorOutput:
        tau = self.tau if tau is None else check_tau(tau)
        B, S, V = prep.shape
        x, index = self._relax(prep.theta, tau, generator)
        x, index = apply_fixed(x, prep), apply_fixed_index(index, prep)
        scores = call_scorer(score_fn, x, grad=True)                       # (B,)
        loss = -scores.mean()
        stats = score_stats(scores, prep.theta, prep.free)
        stats["tau"] = tau
        calls = B
        if self.soft_forward and self.score_hard:
            hard = call_scorer(score_fn, one_hot(index, V), grad=False)
            stats["hard_score_mean"] = float(hard.float().mean())
            calls += B
        return EstimatorOutput(sample=index, samples=index[:, None], scores=scores.detach()[:, None],
                               loss=loss, scorer_calls=calls, stats=stats)


@register("soft")
class Soft(_Relaxed):
    """Deterministic relaxation: score_fn(softmax(logits / tau)). `sample` is argmax(logits) and
    `scores` the soft input's score; score_hard=True also scores the argmax rows (stats['hard_score_mean'])."""

    soft_forward = True

    def _relax(self, theta, tau, generator):
        return relax_soft(theta, tau)


@register("st")
class StraightThrough(_Relaxed):
    """Deterministic straight-through: forward one-hot argmax(logits), backward softmax(logits / tau)."""

    def _relax(self, theta, tau, generator):
        return relax_st(theta, tau)


@register("gumbel")
class Gumbel(_Relaxed):
    """Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017): scorer sees softmax((logits + G) / tau).
    `sample` is the argmax of that relaxed sample (an exact categorical draw); `scores` are soft scores."""

    soft_forward = True

    def _relax(self, theta, tau, generator):
        return relax_gumbel(theta, tau, generator)


@register("st-gumbel")
class STGumbel(_Relaxed):
    """Straight-through Gumbel-softmax: hard Gumbel-max sample forward, Gumbel-softmax gradient."""

    def _relax(self, theta, tau, generator):
        return relax_st_gumbel(theta, tau, generator)


@register("gumbel-rao")
class GumbelRao(_Relaxed):
    """Gumbel-Rao (Paulus, Maddison, Krause 2020): ST-Gumbel whose backward is averaged over `k`
    Gumbel draws conditioned on the sampled category (same expectation as st-gumbel, lower variance)."""

    def __init__(self, *, tau: float = 1.0, k: int = 10, score_hard: bool = False):
        super().__init__(tau=tau, score_hard=score_hard)
        self.k = check_int(k, "k")

    def _relax(self, theta, tau, generator):
        x, index, _ = relax_gumbel_rao(theta, tau, self.k, generator)
        return x, index


@register("reinmax")
class ReinMax(_Relaxed):
    """ReinMax (Liu et al. 2023): second-order straight-through; forward D ~ softmax(logits)."""

    def _relax(self, theta, tau, generator):
        return relax_reinmax(theta, tau, generator)
