"""CLI runs: every bad input is exit code 2 with a message naming the problem, and no files left."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_helpers import as_written_before_manifests, assert_input_error, run

from choicegrad import __version__

FIT = ["--features", "s?", "--score", "y", "--context", "ctx", "--epochs", "3"]


def test_version_and_help():
    assert run("--version").output.strip() == f"choicegrad {__version__}"
    for cmd in ("fit-scorer", "score", "demo", "bench", "bench-online", "bench-budgets"):
        out = run(cmd, "--help").output
        assert "Example: choicegrad" in out, cmd


@pytest.mark.parametrize("args, usage", [
    (["bench", "--out", "o", "--docs", "d.md", "--help"], "bench suite"),        # the Makefile's lines
    (["bench-budgets", "--out", "o", "--jobs", "2", "--docs", "d.md", "--help"], "bench-budgets"),
    (["bench-online", "--tasks", "tfbind8", "--methods", "designer:min_distance=3", "--out", "o", "--append",
      "--docs", "d.md", "--help"], "bench-online"),
    (["bench", "online", "--help"], "bench online"),
    (["bench", "budgets", "--help"], "bench budgets"),
])
def test_bench_commands_keep_their_invocations(args, usage):
    res = run(*args)
    assert res.exit_code == 0 and f"Usage: root {usage} [OPTIONS]" in res.output, res.output


def test_bench_lists_of_integers_are_parsed_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_input_error(run("bench", "--seeds", "0,x", "--out", "o"), "--seeds: expected comma-separated integers")
    assert_input_error(run("bench-budgets", "--budgets", "16,0", "--out", "o"), "--budgets: expected positive integers")
    assert_input_error(run("bench", "online", "--seeds", ",", "--out", "o"), "--seeds: expected at least one")


def test_library_argument_names_become_each_commands_flags():
    from choicegrad.cli import FIT_FLAGS, FIT_SCORER_FLAGS, GENERATE_FLAGS, PROPOSE_FLAGS
    from choicegrad.cli_common import flag_of, with_flags
    from choicegrad.errors import InputError

    exc = with_flags(InputError("overwrite", ["out: exists", "generator_fit.steps: expected >= 0", "s1: kept"]),
                     FIT_FLAGS)
    assert exc.source == "--overwrite" and exc.problems == ["--out: exists", "--steps: expected >= 0", "s1: kept"]
    assert flag_of("method/generator", FIT_FLAGS) == "--method/--generator"
    assert flag_of("scorer_fit.epochs", FIT_FLAGS) == "--scorer-epochs"
    assert flag_of("scorer_fit.epochs", FIT_SCORER_FLAGS) == "--epochs"
    assert flag_of("scorer_fit.keep", FIT_FLAGS) == "--scorer-keep" and flag_of("keep", FIT_SCORER_FLAGS) == "--keep"
    assert flag_of("scorer_fit.model.activation", FIT_FLAGS) == "--scorer-activation"
    assert flag_of("model.activation", FIT_SCORER_FLAGS) == "--activation"
    assert flag_of("k", GENERATE_FLAGS) == "--top-k" and flag_of("n", PROPOSE_FLAGS) == "--batch"
    assert flag_of("config.min_distance", PROPOSE_FLAGS) == "--min-distance"
    for path in ("runs/out", "/tmp/table.out", "data/k"):      # files keep their names
        assert flag_of(path, {**FIT_FLAGS, **GENERATE_FLAGS}) == path


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "choicegrad.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_fit_scorer_then_score(tmp_path, potts_csv, potts_frame):
    res = run("fit-scorer", potts_csv, *FIT, "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "Spearman" in res.output and "test" in res.output
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["run.json", "scorer.json", "scorer.safetensors", "scorer_metrics.json"]
    meta = json.loads((tmp_path / "run" / "scorer.json").read_text())
    assert meta["space"]["slots"][0]["name"] == "s0" and meta["versions"]["choicegrad"] == __version__

    rows = potts_frame.drop(columns="y").head(7)
    rows.to_parquet(tmp_path / "rows.parquet")
    res = run("score", tmp_path / "run", tmp_path / "rows.parquet", "--out", tmp_path / "scored.csv")
    assert res.exit_code == 0, res.output
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert list(scored.columns) == [*rows.columns, "score"] and len(scored) == 7
    assert np.isfinite(scored["score"]).all()


def test_fit_scorer_train_quantile_reports_upper(tmp_path, potts_csv):
    res = run("fit-scorer", potts_csv, *FIT, "--train-quantile", "0.5", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "upper" in res.output
    metrics = json.loads((tmp_path / "run" / "scorer_metrics.json").read_text())
    assert metrics["metrics"]["upper"]["n"] + metrics["rows"] == 400 and 190 < metrics["rows"] <= 200


def test_fit_scorer_keep_last_and_activation(tmp_path, potts_csv):
    res = run("fit-scorer", potts_csv, "-f", "s?", "-y", "y", "-c", "ctx", "--epochs", "3", "--keep", "last",
              "--activation", "relu", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "scorer_metrics.json").read_text())
    assert metrics["fit"]["keep"] == "last" and metrics["fit"]["model"]["activation"] == "relu"
    assert json.loads((tmp_path / "run" / "scorer.json").read_text())["config"]["activation"] == "relu"
    res = run("fit-scorer", potts_csv, "-f", "s?", "-y", "y", "--keep", "middle", "--out", tmp_path / "bad")
    assert res.exit_code == 2 and "--keep" in res.output and not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "mutate, args, needles",
    [
        (lambda f: f.rename(columns={"s1": "slot1"}), ["--features", "s0,s1,s2", "--score", "y"],
         ["{path}", 'feature column "s1" not found']),
        (lambda f: f, ["--features", "s0,s_1", "--score", "y"], ["{path}", '"s_1" not found (did you mean "s1"?)']),
        (lambda f: f, ["--features", "s?", "--score", "yy"], ["{path}", '"yy" not found (did you mean "y"?)']),
        (lambda f: f.assign(y=f.y.astype(object).where(f.index != 4, "n/a")), FIT, ["{path}", 'score column "y"', "row 5"]),
        (lambda f: f.assign(y=f.y.where(f.index % 100 != 7, np.nan)), FIT, ["{path}", "rows 8, 108, 208, 308"]),
        (lambda f: f.assign(y=f.y.where(f.index != 0, np.inf)), FIT, ["{path}", "inf at row 1"]),
        (lambda f: f.head(0), FIT, ["{path}", "the table has no rows"]),
        (lambda f: f, ["--features", "s?", "--score", "y", "--context", "ctx:bogus"], ["--context", "kind must be one of num, cat"]),
    ],
    ids=["missing-column", "did-you-mean-feature", "did-you-mean-score", "non-numeric-score", "nan-score",
         "inf-score", "empty", "bad-context-kind"],
)
def test_bad_tables_exit_2_and_write_nothing(tmp_path, potts_frame, mutate, args, needles):
    path = tmp_path / "bad.csv"
    mutate(potts_frame.copy()).to_csv(path, index=False)
    res = run("fit-scorer", path, *args, "--out", tmp_path / "run")
    assert_input_error(res, *(n.replace("{path}", str(path)) for n in needles))
    assert not (tmp_path / "run").exists()


def test_duplicate_column_names(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,a,y\nx,p,1\ny,q,2\n")
    res = run("fit-scorer", path, "--features", "a", "--score", "y", "--out", tmp_path / "run")
    assert_input_error(res, "duplicate column name: a")
    assert not (tmp_path / "run").exists()


def test_missing_file_and_bad_type(tmp_path):
    assert_input_error(run("fit-scorer", tmp_path / "nope.csv", *FIT, "--out", tmp_path / "r"), "file not found")
    (tmp_path / "t.xlsx").write_text("x")
    assert_input_error(run("fit-scorer", tmp_path / "t.xlsx", *FIT, "--out", tmp_path / "r"), 'unsupported file type ".xlsx"')
    assert not (tmp_path / "r").exists()


def test_single_category_feature_warns_but_fits(tmp_path, potts_frame):
    path = tmp_path / "one.csv"
    potts_frame.assign(s2="k").to_csv(path, index=False)
    res = run("fit-scorer", path, *FIT, "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert 'warning:' in res.output and '"s2" has a single category' in res.output


@pytest.fixture
def fitted(tmp_path, potts_csv):
    res = run("fit-scorer", potts_csv, *FIT, "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    return tmp_path / "run"


def test_score_rejects_unknown_categories(tmp_path, fitted, potts_frame):
    rows = potts_frame.drop(columns="y").head(5).copy()
    rows.loc[2, "s1"] = "zzz"
    rows.loc[4, "ctx"] = "c9"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    res = run("score", fitted, tmp_path / "rows.csv", "--out", tmp_path / "out.csv")
    assert_input_error(res, "unknown category 'zzz' at row 3", "unknown value 'c9' at row 5")
    assert not (tmp_path / "out.csv").exists()


def test_score_missing_run_files(tmp_path, potts_csv):
    (tmp_path / "empty").mkdir()
    res = run("score", tmp_path / "empty", potts_csv, "--out", tmp_path / "out.csv")
    assert_input_error(res, "missing run file", "scorer.safetensors")
    assert not (tmp_path / "out.csv").exists()


def test_score_rejects_corrupt_checkpoint(tmp_path, fitted, potts_csv):
    (fitted / "scorer.safetensors").write_bytes(b"\x00garbage")
    res = run("score", fitted, potts_csv, "--out", tmp_path / "out.csv")
    assert_input_error(res, "scorer.safetensors does not belong to run")      # run.json's sha256 differs
    as_written_before_manifests(fitted)            # a folder from before manifests
    res = run("score", fitted, potts_csv, "--out", tmp_path / "out.csv")
    assert_input_error(res, "not a valid safetensors file")


def test_out_must_be_a_table(tmp_path, fitted, potts_csv):
    res = run("score", fitted, potts_csv, "--out", tmp_path / "out.txt")
    assert_input_error(res, 'unsupported output type ".txt"')


def test_out_folder_must_not_be_a_file(tmp_path, potts_csv):
    (tmp_path / "f").write_text("x")
    assert_input_error(run("fit-scorer", potts_csv, *FIT, "--out", tmp_path / "f"), "is not a folder")


def test_demo_on_builtin_table(tmp_path, monkeypatch):
    import choicegrad.bench.demo as demo

    from choicegrad.scorer.fit import ScorerFit
    from choicegrad.training.loop import GeneratorFit

    monkeypatch.setattr(demo, "SHARED_PARD3", Path(tmp_path / "absent.parquet"))
    # the demo's whole path, with shorter fits than a user's (keeps make test under 10 minutes)
    monkeypatch.setattr(demo, "ScorerFit", lambda **kw: ScorerFit(**{**kw, "epochs": 6}))
    monkeypatch.setattr(demo, "GeneratorFit", lambda **kw: GeneratorFit(**{**kw, "steps": 60}))
    res = run("demo", "--out", tmp_path / "demo")
    assert res.exit_code == 0, res.output
    assert "built-in synthetic Potts table" in res.output and "upper" in res.output
    assert (tmp_path / "demo" / "scorer.safetensors").is_file()


def test_score_can_treat_unknown_categories_as_missing(tmp_path, fitted, potts_frame):
    rows = potts_frame.drop(columns="y").head(3).copy()
    rows.loc[1, "s1"] = "zzz"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    res = run("score", fitted, tmp_path / "rows.csv", "--out", tmp_path / "out.csv", "--unknown", "missing")
    assert res.exit_code == 0, res.output
    assert np.isfinite(pd.read_csv(tmp_path / "out.csv")["score"]).all()
    res = run("score", fitted, tmp_path / "rows.csv", "--out", tmp_path / "o2.csv", "--unknown", "skip")
    assert_input_error(res, "--unknown", 'expected "error" or "missing"')


def test_fit_scorer_pairwise_option(tmp_path, potts_csv):
    from choicegrad import Scorer

    res = run("fit-scorer", potts_csv, *FIT, "--pairwise", "0", "--out", tmp_path / "off")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "off" / "scorer.json").read_text())["config"]["pairwise"] == 0
    assert not hasattr(Scorer.load(tmp_path / "off").members[0], "pair")
    res = run("fit-scorer", potts_csv, *FIT, "--pairwise", "-1", "--out", tmp_path / "bad")
    assert res.exit_code == 2 and not (tmp_path / "bad").exists()
