"""The item scorer: slates of item attribute vectors -> score, fitted from a log; cold start, gradients,
persistence, the ensemble's pessimism and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from choicegrad.data.context import ContextEncoder
from choicegrad.data.space import ChoiceSpace, Slot
from choicegrad.errors import InputError
from choicegrad.metrics import spearman
from choicegrad.scorer.fit import ScorerFit
from choicegrad.scorer.items import ItemScorer, ItemScorerConfig, fit_item_scorer
from choicegrad.scorer.model import Scorer, ScorerConfig

S, D, M, R = 3, 4, 300, 3000
SLOTS = ["first", "second", "third"]


class Slates:
    """A known slate function: score = sum_s a_{u,s} . x_s + x_0 . B . x_1 + 0.5 age x_2[0] + noise, for
    2 users u with their own weights a and a numeric context age."""

    def __init__(self, seed: int = 0):
        rng = self.rng = np.random.default_rng(seed)
        self.a = rng.normal(size=(2, S, D))
        self.b = rng.normal(size=(D, D)) * 0.5

    def truth(self, x: np.ndarray, user: np.ndarray, age: np.ndarray) -> np.ndarray:
        """(N,) noiseless score of slates x (N, S, D)."""
        return (np.einsum("nsd,nsd->n", x, self.a[user]) + np.einsum("nd,de,ne->n", x[:, 0], self.b, x[:, 1])
                + 0.5 * age * x[:, 2, 0])

    def contexts(self, n: int) -> pd.DataFrame:
        return pd.DataFrame({"user": self.rng.choice(["ann", "bob"], size=n), "age": self.rng.normal(size=n)})


def user_codes(frame: pd.DataFrame) -> np.ndarray:
    return (frame["user"] == "bob").to_numpy().astype(int)


@pytest.fixture(scope="module")
def fitted():
    """(task, catalogue vectors, context encoder, fit result) of a 3,000-row log over 300 items."""
    task = Slates()
    vectors = task.rng.normal(size=(M, D)).astype(np.float32)
    idx = task.rng.integers(0, M, size=(R, S))
    frame = task.contexts(R)
    y = task.truth(vectors[idx], user_codes(frame), frame["age"].to_numpy()) + 0.1 * task.rng.normal(size=R)
    context = ContextEncoder.fit(frame, [("user", None), ("age", None)])
    cat, num = context.encode(frame)
    # 40 epochs of 19 steps (the automatic count early-stops near there too, in about twice the time)
    result = fit_item_scorer(torch.from_numpy(vectors), torch.from_numpy(idx), cat, num, torch.from_numpy(y),
                             SLOTS, context, "y", ScorerFit(epochs=40), progress=False)
    return task, torch.from_numpy(vectors), context, result


def test_fits_known_slate_function_and_ranks_unseen_items(fitted):
    task, _, context, result = fitted
    assert result.metrics["test"]["spearman"] >= 0.9
    assert result.metrics["test"]["spearman_per_context"] >= 0.9
    assert result.metrics["validation"]["n"] == 300 and result.metrics["test"]["n"] == 300
    assert result.seconds < 30 and result.history
    # cold start: slates of items drawn fresh, never in the log, scored from their attributes alone
    frame = task.contexts(1000)
    new = task.rng.normal(size=(1000, S, D)).astype(np.float32)
    cat, num = context.encode(frame)
    pred = result.scorer.predict(torch.from_numpy(new), cat, num)
    assert pred.dtype == torch.float64 and bool(torch.isfinite(pred).all())
    assert spearman(task.truth(new, user_codes(frame), frame["age"].to_numpy()), pred.numpy()) >= 0.85


def test_gradients_flow_to_a_relaxed_selection_and_one_hot_equals_hard(fitted):
    _, vectors, _, result = fitted
    scorer = result.scorer
    idx = torch.randint(0, M, (64, S), generator=torch.Generator().manual_seed(1))
    cat, num = torch.randint(0, 2, (64, 1)), torch.randn(64, 1)
    hard = scorer(vectors[idx], cat, num)
    x = torch.nn.functional.one_hot(idx, M).float().requires_grad_()
    relaxed = scorer(x @ vectors, cat, num)
    torch.testing.assert_close(relaxed, hard, rtol=1e-5, atol=1e-5)
    # forward is in working units, the standardised score: predict and to_score give the score's units
    np.testing.assert_allclose(scorer.predict(vectors[idx], cat, num).numpy(), scorer.to_score(hard), rtol=1e-6)
    np.testing.assert_allclose(scorer.to_score(hard), hard.detach().double().numpy() * scorer.unit + scorer.offset)
    assert (float(scorer.y_mean), float(scorer.y_std)) == (0.0, 1.0) and scorer.unit > 1
    (grad,) = torch.autograd.grad(relaxed.sum(), x)
    assert grad.shape == (64, S, M) and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    # a soft selection's logits get gradients too, and the item vectors themselves
    logits = torch.randn(64, S, M, requires_grad=True)
    items = vectors.clone().requires_grad_()
    scorer(torch.softmax(logits, -1) @ items, cat, num).sum().backward()
    assert float(logits.grad.abs().sum()) > 0 and float(items.grad.abs().sum()) > 0


def test_save_load_round_trip_gives_identical_predictions(fitted, tmp_path):
    _, vectors, context, result = fitted
    scorer = result.scorer
    scorer.save(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "scorer.json").read_text())
    assert meta["kind"] == "choicegrad.ItemScorer" and meta["slots"] == SLOTS and meta["dim"] == D
    loaded = ItemScorer.load(tmp_path / "run")
    assert (loaded.slots, loaded.dim, loaded.context, loaded.score_name, loaded.config) == (SLOTS, D, context, "y",
                                                                                            scorer.config)
    assert (loaded.offset, loaded.unit, loaded.beta, len(loaded.members)) == (scorer.offset, scorer.unit, 0.0, 1)
    idx = torch.randint(0, M, (500, S))
    cat, num = torch.randint(0, 2, (500, 1)), torch.randn(500, 1)
    assert torch.equal(loaded.predict(vectors[idx], cat, num), scorer.predict(vectors[idx], cat, num))


def test_load_refuses_other_checkpoints_and_broken_json(fitted, tmp_path):
    space = ChoiceSpace(slots=[Slot(name="a", categories=["x", "y"])])
    Scorer(space, ContextEncoder(), "y", ScorerConfig(hidden=[8])).save(tmp_path / "table")
    with pytest.raises(InputError, match="not a choicegrad item scorer") as err:
        ItemScorer.load(tmp_path / "table")
    assert err.value.source == str(tmp_path / "table" / "scorer.json")

    run = tmp_path / "run"
    fitted[3].scorer.save(run)
    good = (run / "scorer.json").read_text()
    broken = {"{not json": "not valid JSON", json.dumps({**json.loads(good), "dim": None}): "dim",
              json.dumps({k: v for k, v in json.loads(good).items() if k != "context"}): "context",
              json.dumps({**json.loads(good), "dim": D + 1}): "belong together",
              json.dumps({**json.loads(good), "k": 2}): "2 ensemble members",
              json.dumps({**json.loads(good), "config": {"item_dim": 7}}): "belong together"}
    for text, says in broken.items():
        (run / "scorer.json").write_text(text)
        with pytest.raises(InputError, match=says) as err:
            ItemScorer.load(run)
        assert err.value.source == str(run / "scorer.json")


def test_ensemble_score_is_mean_minus_beta_std():
    context = ContextEncoder.fit(pd.DataFrame({"user": ["ann", "bob"]}), [("user", None)])
    torch.manual_seed(0)
    scorer = ItemScorer(SLOTS, D, context, "y", ItemScorerConfig(hidden=[16]), k=3, beta=0.7, y_mean=2.0, y_std=3.0)
    sel, cat, num = torch.randn(50, S, D), torch.randint(0, 2, (50, 1)), torch.zeros(50, 0)
    with torch.no_grad():
        members = scorer.member_scores(sel, cat, num)
    assert members.shape == (3, 50) and float(members.std(0).min()) > 0     # members start apart
    torch.testing.assert_close(scorer(sel, cat, num), members.mean(0) - 0.7 * members.std(0))
    torch.testing.assert_close(scorer(sel, cat, num, beta=0.0), members.mean(0))
    np.testing.assert_allclose(scorer.predict(sel, cat, num).numpy(), scorer.to_score(scorer(sel, cat, num)), rtol=1e-6)


def test_fitted_ensemble_members_differ_and_keep_beta():
    task = Slates(1)
    vectors = torch.from_numpy(task.rng.normal(size=(40, D)).astype(np.float32))
    idx = torch.from_numpy(task.rng.integers(0, 40, size=(200, S)))
    y = torch.from_numpy(task.truth(vectors[idx].numpy(), np.zeros(200, int), np.zeros(200)))
    result = fit_item_scorer(vectors, idx, torch.zeros(200, 0, dtype=torch.long), torch.zeros(200, 0), y, SLOTS,
                             ContextEncoder(), "y", ScorerFit(ensemble=3, beta=0.5, epochs=3),
                             ItemScorerConfig(hidden=[32]), progress=False)
    scorer = result.scorer
    assert scorer.beta == 0.5 and {h["member"] for h in result.history} == {0, 1, 2}
    with torch.no_grad():
        members = scorer.member_scores(vectors[idx], torch.zeros(200, 0, dtype=torch.long), torch.zeros(200, 0))
    assert float(members.std(0).min()) > 0
    assert "spearman_per_context" not in result.metrics["validation"]      # no context columns
    # a time limit: each member stops after its share of it (here: its first batch and epoch)
    timed = fit_item_scorer(vectors, idx, torch.zeros(200, 0, dtype=torch.long), torch.zeros(200, 0), y, SLOTS,
                            ContextEncoder(), "y", ScorerFit(ensemble=2, epochs=50, max_minutes=1e-9),
                            ItemScorerConfig(hidden=[32]), progress=False)
    assert [(h["member"], h["epoch"]) for h in timed.history] == [(0, 0), (1, 0)]


def test_a_timed_item_fit_ends_each_member_annealed(monkeypatch):
    """A fit whose time is too short for its epochs (a clock of 1 ms per batch) ends every member at
    the end of a shortened one-cycle schedule (fit to its pace), not cut mid-way; without a limit
    each member has the epochs' schedule."""
    import itertools
    from choicegrad.scorer import items as items_module
    task = Slates(2)
    vectors = torch.from_numpy(task.rng.normal(size=(40, D)).astype(np.float32))
    idx = torch.from_numpy(task.rng.integers(0, 40, size=(400, S)))
    y = torch.from_numpy(task.truth(vectors[idx].numpy(), np.zeros(400, int), np.zeros(400)))
    clock = itertools.count()
    monkeypatch.setattr(items_module._MemberTrainer, "elapsed", lambda self: next(clock) * 1e-3)
    made = []
    one_cycle = items_module.one_cycle
    monkeypatch.setattr(items_module, "one_cycle", lambda *a, **k: made.append(one_cycle(*a, **k)) or made[-1])
    no_context = (torch.zeros(400, 0, dtype=torch.long), torch.zeros(400, 0))
    base = dict(ensemble=2, epochs=200, batch_size=16, seed=0)
    fit_item_scorer(vectors, idx, *no_context, y, SLOTS, ContextEncoder(), "y", ScorerFit(**base, max_minutes=0.01),
                    ItemScorerConfig(hidden=[16]), progress=False)                    # 0.3 s a member
    finals = [s for i, s in enumerate(made) if i + 1 == len(made) or made[i + 1].optimizer is not s.optimizer]
    assert len(finals) == 2 and len(made) > 2
    for s in finals:
        assert s.last_epoch == s.total_steps < 200 * 20
    made.clear()
    fit_item_scorer(vectors, idx, *no_context, y, SLOTS, ContextEncoder(), "y", ScorerFit(**{**base, "epochs": 2}),
                    ItemScorerConfig(hidden=[16]), progress=False)
    assert len(made) == 2 and all(s.last_epoch == s.total_steps == 2 * 20 for s in made)


