"""Factorized generator: context -> shared trunk -> one head per slot -> independent per-slot logits."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .base import Generator, GeneratorConfig, mask_logits
from .context import TableContext
from .trunk import ContextTrunk


class FactorizedGenerator(Generator):
    """p(row | ctx) = prod_s softmax(logits_s(ctx)): one categorical per slot, all sharing the trunk.

    sizes: categories per slot (S,); cardinalities / num_numeric describe the context columns.
    logits(ctx) -> (B, S, V_max), padding categories set to MASK_VALUE. Heads start near zero, so a
    fresh generator is close to uniform (maximal exploration).
    """

    kind = "factorized"

    def __init__(self, sizes: list[int], cardinalities: list[int], num_numeric: int, config: GeneratorConfig):
        super().__init__(config)
        self.sizes, self.cardinalities, self.num_numeric = list(sizes), list(cardinalities), int(num_numeric)
        S, V = len(sizes), max(sizes)
        self.register_buffer("mask", torch.arange(V)[None, :] < torch.tensor(sizes)[:, None], persistent=False)
        self.trunk = ContextTrunk(self.cardinalities, self.num_numeric, config.context_dim, config.hidden)
        H = self.trunk.out_dim
        self.head_weight = nn.Parameter(torch.randn(S, H, V) * 0.01 / H ** 0.5)   # one head per slot
        self.head_bias = nn.Parameter(torch.zeros(S, V))

    @property
    def num_slots(self) -> int:
        return len(self.sizes)

    def meta(self) -> dict:
        return {"sizes": self.sizes, "cardinalities": self.cardinalities, "num_numeric": self.num_numeric}

    def choice_mask(self, ctx: TableContext) -> Tensor:
        return self.mask.unsqueeze(0).expand(len(ctx), -1, -1)

    def features(self, ctx: TableContext) -> Tensor:
        return self.trunk(ctx)

    def logits(self, ctx: TableContext, x: Optional[Tensor] = None, features: Optional[Tensor] = None) -> Tensor:
        """(B, S, V_max); `x` is ignored (slots are independent given the context)."""
        h = self.trunk(ctx) if features is None else features
        return mask_logits(torch.einsum("bh,shv->bsv", h, self.head_weight) + self.head_bias, self.mask)
