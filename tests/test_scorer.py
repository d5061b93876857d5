import math
import numpy as np
import pandas as pd
import pytest
import torch

from choicegrad import Scorer, ScorerConfig, ScorerFit, fit_scorer, load_table
from choicegrad.metrics import r2, regression_report, spearman


def small_scorer(potts_frame, k=1, beta=0.0, **config):
    t = load_table(potts_frame, "s?", "y", "ctx")
    torch.manual_seed(0)
    return t, Scorer(t.space, t.context, "y", ScorerConfig(embed_dim=4, hidden=[16], **config), k=k, beta=beta)


def one_hot(rows, V):
    return torch.nn.functional.one_hot(rows, V).float()


def test_soft_forward_equals_hard_forward_on_one_hot(potts_frame):
    t, s = small_scorer(potts_frame)
    hard = s(t.rows[:50], t.ctx_cat[:50], t.ctx_num[:50])
    soft = s(one_hot(t.rows[:50], t.space.max_size), t.ctx_cat[:50], t.ctx_num[:50])
    assert torch.allclose(hard, soft, atol=1e-5)


def test_soft_forward_with_variable_vocab_ignores_padding():
    frame = pd.DataFrame({"a": ["x", "y", "z", "x"], "b": ["p", "q", "p", "q"], "y": [1.0, 2.0, 3.0, 4.0]})
    t = load_table(frame, "a,b", "y")
    s = Scorer(t.space, t.context, "y", ScorerConfig(embed_dim=3, hidden=[8]))
    probs = one_hot(t.rows, 3)
    junk = probs.clone()
    junk[:, 1, 2] = 5.0  # weight on slot b's padding column must not matter
    assert torch.allclose(s(probs), s(junk))


def test_gradients_reach_input_probabilities(potts_frame):
    t, s = small_scorer(potts_frame)
    probs = torch.softmax(torch.randn(8, 3, 4), -1).requires_grad_()
    s(probs, t.ctx_cat[:8], t.ctx_num[:8]).sum().backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0
    # the row-sum direction aside, different categories get different gradients
    assert (probs.grad.std(-1) > 0).all()


def test_missing_slot_uses_missing_embedding(potts_frame):
    t, s = small_scorer(potts_frame, missing="embedding")
    rows = t.rows[:4].clone()
    rows[:, 1] = -1
    out = s(rows, t.ctx_cat[:4], t.ctx_num[:4])
    member = s.members[0]
    with torch.no_grad():
        member.table[1].add_(torch.randn_like(member.table[1]))  # slot 1's categories are unused
    assert torch.allclose(out, s(rows, t.ctx_cat[:4], t.ctx_num[:4]))
    with torch.no_grad():
        member.missing[1].add_(1.0)
    assert not torch.allclose(out, s(rows, t.ctx_cat[:4], t.ctx_num[:4]))


def test_latent_shape(potts_frame):
    t, s = small_scorer(potts_frame, k=2)
    assert s.latent(t.rows[:5], t.ctx_cat[:5], t.ctx_num[:5]).shape == (5, 32)


def test_pessimistic_ensemble_score(potts_frame):
    t, s = small_scorer(potts_frame, k=3, beta=0.5)
    x = (t.rows[:6], t.ctx_cat[:6], t.ctx_num[:6])
    members = s.member_scores(*x)
    assert torch.allclose(s(*x), members.mean(0) - 0.5 * members.std(0))
    assert torch.allclose(s(*x, beta=0.0), members.mean(0))


def test_fit_scorer_learns_and_is_reproducible(potts_frame):
    t = load_table(potts_frame, "s?", "y", "ctx")
    fit = ScorerFit(model=ScorerConfig(embed_dim=8, hidden=[64, 64]), epochs=60, batch_size=64, seed=3)
    a = fit_scorer(t, fit, progress=False)
    b = fit_scorer(t, fit, progress=False)
    assert a.metrics["test"]["r2"] > 0.6, a.metrics
    assert a.metrics == b.metrics
    for p, q in zip(a.scorer.parameters(), b.scorer.parameters()):
        assert torch.equal(p, q)


