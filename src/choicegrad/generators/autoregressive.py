"""Autoregressive generator: slots decoded one after another (MADE-style masked MLP).

p(row | ctx) = prod_p p(x_{o_p} | ctx, x_{o_1}, ..., x_{o_{p-1}}) for a slot order o. One masked MLP
(Germain et al. 2015, "MADE") maps the whole row's one-hot input (B, S*V) to every slot's logits, with
weight masks that let slot o_p see only the slots before it. Teacher-forced logits of a full row are
therefore one forward pass; sequential sampling runs it once per slot. Because later choices depend
on earlier ones, the generator can put its mass on several distinct good rows for the same context,
which a factorized generator cannot do without also producing their mixtures.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from choicegrad.generators.base import GeneratorConfig, TableGenerator, mask_logits
from choicegrad.generators.context import TableContext


class MaskedLinear(nn.Linear):
    """nn.Linear whose weight is multiplied by a fixed (out, in) 0/1 mask."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor, scale: float = 1.0):
        super().__init__(in_features, out_features)
        self.register_buffer("weight_mask", mask.to(torch.float32), persistent=False)
        with torch.no_grad():
            self.weight.mul_(scale)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.weight_mask, self.bias)


def check_order(order: Optional[list[int]], num_slots: int) -> list[int]:
    """The slot order as a list; ValueError unless it is a permutation of 0..S-1."""
    if order is None:
        return list(range(num_slots))
    if sorted(int(o) for o in order) != list(range(num_slots)):
        raise ValueError(f"order must be a permutation of 0..{num_slots - 1}, got {order}")
    return [int(o) for o in order]


class AutoregressiveGenerator(TableGenerator):
    """MADE over the row's one-hots plus the context trunk.

    sizes: categories per slot (S,); cardinalities / num_numeric: context columns; config.order: slot
    order (default 0..S-1); config.hidden: widths of the masked hidden layers.
    logits(ctx, x) with x (B, S, V_max) float (one-hot, soft, or zeros for not-yet-chosen slots)
    -> (B, S, V_max); slot s's logits are a function of ctx and x[:, t] for t before s in the order.
    """

    kind = "autoregressive"
    autoregressive = True

    def __init__(self, sizes: list[int], cardinalities: list[int], num_numeric: int, config: GeneratorConfig):
        super().__init__(sizes, cardinalities, num_numeric, config, [config.hidden[0]])
        S, V = len(sizes), max(sizes)
        self._order = check_order(config.order, S)
        pos = torch.empty(S, dtype=torch.long)
        pos[torch.tensor(self._order)] = torch.arange(S)
        Hc = self.trunk.out_dim
        in_deg = (pos + 1).repeat_interleave(V)                    # (S*V,) degree of each input unit
        out_deg = pos.repeat_interleave(V)                         # (S*V,) output unit of slot s: sees pos < pos[s]
        layers, ctx_layers, prev_deg, prev_dim = [], [], in_deg, S * V
        for width in config.hidden:
            deg = torch.arange(width) % S                          # hidden degrees 0..S-1
            layers.append(MaskedLinear(prev_dim, width, deg[:, None] >= prev_deg[None, :]))
            ctx_layers.append(nn.Linear(Hc, width, bias=False))
            prev_deg, prev_dim = deg, width
        self.hidden_layers = nn.ModuleList(layers)
        self.context_layers = nn.ModuleList(ctx_layers)
        self.out = MaskedLinear(prev_dim, S * V, out_deg[:, None] >= prev_deg[None, :], scale=0.01)
        self.skip = MaskedLinear(S * V, S * V, out_deg[:, None] >= in_deg[None, :], scale=0.01)
        self.context_head = nn.Linear(Hc, S * V)
        with torch.no_grad():
            self.context_head.weight.mul_(0.01)
            self.context_head.bias.zero_()

    @property
    def order(self) -> list[int]:
        return list(self._order)

    def logits(self, ctx: TableContext, x: Optional[Tensor] = None, features: Optional[Tensor] = None) -> Tensor:
        S, V = self.mask.shape
        c = self.trunk(ctx) if features is None else features
        B = c.shape[0]
        flat = torch.zeros(B, S * V, device=c.device, dtype=c.dtype) if x is None else x.reshape(B, S * V).to(c.dtype)
        h = flat
        for layer, ctx_layer in zip(self.hidden_layers, self.context_layers):
            h = F.silu(layer(h) + ctx_layer(c))
        out = self.out(h) + self.skip(flat) + self.context_head(c)
        return mask_logits(out.reshape(B, S, V), self.mask)
