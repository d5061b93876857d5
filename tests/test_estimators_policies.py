"""Every estimator through every generator form, against exact gradients by enumeration.

The same estimator objects that train the factorized generator train the autoregressive and pointer
generators (through `policy_of`), in both table layouts ("padded", "ragged"). On tiny spaces (3 slots x 3 categories or items) the exact
gradient of E[f] w.r.t. the generator's *parameters* is known by enumerating every row. Estimates
come in G independent groups, each a batch of C copies of one context (the loss is a batch mean, so
a group's gradient is the mean of C independent estimates); the group means give a mean and a
standard error per parameter, checked with the Bonferroni z-test of test_gradients_unbiased.py.
"""

import math
from statistics import NormalDist

import pytest
import torch

import choicegrad.estimators as E
from choicegrad.bench.toys import RandomMLPScorer
from choicegrad.generators import AutoregressiveGenerator, FactorizedGenerator, GeneratorConfig, PointerGenerator
from choicegrad.generators.context import ItemContext, TableContext
from choicegrad.generators.policy import SequentialPolicy, policy_of

S, V = 3, 3
GROUPS, COPIES = 40, 500
ALPHA = 1e-4


def make(kind: str, seed: int = 0):
    """(generator, one context, score_fn (N, S, V) -> (N,)) for a tiny space; kind "X-ragged": X in the
    ragged layout."""
    torch.manual_seed(seed)
    if kind.startswith("pointer"):   # "pointer", "pointer-sequential", "pointer-distinct", "pointer-items"
        form = kind.partition("-")[2]
        # "items": the item runs' form, sequential with a light set-attention layer over the items
        config = GeneratorConfig(kind="pointer", hidden=[8], context_dim=2, heads=1,
                                 attention_layers=int(form == "items"), attention_width=4 if form == "items" else None)
        gen = PointerGenerator(S, 2, config, [2], 1, sequential=form in ("sequential", "items"),
                               distinct=form == "distinct")
        ctx = ItemContext(items=torch.randn(1, V, 2), mask=torch.ones(1, V, dtype=torch.bool),
                          cat=torch.tensor([[1]]), num=torch.randn(1, 1))
        with torch.no_grad():   # smaller steps than below: the attention saturates the pointer's logits
            for p in gen.parameters():
                p.add_(0.15 * torch.randn_like(p))
        return gen, ctx, RandomMLPScorer(S, V, hidden=16, seed=seed + 1, scale=2.0)
    kind, _, layout = kind.partition("-")
    config = GeneratorConfig(kind=kind, hidden=[8], context_dim=2, heads=1, attention_layers=0, layout=layout or None)
    cls = AutoregressiveGenerator if kind == "autoregressive" else FactorizedGenerator
    gen = cls([V] * S, [2], 0, config)
    ctx = TableContext(torch.tensor([[1]]), torch.zeros(1, 0))
    with torch.no_grad():   # move away from the near-uniform start so the gradient has structure
        for p in gen.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return gen, ctx, RandomMLPScorer(S, V, hidden=16, seed=seed + 1, scale=2.0)


def params(gen):
    return [p for p in gen.parameters() if p.requires_grad]


def flat_grad(gen, loss) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params(gen), allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params(gen), grads)])


def exact_grad(gen, ctx, f) -> torch.Tensor:
    """Gradient of -E[f] w.r.t. the generator's parameters, by enumeration of all V**S rows."""
    return flat_grad(gen, -E.exact_objective(policy_of(gen, ctx), f).sum())


def group_grads(gen, ctx, f, est, groups=GROUPS, copies=COPIES, seed=0, **extra) -> torch.Tensor:
    """(groups, P) gradient estimates, each the mean over `copies` independent estimates."""
    rng = torch.Generator().manual_seed(seed)
    batch = ctx.repeat_interleave(copies)
    return torch.stack([flat_grad(gen, est(policy_of(gen, batch), f, generator=rng, **extra).loss)
                        for _ in range(groups)])