def test_activation_is_configured_and_kept_by_save_and_load(potts_frame, tmp_path):
    t, s = small_scorer(potts_frame, activation="leaky_relu")
    assert [type(m).__name__ for m in s.members[0].body] == ["Linear", "LeakyReLU"]
    assert [type(m).__name__ for m in small_scorer(potts_frame)[1].members[0].body] == ["Linear", "SiLU"]
    s.save(tmp_path)
    back = Scorer.load(tmp_path)
    assert back.members[0].config.activation == "leaky_relu"
    x = (t.rows[:7], t.ctx_cat[:7], t.ctx_num[:7])
    assert torch.equal(back(*x), s(*x))


def test_keep_last_trains_every_epoch_and_keeps_the_last_weights(potts_frame):
    """keep="last" runs all epochs whatever the validation loss (patience 1 here) and keeps where it
    ended; keep="best" restores the epoch of lowest validation loss."""
    t = load_table(potts_frame.head(120), "s?", "y", "ctx")         # few rows, a high rate: the loss goes up and down
    base = dict(model=ScorerConfig(embed_dim=8, hidden=[64, 64]), epochs=12, batch_size=16, seed=2, lr=0.1)
    last = fit_scorer(t, ScorerFit(**base, patience=1, keep="last"), progress=False)
    assert [h["epoch"] for h in last.history] == list(range(12))
    every = fit_scorer(t, ScorerFit(**base, patience=1000, keep="best"), progress=False)
    assert [h["val_mse"] for h in every.history] == [h["val_mse"] for h in last.history]   # the same training
    losses = [h["val_mse"] for h in every.history]
    same = all(torch.equal(p, q) for p, q in zip(last.scorer.parameters(), every.scorer.parameters()))
    assert same == (int(np.argmin(losses)) == len(losses) - 1)
    assert int(np.argmin(losses)) != len(losses) - 1, "the check needs a fit whose last epoch is not its best"


