"""Pointer generator: pick one item per slot out of a variable-length list of item vectors.

items (B, N, D) with mask (B, N) -> item encoder (per-item MLP, then optional self-attention over the
list) -> S learned slot queries attend over the encoded items (one cross-attention step) -> logits
(B, S, N) = query . key / sqrt(H). Padding items are masked out; the same item may fill several slots.
The reward is any function of the selected item vectors x @ items, x (B, S, N) one-hot or relaxed.
Nothing depends on N, so a trained generator applies to lists of any length.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from choicegrad.generators.base import Generator, GeneratorConfig, mask_logits
from choicegrad.generators.context import ItemContext
from choicegrad.generators.trunk import mlp


class PointerGenerator(Generator):
    """num_slots S, item_dim D; width H = config.hidden[-1] (divisible by config.heads)."""

    kind = "pointer"

    def __init__(self, num_slots: int, item_dim: int, config: GeneratorConfig):
        super().__init__(config)
        self.slots, self.item_dim = int(num_slots), int(item_dim)
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
        self.cross = nn.MultiheadAttention(H, config.heads, dropout=0.0, batch_first=True)
        self.query_proj = nn.Linear(H, H)
        self.key_proj = nn.Linear(H, H)

    @property
    def num_slots(self) -> int:
        return self.slots

    def meta(self) -> dict:
        return {"num_slots": self.slots, "item_dim": self.item_dim}

    def choice_mask(self, ctx: ItemContext) -> Tensor:
        return ctx.mask.unsqueeze(1).expand(-1, self.slots, -1)

    def logits(self, ctx: ItemContext, x: Optional[Tensor] = None) -> Tensor:
        """(B, S, N) slot-over-item logits; `x` is ignored (slots are independent given the items)."""
        pad = ~ctx.mask
        e = self.encoder(ctx.items.to(self.queries.dtype))                        # (B, N, H)
        for layer in self.self_attention:
            e = layer(e, src_key_padding_mask=pad)
        q = self.queries.unsqueeze(0).expand(len(ctx), -1, -1)                   # (B, S, H)
        q = q + self.cross(q, e, e, key_padding_mask=pad, need_weights=False)[0]
        H = q.shape[-1]
        logits = torch.einsum("bsh,bnh->bsn", self.query_proj(q), self.key_proj(e)) / H ** 0.5
        return mask_logits(logits, ctx.mask.unsqueeze(1))
