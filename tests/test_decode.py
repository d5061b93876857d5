"""Decoders: distinct rows, fixed slots kept by every decoder, agreement with exhaustive search."""

import pytest
import torch

from choicegrad.data.context import ContextEncoder
from choicegrad.decoding.decoders import DECODERS, beam_search, decode
from choicegrad.decoding.rows import distinct_topk, enumerate_allowed, first_occurrence, row_keys
from choicegrad.decoding.local_search import anneal_from
from choicegrad.decoding.scoring import Candidates, complete_distinct
from choicegrad.generators import GeneratorConfig, TableContext, build
from choicegrad.data.space import ChoiceSpace, Slot
from choicegrad.bench.tasks import PlantedTask, PottsTask
from choicegrad.errors import InputError

SIZES = [3, 4, 2, 4]




def space(sizes=SIZES):
    return ChoiceSpace(slots=[Slot(name=f"s{i}", categories=[str(j) for j in range(v)]) for i, v in enumerate(sizes)])


def generator(kind, sizes=SIZES, scale=8.0, order=None, seed=0):
    """kind "X-ragged": X in the ragged layout."""
    torch.manual_seed(seed)
    from choicegrad.data.context import ContextColumn

    kind, _, layout = kind.partition("-")
    ctx = ContextEncoder(columns=[ContextColumn(name="c", kind="categorical", categories=["a", "b", "c"])])
    gen = build(GeneratorConfig(kind=kind, hidden=[32, 32], order=order, layout=layout or None), space=space(sizes),
                context=ctx)
    with torch.no_grad():
        for p in gen.parameters():
            p.mul_(scale)
    return gen.eval()


CTX = TableContext(torch.tensor([[0], [1], [2]]), torch.zeros(3, 0))


def all_rows(sizes=SIZES):
    return torch.cartesian_prod(*[torch.arange(v) for v in sizes])


def potts_objective(sizes=SIZES, seed=0):
    """A Potts landscape on the padded space (padding never chosen), per context."""
    task = PottsTask(slots=len(sizes), vocab=max(sizes), contexts=3, seed=seed)

    def f(x, ctx):
        if x.is_floating_point():
            x = x.argmax(-1)
        return task.oracle(ctx.cat[:, 0], x)

    return f


def brute_force(objective, ctx, sizes=SIZES, fixed=None):
    rows = all_rows(sizes)
    if fixed is not None:
        rows = rows[((rows == fixed) | (fixed < 0)).all(1)]
    scores = torch.stack([objective(rows, ctx.index(torch.full((len(rows),), b))) for b in range(len(ctx))])
    return rows, scores


def test_keys_and_distinct_topk():
    rows = torch.tensor([[[0, 1], [1, 0], [0, 1], [2, 2]]])
    keys = row_keys(rows, 3)
    assert keys[0, 0] == keys[0, 2] and len(set(keys[0].tolist())) == 3
    first = first_occurrence(keys, torch.ones(1, 4, dtype=torch.bool))
    assert first.tolist() == [[True, True, False, True]]
    r, s, v = distinct_topk(rows, torch.tensor([[5.0, 1.0, 5.0, 3.0]]), 4, 3)
    assert r[0, :3].tolist() == [[0, 1], [2, 2], [1, 0]] and v.tolist() == [[True, True, True, False]]
    assert s[0, 3] == float("-inf") and (r[0, 3] == -1).all()
    many = torch.randint(0, 50, (2, 300, 12))   # 50**12 > 2**62: hashed keys, still exact in practice
    k = row_keys(many, 50)
    assert (k >= 0).all() and len(set(k[0].tolist())) == len({tuple(x) for x in many[0].tolist()})


