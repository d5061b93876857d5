"""Numerically safe Gumbel sampling in fp32: noise, Gumbel-max, Gumbel-softmax, conditional Gumbels.

All noise is drawn as -log(-log(U)) with U ~ Uniform clamped to [tiny, 1 - eps] in fp32, so it lies in
about [-4.5, 15.9]; logits are upcast to fp32 before use. Every function takes a torch.Generator, or
a BatchShard (shard.py) of one under data parallelism: `uniform` then draws the global batch and
keeps this rank's rows.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from choicegrad.estimators.base import CDF_VOCABULARY, check_int, check_tau, one_hot
from choicegrad.estimators.shard import BatchShard

_TINY = torch.finfo(torch.float32).tiny
_EPS = torch.finfo(torch.float32).eps


def uniform(shape, *, generator: Optional[torch.Generator] = None, device=None, batch_dim: int = 0) -> Tensor:
    """fp32 Uniform draws of `shape`, clamped to [tiny, 1 - eps] so that log(U) and log(-log(U)) are finite.

    batch_dim: the dimension of `shape` that runs over the batch's contexts, for a BatchShard
    generator (this rank's rows of the global draw); ignored for a torch.Generator."""
    if isinstance(generator, BatchShard):
        u = generator.uniform(shape, batch_dim, device)
    else:
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return u.clamp_(_TINY, 1.0 - _EPS)


def sample_gumbel(shape, *, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
    """Standard Gumbel(0, 1) noise of `shape`, fp32, always finite."""
    return -torch.log(-torch.log(uniform(shape, generator=generator, device=device)))


def gumbel_max(logits: Tensor, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """Exact categorical sample by the Gumbel-max trick: logits (..., V) -> (...,) long ~ softmax(logits)."""
    with torch.no_grad():
        z = logits.detach().float() + sample_gumbel(logits.shape, generator=generator, device=logits.device)
        return z.argmax(-1)


def gumbel_softmax(logits: Tensor, tau: float = 1.0, *, generator: Optional[torch.Generator] = None,
                   hard: bool = False) -> Tensor:
    """Gumbel-softmax relaxed sample softmax((logits + G) / tau): (..., V) -> (..., V).

    hard=True returns the one-hot Gumbel-max sample with the relaxed sample's gradient (straight-through).
    Computed in fp32 and returned in the logits' dtype; the gradient flows back to the logits.
    """
    tau = check_tau(tau)
    z = logits.float() + sample_gumbel(logits.shape, generator=generator, device=logits.device)
    y = torch.softmax(z / tau, -1)
    if hard:
        y = one_hot(z.detach().argmax(-1), y.shape[-1]) + y - y.detach()
    return y.to(logits.dtype)


def conditional_gumbel(logits: Tensor, index: Tensor, k: int = 1, *,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """K draws of the perturbed logits z = logits + G conditioned on argmax(z) == index (top-down).

    logits (..., V), index (...,) long -> z (k, ..., V) fp32, detached. The maximum is drawn as
    Gumbel(logsumexp(logits)) = logsumexp - log(E), E ~ Exp(1); each other category is a Gumbel with
    location logits_i truncated below that maximum: z_i = -log(exp(-z_max) + exp(-logits_i) * E_i).
    Marginalising `index` ~ softmax(logits) gives back unconditional logits + Gumbel noise.
    """
    k = check_int(k, "k")
    if tuple(index.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"index must have shape {tuple(logits.shape[:-1])} (logits without the last dim), "
                         f"got {tuple(index.shape)}")
    with torch.no_grad():
        theta = logits.detach().float()
        log_e = torch.log(-torch.log(uniform((k,) + tuple(theta.shape), generator=generator, device=theta.device,
                                             batch_dim=1)))  # log of Exp(1) draws
        idx = index.unsqueeze(-1).expand((k,) + tuple(index.shape) + (1,))
        top = torch.logsumexp(theta, -1, keepdim=True) - log_e.gather(-1, idx)  # (k, ..., 1)
        others = -torch.logaddexp(-top, log_e - theta)
        return others.scatter(-1, idx, top)


#: Inverse-CDF draws find a block of this many categories first (float64 sums over blocks), then the
#: category within it (float32 sums over the block alone): fp32 precision without fp64 passes over V.
CDF_BLOCK = 128


def categorical(logits: Tensor, k: int, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """k draws ~ softmax(logits) for each row of logits (B, ..., V): -> (B, k, ...) long.

    Gumbel-max below CDF_VOCABULARY categories. From there, inverse CDF in two levels: with u ~ U(0, 1)
    times the row's total mass, the block of CDF_BLOCK categories whose cumulative mass (float64)
    passes u, then the category within it whose cumulative mass (float32, within the block) passes
    the rest. The same distribution, up to fp32 rounding within a block; B*k*... uniforms are drawn
    (batch dimension 0, so a BatchShard draws one process's). Masked categories (probability 0)
    are never drawn."""
    k = check_int(k, "k")
    B, rest, V = logits.shape[0], tuple(logits.shape[1:-1]), logits.shape[-1]
    with torch.no_grad():
        theta = logits.detach().float()
        if V < CDF_VOCABULARY:
            return gumbel_max(theta.unsqueeze(1).expand((B, k) + rest + (V,)), generator=generator)
        nb = -(-V // CDF_BLOCK)
        p = torch.exp(theta - theta.amax(-1, keepdim=True))
        p = torch.nn.functional.pad(p, (0, nb * CDF_BLOCK - V)).unflatten(-1, (nb, CDF_BLOCK))    # (B, ..., nb, blk)
        mass = p.sum(-1)                                                                           # (B, ..., nb)
        cum = mass.double().cumsum(-1)
        u = uniform((B, k) + rest, generator=generator, device=theta.device).double()            # (B, k, ...)
        u = (u.movedim(1, -1) * cum[..., -1:]).contiguous()                                       # (B, ..., k)
        block = torch.searchsorted(cum, u, right=True).clamp_(max=nb - 1)
        before = torch.where(block > 0, cum.gather(-1, (block - 1).clamp(min=0)), torch.zeros_like(u))
        share = ((u - before) / mass.gather(-1, block).double()).float().clamp_(0.0, 1.0 - _EPS)  # of the block
        inner = p.gather(-2, block.unsqueeze(-1).expand(block.shape + (CDF_BLOCK,))).cumsum(-1)   # (B, ..., k, blk)
        within = torch.searchsorted(inner, (share * inner[..., -1]).unsqueeze(-1), right=True).squeeze(-1)
        return (block * CDF_BLOCK + within.clamp_(max=CDF_BLOCK - 1)).movedim(-1, 1)
