"""The online benchmark on a tiny Ehrlich function: every method's rounds, its invariants, the report."""

import re

import pandas as pd
import pytest
import torch

from choicegrad.bench.online import (History, OnlineSpec, Oracle, area, genetic_batch, parse_method, random_batch,
                                     run_method, run_online, start_rows)
from choicegrad.bench.online_report import publish_online
from choicegrad.bench.tasks import get_task

TINY = OnlineSpec("ehrlich", start="random", start_rows=40, batch=8, rounds=2, minutes=0.03,
                  options=(("slots", 6), ("vocab", 4), ("contexts", 2), ("seed", 1)))


@pytest.fixture(scope="module")
def landscape():
    return get_task("ehrlich", **dict(TINY.options))


def test_oracle_marks_infeasible_rows_failed(landscape):
    rows = landscape.all_rows()
    y = Oracle(landscape).measure(torch.zeros(len(rows), dtype=torch.long), rows)
    feasible = landscape.model.feasible(rows)
    assert bool(torch.isinf(y[~feasible]).all()) and bool(torch.isfinite(y[feasible]).all())


def test_start_rows_and_peer_batches_are_new_and_distinct(landscape):
    ctx, index = start_rows(landscape, TINY, seed=0)
    assert torch.bincount(ctx).tolist() == [40, 40]
    below = dict(TINY.__dict__, start="below-median")
    ctx_b, index_b = start_rows(landscape, OnlineSpec(**below), seed=0)
    median = landscape.stats()["median"]
    assert bool((landscape.scores[ctx_b, index_b] < median[ctx_b]).all())
    rows = landscape.rows_at(index)
    history = History(ctx, rows, Oracle(landscape).measure(ctx, rows), 4)
    allowed = landscape.space.mask().expand(2, -1, -1)
    for fn in (random_batch, genetic_batch):
        batch = fn(history, allowed, 8, torch.Generator().manual_seed(0))
        assert batch.shape == (2, 8, 6)
        flat_ctx = torch.arange(2).repeat_interleave(8)
        assert not history.seen(flat_ctx, batch.reshape(-1, 6)).any()
        assert all(len({tuple(r) for r in b.tolist()}) == 8 for b in batch)


@pytest.mark.parametrize("method", ["designer", "genetic", "random", "offline"])
def test_each_method_runs_rounds(landscape, method):
    records = run_method(landscape, TINY, method, seed=0)
    assert [r["round"] for r in records] == [0, 1, 2] and [r["calls"] for r in records] == [0, 8, 16]
    best = [r["best"] for r in records]
    assert best == sorted(best) and all(0 <= b <= 1 for b in best)                      # best so far never falls
    assert all(0 <= r["failed_share"] <= 1 for r in records[1:])
    if method == "designer":
        assert sum(r["failed_repeats"] for r in records) == 0


def test_area_is_what_the_rounds_added():
    curve = pd.DataFrame({"calls": [0, 10, 20], "best": [0.5, 0.7, 0.9]})
    assert area(curve) == pytest.approx(((0 + 0.2) / 2 * 10 + (0.2 + 0.4) / 2 * 10) / 20)   # 0.2


def test_parse_method():
    assert parse_method("designer") == ("designer", {})
    assert parse_method("designer:min_distance=3+acquisition=thompson") == (
        "designer", {"min_distance": 3, "acquisition": "thompson"})
    assert parse_method('designer:scorer={"activation":"silu"}+scorer_keep=best') == (
        "designer", {"scorer": {"activation": "silu"}, "scorer_keep": "best"})
    for bad in ("nope", "genetic:kappa=1", "designer:foo=1", "designer:kappa=-1"):
        with pytest.raises(ValueError):
            parse_method(bad)
    for bad, needle in (("designer:scorer={bad", "scorer={bad is not valid JSON"),
                        ('designer:scorer={"activation":"tanh"}', "scorer.activation: Input should be"),
                        ("designer:kappa=", "kappa: Input should be a valid number")):
        with pytest.raises(ValueError, match=re.escape(needle)):
            parse_method(bad)