@pytest.mark.parametrize("kind", ["autoregressive", "autoregressive-ragged"])
@pytest.mark.parametrize("order", [None, [3, 1, 0, 2]])
@pytest.mark.parametrize("fixed", [None, torch.tensor([-1, 2, -1, -1])])
def test_beam_of_full_width_is_exhaustive_topk_of_log_prob(order, fixed, kind):
    gen = generator(kind, order=order)
    rows, lp = beam_search(gen, CTX, width=96, fixed=fixed)
    every = all_rows()
    if fixed is not None:
        every = every[every[:, 1] == 2]
    ref = gen.log_prob(every.unsqueeze(0).expand(3, -1, -1), CTX)
    n = len(every)
    assert torch.isfinite(lp[:, :n]).all() and not torch.isfinite(lp[:, n:]).any()
    assert torch.allclose(lp[:, :n], ref.sort(1, descending=True).values, atol=1e-4)
    assert torch.allclose(gen.log_prob(rows[:, :n], CTX), lp[:, :n], atol=1e-4)
    K = 10
    top_rows, _ = beam_search(gen, CTX, width=K)   # narrow beam: still K distinct rows
    assert all(len({tuple(r) for r in top_rows[b].tolist()}) == K for b in range(3))


def test_factorized_topk_is_exact_with_beam_width_k():
    gen = generator("factorized")
    rows, lp = beam_search(gen, CTX, width=7)
    ref = gen.log_prob(all_rows().unsqueeze(0).expand(3, -1, -1), CTX).sort(1, descending=True).values[:, :7]
    assert torch.allclose(lp, ref, atol=1e-4)


@pytest.mark.parametrize("kind", ["factorized", "autoregressive", "autoregressive-ragged"])
@pytest.mark.parametrize("name", DECODERS)
def test_every_decoder_keeps_fixed_slots_and_returns_distinct_rows(kind, name):
    gen, f = generator(kind), potts_objective()
    fixed = torch.tensor([2, -1, -1, 1])
    K = 6
    c = decode(name, gen, f, CTX, K, fixed=fixed, samples=64, generator=torch.Generator().manual_seed(0))
    assert c.rows.shape == (3, K, 4) and c.valid.all()
    assert (c.rows[..., 0] == 2).all() and (c.rows[..., 3] == 1).all()
    for b in range(3):
        assert len({tuple(r) for r in c.rows[b].tolist()}) == K
        assert torch.allclose(c.scores[b], f(c.rows[b], CTX.index(torch.full((K,), b))))
    assert (c.scores[:, :-1] >= c.scores[:, 1:]).all()       # best first
    assert ((c.rows < torch.tensor(SIZES)) & (c.rows >= 0)).all()  # never a padding category
    assert c.scorer_calls >= 3 * K


@pytest.mark.parametrize("name", DECODERS)
def test_space_smaller_than_k(name):
    gen, f = generator("autoregressive"), potts_objective()
    fixed = torch.tensor([1, -1, 0, 3])   # 4 rows left
    c = decode(name, gen, f, CTX, 9, fixed=fixed)
    assert c.valid.sum(1).tolist() == [4, 4, 4]
    assert (c.rows[~c.valid] == -1).all() and torch.isinf(c.scores[~c.valid]).all()


def test_collapsed_generator_still_gives_k_distinct_rows():
    gen = generator("factorized", scale=500.0)   # all mass on one row
    f = potts_objective()
    for name in ("argmax", "sample", "topk", "rerank"):
        c = decode(name, gen, f, CTX, 20)
        assert c.valid.all()
        assert all(len({tuple(r) for r in c.rows[b].tolist()}) == 20 for b in range(3)), name


@pytest.mark.parametrize("fixed", [None, torch.tensor([-1, -1, 1, -1])])
def test_exhaustive_matches_brute_force(fixed):
    f = potts_objective(seed=2)
    c = decode("exhaustive", generator("factorized"), f, CTX, 5, fixed=fixed)
    rows, scores = brute_force(f, CTX, fixed=fixed)
    ref = scores.sort(1, descending=True)
    assert torch.allclose(c.scores, ref.values[:, :5])
    assert torch.equal(c.rows[:, 0], rows[ref.indices[:, 0]])
    assert c.scorer_calls == 3 * len(rows) + 0


