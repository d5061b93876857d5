"""Pointer generator: pick one item per slot out of a variable-length list of item vectors.

items (B, N, D) with mask (B, N) -> item encoder (per-item MLP, then optional self-attention over the
list: full transformer layers, or light SetAttention layers of width config.attention_width, which
let each item see the others at a fraction of the cost) -> S learned slot queries, shifted by the
list's context columns (a user, ...), attend over the encoded items (one cross-attention step) ->
logits (B, S, N) = query . key / sqrt(H). Padding items, and items a slot may not take
(ItemContext.slot_mask), are masked out.

Two forms:
- independent (sequential=False, distinct=False): every slot's logits at once; an item may fill
  several slots;
- sequential: slot s's query also sees the items chosen in the slots before it (a learned map per
  pair of slots, chosen[s, t], of the encoding of the item in slot t), so its choices can follow
  interactions between slots, each pair its own; with `distinct` an item chosen in an earlier slot
  is masked out (a page shows an item once).
The reward is any function of the selected item vectors x @ items, x (B, S, N) one-hot or relaxed.
Nothing depends on N, so a trained generator applies to lists of any length.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from choicegrad.generators.base import Generator, GeneratorConfig, mask_logits
from choicegrad.generators.context import ItemContext
from choicegrad.generators.trunk import ContextTrunk, mlp


class PointerGenerator(Generator):
    """num_slots S, item_dim D; width H = config.hidden[-1] (divisible by config.heads).

    cardinalities / num_numeric: the lists' context columns (ItemContext.cat / .num), as a table
    generator's; sequential / distinct: see the module docstring (distinct implies sequential);
    item_shift / item_scale (D,): the encoder reads (items - shift) / scale.
    Many parameters (__init__): the model's shape (slots, item width, context columns), its two modes
    and the item scaling: what a saved pointer generator records, passed back in by generators.load."""

    kind = "pointer"

    def __init__(self, num_slots: int, item_dim: int, config: GeneratorConfig,
                 cardinalities: Sequence[int] = (), num_numeric: int = 0, sequential: bool = False,
                 distinct: bool = False, item_shift: Optional[Sequence[float]] = None,
                 item_scale: Optional[Sequence[float]] = None):
        super().__init__(config)
        self.slots, self.item_dim = int(num_slots), int(item_dim)
        self.cardinalities, self.num_numeric = [int(c) for c in cardinalities], int(num_numeric)
        self.distinct = bool(distinct)
        self.sequential = bool(sequential) or self.distinct
        self.autoregressive = self.sequential
        # the encoder reads (items - shift) / scale: item vectors in their own units (a reward reads
        # those), standardised here
        self.item_shift = [float(v) for v in item_shift] if item_shift is not None else [0.0] * self.item_dim
        self.item_scale = [float(v) for v in item_scale] if item_scale is not None else [1.0] * self.item_dim
        self.register_buffer("shift", torch.tensor(self.item_shift), persistent=False)
        self.register_buffer("scale", torch.tensor(self.item_scale), persistent=False)
        H = config.hidden[-1]
        if H % config.heads:
            raise ValueError(f"pointer width hidden[-1]={H} must be divisible by heads={config.heads}")
        self.encoder = mlp([self.item_dim, *config.hidden], final_activation=False)
        if config.attention_width is None:
            self.self_attention = nn.ModuleList(
                nn.TransformerEncoderLayer(H, config.heads, dim_feedforward=2 * H, dropout=0.0, batch_first=True,
                                           norm_first=True)
                for _ in range(config.attention_layers))
        else:
            self.self_attention = nn.ModuleList(SetAttention(H, config.attention_width)
                                                for _ in range(config.attention_layers))
        self.queries = nn.Parameter(torch.randn(self.slots, H) * 0.5)
        self.trunk = (ContextTrunk(self.cardinalities, self.num_numeric, config.context_dim, [H])
                      if self.cardinalities or self.num_numeric else None)
        self.cross = nn.MultiheadAttention(H, config.heads, dropout=0.0, batch_first=True)
        self.query_proj = nn.Linear(H, H)
        self.key_proj = nn.Linear(H, H)
        if self.sequential:   # chosen[s, t]: what slot t's chosen item adds to a later slot s's query
            self.chosen = nn.Parameter(torch.zeros(self.slots, self.slots, H, H))

    @property
    def num_slots(self) -> int:
        return self.slots

    def former_shapes(self) -> dict[str, tuple[int, ...]]:
        """Weights whose shape older checkpoints held (io.read_state accepts them, upgrade_state converts)."""
        return {"chosen": tuple(self.chosen.shape[1:])} if self.sequential else {}

    def upgrade_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A state from before chosen[s, t] held one map per chosen slot t, chosen (S, H, H), added to
        every later slot's query: as chosen[s, t] = that map for every s (the same generator)."""
        old = state.get("chosen")
        if old is None or old.dim() != 3:
            return state
        return {**state, "chosen": old.unsqueeze(0).expand(self.slots, *old.shape).clone()}

    def meta(self) -> dict:
        return {"num_slots": self.slots, "item_dim": self.item_dim, "cardinalities": self.cardinalities,
                "num_numeric": self.num_numeric, "sequential": self.sequential, "distinct": self.distinct,
                "item_shift": self.item_shift, "item_scale": self.item_scale}

    def choice_mask(self, ctx: ItemContext) -> Tensor:
        return ctx.allowed(self.slots)

    def features(self, ctx: ItemContext) -> tuple[Tensor, Tensor, Tensor]:
        """(encoded items e (B, N, H), slot queries (B, S, H), allowed (B, S, N))."""
        pad = ~ctx.mask
        e = self.encoder((ctx.items.to(self.queries.dtype) - self.shift) / self.scale)   # (B, N, H)
        for layer in self.self_attention:
            e = layer(e, src_key_padding_mask=pad)
        q = self.queries.unsqueeze(0).expand(len(ctx), -1, -1)                   # (B, S, H)
        if self.trunk is not None:
            q = q + self.trunk(ctx).unsqueeze(1)
        q = q + self._cross(q, e, pad)
        return e, q, self.choice_mask(ctx)

    def _cross(self, q: Tensor, e: Tensor, pad: Tensor) -> Tensor:
        """self.cross(q, e, e) (multi-head attention of the S queries over the N items), with the key
        and value maps moved to the query side: q . (W_k e) = (W_k^T q) . e, and the attention-weighted
        mean of W_v e + b_v is W_v (weighted mean of e) + b_v; so each item costs H numbers, not the
        two (H, H) products a list of N items would otherwise pay. q (B, S, H), e (B, N, H)."""
        B, S, H = q.shape
        h = self.cross.num_heads
        d = H // h
        w, b = self.cross.in_proj_weight, self.cross.in_proj_bias
        qh = (q @ w[:H].T + b[:H]).view(B, S, h, d) / d ** 0.5                    # (B, S, h, d)
        reach = torch.einsum("bshd,hdk->bshk", qh, w[H:2 * H].view(h, d, H))     # (B, S, h, H): W_k^T q per head
        scores = (reach.reshape(B, S * h, H) @ e.transpose(1, 2)).view(B, S, h, -1)   # q.b_k is constant over items
        weights = torch.softmax(scores.masked_fill(pad[:, None, None, :], float("-inf")), -1)
        pooled = (weights.reshape(B, S * h, -1) @ e).view(B, S, h, H)            # (B, S, h, H)
        heads = torch.einsum("bshk,hdk->bshd", pooled, w[2 * H:].view(h, d, H)) + b[2 * H:].view(h, d)
        return self.cross.out_proj(heads.reshape(B, S, H))

    def _logits(self, feats, q: Tensor, allowed: Tensor) -> Tensor:
        """q (B, M, S', H) queries -> (B, M, S', N) logits masked by allowed (B, M or 1, S', N):
        query_proj(q) . key_proj(e) / sqrt(H), the key map moved to the query side (see _cross)."""
        e = feats[0]
        H = q.shape[-1]
        qp = self.query_proj(q)
        reach = qp @ self.key_proj.weight                                         # (B, M, S', H)
        B, M, S = reach.shape[:3]                                                 # a transposed view: no copy of e
        dots = (reach.reshape(B, M * S, H) @ e.transpose(1, 2)).view(B, M, S, -1)
        logits = (dots + (qp @ self.key_proj.bias).unsqueeze(-1)) / H ** 0.5
        return mask_logits(logits, allowed)

    def logits(self, ctx: ItemContext, x: Optional[Tensor] = None) -> Tensor:
        """(B, S, N) slot-over-item logits; sequential: slot s given the items of row x (B, S) long
        in the slots before it (x None: nothing chosen)."""
        feats = self.features(ctx)
        if not self.sequential or x is None:
            return self._logits(feats, feats[1].unsqueeze(1), feats[2].unsqueeze(1))[:, 0]
        return self._teacher(feats, x.unsqueeze(1))[:, 0]

    def teacher_logits(self, rows: Tensor, ctx: ItemContext) -> Tensor:
        """rows (B, M, S) long -> (B, M, S, N): the list encoded once per context, not once per row."""
        feats = self.features(ctx)
        if not self.sequential:
            logits = self._logits(feats, feats[1].unsqueeze(1), feats[2].unsqueeze(1))
            return logits.expand(-1, rows.shape[1], -1, -1)
        return self._teacher(feats, rows)

    def _chosen(self, feats, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """Per slot of rows x ((B, M, S) long, -1 = not chosen, or (B, M, S, N) float one-hot/relaxed):
        (its item's encoding (B, M, S, H), zero where not chosen; for a distinct generator its hard
        one-hot (B, M, S, N) bool, else None)."""
        e = feats[0]
        B, N, H = e.shape
        if x.is_floating_point():
            hot = torch.nn.functional.one_hot(x.detach().argmax(-1), N).bool() & (x.detach().sum(-1, keepdim=True) > 0)
            return torch.einsum("bmsn,bnh->bmsh", x.to(e.dtype), e), hot if self.distinct else None
        M, S = x.shape[1:]
        picked = e.gather(1, x.clamp(min=0).reshape(B, M * S, 1).expand(-1, -1, H)).view(B, M, S, H)
        picked = picked * (x >= 0).unsqueeze(-1).to(e.dtype)
        hot = None
        if self.distinct:
            hot = torch.nn.functional.one_hot(x.clamp(min=0), N).bool() & (x >= 0).unsqueeze(-1)
        return picked, hot

    def _after(self, picked: Tensor, s: Optional[int] = None) -> Tensor:
        """What the chosen items add to the queries: sum over the slots t before s of chosen[s, t]
        applied to slot t's picked encoding (B, M, S, H) -> (B, M, S, H), or slot s's alone (B, M, H);
        one matmul per slot over its earlier slots only."""
        if s is None:
            return torch.stack([self._after(picked, t) for t in range(self.slots)], 2)
        B, M, _, H = picked.shape
        before = self._before(s)
        if not before:
            return picked.new_zeros(B, M, H)
        return picked[:, :, before].reshape(B, M, -1) @ self.chosen[s, before].reshape(len(before) * H, H)

    def _before(self, s: int) -> list[int]:
        """The slots that come before slot s in the order."""
        return self.order[:self.order.index(s)]

    def _earlier(self) -> Tensor:
        """(S, S) float: earlier[s, t] = 1 when slot t comes before slot s in the order."""
        pos = torch.empty(self.slots, dtype=torch.long)
        pos[torch.tensor(self.order)] = torch.arange(self.slots)
        return (pos[None, :] < pos[:, None]).to(self.queries.dtype).to(self.queries.device)

    def _teacher(self, feats, rows: Tensor) -> Tensor:
        """Sequential logits of every slot given the earlier slots of rows (B, M, S) -> (B, M, S, N)."""
        picked, hot = self._chosen(feats, rows)
        q = feats[1].unsqueeze(1) + self._after(picked)
        allowed = feats[2].unsqueeze(1)
        if self.distinct:
            used = torch.einsum("st,bmtn->bmsn", self._earlier(), hot.to(q.dtype)) > 0
            allowed = allowed & ~used
        return self._logits(feats, q, allowed)

    def slot_logits(self, features, x: Tensor, s: int, carry=None, padded: bool = True) -> tuple[Tensor, None]:
        """Slot s's logits (B, M, N) given the earlier slots of x ((B, M, S) long, -1 = not chosen,
        or (B, M, S, N) float)."""
        picked, hot = self._chosen(features, x)
        q = features[1][:, s].unsqueeze(1) + self._after(picked, s)
        allowed = features[2][:, s].unsqueeze(1)
        if self.distinct:
            allowed = allowed & ~(hot[:, :, self._before(s)].any(2))
        return self._logits(features, q.unsqueeze(2), allowed.unsqueeze(2))[:, :, 0], None


class SetAttention(nn.Module):
    """A light attention layer over a list's items, linear in its length (induced set attention, Set
    Transformer): P learned points attend over the items (P x N), then every item attends over what
    the points gathered (N x P), at width d, no feed-forward layer: e + W_o attention(LN(e)). For the
    first slot's choice, which must weigh each item by the partners the list holds for it, at about
    the cost of the item encoder, and a list of 100,000 items costs its items, not their pairs.
    forward: e (B, N, H), src_key_padding_mask (B, N) True = padding -> (B, N, H)."""

    def __init__(self, H: int, d: int, points: int = 16):
        super().__init__()
        self.d = d
        self.norm = nn.LayerNorm(H)
        self.qkv = nn.Linear(H, 3 * d)
        self.points = nn.Parameter(torch.randn(points, d) / d ** 0.5)
        self.gathered = nn.Linear(d, 2 * d)                 # the points' keys and values for the items
        self.out = nn.Linear(d, H)

    def forward(self, e: Tensor, src_key_padding_mask: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm(e)).chunk(3, -1)                              # (B, N, d) each
        scores = torch.einsum("pd,bnd->bpn", self.points, k) / self.d ** 0.5       # (B, P, N)
        pooled = torch.softmax(scores.masked_fill(src_key_padding_mask[:, None, :], float("-inf")), -1) @ v
        pk, pv = self.gathered(pooled).chunk(2, -1)                                # (B, P, d) each
        att = torch.softmax(q @ pk.transpose(1, 2) / self.d ** 0.5, -1) @ pv       # (B, N, d)
        return e + self.out(att)
