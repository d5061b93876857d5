"""Large vocabularies: inverse-CDF draws (estimators.gumbel.categorical) follow the softmax, never draw
a masked category, match the global draw under data parallelism, and leave small vocabularies' draws
as they were; the ragged layout costs what a large slot costs alone, and its autoregressive draws
(the first slot's drawn k at a time) follow the generator's probabilities; factorized and
autoregressive generators train and generate over a 5,000-category feature."""

import numpy as np
import pandas as pd
import pytest
import torch

from choicegrad.estimators import base as estimators_base
from choicegrad.estimators import gumbel
from choicegrad.estimators.gumbel import CDF_VOCABULARY, categorical, gumbel_max


@pytest.mark.parametrize("block", [128, 3])      # one block, or three (the last one padded)
def test_inverse_cdf_draws_follow_the_softmax_and_skip_masked_categories(monkeypatch, block):
    monkeypatch.setattr(gumbel, "CDF_VOCABULARY", 2)
    monkeypatch.setattr(gumbel, "CDF_BLOCK", block)
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0)) * 2
    logits[:, :, 5:] = -1e9                                      # masked: probability 0
    draws = categorical(logits, 40_000, generator=torch.Generator().manual_seed(1))       # (2, 40000, 3)
    assert draws.shape == (2, 40_000, 3) and int(draws.max()) < 5
    freq = torch.nn.functional.one_hot(draws, 7).float().mean(1)                          # (2, 3, 7)
    assert torch.allclose(freq, torch.softmax(logits, -1), atol=0.012)


def test_small_vocabularies_keep_their_gumbel_max_draws():
    """Below CDF_VOCABULARY, a factorized generator and a logits policy draw what they drew before
    inverse-CDF sampling existed: Gumbel-max over the logits expanded to (B, k, S, V)."""
    from choicegrad.estimators import LogitsPolicy
    from choicegrad.generators import GeneratorConfig, build
    from choicegrad.generators.context import TableContext

    torch.manual_seed(0)
    gen = build(GeneratorConfig(kind="factorized", hidden=[8]), space=_space([20, 7, 3]), context=_no_context())
    ctx = TableContext(torch.zeros(4, 0, dtype=torch.long), torch.zeros(4, 0))
    logits = gen.logits(ctx)
    old = gumbel_max(logits.float().unsqueeze(1).expand(4, 16, 3, 20) / 0.7, generator=torch.Generator().manual_seed(5))
    assert torch.equal(gen.sample(ctx, 16, temperature=0.7, generator=torch.Generator().manual_seed(5)), old)
    policy = LogitsPolicy.from_logits(logits.detach())
    old = gumbel_max(policy.theta.unsqueeze(1).expand(4, 16, 3, 20), generator=torch.Generator().manual_seed(6))
    assert torch.equal(policy.sample(16, generator=torch.Generator().manual_seed(6)), old)


def _space(sizes):
    from choicegrad.data.space import ChoiceSpace, Slot

    return ChoiceSpace(slots=[Slot(name=f"s{i}", categories=[str(c) for c in range(v)]) for i, v in enumerate(sizes)])


def _no_context():
    from choicegrad.data.context import ContextEncoder

    return ContextEncoder(columns=[])


