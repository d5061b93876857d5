"""`choicegrad propose` as a lab runs it, one round at a time, and `--space` on fit-scorer / fit."""

import json

import numpy as np
import pandas as pd
import pytest

from choicegrad.bench.tasks import PottsTask
from cli_helpers import assert_input_error, run

FAST = ["--features", "s?", "--score", "y", "--context", "ctx", "--ensemble", "2", "--max-minutes", "0.05"]
COLS = ["ctx", "s0", "s1", "s2", "s3"]


@pytest.fixture
def measured(tmp_path):
    frame = PottsTask(slots=4, vocab=5, contexts=2, seed=0).table(n=120, seed=1).drop_duplicates(COLS)
    frame["y"] = frame["y"].astype(object)
    frame.loc[frame.index[:6], "y"] = ["-inf", "", "-inf", "", "-inf", ""]   # six rows failed
    path = tmp_path / "measured.csv"
    frame.to_csv(path, index=False)
    return path


def test_three_rounds_with_state_and_space(tmp_path, measured):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"s0": list("abcdef")}))                  # "f" never measured
    state = tmp_path / "state"
    table = pd.read_csv(measured, keep_default_na=False)
    for r in range(3):
        out = tmp_path / f"next{r}.csv"
        res = run("propose", measured, *FAST, "--batch", "8", "--out", out, "--state", state, "--space", space,
                  "--seed", "3")
        assert res.exit_code == 0, res.output
        assert ("warm start" in res.output) == (r > 0)
        batch = pd.read_csv(out)
        assert list(batch.columns) == COLS + ["predicted", "uncertainty", "p_feasible", "rank"]
        assert batch.groupby("ctx").size().tolist() == [8, 8]
        seen = set(map(tuple, table[COLS].astype(str).to_numpy()))
        assert not set(map(tuple, batch[COLS].astype(str).to_numpy())) & seen
        table = pd.concat([table, batch[COLS].assign(y=np.linspace(0, 1, len(batch)))], ignore_index=True)
        table.to_csv(measured, index=False)                               # the lab adds its results
    saved = json.loads((state / "designer.json").read_text())
    assert saved["rounds"] == 3
    assert saved["config"]["scorer_keep"] == "last" and saved["config"]["scorer"]["activation"] == "relu"
    assert saved["config"]["generator_steps"] is None and saved["last"]["generator_steps"] == 0   # a small space


def test_propose_without_state_writes_parquet_and_leaves_nothing_else(tmp_path, measured):
    res = run("propose", measured, *FAST, "--batch", "4", "--min-distance", "2", "--acquisition", "thompson",
              "--scorer-keep", "best", "--scorer-epochs", "2", "--scorer-activation", "silu", "--generator-steps", "3",
              "--local-share", "0.5", "--min-feasible", "0.9", "--out", tmp_path / "b.parquet")
    assert res.exit_code == 0, res.output
    batch = pd.read_parquet(tmp_path / "b.parquet")
    assert batch.groupby("ctx").size().tolist() == [4, 4] and np.isfinite(batch["predicted"]).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.parquet", "measured.csv"]   # no state, lock or temp


@pytest.mark.parametrize("args, needles", [
    (["--batch", "4", "--out", "x.txt"], ["--out", "unsupported output type"]),
    (["--batch", "4", "--out", "x.csv", "--acquisition", "ei"], ["--acquisition", "ucb"]),
    (["--batch", "4", "--out", "x.csv", "--space", "space.json"], ["space.json", "not a label"]),
    (["--batch", "4", "--out", "x.csv", "--contexts", "ctx.csv"], ["ctx.csv", "unknown"]),
    (["--batch", "4", "--out", "x.csv", "--state", "measured.csv"], ["--state", "not a folder"]),
    (["--batch", "4", "--out", "x.csv", "--scorer-keep", "first"], ["--scorer-keep", "'best' or 'last'"]),
    (["--batch", "4", "--out", "x.csv", "--scorer-activation", "tanh"], ["--scorer-activation", "relu"]),
    (["--batch", "4", "--out", "x.csv", "--generator-steps", "-1"], ["--generator-steps", "0"]),
    (["--batch", "4", "--out", "x.csv", "--local-share", "1.5"], ["--local-share", "less than or equal to 1"]),
    (["--batch", "4", "--out", "x.csv", "--min-feasible", "-0.1"], ["--min-feasible", "greater than or equal to 0"]),
])
def test_propose_bad_inputs_exit_2_and_write_nothing(tmp_path, measured, monkeypatch, args, needles):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.json").write_text(json.dumps({"s0": [{"x": 1}]}))
    pd.DataFrame({"ctx": ["c9"]}).to_csv(tmp_path / "ctx.csv", index=False)
    res = run("propose", "measured.csv", *FAST, *args)
    assert_input_error(res, *needles)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.txt").exists()


def test_propose_table_problems_name_the_file(tmp_path, measured):
    frame = pd.read_csv(measured, keep_default_na=False)
    frame.loc[3, "y"] = "high"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    res = run("propose", tmp_path / "bad.csv", *FAST, "--batch", "4", "--out", tmp_path / "x.csv")
    assert_input_error(res, "bad.csv", 'score column "y"', "row 4")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"s0": ["a", "b"]}))
    res = run("propose", measured, *FAST, "--batch", "4", "--out", tmp_path / "x.csv", "--space", space)
    assert_input_error(res, "measured.csv", 'column "s0": unknown categor')
    assert not (tmp_path / "x.csv").exists()


def test_space_on_fit_scorer_and_fit(tmp_path, measured):
    frame = pd.read_csv(measured, keep_default_na=False)
    frame = frame[frame["y"].astype(str).str.strip().isin(["", "-inf"]) == False]  # noqa: E712
    frame.to_csv(tmp_path / "t.csv", index=False)
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"s1": list("edcbaz")}))
    res = run("fit-scorer", tmp_path / "t.csv", "-f", "s?", "-y", "y", "-c", "ctx", "--epochs", "2",
              "--space", space, "--out", tmp_path / "sc")
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "sc" / "scorer.json").read_text())
    assert meta["space"]["slots"][1]["categories"] == list("edcbaz")
    res = run("fit", tmp_path / "t.csv", "-f", "s?", "-y", "y", "-c", "ctx", "--steps", "5", "--scorer-epochs", "2",
              "--space", space, "--out", tmp_path / "gen")
    assert res.exit_code == 0, res.output
    res = run("generate", tmp_path / "gen", "--fix", "s1=z", "--top-k", "3", "--out", tmp_path / "z.csv")
    assert res.exit_code == 0, res.output                                 # an unmeasured category can be fixed
    assert (pd.read_csv(tmp_path / "z.csv")["s1"] == "z").all()
    space.write_text(json.dumps({"nope": ["a"]}))
    res = run("fit-scorer", tmp_path / "t.csv", "-f", "s?", "-y", "y", "--space", space, "--out", tmp_path / "sc2")
    assert_input_error(res, "space.json", '"nope" is not among the features')
    assert not (tmp_path / "sc2").exists()
