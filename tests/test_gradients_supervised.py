"""weighted-ce and raml: masking of missing slots, weightings, candidate generation, weight concentration."""

import pytest
import torch
import torch.nn.functional as F

import choicegrad.estimators as G
from choicegrad.bench.toys import RandomMLPScorer



S, V = 3, 4


@pytest.fixture(scope="module")
def scorer():
    return RandomMLPScorer(S, V, hidden=8, seed=5, scale=3.0)


def test_weighted_ce_masks_missing_slots(scorer):
    torch.manual_seed(0)
    logits = torch.randn(4, S, V, requires_grad=True)
    targets = torch.tensor([[0, -1, 2], [1, 1, -1], [-1, -1, -1], [3, 2, 1]])
    scores = torch.tensor([1.0, 2.0, 4.0, 0.5])
    out = G.get("weighted-ce", weighting="inverse")(logits, scorer, targets=targets, target_scores=scores)
    out.loss.backward()
    missing = targets < 0
    assert bool((logits.grad[missing] == 0).all())
    assert bool((logits.grad[~missing].abs().sum(-1) > 0).all())
    # value: -mean_b w_b * sum_{observed s} log p_bs(target), with w = (1/score) / mean(1/score)
    w = (1 / scores) / (1 / scores).mean()
    logp = torch.log_softmax(logits.detach(), -1)
    ll = torch.stack([sum((logp[b, s, targets[b, s]] for s in range(S) if targets[b, s] >= 0),
                          torch.tensor(0.0)) for b in range(4)])
    assert torch.allclose(out.loss, -(w * ll).mean())
    assert torch.allclose(out.weights[:, 0], w)
    assert out.scorer_calls == 0


def test_weighted_ce_weightings():
    s = torch.tensor([-2.0, 0.0, 3.0, 1.0])
    w = G.supervised.row_weights(s, "softmax", 0.5)
    assert torch.allclose(w, 4 * torch.softmax(s / 0.5, 0))
    assert torch.allclose(G.supervised.row_weights(s, "rank", 1.0), torch.tensor([1.0, 2.0, 4.0, 3.0]) / 2.5)
    assert torch.allclose(G.supervised.row_weights(s, "uniform", 1.0), torch.ones(4))
    with pytest.raises(ValueError, match="positive"):
        G.supervised.row_weights(s, "inverse", 1.0)


def test_weighted_ce_scores_targets_when_not_given(scorer):
    torch.manual_seed(1)
    logits = torch.randn(5, S, V, requires_grad=True)
    targets = torch.randint(0, V, (5, S))
    targets[0, 2] = -1
    out = G.get("weighted-ce")(logits, scorer, targets=targets)
    filled = targets.clone()
    filled[0, 2] = logits[0, 2].argmax()
    assert torch.equal(out.sample, filled)
    assert torch.allclose(out.scores[:, 0], scorer(F.one_hot(filled, V).float()))
    assert out.scorer_calls == 5
    with pytest.raises(ValueError, match="targets"):
        G.get("weighted-ce")(logits, scorer)
    with pytest.raises(ValueError, match="target_scores"):
        G.get("weighted-ce")(logits, scorer, targets=targets, target_scores=torch.ones(3))
    with pytest.raises(ValueError, match="masked"):
        G.get("weighted-ce")(logits, scorer, targets=torch.full((5, S), 3), mask=G.vocab_mask([3, 4, 4]))


def test_raml_weights_concentrate_on_best_edit_as_temperature_drops(scorer):
    torch.manual_seed(2)
    B, M = 64, 16
    logits = torch.randn(B, S, V)
    targets = torch.randint(0, V, (B, S))
    mean_mass = []
    for temp in [1.0, 0.1, 0.01, 1e-4]:
        out = G.get("raml", m=M, temperature=temp, edit_prob=0.5)(
            logits, scorer, targets=targets, generator=torch.Generator().manual_seed(0))
        best_rows = (out.samples == out.sample[:, None, :]).all(-1)    # duplicates of the best edit
        mass = (out.weights * best_rows).sum(1)
        mean_mass.append(float(mass.mean()))
        assert torch.equal(out.weights.argmax(1), out.scores.argmax(1))
    assert all(a < b for a, b in zip(mean_mass, mean_mass[1:])), mean_mass
    assert bool((mass > 0.999).all()), float(mass.min())
    out = G.get("raml", m=M, temperature=1e4)(logits, scorer, targets=targets)
    assert float(out.weights.max()) < 1.01 / M


def test_raml_candidates():
    f = lambda x: x.sum((1, 2))  # noqa: E731
    B, M = 200, 8
    logits = torch.zeros(B, S, V)
    targets = torch.tensor([1, -1, 2]).expand(B, S)
    mask = G.vocab_mask([4, 3, 4])
    out = G.get("raml", m=M, edit_prob=0.0)(logits, f, targets=targets, mask=mask,
                                            generator=torch.Generator().manual_seed(0))
    assert bool((out.samples[..., 0] == 1).all()) and bool((out.samples[..., 2] == 2).all())
    freq = F.one_hot(out.samples[..., 1].reshape(-1), V).float().mean(0)   # missing slot: uniform on 3
    assert freq[3] == 0 and bool(((freq[:3] - 1 / 3).abs() < 0.03).all()), freq
    out = G.get("raml", m=M, edit_prob=1.0)(logits, f, targets=targets, mask=mask,
                                            generator=torch.Generator().manual_seed(0))
    changed = (out.samples[..., 0] != 1).float().mean()
    assert abs(float(changed) - 0.75) < 0.03         # resampled uniformly over 4, 1/4 stay
    # without targets the candidates are model samples
    logits = torch.tensor([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 0, 4.0]]).expand(B, S, V)
    out = G.get("raml", m=M)(logits, f, generator=torch.Generator().manual_seed(0))
    p = torch.softmax(logits[0], -1)
    freq = F.one_hot(out.samples.reshape(-1, S), V).float().mean(0)
    assert bool(((freq - p).abs() < 0.02).all())


def test_raml_gradient_is_weighted_ce_of_candidates(scorer):
    torch.manual_seed(3)
    B, M = 6, 5
    logits = torch.randn(B, S, V, requires_grad=True)
    out = G.get("raml", m=M, temperature=0.3)(logits, scorer, generator=torch.Generator().manual_seed(4))
    out.loss.backward()
    L2 = logits.detach().clone().requires_grad_(True)
    logp = torch.log_softmax(L2, -1)
    ll = logp.unsqueeze(1).expand(B, M, S, V).gather(-1, out.samples[..., None])[..., 0].sum(-1)
    w = torch.softmax(out.scores / 0.3, 1)
    (-(w * ll).sum(1).mean()).backward()
    assert torch.allclose(logits.grad, L2.grad, atol=1e-6)