@pytest.mark.parametrize("name", ["reinforce", "trajectory-balance", "raml", "weighted-ce"])
def test_estimators_score_hard_rows_of_a_large_vocabulary_as_indices(monkeypatch, name):
    """From CDF_VOCABULARY categories, estimators give score_fn hard rows as (N, S) indices, not
    (N, S, V) one-hots, and train through them."""
    from choicegrad import estimators
    from choicegrad.estimators import LogitsPolicy

    monkeypatch.setattr(gumbel, "CDF_VOCABULARY", 2)
    monkeypatch.setattr(estimators_base, "CDF_VOCABULARY", 2)     # hard_rows reads its own module's
    logits = torch.randn(3, 2, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weights = torch.randn(2, 6)
    seen = []

    def score(x):
        seen.append(x.detach())
        return weights.gather(1, x.T).sum(0) if not x.is_floating_point() else (x * weights).sum((1, 2))

    extra = {"targets": torch.tensor([[0, 1], [2, 3], [4, 5]])} if name == "weighted-ce" else {}
    out = estimators.get(name)(LogitsPolicy.from_logits(logits), score, generator=torch.Generator().manual_seed(1), **extra)
    hard = [x for x in seen if not x.is_floating_point()]
    assert len(hard) == len(seen) and all(x.shape[1:] == (2,) for x in hard)
    (grad,) = torch.autograd.grad(out.loss, logits)
    assert torch.isfinite(grad).all() and bool(grad.abs().sum() > 0)


def test_a_shard_draws_its_rows_of_the_global_inverse_cdf_draw(monkeypatch):
    from choicegrad.distributed import World
    from choicegrad.estimators.shard import BatchShard

    monkeypatch.setattr(gumbel, "CDF_VOCABULARY", 2)
    logits = torch.randn(5, 2, 9)
    whole = categorical(logits, 6, generator=torch.Generator().manual_seed(2))
    for rank in range(2):
        shard = BatchShard.of(torch.Generator().manual_seed(2), 5, World(rank=rank, size=2))
        assert torch.equal(categorical(logits[shard.slice], 6, generator=shard), whole[shard.slice])


def _catalogue_table(n=3000, items=5_000, measured=400, seed=0) -> pd.DataFrame:
    """Rows of `measured` popular items out of a catalogue of `items` (each user likes the popular
    items near its own place), two features of 4, 20 users."""
    rng = np.random.default_rng(seed)
    popular = rng.choice(items, size=measured, replace=False)
    user = rng.integers(20, size=n)
    pick = rng.integers(measured, size=n)
    a, b = rng.integers(4, size=(2, n))
    y = -np.abs(pick / measured - user / 20) * 5 + (a == b) + rng.normal(size=n) * 0.1
    return pd.DataFrame({"user": [f"u{u}" for u in user], "item": [f"i{i:05d}" for i in popular[pick]], "a": a, "b": b,
                         "y": y})


@pytest.mark.parametrize("kind", ["factorized", "autoregressive"])
def test_a_generator_trains_and_generates_over_a_large_catalogue(tmp_path, recwarn, kind):
    from choicegrad.run import Run, TableSpec
    from choicegrad.scorer.fit import ScorerFit
    from choicegrad.training.loop import GeneratorFit

    frame = _catalogue_table()
    catalogue = [f"i{i:05d}" for i in range(5_000)]                  # the whole catalogue, most items never measured
    assert len(catalogue) >= CDF_VOCABULARY                          # the inverse-CDF path is the one trained through
    run = Run.fit(frame, tmp_path / "run", TableSpec(features="item,a,b", score="y", context="user",
                                                     space={"item": catalogue}),
                  scorer_fit=ScorerFit(epochs=2), generator=kind,
                  generator_fit=GeneratorFit(steps=6, batch_size=8, samples=8, warm_start_steps=4, val_every=3,
                                             val_samples=16), progress=False)
    assert not [w for w in recwarn if "looks like an ID" in str(w.message)]   # unmeasured items do not count
    assert run.generator.config.layout == "ragged"                             # chosen by itself, and saved
    got = run.generate(pd.DataFrame({"user": ["u3", "u7"]}), k=32, decoder="sample")
    assert len(got) == 64 and got["item"].isin(set(catalogue)).all()
    assert got.groupby("user")[["item", "a", "b"]].apply(lambda g: len(g.drop_duplicates())).eq(32).all()


def test_the_ragged_layout_grows_with_the_categories_not_with_slots_times_the_largest():
    """65 slots, one of 5,000 categories: ragged weights grow with sum V_s (about 5,200), padded ones with
    65 x 5,000; every generator form still decodes, scores and relaxes such a table."""
    from choicegrad.generators import AutoregressiveGenerator, FactorizedGenerator, Generator, GeneratorConfig
    from choicegrad.generators.context import TableContext

    sizes = [3] * 32 + [5_000] + [3] * 32
    ctx = TableContext(torch.tensor([[0], [1]]), torch.zeros(2, 0))
    for cls in (FactorizedGenerator, AutoregressiveGenerator):
        cfg = GeneratorConfig(kind=cls.kind, hidden=[16])
        ragged = cls.vocabulary_elements(sizes, cfg)[0]
        assert ragged * 40 < cls.vocabulary_elements(sizes, cfg.model_copy(update={"layout": "padded"}))[0]
        gen = cls(sizes, [2], 0, cfg)
        assert gen.config.layout == "ragged" and sum(p.numel() for p in gen.parameters()) < 2 * ragged
        rows = gen.sample(ctx, 4, generator=torch.Generator().manual_seed(0))
        assert rows.shape == (2, 4, 65) and bool((rows < torch.tensor(sizes)).all())
        assert torch.isfinite(gen.log_prob(rows, ctx)).all()
        for mine, padded in zip(gen.teacher_terms(rows, ctx), Generator.teacher_terms(gen, rows, ctx)):
            torch.testing.assert_close(mine, padded)        # per-slot terms without padding = through the padded logits
        x, index, _ = gen.relaxed_sample(ctx, "st-gumbel", generator=torch.Generator().manual_seed(1))
        assert x.shape == (2, 65, 5_000) and bool((index < torch.tensor(sizes)).all())


@pytest.mark.parametrize("fixed", [None, torch.tensor([1, -1, -1])])
def test_ragged_autoregressive_draws_follow_its_probabilities(monkeypatch, fixed):
    """Draws of a ragged autoregressive generator (largest slot first, its k choices per context drawn
    from one set of logits, by inverse CDF) match the enumerated row probabilities."""
    from choicegrad.generators import AutoregressiveGenerator, GeneratorConfig
    from choicegrad.generators.context import TableContext

    monkeypatch.setattr(gumbel, "CDF_VOCABULARY", 2)
    torch.manual_seed(0)
    sizes = [2, 5, 3]
    gen = AutoregressiveGenerator(sizes, [2], 0, GeneratorConfig(hidden=[12, 12], layout="ragged"))
    with torch.no_grad():
        for prm in gen.parameters():
            prm.normal_(0, 1.0)
    assert gen.order == [1, 2, 0] and gen.shares_first
    ctx = TableContext(torch.tensor([[0], [1]]), torch.zeros(2, 0))
    every = torch.cartesian_prod(*[torch.arange(v) for v in sizes])
    if fixed is not None:
        every = every[every[:, 0] == 1]
    p = gen.log_prob(every.unsqueeze(0).expand(2, -1, -1), ctx).exp().detach()
    p = p / p.sum(1, keepdim=True)
    draws = gen.sample(ctx, 40_000, fixed=fixed, generator=torch.Generator().manual_seed(1))
    same = (draws.unsqueeze(2) == every.view(1, 1, -1, 3)).all(-1)                        # (2, 40000, R)
    assert bool(same.any(-1).all())
    assert torch.allclose(same.float().mean(1), p, atol=0.012)


def test_polish_tries_the_categories_the_generator_rates_highest_in_a_large_slot(monkeypatch):
    from choicegrad.decoding import local_search
    from choicegrad.decoding.local_search import polish, search_moves
    from choicegrad.decoding.scoring import Candidates
    from choicegrad.generators.context import TableContext

    S, V = 2, 100
    allowed = torch.ones(1, S, V, dtype=torch.bool)
    allowed[0, 0, 33] = False
    logits = torch.zeros(1, S, V)
    logits[0, :, 30:40] = 1.0                                        # the generator rates 30..39 highest
    moves, ok = search_moves(allowed, logits, limit=10)
    top = set(range(30, 40)) - {33}                                   # 33 is not allowed: another takes its place
    assert top < set(moves[0, 0].tolist()) and 33 not in moves[0, 0].tolist() and bool(ok.all())
    assert torch.equal(search_moves(allowed, logits, limit=100)[0][0, 1], torch.arange(V))   # small: every one
    seen = []

    def objective(x, ctx):
        seen.append(x.clone())
        return -(x[:, 0] - 37).abs().float() - (x[:, 1] - 35).abs().float()

    monkeypatch.setattr(local_search, "SEARCH_CATEGORIES", 10)
    start = torch.tensor([[[0, 0]]])
    ctx = TableContext(torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0))
    out = polish(objective, ctx, Candidates(start, objective(start[0], ctx)[None], torch.ones(1, 1, dtype=torch.bool), 1),
                 allowed, moves=search_moves(allowed, logits))
    assert out.rows[0, 0].tolist() == [37, 35]                       # the best row reachable by those moves
    tried = torch.cat(seen[1:])
    for slot in range(S):
        assert set(tried[:, slot].tolist()) <= set(moves[0, slot].tolist()) | {0}     # its moves, or the start
    assert out.scorer_calls <= 1 + 3 * S * 10                        # a few sweeps of 2 x 10 moves, not 2 x 100


