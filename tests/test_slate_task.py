"""SlateTask (choicegrad.bench.tasks.items): a page of distinct items under a position-based click model
with a topic-redundancy discount; and the peers' `distinct` option and `greedy` peer on it."""

import itertools
import math

import pytest
import torch

from choicegrad.bench import peers as peer_module
from choicegrad.bench.peers import PEERS, search
from choicegrad.bench.tasks.items import SlateTask
from choicegrad.generators.context import ItemContext
from choicegrad.generators.objective import ItemObjective


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


class Checked:
    """Wraps an objective: counts the rows passed in and asserts none of them repeats an item."""

    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, x, ctx):
        if not x.is_floating_point():
            assert not peer_module._repeats(x).any(), "a row with a repeated item was scored"
        self.calls += int(x.shape[0])
        return self.f(x, ctx)


def tiny_context():
    """One user, T = 2 topics, no noise: item = [e0, e1, q, z0, z1] with z = (1, -1)."""
    z = [1.0, -1.0]
    items = torch.tensor([[1, 0, 0.5, *z],     # 0: topic 0, q = .5 -> a = sig(1.5)
                          [1, 0, 0.0, *z],     # 1: topic 0, q = 0  -> a = sig(1)
                          [0, 1, 1.0, *z],     # 2: topic 1, q = 1  -> a = sig(0)
                          [1, 0, -1.0, *z]])   # 3: topic 0, q = -1 -> a = sig(0)
    return ItemContext(items[None].float(), torch.ones(1, 4, dtype=torch.bool))


def test_reward_matches_a_hand_computed_case():
    task = SlateTask(slots=3, lengths=(3, 4), topics=2, noise=0, rho=0.5)
    ctx = tiny_context()
    f = ItemObjective(task.reward)
    t1, t2 = 1 / math.log2(3), 0.5                        # examination of positions 1 and 2
    # (0, 1, 3): topic 0 three times -> discounts 1, .5, .25
    want = sig(1.5) + t1 * sig(1.0) * 0.5 + t2 * sig(0.0) * 0.25
    assert math.isclose(float(f(torch.tensor([[0, 1, 3]]), ctx)), want, rel_tol=1e-6)
    # (0, 2, 1): the topic-1 item breaks the run; item 1 has one topic-0 item above it
    want = sig(1.5) + t1 * sig(0.0) + t2 * sig(1.0) * 0.5
    assert math.isclose(float(f(torch.tensor([[0, 2, 1]]), ctx)), want, rel_tol=1e-6)
    # own attractiveness and the greedy slate: the three most attractive, most attractive first
    torch.testing.assert_close(task.item_score(ctx)[0], torch.tensor([sig(1.5), sig(1.0), sig(0.0), sig(0.0)]))
    assert task.greedy_rows(ctx)[0, :2].tolist() == [0, 1]
    # ... which stacks topic 0 and loses to the diversified slate (0, 2, 1)
    rows, best = task.optimum(ctx)
    assert rows[0].tolist() == [0, 2, 1] and math.isclose(float(best[0]), want, rel_tol=1e-6)
    assert float(f(task.greedy_rows(ctx), ctx)) < float(best[0])


def test_reward_is_differentiable_in_soft_selections():
    task = SlateTask()
    ctx = task.draw(8, rng(0))
    logits = torch.randn(8, task.slots, ctx.items.shape[1], requires_grad=True)
    soft = torch.softmax(logits.masked_fill(~ctx.mask[:, None, :], -1e9), -1)
    ItemObjective(task.reward)(soft, ctx).sum().backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad.abs().sum()) > 0
    hot = torch.nn.functional.one_hot(task.greedy_rows(ctx), ctx.items.shape[1]).float()
    f = ItemObjective(task.reward)
    torch.testing.assert_close(f(hot, ctx), f(task.greedy_rows(ctx), ctx))


def test_enumerate_covers_distinct_slates_only_and_matches_permutations():
    task = SlateTask(slots=3, lengths=(3, 5), topics=3, noise=1)
    ctx = task.draw(6, rng(1))
    values, rows = task.enumerate(ctx)
    best_rows, best = task.optimum(ctx)
    f = ItemObjective(task.reward)
    for b in range(6):
        n = int(ctx.mask[b].sum())
        perms = list(itertools.permutations(range(n), 3))
        assert int(torch.isfinite(values[b]).sum()) == len(perms)      # n! / (n - 3)! slates, repeats NaN
        scores = f(torch.tensor(perms), ctx.index([b] * len(perms)))
        assert math.isclose(float(best[b]), float(scores.max()), rel_tol=1e-5)
        assert len(set(best_rows[b].tolist())) == 3
    st = task.stats(ctx)
    torch.testing.assert_close(task.gap_closed(best, st), torch.ones(6))


