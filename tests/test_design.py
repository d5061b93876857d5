"""Design rounds: batch selection, membership, the acquisition, the failure mode of tables, declared
spaces, and the ask/tell loop's invariants (n distinct new rows per context, no repeats, failed rows
learned and never proposed again, warm starts from a saved state)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from choicegrad.bench.tasks import PottsTask
from choicegrad.data.space import read_space
from choicegrad.data.table import load_table
from choicegrad.design import Acquisition, DesignConfig, Designer, Measured, select_batch
from choicegrad.design.acquisition import EXCLUDED_PENALTY, PairSupport, log_feasible
from choicegrad.errors import InputError
from choicegrad.generators import TableContext
from choicegrad.scorer.fit import ScorerFit, fit_scorer, warm_start
from choicegrad.scorer.model import Scorer

FAST = dict(ensemble=2, max_minutes=0.05, generator_steps=40, seed=0)


# --- selection ------------------------------------------------------------------------------------------
def test_select_batch_greedy_by_value_with_min_distance():
    rows = torch.tensor([[[0, 0, 0], [0, 0, 1], [1, 1, 1], [1, 1, 0], [2, 2, 2]]])
    value = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    idx, ok = select_batch(rows, value, 3)
    assert idx.tolist() == [[0, 1, 2]] and ok.all()
    idx, ok = select_batch(rows, value, 3, min_distance=2)     # row 1 is 1 away from row 0, row 3 from row 2
    assert idx.tolist() == [[0, 2, 4]] and ok.all()
    idx, ok = select_batch(rows, value, 4, min_distance=3)     # only 0, 2 (distance 3) and 4 fit
    assert ok.tolist() == [[True, True, True, False]] and idx[0, :3].tolist() == [0, 2, 4]


def test_select_batch_skips_disallowed_and_taken_rows():
    rows = torch.tensor([[[0, 0], [0, 1], [1, 1]]])
    value = torch.tensor([[float("-inf"), 2.0, 1.0]])
    idx, ok = select_batch(rows, value, 2, taken=torch.tensor([[[0, 1]]]))
    assert idx[0, 0].item() == 2 and ok.tolist() == [[True, False]]


def test_select_batch_thompson_draws_a_member_per_pick():
    B = 400
    rows = torch.tensor([[0], [1], [2]]).expand(B, 3, 1)
    draws = torch.tensor([[0.0, 9.0, 1.0], [0.0, 1.0, 9.0]])[:, None, :].expand(2, B, 3)   # member 0 likes 1, 1 likes 2
    idx, ok = select_batch(rows, torch.zeros(B, 3), 1, draws=draws, generator=torch.Generator().manual_seed(0))
    first = torch.bincount(idx[:, 0], minlength=3).tolist()
    assert ok.all() and first[0] == 0 and 150 < first[1] < 250 and first[1] + first[2] == B
    nan = draws.clone()
    nan[0, :, 1] = float("nan")                                          # a NaN draw is never picked
    idx, _ = select_batch(rows, torch.zeros(B, 3), 1, draws=nan, generator=torch.Generator().manual_seed(0))
    assert (idx[:, 0] != 1).all()


# --- membership and the acquisition ---------------------------------------------------------------------------
def test_measured_rows_are_per_context():
    rows = torch.tensor([[0, 1, 2], [2, 2, 2]])
    ctx = TableContext(torch.tensor([[0], [1]]), torch.tensor([[0.5], [-1.0]]))
    m = Measured(rows, ctx, vocab=3)
    q_rows = torch.tensor([[0, 1, 2], [0, 1, 2], [2, 2, 2], [2, 2, 1]])
    q_ctx = TableContext(torch.tensor([[0], [1], [1], [1]]), torch.tensor([[0.5], [-1.0], [-1.0], [-1.0]]))
    assert m.contains(q_rows, q_ctx).tolist() == [True, False, True, False]
    assert not Measured(rows[:0], ctx.index(slice(0, 0)), 3).contains(q_rows, q_ctx).any()


@pytest.fixture(scope="module")
def fitted():
    frame = PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=300, seed=1)
    data = load_table(frame, "s?", "y", "ctx")
    scorer = fit_scorer(data, ScorerFit(ensemble=3, epochs=3, seed=0)).scorer.eval()
    labels = data.subset(np.arange(len(data)))
    labels.y = torch.tensor((frame["s0"] != "a").to_numpy(), dtype=torch.float64)
    feas = fit_scorer(labels, ScorerFit(ensemble=2, epochs=60, loss="logistic", seed=0)).scorer.eval()
    return data, scorer, feas


def test_acquisition_is_mean_plus_kappa_std_plus_log_feasible(fitted):
    data, scorer, feas = fitted
    x, ctx = data.rows[:8], TableContext(data.ctx_cat[:8], data.ctx_num[:8])
    m = scorer.member_scores(x, ctx.cat, ctx.num)
    acq = Acquisition(scorer, kappa=2.0)
    assert torch.allclose(acq(x, ctx), m.mean(0) + 2.0 * m.std(0))
    p = torch.sigmoid(feas.member_scores(x, ctx.cat, ctx.num)).mean(0)
    assert torch.allclose(log_feasible(feas, x, ctx), p.log(), atol=1e-5)
    both = Acquisition(scorer, kappa=0.0, feasibility=feas, weight=0.5)
    assert torch.allclose(both(x, ctx), m.mean(0) + 0.5 * float(scorer.y_std) * p.log(), atol=1e-5)
    assert acq.calls == 8 and both.calls == 8
    assert acq.log_p_feasible(x, ctx) is None and torch.allclose(both.log_p_feasible(x, ctx), p.log(), atol=1e-5)
    pairs = PairSupport.fit(data.rows[:40], _cats(4, 4, 4))
    with_pairs = Acquisition(scorer, feasibility=feas, pairs=pairs)
    assert torch.allclose(with_pairs.log_p_feasible(x, ctx), p.log() + pairs.log_prob(x), atol=1e-5)
    soft = torch.nn.functional.one_hot(x, 4).float().requires_grad_(True)   # relaxed estimators need gradients
    both(soft, ctx).sum().backward()
    assert soft.grad is not None and torch.isfinite(soft.grad).all()
    assert torch.allclose(both(soft.detach(), ctx), both(x, ctx), atol=1e-5)


def test_excluding_objective_pushes_measured_rows_down(fitted):
    data, scorer, _ = fitted
    ctx = TableContext(data.ctx_cat[:4], data.ctx_num[:4])
    acq = Acquisition(scorer)
    search = Measured(data.rows[:2], ctx.index(slice(0, 2)), 4).excluding(acq)
    drop = (acq(data.rows[:4], ctx) - search(data.rows[:4], ctx)) / acq.scale
    assert torch.allclose(drop, torch.tensor([EXCLUDED_PENALTY, EXCLUDED_PENALTY, 0, 0]))


def _chain_rows(n, S=10, V=6, seed=0):
    """n rows of a chain that never steps from a to (a + 1) mod V (the banned pairs), else uniform."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.empty(n, S, dtype=torch.long)
    rows[:, 0] = torch.randint(V, (n,), generator=g)
    for s in range(1, S):
        step = torch.randint(V - 1, (n,), generator=g)                   # any next category but a + 1
        rows[:, s] = (rows[:, s - 1] + 2 + step) % V
    return rows