def test_polish_of_an_autoregressive_generator_tries_its_first_slots_top_categories(monkeypatch):
    """Polish over an autoregressive generator's draws tries, in a slot of more than SEARCH_CATEGORIES,
    the categories its logits with nothing chosen rate highest: the largest slot's own conditional."""
    from choicegrad.decoding import decoders, local_search
    from choicegrad.generators import AutoregressiveGenerator, GeneratorConfig
    from choicegrad.generators.context import TableContext

    monkeypatch.setattr(decoders, "SEARCH_CATEGORIES", 10)
    monkeypatch.setattr(local_search, "SEARCH_CATEGORIES", 10)
    torch.manual_seed(0)
    gen = AutoregressiveGenerator([60, 3], [2], 0, GeneratorConfig(hidden=[16], layout="ragged")).eval()
    with torch.no_grad():
        gen.context_head.weight.normal_(0, 3.0)
    ctx = TableContext(torch.tensor([[0], [1]]), torch.zeros(2, 0))
    top = gen.logits(ctx)[:, 0].topk(10, -1).indices                                      # (2, 10)
    passed = []
    real = decoders.polish
    monkeypatch.setattr(decoders, "polish", lambda *a, moves=None, **kw: passed.append(moves) or real(*a, moves=moves, **kw))

    def objective(x, c):
        return -(x[:, 0] - 30).abs().float() + x[:, 1].float()

    out = decoders.decode("polish", gen, objective, ctx, 3, samples=6, generator=torch.Generator().manual_seed(1))
    (moves, ok), = passed
    assert moves.shape == (2, 2, 10) and bool(ok[:, 0].all()) and ok[:, 1].sum(-1).tolist() == [3, 3]
    for b in range(2):
        assert set(moves[b, 0].tolist()) == set(top[b].tolist())                        # the large slot: its top 10
        assert set(moves[b, 1][ok[b, 1]].tolist()) == {0, 1, 2}                          # the small one: all 3
    assert bool(out.valid.all())


