"""A planted-optimum landscape: every context hides a few good rows; the best one is the optimum.

f(c, x) = max_m w_m * (matches(x, x*_{c,m}) + bonus * [x == x*_{c,m}]), w_m = 1 - 0.1 m, where
matches counts the slots equal to mode m's row. Mode 0 is the unique optimum (value S + bonus);
other modes are distinct runner-up rows, so a generator that covers several modes scores well on
many distinct rows. The oracle accepts hard rows or soft (N, S, V) rows (then it is differentiable:
matches become probabilities and the bonus their product), so it can stand in for a scorer in tests.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from choicegrad.data.context import ContextColumn, ContextEncoder
from choicegrad.data.space import ChoiceSpace, Slot


class PlantedTask:
    """slots x vocab categories, `contexts` contexts, `modes` planted rows per context (seeded)."""

    def __init__(self, slots: int = 4, vocab: int = 4, contexts: int = 2, modes: int = 1, bonus: float = 2.0,
                 seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.slots, self.vocab, self.contexts, self.modes, self.bonus = slots, vocab, contexts, modes, bonus
        self.planted = torch.randint(vocab, (contexts, modes, slots), generator=g)     # (C, M, S)
        self.weights = 1.0 - 0.1 * torch.arange(modes, dtype=torch.float32)            # (M,)

    def space(self) -> ChoiceSpace:
        return ChoiceSpace(slots=[Slot(name=f"s{s}", categories=self.labels()) for s in range(self.slots)])

    def labels(self) -> list[str]:
        return [chr(ord("a") + v) for v in range(self.vocab)]

    def context_encoder(self) -> ContextEncoder:
        return ContextEncoder(columns=[ContextColumn(name="ctx", kind="categorical",
                                                     categories=[f"c{c}" for c in range(self.contexts)])])

    def oracle(self, ctx: Tensor, x: Tensor) -> Tensor:
        """ctx (N,) long context ids; x (N, S) long or (N, S, V) float -> (N,) scores."""
        target = self.planted.to(x.device)[ctx]                                        # (N, M, S)
        if x.is_floating_point():
            p = x.unsqueeze(1).expand(-1, self.modes, -1, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
            match, exact = p.sum(-1), p.prod(-1)
        else:
            eq = (x.unsqueeze(1) == target).float()
            match, exact = eq.sum(-1), eq.prod(-1)
        return (self.weights.to(x.device) * (match + self.bonus * exact)).max(-1).values

    def objective(self):
        """An objective f(x, TableContext) for the generators (context column 0 = the context id)."""
        task = self

        def f(x, ctx):
            return task.oracle(ctx.cat[:, 0], x)

        return f

    def optimum(self, c: int) -> tuple[Tensor, float]:
        """(S,) optimum row of context c (mode 0) and its value."""
        return self.planted[c, 0], float(self.slots + self.bonus)

    def all_rows(self) -> Tensor:
        return torch.tensor(list(itertools.product(range(self.vocab), repeat=self.slots)))

    def table(self, n: int = 500, seed: int = 0) -> pd.DataFrame:
        """n random rows with context column `ctx`, slots `s0..`, score `y`."""
        g = torch.Generator().manual_seed(seed)
        ctx = torch.randint(self.contexts, (n,), generator=g)
        rows = torch.randint(self.vocab, (n, self.slots), generator=g)
        letters = np.array(self.labels(), dtype=object)
        frame = pd.DataFrame({f"s{s}": letters[rows[:, s].numpy()] for s in range(self.slots)})
        frame.insert(0, "ctx", [f"c{c}" for c in ctx.tolist()])
        frame["y"] = self.oracle(ctx, rows).numpy()
        return frame