def _cats(*sizes, prefix="c"):
    return [[f"{prefix}{v}" for v in range(n)] for n in sizes]


def test_pair_support_finds_banned_neighbours_from_rows_that_did_not_fail():
    V = 6
    ps = PairSupport.fit(_chain_rows(400, V=V), _cats(*[V] * 10))
    banned = torch.zeros(V, V, dtype=torch.bool)
    banned[torch.arange(V), (torch.arange(V) + 1) % V] = True
    assert torch.allclose(ps.beta, torch.full((9,), 6 / 36), atol=0.02)     # 6 of 36 pairs banned, by moments
    assert (ps.table[:, ~banned] == 0).all() and (ps.table[:, banned] < -20).all()
    rows = torch.tensor([[0, 2, 4, 0, 3, 5, 1, 3, 5, 2], [0, 1, 3, 5, 1, 3, 5, 1, 3, 5]])   # the second steps 0 -> 1
    lp = ps.log_prob(rows)
    assert lp[0] == 0 and lp[1] < -20
    soft = torch.nn.functional.one_hot(rows, V).float()
    assert torch.allclose(ps.log_prob(soft), lp)                        # soft rows: the same at one-hot
    # independent uniform slots, no ban: no penalty anywhere (unseen pairs are chance)
    free = PairSupport.fit(torch.randint(20, (300, 4), generator=torch.Generator().manual_seed(1)), _cats(20, 20, 20, 20))
    assert (free.beta == 0).all() and (free.table == 0).all()
    # one row, or one slot: nothing to learn
    assert PairSupport.fit(torch.zeros(5, 1, dtype=torch.long), _cats(3)).log_prob(
        torch.zeros(2, 1, dtype=torch.long)).eq(0).all()


