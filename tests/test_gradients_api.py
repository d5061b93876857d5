"""Registry, `select`, `soft_lookup`, temperature schedules and the output contract."""

import math

import pytest
import torch
import torch.nn.functional as F

import choicegrad.estimators as G
from choicegrad.bench.toys import RandomMLPScorer



S, V = 3, 4


def test_registry_lists_all_methods():
    assert set(G.available()) == {"soft", "st", "gumbel", "st-gumbel", "gumbel-rao", "reinmax",
                                  "reinforce", "weighted-ce", "raml", "aligner", "trajectory-balance"}
    assert G.get("ST_Gumbel").name == "st-gumbel"


def test_unknown_method_suggests_and_lists():
    with pytest.raises(ValueError) as e:
        G.get("st-gumbl")
    msg = str(e.value)
    assert "did you mean 'st-gumbel'" in msg.lower()
    for name in G.available():
        assert name in msg
    with pytest.raises(ValueError, match="Valid"):
        G.get("zzzzzz")


def test_unknown_baseline_and_hyperparameter():
    with pytest.raises(ValueError) as e:
        G.get("reinforce", baseline="rlo")
    assert "rloo" in str(e.value) and "greedy" in str(e.value) and "none" in str(e.value)
    with pytest.raises(ValueError, match="k >= 2"):
        G.get("reinforce", baseline="rloo", k=1)
    with pytest.raises(ValueError, match="accepted"):
        G.get("st", temperature=1.0)
    with pytest.raises(ValueError, match="weighting"):
        G.get("weighted-ce", weighting="inv")
    with pytest.raises(ValueError, match="k"):
        G.get("gumbel-rao", k=0)
    with pytest.raises(ValueError, match="edit_prob"):
        G.get("raml", edit_prob=1.5)


@pytest.mark.parametrize("name", sorted(["soft", "st", "gumbel", "st-gumbel", "gumbel-rao", "reinmax",
                                         "reinforce", "weighted-ce", "raml"]))
def test_output_contract(name):
    f = RandomMLPScorer(S, V, seed=0)
    B = 5
    logits = torch.randn(B, S, V, requires_grad=True)
    extra = {"targets": torch.randint(0, V, (B, S))} if name == "weighted-ce" else {}
    out = G.get(name)(logits, f, generator=torch.Generator().manual_seed(0), **extra)
    K = out.samples.shape[1]
    assert out.sample.shape == (B, S) and out.sample.dtype == torch.long
    assert out.samples.shape == (B, K, S) and out.samples.dtype == torch.long
    assert out.scores.shape == (B, K) and not out.scores.requires_grad
    assert out.loss.dim() == 0 and out.loss.requires_grad
    assert isinstance(out.scorer_calls, int) and out.scorer_calls > 0
    assert all(isinstance(v, float) for v in out.stats.values()) and "entropy" in out.stats
    # `sample` is one of the samples: the best-scoring one
    best = out.scores.argmax(1)
    assert torch.equal(out.sample, out.samples[torch.arange(B), best])
    out.loss.backward()
    assert logits.grad is not None


def test_scorer_calls_counted():
    calls = []

    def f(x):
        calls.append(x.shape[0])
        return x.sum((1, 2))

    logits = torch.randn(6, S, V)
    assert G.get("reinforce", k=3, baseline="greedy")(logits, f).scorer_calls == 6 * 3 + 6 == sum(calls)
    calls.clear()
    assert G.get("soft", score_hard=True)(logits, f).scorer_calls == 12 == sum(calls)
    calls.clear()
    assert G.get("raml", m=5)(logits, f).scorer_calls == 30 == sum(calls)
    assert len(calls) == 1


