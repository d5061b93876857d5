"""Benchmark tasks: enumerated landscapes against brute-force Python oracles, optima, statistics,
training tables, the real landscapes (skipped when ../shared/data is absent) and item selection."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from choicegrad.data.table import load_table
from choicegrad.errors import InputError
from choicegrad.generators import ItemObjective
from choicegrad.bench.tasks import TASKS, BenchmarkTask, ItemSelectionTask, Landscape, get_task
from choicegrad.bench.tasks import registry
from choicegrad.bench.tasks.base import KINDS
from choicegrad.data.space import ChoiceSpace
from choicegrad.bench.tasks.stats import nan_stats
from choicegrad.bench.tasks.synthetic import ehrlich, grid_space, nk, potts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def real(name: str) -> Landscape:
    path = DATA / f"{name}.parquet"
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared/data beside the repo holds the real landscapes)")
    return get_task(name, data_dir=DATA)


def brute(landscape: Landscape, value) -> torch.Tensor:
    """(C, R) scores from a per-row Python function value(c, row tuple), rows in itertools order."""
    rows = list(itertools.product(*[range(v) for v in landscape.space.sizes]))
    return torch.tensor([[value(c, x) for x in rows] for c in range(landscape.num_contexts)])


def check_optimum(landscape: Landscape, expected: torch.Tensor) -> None:
    rows, values = landscape.optimum()
    torch.testing.assert_close(values, expected.max(1).values)
    ids = torch.arange(landscape.num_contexts)
    torch.testing.assert_close(landscape.oracle(ids, rows), values)


# --- synthetic landscapes against brute force -----------------------------------------------------
def test_potts_matches_brute_force():
    L = potts(slots=3, vocab=3, contexts=2, seed=1)
    h, J = L.model.h, L.model.J

    def value(c, x):
        return sum(float(h[c, s, x[s]]) for s in range(3)) + sum(
            float(J[s, t, x[s], x[t]]) for s in range(3) for t in range(s + 1, 3))

    expected = brute(L, value)
    torch.testing.assert_close(L.scores, expected)
    check_optimum(L, expected)
    assert L.context_column == "ctx" and L.context_labels == ["c0", "c1"]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_nk_matches_brute_force_and_has_order_k(k):
    L = nk(k=k, slots=5, vocab=3, contexts=3, seed=k)
    m = L.model
    w = m.weight

    def value(c, x):
        total = 0.0
        for s in range(5):
            key = sum(x[int(n)] * 3 ** (k - 1 - j) for j, n in enumerate(m.neighbours[s]))
            total += (1 - w) * float(m.shared[s, key]) + w * float(m.tables[c, s, key])
        return total / 5

    expected = brute(L, value)
    torch.testing.assert_close(L.scores, expected)
    check_optimum(L, expected)
    # term s changes with slot t exactly when t is in s's neighbourhood (k slots)
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(3, (400, 5), generator=g)
    ctx = torch.randint(3, (400,), generator=g)
    base = m.terms(ctx, rows)
    depends = torch.zeros(5, 5, dtype=torch.bool)
    for t in range(5):
        moved = rows.clone()
        moved[:, t] = (moved[:, t] + 1) % 3
        depends[:, t] = (m.terms(ctx, moved) != base).any(0)
    member = torch.zeros(5, 5, dtype=torch.bool).scatter(1, m.neighbours, True)
    assert torch.equal(depends, member) and bool((depends.sum(1) == k).all())


def test_nk_contexts_have_different_unique_optima():
    L = nk(k=3, slots=6, vocab=4, contexts=8, seed=0)
    rows, values = L.optimum()
    assert len({tuple(r) for r in rows.tolist()}) > 1
    second = L.scores.topk(2, dim=1).values[:, 1]
    assert bool((values - second > 0).all())
    with pytest.raises(ValueError, match="k: interaction order"):
        nk(k=5)
    with pytest.raises(ValueError, match="slots"):
        nk(k=4, slots=3)


def test_ehrlich_matches_brute_force():
    L = ehrlich(slots=6, vocab=3, motifs=2, motif_length=2, contexts=3, seed=2)
    m = L.model
    allowed, el, off = m.allowed.tolist(), m.elements.tolist(), m.offsets.tolist()

    def value(c, x):
        if not all(allowed[x[s]][x[s + 1]] for s in range(5)):
            return -1.0
        out = 1.0
        for a, o in zip(el[c], off[c]):
            best = max(sum(x[l + oj] == aj for aj, oj in zip(a, o)) for l in range(6 - o[-1]))
            out *= (best * m.quantization // 2) / m.quantization
        return out

    expected = brute(L, value)
    torch.testing.assert_close(L.scores, expected)
    check_optimum(L, expected)


def test_ehrlich_optimum_feasibility_and_single_swap():
    L = ehrlich(slots=6, vocab=4, motifs=2, motif_length=3, contexts=4, seed=0)
    m, S, V = L.model, 6, 4
    rows, values = L.optimum()
    assert torch.equal(values, torch.ones(4))
    torch.testing.assert_close(L.oracle(torch.arange(4), m.witness), torch.ones(4))
    feasible = m.feasible(L.all_rows())
    assert 0 < int((~feasible).sum()) and float(L.scores[:, ~feasible].max()) < float(L.scores[:, feasible].min())
    assert not torch.equal(m.elements[0], m.elements[1]) or not torch.equal(m.offsets[0], m.offsets[1])
    # every context has an optimal row that one swap (slot s -> category v) makes infeasible
    for c in range(4):
        best = L.all_rows()[L.scores[c] == 1.0]                                   # (B, S)
        swaps = best[:, None, None, :].repeat(1, S, V, 1)
        swaps[:, torch.arange(S)[:, None], torch.arange(V)[None, :], torch.arange(S)[:, None]] = \
            torch.arange(V)[None, :].expand(S, V)
        assert bool((L.oracle(torch.full((swaps[..., 0].numel(),), c), swaps.view(-1, S)) == -1).any())
    with pytest.raises(ValueError, match="slots"):
        ehrlich(slots=5, motifs=2, motif_length=3)
    with pytest.raises(ValueError, match="vocab"):
        ehrlich(vocab=2)


# --- Landscape from a table ----------------------------------------------------------------------
def small_frame() -> pd.DataFrame:
    """2 contexts x (s0 in {y, x}) x (s1 in {3, 1, 2} as ints), shuffled, one row left out."""
    g = np.random.default_rng(0)
    cells = [(c, a, b) for c in ("u", "t") for a in ("y", "x") for b in (3, 1, 2)]
    frame = pd.DataFrame(cells, columns=["ctx", "s0", "s1"])
    frame["y"] = g.normal(size=len(frame))
    return frame.iloc[1:].sample(frac=1.0, random_state=1).reset_index(drop=True)


def test_from_frame_round_trip_and_optimum():
    frame = small_frame()
    L = Landscape.from_frame("small", frame, ["s0", "s1"], context="ctx")
    assert L.context_labels == ["t", "u"] and L.space.slots[1].categories == ["1", "2", "3"]
    assert (L.num_contexts, L.num_rows) == (2, 6) and int(torch.isnan(L.scores).sum()) == 1
    assert torch.equal(L.row_index(L.all_rows()), torch.arange(6))
    rows = L.space.encode(frame)
    ctx = torch.as_tensor(pd.Index(L.context_labels).get_indexer(frame["ctx"]))
    torch.testing.assert_close(L.oracle(ctx, rows), torch.tensor(frame["y"].to_numpy(), dtype=torch.float32))
    best_rows, best = L.optimum()
    top = frame.loc[frame.groupby("ctx")["y"].idxmax()].sort_values("ctx")
    torch.testing.assert_close(best, torch.tensor(top["y"].to_numpy(), dtype=torch.float32))
    assert L.space.decode(best_rows).values.tolist() == top[["s0", "s1"]].astype(str).values.tolist()
    med = frame.groupby("ctx")["y"].median().sort_index().to_numpy()
    torch.testing.assert_close(L.stats()["median"], torch.tensor(med, dtype=torch.float32))
    assert list(L.context_frame()["ctx"]) == ["t", "u"]
    with pytest.raises(ValueError, match="rows: row 0 slot 's1'"):
        L.row_index(torch.tensor([[0, 3]]))


def test_from_frame_errors():
    frame = small_frame()
    twice = pd.concat([frame, frame.iloc[[2]]], ignore_index=True)
    with pytest.raises(InputError, match=rf"duplicate row: data rows 3 and {len(twice)}"):
        Landscape.from_frame("dup", twice, ["s0", "s1"], context="ctx")
    with pytest.raises(InputError, match='slot column "s2" not found'):
        Landscape.from_frame("bad", frame, ["s0", "s2"], context="ctx")
    blank = frame.assign(s0=frame["s0"].where(frame.index != 1))
    with pytest.raises(InputError, match='slot column "s0": missing value at row 2'):
        Landscape.from_frame("blank", blank, ["s0", "s1"], context="ctx")


def test_normalise_and_gap_closed_by_hand():
    space = grid_space(1, 4)
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, float("nan"), 5.0, 3.0]])
    L = Landscape("hand", space, scores, "ctx", ["c0", "c1"])
    st = L.stats()
    torch.testing.assert_close(st["mean"], torch.tensor([1.5, 3.0]))
    torch.testing.assert_close(st["median"], torch.tensor([1.5, 3.0]))
    ctx, y = torch.tensor([0, 1, 1]), torch.tensor([2.0, 3.0, 5.0])
    torch.testing.assert_close(L.normalise(ctx, y), torch.tensor([2 / 3, 0.5, 1.0]))
    torch.testing.assert_close(L.gap_closed(ctx, y), torch.tensor([1 / 3, 0.0, 1.0]))
    rows, best = L.optimum()
    assert rows[:, 0].tolist() == [3, 2] and best.tolist() == [3.0, 5.0]


def test_nan_stats_match_numpy():
    x = torch.randn(3, 7)
    x[0, 2] = x[1, :3] = float("nan")
    st = nan_stats(x)
    for name, fn in (("min", np.nanmin), ("max", np.nanmax), ("mean", np.nanmean), ("median", np.nanmedian)):
        torch.testing.assert_close(st[name], torch.tensor(fn(x.numpy(), axis=1)))


# --- training tables ------------------------------------------------------------------------------
def test_training_table_below_median_and_random():
    L = nk(k=2, slots=4, vocab=3, contexts=12, seed=0)
    table = L.training_table()
    assert list(table.columns) == ["ctx", "s0", "s1", "s2", "s3", "y"]
    median = L.stats()["median"]
    ids = torch.as_tensor(pd.Index(L.context_labels).get_indexer(table["ctx"]))
    assert bool((torch.tensor(table["y"].to_numpy(), dtype=torch.float32) < median[ids]).all())
    assert len(table) == int((L.scores < median[:, None]).sum())
    rows = L.space.encode(table)
    torch.testing.assert_close(L.oracle(ids, rows), torch.tensor(table["y"].to_numpy(), dtype=torch.float32))
    part = L.training_table(n=50, seed=3)
    assert len(part) == 50 and part.equals(L.training_table(n=50, seed=3))
    assert not part.equals(L.training_table(n=50, seed=4))
    assert len(L.training_table("random", n=100)) == 100
    with pytest.raises(ValueError, match="n: the \"random\" protocol"):
        L.training_table("random")
    with pytest.raises(ValueError, match="n: asked for"):
        L.training_table(n=10**6)
    with pytest.raises(ValueError, match="protocol"):
        L.training_table("below-mean")


def test_training_table_uses_measured_rows_only():
    frame = small_frame().assign(source=lambda f: np.where(f.index % 3 == 0, "imputed", "measured"))
    L = Landscape.from_frame("m", frame, ["s0", "s1"], context="ctx", measured_column="source")
    assert int(L.measured.sum()) == int((frame["source"] == "measured").sum())
    keys = set(map(tuple, L.training_table("random", n=int(L.measured.sum()))[["ctx", "s0", "s1"]].values.tolist()))
    measured = frame[frame["source"] == "measured"][["ctx", "s0", "s1"]].astype(str)
    assert keys == set(map(tuple, measured.values.tolist()))


def test_training_table_loads_through_load_table():
    L = nk(k=2, slots=4, vocab=3, contexts=12, seed=0)
    data = load_table(L.training_table(n=300), "s*", "y", L.context_column)
    assert [s.categories for s in data.space.slots] == [s.categories for s in L.space.slots]
    cat, _ = data.context.encode(L.context_frame())
    assert cat[:, 0].tolist() == list(range(12))   # zero-padded labels keep the context order


# --- registry -------------------------------------------------------------------------------------
def test_registry():
    assert set(TASKS) == {"potts", "nk2", "nk3", "nk4", "ehrlich", "planted", "tfbind8", "gb1", "pard3",
                          "potts-ctx", "mixed-ctx", "items", "slates", "pick-five"}
    L = get_task("nk4", slots=4, vocab=2, contexts=2)
    assert L.name == "nk4" and L.model.k == 4
    with pytest.raises(ValueError, match='did you mean "potts"'):
        get_task("pots")
    with pytest.raises(FileNotFoundError, match="choicegrad data fetch gb1"):
        get_task("gb1", data_dir="/nonexistent")


# --- real landscapes ------------------------------------------------------------------------------
def test_tfbind8():
    L = real("tfbind8")
    assert tuple(L.scores.shape) == (25, 65536) and not bool(torch.isnan(L.scores).any())
    assert L.context_column == "tf" and L.measured is None and L.space.slots[0].categories == list("ACGT")


def test_gb1_and_pard3():
    L = real("gb1")
    assert tuple(L.scores.shape) == (1, 160000) and int(L.measured.sum()) == 149361
    rows, _ = L.optimum()
    assert "".join(L.space.decode(rows).iloc[0]) == "FWAA"
    assert L.context_column is None and L.context_frame().shape == (1, 0)
    table = L.training_table()
    assert list(table.columns) == ["s0", "s1", "s2", "s3", "y"]
    P = real("pard3")
    assert tuple(P.scores.shape) == (2, 8000) and P.context_labels == ["ParE2", "ParE3"]


# --- item selection -------------------------------------------------------------------------------
def test_item_selection_optimum_matches_brute_force():
    task = ItemSelectionTask(slots=2, dim=3, lengths=(2, 4), seed=0)
    ctx = task.draw(6, torch.Generator().manual_seed(0))
    values, rows = task.enumerate(ctx)
    assert values.shape == (6, 16) and rows.shape == (16, 2)
    best_rows, best = task.optimum(ctx)
    for b in range(6):
        n = int(ctx.mask[b].sum())
        combos = list(itertools.product(range(n), repeat=2))
        scores = [float(task.value(ctx.items[b, list(c)][None]))for c in combos]
        assert math.isclose(float(best[b]), max(scores), rel_tol=1e-5, abs_tol=1e-5)
        assert tuple(best_rows[b].tolist()) == combos[int(np.argmax(scores))]
        assert int(torch.isfinite(values[b]).sum()) == n * n
    st = task.stats(ctx)
    torch.testing.assert_close(task.normalise(best, st), torch.ones(6))
    torch.testing.assert_close(task.gap_closed(best, st), torch.ones(6))
    torch.testing.assert_close(st["mean"], torch.tensor(np.nanmean(values.numpy(), 1)))


def test_item_selection_is_differentiable_and_interacting():
    task = ItemSelectionTask(seed=1)
    ctx = task.draw(8, torch.Generator().manual_seed(0))
    logits = torch.randn(8, 3, ctx.items.shape[1], requires_grad=True)
    soft = torch.softmax(logits.masked_fill(~ctx.mask[:, None, :], -1e9), -1)
    ItemObjective(task.reward)(soft, ctx).sum().backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad.abs().sum()) > 0
    # the best item for slot 0 changes with the item in slot 1 (slot 2 fixed to item 0)
    values, _ = task.enumerate(ctx)
    N = ctx.items.shape[1]
    grid = values.view(8, N, N, N)[..., 0]                                        # (B, slot0, slot1)
    best0 = grid.nan_to_num(float("-inf")).argmax(1)                              # (B, slot1)
    assert any(len(set(best0[b, ctx.mask[b]].tolist())) > 1 for b in range(8))


def test_real_landscapes_are_looked_up_in_order(tmp_path, monkeypatch):
    work, env_dir, arg_dir = tmp_path / "repo", tmp_path / "env", tmp_path / "arg"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    assert registry.data_dir_for() is None                       # no ../shared/data here: only the fetch cache
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert registry.data_dir_for() == registry.SHARED_DATA_DIR  # the repository layout, when present
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(env_dir))
    assert registry.data_dir_for() == env_dir
    assert registry.data_dir_for(arg_dir) == arg_dir
    monkeypatch.setenv("CHOICEGRAD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="choicegrad data fetch gb1"):
        registry.find_task_data("gb1", arg_dir)


# --- the contract every registered task passes ------------------------------------------------------
# a tiny instance of every registered task (the real landscapes take no options: their own files)
TINY = {
    "potts": dict(slots=3, vocab=3, contexts=2), "nk2": dict(slots=3, vocab=3, contexts=2),
    "nk3": dict(slots=3, vocab=3, contexts=2), "nk4": dict(slots=4, vocab=2, contexts=2),
    "ehrlich": dict(slots=4, vocab=3, motifs=2, motif_length=2, contexts=2),
    "planted": dict(slots=3, vocab=3, contexts=2, modes=2),
    "tfbind8": None, "gb1": None, "pard3": None,
    "potts-ctx": dict(slots=3, vocab=3, dims=2), "mixed-ctx": dict(slots=3, vocab=3, dims=2),
    "items": dict(slots=2, dim=3, lengths=(2, 4)), "slates": dict(slots=2, lengths=(2, 4), topics=2, noise=0),
    "pick-five": dict(slots=2, lengths=(2, 4)),
}


def test_every_registered_task_has_a_tiny_instance_in_the_contract_tests():
    assert set(TINY) == set(TASKS)


def tiny(name: str) -> BenchmarkTask:
    return real(name) if TINY[name] is None else get_task(name, **TINY[name])


@pytest.mark.parametrize("name", list(TASKS))
def test_task_contract(name):
    check_task_contract(tiny(name), name)


def check_task_contract(task: BenchmarkTask, name: str) -> None:
    """What every registered task must do (also applied to a task registered from a user's file, in
    tests/test_extending.py)."""
    assert isinstance(task, BenchmarkTask) and task.kind in KINDS and task.name == name
    S = task.num_slots
    if task.kind == "items":
        assert task.space is None
    else:
        assert isinstance(task.space, ChoiceSpace) and task.space.num_slots == S
    ctx = task.contexts(3, seed=1)
    B = len(ctx)
    assert B == (task.num_contexts if task.kind == "table" else 3)
    allowed = task.allowed(ctx)
    assert allowed.dtype == torch.bool and allowed.shape[:2] == (B, S) and bool(allowed.any(-1).all())
    # enumerate_truth: every row of the space, the same rows in every context, inside the vocabularies
    values, rows = task.enumerate_truth(ctx)
    R = len(rows)
    assert values.shape == (B, R) and rows.shape == (R, S) and not rows.is_floating_point()
    assert int(rows.min()) >= 0 and int(rows.max()) < allowed.shape[-1]
    assert len({tuple(r) for r in rows[: 1 << 14].tolist()}) == min(R, 1 << 14)        # distinct rows
    feasible = torch.isfinite(values)
    assert bool(feasible.any(1).all()) and not bool(torch.isinf(values).any())        # NaN marks "no score"
    # truth agrees with the enumeration (on a sample of rows for the large real landscapes)
    pick = torch.randperm(R, generator=torch.Generator().manual_seed(0))[:4096]
    got = task.truth(ctx, rows[pick].expand(B, -1, -1))
    assert got.shape == (B, len(pick)) and got.dtype == torch.float32
    ok = feasible[:, pick]
    torch.testing.assert_close(got[ok], values[:, pick][ok].float())
    # statistics are those of the enumerated truth; the optimum attains the max
    stats = task.statistics(ctx)
    assert set(stats) == {"min", "max", "mean", "median"} and all(v.shape == (B,) for v in stats.values())
    want = nan_stats(values)
    for k in ("min", "max", "median"):
        torch.testing.assert_close(stats[k].float(), want[k].float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["mean"].double(), want["mean"].double(), rtol=1e-4, atol=1e-4)
    assert bool((stats["min"] <= stats["mean"] + 1e-5).all() & (stats["mean"] <= stats["max"] + 1e-5).all())
    best_rows, best = task.optimum(ctx)
    assert best_rows.shape == (B, S)
    torch.testing.assert_close(best.float(), stats["max"].float())
    torch.testing.assert_close(task.truth(ctx, best_rows[:, None])[:, 0], best.float())
    # the same seed gives the same contexts
    again = task.contexts(3, seed=1)
    torch.testing.assert_close(task.truth(again, rows[pick].expand(B, -1, -1)), got, equal_nan=True)
    with pytest.raises(ValueError, match="rows"):
        task.truth(ctx, rows[:2])                                           # (R, S): not (B, M, S)
    # the training table: deterministic per seed, loadable, scored by the truth
    if task.kind == "items":
        with pytest.raises(ValueError, match="no training table"):
            task.training_table("random", n=20, seed=0)
        return
    n = 12 if task.kind == "table" and len(ctx) * R >= 12 else 5
    table = task.training_table("random", n=n, seed=0)
    pd.testing.assert_frame_equal(table, task.training_table("random", n=n, seed=0))
    assert len(table) == n and list(table.columns[-S - 1:]) == [*task.space.names, "y"]
    assert not table.equals(task.training_table("random", n=n, seed=1))
    data = load_table(table, task.space.names, "y", task.context_columns)
    assert len(data) == n and np.isfinite(table["y"].to_numpy()).all()
    rows_n = task.space.encode(table[task.space.names])[:, None]                   # (n, 1, S) task categories
    if task.kind == "table":
        labels = task.context_labels or [None]
        ids = torch.tensor([labels.index(c) for c in (table[task.context_column] if task.context_column
                                                       else [None] * n)])
        y = task.truth(ids, rows_n)[:, 0]
    else:
        y = task.truth(table, rows_n)[:, 0]
    torch.testing.assert_close(y.double(), torch.tensor(table["y"].to_numpy()), rtol=1e-5, atol=1e-5)


def test_contextual_training_table_is_the_log():
    task = get_task("potts-ctx", **TINY["potts-ctx"])
    pd.testing.assert_frame_equal(task.training_table(n=40, seed=3), task.log(40, seed=3))
    with pytest.raises(ValueError, match="protocol"):
        task.training_table("below-median", n=40)
