"""Factorized generator: context -> shared trunk -> one head per slot -> independent per-slot logits."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from choicegrad.estimators import MASK_VALUE
from choicegrad.estimators.gumbel import CDF_VOCABULARY
from choicegrad.generators.base import GeneratorConfig, TableGenerator, mask_logits, resolve_layout
from choicegrad.generators.context import TableContext


class FactorizedGenerator(TableGenerator):
    """p(row | ctx) = prod_s softmax(logits_s(ctx)): one categorical per slot, all sharing the trunk.

    sizes: categories per slot (S,); cardinalities / num_numeric describe the context columns.
    logits(ctx) -> (B, S, V_max), padding categories set to MASK_VALUE. Heads start near zero, so a
    fresh generator is close to uniform (maximal exploration). Padded layout: heads (S, H, V_max);
    ragged: one (sum V_s, H) linear head over every slot's own categories.
    """

    kind = "factorized"

    def __init__(self, sizes: list[int], cardinalities: list[int], num_numeric: int, config: GeneratorConfig):
        super().__init__(sizes, cardinalities, num_numeric, config, config.hidden)
        S, V = len(sizes), max(sizes)
        H = self.trunk.out_dim
        if self.ragged:
            self.head = nn.Linear(H, self.offsets[-1])
            with torch.no_grad():
                self.head.weight.normal_(0.0, 0.01 / H ** 0.5)
                self.head.bias.zero_()
            return
        self.head_weight = nn.Parameter(torch.randn(S, H, V) * 0.01 / H ** 0.5)   # one head per slot
        self.head_bias = nn.Parameter(torch.zeros(S, V))

    @staticmethod
    def vocabulary_elements(sizes: list[int], config: GeneratorConfig) -> tuple[int, int]:
        """(parameters, buffers): elements that grow with the vocabulary: one (H, V_max) head per slot
        and its bias (padded), or one (sum V_s, H) head and its bias with two (sum V_s,) index buffers
        (ragged); the (S, V_max) mask."""
        S, V, H = len(sizes), max(sizes), config.hidden[-1]
        if resolve_layout(config, sizes).layout == "ragged":
            return (H + 1) * sum(sizes), S * V + 2 * sum(sizes)
        return S * H * V + S * V, S * V

    def logits(self, ctx: TableContext, x: Optional[Tensor] = None) -> Tensor:
        """(B, S, V_max); `x` is ignored (slots are independent given the context). From
        CDF_VOCABULARY categories on, each slot's head computes its own categories only (a small slot
        beside a 10^5-category one would otherwise cost as much as the large one)."""
        if self.ragged:
            return self.pad(self.ragged_logits(ctx))
        h = self.trunk(ctx)
        if self.head_weight.shape[-1] < CDF_VOCABULARY:
            return mask_logits(torch.einsum("bh,shv->bsv", h, self.head_weight) + self.head_bias, self.mask)
        out = h.new_full((len(h), len(self.sizes), self.head_weight.shape[-1]), MASK_VALUE)
        for s, v in enumerate(self.sizes):        # over slots, not rows
            out[:, s, :v] = h @ self.head_weight[s, :, :v] + self.head_bias[s, :v]
        return out

    def ragged_logits(self, ctx: TableContext) -> Tensor:
        return self.head(self.trunk(ctx))
