"""The policy protocol: what every gradient estimator needs from a generator bound to B contexts.

An estimator never looks inside a generator: it draws rows, asks for their log-probability, a relaxed
(differentiable) row or the policy's entropy, and turns scores into a loss. So one estimator works for
any policy (the torchgfn idea: a loss per file, each for any policy):
- `LogitsPolicy`: independent slots given per-slot logits (B, S, V); factorized and pointer
  generators, and users' own logits;
- `choicegrad.generators.SequentialPolicy`: autoregressive generators (slot by slot).

Shapes: B contexts, S slots, V categories per slot (padded), K rows per context. Rows are long with
fixed slots already holding their fixed value; `valid` masks leave slots out of a log-probability.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch
from torch import Tensor

from choicegrad.estimators.api import select
from choicegrad.estimators.base import MASK_VALUE, check_mask, check_fixed_slots, one_hot
from choicegrad.estimators.gumbel import categorical


@runtime_checkable
class Policy(Protocol):
    """A distribution over rows for each of B contexts, with the hooks estimators use.

    mask (B, S, V) bool, True = valid category; fixed (B, S) long, -1 = free; free = fixed < 0.
    """

    mask: Tensor
    fixed: Tensor

    @property
    def free(self) -> Tensor: ...

    def sample(self, k: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """(B, k, S) long rows drawn from the policy, fixed slots kept; no gradient."""

    def log_prob(self, rows: Tensor, valid: Optional[Tensor] = None) -> Tensor:
        """Differentiable log-probability of rows (B, M, S) summed over free slots where `valid`
        (B, M, S) bool (default: all) -> (B, M). Fixed slots are deterministic and left out."""

    def relaxed(self, method: str, tau: float, generator: Optional[torch.Generator] = None,
                k: int = 10) -> tuple[Tensor, Tensor, Tensor]:
        """One row per context carrying `method`'s pathwise gradient (see `select`): x (B, S, V)
        float (one-hot forward for st-style methods, soft for soft/gumbel), index (B, S) long, and the
        differentiable entropy (B,) of the conditionals the row was drawn from (free slots)."""

    def entropy(self, rows: Tensor) -> Tensor:
        """Differentiable entropy estimate (nats) per context (B,): exact for independent slots;
        for sequential policies the mean over rows (B, M, S) of the per-slot conditional entropies."""

    def greedy(self) -> Tensor:
        """(B, S) long: the most likely choice slot by slot (fixed slots kept)."""

    def complete(self, rows: Tensor) -> Tensor:
        """(B, S) long with -1 = missing -> the same rows, missing slots filled greedily."""


class LogitsPolicy:
    """Independent categoricals softmax(theta[b, s]): theta (B, S, V) fp32 with invalid categories
    at MASK_VALUE and fixed slots detached. Build it with `LogitsPolicy.from_logits`."""

    def __init__(self, theta: Tensor, mask: Tensor, fixed: Tensor):
        self.theta, self.mask, self.fixed = theta, mask, fixed

    @classmethod
    def from_logits(cls, logits: Tensor, mask: Optional[Tensor] = None,
                    fixed: Optional[Tensor] = None) -> "LogitsPolicy":
        """Check logits (B, S, V) float, mask (S, V) or (B, S, V) bool, fixed (B, S) or (S,) long.

        Logits are upcast to fp32 (gradients still flow back to half-precision logits).
        """
        if not isinstance(logits, Tensor) or not logits.is_floating_point():
            raise TypeError(f"logits must be a floating-point tensor, got {type(logits).__name__}"
                            f"{'' if not isinstance(logits, Tensor) else ' of dtype ' + str(logits.dtype)}")
        if logits.dim() != 3:
            raise ValueError(f"logits must have shape (B, S, V), got {tuple(logits.shape)}")
        theta = logits.float()
        full_mask = check_mask(mask, theta.shape, theta.device)
        if mask is not None:
            theta = theta.masked_fill(~full_mask, MASK_VALUE)
        fixed_t = check_fixed_slots(fixed, full_mask)
        free = fixed_t < 0
        if not bool(free.all()):
            theta = torch.where(free[..., None], theta, theta.detach())
        return cls(theta, full_mask, fixed_t)

    @property
    def free(self) -> Tensor:
        return self.fixed < 0

    @property
    def shape(self) -> tuple[int, int, int]:
        B, S, V = self.theta.shape
        return B, S, V

    def keep_fixed(self, index: Tensor) -> Tensor:
        """Put fixed values into index (B, S) or (B, K, S) long."""
        return keep_fixed(index, self.fixed)

    def sample(self, k: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.keep_fixed(categorical(self.theta, k, generator=generator))

    def log_prob(self, rows: Tensor, valid: Optional[Tensor] = None) -> Tensor:
        B, M, S = rows.shape
        logp = torch.log_softmax(self.theta, -1).unsqueeze(1).expand(B, M, S, self.theta.shape[-1])
        lp = logp.gather(-1, rows.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        keep = self.free[:, None, :] if valid is None else valid & self.free[:, None, :]
        return torch.where(keep, lp, torch.zeros_like(lp)).sum(-1)

    def relaxed(self, method: str, tau: float, generator: Optional[torch.Generator] = None,
                k: int = 10) -> tuple[Tensor, Tensor, Tensor]:
        x = select(self.theta, method, tau, generator=generator, k=k)
        index = self.keep_fixed(x.detach().argmax(-1))
        if not bool(self.free.all()):
            x = torch.where(self.free[..., None], x, one_hot(index, x.shape[-1]).to(x.dtype))
        return x, index, self.entropy()

    def entropy(self, rows: Optional[Tensor] = None) -> Tensor:
        logp = torch.log_softmax(self.theta, -1)
        h = -(logp.exp() * logp).sum(-1)
        return torch.where(self.free, h, torch.zeros_like(h)).sum(-1)

    def greedy(self) -> Tensor:
        return self.keep_fixed(self.theta.detach().argmax(-1))

    def complete(self, rows: Tensor) -> Tensor:
        return self.keep_fixed(torch.where(rows >= 0, rows, self.theta.detach().argmax(-1)))


def keep_fixed(index: Tensor, fixed: Tensor) -> Tensor:
    """Replace fixed slots by their value. index (B, S) or (B, K, S) long; fixed (B, S), -1 = free."""
    if bool((fixed < 0).all()):
        return index
    f = fixed if index.dim() == fixed.dim() else fixed.unsqueeze(1)
    return torch.where(f >= 0, f.expand_as(index), index)
