"""A contextual Ehrlich function (after Stanton et al. 2024, "Closed-form test functions for
biophysical sequence optimization algorithms").

Feasibility: a first-order Markov chain over consecutive slots with banned transitions. Row x is
feasible iff allowed[x_s, x_{s+1}] for every s. Self-transitions are always allowed and a random
cycle through all categories is never banned (so the chain is ergodic). The other transitions are
banned one by one in a seeded random order while the share of feasible rows stays at least
`min_feasible` (at least one is always banned): on rows this short, denser bans would leave most
rows infeasible, and then no row lies strictly below a context's median (the offline protocol).
A swap next to a banned transition's end point turns a feasible row infeasible.

Motifs: context c has M motifs, motif i with elements a_i (k categories) and spacing o_i (k offsets,
o_i1 = 0 < o_i2 < ...). Presence h_i(x) = max over start positions l (with l + o_ik < S) of
(1/k) * #{j : x_{l + o_ij} = a_ij}, quantised q(h) = floor(h * Q) / Q with Q = `quantization` levels
(default k). The score is

    f(c, x) = prod_i q(h_i(x))  for a feasible row (in [0, 1]),   `infeasible` (-1) otherwise.

As in the paper, motifs come from the feasibility chain: per context a feasible random walk x* is
drawn, the slots are cut into M regions of S // M slots, and motif i is read off x* inside region i
at random offsets. x* is feasible and holds every motif, so the optimum value 1.0 is attained.
"""

from __future__ import annotations

import torch
from torch import Tensor


def feasible_share(allowed: Tensor, S: int) -> float:
    """Share of the V^S rows of length S with no banned transition (allowed (V, V) bool)."""
    A = allowed.double()
    ends = torch.ones(A.shape[0], dtype=torch.float64)
    for _ in range(S - 1):  # paths of length S, counted by the transfer matrix
        ends = A.T @ ends
    return float(ends.sum()) / A.shape[0] ** S


