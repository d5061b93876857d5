"""Supervised / data-driven estimators: weighted per-slot cross-entropy and reward-augmented maximum
likelihood (RAML, Norouzi et al. 2016). They fit rows by likelihood rather than estimating grad E[score]
directly. Extra call inputs: targets (B, S) long with -1 = missing slot, target_scores (B,) float.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from choicegrad.estimators.base import (Estimator, EstimatorOutput, Prepared, ScoreFn, apply_fixed_index, call_scorer,
                   check_int, check_tau, one_hot, register, score_stats, unknown_name_error)
from choicegrad.estimators.gumbel import gumbel_max, uniform

WEIGHTINGS = ("inverse", "softmax", "rank", "uniform")


def row_log_likelihood(theta: Tensor, rows: Tensor, valid: Tensor) -> Tensor:
    """Sum over valid slots of log softmax(theta)[slot, row value].

    theta (B, S, V), rows (B, M, S) long (any value where invalid), valid (B, M, S) bool -> (B, M).
    """
    B, M, S = rows.shape
    logp = torch.log_softmax(theta, -1).unsqueeze(1).expand(B, M, S, theta.shape[-1])
    lp = logp.gather(-1, rows.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, lp, torch.zeros_like(lp)).sum(-1)


def check_targets(targets: Optional[Tensor], prep: Prepared, method: str) -> Tensor:
    """Validate targets: (B, S) integer, -1 = missing, other values valid categories under the mask."""
    B, S, V = prep.shape
    if targets is None:
        raise ValueError(f"{method} needs targets=(B, S) long data rows (-1 = missing slot)")
    if not isinstance(targets, Tensor) or targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor of shape (B, S), got {targets!r:.80}")
    if tuple(targets.shape) != (B, S):
        raise ValueError(f"targets must have shape (B, S)={(B, S)}, got {tuple(targets.shape)}")
    t = targets.to(device=prep.theta.device, dtype=torch.long)
    if bool(((t < -1) | (t >= V)).any()):
        raise ValueError(f"targets must be -1 (missing) or a category in [0, {V})")
    ok = prep.mask.gather(-1, t.clamp(min=0)[..., None])[..., 0] | (t < 0)
    if not bool(ok.all()):
        raise ValueError(f"targets use masked (invalid) categories at (row, slot) {(~ok).nonzero()[:5].tolist()}")
    return t


def uniform_category(mask: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Uniform draw among valid categories: mask (..., V) bool -> (...,) long."""
    u = uniform(mask.shape, generator=generator, device=mask.device)
    return torch.where(mask, u, torch.full_like(u, -1.0)).argmax(-1)


def row_weights(scores: Tensor, weighting: str, temperature: float) -> Tensor:
    """Per-row weights (B,) from scores (B,), normalised to mean 1 over the batch.

    inverse: 1/score (the users' recipe; scores must be > 0; note it up-weights LOW scores, i.e. it
    treats the score as a cost); softmax: softmax(score / temperature) over the batch, any sign;
    rank: rank of the score, 1 = lowest ... B = highest (ties broken by position); uniform: all 1.
    """
    s = scores.detach().float()
    if weighting == "inverse":
        if not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
            raise ValueError(f"weighting='inverse' needs positive finite scores; got min {float(s.min()):.4g} "
                             f"(use weighting='softmax' or 'rank' for scores of any sign)")
        w = 1.0 / s
    elif weighting == "softmax":
        w = torch.softmax(s / temperature, 0)
    elif weighting == "rank":
        w = s.argsort().argsort().float() + 1.0
    else:
        w = torch.ones_like(s)
    return w / w.mean()


