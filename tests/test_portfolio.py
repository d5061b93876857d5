"""Portfolio decoding: draws from an ensemble's spread, the greedy expected-best selection against
brute force, and the decoder's contract on an ensemble objective."""

import itertools

import pytest
import torch

from choicegrad.decoding import decode
from choicegrad.decoding.portfolio import draws as mixing
from choicegrad.decoding.portfolio import (MemberRecord, TaggedContext, expected_max, expected_max_select, hypotheses,
                                          member_ranks, slices)
from choicegrad.errors import InputError
from choicegrad.generators.objective import Objective
from test_decode import CTX, SIZES, all_rows, generator, potts_objective


def test_hypotheses_keep_the_members_mean_spread_and_correlation():
    g = torch.Generator().manual_seed(0)
    members = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)            # (B, P, E)
    draws = hypotheses(members, mixing(200_000, 5, torch.Generator().manual_seed(1)))   # (B, n, P)
    torch.testing.assert_close(draws.mean(1), members.mean(-1), atol=1e-6, rtol=0)      # centred: exactly
    torch.testing.assert_close(draws.std(1), members.std(-1), atol=0.02, rtol=0)
    cov = torch.einsum("bhp,bhq->bpq", draws - draws.mean(1, keepdim=True), draws - draws.mean(1, keepdim=True)) / 200_000
    dev = members - members.mean(-1, keepdim=True)
    torch.testing.assert_close(cov, torch.einsum("bpe,bqe->bpq", dev, dev) / 4, atol=0.03, rtol=0)
    one = hypotheses(members[..., :1], mixing(3, 1))
    assert torch.equal(one, members[..., 0].unsqueeze(1).expand(2, 3, 7))


def test_greedy_selection_takes_the_largest_gain_each_step():
    """Each pick is the mean's best first, then the candidate adding most to mean_h max_i f_h(x_i)
    (brute force over the candidates at every step); past the valid candidates, nothing."""
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 16, 9, generator=g, dtype=torch.float64)
    valid = torch.ones(3, 9, dtype=torch.bool)
    valid[2, 5:] = False
    pick, ok = expected_max_select(values, valid, 6)
    assert ok[:2].all() and ok[2].tolist() == [True] * 5 + [False]
    for b in range(3):
        chosen: list[int] = []
        for i in range(int(ok[b].sum())):
            def worth(j):
                return values[b][:, chosen + [j]].amax(1).mean()
            free = [j for j in range(9) if valid[b, j] and j not in chosen]
            best = max(free, key=worth)
            assert torch.isclose(worth(int(pick[b, i])), worth(best)), (b, i)
            chosen.append(int(pick[b, i]))
        assert len(set(chosen)) == len(chosen)
    assert torch.equal(pick[:, 0], values.mean(1).masked_fill(~valid, -1e9).argmax(1))


def test_portfolio_beats_the_means_top_k_where_hypotheses_disagree():
    """Two equally likely hypotheses: rows 0-2 great under A only, row 3 great under B only. The
    mean's top 2 both bet on A; the greedy portfolio covers both, and on every small case its
    expected best is within 1 - 1/e of the exhaustive best set."""
    values = torch.tensor([[[10.0, 9.9, 9.8, 0.0, 1.0],
                            [0.0, 0.1, 0.2, 9.0, 1.0]]])                        # (1, H=2, P=5)
    valid = torch.ones(1, 5, dtype=torch.bool)
    pick, ok = expected_max_select(values, valid, 2)
    assert set(pick[0].tolist()) == {0, 3}
    mean_top = values.mean(1).topk(2).indices
    assert expected_max(values, pick, ok) > expected_max(values, mean_top, torch.ones(1, 2, dtype=torch.bool))
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        v = torch.rand(1, 6, 8, generator=g)
        p, o = expected_max_select(v, torch.ones(1, 8, dtype=torch.bool), 3)
        best = max(float(v[0][:, list(c)].amax(1).mean()) for c in itertools.combinations(range(8), 3))
        assert float(expected_max(v, p, o)) >= (1 - 1 / torch.e) * best - 1e-6


