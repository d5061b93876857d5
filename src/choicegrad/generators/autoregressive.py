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

In the ragged layout (large vocabularies, many slots) the first layer is an embedding of each slot's
own categories (sum_s V_s rows; the one-hot product it replaces, without the padding), the output
and context heads have sum_s V_s rows too, and there is no skip layer: its (S V_max)^2 weights are
what keeps the padded layout from large vocabularies. Choices reach later slots through the hidden
layers alone.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from choicegrad.estimators import MASK_VALUE
from choicegrad.generators.base import GeneratorConfig, TableGenerator, mask_logits, resolve_layout, rows_to_inputs
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


class _DegreeWeights(NamedTuple):
    """AutoregressiveGenerator._degree_weights: per hidden layer its units by degree (indices), its
    masked weight (units by degree, inputs the layer below's units by degree; the first layer's
    inputs the one-hot columns) and bias; the output and skip weights (outputs by position, S*V rows)
    and their summed bias; the outputs' columns in the logits (S*V,)."""

    units: list[Tensor]
    hidden: list[Tensor]
    bias: list[Tensor]
    out: Tensor
    skip: Tensor
    out_bias: Tensor
    outputs: Tensor


class AutoregressiveGenerator(TableGenerator):
    """MADE over the row's one-hots plus the context trunk.

    sizes: categories per slot (S,); cardinalities / num_numeric: context columns; config.order: slot
    order (default 0..S-1); config.hidden: widths of the masked hidden layers.
    logits(ctx, x) with x (B, S, V_max) float (one-hot, soft, or zeros for not-yet-chosen slots) or
    (B, S) long rows (-1 = not chosen) -> (B, S, V_max); slot s's logits are a function of ctx and
    x[:, t] for t before s in the order. Ragged layout: the default order puts the largest vocabulary
    first, whose logits decoding then computes once per context (`shares_first`), not once per row.
    """

    kind = "autoregressive"
    autoregressive = True

    def __init__(self, sizes: list[int], cardinalities: list[int], num_numeric: int, config: GeneratorConfig):
        super().__init__(sizes, cardinalities, num_numeric, config, [config.hidden[0]])
        S, V = len(sizes), max(sizes)
        self.shares_first = self.ragged
        if self.ragged and config.order is None:
            self.config = self.config.model_copy(update={"order": sorted(range(S), key=lambda s: (-sizes[s], s))})
        self._order = check_order(self.config.order, S)
        pos = torch.empty(S, dtype=torch.long)
        pos[torch.tensor(self._order)] = torch.arange(S)
        self._position = pos.tolist()
        Hc = self.trunk.out_dim
        in_deg = (pos + 1).repeat_interleave(V)                    # (S*V,) degree of each input unit
        out_deg = pos.repeat_interleave(V)                         # (S*V,) output unit of slot s: sees pos < pos[s]
        layers, ctx_layers, prev_deg, prev_dim = [], [], in_deg, S * V
        self._by_degree: list[Tensor] = []                          # per layer: its units sorted by degree
        self._below: list[list[int]] = []                           # per layer: units of degree < p, p = 0..S
        for i, width in enumerate(config.hidden):
            deg = torch.arange(width) % S                          # hidden degrees 0..S-1
            if i or not self.ragged:
                layers.append(MaskedLinear(prev_dim, width, deg[:, None] >= prev_deg[None, :]))
            ctx_layers.append(nn.Linear(Hc, width, bias=False))
            self._by_degree.append(torch.argsort(deg, stable=True))
            self._below.append([int((deg < p).sum()) for p in range(S + 1)])
            prev_deg, prev_dim = deg, width
        self.hidden_layers = nn.ModuleList(layers)
        self.context_layers = nn.ModuleList(ctx_layers)
        if self.ragged:
            self._init_ragged(pos, Hc, config.hidden)
            return
        self.out = MaskedLinear(prev_dim, S * V, out_deg[:, None] >= prev_deg[None, :], scale=0.01)
        self.skip = MaskedLinear(S * V, S * V, out_deg[:, None] >= in_deg[None, :], scale=0.01)
        self.context_head = nn.Linear(Hc, S * V)
        with torch.no_grad():
            self.context_head.weight.mul_(0.01)
            self.context_head.bias.zero_()

    def _init_ragged(self, pos: Tensor, Hc: int, hidden: list[int]) -> None:
        """embed (sum V_s, hidden[0]) with its bias: the first layer, unit j seeing slot t where
        degree_j > pos[t] (`embed_mask` (S, hidden[0])); out and context_head: Linear to sum V_s, slot
        s's rows seeing last-layer units of degree <= pos[s] (`out_mask` (S, hidden[-1]))."""
        S, first, last = len(self.sizes), hidden[0], hidden[-1]
        n = self.offsets[-1]
        self.embed = nn.Parameter(torch.empty(n, first).uniform_(-S ** -0.5, S ** -0.5))
        self.embed_bias = nn.Parameter(torch.empty(first).uniform_(-S ** -0.5, S ** -0.5))
        self.register_buffer("embed_mask", ((torch.arange(first) % S)[None, :] > pos[:, None]).float(), persistent=False)
        self.register_buffer("out_mask", ((torch.arange(last) % S)[None, :] <= pos[:, None]).float(), persistent=False)
        self.out = nn.Linear(last, n)
        self.context_head = nn.Linear(Hc, n)
        with torch.no_grad():
            self.out.weight.mul_(0.01)
            self.context_head.weight.mul_(0.01)
            self.context_head.bias.zero_()

    @staticmethod
    def vocabulary_elements(sizes: list[int], config: GeneratorConfig) -> tuple[int, int]:
        """(parameters, buffers): elements that grow with the vocabulary (the rest is small). Padded:
        every slot is padded to V_max, and the skip layer is (S V_max)^2 with a mask as large. Ragged:
        sum V_s rows of the embedding, output and context heads, no skip layer."""
        first, last, Hc = config.hidden[0], config.hidden[-1], config.hidden[0]
        if resolve_layout(config, sizes).layout == "ragged":
            n = sum(sizes)
            return n * (first + last + 1 + Hc + 1), len(sizes) * max(sizes) + 2 * n
        SV = len(sizes) * max(sizes)
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
        if self.ragged:
            return self.pad(self._ragged_logits(terms, x))
        if x is not None and not x.is_floating_point():
            x = rows_to_inputs(x, V)
        flat = torch.zeros(B, S * V, device=terms.head.device, dtype=terms.head.dtype) if x is None \
            else x.reshape(B, S * V).to(terms.head.dtype)
        h = flat
        for layer, term in zip(self.hidden_layers, terms.hidden):
            h = F.silu(layer(h) + term)
        out = self.out(h) + self.skip(flat) + terms.head
        return mask_logits(out.reshape(B, S, V), self.mask)

    def ragged_logits(self, ctx: TableContext) -> Tensor:
        return self._ragged_logits(self.features(ctx), None)

    def _ragged_logits(self, terms: ContextTerms, x: Optional[Tensor]) -> Tensor:
        """(B, sum V_s) unpadded logits(ctx, x) in the ragged layout: x (B, S, V_max) float, (B, S) long or None."""
        S, V = self.mask.shape
        B, dtype = terms.head.shape[0], terms.head.dtype
        if x is None:
            pre = terms.hidden[0].new_zeros(B, self.embed.shape[1])
        elif not x.is_floating_point():             # rows: each slot's embedding row, masked, summed
            e = self.embed.index_select(0, (x.clamp(min=0) + self.starts).reshape(-1)).reshape(B, S, -1)
            pre = torch.einsum("bsw,sw->bw", e * (x >= 0).unsqueeze(-1).to(dtype), self.embed_mask)
        else:
            xr = x.reshape(B, S * V).to(dtype).index_select(1, self.columns)          # (B, sum V_s)
            pre = xr @ (self.embed * self.embed_mask.index_select(0, self.slot_of))
        h = F.silu(pre + self.embed_bias + terms.hidden[0])
        for layer, term in zip(self.hidden_layers, terms.hidden[1:]):
            h = F.silu(layer(h) + term)
        w = self.out.weight * self.out_mask.index_select(0, self.slot_of)
        return F.linear(h, w, self.out.bias) + terms.head

    def teacher_terms(self, rows: Tensor, ctx: TableContext, temperature: float = 1.0,
                      entropy: bool = True) -> tuple[Tensor, Optional[Tensor]]:
        """Generator.teacher_terms; in the ragged layout from each slot's own logits, never padded to
        (B, M, S, V_max) (64 slots beside one of 10^5 categories: 6.4M logits per row)."""
        if not self.ragged:
            return super().teacher_terms(rows, ctx, temperature, entropy)
        B, M, S = rows.shape
        flat = rows.reshape(B * M, S)
        out = (self._ragged_logits(self.features(ctx.repeat_interleave(M)), flat).float() / temperature)
        lp, h = [], []
        for s in range(S):                       # over slots, each its own width
            logp = torch.log_softmax(out[:, self.offsets[s]:self.offsets[s + 1]], -1)
            lp.append(logp.gather(-1, flat[:, s:s + 1].clamp(min=0))[:, 0])
            if entropy:
                h.append(-(logp.exp() * logp).sum(-1))
        return torch.stack(lp, -1).reshape(B, M, S), torch.stack(h, -1).reshape(B, M, S) if entropy else None

    def slot_logits(self, features: ContextTerms, x: Tensor, s: int, carry: Optional[list[Tensor]] = None,
                    padded: bool = True) -> tuple[Tensor, list[Tensor]]:
        """Slot s's logits given the earlier slots, decoding in `order`.

        x (B, M, S, V) float or (B, M, S) long rows so far (-1 = not chosen); features: `features(ctx)`
        of the B contexts; carry: the generator's state for these rows from the earlier positions (None
        at the first position). -> (logits (B, M, V), carry for the next position; reorder it along M
        as the rows are reordered). Equal to logits(ctx, x)[:, s]: only the units of degree p = position
        of s are computed, each once per row. Padded layout: the carry is, per hidden layer, the
        pre-activations (B, M, n) of its units of degree >= p and, last, the logits so far (B, M,
        (S - p) V) of the slots from position p on; each computed unit adds its share to the units
        above it once, and is then dropped; without autograd it is updated in place (the carry passed
        in is consumed: copy it first to branch from it). Ragged layout: per hidden layer, the (B, M, n)
        units of lower degree; padded=False returns slot s's own categories only (B, M, V_s).
        """
        S, V = self.mask.shape
        p = self._position[s]
        if self.ragged:
            earlier = torch.tensor(self._order[:p], dtype=torch.long, device=x.device)
            return self._ragged_slot_logits(features, x, s, p, earlier, carry, padded)
        w = self._degree_weights()
        B, M = x.shape[:2]
        if carry is None:
            if p:
                raise ValueError(f"carry is None at position {p}: slot_logits is called for every slot in order")
            carry = [(b + term.index_select(1, by)).unsqueeze(1).expand(B, M, len(by))
                     for b, term, by in zip(w.bias, features.hidden, w.units)]
            carry.append((w.out_bias + features.head.index_select(1, w.outputs)).unsqueeze(1).expand(B, M, S * V))
        if len(carry) != len(w.hidden) + 1 or carry[-1].shape[-1] != (S - p) * V:
            raise ValueError(f"carry holds {carry[-1].shape[-1] // V} slots' outputs, position {p} needs {S - p}")
        acc = list(carry)
        if p:                                   # the slot chosen at the last position reaches every later unit
            t = self._order[p - 1]
            hot = x[:, :, t, :V] if x.is_floating_point() else rows_to_inputs(x[:, :, t], V)
            hot = hot.to(acc[-1].dtype)
            acc[0] = _add_linear(acc[0], hot, w.hidden[0][self._below[0][p]:, t * V:(t + 1) * V])
            acc[-1] = _add_linear(acc[-1], hot, w.skip[p * V:, t * V:(t + 1) * V])
        new = None
        for i, below in enumerate(self._below):
            if i:                                # the layer below's new units reach this layer's units of degree >= p
                acc[i] = _add_linear(acc[i], new, w.hidden[i][below[p]:, self._below[i - 1][p]:self._below[i - 1][p + 1]])
            n = below[p + 1] - below[p]
            new = F.silu(acc[i][..., :n])
            acc[i] = acc[i][..., n:]
        last = self._below[-1]
        acc[-1] = _add_linear(acc[-1], new, w.out[p * V:, last[p]:last[p + 1]])
        logits = acc[-1][..., :V].masked_fill(~self.mask[s], MASK_VALUE)
        acc[-1] = acc[-1][..., V:]
        return logits, acc

    def _degree_weights(self) -> "_DegreeWeights":
        """The padded layout's masked weights with every layer's units sorted by degree and the outputs
        by position (what sequential decoding reads as contiguous blocks); kept for the rest of a
        `decoding()` call when no gradient is recorded."""
        blocks = getattr(self, "_blocks", None)
        if blocks is not None and not torch.is_grad_enabled() and "degree" in blocks:
            return blocks["degree"]
        S, V = self.mask.shape
        dev = self.out.weight.device
        by = [units.to(dev) for units in self._by_degree]
        outputs = (torch.tensor(self._order, device=dev)[:, None] * V + torch.arange(V, device=dev)).reshape(-1)
        hidden, bias = [], []
        for i, layer in enumerate(self.hidden_layers):
            wt = (layer.weight * layer.weight_mask).index_select(0, by[i])
            hidden.append(wt if i == 0 else wt.index_select(1, by[i - 1]))
            bias.append(layer.bias.index_select(0, by[i]))
        out = (self.out.weight * self.out.weight_mask).index_select(0, outputs).index_select(1, by[-1])
        skip = (self.skip.weight * self.skip.weight_mask).index_select(0, outputs)
        out_bias = self.out.bias.index_select(0, outputs) + self.skip.bias.index_select(0, outputs)
        w = _DegreeWeights(by, hidden, bias, out, skip, out_bias, outputs)
        if blocks is not None and not torch.is_grad_enabled():
            blocks["degree"] = w
        return w

    def _new_units(self, features: ContextTerms, h: Tensor, seen: Tensor, carry: Optional[list[Tensor]], p: int,
                   start: int) -> tuple[Tensor, list[Tensor], Tensor]:
        """The units of degree p of hidden layers start.. given h (B, M, n) the layer below's units
        `seen`; -> (last layer's units of degree <= p, the carry of layers start.., their indices)."""
        B, M = h.shape[:2]
        dev, out_carry = h.device, []
        for i in range(start, len(features.hidden)):
            layer, term = self.hidden_layers[i - start], features.hidden[i]
            done = carry[i] if carry is not None else h.new_zeros(B, M, 0)
            if done.shape[-1] != self._below[i][p]:
                raise ValueError(f"carry of layer {i} has {done.shape[-1]} units, position {p} needs {self._below[i][p]}")
            units = self._by_degree[i][self._below[i][p]:self._below[i][p + 1]].to(dev)
            w = (layer.weight * layer.weight_mask).index_select(0, units).index_select(1, seen)
            new = _silu_sum(F.linear(h, w, layer.bias.index_select(0, units)), term.index_select(1, units).unsqueeze(1))
            h = torch.cat([done, new], -1)
            out_carry.append(h)
            seen = self._by_degree[i][: self._below[i][p + 1]].to(dev)
        return h, out_carry, seen

    def _ragged_slot_logits(self, features: ContextTerms, x: Tensor, s: int, p: int, earlier: Tensor,
                            carry: Optional[list[Tensor]], padded: bool) -> tuple[Tensor, list[Tensor]]:
        """slot_logits in the ragged layout: the first layer's new units (degree p, which see every
        earlier slot) from the earlier slots' embedding rows, gathered for long rows, a product with
        their ragged columns for float ones."""
        S, V = self.mask.shape
        B, M = x.shape[:2]
        dev, dtype = x.device, features.head.dtype
        done = carry[0] if carry is not None else x.new_zeros(B, M, 0, dtype=dtype)
        if done.shape[-1] != self._below[0][p]:
            raise ValueError(f"carry of layer 0 has {done.shape[-1]} units, position {p} needs {self._below[0][p]}")
        units = self._by_degree[0][self._below[0][p]:self._below[0][p + 1]].to(dev)
        if p == 0:
            pre = x.new_zeros(B, M, len(units), dtype=dtype)
        elif not x.is_floating_point():             # the chosen categories' rows of these units, summed
            r = x.index_select(2, earlier)                                               # (B, M, p)
            idx = r.clamp(min=0) + self.starts.index_select(0, earlier)
            e = self._embed_block(p).index_select(0, idx.reshape(-1)).reshape(B, M, p, len(units))
            pre = (e * (r >= 0).unsqueeze(-1).to(dtype)).sum(2)
        else:                                       # the earlier slots' ragged columns
            seen = torch.isin(self.slot_of, earlier).nonzero().squeeze(1)
            pre = (x.reshape(B, M, S * V).to(dtype).index_select(2, self.columns.index_select(0, seen))
                   @ self._embed_block(p).index_select(0, seen))
        new = _silu_sum(pre + self.embed_bias.index_select(0, units), features.hidden[0].index_select(1, units).unsqueeze(1))
        h0 = torch.cat([done, new], -1)
        h, out_carry, seen_units = self._new_units(features, h0, self._by_degree[0][: self._below[0][p + 1]].to(dev),
                                                   carry, p, 1)
        a, b = self.offsets[s], self.offsets[s + 1]
        out = (F.linear(h, self.out.weight[a:b].index_select(1, seen_units), self.out.bias[a:b])
               + features.head[:, a:b].unsqueeze(1))
        return F.pad(out, (0, V - (b - a)), value=MASK_VALUE) if padded else out, [h0, *out_carry]

    @contextlib.contextmanager
    def decoding(self):
        """Generator.decoding: in the ragged layout, each position's embedding block (_embed_block)
        is copied once per call, not once per chunk and position."""
        outer = getattr(self, "_blocks", None)
        self._blocks = {} if outer is None else outer
        try:
            yield
        finally:
            self._blocks = outer

    def _embed_block(self, p: int) -> Tensor:
        """(sum V_s, n) the embedding columns of the first layer's units of degree p (unit j has degree
        j % S: every S-th column from p), contiguous: rows gather 15x faster from it than from the
        strided view. Kept for the rest of a `decoding()` call when no gradient is recorded."""
        blocks = getattr(self, "_blocks", None)
        if blocks is None or torch.is_grad_enabled():
            return self.embed[:, p::len(self.sizes)].contiguous()
        if p not in blocks:
            blocks[p] = self.embed[:, p::len(self.sizes)].contiguous()
        return blocks[p]


def _add_linear(a: Tensor, x: Tensor, w: Tensor) -> Tensor:
    """a + x w^T for a (B, M, n), x (B, M, k), w (n, k) (a block of _degree_weights): in place on `a`
    (one fused multiply-add) when no gradient is recorded and `a` owns its memory as rows (not an
    expanded view). Under autograd the block is copied, so that what backward keeps is the block,
    not the whole masked matrix it was cut from."""
    if a.shape[-1] == 0 or x.shape[-1] == 0:          # no unit of this degree, or none left above it
        return a
    if torch.is_grad_enabled():
        return a + F.linear(x, w.clone())
    rows_flat = a.stride(-1) == 1 and a.stride(0) == a.shape[1] * a.stride(1) and 0 not in a.stride()
    if not rows_flat:
        return a + F.linear(x, w)
    a.view(-1, a.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), w.t())
    return a


def _silu_sum(a: Tensor, b: Tensor) -> Tensor:
    """silu(a + b), in place on `a` when no gradient is recorded (decoding allocates less)."""
    if torch.is_grad_enabled():
        return F.silu(a + b)
    return F.silu(a.add_(b), inplace=True)