@pytest.mark.parametrize("method", ["st", "st-gumbel", "gumbel-rao", "reinmax"])
def test_select_one_hot_forward_gradient_flows(method):
    logits = torch.randn(2, 5, V, dtype=torch.float64, requires_grad=True)
    x = G.select(logits, method, tau=0.5, generator=torch.Generator().manual_seed(0))
    assert x.shape == logits.shape and x.dtype == logits.dtype
    assert bool((x.sum(-1) == 1).all()) and bool(((x == 0) | (x == 1)).all())
    (x * torch.randn_like(x)).sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_select_soft_methods_and_hard_false():
    logits = torch.randn(4, V, requires_grad=True)
    x = G.select(logits, "soft", tau=2.0)
    assert torch.allclose(x, torch.softmax(logits / 2.0, -1))
    assert torch.allclose(G.select(logits, "st", tau=2.0, hard=False), x)
    y = G.select(logits, "gumbel", generator=torch.Generator().manual_seed(1))
    y2 = G.select(logits, "st-gumbel", hard=False, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(y, y2) and bool((y < 1).all())
    y3 = G.select(logits, "st-gumbel", generator=torch.Generator().manual_seed(1))
    assert torch.equal(y3.argmax(-1), y.argmax(-1))
    soft = G.select(logits, "gumbel-rao", hard=False, k=4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(soft.sum(-1), torch.ones(4))
    with pytest.raises(ValueError, match="hard=True"):
        G.select(logits, "reinmax", hard=False)


def test_select_matches_estimator_gradient():
    """select(...) + your own differentiable objective gives the estimator's gradient."""
    f = RandomMLPScorer(S, V, seed=1)
    logits = torch.randn(8, S, V, requires_grad=True)
    for method in ["st-gumbel", "reinmax", "gumbel-rao"]:
        logits.grad = None
        G.get(method, tau=0.7)(logits, f, generator=torch.Generator().manual_seed(3)).loss.backward()
        ref = logits.grad.clone()
        logits.grad = None
        x = G.select(logits, method, tau=0.7, generator=torch.Generator().manual_seed(3))
        (-f(x).mean()).backward()
        assert torch.allclose(logits.grad, ref, atol=1e-7), method


def test_select_mask_and_errors():
    logits = torch.zeros(1000, V)
    mask = torch.tensor([True, False, True, False])
    x = G.select(logits, "st-gumbel", mask=mask)
    assert bool((x[:, ~mask] == 0).all())
    for name in sorted(set(G.available()) - set(G.SELECT_METHODS)):   # registered, but no choice of their own
        with pytest.raises(ValueError, match="score_fn") as e:
            G.select(logits, name)
        assert "get(" in str(e.value)
    with pytest.raises(ValueError, match="Did you mean 'reinmax'"):
        G.select(logits, "reinmx")
    with pytest.raises(ValueError, match="broadcast"):
        G.select(logits, "st", mask=torch.ones(3, dtype=torch.bool))


def test_soft_lookup():
    emb = torch.nn.Embedding(V, 6)
    idx = torch.randint(0, V, (3, 5))
    hot = F.one_hot(idx, V).float()
    assert torch.allclose(G.soft_lookup(emb, hot), emb(idx))
    assert torch.allclose(G.soft_lookup(emb.weight, hot), emb(idx))
    probs = torch.softmax(torch.randn(3, 5, V), -1).requires_grad_(True)
    out = G.soft_lookup(emb, probs)
    assert out.shape == (3, 5, 6)
    out.sum().backward()
    assert probs.grad is not None and emb.weight.grad is not None
    x = G.select(torch.randn(3, 5, V, requires_grad=True), "st-gumbel")
    assert torch.allclose(G.soft_lookup(emb, x), emb(x.argmax(-1)))
    with pytest.raises(ValueError) as e:
        G.soft_lookup(emb, torch.rand(3, V + 1))
    assert "(3, 5)" in str(e.value) and f"({V}, 6)" in str(e.value)


def test_schedules():
    assert G.Constant(0.5)(0) == G.Constant(0.5)(10_000) == 0.5
    e = G.Exponential(1.0, 0.1, 100)
    assert e(0) == 1.0 and math.isclose(e(100), 0.1) and math.isclose(e(50), 0.1 ** 0.5)
    assert math.isclose(e(1000), 0.1)
    c = G.Cosine(2.0, 0.5, 10)
    assert c(0) == 2.0 and math.isclose(c(10), 0.5) and math.isclose(c(5), 1.25)
    vals = [c(i) for i in range(11)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    with pytest.raises(ValueError, match="tau"):
        G.Constant(0)
    with pytest.raises(ValueError, match="start"):
        G.Exponential(-1, 0.1, 10)
    with pytest.raises(ValueError, match="end"):
        G.Cosine(1.0, 0.0, 10)
    with pytest.raises(ValueError, match="steps"):
        G.Cosine(1.0, 0.5, 0)
    with pytest.raises(ValueError, match="steps"):
        G.Exponential(1.0, 0.5, 2.5)
    with pytest.raises(ValueError, match="step"):
        e(-1)


def test_vocab_mask():
    m = G.vocab_mask([1, 3, 2])
    assert m.tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    assert G.vocab_mask([2], vocab=4).shape == (1, 4)
    with pytest.raises(ValueError):
        G.vocab_mask([0, 2])


@pytest.mark.parametrize("name,hp", [("reinforce", dict(k=3, baseline="greedy")), ("reinforce", dict(k=2)),
                                     ("raml", dict(m=4)), ("st-gumbel", {})])
def test_scorer_rows_are_context_major(name, hp):
    """Row n of every score_fn call belongs to context n // (N // B): a context-aware scorer works."""
    B = 5
    ctx_id = torch.arange(B, dtype=torch.float32)
    fixed = torch.stack([torch.arange(B) % V, torch.full((B,), -1), torch.full((B,), -1)], 1)

    def f(x):
        ctx = ctx_id.repeat_interleave(x.shape[0] // B)
        assert torch.equal(x[:, 0].argmax(-1).float(), ctx % V)   # slot 0 is fixed to the context id
        return x.sum((1, 2)) + ctx

    out = G.get(name, **hp)(torch.randn(B, S, V), f, fixed=fixed)
    assert torch.allclose(out.scores, (ctx_id + S)[:, None].expand_as(out.scores))


def test_every_estimator_declares_what_training_gives_it():
    """The registry's metadata a training loop reads instead of names: typed options that build the
    estimator from a GeneratorFit, required call options among its call options, fit defaults that
    are GeneratorFit fields."""
    from choicegrad.training.loop import GeneratorFit

    for name in G.available():
        cls = G.get_class(name)
        assert set(cls.required_options) <= set(cls.call_options), name
        assert all(field in GeneratorFit.model_fields for field in cls.fit_defaults.values()), name
        options = set(cls.options_model().model_fields)
        assert set(cls.fit_defaults) | set(cls.training_defaults) | set(cls.training_ignores) <= options, name
        est, step = cls.for_fit(GeneratorFit(method=name))
        assert isinstance(est, cls) and (step is None) == (cls.step_options is None), name
        for key, field in cls.fit_defaults.items():
            assert getattr(est, key) == GeneratorFit().model_dump()[field], (name, key)


def test_method_options_are_validated_into_typed_options():
    from choicegrad.errors import InputError
    from choicegrad.estimators.trajectory_balance import TB_TEMPERATURE
    from choicegrad.training.loop import GeneratorFit

    def build(method, **options):
        return G.get_class(method).for_fit(GeneratorFit(method=method, samples=6, method_options=options))

    assert build("reinforce")[0].k == 6 and build("reinforce", k=3)[0].k == 3       # k from fit.samples unless given
    assert build("raml")[0].m == 6 and build("trajectory-balance")[0].k == 6
    assert build("trajectory-balance")[0].temperature == TB_TEMPERATURE == 0.25       # its own training default
    assert build("trajectory-balance", temperature=2)[0].temperature == 2.0
    assert build("reinforce", entropy=0.3)[0].entropy == 0.0     # the loop's entropy bonus applies instead
    assert build("gumbel-rao", k=3.0)[0].k == 3
    est, refs = build("aligner", references=4)
    assert (refs.references, refs.reference_share) == (4, 0.2) and not hasattr(est, "references")
    for method, options, needles in (("reinforce", {"kk": 3}, ['"kk"', "reinforce", 'did you mean "k"']),
                                     ("raml", {"m": "many"}, ['"m"', "raml"]),
                                     ("reinforce", {"baseline": "rlo"}, ["reinforce", "rloo"]),
                                     ("aligner", {"references": 0}, ['"references"', "aligner"]),
                                     ("st", {"k": 2}, ['"k"', "st has no option"])):
        with pytest.raises(InputError) as err:
            build(method, **options)
        assert err.value.source == "method_options"
        assert all(n in str(err.value) for n in needles), (str(err.value), needles)