class Ensemble(Objective):
    """Three hypotheses of a Potts landscape: the landscape itself and two tilted copies."""

    members = 3

    def __init__(self):
        super().__init__()
        self.f = potts_objective()
        self.tilt = torch.randn(2, len(SIZES), max(SIZES), generator=torch.Generator().manual_seed(5))

    def _members(self, x, ctx):
        base = self.f(x, ctx)
        hot = torch.nn.functional.one_hot(x, max(SIZES)).float()
        extra = torch.einsum("nsv,esv->ne", hot, self.tilt)
        return torch.stack([base, base + extra[:, 0], base + extra[:, 1]], -1)

    def score(self, x, ctx):
        return self._members(x, ctx).mean(-1)

    def scores_and_members(self, x, ctx):
        m = self._members(x, ctx)
        return m.mean(-1), m


@pytest.mark.parametrize("budget", [None, 200])
def test_portfolio_decoder_contract_on_an_ensemble(budget):
    """K distinct rows holding the fixed slots, scored by the mean, best first, after exactly
    polish's search and calls (the members' scores are kept as rows are scored); the rows maximise
    the expected best over the ensemble at least as well as polish's K; with one hypothesis it is polish."""
    gen, f = generator("autoregressive"), Ensemble()
    fixed = torch.tensor([2, -1, -1, -1])
    c = decode("portfolio", gen, f, CTX, 6, fixed=fixed, budget=budget, generator=torch.Generator().manual_seed(0))
    assert c.valid.all() and (c.rows[..., 0] == 2).all()
    for b in range(3):
        assert len({tuple(r) for r in c.rows[b].tolist()}) == 6
        torch.testing.assert_close(c.scores[b], f.score(c.rows[b], CTX.index(torch.full((6,), b))))
    assert (c.scores[:, :-1] >= c.scores[:, 1:]).all()
    ref = decode("polish", gen, f, CTX, 6, fixed=fixed, budget=budget, generator=torch.Generator().manual_seed(0))
    assert c.scorer_calls == ref.scorer_calls
    if budget is not None:
        assert c.scorer_calls <= 3 * budget

    def aim(rows):
        members = torch.stack([f._members(rows[b], CTX.index(torch.full((6,), b))) for b in range(3)])  # (B, K, E)
        values = hypotheses(members, mixing(4096, 3, torch.Generator().manual_seed(9)))
        return expected_max(values, torch.arange(6).expand(3, 6), torch.ones(3, 6, dtype=torch.bool))

    assert (aim(c.rows) >= aim(ref.rows) - 0.02).all()
    one = decode("portfolio", gen, potts_objective(), CTX, 6, budget=budget)      # one hypothesis: polish
    ref = decode("polish", gen, potts_objective(), CTX, 6, budget=budget)
    assert torch.equal(one.rows, ref.rows)


def test_an_ensemble_runs_default_is_slices_with_polish_calls(tmp_path):
    """Run.generate without a decoder: slices for k > 1 from an ensemble scorer, polish for k = 1
    or one member; slices' and portfolio's rows come from polish's search at polish's calls."""
    from choicegrad.bench.tasks import PottsTask
    from choicegrad.run import Run, TableSpec
    from choicegrad.scorer.fit import ScorerFit
    from choicegrad.training.loop import GeneratorFit

    PottsTask(slots=4, vocab=4, contexts=2, seed=0).table(n=400, seed=1).to_csv(tmp_path / "t.csv", index=False)
    run = Run.fit(tmp_path / "t.csv", tmp_path / "run", TableSpec(features="s?", score="y", context="ctx"),
                  scorer_fit=ScorerFit(epochs=4, ensemble=3, seed=0), generator_fit=GeneratorFit(steps=30, seed=0),
                  progress=False, force_generator=True)
    default = run.generate(k=6)
    assert default.attrs["decoder"] == "slices"
    polish = run.generate(k=6, decoder="polish")
    assert default.attrs["scorer_calls"] == polish.attrs["scorer_calls"]
    assert run.generate(k=6, decoder="slices").equals(default)
    assert run.generate(k=6, decoder="portfolio").attrs["scorer_calls"] == polish.attrs["scorer_calls"]
    assert run.generate(k=1).attrs["decoder"] == "polish"
    assert run.generate(k=6, beta=1.0).attrs["decoder"] == "polish"     # pessimism: no bet on disagreement