def test_fit_scorer_owns_its_randomness(potts_frame):
    """The fit draws from its own seeded generators: the caller's global RNG state is left as it was,
    and what the caller drew before does not change the fit (dropout and completions draw inside)."""
    t = load_table(potts_frame, "s?", "y", "ctx")
    fit = ScorerFit(model=ScorerConfig(embed_dim=4, hidden=[16], dropout=0.2), epochs=2, batch_size=64, seed=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = fit_scorer(t, fit, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(1000)
    b = fit_scorer(t, fit, progress=False)
    for p, q in zip(a.scorer.parameters(), b.scorer.parameters()):
        assert torch.equal(p, q)


def test_one_automatic_epoch_rule_in_memory_and_streamed():
    from choicegrad.scorer.fit import auto_epochs
    assert auto_epochs(1000) == 200 and auto_epochs(3_000_000) == 10
    assert auto_epochs(6_000_000) == 5 and auto_epochs(100_000_000) == 1     # about 3e7 row visits, at least 1


def test_ranking_loss_and_ensemble_train(potts_frame):
    t = load_table(potts_frame, "s?", "y", "ctx")
    fit = ScorerFit(model=ScorerConfig(embed_dim=4, hidden=[32]), epochs=30, batch_size=64, ensemble=2, ranking=0.5)
    res = fit_scorer(t, fit, progress=False, extra_eval={"all": t})
    assert set(res.metrics) == {"validation", "test", "all"}
    assert res.metrics["all"]["spearman"] > 0.5
    assert {h["member"] for h in res.history} == {0, 1}


def test_save_load_identical_predictions(tmp_path, potts_frame):
    t, s = small_scorer(potts_frame, k=2, beta=0.3)
    s.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["scorer.json", "scorer.safetensors"]
    loaded = Scorer.load(tmp_path / "run")
    assert loaded.space == s.space and loaded.context == s.context and loaded.beta == 0.3
    assert torch.equal(loaded.predict(t.rows, t.ctx_cat, t.ctx_num), s.predict(t.rows, t.ctx_cat, t.ctx_num))
    np.testing.assert_array_equal(loaded.predict_frame(potts_frame), s.predict_frame(potts_frame))


def test_metrics_hand_computed():
    assert r2([1, 2, 3], [1, 2, 3]) == 1.0
    assert r2([1, 2, 3], [2, 2, 2]) == 0.0
    assert r2([0, 0, 4], [0, 2, 2]) == pytest.approx(1 - 8 / (16 / 9 * 2 + 64 / 9))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1,2,3,4) vs (1,3,2,4): 1 - 6*2/(4*15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    rep = regression_report([1, 2, 3, 1, 2, 3], [1, 2, 3, 3, 2, 1], groups=[0, 0, 0, 1, 1, 1])
    assert rep["spearman_per_context"] == pytest.approx(0.0)


def test_spearman_ties_and_degenerate():
    # ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): pearson of ranks
    a, b = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
    expected = np.corrcoef(a, b)[0, 1]
    assert spearman([1, 2, 2, 3], [5, 6, 7, 8]) == pytest.approx(expected)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_pairwise_term_hand_computed_and_soft_equals_hard(potts_frame):
    t, s = small_scorer(potts_frame)
    m = s.members[0]
    assert m.pair_rank == 8 and m.pair.shape[0] == 1 + 8            # automatic: a small space gets it
    torch.manual_seed(1)
    with torch.no_grad():
        m.pair.normal_()
    rows, cc, cn = t.rows[:20], t.ctx_cat[:20], t.ctx_num[:20]
    got = m.pair_term(rows, cc, cn)
    gate = torch.cat([torch.ones(20, 1), m.pair_gate(torch.cat(m.context_features(cc, cn, got), 1))], 1)
    S = rows.shape[1]
    want = torch.zeros(20)
    for b in range(20):          # sum over slot pairs s < t and ranks r of g_r W_r[s, t, x_s, x_t]
        for a in range(S):
            for c in range(a + 1, S):
                want[b] += (gate[b] * m.pair[:, a, c, rows[b, a], rows[b, c]]).sum()
    assert torch.allclose(got, want, atol=1e-4)
    hard = s(rows, cc, cn)
    assert torch.allclose(hard, s(one_hot(rows, t.space.max_size), cc, cn), atol=1e-4)
    missing = rows.clone()
    missing[:, 0] = -1          # a missing slot takes no part in any pair
    without = want - torch.stack([sum((gate[b] * m.pair[:, 0, c, rows[b, 0], rows[b, c]]).sum() for c in range(1, S))
                                  for b in range(20)])
    assert torch.allclose(m.pair_term(missing, cc, cn), without, atol=1e-4)


def test_pairwise_off_and_automatic_limit():
    from choicegrad.scorer.model import pair_rank

    assert pair_rank(ScorerConfig(pairwise=0), [4] * 8) == 0
    assert pair_rank(ScorerConfig(), [4] * 8) == 8
    assert pair_rank(ScorerConfig(), [1000] * 10) == 0          # 9 * 100 * 1000^2 numbers: off
    frame = pd.DataFrame({"a": ["x", "y", "z", "x"], "b": ["p", "q", "p", "q"], "y": [1.0, 2.0, 3.0, 4.0]})
    t = load_table(frame, "a,b", "y")
    s = Scorer(t.space, t.context, "y", ScorerConfig(embed_dim=3, hidden=[8], pairwise=0))
    assert not hasattr(s.members[0], "pair")
    s2 = Scorer(t.space, t.context, "y", ScorerConfig(embed_dim=3, hidden=[8]))
    assert s2.members[0].pair.shape[0] == 1                     # no context columns: one shared table


def test_fit_scorer_decides_the_automatic_pairwise_term_on_the_data(potts_frame):
    from choicegrad.scorer.model import PAIR_ROWS_PER_CELL
    from choicegrad.bench.tasks import PottsTask

    t = load_table(potts_frame, "s?", "y", "ctx")          # 400 rows, 4 categories: 320 < 100 * 4^2 training rows
    few = fit_scorer(t, ScorerFit(epochs=1, seed=0), progress=False)
    assert few.scorer.config.pairwise == 0 and not hasattr(few.scorer.members[0], "pair")
    big = load_table(PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=2500, seed=1), "s?", "y", "ctx")
    assert 0.8 * len(big) >= PAIR_ROWS_PER_CELL * 16
    many = fit_scorer(big, ScorerFit(epochs=1, seed=0), progress=False)
    assert many.scorer.config.pairwise == 8 and many.scorer.members[0].pair.shape[0] == 1 + 8
    forced = fit_scorer(t, ScorerFit(epochs=1, seed=0, model=ScorerConfig(pairwise=2)), progress=False)
    assert forced.scorer.config.pairwise == 2 and forced.scorer.members[0].pair.shape[0] == 1 + 2


def test_embedding_gradients_repeat_bit_for_bit_on_two_threads():
    """The lookup's backward sums each category's gradients in a fixed order (advanced indexing's
    scatter-add did not with 2 threads), so a fit with the same seed repeats and a resumed fit
    reaches the uninterrupted one."""
    from choicegrad.scorer.model import EmbeddingScorer

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = EmbeddingScorer([6] * 8, [], 0, ScorerConfig(pairwise=0))
        g = torch.Generator().manual_seed(0)
        x = torch.randint(-1, 6, (4096, 8), generator=g)
        w = torch.randn(4096, 8, model.config.embed_dim, generator=g)

        def grad():
            model.zero_grad()
            (model.embed(x) * w).sum().backward()
            return model.table.grad.clone()

        first = grad()
        assert all(torch.equal(first, grad()) for _ in range(20))
    finally:
        torch.set_num_threads(threads)


def test_a_timed_member_fits_its_schedule_to_its_pace(potts_frame):
    """With a time limit, a member whose pace cannot keep its epochs continues on a one-cycle schedule
    of the steps that fit, at the step it is at (the rate that schedule has there); a pace within
    PACE_TOLERANCE changes nothing, and the schedule never grows past the epochs' steps."""
    from choicegrad.scorer.fit import PACE_STEPS, _ScorerTraining
    t = load_table(potts_frame, "s?", "y", "ctx")
    tr = _ScorerTraining(t, ScorerFit(model=ScorerConfig(embed_dim=4, hidden=[16]), epochs=100, batch_size=16,
                                      max_minutes=1.0, seed=0), None)
    tr._new_member()
    full = tr.total_steps()
    for _ in range(40):
        tr.opt.step()
        tr.sched.step()
    tr.pace(deadline=30.0, elapsed=1.0)                    # the first batch timed: the pace starts here
    assert tr.pacer.began == (1.0, 40) and tr.sched.total_steps == full
    tr.pacer.began = (0.0, 0)
    tr.pace(deadline=30.0, elapsed=5.0)                    # 40 steps in 5 s: 240 by 30 s
    assert (tr.sched.total_steps, tr.sched.last_epoch) == (240, 40)
    ref_opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=tr.fit.lr)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=tr.fit.lr, pct_start=0.05, total_steps=240)
    for _ in range(40):
        ref_opt.step()
        ref.step()
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
    assert tr.opt.param_groups[0]["betas"] == pytest.approx(ref_opt.param_groups[0]["betas"])
    tr.pace(deadline=30.0, elapsed=5.05)                   # 237 fit: within the tolerance, kept
    assert tr.sched.total_steps == 240
    tr.pace(deadline=1e6, elapsed=5.0)                     # time to spare: the epochs' schedule
    assert (tr.sched.total_steps, tr.sched.last_epoch) == (full, 40)
    tr.pace(deadline=1e-3, elapsed=5.0)                    # past the deadline: one more step ends it
    assert tr.sched.total_steps == 41
    assert PACE_STEPS <= 40