def test_the_optimum_beats_ranking_by_own_attractiveness_on_many_lists():
    # the redundancy discount makes stacking the favourite topic suboptimal: the brute-force optimum
    # over distinct slates is strictly better than greedy_rows on at least 30% of lists (about 70%
    # at the defaults), and never worse
    task = SlateTask()
    ctx = task.draw(200, rng(2))
    _, best = task.optimum(ctx)
    greedy = ItemObjective(task.reward)(task.greedy_rows(ctx), ctx)
    assert (best >= greedy - 1e-6).all()
    assert float((best > greedy + 1e-6).float().mean()) >= 0.3


def test_greedy_peer_climbs_to_a_distinct_local_peak_from_its_start():
    task = SlateTask(slots=3, lengths=(8, 10))
    ctx = task.draw(16, rng(3))
    f = Checked(ItemObjective(task.reward))
    allowed = ctx.mask.unsqueeze(1).expand(-1, 3, -1)
    S, N = 3, ctx.items.shape[1]
    cands = search("greedy", f, ctx, allowed, 4, budget=4 * S * N, generator=rng(4), distinct=True, restart=False)
    assert cands.scorer_calls == f.calls <= 4 * S * N * len(ctx)
    start = peer_module._distinct_rows(allowed, 1, rng(4))[:, 0]            # the same draw as the peer's start
    assert (cands.scores[:, 0] >= f.f(start, ctx) - 1e-6).all()
    top = cands.rows[:, 0]
    assert not peer_module._repeats(top).any()
    # no single-slot change to an unused item improves the top row (a local peak)
    for s in range(S):
        for v in range(N):
            moved = top.clone()
            moved[:, s] = v
            ok = ctx.mask[:, v] & ~peer_module._repeats(moved)
            assert (f.f(moved, ctx)[ok] <= cands.scores[ok, 0] + 1e-6).all()
    # one sweep only: at most the one start's S slots
    g = Checked(ItemObjective(task.reward))
    one = search("greedy", g, ctx, allowed, 4, budget=4 * S * N, generator=rng(4), distinct=True, restart=False,
                 sweeps=1)
    assert g.calls <= S * N * len(ctx) and (one.scores[:, 0] >= g.f(start, ctx) - 1e-6).all()
    # with restarts it spends the whole budget
    h = Checked(ItemObjective(task.reward))
    search("greedy", h, ctx, allowed, 4, budget=4 * S * N, generator=rng(4), distinct=True)
    assert h.calls == 4 * S * N * len(ctx)


@pytest.mark.parametrize("name", PEERS)
def test_every_peer_with_distinct_scores_and_returns_no_repeated_item(name):
    task = SlateTask(slots=3, lengths=(4, 6))
    ctx = task.draw(6, rng(5))
    allowed = ctx.mask.unsqueeze(1).expand(-1, 3, -1).clone()
    allowed[0, 1, 0] = allowed[2, 0, 1] = False                             # and a few items barred in one slot
    f = Checked(ItemObjective(task.reward))
    cands = search(name, f, ctx, allowed, 8, budget=200, generator=rng(6), distinct=True)
    assert cands.scorer_calls == f.calls
    assert not peer_module._repeats(cands.rows[cands.valid]).any()
    rows = cands.rows.clamp(min=0)
    used = allowed.unsqueeze(1).expand(-1, 8, -1, -1).gather(3, rows.unsqueeze(-1)).squeeze(-1)
    assert used[cands.valid].all()
    if name != "gradient-ascent":
        assert cands.valid.all()
    if name not in ("gradient-ascent", "exhaustive"):
        assert f.calls == 200 * len(ctx)


def test_exhaustive_with_distinct_matches_permutations():
    task = SlateTask(slots=3, lengths=(4, 5), topics=2, noise=0)
    ctx = task.draw(3, rng(7))
    f = Checked(ItemObjective(task.reward))
    allowed = ctx.mask.unsqueeze(1).expand(-1, 3, -1)
    cands = search("exhaustive", f, ctx, allowed, 60, budget=1, generator=rng(), distinct=True)
    for b in range(3):
        n = int(ctx.mask[b].sum())
        perms = list(itertools.permutations(range(n), 3))
        scores = f.f(torch.tensor(perms), ctx.index([b] * len(perms)))
        assert int(cands.valid[b].sum()) == len(perms)
        ok = cands.valid[b]
        got = {tuple(r): float(s) for r, s in zip(cands.rows[b][ok].tolist(), cands.scores[b][ok])}
        assert set(got) == set(perms)
        for p, s in zip(perms, scores.tolist()):
            assert math.isclose(got[p], s, rel_tol=1e-5, abs_tol=1e-7)
    assert f.calls == sum(math.perm(int(n), 3) for n in ctx.mask.sum(1))


def test_distinct_needs_as_many_items_as_slots():
    task = SlateTask(slots=3, lengths=(3, 3))
    ctx = task.draw(2, rng(8))
    allowed = ctx.mask.unsqueeze(1).expand(-1, 3, -1).clone()
    allowed[1, :, 2] = False                                                # context 1: two items for 3 slots
    with pytest.raises(ValueError, match="distinct"):
        search("random", ItemObjective(task.reward), ctx, allowed, 2, budget=4, generator=rng(), distinct=True)
