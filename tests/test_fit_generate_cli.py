"""`choicegrad fit` and `choicegrad generate`: a round trip on a small CSV, and every bad input is
exit code 2 with a clear message and no output file."""

import json

import pandas as pd
import pytest

from choicegrad.bench.tasks import PottsTask
from cli_helpers import as_written_before_manifests, assert_input_error, run

FAST = ["--steps", "40", "--scorer-epochs", "4", "--force-generator"]






@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=400, seed=1).to_csv(tmp / "table.csv", index=False)
    res = run("fit", tmp / "table.csv", "--features", "s?", "--score", "y", "--context", "ctx", "--out", tmp / "run",
              "--seed", "1", *FAST)
    assert res.exit_code == 0, res.output
    return tmp / "run"


def test_help_has_examples():
    for cmd in ("fit", "generate"):
        assert "Example: choicegrad" in run(cmd, "--help").output


def test_fit_writes_the_run(fitted):
    names = {p.name for p in fitted.iterdir()}
    assert {"scorer.safetensors", "scorer.json", "generator.safetensors", "generator.json", "config.json",
            "metrics.csv", "contexts.csv"} <= names
    config = json.loads((fitted / "config.json").read_text())
    assert config["generator_fit"]["method"] == "reinforce" and config["generator"]["kind"] == "autoregressive"
    assert config["generator_fit"]["seed"] == 1 and config["features"] == ["s0", "s1", "s2"]
    metrics = pd.read_csv(fitted / "metrics.csv")
    assert {"entropy", "distinct", "score_mean", "val_score", "scorer_calls"} <= set(metrics.columns)


def test_generate_round_trip(fitted, tmp_path):
    out = tmp_path / "cands.csv"
    res = run("generate", fitted, "--top-k", "7", "--out", out)
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["ctx", "s0", "s1", "s2", "score", "rank"]
    assert sorted(frame.ctx.unique()) == ["c0", "c1"]
    for _, group in frame.groupby("ctx"):
        assert list(group["rank"]) == list(range(1, 8))
        assert len(group[["s0", "s1", "s2"]].drop_duplicates()) == 7
        assert group.score.is_monotonic_decreasing


@pytest.mark.parametrize("decoder", ["argmax", "sample", "topk", "rerank", "polish", "anneal", "exhaustive"])
def test_generate_with_contexts_and_fixed_feature(fitted, tmp_path, decoder):
    pd.DataFrame({"ctx": ["c1", "c0", "c1"], "note": ["a", "b", "c"]}).to_csv(tmp_path / "ctx.csv", index=False)
    out = tmp_path / "cands.parquet"
    res = run("generate", fitted, "--contexts", tmp_path / "ctx.csv", "--fix", "s1=b", "--top-k", "3",
              "--decoder", decoder, "--out", out)
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(out)
    assert list(frame.ctx) == ["c1"] * 3 + ["c0"] * 3 + ["c1"] * 3
    assert (frame.s1 == "b").all()
    scored = run("score", fitted, out, "--out", tmp_path / "rescored.csv")
    assert scored.exit_code == 0, scored.output
    assert (pd.read_csv(tmp_path / "rescored.csv").score - frame.score).abs().max() < 1e-4


