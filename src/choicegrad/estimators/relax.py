"""Relaxations (functional forms) on masked fp32 logits theta (..., V) -> (x (..., V), index (...,)):
x is what the scorer sees (soft rows, or exact one-hot rows carrying a surrogate gradient), index the
hard category. `select` and every policy's `relaxed` use them.

References: Gumbel-softmax: Jang, Gu, Poole 2017 / Maddison, Mnih, Teh 2017; straight-through: Bengio,
Leonard, Courville 2013; Gumbel-Rao: Paulus, Maddison, Krause 2020; ReinMax: Liu et al. 2023.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from choicegrad.estimators.base import MASK_VALUE, one_hot
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