def test_rerank_and_polish_reach_the_optimum():
    # planted task: unimodal, so coordinate ascent from anywhere reaches the optimum
    task = PlantedTask(slots=4, vocab=4, contexts=3, seed=1)
    sizes = [4] * 4
    f = task.objective()
    gen = generator("autoregressive", sizes=sizes, scale=1.0)
    ex = decode("exhaustive", gen, f, CTX, 3)
    pol = decode("polish", gen, f, CTX, 3, samples=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pol.rows[:, 0], ex.rows[:, 0])
    rr = decode("rerank", gen, f, CTX, 3, samples=4096)
    assert torch.equal(rr.rows[:, 0], ex.rows[:, 0])
    assert rr.scorer_calls == 3 * 256          # distinct draws only: each row of the 4^4 space once
    # Potts (rugged): polishing never loses to its starting point, and with enough samples rerank is exact
    f2 = potts_objective(seed=4)
    ex2 = decode("exhaustive", gen, f2, CTX, 4)
    start = decode("rerank", gen, f2, CTX, 4, samples=8, generator=torch.Generator().manual_seed(1))
    pol2 = decode("polish", gen, f2, CTX, 4, samples=8, generator=torch.Generator().manual_seed(1))
    assert (pol2.scores >= start.scores - 1e-6).all()
    assert torch.allclose(decode("rerank", gen, f2, CTX, 4, samples=4096).scores, ex2.scores)


def test_complete_distinct_fills_from_neighbours():
    allowed = torch.ones(2, 3, 5, dtype=torch.bool)
    rows = torch.tensor([[[1, 1, 1]], [[2, 2, 2]]])
    out, ok = complete_distinct(rows, torch.ones(2, 1, dtype=torch.bool), 30, allowed,
                                torch.Generator().manual_seed(0))
    assert ok.all() and torch.equal(out[:, 0], rows[:, 0])
    assert all(len({tuple(r) for r in out[b].tolist()}) == 30 for b in range(2))


def test_enumerate_allowed_mixed_sizes():
    allowed = torch.zeros(1, 3, 4, dtype=torch.bool)
    allowed[0, 0, :2] = allowed[0, 1, [1, 3]] = allowed[0, 2, :3] = True
    rows, ok, total = enumerate_allowed(allowed)
    assert total == 12 and ok.all() and len({tuple(r) for r in rows.tolist()}) == 12
    assert set(rows[:, 1].tolist()) == {1, 3}


def test_unknown_decoder_and_bad_k():
    gen, f = generator("factorized"), potts_objective()
    with pytest.raises(InputError, match="did you mean \"topk\""):
        decode("top-k", gen, f, CTX, 3)
    with pytest.raises(InputError, match="k: expected an integer >= 1") as exc:
        decode("argmax", gen, f, CTX, 0)
    assert isinstance(exc.value, ValueError) and exc.value.source == "decode"   # callers catching ValueError keep working
    with pytest.raises(InputError) as exc:                     # every bad argument in one go
        decode("beam", gen, f, CTX, 0, budget=0, temperature=0)
    assert [p.split(":")[0] for p in exc.value.problems] == ["k", "decoder", "temperature", "budget"]


