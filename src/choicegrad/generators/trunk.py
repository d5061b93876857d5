"""Context trunk shared by the table generators: categorical context embeddings + numeric context
-> MLP -> (B, H) features. A context-free table gets a learned constant input instead."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from choicegrad.generators.context import TableContext


def mlp(dims: list[int], final_activation: bool = True) -> nn.Sequential:
    """Linear layers of widths dims[0] -> ... -> dims[-1] with SiLU in between (and at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if final_activation or i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class ContextTrunk(nn.Module):
    """(ctx.cat (B, C_cat) long, ctx.num (B, C_num) float) -> (B, hidden[-1]).

    cardinalities: vocabulary size of each categorical context column; num_numeric: C_num.
    """

    def __init__(self, cardinalities: list[int], num_numeric: int, context_dim: int, hidden: list[int]):
        super().__init__()
        self.embeds = nn.ModuleList(nn.Embedding(c, context_dim) for c in cardinalities)
        in_dim = len(cardinalities) * context_dim + num_numeric
        self.constant = nn.Parameter(torch.randn(context_dim) * 0.1) if in_dim == 0 else None
        self.body = mlp([in_dim or context_dim, *hidden])
        self.out_dim = hidden[-1]

    def forward(self, ctx: TableContext) -> Tensor:
        B = len(ctx)
        if self.constant is not None:
            return self.body(self.constant.expand(B, -1))
        parts = [e(ctx.cat[:, j]) for j, e in enumerate(self.embeds)]
        if ctx.num.shape[-1]:
            parts.append(ctx.num.to(self.body[0].weight.dtype))
        return self.body(torch.cat(parts, 1))