def test_a_timed_fit_ends_each_member_annealed(potts_frame, monkeypatch):
    """A fit whose time is too short for its epochs (a clock of 1 ms per batch here) ends every member
    at the end of its shortened schedule, not cut mid-way; without a limit the schedule is the epochs'."""
    import itertools
    from choicegrad.scorer import fit as fit_module
    clock = itertools.count()
    monkeypatch.setattr(fit_module._ScorerTraining, "elapsed", lambda self: next(clock) * 1e-3)
    made = []
    schedule = fit_module._ScorerTraining.schedule
    monkeypatch.setattr(fit_module._ScorerTraining, "schedule",
                        lambda self, total, at=0: made.append(schedule(self, total, at)) or made[-1])
    t = load_table(potts_frame, "s?", "y", "ctx")
    base = dict(model=ScorerConfig(embed_dim=4, hidden=[16]), epochs=200, batch_size=16, seed=0, keep="last")
    res = fit_scorer(t, ScorerFit(**base, ensemble=2, max_minutes=0.01), progress=False)   # 0.3 s a member
    finals = [s for i, s in enumerate(made) if i + 1 == len(made) or made[i + 1].optimizer is not s.optimizer]
    assert len(finals) == 2 and len(made) > 2
    for s in finals:
        assert s.last_epoch == s.total_steps < 200 * math.ceil(len(t) * 0.8 / 16)
    assert max(h["epoch"] for h in res.history) < 199
    made.clear()
    fit_scorer(t, ScorerFit(**{**base, "epochs": 2}), progress=False)
    assert len(made) == 1 and made[0].last_epoch == made[0].total_steps