def test_budgeted_rerank_polish_and_anneal_stay_within_the_budget():
    """With a per-context budget, rerank, polish and anneal score at most that many rows per context,
    and the searches never lose to the rerank of the same draws (a quarter of the budget)."""
    gen = generator("autoregressive", scale=1.0)
    f = potts_objective(seed=4)
    for budget in (40, 300):
        rr = decode("rerank", gen, f, CTX, 8, budget=budget, generator=torch.Generator().manual_seed(0))
        start = decode("rerank", gen, f, CTX, 8, samples=budget // 4, generator=torch.Generator().manual_seed(0))
        assert rr.scorer_calls <= 3 * budget and bool(rr.valid.all())
        for name in ("polish", "anneal"):
            c = decode(name, gen, f, CTX, 8, budget=budget, generator=torch.Generator().manual_seed(0))
            assert c.scorer_calls <= 3 * budget
            assert c.scorer_calls > start.scorer_calls  # the rest of the budget went to the search
            assert bool(c.valid.all())
            assert bool((c.scores[:, 0] >= start.scores[:, 0] - 1e-6).all())
    with pytest.raises(InputError, match="budget"):
        decode("polish", gen, f, CTX, 8, budget=0)
    with pytest.raises(InputError, match="draw_share"):
        decode("polish", gen, f, CTX, 8, budget=40, draw_share=0)


def test_budgeted_polish_climbs_the_best_candidate_to_its_peak():
    """A budget too small to climb every candidate goes best-first: on a unimodal task the rank-1
    candidate reaches the optimum (spreading one step over many candidates would not)."""
    task = PlantedTask(slots=8, vocab=6, contexts=3, seed=2)
    f = task.objective()
    gen = generator("factorized", sizes=[6] * 8, scale=0.0)        # uniform draws: far from the optimum
    ex = decode("exhaustive", gen, f, CTX, 1)
    pol = decode("polish", gen, f, CTX, 16, budget=640, generator=torch.Generator().manual_seed(0))
    assert pol.scorer_calls <= 3 * 640
    assert torch.equal(pol.rows[:, 0], ex.rows[:, 0])


def test_anneal_from_keeps_its_start_and_counts_calls():
    f = potts_objective(seed=4)
    gen = generator("autoregressive", scale=1.0)
    start = decode("rerank", gen, f, CTX, 8, samples=16, generator=torch.Generator().manual_seed(0))
    allowed = gen.choice_mask(CTX)
    out = anneal_from(f, CTX, allowed, start, 100, torch.Generator().manual_seed(0), chains=4)
    assert out.scorer_calls == start.scorer_calls + 3 * 100
    assert bool((out.scores[:, 0] >= start.scores[:, 0]).all())
    same = anneal_from(f, CTX, allowed, start, 0, torch.Generator().manual_seed(0))
    assert torch.equal(same.rows, start.rows) and same.scorer_calls == start.scorer_calls
    assert isinstance(same, Candidates)


def calls_per_context(f):
    """(counts (3,), f counting the rows it scores per context of CTX into counts)."""
    counts = torch.zeros(3)

    def counting(rows, ctx):
        counts.add_(torch.bincount(ctx.cat[:, 0], minlength=3).float())
        return f(rows, ctx)
    return counts, counting


def test_budget_holds_in_every_context_when_draws_differ():
    """Contexts whose spaces differ spend different calls on draws; each still stays within its budget."""
    gen = generator("autoregressive", scale=1.0)
    f = potts_objective(seed=4)
    counts, counting = calls_per_context(f)

    fixed = torch.full((3, 4), -1)
    fixed[0, :3] = torch.tensor([1, 2, 0])       # context 0: 4 rows, the others 96
    for name in ("polish", "anneal"):
        counts.zero_()
        c = decode(name, gen, counting, CTX, 8, fixed=fixed, budget=60, generator=torch.Generator().manual_seed(0))
        assert bool((counts <= 60).all()), (name, counts)
        assert c.scorer_calls == int(counts.sum())


def soft_potts_objective(sizes=SIZES, seed=0):
    """potts_objective's landscape written on soft rows (N, S, V), so its gradient rates changes
    (not only at first order: the couplings make it a quadratic in x); hard rows as one-hot."""
    task = PottsTask(slots=len(sizes), vocab=max(sizes), contexts=3, seed=seed)
    hard = potts_objective(sizes, seed)
    V = max(sizes)
    rows = torch.cartesian_prod(*[torch.arange(V)] * len(sizes))
    S = len(sizes)
    field, coupling = torch.zeros(3, S, V), torch.zeros(3, S, V, S, V)
    for c in range(3):            # recover fields and couplings from single- and pair-slot rows
        ctx = torch.full((1,), c)
        base = task.oracle(ctx, torch.zeros(1, S, dtype=torch.long))
        for s in range(S):
            for v in range(V):
                row = torch.zeros(1, S, dtype=torch.long)
                row[0, s] = v
                field[c, s, v] = task.oracle(ctx, row) - base
        for s in range(S):
            for t in range(s + 1, S):
                for v in range(V):
                    for w in range(V):
                        row = torch.zeros(1, S, dtype=torch.long)
                        row[0, s], row[0, t] = v, w
                        coupling[c, s, v, t, w] = task.oracle(ctx, row) - base - field[c, s, v] - field[c, t, w]
    offset = torch.stack([task.oracle(torch.full((1,), c), torch.zeros(1, S, dtype=torch.long))[0] for c in range(3)])

    def f(x, ctx):
        if not x.is_floating_point():
            x = torch.nn.functional.one_hot(x, V).float()
        c = ctx.cat[:, 0]
        return offset[c] + torch.einsum("nsv,nsv->n", x, field[c]) + torch.einsum("nsv,nsvtw,ntw->n", x, coupling[c], x)

    check = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:50]]
    ctx = TableContext(torch.zeros(50, 1, dtype=torch.long), torch.zeros(50, 0))
    assert torch.allclose(f(check, ctx), hard(check, ctx), atol=1e-4)
    return f


