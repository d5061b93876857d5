"""Pathwise (biased) estimators: each checked against its own known property.

Statistical comparisons use the Bonferroni z-level described in test_gradients_unbiased.py.
"""

import math
from statistics import NormalDist

import pytest
import torch
import torch.nn.functional as F

import choicegrad.estimators as G
from choicegrad.bench.toys import RandomMLPScorer



ALPHA = 1e-4
S, V = 3, 4


def z_level(num_coords, alpha=ALPHA):
    return NormalDist().inv_cdf(1 - alpha / (2 * num_coords))


@pytest.fixture(scope="module")
def space():
    torch.manual_seed(0)
    f = RandomMLPScorer(S, V, hidden=16, seed=1, scale=2.0)
    return f, torch.randn(1, S, V)


def score_grad_at(f, x):
    """d f / d x at rows x (B, S, V)."""
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    return g


def softmax_jvp(p, g):
    """J(p)^T g with J(p) = diag(p) - p p^T (symmetric), per slot: (..., V)."""
    return p * g - p * (p * g).sum(-1, keepdim=True)


def batch_grads(name, logits, f, n, seed, **hp):
    L = logits.repeat(n, 1, 1).requires_grad_(True)
    out = G.get(name, **hp)(L, f, generator=torch.Generator().manual_seed(seed))
    out.loss.backward()
    return L.grad * n, out


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_st_is_softmax_jacobian_at_argmax(space, tau):
    f, _ = space
    torch.manual_seed(1)
    logits = torch.randn(6, S, V, requires_grad=True)
    out = G.get("st", tau=tau)(logits, f)
    out.loss.backward()
    D = F.one_hot(logits.argmax(-1), V).float()
    assert torch.equal(out.sample, logits.argmax(-1))
    assert torch.allclose(out.scores[:, 0], f(D))
    p = torch.softmax(logits.detach() / tau, -1)
    expected = -softmax_jvp(p, score_grad_at(f, D)) / tau / logits.shape[0]
    assert torch.allclose(logits.grad, expected, atol=1e-6)


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_soft_is_autograd_of_softmax(space, tau):
    f, _ = space
    torch.manual_seed(2)
    logits = torch.randn(5, S, V, requires_grad=True)
    out = G.get("soft", tau=tau)(logits, f)
    out.loss.backward()
    L2 = logits.detach().clone().requires_grad_(True)
    (-f(torch.softmax(L2 / tau, -1)).mean()).backward()
    assert torch.allclose(logits.grad, L2.grad, atol=1e-7)
    assert torch.allclose(out.scores[:, 0], f(torch.softmax(logits.detach() / tau, -1)))


def test_soft_large_tau_is_near_uniform():
    x = G.select(torch.randn(4, S, V) * 3, "soft", tau=1e3)
    assert float((x - 1.0 / V).abs().max()) < 1e-2


def test_gumbel_small_tau_approaches_hard_samples():
    logits = torch.randn(1, S, V).repeat(5000, 1, 1)
    dist = {}
    for tau in [1.0, 0.5, 0.1, 0.05]:
        y = G.select(logits, "gumbel", tau, generator=torch.Generator().manual_seed(0))
        dist[tau] = float((y - F.one_hot(y.argmax(-1), V)).abs().sum(-1).mean())
    assert dist[1.0] > dist[0.5] > dist[0.1] > dist[0.05], dist
    assert dist[0.05] < 0.1, dist


@pytest.mark.parametrize("name", ["gumbel", "st-gumbel", "gumbel-rao", "reinmax", "reinforce"])
def test_samples_follow_softmax(space, name):
    """Hard samples of the stochastic methods are draws from softmax(logits) (per-slot frequencies)."""
    f, logits = space
    n = 20000
    out = G.get(name)(logits.repeat(n, 1, 1), f, generator=torch.Generator().manual_seed(4))
    x = out.samples.reshape(-1, S)
    freq = F.one_hot(x, V).float().mean(0)
    p = torch.softmax(logits[0], -1)
    se = (p * (1 - p) / x.shape[0]).sqrt()
    assert bool(((freq - p).abs() <= z_level(S * V) * se).all()), (freq, p)


