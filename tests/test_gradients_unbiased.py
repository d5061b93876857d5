"""Unbiased estimators (reinforce, every baseline) against the exact gradient by enumeration.

Statistical check: N independent estimates of the gradient of -E[f] are obtained in one call by
repeating the logits N times (each row's gradient is N * logits.grad[row], the loss being a batch mean).
Per coordinate we require |mean - exact| <= z * SE + 1e-6, where z is the Bonferroni-corrected normal
quantile for a family-wise false-alarm rate ALPHA over the S*V coordinates of one test. The runs are
seeded, so the outcome is deterministic; the z-level says how unlikely a failure is for a correct
estimator on a fresh seed. `test_check_has_power` shows the same check rejects biased estimators.
"""

import itertools
import math
from statistics import NormalDist

import pytest
import torch

import choicegrad.estimators as G
from choicegrad.bench.toys import RandomMLPScorer



ALPHA = 1e-4
N = 20_000


def z_level(num_coords: int, alpha: float = ALPHA) -> float:
    """Two-sided Bonferroni z: P(any |Z_i| > z) <= alpha over num_coords normal coordinates."""
    return NormalDist().inv_cdf(1 - alpha / (2 * num_coords))


def setup_space(S, V, seed, sizes=None):
    torch.manual_seed(seed)
    f = RandomMLPScorer(S, V, hidden=16, seed=seed + 1, scale=2.0)
    logits = torch.randn(1, S, V)
    mask = None if sizes is None else G.vocab_mask(sizes, V)
    return f, logits, mask


def per_row_grads(est, logits, f, mask=None, n=N, seed=0, **extra):
    """(n, S, V) independent estimates of the gradient of -E[f] for the single context `logits`."""
    L = logits.repeat(n, 1, 1).requires_grad_(True)
    out = est(L, f, mask=mask, generator=torch.Generator().manual_seed(seed), **extra)
    out.loss.backward()
    return L.grad * n


def assert_unbiased(grads, exact, mask=None):
    """Per-coordinate z-test of the mean of `grads` (n, S, V) against `exact` (S, V)."""
    n = grads.shape[0]
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(n)
    coords = int(exact.numel() if mask is None else mask.sum())
    z = z_level(coords)
    err = (mean - exact).abs()
    bad = err > z * se + 1e-6
    assert not bool(bad.any()), (f"biased beyond z={z:.2f}: max |err|/se = "
                                 f"{float((err / se.clamp_min(1e-12)).max()):.2f}\nmean={mean}\nexact={exact}")


def brute_force_gradient(logits, f):
    """Independent enumeration with a Python loop over rows (tiny spaces only): grad of E[f]."""
    L = logits.detach().clone().requires_grad_(True)
    _, S, V = L.shape
    p = torch.softmax(L[0], -1)
    total = 0.0
    for row in itertools.product(range(V), repeat=S):
        x = torch.nn.functional.one_hot(torch.tensor(row), V).float()[None]
        prob = torch.stack([p[s, row[s]] for s in range(S)]).prod()
        total = total + prob * f(x)[0]
    (g,) = torch.autograd.grad(total, L)
    return total.detach(), g[0]


def test_exact_expectation_matches_brute_force():
    f, logits, _ = setup_space(3, 4, seed=3)
    value, grad = G.exact_expectation(logits, f)
    bf_value, bf_grad = brute_force_gradient(logits, f)
    assert torch.allclose(value[0], bf_value, atol=1e-5)
    assert torch.allclose(grad[0], bf_grad, atol=1e-5)


