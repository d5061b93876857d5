"""Generators: each form x each applicable gradient estimator finds a planted optimum; the
autoregressive generator is a normalised slot-by-slot model that can hold several distinct rows;
the pointer generator solves "pick the 5" on list lengths it never saw; training is reproducible."""

import csv
import itertools
import json

import pytest
import torch

from choicegrad.data.table import load_table
from choicegrad.decoding import decode
from choicegrad.estimators import available
from choicegrad.training.loop import GeneratorFit, SampledContexts, TableContexts, fit_generator
from choicegrad.generators import (AutoregressiveGenerator, GeneratorConfig, ItemObjective, TableContext,
                                   TableObjective, build, load, rows_to_inputs, save)
from choicegrad.bench.tasks import PickFiveTask, PlantedTask

SMALL = dict(hidden=[48, 48], context_dim=8)




@pytest.fixture(scope="module")
def planted():
    task = PlantedTask(slots=4, vocab=4, contexts=2, modes=1, seed=3)
    full = task.table(600, seed=1)
    return task, load_table(full, "s?", "y", "ctx")


def _fit(kind, method, data, objective, steps=150, **kw):
    """kind "X-ragged": X in the ragged layout."""
    torch.manual_seed(0)
    kind, _, layout = kind.partition("-")
    gen = build(GeneratorConfig(kind=kind, layout=layout or None, **SMALL), space=data.space, context=data.context)
    opts = {"temperature": 0.3} if method in ("weighted-ce", "raml") else {}
    fit = GeneratorFit(method=method, method_options=opts, steps=steps, batch_size=16, samples=8, lr=1e-2,
                       warm_start_steps=0, val_every=50, patience=None, entropy=0.0, log_every=50, **kw)
    return gen, fit_generator(gen, objective, TableContexts(data), fit)


@pytest.mark.parametrize("kind", ["factorized", "autoregressive", "autoregressive-ragged"])
@pytest.mark.parametrize("method", [m for m in available() if m != "aligner"])  # needs a Scorer: test_aligner.py
def test_generator_finds_planted_optimum(planted, kind, method):
    task, data = planted
    gen, res = _fit(kind, method, data, task.objective())
    ctx = TableContexts(data).contexts
    best = decode("argmax", gen, task.objective(), ctx, 1)
    for b in range(len(ctx)):
        assert torch.equal(best.rows[b, 0], task.optimum(int(ctx.cat[b, 0]))[0]), (kind, method)
    assert res.scorer_calls > 0 and res.history


