"""Peer baselines (choicegrad.bench.peers): budgets honoured and counted, optima found, masks respected."""

import pytest
import torch

from choicegrad.decoding.rows import row_keys
from choicegrad.generators.context import TableContext
from choicegrad.generators.objective import ItemObjective
from choicegrad.bench.peers import PEERS, search
from choicegrad.bench.tasks import PickFiveTask, PottsTask

SEARCHERS = [p for p in PEERS if p != "exhaustive"]


class Counted:
    """Wraps an objective, counting the rows (hard or soft) actually passed in."""

    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, x, ctx):
        assert len(ctx) == x.shape[0]
        self.calls += int(x.shape[0])
        return self.f(x, ctx)


def potts_objective(task):
    """The Potts oracle for hard rows (N, S), and its multilinear extension for soft rows (N, S, V):
    fields weighted by the probabilities, couplings by outer products of probabilities."""

    def f(x, ctx):
        c = ctx.cat[:, 0]
        if not x.is_floating_point():
            return task.oracle(c, x)
        return torch.einsum("nsv,nsv->n", x, task.h[c]) + torch.einsum("nsv,stvw,ntw->n", x, task.J, x)

    return f


def potts(slots=4, vocab=4, contexts=3, seed=0):
    task = PottsTask(slots=slots, vocab=vocab, contexts=contexts, seed=seed)
    ctx = TableContext(torch.arange(contexts)[:, None], torch.zeros(contexts, 0))
    allowed = torch.ones(contexts, slots, vocab, dtype=torch.bool)
    return task, Counted(potts_objective(task)), ctx, allowed


def brute_optimum(f, ctx, allowed):
    """(B,) best score over the allowed rows of each context, by enumeration."""
    B, S, V = allowed.shape
    rows = torch.cartesian_prod(*[torch.arange(V)] * S)
    out = []
    for b in range(B):
        ok = allowed[b, torch.arange(S), rows].all(1)
        out.append(f.f(rows[ok], ctx.index(torch.full((int(ok.sum()),), b))).max())
    return torch.stack(out)


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def test_soft_potts_agrees_with_hard_on_one_hot_rows():
    task, f, ctx, _ = potts()
    rows = torch.randint(4, (3, 4), generator=rng())
    hot = torch.nn.functional.one_hot(rows, 4).float()
    assert torch.allclose(f(rows, ctx), f(hot, ctx), atol=1e-5)


@pytest.mark.parametrize("name", PEERS)
@pytest.mark.parametrize("budget", [1, 7, 50, 333])
def test_budget_is_respected_and_counted(name, budget):
    _, f, ctx, allowed = potts()
    cands = search(name, f, ctx, allowed, 8, budget=budget, generator=rng())
    assert cands.scorer_calls == f.calls
    if name == "exhaustive":
        assert f.calls == 4 ** 4 * 3
    else:
        assert f.calls <= budget * len(ctx)
        if name == "gradient-ascent":   # all its soft half; hard rows already archived are skipped
            assert f.calls >= 0.45 * budget * len(ctx) - 16 * len(ctx)
        else:                           # the others spend all of it, in every context
            assert f.calls == budget * len(ctx)


@pytest.mark.parametrize("name", PEERS)
def test_generous_budget_finds_the_optimum_in_every_context(name):
    _, f, ctx, allowed = potts()
    best = brute_optimum(f, ctx, allowed)
    cands = search(name, f, ctx, allowed, 4, budget=1500, generator=rng(1))
    assert torch.allclose(cands.scores[:, 0], best, atol=1e-5)


def test_tiny_budget_random_is_no_better_than_anneal_or_genetic():
    _, f, ctx, allowed = potts(slots=6, vocab=8, contexts=8, seed=3)
    top = {name: torch.stack([search(name, f, ctx, allowed, 4, budget=60, generator=rng(s)).scores[:, 0].mean()
                              for s in range(4)]).mean() for name in ("random", "anneal", "genetic")}
    assert top["random"] <= top["anneal"] and top["random"] <= top["genetic"]