def test_context_free_table(tmp_path):
    frame = PottsTask(slots=3, vocab=3, contexts=1, seed=0).table(n=200, seed=1).drop(columns="ctx")
    frame.to_csv(tmp_path / "t.csv", index=False)
    res = run("fit", tmp_path / "t.csv", "-f", "s?", "-y", "y", "--out", tmp_path / "run",
              "--generator", "factorized", "--method", "st-gumbel", *FAST)
    assert res.exit_code == 0, res.output
    res = run("generate", tmp_path / "run", "--top-k", "30", "--out", tmp_path / "c.csv")
    assert res.exit_code == 0, res.output
    out = pd.read_csv(tmp_path / "c.csv")
    assert list(out.columns) == ["s0", "s1", "s2", "score", "rank"] and len(out) == 27   # the whole space
    assert "fewer than 30" in res.output


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--fix", "s9=a"], ["--fix", 'unknown feature "s9"']),
        (["--budget", "0"], ["--budget", "expected an integer >= 1"]),
        (["--fix", "S1=a"], ['unknown feature "S1"', 'did you mean "s1"']),
        (["--fix", "s_1=a"], ['unknown feature "s_1"', 'did you mean "s1"']),
        (["--fix", "s1=zz"], ['feature "s1" has no category "zz"']),
        (["--fix", "s1=A"], ['feature "s1" has no category "A"', 'did you mean "a"']),
        (["--fix", "s1"], ['"s1": expected FEATURE=CATEGORY']),
        (["--top-k", "0"], ["--top-k", ">= 1, got 0"]),
        (["--decoder", "beam"], ['unknown decoder "beam"']),
        (["--decoder", "rerankk"], ['did you mean "rerank"']),
        (["--contexts", "{tmp}/bad_ctx.csv"], ["unknown value 'c7' at row 2", "known: c0, c1"]),
        (["--contexts", "{tmp}/no_col.csv"], ['missing context column "ctx"']),
        (["--contexts", "{tmp}/nope.csv"], ["file not found"]),
    ],
    ids=["unknown-feature", "budget-zero", "did-you-mean-case", "did-you-mean-feature", "unknown-category", "did-you-mean-category", "malformed-fix", "k-zero",
         "unknown-decoder", "did-you-mean-decoder", "unknown-context", "missing-context-column", "missing-contexts"],
)
def test_generate_bad_input_exit_2_no_output(fitted, tmp_path, args, needles):
    pd.DataFrame({"ctx": ["c0", "c7"]}).to_csv(tmp_path / "bad_ctx.csv", index=False)
    pd.DataFrame({"tf": ["c0"]}).to_csv(tmp_path / "no_col.csv", index=False)
    out = tmp_path / "out.csv"
    res = run("generate", fitted, *[a.replace("{tmp}", str(tmp_path)) for a in args], "--out", out)
    assert_input_error(res, *needles)
    assert not out.exists()


def test_generate_missing_run_files(fitted, tmp_path):
    (tmp_path / "empty").mkdir()
    res = run("generate", tmp_path / "empty", "--out", tmp_path / "out.csv")
    assert_input_error(res, "missing run file", "generator.safetensors")
    only_scorer = tmp_path / "scorer_only"
    only_scorer.mkdir()
    for name in ("scorer.json", "scorer.safetensors"):
        (only_scorer / name).write_bytes((fitted / name).read_bytes())
    res = run("generate", only_scorer, "--out", tmp_path / "out.csv")
    assert_input_error(res, "run.json is missing")                # files copied by hand: nothing ties them
    (only_scorer / "run.json").write_bytes((fitted / "run.json").read_bytes())
    res = run("generate", only_scorer, "--out", tmp_path / "out.csv")
    assert_input_error(res, "generator.json is missing")
    assert not (tmp_path / "out.csv").exists()


def test_generate_corrupt_generator(fitted, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in fitted.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "generator.safetensors").write_bytes(b"\x00junk")
    res = run("generate", broken, "--out", tmp_path / "out.csv")
    assert_input_error(res, "generator.safetensors does not belong to run")   # run.json's sha256 differs
    as_written_before_manifests(broken)            # a folder from before manifests
    res = run("generate", broken, "--out", tmp_path / "out.csv")
    assert_input_error(res, "not a valid safetensors file")
    assert not (tmp_path / "out.csv").exists()


def test_fit_bad_method_and_generator(tmp_path):
    PottsTask(slots=3, vocab=3, contexts=1, seed=0).table(n=50, seed=1).to_csv(tmp_path / "t.csv", index=False)
    res = run("fit", tmp_path / "t.csv", "-f", "s?", "-y", "y", "--out", tmp_path / "run", "--method", "st_gumbell")
    assert_input_error(res, 'unknown method "st_gumbell"', 'did you mean "st-gumbel"')
    res = run("fit", tmp_path / "t.csv", "-f", "s?", "-y", "y", "--out", tmp_path / "run", "--generator", "autoregresive")
    assert_input_error(res, 'unknown generator "autoregresive"', 'did you mean "autoregressive"')
    res = run("fit", tmp_path / "t.csv", "-f", "s?,q", "-y", "y", "--out", tmp_path / "run")
    assert_input_error(res, 'feature column "q" not found')
    assert not (tmp_path / "run").exists()


def test_generate_spends_at_most_its_budget(fitted, tmp_path):
    """Default: max(5K, 256) scorer calls per context for polish; --budget sets it (2 contexts)."""
    import re

    from choicegrad.decoding import default_budget

    for args, per_context in (([], default_budget(3)), (["--budget", "40"], 40)):
        res = run("generate", fitted, "--top-k", "3", *args, "--out", tmp_path / "c.csv")
        assert res.exit_code == 0, res.output
        calls = int(re.search(r"\((\d+) scorer calls\)", res.output).group(1))
        assert 0 < calls <= 2 * per_context
