"""choicegrad.run.Run: fit writes the run folder, load validates it, generate matches `choicegrad generate`."""

import json
import shutil

import pandas as pd
import pytest
import torch

from choicegrad.bench.tasks import PottsTask
from choicegrad.errors import InputError
from choicegrad.run import FitOptions, Run, TableSpec, fit_scorer_run, parse_fix
from choicegrad.scorer.fit import ScorerFit
from choicegrad.training.loop import GeneratorFit

SPEC = TableSpec(features="s?", score="y", context="ctx")


def fit(table, out, seed=1):
    lines = []
    run = Run.fit(table, out, SPEC, scorer_fit=ScorerFit(epochs=4, seed=seed),
                  generator_fit=GeneratorFit(steps=40, seed=seed, beta=0.0), echo=lines.append, progress=False,
                  force_generator=True)
    return run, lines


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=400, seed=1).to_csv(tmp / "table.csv", index=False)
    run, lines = fit(tmp / "table.csv", tmp / "run")
    return run, lines


def test_fit_writes_the_run_and_returns_it_loaded(fitted, potts_csv, tmp_path):
    run, lines = fitted
    names = {p.name for p in run.out.iterdir()}
    assert {"scorer.safetensors", "scorer.json", "generator.safetensors", "generator.json", "config.json",
            "metrics.csv", "contexts.csv"} <= names
    assert lines[0].startswith("scorer: fitted on 400 rows") and lines[-1].startswith("generator: autoregressive + reinforce")
    assert run.config == json.loads((run.out / "config.json").read_text())
    assert run.config["generator_fit"]["steps"] == 40 and run.config["scorer_fit"]["epochs"] == 4
    assert run.context_columns == ["ctx"] and sorted(run.contexts.ctx) == ["c0", "c1"] and run.aligner is None
    # the conftest table fits the same way (a DataFrame is recorded as such)
    again, _ = fit(pd.read_csv(potts_csv), tmp_path / "run")
    assert again.config["data"] == "DataFrame" and again.config["rows"] == 400


def test_load_round_trip_generates_the_same_rows(fitted):
    run, _ = fitted
    loaded = Run.load(run.out)
    first, second = run.generate(k=4), loaded.generate(k=4)
    pd.testing.assert_frame_equal(first, second)
    assert list(first.columns) == ["ctx", "s0", "s1", "s2", "score", "rank"] and len(first) == 8
    assert first.attrs["contexts"] == 2 and first.attrs["short"] == 0 and first.attrs["scorer_calls"] > 0


def test_generate_with_fix_and_given_contexts(fitted):
    run, _ = fitted
    frame = run.generate(pd.DataFrame({"ctx": ["c1", "c0"], "note": ["x", "y"]}), k=3, decoder="rerank",
                         fix={"s1": "b"})
    assert list(frame.ctx) == ["c1"] * 3 + ["c0"] * 3 and (frame.s1 == "b").all()
    same = run.generate(pd.DataFrame({"ctx": ["c1", "c0"]}), k=3, decoder="rerank", fix=["s1=b"])
    pd.testing.assert_frame_equal(frame, same)


@pytest.mark.parametrize("fix, needle", [({"s9": "a"}, 'unknown feature "s9"'), ({"s1": "A"}, 'did you mean "a"'),
                                         (["s1"], '"s1": expected FEATURE=CATEGORY')])
def test_bad_fix_names_the_argument(fitted, fix, needle):
    with pytest.raises(InputError) as exc:
        fitted[0].generate(k=2, fix=fix)
    assert exc.value.source == "fix" and needle in str(exc.value)


def test_bad_options_name_the_arguments(fitted):
    with pytest.raises(InputError) as exc:
        fitted[0].generate(k=0, decoder="beam", budget=0)
    assert [p.split(":")[0] for p in exc.value.problems] == ["k", "decoder", "budget"]


def test_parse_fix_dict_and_strings_agree(fitted):
    space = fitted[0].scorer.space
    assert torch.equal(parse_fix({"s0": "a", "s2": "c"}, space), parse_fix(["s0=a,s2=c"], space))
    assert parse_fix(None, space) is None