def z_test(grads: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Per-parameter |mean - exact| / SE beyond the Bonferroni z (bool (P,))."""
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(grads.shape[0])
    z = NormalDist().inv_cdf(1 - ALPHA / (2 * exact.numel()))
    return (mean - exact).abs() > z * se + 1e-6


KINDS = ["autoregressive", "pointer", "pointer-sequential", "pointer-distinct", "pointer-items", "factorized",
         "autoregressive-ragged", "factorized-ragged"]
DRAWN_KINDS = ["autoregressive", "pointer", "pointer-sequential", "pointer-distinct", "pointer-items",
               "autoregressive-ragged"]
SEQUENTIAL_KINDS = ["autoregressive", "autoregressive-ragged", "pointer-sequential", "pointer-distinct", "pointer-items"]


@pytest.mark.parametrize("kind", KINDS)
def test_exact_objective_sums_to_one_and_matches_logits(kind):
    gen, ctx, f = make(kind)
    policy = policy_of(gen, ctx)
    total = E.exact_objective(policy, lambda x: torch.ones(x.shape[0]))
    assert torch.allclose(total, torch.ones(1), atol=1e-5)
    if kind in ("pointer", "factorized", "factorized-ragged"):   # independent slots: the same as enumerating the logits directly
        value, _ = E.exact_expectation(gen.logits(ctx), f)
        assert torch.allclose(E.exact_objective(policy, f), value, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("baseline,k", [("none", 2), ("mean", 2), ("rloo", 4), ("greedy", 2)])
def test_reinforce_unbiased_for_every_generator(kind, baseline, k):
    gen, ctx, f = make(kind, seed=1)
    exact = exact_grad(gen, ctx, f)
    grads = group_grads(gen, ctx, f, E.get("reinforce", k=k, baseline=baseline), seed=3)
    bad = z_test(grads, exact)
    assert not bool(bad.any()), f"{int(bad.sum())} of {exact.numel()} parameters biased"


@pytest.mark.parametrize("kind", DRAWN_KINDS)
def test_check_has_power_on_generators(kind):
    """The same test rejects a scaled reinforce and the (biased) st-gumbel on generator parameters."""
    gen, ctx, f = make(kind, seed=1)
    exact = exact_grad(gen, ctx, f)
    grads = group_grads(gen, ctx, f, E.get("reinforce", k=4, baseline="rloo"), seed=3)
    assert bool(z_test(0.8 * grads, exact).any())
    grads = group_grads(gen, ctx, f, E.get("st-gumbel", tau=1.0), seed=3)
    assert bool(z_test(grads, exact).any())


def test_entropy_estimate_is_exact_in_expectation_for_sequential_policy():
    """SequentialPolicy.entropy on rows drawn from it is an unbiased estimate of the row entropy."""
    gen, ctx, _ = make("autoregressive", seed=2)
    policy = policy_of(gen, ctx)
    rows = E.enumerate_rows(S, V)[None]                                    # (1, R, S)
    logp = policy.log_prob(rows)
    exact = -(logp.exp() * logp).sum()
    draws = policy_of(gen, ctx.repeat_interleave(1)).sample(20_000, torch.Generator().manual_seed(0))
    est = policy.entropy(draws)
    assert abs(float(est[0].detach()) - float(exact.detach())) < 0.02


@pytest.mark.parametrize("kind", SEQUENTIAL_KINDS)
@pytest.mark.parametrize("name", ["st-gumbel", "gumbel-rao", "reinmax"])
def test_pathwise_forward_rows_are_exact_draws_of_the_sequential_policy(name, kind):
    """The hard rows behind st-gumbel / gumbel-rao / reinmax through an autoregressive generator are
    draws from the generator itself (frequencies match the enumerated probabilities)."""
    gen, ctx, f = make(kind, seed=4)
    batch = ctx.repeat_interleave(20_000)
    out = E.get(name)(policy_of(gen, batch), f, generator=torch.Generator().manual_seed(1))
    rows = E.enumerate_rows(S, V)
    p = policy_of(gen, ctx).log_prob(rows[None])[0].exp().detach()         # (R,)
    codes = (out.sample * torch.tensor([V * V, V, 1])).sum(-1)
    freq = torch.bincount(codes, minlength=len(rows)).float() / len(codes)
    assert float((freq - p).abs().max()) < 0.015
    assert torch.equal(out.samples[:, 0], out.sample)


@pytest.mark.parametrize("kind", SEQUENTIAL_KINDS)
def test_st_forward_is_the_greedy_row_of_the_sequential_policy(kind):
    gen, ctx, f = make(kind, seed=5)
    out = E.get("st")(policy_of(gen, ctx), f)
    assert torch.equal(out.sample, gen.greedy(ctx))


@pytest.mark.parametrize("kind", ["autoregressive", "autoregressive-ragged"])
def test_gumbel_rao_k1_matches_st_gumbel_in_expectation_through_the_prefix(kind):
    """Gumbel-Rao with one conditional draw has ST-Gumbel's expectation (Paulus et al. 2020), also
    when each choice feeds the next slot of an autoregressive generator."""
    gen, ctx, f = make(kind, seed=6)
    a = group_grads(gen, ctx, f, E.get("st-gumbel", tau=0.7), seed=7)
    b = group_grads(gen, ctx, f, E.get("gumbel-rao", tau=0.7, k=1), seed=8)
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    z = NormalDist().inv_cdf(1 - ALPHA / (2 * a.shape[1]))
    assert not bool(((a.mean(0) - b.mean(0)).abs() > z * se + 1e-6).any())


@pytest.mark.parametrize("kind", DRAWN_KINDS)
def test_raml_gradient_is_weighted_likelihood_of_its_candidates(kind):
    """raml's loss is -sum_m softmax(f / T)_m log p(candidate_m) with the generator's log-probability."""
    gen, ctx, f = make(kind, seed=9)
    batch = ctx.repeat_interleave(6)
    out = E.get("raml", m=5, temperature=0.3)(policy_of(gen, batch), f, generator=torch.Generator().manual_seed(2))
    w = torch.softmax(out.scores / 0.3, 1)
    lp = policy_of(gen, batch).log_prob(out.samples)
    assert torch.allclose(flat_grad(gen, out.loss), flat_grad(gen, -(w * lp).sum(1).mean()), atol=1e-6)


def test_weighted_ce_leaves_missing_and_fixed_slots_out_for_sequential_policy():
    gen, ctx, f = make("autoregressive", seed=10)
    batch = ctx.repeat_interleave(4)
    targets = torch.tensor([[0, -1, 2], [1, 1, -1], [2, 0, 1], [-1, 2, 2]])
    policy = SequentialPolicy(gen, batch, fixed=torch.tensor([-1, -1, 1]))
    out = E.get("weighted-ce", weighting="uniform")(policy, f, targets=targets, target_scores=torch.ones(4))
    keep = (targets >= 0) & torch.tensor([True, True, False])
    lp = policy.log_prob(targets[:, None], valid=keep[:, None])[:, 0]
    assert torch.allclose(flat_grad(gen, out.loss), flat_grad(gen, -lp.mean()), atol=1e-6)
    assert bool((out.sample[:, 2] == 1).all()) and bool((out.sample >= 0).all())


class ToyAligner:
    """An Aligner's one method the training step uses: rows (N, S) long or (N, S, V) float -> (N, 4) unit vectors."""

    def __init__(self, vocab: int):
        self.vocab, self.w = vocab, torch.randn(S * vocab, 4, generator=torch.Generator().manual_seed(5))

    def embed(self, x, cat=None, num=None):
        hot = x.float() if x.is_floating_point() else torch.nn.functional.one_hot(x, self.vocab).float()
        return torch.nn.functional.normalize(hot.flatten(1) @ self.w, dim=-1)


@pytest.mark.parametrize("name", E.available())
def test_every_estimator_trains_a_generator_with_what_it_declares(name):
    """TrainingStep gives each registered estimator what its class declares (data rows, an aligner's
    references, its own modules) with no branch on its name; fit_generator trains it
    and draws from its own torch.Generator only: the global RNG is left as it was."""
    from choicegrad.bench.tasks import PlantedTask
    from choicegrad.data.table import load_table
    from choicegrad.training.contexts import TableContexts
    from choicegrad.training.loop import GeneratorFit, fit_generator

    task = PlantedTask(slots=S, vocab=V, contexts=2, modes=2, seed=1)
    data = load_table(task.table(120, seed=0), "s?", "y", "ctx")
    cls = E.get_class(name)
    aligner = ToyAligner(V) if cls.needs_aligner else None
    torch.manual_seed(0)
    gen = AutoregressiveGenerator([V] * S, [2], 0, GeneratorConfig(hidden=[8], context_dim=4))
    before = [p.detach().clone() for p in gen.parameters()]
    fit = GeneratorFit(method=name, steps=4, batch_size=4, samples=3, warm_start_steps=2, val_every=2, val_samples=4,
                       seed=3, keep="last")
    state = torch.get_rng_state()
    result = fit_generator(gen, task.objective(), TableContexts(data), fit, progress=False, aligner=aligner)
    assert torch.equal(torch.get_rng_state(), state), name
    assert any(not torch.equal(a, b) for a, b in zip(before, result.generator.parameters())), name
    assert result.history and all(math.isfinite(r["loss"]) for r in result.history if r.get("phase") == "train")