class EhrlichModel:
    """Seeded Ehrlich function: `slots` x `vocab` categories, `motifs` motifs of `motif_length` per context.

    allowed (V, V) bool transitions; elements (C, M, k) long; offsets (C, M, k) long; witness (C, S)
    a feasible row of value 1.0 per context.
    """

    def __init__(self, slots: int = 8, vocab: int = 5, motifs: int = 2, motif_length: int = 3, contexts: int = 16,
                 quantization: int | None = None, min_feasible: float = 0.6, infeasible: float = -1.0,
                 seed: int = 0):
        """ValueError naming a setting out of range. Many parameters: the function's published
        hyperparameters (Stanton et al. 2024), each a task option of the benchmark."""
        Q = motif_length if quantization is None else quantization
        if vocab < 3:
            raise ValueError(f"vocab: an Ehrlich function needs at least 3 categories "
                             f"(room for banned transitions), got {vocab}")
        if motifs < 1 or motif_length < 1:
            raise ValueError(f"motifs, motif_length: expected at least 1 each, got {motifs}, {motif_length}")
        if slots // motifs < motif_length:
            raise ValueError(f"slots: {motifs} motifs of length {motif_length} need at least "
                             f"{motifs * motif_length} slots, got {slots}")
        if not 1 <= Q <= motif_length:
            raise ValueError(f"quantization: expected 1..motif_length={motif_length} levels, got {quantization}")
        if not 0.0 <= min_feasible < 1.0:
            raise ValueError(f"min_feasible: expected a share of feasible rows in [0, 1), got {min_feasible}")
        if contexts < 1:
            raise ValueError(f"contexts: expected at least 1, got {contexts}")
        if infeasible >= 0:
            raise ValueError(f"infeasible: expected a score below every feasible one (< 0), got {infeasible}")
        g = torch.Generator().manual_seed(seed)
        S, V, M, k, C = slots, vocab, motifs, motif_length, contexts
        self.slots, self.vocab, self.motifs, self.motif_length, self.contexts = S, V, M, k, C
        self.quantization, self.infeasible = Q, float(infeasible)
        self.allowed = self._transitions(V, S, min_feasible, g)
        self.witness = self._walk(C, S, g)
        self._place_motifs(g)

    def _place_motifs(self, g: torch.Generator) -> None:
        """Motif i of each context read off the witness inside region i (S // M slots) at random
        offsets: offsets, elements (C, M, k); and where each start position reads them, _at (C, M, S, k)
        with _valid (C, M, S) for the starts whose motif fits in the row."""
        S, M, k, C = self.slots, self.motifs, self.motif_length, self.contexts
        region = S // M
        gaps = torch.rand(C, M, region - 1, generator=g).argsort(-1)[..., : k - 1].sort(-1).values + 1
        self.offsets = torch.cat([torch.zeros(C, M, 1, dtype=torch.long), gaps], -1)              # (C, M, k)
        room = region - self.offsets[..., -1]                                                     # (C, M)
        start = torch.arange(M) * region + (torch.rand(C, M, generator=g) * room).long()
        self.elements = self.witness.gather(1, (start[..., None] + self.offsets).view(C, -1)).view(C, M, k)
        at = torch.arange(S)[None, None, :, None] + self.offsets[:, :, None, :]                  # (C, M, S, k)
        self._valid = at[..., -1] < S                                                             # (C, M, S)
        self._at = at.clamp(max=S - 1)

    @staticmethod
    def _transitions(V: int, S: int, min_feasible: float, g: torch.Generator) -> Tensor:
        """(V, V) bool allowed transitions: diagonal and a random cycle kept; the others banned in a
        random order while the share of feasible rows stays >= min_feasible (at least one ban)."""
        cycle = torch.randperm(V, generator=g)
        keep = torch.eye(V, dtype=torch.bool)
        keep[cycle, cycle.roll(-1)] = True
        optional = (~keep).flatten().nonzero()[:, 0]
        order = optional[torch.randperm(len(optional), generator=g)]
        allowed = torch.ones(V * V, dtype=torch.bool)
        for i, t in enumerate(order.tolist()):  # at most V^2 candidates, at construction
            allowed[t] = False
            if i and feasible_share(allowed.view(V, V), S) < min_feasible:
                allowed[t] = True
        return allowed.view(V, V)

    def _walk(self, n: int, S: int, g: torch.Generator) -> Tensor:
        """(n, S) feasible rows: random walks of the chain, uniform over allowed next categories."""
        x = torch.empty(n, S, dtype=torch.long)
        x[:, 0] = torch.randint(self.vocab, (n,), generator=g)
        for s in range(1, S):  # S steps at construction, vectorised over contexts
            x[:, s] = torch.multinomial(self.allowed[x[:, s - 1]].float(), 1, generator=g)[:, 0]
        return x

    def feasible(self, rows: Tensor) -> Tensor:
        """rows (N, S) long -> (N,) bool: no banned transition between consecutive slots."""
        return self.allowed.to(rows.device)[rows[:, :-1], rows[:, 1:]].all(-1)

    def presence(self, ctx: Tensor, rows: Tensor) -> Tensor:
        """ctx (N,), rows (N, S) -> (N, M) long: most elements of each motif present at its spacing."""
        N = len(rows)
        at, valid = self._at.to(rows.device)[ctx], self._valid.to(rows.device)[ctx]             # (N, M, S, k)
        got = rows.gather(1, at.view(N, -1)).view(at.shape)
        hits = (got == self.elements.to(rows.device)[ctx][:, :, None, :]).sum(-1) * valid       # (N, M, S)
        return hits.amax(-1)

    def __call__(self, ctx: Tensor, rows: Tensor) -> Tensor:
        """ctx (N,) long context ids, rows (N, S) long -> (N,) scores: product of quantised motif
        presences for feasible rows, `infeasible` otherwise."""
        Q, k = self.quantization, self.motif_length
        q = torch.div(self.presence(ctx, rows) * Q, k, rounding_mode="floor").float() / Q
        value = q.prod(-1)
        return torch.where(self.feasible(rows), value, torch.full_like(value, self.infeasible))