def test_portfolio_keeps_each_contexts_own_rows_and_the_means_best_first():
    """Two contexts with the same features but different fixed slots each get their own rows; the
    first candidate is polish's (the members' mean best: the draws are centred)."""
    from choicegrad.generators.context import TableContext

    gen, f = generator("autoregressive"), Ensemble()
    twins = TableContext(torch.tensor([[1], [1]]), torch.zeros(2, 0))
    fixed = torch.tensor([[0, -1, -1, -1], [2, -1, -1, -1]])
    c = decode("portfolio", gen, f, twins, 4, fixed=fixed, budget=120)
    assert (c.rows[0, :, 0] == 0).all() and (c.rows[1, :, 0] == 2).all() and c.valid.all()
    for k in (1, 3):
        p = decode("portfolio", gen, f, CTX, k, budget=150)
        ref = decode("polish", gen, f, CTX, k, budget=150)
        assert torch.equal(p.rows[:, 0], ref.rows[:, 0])


def test_slices_take_each_members_best_in_turn():
    """Against a loop over picks: pick i is member (i mod E)'s best candidate not yet chosen; past a
    context's valid candidates, nothing; one member: its top k."""
    g = torch.Generator().manual_seed(0)
    members = torch.randn(3, 9, 4, generator=g)
    valid = torch.ones(3, 9, dtype=torch.bool)
    valid[1, ::2] = False
    valid[2, 3:] = False
    pick, ok = slices(members, valid, 7)
    for b in range(3):
        chosen: list[int] = []
        for i in range(7):
            free = [j for j in range(9) if valid[b, j] and j not in chosen]
            assert bool(ok[b, i]) == bool(free)
            if free:
                best = max(free, key=lambda j: float(members[b, j, i % 4]))
                assert int(pick[b, i]) == best
                chosen.append(best)
    one, ok1 = slices(members[..., :1], torch.ones(3, 9, dtype=torch.bool), 5)
    assert torch.equal(one, members[..., 0].topk(5, dim=1).indices) and ok1.all()


def test_member_ranks_and_the_record_pool_by_members_compact_exactly():
    """A candidate's best rank under any member; the pool by members holds every distinct row within
    some member's top `size` (each member's top rows brute force), and compacting the record after
    every batch of rows leaves the same pool as keeping them all."""
    members = torch.tensor([[[3.0, 0.0], [2.0, 5.0], [1.0, 4.0], [0.0, 1.0]]])          # (1, P=4, E=2)
    assert member_ranks(members, torch.ones(1, 4, dtype=torch.bool)).tolist() == [[0, 0, 1, 2]]
    assert member_ranks(members, torch.tensor([[True, False, True, True]])).tolist() == [[0, 4, 0, 1]]

    f = Ensemble()
    g = torch.Generator().manual_seed(1)
    tags = torch.tensor([0, 1, 2]).repeat_interleave(40)
    rows = torch.stack([torch.randint(0, v, (120,), generator=g) for v in SIZES], 1)   # repeats included
    whole, parts = MemberRecord(f), MemberRecord(f)
    ctx = TaggedContext(CTX.cat[tags], CTX.num[tags], tags)
    whole.score(rows, ctx)
    for i in range(0, 120, 16):
        parts.score(rows[i:i + 16], ctx.index(torch.arange(i, min(i + 16, 120))))
        parts.compact(3, 4, max(SIZES), by="members", slack=0)
    a, b = whole.pool(3, 4, max(SIZES), by="members"), parts.pool(3, 4, max(SIZES), by="members")
    for ctx_b in range(3):
        got = {tuple(r) for r, v in zip(a[0][ctx_b].tolist(), a[3][ctx_b].tolist()) if v}
        assert got == {tuple(r) for r, v in zip(b[0][ctx_b].tolist(), b[3][ctx_b].tolist()) if v}
        mine = {tuple(r) for r in rows[tags == ctx_b].tolist()}
        scored = torch.tensor(sorted(mine))
        m = f._members(scored, CTX.index(torch.full((len(scored),), ctx_b)))
        want = {tuple(scored[j].tolist()) for e in range(3) for j in m[:, e].topk(4).indices.tolist()}
        assert got == want


