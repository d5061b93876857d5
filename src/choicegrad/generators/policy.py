"""Generators as policies: what the gradient estimators train through (choicegrad.estimators.Policy).

`policy_of(gen, ctx, fixed)` binds a generator to a batch of B contexts. Factorized and pointer
generators give their per-slot logits to a `LogitsPolicy`; autoregressive ones a `SequentialPolicy`,
whose rows are drawn slot by slot and whose log-probabilities are teacher-forced (one pass).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from choicegrad.estimators import LogitsPolicy
from choicegrad.estimators.base import check_fixed_slots
from choicegrad.generators.base import Generator, masked_log_softmax
from choicegrad.generators.context import Context


class SequentialPolicy:
    """An autoregressive generator bound to contexts ctx (len B), with fixed (B, S) long (-1 = free).

    log_prob and entropy are teacher-forced (slot s sees the row's earlier slots in the generator's
    order); fixed slots are deterministic and left out of both.
    """

    def __init__(self, gen: Generator, ctx: Context, fixed: Optional[Tensor] = None):
        self.gen, self.ctx = gen, ctx
        self.mask = gen.choice_mask(ctx)
        self.fixed = check_fixed_slots(fixed, self.mask)

    @property
    def free(self) -> Tensor:
        return self.fixed < 0

    def _pinned(self) -> Optional[Tensor]:
        return None if bool(self.free.all()) else self.fixed

    def sample(self, k: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.gen.sample(self.ctx, k, fixed=self._pinned(), generator=generator)

    def _slot_terms(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced per-slot (log p(row value), entropy), each (B, M, S)."""
        return self.gen.teacher_terms(rows, self.ctx)

    def log_prob(self, rows: Tensor, valid: Optional[Tensor] = None) -> Tensor:
        lp, _ = self._slot_terms(rows)
        # a slot after a missing one (-1) in the order is conditioned on a hole: left out (observed_prefix)
        keep = self.free[:, None, :] & self.gen.observed(rows)
        keep = keep if valid is None else keep & valid
        return torch.where(keep, lp, torch.zeros_like(lp)).sum(-1)

    def relaxed(self, method: str, tau: float, generator: Optional[torch.Generator] = None,
                k: int = 10) -> tuple[Tensor, Tensor, Tensor]:
        x, index, logits = self.gen.relaxed_sample(self.ctx, method, tau, fixed=self._pinned(), generator=generator,
                                                   k=k)
        logp = masked_log_softmax(logits)                  # the conditionals along the relaxed prefix
        h = -(logp.exp() * logp).sum(-1)
        return x, index, torch.where(self.free, h, torch.zeros_like(h)).sum(-1)

    def entropy(self, rows: Tensor) -> Tensor:
        _, h = self._slot_terms(rows.clamp(min=0))
        return torch.where(self.free[:, None, :], h, torch.zeros_like(h)).sum(-1).mean(1)

    def greedy(self) -> Tensor:
        return self.gen.greedy(self.ctx, fixed=self._pinned())

    def complete(self, rows: Tensor) -> Tensor:
        pinned = torch.where(self.fixed >= 0, self.fixed, rows)
        return self.gen.greedy(self.ctx, fixed=pinned)


def policy_of(gen: Generator, ctx: Context, fixed: Optional[Tensor] = None):
    """The policy an estimator trains `gen` through on contexts ctx (len B); fixed (B, S) or (S,) long."""
    if gen.autoregressive:
        return SequentialPolicy(gen, ctx, fixed)
    return LogitsPolicy.from_logits(gen.logits(ctx), gen.choice_mask(ctx), fixed)


__all__ = ["SequentialPolicy", "policy_of"]