def test_run_online_and_report(tmp_path):
    spec = OnlineSpec(**dict(TINY.__dict__, rounds=1))
    frame = run_online(["tiny"], ["genetic", "random"], [0, 1], tmp_path / "run", echo=lambda m: None,
                       specs={"tiny": spec})
    assert len(frame) == 2 * 2 * 2 and (tmp_path / "run" / "online.csv").is_file()
    frame = run_online(["tiny"], ["random"], [1], tmp_path / "run", echo=lambda m: None, specs={"tiny": spec},
                       append=True)
    assert len(frame) == 2 * 2 * 2 and len(pd.read_csv(tmp_path / "run" / "online.csv")) == 8
    doc = publish_online(tmp_path / "run", tmp_path / "docs" / "online.md", command="test")
    text = doc.read_text()
    assert "## tiny" in text and "| genetic |" in text and (tmp_path / "docs" / "online" / "tiny.png").is_file()


class ChainOracle:
    """An oracle-only task (no table of scores), as holo-ehrlich is: our own Ehrlich model, one
    context, started from feasible walks of its chain, judged on its known range [0, 1]."""

    context_column, context_labels, measured, num_contexts = None, [], None, 1

    def __init__(self, seed: int = 0):
        from choicegrad.bench.tasks.ehrlich import EhrlichModel
        from choicegrad.data.space import ChoiceSpace, Slot

        self.name = "chain"
        self.model = EhrlichModel(slots=8, vocab=5, contexts=1, infeasible=-1.0, seed=seed)
        self.space = ChoiceSpace(slots=[Slot(name=f"p{i}", categories=[str(v) for v in range(5)]) for i in range(8)])
        self.stats = {"min": torch.zeros(1), "max": torch.ones(1)}

    def oracle(self, ctx, rows):
        return self.model(ctx, rows).double()

    def start(self, n, seed):
        return self.model._walk(n, 8, torch.Generator().manual_seed(seed))


def test_an_oracle_only_task_runs_online_rounds(tmp_path, monkeypatch):
    from choicegrad.bench import online

    monkeypatch.setitem(online.ORACLE_TASKS, "chain", ChainOracle)
    spec = OnlineSpec("chain", start="task", start_rows=30, batch=6, rounds=2, minutes=0.03, options=(("seed", 3),))
    frame = run_online(["chain"], ["designer", "genetic"], [0], tmp_path / "run", echo=lambda m: None,
                       specs={"chain": spec})
    assert len(frame) == 2 * 3 and frame["top_share"].isna().all()           # no table: no share of the landscape
    assert frame["best"].between(0, 1).all() and (frame.groupby("method")["best"].diff().dropna() >= 0).all()
    start = frame[frame["round"] == 0]
    assert start["best"].nunique() == 1                                       # every method starts from the same rows
    text = publish_online(tmp_path / "run", tmp_path / "online.md", command="test").read_text()
    assert "30 feasible samples of its Markov chain" in text


def test_holo_ehrlich_is_feasible_from_its_start_and_scored_in_its_range():
    pytest.importorskip("holo")
    from choicegrad.bench.tasks.holo import HoloEhrlich

    task = HoloEhrlich(states=8, length=12, motifs=1, motif_length=4, quantization=2, seed=1)
    rows = task.start(64, seed=0)
    y = task.oracle(torch.zeros(64, dtype=torch.long), rows)
    assert task.feasible(rows).all() and y.ge(0).all() and y.le(1).all()
    random = torch.randint(8, (256, 12), generator=torch.Generator().manual_seed(0))
    yr = task.oracle(torch.zeros(256, dtype=torch.long), random)
    assert torch.equal(torch.isfinite(yr), task.feasible(random)) and not task.feasible(random).all()


def test_holo_ehrlich_missing_says_how_to_install(monkeypatch):
    from choicegrad.bench import online

    monkeypatch.setattr(online.ORACLE_TASKS["holo-ehrlich"], "missing",
                        staticmethod(lambda: "holo-ehrlich needs holo-bench: pip install --no-deps pytorch-holo"))
    problems = online.request_problems(["holo-ehrlich"], ["designer"])
    assert problems == ["tasks: holo-ehrlich needs holo-bench: pip install --no-deps pytorch-holo"]
