"""Autoregressive generator: slots decoded one after another (MADE-style masked MLP).

p(row | ctx) = prod_p p(x_{o_p} | ctx, x_{o_1}, ..., x_{o_{p-1}}) for a slot order o. One masked MLP
(Germain et al. 2015, "MADE") maps the whole row's one-hot input (B, S*V) to every slot's logits, with
weight masks that let slot o_p see only the slots before it. Teacher-forced logits of a full row are
therefore one forward pass. Sequential decoding (`slot_logits`) computes, at position p, only the
hidden units of degree p (the lower ones carry over from earlier positions; no higher one can reach
slot o_p) and adds context terms computed once per context, not once per row: about one full pass
per row in all instead of S. Because later choices depend
on earlier ones, the generator can put its mass on several distinct good rows for the same context,
which a factorized generator cannot do without also producing their mixtures.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from choicegrad.estimators import MASK_VALUE
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


class ContextTerms(NamedTuple):
    """What the context adds to each layer, computed once per context. hidden: (B, width) per hidden
    layer; head: (B, S*V) added to the output logits."""

    hidden: list[Tensor]
    head: Tensor


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
        self._by_degree: list[Tensor] = []                          # per layer: its units sorted by degree
        self._below: list[list[int]] = []                           # per layer: units of degree < p, p = 0..S
        for width in config.hidden:
            deg = torch.arange(width) % S                          # hidden degrees 0..S-1
            layers.append(MaskedLinear(prev_dim, width, deg[:, None] >= prev_deg[None, :]))
            ctx_layers.append(nn.Linear(Hc, width, bias=False))
            self._by_degree.append(torch.argsort(deg, stable=True))
            self._below.append([int((deg < p).sum()) for p in range(S + 1)])
            prev_deg, prev_dim = deg, width
        self.hidden_layers = nn.ModuleList(layers)
        self.context_layers = nn.ModuleList(ctx_layers)
        self.out = MaskedLinear(prev_dim, S * V, out_deg[:, None] >= prev_deg[None, :], scale=0.01)
        self.skip = MaskedLinear(S * V, S * V, out_deg[:, None] >= in_deg[None, :], scale=0.01)
        self.context_head = nn.Linear(Hc, S * V)
        with torch.no_grad():
            self.context_head.weight.mul_(0.01)
            self.context_head.bias.zero_()

    @staticmethod
    def vocabulary_elements(sizes: list[int], config: GeneratorConfig) -> tuple[int, int]:
        """(parameters, buffers): elements that grow with the vocabulary (the rest is small). Every
        slot is padded to V_max, and the skip layer is (S V_max)^2 with a mask as large."""
        SV, first, last = len(sizes) * max(sizes), config.hidden[0], config.hidden[-1]
        parameters = first * SV + (last + 1) * SV + (SV + 1) * SV + (first + 1) * SV
        return parameters, first * SV + last * SV + SV * SV + SV     # the masks and the (S, V) mask

    @property
    def order(self) -> list[int]:
        return list(self._order)

    def features(self, ctx: TableContext) -> ContextTerms:
        c = self.trunk(ctx)
        return ContextTerms([layer(c) for layer in self.context_layers], self.context_head(c))

    def logits(self, ctx: TableContext, x: Optional[Tensor] = None) -> Tensor:
        S, V = self.mask.shape
        terms = self.features(ctx)
        B = terms.head.shape[0]
        flat = torch.zeros(B, S * V, device=terms.head.device, dtype=terms.head.dtype) if x is None \
            else x.reshape(B, S * V).to(terms.head.dtype)
        h = flat
        for layer, term in zip(self.hidden_layers, terms.hidden):
            h = F.silu(layer(h) + term)
        out = self.out(h) + self.skip(flat) + terms.head
        return mask_logits(out.reshape(B, S, V), self.mask)

    def slot_logits(self, features: ContextTerms, x: Tensor, s: int,
                    carry: Optional[list[Tensor]] = None) -> tuple[Tensor, list[Tensor]]:
        """Slot s's logits given the earlier slots, decoding in `order`.

        x (B, M, S, V) float rows so far; features: `features(ctx)` of the B contexts; carry: per hidden
        layer, the (B, M, n) units of lower degree computed at the earlier positions for these rows
        (None at the first position). -> (logits (B, M, V), carry for the next position; reorder it
        along M as the rows are reordered). Equal to logits(ctx, x)[:, s]: only the units of degree
        p = position of s are new, each computed once per row.
        """
        S, V = self.mask.shape
        p = self._order.index(s)
        B, M = x.shape[:2]
        dev, dtype = x.device, features.head.dtype
        earlier = torch.tensor(self._order[:p], dtype=torch.long, device=dev)
        cols = (earlier[:, None] * V + torch.arange(V, device=dev)).reshape(-1)       # (p*V,) inputs seen
        inp = x.index_select(2, earlier).reshape(B, M, p * V).to(dtype)
        h, seen, out_carry = inp, cols, []
        for i, (layer, term) in enumerate(zip(self.hidden_layers, features.hidden)):
            done = carry[i] if carry is not None else inp.new_zeros(B, M, 0)
            if done.shape[-1] != self._below[i][p]:
                raise ValueError(f"carry of layer {i} has {done.shape[-1]} units, position {p} needs {self._below[i][p]}")
            units = self._by_degree[i][self._below[i][p]:self._below[i][p + 1]].to(dev)
            w = (layer.weight * layer.weight_mask).index_select(0, units).index_select(1, seen)
            new = _silu_sum(F.linear(h, w, layer.bias.index_select(0, units)), term.index_select(1, units).unsqueeze(1))
            h = torch.cat([done, new], -1)
            out_carry.append(h)
            seen = self._by_degree[i][: self._below[i][p + 1]].to(dev)
        outs = torch.arange(s * V, (s + 1) * V, device=dev)
        w_out = (self.out.weight * self.out.weight_mask).index_select(0, outs).index_select(1, seen)
        w_skip = (self.skip.weight * self.skip.weight_mask).index_select(0, outs).index_select(1, cols)
        out = (F.linear(h, w_out, self.out.bias.index_select(0, outs)) + F.linear(inp, w_skip, self.skip.bias.index_select(0, outs))
               + features.head.index_select(1, outs).unsqueeze(1))
        return out.masked_fill(~self.mask[s], MASK_VALUE), out_carry


def _silu_sum(a: Tensor, b: Tensor) -> Tensor:
    """silu(a + b), in place on `a` when no gradient is recorded (decoding allocates less)."""
    if torch.is_grad_enabled():
        return F.silu(a + b)
    return F.silu(a.add_(b), inplace=True)