def test_load_refuses_files_of_two_runs(fitted, tmp_path):
    run, _ = fitted
    PottsTask(slots=3, vocab=3, contexts=2, seed=0).table(n=200, seed=1).to_csv(tmp_path / "small.csv", index=False)
    other, _ = fit(tmp_path / "small.csv", tmp_path / "other")
    mixed = tmp_path / "mixed"
    shutil.copytree(run.out, mixed)
    for name in ("generator.json", "generator.safetensors"):
        shutil.copy(other.out / name, mixed / name)
    with pytest.raises(InputError, match="generator.json does not belong to run"):
        Run.load(mixed)                       # run.json lists the sha256 of the run's own files
    (mixed / "run.json").unlink()             # a run written with a manifest that lost it: refused
    with pytest.raises(InputError, match="run.json is missing, though the run was written with one"):
        Run.load(mixed)
    scorer = json.loads((mixed / "scorer.json").read_text())
    del scorer["weights_sha256"]              # a folder from before manifests: the spaces still have to match
    (mixed / "scorer.json").write_text(json.dumps(scorer))
    with pytest.raises(InputError) as exc:
        Run.load(mixed)
    assert exc.value.source == str(mixed / "generator.json")
    assert "different choice spaces" in str(exc.value)


def test_load_names_missing_and_broken_files(fitted, tmp_path):
    run, _ = fitted
    with pytest.raises(InputError, match="missing run file .*generator.json"):
        Run.load(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(run.out, broken)
    (broken / "contexts.csv").write_text("ctx\nc9\n")
    with pytest.raises(InputError, match="contexts.csv does not belong to run"):
        Run.load(broken)
    (broken / "run.json").unlink()            # the checks below are those of a folder without a manifest
    scorer = json.loads((broken / "scorer.json").read_text())
    del scorer["weights_sha256"]              # (written before manifests: its scorer records no digest)
    (broken / "scorer.json").write_text(json.dumps(scorer))
    shutil.copy(run.out / "contexts.csv", broken / "contexts.csv")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(InputError) as exc:
        Run.load(broken)
    assert exc.value.source == str(broken / "config.json")
    (broken / "config.json").unlink()
    (broken / "contexts.csv").write_text("ctx\nc9\n")
    with pytest.raises(InputError, match="c9"):
        Run.load(broken)
    (broken / "contexts.csv").unlink()
    with pytest.raises(InputError) as exc:
        Run.load(broken).generate(k=2)
    assert exc.value.source == "contexts" and "contexts.csv" in str(exc.value)


def test_fit_options_are_its_keywords(tmp_path):
    """Run.fit's keywords are the fields of one FitOptions; keywords override options; a keyword that
    is no option is a TypeError, a bad value an InputError naming it, both before anything is read."""
    with pytest.raises(TypeError, match="unexpected keyword argument.*bogus"):
        Run.fit(tmp_path / "absent.csv", tmp_path / "run", SPEC, bogus=1)
    with pytest.raises(InputError) as exc:
        Run.fit(tmp_path / "absent.csv", tmp_path / "run", SPEC, FitOptions(workers=2), max_minutes="soon")
    assert exc.value.problems[0].startswith("max_minutes:")
    with pytest.raises(TypeError, match="generator_fit"):     # a scorer alone takes the scorer's options only
        fit_scorer_run(tmp_path / "absent.csv", tmp_path / "run", SPEC, generator_fit=GeneratorFit())
    assert not (tmp_path / "run").exists()


def test_score_a_table_run_and_a_scorer_run(fitted, tmp_path):
    """Run.score: a table's rows with a `score` column, as `choicegrad score` writes; a run written by
    fit_scorer_run (a scorer alone) scores the same way once loaded with scorer_only=True."""
    run, _ = fitted
    rows = pd.DataFrame({"ctx": ["c0", "c1"], "s0": ["a", "b"], "s1": ["a", "a"], "s2": ["b", "c"], "score": [0, 0]})
    scored = run.score(rows)
    expected = run.scorer.predict_frame(rows)
    assert list(scored.columns) == list(rows.columns) and (scored["score"].to_numpy() == expected).all()
    alone = Run.load(run.out, scorer_only=True)
    pd.testing.assert_frame_equal(alone.score(rows), scored)
    with pytest.raises(InputError, match="scorer_only"):
        alone.generate(k=2)
    unknown = rows.assign(s0=["a", "zzz"])
    with pytest.raises(InputError, match="zzz"):
        run.score(unknown)
    assert run.score(unknown, unknown="missing")["score"].notna().all()
    table = tmp_path / "t.csv"
    PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=400, seed=1).to_csv(table, index=False)
    fit_scorer_run(table, tmp_path / "scorer", SPEC, ScorerFit(epochs=2, seed=1), echo=lambda line: None,
                   progress=False)
    with pytest.raises(InputError, match="missing run file"):
        Run.load(tmp_path / "scorer")                        # no generator: not a whole run
    assert len(Run.load(tmp_path / "scorer", scorer_only=True).score(table)) == 400
