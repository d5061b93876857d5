"""Rows with missing features (-1): the scorer's marginal treatment (completions, the mixture loss,
the marginalised prediction) in memory, streamed and in ensembles; the generator's warm start on
observed slots only; `score` warning about partial rows and refusing empty ones."""

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from choicegrad import Scorer, ScorerConfig, ScorerFit, fit_scorer, load_table
from choicegrad.bench.tasks import PottsTask
from choicegrad.data.stream import scan_parquet
from choicegrad.generators import GeneratorConfig, build
from choicegrad.generators.base import observed_prefix
from choicegrad.generators.context import TableContext
from choicegrad.scorer.fit import NOISE_FLOOR, _ScorerTraining, fit_scorer_stream, mixture_loss
from choicegrad.scorer.model import PartialRowsWarning, category_counts, completions
from choicegrad.training.loop import GeneratorFit, fit_table_generator
from cli_helpers import assert_input_error, run

TINY = ScorerConfig(embed_dim=4, hidden=[16], pairwise=0)


@pytest.fixture
def partial_frame() -> pd.DataFrame:
    """300 rows of a 3 x 4 Potts table, one feature blanked in a third of them."""
    frame = PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=300, seed=1)
    rng = np.random.default_rng(0)
    for r in np.flatnonzero(rng.random(len(frame)) < 0.35):
        frame.at[r, f"s{rng.integers(3)}"] = None
    return frame


def tiny_scorer(data, k=1, beta=0.0, **config) -> Scorer:
    torch.manual_seed(0)
    s = Scorer(data.space, data.context, "y", TINY.model_copy(update=config), k=k, beta=beta)
    s.set_marginals(category_counts(data.rows, data.space.max_size))
    return s.eval()


def with_slot(rows: torch.Tensor, s: int, v: int) -> torch.Tensor:
    out = rows.clone()
    out[:, s] = v
    return out


# --- completions and the marginalised prediction --------------------------------------------------
def test_completions_enumerate_the_missing_slots_weighted_by_their_shares():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    rows = torch.tensor([[1, -1, 0], [-1, -1, 0], [0, 2, 0]])
    filled, w, exact = completions(rows, probs, torch.tensor([2, 3, 1]), limit=64)
    assert filled.shape == (3, 6, 3) and torch.allclose(w.sum(1), torch.ones(3)) and exact.all()
    # row 0: slot 1's three categories at 0.2, 0.3, 0.5 (then padding of weight 0)
    assert filled[0, :3, 1].tolist() == [0, 1, 2] and (filled[0, :, [0, 2]] == torch.tensor([1, 0])).all()
    assert torch.allclose(w[0], torch.tensor([0.2, 0.3, 0.5, 0, 0, 0]))
    # row 1: every pair of slots 0 and 1, weight p0 * p1
    pairs = {(int(a), int(b)): float(x) for (a, b), x in zip(filled[1, :, :2], w[1])}
    assert pairs == pytest.approx({(a, b): [0.5, 0.5][a] * [0.2, 0.3, 0.5][b] for a in range(2) for b in range(3)})
    assert torch.equal(filled[2, 0], rows[2]) and w[2, 0] == 1 and (w[2, 1:] == 0).all()   # complete: itself


def test_completions_beyond_the_limit_are_stratified_draws_from_the_support():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]])
    rows = torch.tensor([[-1, -1]] * 3)
    filled, w, exact = completions(rows, probs, torch.tensor([4, 4]), limit=8)   # 16 completions > 8: drawn
    assert filled.shape == (3, 8, 2) and torch.allclose(w, torch.full((3, 8), 1 / 8)) and not exact.any()
    assert not (filled[..., 0] == 1).any()                                      # never a category of share 0
    again, _, _ = completions(rows, probs, torch.tensor([4, 4]), limit=8)
    assert torch.equal(filled, again)                                           # fixed outside training
    assert (filled[..., 1].sort(1).values == torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).all()   # one per stratum
    torch.manual_seed(0)
    drawn, _, _ = completions(rows, probs, torch.tensor([4, 4]), limit=8, random=True)
    assert drawn.shape == (3, 8, 2) and not (drawn[..., 0] == 1).any()