def test_pair_support_rates_only_a_sequences_links():
    """Neighbours with other category lists (a table's features, even of the same size) are not
    rated, nor pooled with the sequence's links: a ban on a sequence link is found beside them."""
    g = torch.Generator().manual_seed(3)
    a = torch.randint(4, (600,), generator=g)
    b = (a + 1 + torch.randint(3, (600,), generator=g)) % 4                 # b never equals a: a banned diagonal
    c = torch.randint(4, (600,), generator=g)
    rows = torch.stack([a, b, c], 1)
    ps = PairSupport.fit(rows, _cats(4, 4) + _cats(4, prefix="x"))         # slots 0-1 one sequence, slot 2 another list
    assert ps.beta[0] > 0.2 and ps.beta[1] == 0
    assert (ps.table[0].diagonal() < -20).all() and (ps.table[1] == 0).all()
    same_size = PairSupport.fit(rows[:, [0, 2]], [["a", "b", "c", "d"], ["w", "x", "y", "z"]])
    assert (same_size.table == 0).all() and (same_size.beta == 0).all()


def test_designer_keeps_proposals_feasible_before_any_row_failed():
    """A sequence whose banned neighbours no start row holds: with neighbour_pairs the designer's
    proposals keep to the pairs the start holds; without, some hold a banned pair."""
    rows = _chain_rows(300, S=8, V=6, seed=2)
    frame = pd.DataFrame({f"s{i}": rows[:, i].numpy().astype(str) for i in range(8)})
    frame["y"] = (rows == 3).sum(1).numpy().astype(float)               # more 3s score higher; no row failed
    shares = {}
    for pairs in (True, False):
        d = Designer("s?", "y", config=DesignConfig(**FAST, neighbour_pairs=pairs))
        d.tell(frame)
        batch = d.ask(64)
        x = torch.tensor(batch[[f"s{i}" for i in range(8)]].astype(int).to_numpy())
        shares[pairs] = float(((x[:, 1:] - x[:, :-1]) % 6 == 1).any(1).float().mean())
        assert (d.pairs is not None) == pairs and "p_feasible" not in batch.columns
    assert shares[True] == 0.0 and shares[False] > shares[True], shares   # the fits are time-capped: no finer bound