@pytest.mark.parametrize("name", SEARCHERS)
def test_candidates_are_distinct_sorted_truthful_and_deterministic(name):
    _, f, ctx, allowed = potts(slots=5, vocab=4)
    a = search(name, f, ctx, allowed, 20, budget=200, generator=rng(5))
    b = search(name, f, ctx, allowed, 20, budget=200, generator=rng(5))
    assert torch.equal(a.rows, b.rows) and torch.equal(a.scores, b.scores) and a.scorer_calls == b.scorer_calls
    assert a.rows.shape == (3, 20, 5) and a.valid.all()
    for r in range(3):
        assert len(set(row_keys(a.rows[r], 4).tolist())) == 20
    assert (a.scores[:, :-1] >= a.scores[:, 1:]).all()
    again = f.f(a.rows.reshape(60, 5), ctx.repeat_interleave(20)).reshape(3, 20)
    assert torch.allclose(again, a.scores, atol=1e-5)


@pytest.mark.parametrize("name", SEARCHERS)
def test_per_slot_vocabularies_and_context_masks_are_respected(name):
    _, f, ctx, _ = potts()
    allowed = torch.zeros(3, 4, 4, dtype=torch.bool)
    for s, v in enumerate([3, 4, 2, 4]):      # vocabularies of different sizes, padded to 4
        allowed[:, s, :v] = True
    allowed[1, 1, 0] = allowed[2, 3, 2] = False  # and some categories barred in one context only
    best = brute_optimum(f, ctx, allowed)
    cands = search(name, f, ctx, allowed, 12, budget=800, generator=rng(2))
    rows = cands.rows.clamp(min=0)
    used = allowed.unsqueeze(1).expand(-1, 12, -1, -1).gather(3, rows.unsqueeze(-1)).squeeze(-1)
    assert used[cands.valid].all()
    assert torch.allclose(cands.scores[:, 0], best, atol=1e-5)


@pytest.mark.parametrize("name", PEERS)
def test_item_lists_of_different_lengths(name):
    task = PickFiveTask(slots=3, lengths=(3, 6))
    ctx = task.draw(6, rng(7))
    assert ctx.mask.sum(1).min() < ctx.mask.shape[1]   # some lists are padded
    f = Counted(ItemObjective(task.reward))
    allowed = ctx.mask.unsqueeze(1).expand(-1, 3, -1)
    cands = search(name, f, ctx, allowed, 5, budget=1500, generator=rng(3))
    assert cands.scorer_calls == f.calls
    picked = ctx.mask.unsqueeze(1).expand(-1, 5, -1).gather(2, cands.rows.clamp(min=0))
    assert picked[cands.valid].all()                    # never a padded item
    assert task.accuracy(cands.rows[:, 0], ctx) == 1.0


def test_fewer_distinct_rows_than_k_leave_invalid_tails():
    _, f, ctx, allowed = potts()
    cands = search("random", f, ctx, allowed, 10, budget=5, generator=rng())
    assert f.calls == 15 and (cands.valid.sum(1) <= 5).all() and not cands.valid[:, 5:].any()
    assert (cands.rows[~cands.valid] == -1).all() and torch.isinf(cands.scores[~cands.valid]).all()
    tiny = torch.zeros(3, 4, 4, dtype=torch.bool)
    tiny[:, :, 0] = True
    tiny[:, 0, 1] = True                                # a space of 2 rows
    c = search("genetic", f, ctx, tiny, 4, budget=50, generator=rng())
    assert c.valid.sum(1).tolist() == [2, 2, 2]


def test_bad_arguments_are_named():
    _, f, ctx, allowed = potts()
    with pytest.raises(ValueError, match='did you mean "anneal"'):
        search("aneal", f, ctx, allowed, 4, budget=10, generator=rng())
    with pytest.raises(ValueError, match="budget"):
        search("random", f, ctx, allowed, 4, budget=0, generator=rng())
    with pytest.raises(ValueError, match="k must"):
        search("random", f, ctx, allowed, 0, budget=10, generator=rng())
    with pytest.raises(ValueError, match='did you mean "chains"'):
        search("anneal", f, ctx, allowed, 4, budget=10, generator=rng(), chain=4)
    bad = allowed.clone()
    bad[0, 2] = False
    with pytest.raises(ValueError, match="no category"):
        search("random", f, ctx, bad, 4, budget=10, generator=rng())


def test_gradient_ascent_leaves_the_scorer_parameters_alone():
    _, f, ctx, allowed = potts()
    weight = torch.nn.Parameter(torch.ones(4))

    def scorer(x, c):
        x = x if x.is_floating_point() else torch.nn.functional.one_hot(x, 4).float()
        return (x * weight).sum((1, 2)) + f(x, c)

    search("gradient-ascent", scorer, ctx, allowed, 4, budget=100, generator=rng())
    assert weight.grad is None