def test_gumbel_rao_k1_matches_st_gumbel_in_expectation(space):
    f, logits = space
    n = 20000
    g_st, _ = batch_grads("st-gumbel", logits, f, n, seed=5, tau=0.7)
    z = z_level(S * V)
    for k, seed in [(1, 6), (10, 7)]:
        g_gr, _ = batch_grads("gumbel-rao", logits, f, n, seed=seed, tau=0.7, k=k)
        diff = (g_gr.mean(0) - g_st.mean(0)).abs()
        se = ((g_gr.var(0) + g_st.var(0)) / n).sqrt()
        assert bool((diff <= z * se + 1e-6).all()), (k, diff / se)


def test_gumbel_rao_more_draws_lower_variance(space):
    f, logits = space
    var = {}
    for k in [1, 10]:
        g, _ = batch_grads("gumbel-rao", logits, f, 8000, seed=8, k=k)
        var[k] = float(g.var(0).sum())
    assert var[10] < 0.85 * var[1], var


def test_conditional_gumbel_construction():
    """argmax(z) is the conditioning index, and with index ~ softmax(theta) the draws z are unconditional
    Gumbels: mean theta + Euler-gamma, variance pi^2 / 6 per category."""
    torch.manual_seed(3)
    theta = torch.randn(V) * 1.5
    n = 40000
    gen = torch.Generator().manual_seed(9)
    idx = G.gumbel_max(theta.repeat(n, 1), generator=gen)
    z = G.conditional_gumbel(theta.repeat(n, 1), idx, k=2, generator=gen)   # (2, n, V)
    assert torch.equal(z.argmax(-1), idx.expand(2, n))
    zz = z.reshape(-1, V)
    gamma, var = 0.5772156649, math.pi ** 2 / 6
    se_mean = math.sqrt(var / n)  # conservative: the two draws per index are dependent
    assert bool(((zz.mean(0) - theta - gamma).abs() <= z_level(V) * se_mean).all()), zz.mean(0) - theta
    # SE of a sample variance: var * sqrt((kurtosis - 1) / n), Gumbel kurtosis = 3 + 12/5
    se_var = var * math.sqrt((3 + 2.4 - 1) / n)
    assert bool(((zz.var(0) - var).abs() <= z_level(V) * se_var).all()), zz.var(0)


def reinmax_reference_closed_form(logits, D, g, tau):
    """ReinMax gradient of f w.r.t. logits written from the paper's formula:
    grad = 2 J(pi_1)^T g - 1/2 J(pi_0)^T g, pi_0 = softmax(theta), pi_1 = (D + softmax(theta/tau)) / 2."""
    pi0 = torch.softmax(logits, -1)
    pi1 = (D + torch.softmax(logits / tau, -1)) / 2
    return 2 * softmax_jvp(pi1, g) - 0.5 * softmax_jvp(pi0, g)


def reinmax_reference_algorithm(logits, D, f, tau):
    """The paper's Algorithm 2 line by line (own code), given the one-hot sample D."""
    theta = logits.detach().clone().requires_grad_(True)
    pi0 = theta.softmax(-1)
    pi1 = (D + (theta / tau).softmax(-1)) / 2
    pi1 = (torch.log(pi1).detach() - theta.detach() + theta).softmax(-1)
    pi2 = 2 * pi1 - 0.5 * pi0
    out = pi2 - pi2.detach() + D
    f(out).sum().backward()
    return theta.grad


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_reinmax_matches_reference(space, tau):
    f, _ = space
    torch.manual_seed(6)
    logits = torch.randn(64, S, V, requires_grad=True)
    out = G.get("reinmax", tau=tau)(logits, f, generator=torch.Generator().manual_seed(10))
    out.loss.backward()
    D = F.one_hot(out.sample, V).float()
    # the same seed gives the same draw
    out2 = G.get("reinmax", tau=tau)(logits.detach(), f, generator=torch.Generator().manual_seed(10))
    assert torch.equal(out.sample, out2.sample)
    B = logits.shape[0]
    ref1 = reinmax_reference_closed_form(logits.detach(), D, score_grad_at(f, D), tau)
    ref2 = reinmax_reference_algorithm(logits.detach(), D, f, tau)
    assert torch.allclose(ref1, ref2, atol=1e-5)
    assert torch.allclose(logits.grad, -ref1 / B, atol=1e-6)


def test_st_gumbel_forward_is_exact_one_hot(space):
    f, logits = space
    for name in ["st", "st-gumbel", "gumbel-rao", "reinmax"]:
        x = G.select(logits.repeat(100, 1, 1), name, 0.5, generator=torch.Generator().manual_seed(1))
        assert bool(((x == 0) | (x == 1)).all()) and bool((x.sum(-1) == 1).all()), name