def test_scores_of_any_size_and_divergence(fitted):
    task, vectors, context, _ = fitted
    idx = torch.from_numpy(task.rng.integers(0, M, size=(300, S)))
    frame = task.contexts(300)
    cat, num = context.encode(frame)
    y = torch.from_numpy(task.truth(vectors[idx].numpy(), user_codes(frame), frame["age"].to_numpy()))
    small = ScorerFit(epochs=20)
    big = fit_item_scorer(vectors, idx, cat, num, 1e30 + 1e25 * y, SLOTS, context, "y", small, progress=False)
    assert big.scorer.unit == pytest.approx(1e25 * float(y.std()), rel=0.1)     # standardised: the training rows' std
    assert big.scorer.offset == pytest.approx(1e30, rel=1e-3)
    pred = big.scorer.predict(vectors[idx], cat, num)
    assert bool(torch.isfinite(pred).all()) and big.metrics["validation"]["spearman"] > 0.5
    with pytest.raises(InputError, match="diverged"):
        fit_item_scorer(vectors, idx, cat, num, y, SLOTS, context, "y", ScorerFit(lr=1e30, epochs=2), progress=False)


def test_bad_inputs_are_named(fitted):
    task, vectors, context, result = fitted
    idx = torch.from_numpy(task.rng.integers(0, M, size=(50, S)))
    cat, num = context.encode(task.contexts(50))
    y = torch.randn(50, dtype=torch.float64)
    bad_idx = idx.clone()
    bad_idx[3, 1] = M
    bad_vectors = vectors.clone()
    bad_vectors[7, 0] = float("nan")
    bad_y = y.clone()
    bad_y[0] = float("inf")
    cases = [((bad_idx, cat, num, y, vectors), "outside 0..299 at row 4"),
             ((idx[:, :2], cat, num, y, vectors), r"slots_idx: expected a \(50, 3\)"),
             ((idx, cat[:40], num, y, vectors), "ctx_cat: expected shape"),
             ((idx, cat, num, bad_y, vectors), "y: not a finite number at row 1"),
             ((idx, cat, num, y, bad_vectors), "not finite numbers, e.g. item 7"),
             ((idx[:5], cat[:5], num[:5], y[:5], vectors), "at least 10")]
    for (i, c, n, t, v), says in cases:
        with pytest.raises(InputError, match=says) as err:
            fit_item_scorer(v, i, c, n, t, SLOTS, context, "y", ScorerFit(epochs=1), progress=False)
        assert err.value.source == "item log"
    with pytest.raises(InputError, match=r"shape \(N, 3, 4\)"):
        result.scorer(torch.zeros(5, S, D + 1), cat[:5], num[:5])
