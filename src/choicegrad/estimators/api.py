"""Drop-in helpers for people with their own models: `select` (a categorical choice carrying a
gradient estimator's gradient) and `soft_lookup` (embedding lookup of one-hot or soft rows).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from choicegrad.estimators.base import MASK_VALUE, check_int, check_tau, normalize_name, unknown_name_error
from choicegrad.estimators.relax import (relax_gumbel, relax_gumbel_rao, relax_reinmax, relax_soft, relax_st,
                      relax_st_gumbel)

SELECT_METHODS = ("soft", "st", "gumbel", "st-gumbel", "gumbel-rao", "reinmax")
_NEEDS_SCORE_FN = ("reinforce", "weighted-ce", "raml")


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
    if key in _NEEDS_SCORE_FN:
        raise ValueError(f"method {method!r} is a score-function/data-driven estimator: it needs a score_fn "
                         f"and cannot act as a differentiable choice. Use "
                         f"choicegrad.estimators.get({key!r})(logits, score_fn, ...) instead; select() "
                         f"supports {', '.join(SELECT_METHODS)}")
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
