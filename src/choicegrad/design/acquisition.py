"""What a design round's generator maximises: an optimistic score of the scorer ensemble, less a
penalty for rows likely to fail, and the rows already measured kept out of the search.

    pairs = PairSupport.fit(ok_rows, [slot.categories for slot in space.slots])   # neighbours that did not fail
    acq = Acquisition(scorer, kappa=1.0, feasibility=classifier, pairs=pairs)
    acq(x, ctx)          # (N,) mean + kappa * std over members + weight * log P(feasible), working units
    keep_out = Measured(rows, ctx, vocab)
    keep_out.contains(rows, ctx)                   # (N,) bool
    search_objective = keep_out.excluding(acq)      # measured rows score far below every other row

x is (N, S) long rows or (N, S, V) soft rows (the acquisition stays differentiable for relaxed
estimators); ctx a TableContext of length N.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from choicegrad.decoding.rows import row_keys
from choicegrad.generators.context import TableContext
from choicegrad.generators.objective import HardRowsAdjusted, Objective

#: How far below every other row a measured row scores in the search, in score standard deviations.
EXCLUDED_PENALTY = 1e4
_MASK = 2**62 - 1
_CTX_HASH = torch.randint(1, 2**62, (256,), generator=torch.Generator().manual_seed(2718)) | 1


class PairSupport:
    """How likely each pair of categories in neighbouring slots of a sequence is to be allowed,
    learnt from rows that did not fail alone: feasibility before any row has failed (a sequence
    whose banned transitions no start row holds).

    Only links (s, s + 1) between slots with the same category list (a sequence's positions) are
    rated, and they pool their counts; other neighbours (features of a table in whatever column
    order) get no rating. For each pair (a, b): O, the times the rows hold it, and E = sum over the
    links of n p_s(a) p_{s+1}(b), the times expected were the slots independent (n rows, p the
    slots' shares). An unseen pair is banned (never seen) with probability beta, else allowed and
    unseen by chance, exp(-E): beta by the method of moments, #unseen = beta T + (1 - beta) sum
    exp(-E) over the T pairs, so that independent slots with no ban give beta ~ 0 and no penalty.
    log P(allowed) of an unseen pair is log((1 - beta) exp(-E) / (beta + (1 - beta) exp(-E))), 0 for a
    seen one; a row's log P(feasible) is the sum over its links. table: (S - 1, V, V) of these (all 0
    for a link not rated); beta: (S - 1,). Vocabularies above MAX_PAIR_VOCAB are not rated (V x V
    tables)."""

    MAX_PAIR_VOCAB = 1024

    def __init__(self, table: Tensor, beta: Tensor):
        self.table, self.beta = table, beta

    @classmethod
    def fit(cls, rows: Tensor, categories: list[list[str]]) -> PairSupport:
        """From rows (N, S) long (the rows that did not fail; no -1) over slots whose categories are
        `categories` (S lists, as ChoiceSpace's slots hold them)."""
        N, S = rows.shape
        V = max(len(c) for c in categories)
        dev = rows.device
        L = max(S - 1, 0)
        rated = V <= cls.MAX_PAIR_VOCAB and N > 0
        table = torch.zeros(L if rated else 0, V, V, device=dev)
        beta = torch.zeros(L, device=dev)
        groups: dict[tuple, list[int]] = {}
        for link in range(L):                      # a sequence's positions: the same category list
            if list(categories[link]) == list(categories[link + 1]):
                groups.setdefault(tuple(categories[link]), []).append(link)
        if not rated or not groups:
            return cls(table, beta)
        rows = rows.long()
        share = torch.zeros(S, V, device=dev).scatter_add_(1, rows.T, torch.ones(S, N, device=dev)) / N   # (S, V)
        for cats, links in groups.items():
            n_cat = len(cats)
            at = torch.tensor(links, device=dev)
            pair = (rows[:, at] * V + rows[:, at + 1]).flatten()                      # pooled over the links
            O = torch.bincount(pair, minlength=V * V).view(V, V)[:n_cat, :n_cat].float()
            E = N * torch.einsum("la,lb->ab", share[at, :n_cat], share[at + 1, :n_cat])
            chance = torch.exp(-E)
            free = float(chance.sum())
            b = (float((O == 0).sum()) - free) / max(n_cat * n_cat - free, 1e-9)
            b = min(max(b, 0.0), 1.0 - 1e-6)
            allowed = (1 - b) * chance
            log_p = torch.log(allowed / (b + allowed).clamp(min=1e-30)).clamp(min=-30.0)
            table[at, :n_cat, :n_cat] = torch.where(O > 0, torch.zeros_like(log_p), log_p)
            beta[at] = b
        return cls(table, beta)

    def log_prob(self, x: Tensor) -> Tensor:
        """(N,) log P(every link of the row allowed): x (N, S) long rows or (N, S, V) soft rows."""
        L = self.table.shape[0]
        if L == 0 or x.shape[1] < 2:
            return torch.zeros(x.shape[0], device=x.device)
        if not x.is_floating_point():
            idx = torch.arange(L, device=x.device)
            return self.table.to(x.device)[idx, x[:, :-1], x[:, 1:]].sum(-1)
        V = self.table.shape[-1]
        x = x[..., :V].to(self.table.dtype)
        return torch.einsum("nlv,lvw,nlw->n", x[:, :-1], self.table.to(x.device), x[:, 1:])

    def to(self, device) -> PairSupport:
        return PairSupport(self.table.to(device), self.beta.to(device))


def log_feasible(classifier, x: Tensor, ctx: TableContext) -> Tensor:
    """(N,) log of the members' mean probability that a row does not fail. classifier: a Scorer
    fitted with loss="logistic" (member outputs are logits)."""
    logits = classifier.member_scores(x, ctx.cat, ctx.num)                     # (k, N)
    return torch.logsumexp(torch.nn.functional.logsigmoid(logits), 0) - math.log(len(logits))


class Acquisition(Objective):
    """Optimistic ensemble score for design rounds, in the scorer's working units.

    value = mean + kappa * std over the scorer's members (kappa 0: the mean, as Thompson selection
    uses; 1 is one standard deviation of optimism) + weight * scale * log P(feasible) when a
    feasibility classifier is given: a row with a 50% chance to fail costs 0.69 score standard
    deviations at weight 1. pairs: a PairSupport, whose log P(feasible) adds in the same way (with
    or without a classifier). `scale` is the score std (working units); `calls` counts rows scored.
    """

    def __init__(self, scorer, kappa: float = 1.0, feasibility=None, weight: float = 1.0,
                 pairs: Optional[PairSupport] = None):
        super().__init__()
        self.scorer, self.kappa, self.feasibility, self.pairs = scorer, float(kappa), feasibility, pairs
        self.scale = float(scorer.y_std)
        self.weight = float(weight) * self.scale

    def members(self, x: Tensor, ctx: TableContext) -> Tensor:
        """(k, N) member scores plus the feasibility term: one Thompson draw per member."""
        scores = self.scorer.member_scores(x, ctx.cat, ctx.num)
        log_p = self.log_p_feasible(x, ctx)
        return scores if log_p is None else scores + self.weight * log_p

    def log_p_feasible(self, x: Tensor, ctx: TableContext) -> Optional[Tensor]:
        """(N,) log P(the row does not fail): the classifier's and the pairs' together (None without either)."""
        if self.feasibility is None and self.pairs is None:
            return None
        log_p = torch.zeros(len(x), device=x.device)
        if self.feasibility is not None:
            log_p = log_p + log_feasible(self.feasibility, x, ctx)
        if self.pairs is not None:
            log_p = log_p + self.pairs.log_prob(x)
        return log_p

    def prepare(self, device) -> Acquisition:
        for model in (self.scorer, self.feasibility):
            if model is not None:
                model.to(device).eval().requires_grad_(False)
        return self

    def score(self, x: Tensor, ctx: TableContext) -> Tensor:
        scores = self.members(x, ctx)                      # the feasibility term shifts every member alike
        value = scores.mean(0)
        if self.kappa and len(scores) > 1:
            value = value + self.kappa * scores.std(0)
        return value


def context_keys(ctx: TableContext) -> Tensor:
    """(B,) int64 keys, equal for equal contexts (a hash of the categorical codes and the bits of
    the numeric values); 0 for every context of a context-free table."""
    cols = torch.cat([ctx.cat.long(), ctx.num.float().contiguous().view(torch.int32).long()], 1)
    if cols.shape[1] == 0:
        return torch.zeros(len(ctx), dtype=torch.long, device=ctx.device)
    mult = _CTX_HASH.to(cols.device).repeat(cols.shape[1] // len(_CTX_HASH) + 1)[: cols.shape[1]]
    return ((cols + 2**31 + 1) * mult).sum(-1) & _MASK


class Measured:
    """The (context, row) pairs measured so far, for membership tests on any rows.

    rows (N, S) long, ctx: N contexts; vocab: the largest slot size. Keys are 62-bit (exact per row
    where the space has fewer than 2**62 rows, hashed with the context), sorted for searchsorted.
    """

    def __init__(self, rows: Tensor, ctx: TableContext, vocab: int):
        self.vocab = max(int(vocab), 2)
        self.keys = self.key(rows, ctx).unique().sort().values

    def key(self, rows: Tensor, ctx: TableContext) -> Tensor:
        return (row_keys(rows, self.vocab) * 0x5851F42D4C957F2D + context_keys(ctx).to(rows.device)) & _MASK

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, rows: Tensor, ctx: TableContext) -> Tensor:
        """(N,) bool: rows (N, S) measured in their contexts (ctx of length N)."""
        keys = self.keys.to(rows.device)
        if len(keys) == 0:
            return torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
        k = self.key(rows, ctx)
        at = torch.searchsorted(keys, k).clamp(max=len(keys) - 1)
        return keys[at] == k

    def excluding(self, objective: Acquisition) -> "Excluding":
        return Excluding(objective, self)


class Excluding(HardRowsAdjusted):
    """An objective whose measured rows (hard rows only) score EXCLUDED_PENALTY score standard
    deviations below their value, so a search leaves them for rows not measured yet. Its calls are
    the acquisition's."""

    def __init__(self, objective: Acquisition, measured: Measured):
        super().__init__(objective)
        self.measured = measured

    def adjust(self, x: Tensor, value: Tensor, ctx: TableContext) -> Tensor:
        return value - EXCLUDED_PENALTY * self.scale * self.measured.contains(x, ctx).to(value.dtype)