@pytest.mark.parametrize("k,beta", [(1, 0.0), (3, 1.0)])
def test_a_partial_row_scores_the_weighted_mean_over_its_completions(partial_frame, k, beta):
    data = load_table(partial_frame, "s?", "y", "ctx")
    s = tiny_scorer(data, k=k, beta=beta)
    member = s.members[0]
    p = member.marginals
    assert torch.allclose(p.sum(1), torch.ones(3)) and not torch.allclose(p[0], torch.full((4,), 0.25))
    whole = (data.rows >= 0).all(1)
    rows, cat, num = data.rows[whole][:6].clone(), data.ctx_cat[whole][:6], data.ctx_num[whole][:6]
    rows[:3, 1] = -1
    rows[3:5, [0, 2]] = -1
    with torch.no_grad():
        got = s.member_scores(rows, cat, num)                                  # (k, 6)
        one = sum(p[1, v] * s.member_scores(with_slot(rows, 1, v), cat, num) for v in range(4))
        two = sum(p[0, a] * p[2, b] * s.member_scores(with_slot(with_slot(rows, 0, a), 2, b), cat, num)
                  for a in range(4) for b in range(4))
        assert torch.allclose(got[:, :3], one[:, :3], atol=1e-5)
        assert torch.allclose(got[:, 3:5], two[:, 3:5], atol=1e-5)
        assert torch.allclose(got[:, 5], s.member_scores(rows[5:], cat[5:], num[5:])[:, 0])
        # the ensemble's score: mean - beta * std over each member's marginalised score
        want = got.mean(0) - (beta * got.std(0) if k > 1 else 0)
        assert torch.allclose(s(rows, cat, num), want, atol=1e-6)


def test_the_latent_of_a_partial_row_embeds_the_missing_slot_as_its_marginal(partial_frame):
    data = load_table(partial_frame, "s?", "y", "ctx")
    s = tiny_scorer(data)
    whole = (data.rows >= 0).all(1)
    rows, cat, num = data.rows[whole][:5].clone(), data.ctx_cat[whole][:5], data.ctx_num[whole][:5]
    rows[:2, 2] = -1
    soft = torch.nn.functional.one_hot(rows.clamp(min=0), 4).float()
    soft[:2, 2] = s.members[0].marginals[2]
    with torch.no_grad():
        assert torch.allclose(s.latent(rows, cat, num), s.latent(soft, cat, num), atol=1e-5)


# --- the loss ---------------------------------------------------------------------------------------
def test_mixture_loss_against_a_hand_computed_case():
    f = torch.tensor([[0.0, 1.0, 3.0], [2.0, 5.0, 0.0]])
    w = torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
    y, noise = torch.tensor([1.2, 1.5]), 0.3
    by_hand = -2 * noise * np.log(0.5 * np.exp(-1.44 / 0.6) + 0.25 * np.exp(-0.04 / 0.6) + 0.25 * np.exp(-3.24 / 0.6))
    got = mixture_loss(f, w, y, noise)
    assert got[0].item() == pytest.approx(by_hand, rel=1e-5)
    assert got[1].item() == pytest.approx((1.5 - 2.0) ** 2, rel=1e-5)        # one completion: squared error
    # drawn completions (not exact): the Gaussian approximation, (y - mean)^2 noise / (noise + variance)
    mean, var = 0.5 * 0.0 + 0.25 * 1.0 + 0.25 * 3.0, 0.5 * 1.0 + 0.25 * 0.0 + 0.25 * 4.0
    drawn = mixture_loss(f, w, y, noise, exact=torch.tensor([False, True]))
    assert drawn[0].item() == pytest.approx((1.2 - mean) ** 2 * noise / (noise + var), rel=1e-5)
    assert drawn[1].item() == pytest.approx(got[1].item())
    p = 0.5 * torch.sigmoid(f[0, 0]) + 0.25 * torch.sigmoid(f[0, 1]) + 0.25 * torch.sigmoid(f[0, 2])
    logistic = mixture_loss(f[:1], w[:1], torch.tensor([1.0]), noise, kind="logistic")
    assert logistic.item() == pytest.approx(-torch.log(p).item(), rel=1e-5)


def test_fit_loss_of_a_partial_row_is_the_mixture_over_its_completions(partial_frame):
    data = load_table(partial_frame, "s?", "y", "ctx")
    training = _ScorerTraining(data, ScorerFit(model=TINY, epochs=1, seed=0), None)
    member = training.scorer.members[0].eval()
    train = torch.as_tensor(training.train_idx)
    counts = category_counts(data.rows[train], 4)
    assert torch.allclose(member.marginals, (counts / counts.sum(1, keepdim=True)).float())   # training rows' shares
    rows, cat, num = data.rows[:40], data.ctx_cat[:40], data.ctx_num[:40]
    y = training.target[:40]
    with torch.no_grad():
        pred, loss = training.row_losses(member, member, rows, cat, num, y)
        whole = (rows >= 0).all(1)
        full = member(rows[whole], cat[whole], num[whole])
        assert torch.allclose(loss[whole], (full - y[whole]) ** 2, atol=1e-6)
        noise = max(float(((full - y[whole]) ** 2).mean()), NOISE_FLOOR)
        i = int(torch.nonzero(~whole)[0])
        s = int(torch.nonzero(rows[i] < 0)[0])
        p = member.marginals[s]
        f = torch.stack([member(with_slot(rows[i:i + 1], s, v), cat[i:i + 1], num[i:i + 1])[0] for v in range(4)])
        want = -2 * noise * torch.log((p * torch.exp(-(y[i] - f) ** 2 / (2 * noise))).sum())
        assert loss[i].item() == pytest.approx(want.item(), rel=1e-4)
        assert pred[i].item() == pytest.approx(float((p * f).sum()), abs=1e-5)
        assert torch.allclose(pred, member(rows, cat, num), atol=1e-5)   # the prediction: forward's


