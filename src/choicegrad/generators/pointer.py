"""Pointer generator: pick one item per slot out of a variable-length list of item vectors.

items (B, N, D) with mask (B, N) -> item encoder (per-item MLP, then optional self-attention over the
list) -> S learned slot queries, shifted by the list's context columns (a user, ...), attend over
the encoded items (one cross-attention step) -> logits (B, S, N) = query . key / sqrt(H). Padding
items, and items a slot may not take (ItemContext.slot_mask), are masked out.

Two forms:
- independent (sequential=False, distinct=False): every slot's logits at once; an item may fill
  several slots;
- sequential: slot s's query also sees the items chosen in the slots before it (a learned map per
  earlier slot of the chosen item's encoding), so its choices can follow interactions between slots;
  with `distinct` an item chosen in an earlier slot is masked out (a page shows an item once).
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
        self.self_attention = nn.ModuleList(
            nn.TransformerEncoderLayer(H, config.heads, dim_feedforward=2 * H, dropout=0.0, batch_first=True,
                                       norm_first=True)
            for _ in range(config.attention_layers)
        )
        self.queries = nn.Parameter(torch.randn(self.slots, H) * 0.5)
        self.trunk = (ContextTrunk(self.cardinalities, self.num_numeric, config.context_dim, [H])
                      if self.cardinalities or self.num_numeric else None)
        self.cross = nn.MultiheadAttention(H, config.heads, dropout=0.0, batch_first=True)
        self.query_proj = nn.Linear(H, H)
        self.key_proj = nn.Linear(H, H)
        if self.sequential:   # what slot t's chosen item adds to the later slots' queries
            self.chosen = nn.Parameter(torch.zeros(self.slots, H, H))

    @property
    def num_slots(self) -> int:
        return self.slots

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
        scores = torch.einsum("bshk,bnk->bshn", reach, e)                        # q.b_k is constant over items
        weights = torch.softmax(scores.masked_fill(pad[:, None, None, :], float("-inf")), -1)
        pooled = torch.einsum("bshn,bnk->bshk", weights, e)                      # (B, S, h, H)
        heads = torch.einsum("bshk,hdk->bshd", pooled, w[2 * H:].view(h, d, H)) + b[2 * H:].view(h, d)
        return self.cross.out_proj(heads.reshape(B, S, H))

    def _logits(self, feats, q: Tensor, allowed: Tensor) -> Tensor:
        """q (B, M, S', H) queries -> (B, M, S', N) logits masked by allowed (B, M or 1, S', N):
        query_proj(q) . key_proj(e) / sqrt(H), the key map moved to the query side (see _cross)."""
        e = feats[0]
        H = q.shape[-1]
        qp = self.query_proj(q)
        reach = qp @ self.key_proj.weight                                         # (B, M, S', H)
        logits = (torch.einsum("bmsk,bnk->bmsn", reach, e) + (qp @ self.key_proj.bias).unsqueeze(-1)) / H ** 0.5
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

    def _chosen(self, feats, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per slot of rows x ((B, M, S) long, -1 = not chosen, or (B, M, S, N) float one-hot/relaxed):
        (what its item adds to later queries (B, M, S, H), its hard one-hot (B, M, S, N) float)."""
        e = feats[0]
        N = e.shape[1]
        if x.is_floating_point():
            hot = torch.nn.functional.one_hot(x.detach().argmax(-1), N).to(e.dtype) * (x.detach().sum(-1, keepdim=True) > 0)
            soft = x.to(e.dtype)
        else:
            hot = torch.nn.functional.one_hot(x.clamp(min=0), N).to(e.dtype) * (x >= 0).unsqueeze(-1)
            soft = hot
        picked = torch.einsum("bmsn,bnh->bmsh", soft, e)
        return torch.einsum("bmsh,shg->bmsg", picked, self.chosen), hot

    def _earlier(self) -> Tensor:
        """(S, S) float: earlier[s, t] = 1 when slot t comes before slot s in the order."""
        pos = torch.empty(self.slots, dtype=torch.long)
        pos[torch.tensor(self.order)] = torch.arange(self.slots)
        return (pos[None, :] < pos[:, None]).to(self.queries.dtype).to(self.queries.device)

    def _teacher(self, feats, rows: Tensor) -> Tensor:
        """Sequential logits of every slot given the earlier slots of rows (B, M, S) -> (B, M, S, N)."""
        add, hot = self._chosen(feats, rows)
        earlier = self._earlier()
        q = feats[1].unsqueeze(1) + torch.einsum("st,bmth->bmsh", earlier, add)
        allowed = feats[2].unsqueeze(1)
        if self.distinct:
            used = torch.einsum("st,bmtn->bmsn", earlier, hot) > 0
            allowed = allowed & ~used
        return self._logits(feats, q, allowed)

    def slot_logits(self, features, x: Tensor, s: int, carry=None, padded: bool = True) -> tuple[Tensor, None]:
        """Slot s's logits (B, M, N) given the earlier slots of x ((B, M, S) long, -1 = not chosen,
        or (B, M, S, N) float)."""
        add, hot = self._chosen(features, x)
        earlier = self._earlier()[s]                                               # (S,)
        q = features[1][:, s].unsqueeze(1) + torch.einsum("t,bmth->bmh", earlier, add)
        allowed = features[2][:, s].unsqueeze(1)
        if self.distinct:
            allowed = allowed & ~(torch.einsum("t,bmtn->bmn", earlier, hot) > 0)
        return self._logits(features, q.unsqueeze(2), allowed.unsqueeze(2))[:, :, 0], None