@pytest.mark.parametrize("name", ["slices", "portfolio"])
def test_slices_and_portfolio_decode_with_or_without_a_generator(name):
    """With a generator: K distinct rows holding the fixed slots, scored by the mean, best first, at
    polish's calls; slices holds each member's best among the rows polish scored. Without one: every
    row of the space is the search, and slices holds each member's best row of the whole space."""
    gen, f = generator("autoregressive"), Ensemble()
    c = decode(name, gen, f, CTX, 6, budget=200, generator=torch.Generator().manual_seed(0))
    ref = decode("polish", gen, f, CTX, 6, budget=200, generator=torch.Generator().manual_seed(0))
    assert c.valid.all() and c.scorer_calls == ref.scorer_calls and (c.scores[:, :-1] >= c.scores[:, 1:]).all()
    mask = torch.zeros(1, len(SIZES), max(SIZES), dtype=torch.bool)
    for s, v in enumerate(SIZES):
        mask[0, s, :v] = True
    fixed = torch.tensor([2, -1, -1, -1])
    e = decode(name, None, f, CTX, 6, mask=mask, fixed=fixed)
    every = all_rows()[all_rows()[:, 0] == 2]
    assert e.scorer_calls == 3 * len(every) and e.valid.all() and (e.rows[..., 0] == 2).all()
    for b in range(3):
        assert len({tuple(r) for r in e.rows[b].tolist()}) == 6
        cb = CTX.index(torch.full((len(every),), b))
        torch.testing.assert_close(e.scores[b], f.score(e.rows[b], CTX.index(torch.full((6,), b))))
        m = f._members(every, cb)
        if name == "slices":
            assert {tuple(every[j].tolist()) for j in m.argmax(0).tolist()} <= {tuple(r) for r in e.rows[b].tolist()}
        else:
            assert e.rows[b, 0].tolist() == every[m.mean(-1).argmax()].tolist()
    with pytest.raises(InputError, match="polish needs a generator"):
        decode("polish", None, f, CTX, 6, mask=mask)


def test_an_enumerated_runs_ensemble_default_is_slices_over_every_row(tmp_path):
    """A small space fitted without a generator: exhaustive for one member or k = 1, slices for an
    ensemble and k > 1, portfolio on request; every one scores the whole space."""
    from choicegrad.bench.tasks import PottsTask
    from choicegrad.run import Run, TableSpec
    from choicegrad.scorer.fit import ScorerFit

    PottsTask(slots=4, vocab=4, contexts=2, seed=0).table(n=400, seed=1).to_csv(tmp_path / "t.csv", index=False)
    run = Run.fit(tmp_path / "t.csv", tmp_path / "run", TableSpec(features="s?", score="y", context="ctx"),
                  scorer_fit=ScorerFit(epochs=4, ensemble=3, seed=0), progress=False)
    assert run.generator is None
    default = run.generate(k=6)
    assert default.attrs["decoder"] == "slices" and default.attrs["scorer_calls"] == 2 * 256
    assert run.generate(k=1).attrs["decoder"] == "exhaustive"
    got = run.generate(k=6, decoder="portfolio")
    assert got.attrs["scorer_calls"] == 2 * 256 and len(got) == 12
    with pytest.raises(InputError, match="exhaustive returns the exact top-k, portfolio and slices"):
        run.generate(k=6, decoder="polish")