def test_autoregressive_holds_several_distinct_rows():
    """Two good rows per context with nothing in common: the autoregressive generator learns both
    without mixing them; a factorized one must produce their mixtures."""
    import pandas as pd

    frame = pd.DataFrame({"ctx": ["x"] * 4 + ["y"] * 4, "s0": list("abab") + list("cdcd"),
                          "s1": list("abab") + list("cdcd"), "s2": list("abab") + list("cdcd"), "y": 1.0})
    data = load_table(frame, "s?", "y", "ctx")
    ctx = TableContexts(data).contexts
    shares = {}
    for kind in ("autoregressive", "factorized"):
        torch.manual_seed(0)
        gen = build(GeneratorConfig(kind=kind, **SMALL), space=data.space, context=data.context)
        opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
        for _ in range(200):
            loss = -gen.log_prob(data.rows, TableContext(data.ctx_cat, data.ctx_num)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        rows = gen.sample(ctx, 200, generator=torch.Generator().manual_seed(1))
        pure = (rows == rows[..., :1]).all(-1).float().mean()  # a row of one letter: a data row
        shares[kind] = float(pure)
        if kind == "autoregressive":
            assert len({tuple(r) for r in rows[0].tolist()}) == 2
    assert shares["autoregressive"] > 0.97 and shares["factorized"] < 0.5, shares


@pytest.mark.parametrize("layout", ["padded", "ragged"])
@pytest.mark.parametrize("order", [None, [2, 0, 3, 1]])
def test_autoregressive_is_normalised_and_causal(order, layout):
    task = PlantedTask(slots=4, vocab=3, contexts=2)
    gen = AutoregressiveGenerator([3, 2, 3, 3], [2], 0, GeneratorConfig(order=order, layout=layout, **SMALL))
    with torch.no_grad():
        for p in gen.parameters():
            p.mul_(20.0)  # a far-from-uniform distribution
    ctx = TableContext(torch.tensor([[0], [1]]), torch.zeros(2, 0))
    rows = torch.cartesian_prod(*[torch.arange(v) for v in [3, 2, 3, 3]])
    lp = gen.log_prob(rows.unsqueeze(0).expand(2, -1, -1), ctx)
    assert torch.allclose(lp.exp().sum(1), torch.ones(2), atol=1e-4)
    x = torch.randn(2, 4, 3, requires_grad=True)
    logits = gen.logits(ctx, x)
    pos = {s: i for i, s in enumerate(gen.order)}
    for s in range(4):
        (g,) = torch.autograd.grad(logits[:, s].sum(), x, retain_graph=True)
        seen = (g.abs().sum((0, 2)) > 0).tolist()
        assert seen == [pos[t] < pos[s] for t in range(4)], (s, seen)
    torch.testing.assert_close(gen.logits(ctx, rows[:2]), gen.logits(ctx, rows_to_inputs(rows[:2], 3)), rtol=1e-5, atol=1e-4)
    del task


@pytest.mark.parametrize("layout", ["padded", "ragged"])
def test_relaxed_sampling_is_straight_through_the_prefix(layout):
    gen = AutoregressiveGenerator([4, 4, 4], [], 0, GeneratorConfig(layout=layout, **SMALL))
    ctx = TableContext.empty(5)
    fixed = torch.tensor([-1, 2, -1])
    x, index, _ = gen.relaxed_sample(ctx, "st-gumbel", 0.7, fixed=fixed, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x.detach(), torch.nn.functional.one_hot(index, 4).float())
    assert (index[:, 1] == 2).all()
    (x * torch.randn(5, 3, 4)).sum().backward()
    first = gen.skip.weight if layout == "padded" else gen.embed        # what reads the earlier choices
    assert first.grad is not None and first.grad.abs().sum() > 0        # gradient through the prefix


@pytest.mark.parametrize("layout", ["padded", "ragged"])
@pytest.mark.parametrize("kind", ["factorized", "autoregressive"])
def test_sample_keeps_fixed_slots_and_save_load_round_trip(tmp_path, planted, kind, layout):
    task, data = planted
    gen = build(GeneratorConfig(kind=kind, layout=layout, **SMALL), space=data.space, context=data.context)
    ctx = TableContexts(data).contexts
    rows = gen.sample(ctx, 50, fixed=torch.tensor([1, -1, -1, 3]), generator=torch.Generator().manual_seed(0))
    assert (rows[..., 0] == 1).all() and (rows[..., 3] == 3).all()
    save(gen, tmp_path)
    again, meta = load(tmp_path)
    assert meta["generator"] == kind and again.config.layout == layout
    assert torch.equal(gen.eval().logits(ctx), again.logits(ctx))
    if layout == "padded":                            # saved before layouts existed: padded
        path = tmp_path / "generator.json"
        meta = json.loads(path.read_text())
        del meta["config"]["layout"]
        path.write_text(json.dumps(meta))
        assert torch.equal(load(tmp_path)[0].logits(ctx), again.logits(ctx))
    del task


def test_fit_is_reproducible_and_logs_metrics(tmp_path, planted):
    task, data = planted
    states = []
    for run in ("a", "b"):
        fit = GeneratorFit(method="reinforce", steps=20, batch_size=8, samples=4, warm_start_steps=5, val_every=10,
                           log_every=5, seed=7)
        torch.manual_seed(0)
        gen = build(GeneratorConfig(**SMALL), space=data.space, context=data.context)
        res = fit_generator(gen, task.objective(), TableContexts(data), fit, run_dir=tmp_path / run)
        states.append(gen.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    with open(tmp_path / "a" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    phases = {r["phase"] for r in rows}
    assert phases == {"warm", "train", "val"}
    train = [r for r in rows if r["phase"] == "train"]
    assert all(float(r["entropy"]) > 0 and float(r["distinct"]) >= 1 for r in train)
    assert int(float(rows[-1]["scorer_calls"])) == res.scorer_calls


def test_early_stopping_keeps_best_state(planted):
    task, data = planted
    torch.manual_seed(0)
    gen = build(GeneratorConfig(**SMALL), space=data.space, context=data.context)
    fit = GeneratorFit(method="reinforce", steps=400, batch_size=16, samples=8, lr=1e-2, warm_start_steps=0,
                       val_every=5, patience=2, entropy=0.0)
    res = fit_generator(gen, task.objective(), TableContexts(data), fit)
    assert res.stopped == "early stopping"
    vals = [r["val_score"] for r in res.history if r["phase"] == "val"]
    assert res.best_val == max(vals)


def test_pessimistic_ensemble_objective(potts_frame):
    from choicegrad.scorer.fit import ScorerFit, fit_scorer

    data = load_table(potts_frame, "s?", "y", "ctx")
    scorer = fit_scorer(data, ScorerFit(ensemble=2, epochs=2)).scorer
    ctx = TableContext(data.ctx_cat[:10], data.ctx_num[:10])
    members = scorer.member_scores(data.rows[:10], ctx.cat, ctx.num)
    got = TableObjective(scorer, beta=1.5)(data.rows[:10], ctx)
    assert torch.allclose(got, members.mean(0) - 1.5 * members.std(0), atol=1e-5)


@pytest.mark.parametrize("method", ["st-gumbel", "reinforce", "gumbel-rao", "raml", "weighted-ce"])
def test_pointer_picks_the_five_on_unseen_lengths(method):
    task = PickFiveTask(slots=3, lengths=(4, 12))
    torch.manual_seed(0)
    gen = build(GeneratorConfig(kind="pointer", hidden=[32, 32], attention_layers=1), num_slots=3, item_dim=1)
    fit = GeneratorFit(method=method, steps=150, batch_size=32, samples=8, lr=3e-3, warm_start_steps=0,
                       val_every=50, patience=None, entropy=0.0, tau_end=0.3)
    fit_generator(gen, ItemObjective(task.reward), SampledContexts(task.draw, validation_size=64), fit)
    fresh = task.draw(1000, torch.Generator().manual_seed(99), lengths=(20, 40))   # never seen in training
    best = decode("argmax", gen, ItemObjective(task.reward), fresh, 1)
    assert task.accuracy(best.rows[:, 0], fresh) >= 0.99


@pytest.mark.parametrize("method", ["reinforce", "weighted-ce"])
def test_rows_with_missing_slots_train_masked(method):
    """Warm start and weighted-ce on data rows with missing slots: the missing slots are left out."""
    from choicegrad.training.loop import fit_table_generator
    from choicegrad.bench.tasks import PottsTask
    from choicegrad.scorer.fit import ScorerFit, fit_scorer

    data = load_table(PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=300, seed=1, missing=0.3),
                      "s?", "y", "ctx")
    assert (data.rows < 0).any()
    scorer = fit_scorer(data, ScorerFit(epochs=2)).scorer
    fit = GeneratorFit(method=method, steps=20, batch_size=8, samples=4, warm_start_steps=20, val_every=10)
    res = fit_table_generator(scorer, data, GeneratorConfig(**SMALL), fit)
    warm = [r["loss"] for r in res.history if r["phase"] == "warm"]
    assert warm and all(torch.isfinite(torch.tensor(warm)))
    lp = res.generator.log_prob(data.rows[:20], TableContext(data.ctx_cat[:20], data.ctx_num[:20]))
    assert torch.isfinite(lp).all()


@pytest.mark.parametrize("layout", ["padded", "ragged"])
@pytest.mark.parametrize("order,hidden", [(None, [64, 64]), ([3, 1, 0, 4, 2], [32, 48, 40]), ([2, 0, 1, 4, 3], [7]),
                                         ([4, 3, 2, 1, 0], [3, 2])])
def test_slot_logits_equal_the_full_pass(order, hidden, layout):
    """Sequential decoding's per-slot logits (each position's new units only, the rest carried; context
    terms once per context) equal the full masked pass, for any order, depth and width, with missing
    slots, from one-hot or long rows; a carry from the wrong position is an error."""
    torch.manual_seed(0)
    sizes = [3, 4, 2, 4, 1]
    gen = AutoregressiveGenerator(sizes, [5], 2, GeneratorConfig(order=order, hidden=hidden, layout=layout))
    for prm in gen.parameters():
        prm.data.normal_(0, 0.3)
    B, M = 6, 5
    ctx = TableContext(torch.randint(0, 5, (B, 1)), torch.randn(B, 2))
    rows = torch.stack([torch.randint(0, n, (B, M)) for n in sizes], -1)
    rows[rows.sum(-1) % 3 == 0, 2] = -1
    x = rows_to_inputs(rows, 4)
    full = gen.logits(ctx.repeat_interleave(M), x.reshape(B * M, 5, 4)).reshape(B, M, 5, 4)
    for inputs, grad in ((x, True), (rows, True), (x, False), (rows, False)):   # without autograd: in place
        with torch.set_grad_enabled(grad):
            feats, carry = gen.features(ctx), None
            for s in gen.order:
                logits, carry = gen.slot_logits(feats, inputs, s, carry)
                torch.testing.assert_close(logits, full[:, :, s], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="carry"):
        gen.slot_logits(feats, x, gen.order[1], None)


@pytest.mark.parametrize("layout", ["padded", "ragged"])
def test_decoding_in_context_chunks_matches_one_chunk(monkeypatch, layout):
    """Beam search, greedy rows and seeded draws do not depend on how many contexts go per chunk."""
    from choicegrad.decoding.decoders import beam_search
    from choicegrad.generators import context as context_module

    torch.manual_seed(1)
    gen = AutoregressiveGenerator([3, 4, 2, 4], [5], 2, GeneratorConfig(hidden=[32], layout=layout))
    for prm in gen.parameters():
        prm.data.normal_(0, 0.5)
    ctx = TableContext(torch.randint(0, 5, (9, 1)), torch.randn(9, 2))
    fixed = torch.full((9, 4), -1)
    fixed[::2, 1] = 3

    def outputs():
        draws = gen.sample(ctx, 4, fixed=fixed, generator=torch.Generator().manual_seed(0))
        return beam_search(gen, ctx, 5, fixed=fixed), gen.greedy(ctx, fixed=fixed), draws

    (rows, lp), greedy, draws = outputs()
    monkeypatch.setattr(context_module, "DECODE_ROWS", 5)          # one context per chunk
    (rows2, lp2), greedy2, draws2 = outputs()
    assert torch.equal(rows, rows2) and torch.equal(greedy, greedy2)
    torch.testing.assert_close(lp, lp2)
    assert draws2.shape == draws.shape and bool((draws2[::2, :, 1] == 3).all())
    empty, lp0 = beam_search(gen, ctx.index(slice(0, 0)), 5)
    assert empty.shape == (0, 5, 4) and lp0.shape == (0, 5)


def test_vocabulary_weights_are_known_before_building():
    """vocabulary_elements (what training_bytes and fit's memory check use) grows exactly as the
    built generator's parameters and buffers do when a vocabulary grows."""
    from choicegrad.generators import AutoregressiveGenerator, FactorizedGenerator

    def count(g):
        return sum(p.numel() for p in g.parameters()), sum(b.numel() for b in g.buffers())

    for cls, layout in itertools.product((AutoregressiveGenerator, FactorizedGenerator), ("padded", "ragged")):
        cfg = GeneratorConfig(kind=cls.kind, hidden=[16, 8], layout=layout)
        for small, big in (([3, 5], [3, 9]), ([4, 4, 2], [4, 7, 2])):
            built = [count(cls(sizes, [3], 2, cfg)) for sizes in (small, big)]
            known = [cls.vocabulary_elements(sizes, cfg) for sizes in (small, big)]
            for i in range(2):                                       # parameters, then buffers
                assert built[1][i] - built[0][i] == known[1][i] - known[0][i]


def test_fit_refuses_a_generator_too_big_for_the_machine_before_training():
    from choicegrad.data.space import ChoiceSpace, Slot
    from choicegrad.errors import InputError
    from choicegrad.generators import check_generator_fits

    space = ChoiceSpace(slots=[Slot(name="item", categories=[f"i{i}" for i in range(2000)]),
                               Slot(name="a", categories=["x", "y"])])
    check_generator_fits(GeneratorConfig(kind="autoregressive"), space, memory=2**40)
    with pytest.raises(InputError, match=r'"item" has 2,000 categories.*fit-scorer'):
        check_generator_fits(GeneratorConfig(kind="autoregressive"), space, memory=2**28)


def test_draws_of_a_large_vocabulary_go_in_chunks_of_bounded_size(monkeypatch):
    """Gumbel-max noise is (rows, S, V): with many logits per context the draws go in chunks of
    contexts (DECODE_ELEMENTS), every draw still a valid category; small draws stay in one piece."""
    import choicegrad.generators.base as base
    import choicegrad.generators.context as context
    from choicegrad.generators import FactorizedGenerator

    cfg = GeneratorConfig(kind="factorized", hidden=[8])
    sizes = [50, 3, 7]
    ctx = TableContext(torch.randint(4, (9, 1)), torch.zeros(9, 0))
    for cls in (FactorizedGenerator, AutoregressiveGenerator):
        gen = cls(sizes, [4], 0, cfg.model_copy(update={"kind": cls.kind}))
        whole = gen.sample(ctx, 6, generator=torch.Generator().manual_seed(0))
        seen = []
        monkeypatch.setattr(base, "DECODE_ELEMENTS", 6 * 3 * 50 * 2)          # 2 contexts per chunk
        monkeypatch.setattr(context, "DECODE_ELEMENTS", 50 * 12)               # 12 rows per chunk
        real = gen.logits if cls is FactorizedGenerator else gen.features
        monkeypatch.setattr(gen, real.__name__, lambda c, *a: seen.append(len(c)) or real(c, *a))
        parts = gen.sample(ctx, 6, generator=torch.Generator().manual_seed(0))
        monkeypatch.undo()
        assert parts.shape == whole.shape == (9, 6, 3) and max(seen) == 2
        assert bool((parts < torch.tensor(sizes)).all()) and bool((parts >= 0).all())
