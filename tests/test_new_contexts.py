"""Generating for contexts never seen in training (issue 15): new numeric values are allowed, with a
warning only when far outside the training range; a category unseen in training is exit code 2."""

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from choicegrad.data.context import ContextEncoder, ContextRangeWarning
from choicegrad.run import Run
from cli_helpers import as_written_before_manifests, assert_input_error, run

FAST = ["--steps", "40", "--scorer-epochs", "4", "--force-generator"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A run on a table with a categorical (ctx: c0, c1) and a numeric (temp: 10 .. 30) context column."""
    from choicegrad.bench.tasks import PottsTask

    tmp = tmp_path_factory.mktemp("newctx")
    frame = PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=400, seed=1)
    temp = np.round(np.random.default_rng(0).uniform(10, 30, len(frame)), 1)
    frame = frame.assign(temp=temp, y=frame.y + 0.05 * (temp - 20))
    frame.to_csv(tmp / "table.csv", index=False)
    res = run("fit", tmp / "table.csv", "--features", "s?", "--score", "y", "--context", "ctx,temp",
              "--out", tmp / "run", "--seed", "1", *FAST)
    assert res.exit_code == 0, res.output
    return tmp / "run"


def test_training_range_is_saved(fitted):
    column = [c for c in json.loads((fitted / "scorer.json").read_text())["context"]["columns"] if c["name"] == "temp"]
    assert column[0]["kind"] == "numeric" and 10 <= column[0]["min"] < 11 and 29 < column[0]["max"] <= 30


def test_generate_for_new_numeric_values_without_warning(fitted, tmp_path):
    # values never in the table: inside the range, and just outside it (within one std): no warning
    pd.DataFrame({"ctx": ["c0", "c1", "c0"], "temp": [12.345, 27.55, 31.5]}).to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "out.csv"
    res = run("generate", fitted, "--contexts", tmp_path / "new.csv", "--top-k", "4", "--out", out)
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["ctx", "temp", "s0", "s1", "s2", "score", "rank"]
    assert list(frame.temp) == [12.345] * 4 + [27.55] * 4 + [31.5] * 4
    assert list(frame.ctx) == ["c0"] * 4 + ["c1"] * 4 + ["c0"] * 4
    assert list(frame["rank"]) == [1, 2, 3, 4] * 3


def test_generate_far_outside_warns_and_exits_0(fitted, tmp_path):
    pd.DataFrame({"ctx": ["c0", "c1", "c1"], "temp": [20.0, 100.0, -40.0]}).to_csv(tmp_path / "far.csv", index=False)
    out = tmp_path / "out.csv"
    res = run("generate", fitted, "--contexts", tmp_path / "far.csv", "--top-k", "2", "--out", out)
    assert res.exit_code == 0, res.output
    assert res.stderr.count("warning:") == 1, res.stderr
    for needle in ('context column "temp"', "2 row(s) far outside the training range", "rows 2, 3",
                   "values -40 .. 100", "trained on 10"):
        assert needle in res.stderr, res.stderr
    assert len(pd.read_csv(out)) == 6


def test_generate_unknown_category_exit_2(fitted, tmp_path):
    pd.DataFrame({"ctx": ["c0", "c9"], "temp": [20.0, 21.0]}).to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "out.csv"
    res = run("generate", fitted, "--contexts", tmp_path / "bad.csv", "--out", out)
    assert_input_error(res, 'context column "ctx": unknown value \'c9\' at row 2', "known: c0, c1",
                       "no embedding for a category unseen in training", "drop these rows", "refit")
    assert not out.exists()


def test_python_api_warns(fitted):
    loaded = Run.load(fitted)
    with pytest.warns(ContextRangeWarning, match='context column "temp": 1 row'):
        result = loaded.generate(pd.DataFrame({"ctx": ["c1"], "temp": [500.0]}), k=3)
    assert len(result) == 3 and (result.temp == 500.0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ContextRangeWarning)
        loaded.generate(pd.DataFrame({"ctx": ["c1", "c0"], "temp": [15.25, 9.0]}), k=2)   # inside / slightly outside
        loaded.generate(k=2)                                                              # the training contexts


def test_old_encoder_without_range_loads():
    old = ContextEncoder.model_validate({"columns": [{"name": "t", "kind": "numeric", "mean": 20.0, "std": 5.0},
                                                     {"name": "c", "kind": "categorical", "categories": ["a"]}]})
    assert old.numeric[0].training_range() == (5.0, 35.0)                 # mean +- 3 std
    assert old.out_of_range(pd.DataFrame({"t": [0.5, 39.0, np.nan], "c": ["a"] * 3})) == []
    notes = old.out_of_range(pd.DataFrame({"t": [20.0, 41.0], "c": ["a", "a"]}))
    assert len(notes) == 1 and "row 2" in notes[0] and "about 5 .. 35" in notes[0]


def test_old_run_without_range_generates(fitted, tmp_path):
    """A run saved before min/max were kept: scorer.json and generator.json without them still load."""
    old = tmp_path / "old"
    shutil.copytree(fitted, old)
    as_written_before_manifests(old)            # a folder from before manifests
    for name in ("scorer.json", "generator.json"):
        meta = json.loads((old / name).read_text())
        for column in meta["context"]["columns"]:
            column.pop("min", None), column.pop("max", None)
        (old / name).write_text(json.dumps(meta))
    loaded = Run.load(old)
    assert loaded.scorer.context.numeric[0].min is None
    with pytest.warns(ContextRangeWarning, match="about"):
        loaded.generate(pd.DataFrame({"ctx": ["c0"], "temp": [1000.0]}), k=2)
    pd.DataFrame({"ctx": ["c1"], "temp": [33.0]}).to_csv(tmp_path / "new.csv", index=False)
    res = run("generate", old, "--contexts", tmp_path / "new.csv", "--top-k", "2", "--out", tmp_path / "o.csv")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.output
