"""Supervised / data-driven estimators: weighted per-slot cross-entropy and reward-augmented maximum
likelihood (RAML, Norouzi et al. 2016). They fit rows by likelihood rather than estimating grad E[score]
directly. Extra call inputs: targets (B, S) long with -1 = missing slot, target_scores (B,) float.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from choicegrad.estimators.base import (ScoreFn, call_scorer, check_int, check_tau, hard_rows, score_stats,
                                       unknown_name_error)
from choicegrad.estimators.contract import Estimator, EstimatorOutput, register
from choicegrad.estimators.gumbel import uniform
from choicegrad.estimators.policy import keep_fixed
from choicegrad.estimators.shard import batch_shard

WEIGHTINGS = ("inverse", "softmax", "rank", "uniform")


def check_targets(targets: Optional[Tensor], mask: Tensor, method: str) -> Tensor:
    """Validate targets: (B, S) integer, -1 = missing, other values valid categories under mask (B, S, V)."""
    B, S, V = mask.shape
    if targets is None:
        raise ValueError(f"{method} needs targets=(B, S) long data rows (-1 = missing slot)")
    if not isinstance(targets, Tensor) or targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor of shape (B, S), got {targets!r:.80}")
    if tuple(targets.shape) != (B, S):
        raise ValueError(f"targets must have shape (B, S)={(B, S)}, got {tuple(targets.shape)}")
    t = targets.to(device=mask.device, dtype=torch.long)
    if bool(((t < -1) | (t >= V)).any()):
        raise ValueError(f"targets must be -1 (missing) or a category in [0, {V})")
    ok = mask.gather(-1, t.clamp(min=0)[..., None])[..., 0] | (t < 0)
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
    required_options = ("targets",)
    family = "supervised"
    wants_data_rows = True

    def __init__(self, *, weighting: str = "softmax", temperature: float = 1.0):
        w = str(weighting).strip().lower()
        if w not in WEIGHTINGS:
            raise unknown_name_error(weighting, WEIGHTINGS, what="weighting")
        self.weighting, self.temperature = w, check_tau(temperature, "temperature")

    def estimate(self, policy, score_fn: ScoreFn, generator: Optional[torch.Generator],
                 targets: Optional[Tensor] = None, target_scores: Optional[Tensor] = None) -> EstimatorOutput:
        B, S, V = policy.mask.shape
        t = check_targets(targets, policy.mask, self.name)
        filled = policy.complete(t)                                          # (B, S)
        calls = 0
        if target_scores is None:
            scores = call_scorer(score_fn, hard_rows(filled, V), grad=False)
            calls = B
        else:
            scores = torch.as_tensor(target_scores, device=policy.mask.device)
            if tuple(scores.shape) != (B,):
                raise ValueError(f"target_scores must have shape (B,)=({B},), got {tuple(scores.shape)}")
        shard = batch_shard(generator)   # data parallelism: weights normalised over the global batch
        w = row_weights(scores, self.weighting, self.temperature) if shard is None else \
            shard.mine(row_weights(shard.whole(scores), self.weighting, self.temperature))
        ll = policy.log_prob(t[:, None, :], valid=(t >= 0)[:, None, :])[:, 0]  # (B,)
        loss = -(w * ll).mean()
        ent = policy.entropy(filled[:, None, :])
        stats = score_stats(scores, ent)
        stats["nll"] = float(-ll.detach().mean())
        stats["weight_max"] = float(w.max())
        return EstimatorOutput(sample=filled, samples=filled[:, None], scores=scores.detach()[:, None],
                               loss=loss, scorer_calls=calls, stats=stats, weights=w[:, None], entropy=ent)


@register("raml")
class RAML(Estimator):
    """Reward-augmented maximum likelihood: per context draw `m` candidate rows, weight them by
    softmax(score / temperature) within the context and fit them by cross-entropy over free slots.

    With targets: candidates are edits of the target row (each observed slot resampled uniformly among
    its valid categories with probability `edit_prob`; missing slots always drawn uniformly) -- a
    self-normalised importance-sampling version of RAML's exponentiated-payoff distribution with the
    scorer as reward. Without targets: candidates are the generator's own samples (a cross-entropy-
    method-like update). Fixed slots keep their value. `sample` = best-scoring candidate.
    data: whether a training loop should pass data rows as targets (edits of data rows) rather than
    let the policy propose its own candidates (the default).
    """

    call_options = ("targets",)
    family = "supervised"
    fit_defaults = {"m": "samples"}

    def __init__(self, *, m: int = 8, temperature: float = 1.0, edit_prob: float = 0.2, data: bool = False):
        m = check_int(m, "m")
        if not 0.0 <= float(edit_prob) <= 1.0:
            raise ValueError(f"edit_prob must be in [0, 1], got edit_prob={edit_prob!r}")
        self.m, self.temperature, self.edit_prob = int(m), check_tau(temperature, "temperature"), float(edit_prob)
        self.data = bool(data)

    @property
    def wants_data_rows(self) -> bool:
        return self.data

    def estimate(self, policy, score_fn: ScoreFn, generator: Optional[torch.Generator],
                 targets: Optional[Tensor] = None) -> EstimatorOutput:
        B, S, V = policy.mask.shape
        M = self.m
        if targets is None:
            cand = policy.sample(M, generator)
        else:
            t = check_targets(targets, policy.mask, self.name)[:, None, :].expand(B, M, S)
            edit = uniform((B, M, S), generator=generator, device=t.device) < self.edit_prob
            fresh = uniform_category(policy.mask.unsqueeze(1).expand(B, M, S, V), generator)
            cand = keep_fixed(torch.where(edit | (t < 0), fresh, t), policy.fixed)   # (B, M, S)
        scores = call_scorer(score_fn, hard_rows(cand, V), grad=False)      # (B, M)
        w = torch.softmax(scores.detach().float() / self.temperature, 1)
        loss = -(w * policy.log_prob(cand)).sum(1).mean()
        ent = policy.entropy(cand)
        stats = score_stats(scores, ent)
        stats["weight_max"] = float(w.max(1).values.mean())
        sample = cand[torch.arange(B, device=cand.device), scores.argmax(1)]
        return EstimatorOutput(sample=sample, samples=cand, scores=scores.detach(), loss=loss,
                               scorer_calls=B * M, stats=stats, weights=w, entropy=ent)
