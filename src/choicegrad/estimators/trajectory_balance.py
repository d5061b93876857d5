"""Trajectory balance (Malkin et al. 2022, "Trajectory balance: improved credit assignment in
GFlowNets"): a reward-proportional objective. Instead of maximising E[score], the policy is fitted to
the distribution pi(x) = exp(f(x) / T) / Z of each context, so it keeps every good row in proportion to
exp(score / T) rather than collapsing onto the best one.

A row is built slot by slot and each partial row has one parent, so a trajectory is the row itself and
the backward policy is trivial: the trajectory-balance residual of a row is
    delta(x) = log Z + log p(x) - f(x) / T,
and the loss is mean over samples of delta^2 with on-policy samples (sampling is not differentiated).
Its expected gradient w.r.t. the policy, 2 E[delta * grad log p], equals 2 grad KL(p || pi) for any
log Z (E[grad log p] = 0): log Z acts as a baseline. The scorer is called under torch.no_grad() with
one-hot rows, once per call, like reinforce (so black-box scores work).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from choicegrad.estimators.base import ScoreFn, call_scorer, check_int, check_tau, hard_rows, score_stats
from choicegrad.estimators.contract import Estimator, EstimatorOutput, register


@register("trajectory-balance")
class TrajectoryBalance(Estimator):
    """Trajectory balance with K on-policy samples per context; target exp(f / T) / Z per context.

    k: samples per context (>= 1; >= 2 when no `log_z` is passed). temperature: T > 0, in the units
    score_fn returns (a training loop's scores are in scorer standard deviations, see
    choicegrad.training.step). Per-call option `log_z`: (B,) (or a scalar) differentiable log Z of
    each context, e.g. a learned function of the context; the loss is then
        mean_{b,k} (log_z_b + log p(x_bk) - f(x_bk) / T)^2
    and its gradient reaches both the policy and log_z (whose optimum is log sum_x exp(f(x)/T) once
    the policy matches). Without `log_z` (the "VarGrad" / log-variance variant, Richter et al. 2020;
    Zhang et al. 2023) each context's log Z is the batch estimate mean_k(f/T - log p), detached; the
    loss is then the unbiased sample variance over the K samples of log p - f/T,
        K / (K - 1) * mean_{b,k} (log p(x_bk) - f(x_bk)/T - mean_k(...))^2,
    whose policy gradient is, in expectation, exactly trajectory balance's (at any log Z, in
    particular the optimal one): the K / (K - 1) factor turns the batch mean into a leave-one-out one.

    Not an estimate of grad -E[score]: `loss` is the trajectory-balance loss, minimised when the
    policy samples exp(f/T)/Z. Smaller T concentrates the target on the best rows (T -> 0: the
    argmax), larger T spreads it. Output: `sample` = best-scoring of the K samples (first on ties),
    `weights` = the detached residuals delta (B, K) (positive = the row is sampled more often than
    exp(f/T)/Z asks, so its log-likelihood is pushed down: the opposite sign of reinforce's
    advantages), `entropy` = policy.entropy(samples), stats add `log_z` (mean over contexts) and
    `residual_std`.
    """

    family = "reward-proportional"
    call_options = ("log_z",)

    def __init__(self, *, k: int = 16, temperature: float = 1.0):
        self.k = check_int(k, "k")
        self.temperature = check_tau(temperature, "temperature")

    def estimate(self, policy, score_fn: ScoreFn, generator: Optional[torch.Generator],
                 log_z: Optional[Tensor] = None) -> EstimatorOutput:
        B, S, V = policy.mask.shape
        K, T = self.k, self.temperature
        if log_z is None and K < 2:
            raise ValueError(f"trajectory-balance without a learned log_z= estimates log Z from the batch and needs "
                             f"k >= 2 samples per context, got k={K}")
        if log_z is not None:
            if not isinstance(log_z, Tensor) or not log_z.is_floating_point():
                raise TypeError(f"log_z must be a floating-point tensor of shape (B,)=({B},), got {log_z!r:.80}")
            if log_z.dim() == 0:
                log_z = log_z.expand(B)
            if tuple(log_z.shape) != (B,):
                raise ValueError(f"log_z must have shape (B,)=({B},) or (), got {tuple(log_z.shape)}")
        index = policy.sample(K, generator)                                 # (B, K, S)
        f = call_scorer(score_fn, hard_rows(index, V), grad=False).float()  # (B, K)
        logp = policy.log_prob(index)                                       # (B, K), differentiable
        target = f.detach() / T
        if log_z is None:
            z = (target - logp.detach()).mean(1)                            # (B,) VarGrad estimate, detached
            delta = z[:, None] + logp - target
            loss = (delta ** 2).mean() * (K / (K - 1))
        else:
            z = log_z.float().to(logp.device)
            delta = z[:, None] + logp - target
            loss = (delta ** 2).mean()
        ent = policy.entropy(index)                                         # (B,)
        residual = delta.detach()
        stats = score_stats(f, ent)
        stats["log_z"] = float(z.detach().mean())
        stats["residual_std"] = float(residual.std()) if residual.numel() > 1 else 0.0
        sample = index[torch.arange(B, device=index.device), f.argmax(1)]
        return EstimatorOutput(sample=sample, samples=index, scores=f.detach(), loss=loss,
                               scorer_calls=B * K, stats=stats, weights=residual, entropy=ent)
