"""Toy scorers for checking gradient estimators against exact answers (tests and benchmarks/gradients.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RandomMLPScorer(nn.Module):
    """Fixed random scorer f(x) = w2 . tanh(W1 flatten(x) + b1): (N, S, V) -> (N,), differentiable in x,
    accepting hard or soft rows. Parameters are frozen (requires_grad=False); seeded."""

    def __init__(self, num_slots: int, vocab: int, hidden: int = 16, seed: int = 0, scale: float = 1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = num_slots * vocab
        self.w1 = nn.Parameter(torch.randn(d, hidden, generator=g) * (2.0 / d) ** 0.5, requires_grad=False)
        self.b1 = nn.Parameter(torch.randn(hidden, generator=g) * 0.5, requires_grad=False)
        self.w2 = nn.Parameter(torch.randn(hidden, generator=g) * scale / hidden ** 0.5, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(x.reshape(x.shape[0], -1).to(self.w1.dtype) @ self.w1 + self.b1)
        return h @ self.w2