def test_picks_keep_to_plausible_rows_and_fill_from_the_rest_only_when_short():
    """min_feasible: candidates whose estimated P(feasible) is below it are picked only where a
    context has too few others, after every plausible one, local pool or not."""
    d = Designer("s?", "y", config=DesignConfig(**FAST, local_share=0.5))
    rows = torch.arange(12).view(1, 6, 2)                                   # six distinct candidates
    value = torch.tensor([[6.0, 5, 4, 3, 2, 1]])
    rng = torch.Generator().manual_seed(0)

    def picked(plausible, n, local=None):
        out, ok = d._pick(rows, value, None, local, torch.tensor([plausible]), n, rng)
        assert ok.all()
        return sorted((out[0, :, 0] // 2).tolist())

    assert picked([False, False, True, True, True, True], 3) == [2, 3, 4]
    assert picked([False, False, False, False, True, True], 3) == [0, 4, 5]       # short: the best of the rest
    # the local pool (the last three): half the batch from its plausible rows first
    assert picked([True, True, False, True, True, False], 2, local=rows[:, 3:]) == [0, 3]
    assert picked([True] * 6, 2, local=rows[:, 3:]) == [0, 3]
    no_floor, ok = d._pick(rows, value, None, None, None, 2, rng)
    assert ok.all() and (no_floor[0, :, 0] // 2).tolist() == [0, 1]


def test_logistic_scorer_learns_a_feasibility_rule(fitted):
    data, _, feas = fitted
    p = log_feasible(feas, data.rows, TableContext(data.ctx_cat, data.ctx_num)).exp()
    rule = data.rows[:, 0] != 0
    assert p[rule].mean() > 0.8 and p[~rule].mean() < 0.3


# --- tables with failures and declared spaces ------------------------------------------------------------
def test_failures_mode_keeps_failed_rows_as_minus_inf(tmp_path):
    frame = pd.DataFrame({"a": list("xyzxy"), "y": ["1.5", "-inf", "", "2", None]})
    data = load_table(frame, "a", "y", failures=True)
    assert data.y[0] == 1.5 and data.y[3] == 2 and bool(torch.isinf(data.y[[1, 2, 4]]).all())
    with pytest.raises(InputError, match="finite numbers"):
        load_table(frame, "a", "y")
    for bad in ("abc", "inf"):
        with pytest.raises(InputError, match="text/\\+inf at row 2"):
            load_table(frame.assign(y=["1", bad, "2", "3", "4"]), "a", "y", failures=True)


def test_declared_space_keeps_order_and_unmeasured_categories(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"a": ["z", "y", "x", "w"], "n": [1, 2, 3]}))
    decl = read_space(path)
    assert decl == {"a": ["z", "y", "x", "w"], "n": ["1", "2", "3"]}
    frame = pd.DataFrame({"a": list("xyzxy"), "n": [1, 2, 1, 2, 1], "b": list("ppqqp"), "y": range(5)})
    data = load_table(frame, "a,n,b", "y", space=path)
    assert data.space.slots[0].categories == ["z", "y", "x", "w"] and data.space.sizes == [4, 3, 2]
    assert data.rows[0].tolist() == [2, 0, 0]
    with pytest.raises(InputError, match="unknown category .q. at row 1"):
        load_table(frame.assign(a=["q", "y", "z", "x", "y"]), "a,n,b", "y", space=path)
    with pytest.raises(InputError, match=str(path)):
        load_table(frame, "a,b", "y", space=path)                      # "n" is not a feature
    for doc, needle in [([1, 2], "JSON object"), ({}, "at least one feature"), ({"a": []}, "non-empty list"),
                        ({"a": ["x", "x"]}, "more than once"), ({"a": [True]}, "not a label"),
                        ({"a": [None]}, "not a label"), ({"a": [""]}, "is empty"),
                        ({"a": ["1.0", 1]}, "more than once")]:
        path.write_text(json.dumps(doc))
        with pytest.raises(InputError, match=needle):
            read_space(path)


# --- the ask/tell loop ----------------------------------------------------------------------------
def _keys(frame, cols):
    return set(map(tuple, frame[cols].astype(str).to_numpy()))


def test_ask_tell_rounds_on_a_small_space_are_new_distinct_and_use_unmeasured_categories():
    task = PottsTask(slots=3, vocab=3, contexts=2, seed=0)
    frame = task.table(n=30, seed=1).drop_duplicates(["ctx", "s0", "s1", "s2"])
    space = {"s0": ["a", "b", "c", "d"]}                                 # "d" never measured
    d = Designer("s?", "y", "ctx", space=space, config=DesignConfig(**FAST))
    d.tell(frame)
    seen = _keys(frame, ["ctx", "s0", "s1", "s2"])
    for _ in range(2):
        batch = d.ask(6)
        assert list(batch.columns) == ["ctx", "s0", "s1", "s2", "predicted", "uncertainty", "rank"]
        assert batch.groupby("ctx").size().tolist() == [6, 6]
        keys = _keys(batch, ["ctx", "s0", "s1", "s2"])
        assert len(keys) == 12 and not keys & seen
        assert np.isfinite(batch[["predicted", "uncertainty"]].to_numpy()).all() and (batch["uncertainty"] > 0).all()
        assert batch.groupby("ctx")["rank"].apply(list).tolist() == [list(range(1, 7))] * 2
        seen |= keys
        d.tell(batch.assign(y=np.arange(len(batch), dtype=float)).drop(columns=["predicted", "uncertainty", "rank"]))
    everything = d.ask(4 * 3 * 3)                                         # more than the rows left: all of them
    left = [36 - sum(k[0] == c for k in seen) for c in ("c0", "c1")]
    assert everything.groupby("ctx").size().tolist() == left
    assert everything.attrs["short"] == 2
    rest = _keys(everything, ["ctx", "s0", "s1", "s2"])
    assert not rest & seen and len(rest | seen) == 2 * 36                # with every row of "d", never measured


def test_generator_steps_follow_the_space_size():
    """generator_steps None: REINFORCE steps only where a context's space is beyond MAX_ENUMERATE rows
    (then the scorer has SCORER_SHARE of the time, else SCORER_ALONE_SHARE); a set count is kept."""
    from choicegrad.decoding.rows import MAX_ENUMERATE
    from choicegrad.design.designer import GENERATOR_STEPS
    frame = PottsTask(slots=3, vocab=3, contexts=2, seed=0).table(n=30, seed=1)
    wide = {f"s{i}": list("abc") for i in range(3)} | {f"t{i}": [str(v) for v in range(10)] for i in range(7)}
    wide_frame = frame.assign(**{f"t{i}": "0" for i in range(7)})
    for features, space, table, steps in (("s?", None, frame, 0), (["s?", "t?"], wide, wide_frame, GENERATOR_STEPS)):
        d = Designer(features, "y", "ctx", space=space, config=DesignConfig(**{**FAST, "generator_steps": None}))
        d.tell(table)
        assert (d.table().space.num_rows() > MAX_ENUMERATE) == (steps > 0)
        assert d.generator_steps(d.table()) == steps
        d.config = DesignConfig(**FAST)
        assert d.generator_steps(d.table()) == FAST["generator_steps"]


def _failing_table(n=240, seed=1):
    """6 slots x 5 categories (searched, not enumerated), 2 contexts; rows with s0 == s1 fail."""
    task = PottsTask(slots=6, vocab=5, contexts=2, seed=0)
    frame = task.table(n=n, seed=seed).drop_duplicates(["ctx"] + [f"s{i}" for i in range(6)]).reset_index(drop=True)
    fails = frame["s0"] == frame["s1"]
    frame.loc[fails, "y"] = np.where(np.arange(fails.sum()) % 2, -np.inf, np.nan)
    return task, frame


def test_failed_rows_are_learned_and_never_proposed_again(tmp_path):
    task, frame = _failing_table()
    cols = ["ctx"] + [f"s{i}" for i in range(6)]
    cfg = DesignConfig(**FAST, min_distance=2, acquisition="thompson")
    d = Designer("s?", "y", "ctx", config=cfg)
    d.tell(frame)
    seen, failed = _keys(frame, cols), _keys(frame[~np.isfinite(frame["y"])], cols)
    for r in range(2):
        batch = d.ask(16)
        assert "p_feasible" in batch.columns and batch["p_feasible"].between(0, 1).all()
        assert batch.groupby("ctx").size().tolist() == [16, 16]
        keys = _keys(batch, cols)
        assert len(keys) == 32 and not keys & seen and not keys & failed
        for _, grp in batch.groupby("ctx"):                                  # min_distance within each context
            x = grp[cols[1:]].to_numpy()
            dist = (x[:, None, :] != x[None, :, :]).sum(-1) + 99 * np.eye(len(x), dtype=int)
            assert dist.min() >= 2
        fail = (batch["s0"] == batch["s1"]).to_numpy()
        y = np.where(fail, -np.inf, np.where(np.arange(len(batch)) % 3, 1.0, np.nan))   # NaN: failed as well
        d.tell(batch[cols], y)
        seen |= keys
        failed |= _keys(batch[~np.isfinite(y)], cols)
    assert len(failed) == int(torch.isinf(d.table().y).sum())                # every failure kept as -inf
    assert d.feasibility is not None


def test_state_round_trip_and_warm_start(tmp_path):
    _, frame = _failing_table()
    d = Designer("s?", "y", "ctx", config=DesignConfig(**FAST))
    d.tell(frame)
    d.ask(4)
    d.save(tmp_path / "state")
    loaded = Designer.load(tmp_path / "state")
    assert loaded.rounds == 1 and loaded.feasibility is not None
    saved, back = d.scorer.state_dict(), loaded.scorer.state_dict()
    assert list(saved) == list(back) and all(torch.equal(saved[k].cpu(), back[k]) for k in saved)
    fresh = Scorer(loaded.scorer.space, loaded.scorer.context, "y", loaded.scorer.config, k=2)
    assert warm_start(fresh, loaded.scorer)                                   # what the next round starts from
    assert all(torch.equal(a, b) for a, b in zip(fresh.members[1].parameters(), loaded.scorer.members[1].parameters()))
    other = Scorer(loaded.scorer.space, loaded.scorer.context, "y", loaded.scorer.config.model_copy(
        update={"embed_dim": 3}), k=2)
    assert not warm_start(other, loaded.scorer)                               # other shapes: a fresh start
    loaded.tell(frame)
    assert len(loaded.ask(4)) == 8 and loaded.rounds == 2
    same = Designer(["s0,s1", "s2,s3,s4,s5"], "y", ["ctx"], config=DesignConfig(**FAST))
    same.tell(frame)
    same.warm_from(tmp_path / "state")                                        # the same columns, spelled otherwise
    other = Designer("s0,s1", "y", "ctx", config=DesignConfig(**FAST))
    other.tell(frame)
    with pytest.raises(InputError, match="another design"):
        other.warm_from(tmp_path / "state")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.csv").write_text("x\n")
    with pytest.raises(InputError, match="not a design state"):
        same.save(tmp_path / "data")
    assert (tmp_path / "data" / "keep.csv").is_file()


def test_designer_bad_inputs():
    _, frame = _failing_table()
    d = Designer("s?", "y", "ctx", config=DesignConfig(**FAST))
    with pytest.raises(InputError, match="nothing measured yet"):
        d.ask(4)
    with pytest.raises(InputError, match="score"):
        d.tell(frame.drop(columns="y"))
    assert d.measured is None                                            # nothing half-added
    with pytest.raises(InputError, match="2 scores for 3 rows"):
        d.tell(frame.head(3), [1.0, 2.0])
    with pytest.raises(InputError, match="text/\\+inf at row 2"):
        d.tell(frame.head(3), [1.0, "high", None])
    assert d.measured is None
    d.tell(frame.head(12).assign(y=[1.0, 2.0] + [-np.inf] * 10))
    with pytest.raises(InputError, match="2 of 12 measured rows have a score"):
        d.ask(4)
    with pytest.raises(InputError, match="batch size"):
        d.ask(0)
    d.tell(frame.iloc[12:40])
    far = Designer("s?", "y", "ctx", config=DesignConfig(**FAST, min_distance=7))
    far.tell(frame)
    with pytest.raises(InputError, match="more than the 6 slots"):
        far.ask(2)
    with pytest.raises(InputError, match="unknown value 'c9'"):
        d.ask(2, pd.DataFrame({"ctx": ["c9"]}))


# --- the trust region's candidates ------------------------------------------------------------------------
def test_local_changes_hold_every_single_change_of_the_best_rows_first():
    from choicegrad.design.designer import _changes

    elite = torch.tensor([[[0, 1, 2], [3, 3, 3], [-1, -1, -1]], [[-1, -1, -1]] * 3])   # context 1: no elite
    has = torch.tensor([[True, True, False], [False, False, False]])
    allowed = torch.ones(2, 3, 4, dtype=torch.bool)
    allowed[:, 2, 1] = False                                          # slot 2 never takes category 1
    rows = _changes(elite, has, allowed, 24, torch.Generator().manual_seed(0))
    assert rows.shape == (2, 24, 3) and (rows[1] == -1).all()
    first, rest = rows[0, :12], rows[0, 12:]
    singles = {(a, 1, 2) for a in (1, 2, 3)} | {(0, b, 2) for b in (0, 2, 3)} | {(0, 1, c) for c in (0, 3)}
    assert {tuple(r) for r in first[:8].tolist()} == singles          # all 8 single changes of the best row, first
    assert all((torch.tensor(r) != torch.tensor([3, 3, 3])).sum() == 1 for r in first[8:].tolist())
    assert not (first[:, 2] == 1).any() and not (rest[:, 2] == 1).any()
    near = torch.stack([(rest != elite[0, e]).sum(-1) for e in range(2)]).min(0).values
    assert (near <= 2).all()                                          # 3 slots: every row is near an elite row


def test_local_changes_cross_the_elite_rows():
    from choicegrad.design.designer import _changes

    S = 8
    elite = torch.stack([torch.zeros(S, dtype=torch.long), torch.full((S,), 3)])[None]      # (1, 2, S)
    rows = _changes(elite, torch.ones(1, 2, dtype=torch.bool), torch.ones(1, S, 4, dtype=torch.bool), 600,
                    torch.Generator().manual_seed(0))[0, 48:]             # past the 2 x 24 single changes
    dist = torch.stack([(rows != elite[0, e]).sum(-1) for e in range(2)]).min(0).values
    crossed = rows[dist > 2]
    assert len(crossed) > 40          # a third are crossed, half of those from two different rows (of 2 here)
    assert ((crossed == 1) | (crossed == 2)).sum(-1).le(1).all()      # each slot from a parent but one moved at most


def test_local_changes_of_a_wide_space_are_drawn_not_enumerated():
    from choicegrad.design.designer import MAX_NEIGHBOUR_CELLS, _changes

    S, V = 8, MAX_NEIGHBOUR_CELLS // 64 + 1
    elite = torch.zeros(1, 2, S, dtype=torch.long)
    rows = _changes(elite, torch.ones(1, 2, dtype=torch.bool), torch.ones(1, S, V, dtype=torch.bool), 64,
                    torch.Generator().manual_seed(0))
    dist = (rows[0] != 0).sum(-1)
    assert (dist <= 2).all() and (dist == 2).any()