@register("weighted-ce")
class WeightedCE(Estimator):
    """Per-slot cross-entropy to data rows, summed over observed slots, weighted per row by its score.

    loss = mean_b w_b * CE_b, CE_b = -sum_{observed free s} log softmax(logits_b,s)[targets_b,s];
    weights from `row_weights(scores, weighting, temperature)` (mean 1 over the batch). Missing
    (-1) and fixed slots are left out (their logits get zero gradient). The output rows are the
    targets with fixed slots set to their fixed value and missing slots filled by the model's argmax;
    scores come from `target_scores`, or, when it is None, from score_fn on those rows. Output:
    samples = those rows (B, 1, S), scores = the scores used (B, 1), weights = w (B, 1).
    """

    call_options = ("targets", "target_scores")

    def __init__(self, *, weighting: str = "softmax", temperature: float = 1.0):
        w = str(weighting).strip().lower()
        if w not in WEIGHTINGS:
            raise unknown_name_error(weighting, WEIGHTINGS, what="weighting")
        self.weighting, self.temperature = w, check_tau(temperature, "temperature")

    def estimate(self, prep: Prepared, score_fn: ScoreFn, generator: Optional[torch.Generator],
                 targets: Optional[Tensor] = None, target_scores: Optional[Tensor] = None) -> EstimatorOutput:
        B, S, V = prep.shape
        t = check_targets(targets, prep, self.name)
        filled = apply_fixed_index(torch.where(t >= 0, t, prep.theta.detach().argmax(-1)), prep)
        calls = 0
        if target_scores is None:
            scores = call_scorer(score_fn, one_hot(filled, V), grad=False)
            calls = B
        else:
            scores = torch.as_tensor(target_scores, device=prep.theta.device)
            if tuple(scores.shape) != (B,):
                raise ValueError(f"target_scores must have shape (B,)=({B},), got {tuple(scores.shape)}")
        w = row_weights(scores, self.weighting, self.temperature)
        valid = ((t >= 0) & prep.free)[:, None, :]
        ll = row_log_likelihood(prep.theta, t[:, None, :], valid)[:, 0]  # (B,)
        loss = -(w * ll).mean()
        stats = score_stats(scores, prep.theta, prep.free)
        stats["nll"] = float(-ll.detach().mean())
        stats["weight_max"] = float(w.max())
        return EstimatorOutput(sample=filled, samples=filled[:, None], scores=scores.detach()[:, None],
                               loss=loss, scorer_calls=calls, stats=stats, weights=w[:, None])


@register("raml")
class RAML(Estimator):
    """Reward-augmented maximum likelihood: per context draw `m` candidate rows, weight them by
    softmax(score / temperature) within the context and fit them by cross-entropy over free slots.

    With targets: candidates are edits of the target row (each observed slot resampled uniformly among
    its valid categories with probability `edit_prob`; missing slots always drawn uniformly) -- a
    self-normalised importance-sampling version of RAML's exponentiated-payoff distribution with the
    scorer as reward. Without targets: candidates are the generator's own samples (a cross-entropy-
    method-like update). Fixed slots keep their value. `sample` = best-scoring candidate.
    """

    call_options = ("targets",)

    def __init__(self, *, m: int = 8, temperature: float = 1.0, edit_prob: float = 0.2):
        m = check_int(m, "m")
        if not 0.0 <= float(edit_prob) <= 1.0:
            raise ValueError(f"edit_prob must be in [0, 1], got edit_prob={edit_prob!r}")
        self.m, self.temperature, self.edit_prob = int(m), check_tau(temperature, "temperature"), float(edit_prob)

    def estimate(self, prep: Prepared, score_fn: ScoreFn, generator: Optional[torch.Generator],
                 targets: Optional[Tensor] = None) -> EstimatorOutput:
        B, S, V = prep.shape
        M = self.m
        if targets is None:
            cand = gumbel_max(prep.theta.detach().unsqueeze(1).expand(B, M, S, V), generator=generator)
        else:
            t = check_targets(targets, prep, self.name)[:, None, :].expand(B, M, S)
            edit = uniform((B, M, S), generator=generator, device=t.device) < self.edit_prob
            fresh = uniform_category(prep.mask.unsqueeze(1).expand(B, M, S, V), generator)
            cand = torch.where(edit | (t < 0), fresh, t)
        cand = apply_fixed_index(cand, prep)                                # (B, M, S)
        scores = call_scorer(score_fn, one_hot(cand, V), grad=False)        # (B, M)
        w = torch.softmax(scores.detach().float() / self.temperature, 1)
        ll = row_log_likelihood(prep.theta, cand, prep.free[:, None, :].expand(B, M, S))
        loss = -(w * ll).sum(1).mean()
        stats = score_stats(scores, prep.theta, prep.free)
        stats["weight_max"] = float(w.max(1).values.mean())
        best = scores.argmax(1)
        sample = cand[torch.arange(B, device=cand.device), best]
        return EstimatorOutput(sample=sample, samples=cand, scores=scores.detach(), loss=loss,
                               scorer_calls=B * M, stats=stats, weights=w)
