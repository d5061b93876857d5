"""Drop-in helpers for people with their own models: `select` (a categorical choice carrying a
gradient estimator's gradient) and `soft_lookup` (embedding lookup of one-hot or soft rows); and the
relaxations `select` (and so every policy's `relaxed`, and the pathwise estimators) is built on.

Relaxations (functional forms) on masked fp32 logits theta (..., V) -> (x (..., V), index (...,)):
x is what the scorer sees (soft rows, or exact one-hot rows carrying a surrogate gradient), index the
hard category. References: Gumbel-softmax: Jang, Gu, Poole 2017 / Maddison, Mnih, Teh 2017;
straight-through: Bengio, Leonard, Courville 2013; Gumbel-Rao: Paulus, Maddison, Krause 2020;
ReinMax: Liu et al. 2023.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from choicegrad.estimators.base import MASK_VALUE, REGISTRY, check_int, check_tau, normalize_name, one_hot, unknown_name_error
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


SELECT_METHODS = ("soft", "st", "gumbel", "st-gumbel", "gumbel-rao", "reinmax")


def select(logits: Tensor, method: str = "st-gumbel", tau: float = 1.0, *, mask: Optional[Tensor] = None,
           generator: Optional[torch.Generator] = None, hard: bool = True, k: int = 10) -> Tensor:
    """Choose one category per row of logits (..., V) -> (..., V), carrying `method`'s gradient.

    soft / gumbel: soft rows (softmax(logits/tau), resp. a Gumbel-softmax sample); `hard` is ignored.
    st, st-gumbel, gumbel-rao, reinmax: hard=True gives exact one-hot rows in the forward pass with
    the method's surrogate gradient; hard=False gives the soft rows the method differentiates
    through instead (st -> softmax(logits/tau), st-gumbel -> the Gumbel-softmax sample, gumbel-rao ->
    the mean of `k` conditional Gumbel-softmax samples; reinmax has none and raises ValueError).
    mask: bool, broadcastable to logits, True = valid category. The result has the logits' dtype
    (computed in fp32). Score-function methods need a score_fn: use choicegrad.estimators.get instead.
    """
    key = normalize_name(method)
    if key not in SELECT_METHODS and key in REGISTRY:
        raise ValueError(f"method {method!r} is a {REGISTRY[key].family} estimator: it needs a score_fn and cannot "
                         f"act as a differentiable choice. Use choicegrad.estimators.get({key!r})(logits, score_fn, "
                         f"...) instead; select() supports {', '.join(SELECT_METHODS)}")
    if key not in SELECT_METHODS:
        raise unknown_name_error(method, SELECT_METHODS, what="select method")
    tau = check_tau(tau)
    theta = logits.float()
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        try:
            full = torch.broadcast_to(mask.to(logits.device), logits.shape)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to logits of shape "
                             f"{tuple(logits.shape)}") from None
        if not bool(full.any(-1).all()):
            raise ValueError("mask leaves a row of logits with no valid category")
        theta = theta.masked_fill(~full, MASK_VALUE)
    if key == "soft":
        x, _ = relax_soft(theta, tau)
    elif key == "gumbel":
        x, _ = relax_gumbel(theta, tau, generator)
    elif key == "st":
        x = relax_st(theta, tau)[0] if hard else relax_soft(theta, tau)[0]
    elif key == "st-gumbel":
        x = relax_st_gumbel(theta, tau, generator)[0] if hard else relax_gumbel(theta, tau, generator)[0]
    elif key == "gumbel-rao":
        hard_x, _, soft = relax_gumbel_rao(theta, tau, check_int(k, "k"), generator)
        x = hard_x if hard else soft
    else:
        if not hard:
            raise ValueError("reinmax has no soft relaxation to return; use hard=True")
        x, _ = relax_reinmax(theta, tau, generator)
    return x.to(logits.dtype)


def soft_lookup(embedding: Union[nn.Embedding, Tensor], probs: Tensor) -> Tensor:
    """Embedding lookup of soft or one-hot rows: probs (..., V) @ weight (V, E) -> (..., E).

    embedding: an nn.Embedding (its weight is used; max_norm renormalisation is not applied) or a
    (V, E) tensor. On one-hot rows this equals the hard lookup; gradients reach probs and the weight.
    """
    weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"embedding must be an nn.Embedding or a (V, E) tensor, got {shape}")
    if not isinstance(probs, Tensor) or probs.dim() < 1 or probs.shape[-1] != weight.shape[0]:
        pshape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"soft_lookup: probs shape {pshape} must end in V={weight.shape[0]}, the number of "
                         f"rows of the embedding weight of shape {tuple(weight.shape)} (V, E)")
    return torch.matmul(probs.to(weight.dtype), weight)
