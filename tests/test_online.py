"""The online benchmark on a tiny Ehrlich function: every method's rounds, its invariants, the report."""

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
    for bad in ("nope", "genetic:kappa=1", "designer:foo=1", "designer:kappa=-1"):
        with pytest.raises(ValueError):
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