def test_single_slot_changes_by_rejection_are_uniform_over_the_other_allowed_categories(monkeypatch):
    from choicegrad.decoding import rows as rows_mod
    from choicegrad.decoding.rows import change_one_slot

    monkeypatch.setattr(rows_mod, "REJECTION_VOCABULARY", 4)
    allowed = torch.zeros(2, 1, 40, dtype=torch.bool)
    allowed[0, 0, [1, 3, 4, 9]] = True                     # a few allowed: guesses often hit
    allowed[1, 0, [0, 39]] = True                           # one other, far away: guesses may all miss
    start = torch.tensor([[[3]], [[0]]]).expand(2, 6000, 1)
    moved = change_one_slot(start, allowed, torch.Generator().manual_seed(0))[..., 0]
    assert set(moved[0].tolist()) == {1, 4, 9} and set(moved[1].tolist()) == {39}
    counts = torch.bincount(moved[0], minlength=10)[[1, 4, 9]].float()
    assert bool(((counts / 6000 - 1 / 3).abs() < 0.03).all())


def test_one_space_shared_by_every_context_is_summarised_once_and_gives_the_same_decoding():
    """A mask expanded over the contexts (stride 0), with fixed values shared by all of them, stays one
    expanded space, and the decoders' per-context summaries of it (space size, neighbours, top-ups,
    single-slot changes) equal those of the same space materialised per context."""
    from choicegrad.decoding.rows import allowed_choices, change_one_slot, neighbour_count, space_size
    from choicegrad.decoding.scoring import complete_distinct

    one = torch.zeros(1, 3, 5000, dtype=torch.bool)
    one[0, 0, :4500], one[0, 1, :3], one[0, 2, 7:9] = True, True, True
    shared = allowed_choices(one.expand(64, -1, -1), torch.tensor([-1, 2, -1]))
    assert shared.stride(0) == 0                                    # not 64 x 3 x 5000 booleans
    full = shared.contiguous()
    assert torch.equal(full, allowed_choices(one.expand(64, -1, -1).contiguous(), torch.tensor([-1, 2, -1])))
    assert torch.equal(space_size(shared), space_size(full)) and torch.equal(neighbour_count(shared), neighbour_count(full))
    start = torch.tensor([[10, 2, 7]]).expand(64, 1, 3)
    for f in (lambda a, g: change_one_slot(start.expand(64, 50, 3), a, g),
              lambda a, g: complete_distinct(start, torch.ones(64, 1, dtype=torch.bool), 20, a, g)):
        a, b = f(shared, torch.Generator().manual_seed(3)), f(full, torch.Generator().manual_seed(3))
        assert all(torch.equal(x, y) for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)))


def test_ragged_decoding_keeps_the_embedding_blocks_for_one_call_only():
    """Within decoding() without autograd, slot_logits reuses each position's embedding block; the
    next call takes the weights as they are then (even written through .data, which no version
    counter sees), and the logits equal the full pass each time."""
    from choicegrad.generators import AutoregressiveGenerator, GeneratorConfig
    from choicegrad.generators.context import TableContext

    torch.manual_seed(0)
    gen = AutoregressiveGenerator([50, 3, 4], [2], 0, GeneratorConfig(hidden=[16, 16], layout="ragged"))
    ctx = TableContext(torch.tensor([[0], [1]]), torch.zeros(2, 0))
    rows = torch.stack([torch.randint(0, n, (2, 5)) for n in (50, 3, 4)], -1)
    for _ in range(2):
        full = gen.logits(ctx.repeat_interleave(5), rows.reshape(10, 3)).reshape(2, 5, 3, 50)
        with torch.no_grad(), gen.decoding():
            feats, carry = gen.features(ctx), None
            for s in gen.order:
                logits, carry = gen.slot_logits(feats, rows, s, carry)
                torch.testing.assert_close(logits, full[:, :, s], rtol=1e-5, atol=1e-5)
            assert set(gen._blocks) == {1, 2}                       # the first position reads none
        assert gen._blocks is None
        gen.embed.data.normal_(0, 0.5)
