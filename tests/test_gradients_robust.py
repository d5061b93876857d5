"""Masks, fixed slots, variable vocab sizes, numerics (tau extremes, huge logits, fp16/bf16) and
seeded reproducibility, for every registered method (the registry's list: a new estimator is covered
as soon as it is registered, and fails here until `call_options` can build what it requires)."""

import pytest
import torch

import choicegrad.estimators as G
from choicegrad.bench.toys import RandomMLPScorer



S, V = 3, 4
METHODS = G.available()
TAU_METHODS = [m for m in METHODS if G.get_class(m).uses_tau]
D = 5   # dimension of the toy embedding for estimators that pull rows towards reference rows


class Recorder(torch.nn.Module):
    """Wraps a scorer and keeps every input it was called with."""

    def __init__(self, f):
        super().__init__()
        self.f, self.seen = f, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.f(x)


@pytest.fixture(scope="module")
def scorer():
    return RandomMLPScorer(S, V, hidden=8, seed=2)


def embed(x):
    """A fixed toy embedding (N, S, V) float rows -> (N, D) unit vectors."""
    w = torch.randn(S * V, D, generator=torch.Generator().manual_seed(9))
    return torch.nn.functional.normalize(x.float().flatten(1) @ w, dim=-1)


def unit_vectors(B, n, seed):
    return torch.nn.functional.normalize(torch.randn(B, n, D, generator=torch.Generator().manual_seed(seed)), dim=-1)


def call_options(name, B, targets=None):
    """The per-call options estimator `name` requires (its `required_options`), for B contexts; data
    rows `targets` (B, S), when given, to every estimator that takes them (zeros where required)."""
    cls = G.get_class(name)
    builders = {"targets": lambda: targets if targets is not None else torch.zeros(B, S, dtype=torch.long),
                "embed": lambda: embed, "positives": lambda: unit_vectors(B, 2, 1),
                "negatives": lambda: unit_vectors(B, 3, 2)}
    missing = [o for o in cls.required_options if o not in builders]
    assert not missing, f"{name} requires {missing}: teach call_options to build them"
    extra = {o: builders[o]() for o in cls.required_options}
    if targets is not None and "targets" in cls.call_options:
        extra["targets"] = targets
    return extra


def run(name, logits, f, *, seed=0, targets=None, generator=None, **kw):
    extra = call_options(name, logits.shape[0], targets)
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    return G.get(name)(logits, f, generator=generator, **extra, **kw)


@pytest.mark.parametrize("name", METHODS)
def test_masked_categories_never_used(name, scorer):
    sizes = [2, 3, 4]
    mask = G.vocab_mask(sizes, V)
    logits = torch.zeros(2000, S, V)
    logits[..., -1] = 5.0          # the padded (invalid) categories would be favourites if not masked
    logits.requires_grad_(True)
    rec = Recorder(scorer)
    out = run(name, logits, rec, mask=mask)
    out.loss.backward()
    for s, size in enumerate(sizes):
        assert bool((out.samples[..., s] < size).all()), (name, s)
        assert bool((out.sample[..., s] < size).all()), (name, s)
    for x in rec.seen:
        assert bool((x[:, ~mask] == 0).all()), name       # zero probability / never one-hot
    assert bool((logits.grad[:, ~mask] == 0).all()), name
    assert bool(torch.isfinite(logits.grad).all()) and bool(torch.isfinite(out.loss))


def test_mask_per_context(scorer):
    mask = torch.ones(4, S, V, dtype=torch.bool)
    mask[0, :, 1:] = False          # context 0 may only use category 0
    out = G.get("st-gumbel")(torch.randn(4, S, V), scorer, mask=mask, generator=torch.Generator().manual_seed(0))
    assert bool((out.sample[0] == 0).all())


@pytest.mark.parametrize("name", METHODS)
def test_fixed_slots_keep_value_and_get_zero_grad(name, scorer):
    torch.manual_seed(0)
    B = 64
    logits = torch.randn(B, S, V, requires_grad=True)
    fixed = torch.full((B, S), -1, dtype=torch.long)
    fixed[:, 1] = 3
    fixed[::2, 0] = 1
    targets = torch.randint(0, V, (B, S))
    rec = Recorder(scorer)
    # data rows only where required (raml, given none, proposes its own rows; with them: below)
    out = run(name, logits, rec, fixed=fixed, targets=targets if "targets" in G.get_class(name).required_options else None)
    out.loss.backward()
    is_fixed = fixed >= 0
    assert bool((out.sample[is_fixed] == fixed[is_fixed]).all()), name
    assert bool((out.samples[:, :, 1] == 3).all()), name
    assert bool((logits.grad[is_fixed] == 0).all()), name
    assert bool((logits.grad[~is_fixed] != 0).any()), name
    for x in rec.seen:   # the scorer saw the fixed categories as exact one-hots
        assert bool((x[:, 1, 3] == 1).all()), name