@pytest.mark.parametrize("starts", [None, 12])
@pytest.mark.parametrize("climb", ["steepest", "by_slot", "gradient", "gradient-flat"])
def test_polish_from_more_starts_and_by_slot_stays_within_the_budget(starts, climb):
    """polish's starts (climb from more draws than K), by_slot (one slot per step) and gradient
    (changes rated by the objective's gradient, one scored per step; its gradient counts as a call,
    and an objective flat in soft rows climbs too): K distinct valid rows, at most the budget per
    context, never worse than the best of the same draws."""
    gen = generator("autoregressive", scale=1.0)
    f = soft_potts_objective(seed=4) if climb == "gradient" else potts_objective(seed=4)
    counts, counting = calls_per_context(f)

    for k in (1, 4):
        counts.zero_()
        c = decode("polish", gen, counting, CTX, k, budget=60, starts=starts, by_slot=climb == "by_slot",
                   gradient=climb.startswith("gradient"), generator=torch.Generator().manual_seed(0))
        assert bool((counts <= 60).all()), counts
        assert c.scorer_calls == int(counts.sum())
        assert c.rows.shape == (3, k, 4) and bool(c.valid.all())
        keys = row_keys(c.rows, 4)
        assert all(len(set(keys[b].tolist())) == k for b in range(3))
        start = decode("rerank", gen, f, CTX, 1, samples=15, generator=torch.Generator().manual_seed(0))
        assert bool((c.scores[:, 0] >= start.scores[:, 0] - 1e-6).all())


