"""Amortised search (expert iteration, self-distillation): the generator learns what search finds.

Each training step, the best of the generator's own draws per context is improved by a short
steepest-ascent search on the objective (`sweeps` sweeps of single-slot changes, decoding's polish),
the best row found so far for each training context is kept (a replay of one row per context, for
table contexts, which have ids), and the generator's likelihood of those rows is raised:

    loss = estimator loss + weight * mean_b( -log p(target_b | context_b) ) / S

so that the generator alone comes to propose what the search would have reached, and generation
for a new context needs no search. The search's scorer calls are counted with the step's.

Data-parallel training: each rank searches from its share of the step's contexts, and every rank
updates its replay with the whole batch's results (gathered), so that the replays stay equal to
one process's.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from choicegrad.decoding.local_search import polish, search_moves
from choicegrad.decoding.scoring import Candidates
from choicegrad.generators.context import Context
from choicegrad.generators.objective import score_rows


class Distillation:
    """Search-improved targets per step, with a replay of the best row per training context.

    num_contexts: training contexts with ids (None: fresh contexts every step, no replay); slots S.
    """

    def __init__(self, weight: float, sweeps: int, num_contexts: Optional[int], slots: int, device):
        self.weight, self.sweeps, self.slots = float(weight), int(sweeps), int(slots)
        self.rows = self.scores = None
        if num_contexts is not None:
            self.rows = torch.full((num_contexts, slots), -1, dtype=torch.long, device=device)
            self.scores = torch.full((num_contexts,), float("-inf"), device=device)

    def targets(self, objective, ctx: Context, allowed: Tensor, samples: Tensor, scores: Tensor,
                ids: Optional[Tensor], shard=None, logits=None) -> tuple[Tensor, int]:
        """(B, S) rows whose likelihood to raise, and the scorer calls spent finding them.

        samples (B, K, S) long, the estimator's rows; scores (B, K) pick the start (the best of them);
        allowed (B, S, V). ids (B,) training-context ids (repeats allowed) for the replay, or None.
        shard: the BatchShard these B contexts are of (data parallelism), whose whole batch updates
        the replay. logits (B, S, V), or the wide slots' (generator_ratings): the generator's,
        choosing the categories the search tries in a slot of more than SEARCH_CATEGORIES (polish)."""
        B = samples.shape[0]
        ar = torch.arange(B, device=samples.device)
        start_rows = samples[ar, scores.argmax(1)][:, None]              # (B, 1, S)
        with torch.no_grad():
            # re-scored: relaxed estimators report the score of their soft input, not of the hard row
            start_scores, calls = score_rows(objective, start_rows, ctx)
            start = Candidates(start_rows, start_scores, torch.ones(B, 1, dtype=torch.bool, device=samples.device), calls)
            found = polish(objective, ctx, start, allowed, sweeps=self.sweeps, moves=search_moves(allowed, logits))
        rows, value = found.rows[:, 0], found.scores[:, 0]
        if self.rows is not None and ids is not None:
            mine = ids
            if shard is not None:   # the global batch's update on every rank: the replays stay equal
                both = shard.whole(torch.cat([ids[:, None], rows], 1))
                ids, rows, value = both[:, 0], both[:, 1:], shard.whole(value)
            old = self.scores[ids]
            best = self.scores.clone().scatter_reduce_(0, ids, value, "amax")  # one best per id, repeats too
            win = (value > old) & (value >= best[ids])
            self.rows[ids[win]] = rows[win]
            self.scores = best
            rows = self.rows[mine]
        return rows, found.scorer_calls

    def loss(self, gen, rows: Tensor, ctx: Context) -> Tensor:
        """weight * mean negative log-likelihood per slot of rows (B, S)."""
        return self.weight * -gen.log_prob(rows, ctx).mean() / self.slots

    def state(self) -> dict:
        return {"rows": self.rows, "scores": self.scores}

    def restore(self, state: dict) -> None:
        if state.get("rows") is not None and self.rows is not None:
            self.rows.copy_(state["rows"])
            self.scores.copy_(state["scores"])