def test_exact_expectation_respects_mask_and_fixed():
    f, logits, _ = setup_space(3, 4, seed=4)
    mask = G.vocab_mask([2, 3, 4])
    fixed = torch.tensor([[-1, 2, -1]])
    _, grad = G.exact_expectation(logits, f, mask=mask, fixed=fixed)
    assert bool((grad[0][~mask] == 0).all())
    assert bool((grad[0, 1] == 0).all())
    # same as the unfixed expectation with slot 1 pinned by a huge logit
    pinned = logits.clone()
    pinned[0, 1] = -1e4
    pinned[0, 1, 2] = 1e4
    _, grad2 = G.exact_expectation(pinned, f, mask=mask)
    assert torch.allclose(grad[0, [0, 2]], grad2[0, [0, 2]], atol=1e-5)


REINFORCE_CONFIGS = [
    dict(k=1, baseline="none"),
    dict(k=4, baseline="none"),
    dict(k=4, baseline="mean"),
    dict(k=1, baseline="mean"),
    dict(k=4, baseline="rloo"),
    dict(k=2, baseline="rloo"),
    dict(k=1, baseline="greedy"),
    dict(k=3, baseline="greedy"),
]


@pytest.mark.parametrize("hp", REINFORCE_CONFIGS, ids=lambda hp: f"{hp['baseline']}-k{hp['k']}")
def test_reinforce_unbiased(hp):
    f, logits, _ = setup_space(3, 4, seed=0)
    _, exact = G.exact_expectation(logits, f)
    grads = per_row_grads(G.get("reinforce", **hp), logits, f, seed=11)
    assert_unbiased(grads, -exact[0])


@pytest.mark.parametrize("baseline", ["none", "mean", "rloo", "greedy"])
def test_reinforce_unbiased_variable_vocab(baseline):
    """S=3 slots with vocab sizes 2, 3, 4 (padded to V=4): masked categories get exactly zero gradient."""
    f, logits, mask = setup_space(3, 4, seed=5, sizes=[2, 3, 4])
    _, exact = G.exact_expectation(logits, f, mask=mask)
    grads = per_row_grads(G.get("reinforce", k=3, baseline=baseline), logits, f, mask=mask, seed=12)
    assert bool((grads[:, ~mask] == 0).all())
    assert_unbiased(grads, -exact[0], mask=mask)


def test_reinforce_unbiased_two_slots():
    f, logits, _ = setup_space(2, 3, seed=7)
    _, exact = G.exact_expectation(logits, f)
    grads = per_row_grads(G.get("reinforce", k=4, baseline="rloo"), logits, f, seed=13)
    assert_unbiased(grads, -exact[0])


def test_baselines_reduce_variance():
    f, logits, _ = setup_space(3, 4, seed=0)
    var = {}
    for b in ["none", "rloo"]:
        g = per_row_grads(G.get("reinforce", k=4, baseline=b), logits, f, n=4000, seed=14)
        var[b] = float(g.var(0).sum())
    assert var["rloo"] < 0.5 * var["none"], var


def test_check_has_power():
    """The same z-test flags biased estimators (a scaled reinforce and st-gumbel) on this space."""
    f, logits, _ = setup_space(3, 4, seed=0)
    _, exact = G.exact_expectation(logits, f)
    g = per_row_grads(G.get("reinforce", k=4, baseline="rloo"), logits, f, seed=11)
    with pytest.raises(AssertionError):
        assert_unbiased(0.9 * g, -exact[0])
    g = per_row_grads(G.get("st-gumbel"), logits, f, seed=11)
    with pytest.raises(AssertionError):
        assert_unbiased(g, -exact[0])


def test_entropy_bonus_adds_exact_entropy_gradient():
    """With entropy=c the expected gradient is that of -(E[f] + c * H); checked exactly on the mean."""
    f, logits, _ = setup_space(3, 4, seed=0)
    c = 0.3
    _, exact = G.exact_expectation(logits, f)
    L = logits.clone().requires_grad_(True)
    p = torch.log_softmax(L, -1)
    (h_grad,) = torch.autograd.grad(-(p.exp() * p).sum(), L)
    g = per_row_grads(G.get("reinforce", k=4, baseline="rloo", entropy=c), logits, f, seed=15)
    assert_unbiased(g, -(exact[0] + c * h_grad[0]))