@pytest.mark.parametrize("loss", ["mse", "logistic"])
def test_fits_in_memory_and_as_an_ensemble_on_partial_rows(partial_frame, loss):
    frame = partial_frame.assign(y=(partial_frame["y"] > 0).astype(float)) if loss == "logistic" else partial_frame
    data = load_table(frame, "s?", "y", "ctx")
    res = fit_scorer(data, ScorerFit(model=TINY, ensemble=2, beta=0.5, epochs=3, seed=0, loss=loss), progress=False)
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_mse"]) for h in res.history)
    pred = res.scorer.predict(data.rows, data.ctx_cat, data.ctx_num)
    assert pred.shape == (len(data),) and torch.isfinite(pred).all()
    for m in res.scorer.members:
        assert torch.equal(m.marginals, res.scorer.members[0].marginals)


def test_the_streamed_path_fits_partial_rows_with_the_scans_shares(tmp_path, partial_frame):
    folder = tmp_path / "data"
    folder.mkdir()
    frame = pd.concat([partial_frame] * 4, ignore_index=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "a.parquet", row_group_size=250)
    table = scan_parquet(folder, "s?", "y", "ctx", seed=0, progress=False)
    counts = table.category_counts
    observed = int(frame[["s0", "s1", "s2"]].notna().to_numpy().sum())
    assert counts.shape == (3, 4) and 0.7 * observed < counts.sum() < observed     # the training rows' cells
    whole = category_counts(load_table(frame, "s?", "y", "ctx").rows, 4)
    assert torch.allclose(counts / counts.sum(1, keepdim=True), whole / whole.sum(1, keepdim=True), atol=0.03)
    res = fit_scorer_stream(table, ScorerFit(model=TINY, epochs=2, seed=0), progress=False)
    assert all(np.isfinite(h["train_loss"]) for h in res.history)
    shares = counts / counts.sum(1, keepdim=True)
    assert torch.allclose(res.scorer.members[0].marginals, shares.float())
    assert torch.isfinite(res.scorer.predict(table.validation.rows, table.validation.ctx_cat,
                                             table.validation.ctx_num)).all()


def test_a_scorer_saved_before_marginal_missing_slots_loads_with_its_embedding(tmp_path, partial_frame):
    data = load_table(partial_frame, "s?", "y", "ctx")
    old = tiny_scorer(data, missing="embedding")
    old.save(tmp_path)
    meta = json.loads((tmp_path / "scorer.json").read_text())
    for key in ("missing", "completions"):
        meta["config"].pop(key)
    (tmp_path / "scorer.json").write_text(json.dumps(meta))
    back = Scorer.load(tmp_path)
    assert back.config.missing == "embedding"
    with torch.no_grad():
        assert torch.allclose(back(data.rows, data.ctx_cat, data.ctx_num), old(data.rows, data.ctx_cat, data.ctx_num))
    new = tiny_scorer(data)
    new.save(tmp_path / "new")
    loaded = Scorer.load(tmp_path / "new")
    assert torch.equal(loaded.members[0].marginals, new.members[0].marginals)


# --- the generator's warm start -------------------------------------------------------------------
def test_observed_prefix_stops_at_the_first_missing_slot_in_the_order():
    rows = torch.tensor([[0, -1, 2, 1], [-1, 1, 1, 1], [1, 1, 1, 1]])
    assert observed_prefix(rows, [0, 1, 2, 3]).tolist() == [[True, False, False, False], [False] * 4, [True] * 4]
    assert observed_prefix(rows, [2, 0, 3, 1]).tolist() == [[True, False, True, True], [False, False, True, False],
                                                            [True] * 4]