def test_raml_with_targets_respects_fixed(scorer):
    logits = torch.randn(8, S, V, requires_grad=True)
    fixed = torch.tensor([-1, 2, -1]).expand(8, S)
    out = G.get("raml", edit_prob=1.0)(logits, scorer, fixed=fixed, targets=torch.zeros(8, S, dtype=torch.long))
    out.loss.backward()
    assert bool((out.samples[..., 1] == 2).all())
    assert bool((logits.grad[:, 1] == 0).all())


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_numerics_extreme_inputs(name, dtype, scorer):
    torch.manual_seed(1)
    taus = [0.05, 10.0] if name in TAU_METHODS else [None]
    for tau in taus:
        for scale in [1.0, 1e4]:
            logits = (torch.randn(16, S, V) * scale).clamp(-1e4, 1e4).to(dtype).requires_grad_(True)
            kw = {} if tau is None else {"tau": tau}
            mask = G.vocab_mask([2, 4, 3], V)
            out = run(name, logits, scorer, mask=mask, **kw)
            out.loss.backward()
            assert logits.grad.dtype == dtype
            assert bool(torch.isfinite(out.loss)), (name, tau, scale)
            assert bool(torch.isfinite(logits.grad).all()), (name, tau, scale)
            assert bool(torch.isfinite(out.scores).all())
            assert all(v == v and abs(v) != float("inf") for v in out.stats.values()), out.stats


def test_gumbel_noise_is_finite_and_safe():
    g = G.sample_gumbel((200_000,), generator=torch.Generator().manual_seed(0))
    assert g.dtype == torch.float32 and bool(torch.isfinite(g).all())
    for dtype in [torch.float16, torch.bfloat16]:
        logits = (torch.randn(50, V) * 1e4).clamp(-1e4, 1e4).to(dtype).requires_grad_(True)
        for tau in [0.05, 10.0]:
            y = G.gumbel_softmax(logits, tau, generator=torch.Generator().manual_seed(1), hard=True)
            assert y.dtype == dtype and bool(torch.isfinite(y).all())
            (y * torch.randn(50, V).to(dtype)).sum().backward()
            assert bool(torch.isfinite(logits.grad).all())


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_tau_must_be_positive(bad, scorer):
    logits = torch.randn(2, S, V)
    for name in TAU_METHODS:
        with pytest.raises(ValueError, match="tau"):
            G.get(name, tau=bad)
        with pytest.raises(ValueError, match="tau"):
            run(name, logits, scorer, tau=bad)
    for name in G.SELECT_METHODS:
        with pytest.raises(ValueError, match="tau"):
            G.select(logits, name, tau=bad)
    with pytest.raises(ValueError, match="tau"):
        G.gumbel_softmax(logits, tau=bad)


def test_per_call_tau_override(scorer):
    logits = torch.randn(3, S, V)
    est = G.get("soft", tau=1.0)
    a = est(logits, scorer, tau=0.25)
    b = G.get("soft", tau=0.25)(logits, scorer)
    assert torch.equal(a.scores, b.scores) and a.stats["tau"] == 0.25
    with pytest.raises(TypeError, match="tau"):
        G.get("reinforce")(logits, scorer, tau=0.5)
    assert G.get("st").uses_tau and not G.get("reinforce").uses_tau


@pytest.mark.parametrize("name", METHODS)
def test_seeded_reproducibility(name, scorer):
    torch.manual_seed(3)
    base = torch.randn(32, S, V)
    targets = torch.randint(-1, V, (32, S))
    results = []
    drew = []
    for _ in range(2):
        logits = base.clone().requires_grad_(True)
        rng = torch.Generator().manual_seed(123)
        out = run(name, logits, scorer, targets=targets, generator=rng)
        out.loss.backward()
        results.append((out.samples, out.scores, logits.grad))
        drew.append(not torch.equal(rng.get_state(), torch.Generator().manual_seed(123).get_state()))
    for a, b in zip(*results):
        assert torch.equal(a, b), name
    assert drew[0] == drew[1]
    if drew[0]:   # a method that draws (all but the deterministic soft, st and weighted-ce): seeds matter
        logits = base.clone().requires_grad_(True)
        other = run(name, logits, scorer, seed=124, targets=targets)
        assert not torch.equal(other.samples, results[0][0]), name


def test_input_validation(scorer):
    logits = torch.randn(2, S, V)
    with pytest.raises(ValueError, match="shape"):
        G.get("st")(logits, scorer, mask=torch.ones(S, V + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid category"):
        G.get("st")(logits, scorer, mask=torch.zeros(S, V, dtype=torch.bool))
    with pytest.raises(ValueError, match="fixed"):
        G.get("st")(logits, scorer, fixed=torch.full((2, S), V))
    with pytest.raises(ValueError, match="masked"):
        G.get("st")(logits, scorer, fixed=torch.tensor([3, -1, -1]), mask=G.vocab_mask([2, 4, 4]))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        G.get("st")(logits, lambda x: scorer(x)[:, None])
    with pytest.raises(TypeError, match="unexpected"):
        G.get("st")(logits, scorer, targets=None)