def test_polish_led_by_the_gradient_reaches_the_optimum_with_few_calls():
    """On a planted landscape (one mode, differentiable in soft rows) the gradient rates the right
    change first in every slot: from any start the climb moves straight to the optimum, two calls a
    move (the gradient, the row), where steepest ascent scores every neighbour first."""
    task = PlantedTask(slots=8, vocab=6, contexts=3, seed=2)
    f = task.objective()
    gen = generator("factorized", sizes=[6] * 8, scale=0.0)
    ex = decode("exhaustive", gen, f, CTX, 1)
    budget = 5 + 2 * 8                               # draws (a quarter of 21, rounded down), <= 8 moves of 2 calls
    counts, counting = calls_per_context(f)
    pol = decode("polish", gen, counting, CTX, 1, budget=budget, gradient=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pol.rows[:, 0], ex.rows[:, 0])
    assert bool((counts <= budget).all()), counts
    steep = decode("polish", gen, f, CTX, 1, budget=budget, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(steep.rows[:, 0], ex.rows[:, 0])      # one sweep is 40 rows: it never moves


def test_polish_led_by_the_gradient_of_a_black_box_climbs_as_by_slot():
    """A non-differentiable objective has no gradient to rate changes: polish(gradient=True) is
    polish(by_slot=True) exactly."""
    from choicegrad.generators.objective import CallableObjective

    gen = generator("autoregressive", scale=1.0)
    black = CallableObjective(potts_objective(seed=4), differentiable=False)
    a = decode("polish", gen, black, CTX, 3, budget=60, by_slot=True, gradient=True,
               generator=torch.Generator().manual_seed(0))
    b = decode("polish", gen, black, CTX, 3, budget=60, by_slot=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.rows, b.rows) and a.scorer_calls == b.scorer_calls


def test_polish_by_slot_reaches_the_optimum_of_a_unimodal_task():
    task = PlantedTask(slots=8, vocab=6, contexts=3, seed=2)
    f = task.objective()
    gen = generator("factorized", sizes=[6] * 8, scale=0.0)
    ex = decode("exhaustive", gen, f, CTX, 1)
    for budget in (None, 400):
        pol = decode("polish", gen, f, CTX, 4, budget=budget, by_slot=True, starts=8,
                     generator=torch.Generator().manual_seed(0))
        assert torch.equal(pol.rows[:, 0], ex.rows[:, 0])


def test_polish_led_by_the_gradient_survives_an_objective_that_cannot_carry_gradients():
    """A reward computed through numpy raises on rows that require grad: polish(gradient=True)
    climbs in plain order instead, within the budget, and finds rows as good as the draws."""
    task = PlantedTask(slots=6, vocab=5, contexts=3, seed=1)

    def through_numpy(x, ctx):
        x = x.argmax(-1) if x.is_floating_point() else x
        values = task.oracle(ctx.cat[:, 0], x).numpy()
        return torch.as_tensor(values)

    def picky(x, ctx):
        if x.requires_grad:
            x.numpy()                       # what a numpy reward does: RuntimeError on a tensor that requires grad
        return through_numpy(x, ctx)
    gen = generator("factorized", sizes=[5] * 6, scale=0.0)
    counts, counting = calls_per_context(picky)
    c = decode("polish", gen, counting, CTX, 2, budget=40, gradient=True, generator=torch.Generator().manual_seed(0))
    assert bool((counts <= 40).all()) and c.scorer_calls == int(counts.sum())
    assert bool(c.valid.all())
    start = decode("rerank", gen, through_numpy, CTX, 1, samples=10, generator=torch.Generator().manual_seed(0))
    assert bool((c.scores[:, 0] >= start.scores[:, 0] - 1e-6).all())


@pytest.mark.parametrize("budget,k,starts", [(5, 4, 20), (3, 3, 8), (2, 1, 16), (9, 2, 16)])
def test_polish_led_by_the_gradient_keeps_small_budgets(budget, k, starts):
    """Its gradient calls score no row, so with few draws finish tops up to K: the top-up is kept
    out of the climb's calls, and a climber with one call left scores a row instead of a gradient."""
    gen = generator("autoregressive", scale=1.0)
    for f in (soft_potts_objective(seed=4), potts_objective(seed=4)):
        counts, counting = calls_per_context(f)
        c = decode("polish", gen, counting, CTX, k, budget=budget, starts=starts, gradient=True,
                   generator=torch.Generator().manual_seed(0))
        assert bool((counts <= budget).all()), (budget, k, counts)
        assert c.scorer_calls == int(counts.sum()) and bool(c.valid.all())


@pytest.mark.parametrize("name", ["polish", "anneal"])
def test_min_distance_keeps_the_searchs_best_row_and_spreads_the_rest(name):
    """K rows pairwise at least D slots apart where the search scored enough such rows, the first
    the best the search scored (the decoder's own best row), the scores the objective's, best first;
    where it scored too few (rerank's peaked draws), K distinct rows all the same, topped up; decoders
    that return what they score (topk, sample, slices) refuse it."""
    gen, f = generator("autoregressive"), potts_objective()
    short = decode("rerank", gen, f, CTX, 4, samples=200, min_distance=3)
    assert short.valid.all() and all(len({tuple(r) for r in short.rows[b].tolist()}) == 4 for b in range(3))
    assert torch.equal(short.rows[:, 0], decode("rerank", gen, f, CTX, 4, samples=200).rows[:, 0])
    base = decode(name, gen, f, CTX, 4, budget=300, generator=torch.Generator().manual_seed(0))
    far = decode(name, gen, f, CTX, 4, budget=300, min_distance=2, generator=torch.Generator().manual_seed(0))
    assert far.valid.all() and far.scorer_calls == base.scorer_calls
    assert torch.equal(far.rows[:, 0], base.rows[:, 0])
    for b in range(3):
        r = far.rows[b]
        assert ((r[:, None, :] != r[None, :, :]).sum(-1) + 9 * torch.eye(4, dtype=torch.long) >= 2).all()
        torch.testing.assert_close(far.scores[b], f(r, CTX.index(torch.full((4,), b))))
    assert (far.scores[:, :-1] >= far.scores[:, 1:]).all()
    for other in ("topk", "sample", "slices"):
        with pytest.raises(InputError, match=f"min_distance: {other} does not take it"):
            decode(other, gen, f, CTX, 4, min_distance=2)