@pytest.mark.parametrize("kind", ["factorized", "autoregressive"])
def test_log_prob_teaches_no_missing_slot(partial_frame, kind):
    """A missing slot (-1) takes no gradient (never category 0's), and an autoregressive generator
    learns only the observed prefix: slots after a hole are left out."""
    data = load_table(partial_frame, "s?", "y", "ctx")
    torch.manual_seed(0)
    gen = build(GeneratorConfig(kind=kind, hidden=[16], context_dim=4), space=data.space, context=data.context)
    ctx = TableContext(data.ctx_cat[:4], data.ctx_num[:4])
    rows = torch.tensor([[2, -1, 1], [-1, 3, 0], [1, 1, 1], [-1, -1, -1]])
    lp_terms, _ = gen.teacher_terms(rows[:, None], ctx, entropy=False)
    keep = (rows >= 0) if kind == "factorized" else observed_prefix(rows, gen.order)
    assert torch.allclose(gen.log_prob(rows, ctx), (lp_terms[:, 0] * keep).sum(-1))
    if kind == "autoregressive":
        assert gen.log_prob(rows, ctx)[1] == 0 and keep[0].tolist() == [True, False, False]
    logits = gen.logits(ctx, None if kind == "factorized" else rows)
    logits.retain_grad()
    logp = torch.log_softmax(logits.float(), -1).gather(-1, rows.clamp(min=0)[..., None])[..., 0]
    (logp * keep).sum().backward()
    assert (logits.grad[~keep] == 0).all()                                      # e.g. row 0's slot 1, category 0's too


@pytest.mark.parametrize("kind", ["factorized", "autoregressive"])
def test_the_warm_start_learns_observed_slots_only(kind):
    """Slot 1 is missing in every row: the warm start must not move its distribution (a row's -1 read as
    category 0 would teach category 0); an autoregressive generator whose order starts at slot 1 has
    nothing to learn from these rows and leaves them out, without failing."""
    data = load_table(PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=200, seed=1), "s?", "y", "ctx")
    data.rows[:, 1] = -1                                       # slot 1 keeps its 4 categories, never observed
    scorer = Scorer(data.space, data.context, "y", TINY).eval()
    order = None if kind == "factorized" else [1, 0, 2]
    config = GeneratorConfig(kind=kind, hidden=[16], context_dim=4, order=order)
    fit = GeneratorFit(method="reinforce", steps=1, batch_size=4, samples=2, warm_start_steps=30, lr=0.05,
                       val_every=1, distill=0)
    torch.manual_seed(fit.seed)
    before = build(config, space=data.space, context=data.context)
    res = fit_table_generator(scorer, data, config, fit)
    ctx = TableContext(data.ctx_cat[:2], data.ctx_num[:2])
    if kind == "factorized":
        with torch.no_grad():
            p_before = torch.softmax(before.logits(ctx)[:, 1], -1)
            p_after = torch.softmax(res.generator.logits(ctx)[:, 1], -1)
        assert (p_after[:, 0] < p_before[:, 0] + 0.05).all()   # category 0 of slot 1 is not taught
        assert any(r["phase"] == "warm" for r in res.history)
    else:
        assert not any(r["phase"] == "warm" for r in res.history)   # nothing observed in the prefix: no warm start


# --- score --------------------------------------------------------------------------------------------
@pytest.fixture
def fitted_run(tmp_path, partial_frame):
    partial_frame.to_csv(tmp_path / "table.csv", index=False)
    res = run("fit-scorer", tmp_path / "table.csv", "--features", "s?", "--score", "y", "--context", "ctx",
              "--epochs", "2", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    return tmp_path / "run"


def test_score_warns_about_partial_rows_and_scores_them(tmp_path, fitted_run, partial_frame):
    rows = partial_frame.drop(columns="y").head(6).copy()
    rows.loc[:5, ["s0", "s1", "s2"]] = [["a", "b", "c"]] * 6
    rows.loc[1, "s0"] = None
    rows.loc[4, ["s1", "s2"]] = None
    rows.to_csv(tmp_path / "rows.csv", index=False)
    res = run("score", fitted_run, tmp_path / "rows.csv", "--out", tmp_path / "out.csv")
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "2 of 6 rows have missing features (rows 2, 5)" in res.output
    assert np.isfinite(pd.read_csv(tmp_path / "out.csv")["score"]).all()
    scorer = Scorer.load(fitted_run)
    with pytest.warns(PartialRowsWarning, match="rows 2, 5"):
        scorer.predict_frame(rows, "rows.csv")


def test_score_refuses_a_row_with_no_feature_observed(tmp_path, fitted_run, partial_frame):
    rows = partial_frame.drop(columns="y").head(5).copy()
    rows[["s0", "s1", "s2"]] = "a"
    rows.loc[[1, 3], ["s0", "s1", "s2"]] = None
    rows.to_csv(tmp_path / "rows.csv", index=False)
    res = run("score", fitted_run, tmp_path / "rows.csv", "--out", tmp_path / "out.csv")
    assert_input_error(res, str(tmp_path / "rows.csv"), "no feature observed at rows 2, 4")
    assert not (tmp_path / "out.csv").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialRowsWarning)
        rows.loc[[1, 3], "s0"] = "a"
        rows.loc[[1, 3], ["s1", "s2"]] = "b"
        Scorer.load(fitted_run).predict_frame(rows, "rows.csv")    # complete rows: no warning
