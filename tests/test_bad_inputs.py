"""Issue 13: inputs that ended in a traceback, silent NaN or an unclear message. Each one now exits
with code 2 and a message naming the argument, file, column or row -- or simply works."""

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from choicegrad.bench.tasks import PottsTask
from cli_helpers import assert_input_error, run
from choicegrad.data import ChoiceSpace, ContextEncoder
from choicegrad.data.table import MIN_ROWS, check_fit_rows, load_table, score_stats
from choicegrad.decoding import decode
from choicegrad.device import check_device
from choicegrad.errors import InputError
from choicegrad.generators import GeneratorConfig, TableContext, build
from choicegrad.io import check_finite, check_writable, read_table
from choicegrad.run import Run
from choicegrad.scorer.fit import ScorerFit
from choicegrad.training.loop import GeneratorFit

FAST = ["--steps", "0", "--scorer-epochs", "3", "--seed", "1"]
COLUMNS = ["--features", "s?", "--score", "y", "--context", "ctx"]




def small_frame(n=300, scale=1.0):
    """3 features x 3 categories (27 rows per context), 2 contexts, float64 scores times `scale`."""
    frame = PottsTask(slots=3, vocab=3, contexts=2, seed=0).table(n=n, seed=1)
    return frame.assign(y=frame["y"].astype("float64") * scale)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A run folder of `choicegrad fit` on the 27-row space (scorer, generator, contexts)."""
    tmp = tmp_path_factory.mktemp("bad")
    small_frame().to_csv(tmp / "table.csv", index=False)
    res = run("fit", tmp / "table.csv", *COLUMNS, "--out", tmp / "run", *FAST)
    assert res.exit_code == 0, res.output
    return tmp / "run"


@pytest.fixture
def copy_of(fitted, tmp_path):
    """A fresh copy of the fitted run folder, to corrupt."""
    shutil.copytree(fitted, tmp_path / "run")
    return tmp_path / "run"


# --- 1. an output folder that cannot be written: checked before any work --------------------------
def test_check_writable_names_the_argument(tmp_path):
    (tmp_path / "somefile.txt").write_text("x")
    with pytest.raises(InputError, match="somefile.txt is a file, not a folder") as err:
        check_writable(tmp_path / "somefile.txt" / "x.csv", "--out")
    assert err.value.source == "--out"
    with pytest.raises(InputError, match="is a folder; expected a file name"):
        check_writable(tmp_path, "--out")
    assert check_writable(tmp_path / "new" / "deeper" / "x.csv", "--out")
    assert not (tmp_path / "new").exists() and [p.name for p in tmp_path.iterdir()] == ["somefile.txt"]


def _check_writable_problem(path) -> str:
    """check_writable(path)'s InputError as text ("" when it passes). As root, which writes into any
    folder, the check runs in a forked child that drops to user nobody first."""
    def check() -> str:
        try:
            check_writable(path, "--out")
        except InputError as exc:
            return f"{exc.source}: {'; '.join(exc.problems)}"
        return ""

    if os.geteuid() != 0:
        return check()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                         # the child: nobody, then the check
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            text = check()
        except BaseException as exc:     # never back into pytest from the child
            text = f"child failed: {exc!r}"
        os.write(write, text.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        text = fh.read().decode()
    os.waitpid(pid, 0)
    return text


def test_check_writable_read_only_folder():
    folder = Path(tempfile.mkdtemp(prefix="choicegrad-ro-"))     # in the system's temp folder: others may enter
    folder.chmod(0o555)
    try:
        problem = _check_writable_problem(folder / "x.csv")
        assert problem.startswith("--out: ") and "no permission to create files" in problem, problem
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_commands_check_the_output_before_working(fitted, tmp_path):
    (tmp_path / "somefile.txt").write_text("x")
    out = tmp_path / "somefile.txt" / "x.csv"
    table = fitted.parent / "table.csv"
    assert_input_error(run("score", fitted, table, "--out", out), "--out", "not a folder")
    assert_input_error(run("generate", fitted, "--out", out), "--out", "not a folder")
    assert_input_error(run("data", "table", "potts", "--protocol", "random", "--rows", "50", "--out", out),
                       "--out", "not a folder")


# --- 2. bench --out naming an existing file ------------------------------------------------------
def test_bench_out_is_a_file(tmp_path):
    (tmp_path / "results").write_text("x")
    assert_input_error(run("bench", "--tasks", "potts", "--methods", "random", "--seeds", "0", "--out",
                           tmp_path / "results"), "--out", "is not a folder")


# --- 3. devices -----------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_or_unknown_device(fitted, tmp_path):
    out = tmp_path / "c.csv"
    assert_input_error(run("generate", fitted, "--out", out, "--device", "cuda"), "--device", "CUDA is not available")
    assert_input_error(run("generate", fitted, "--out", out, "--device", "bogus"), "--device", 'unknown device "bogus"')
    res = run("fit-scorer", fitted.parent / "table.csv", *COLUMNS, "--out", tmp_path / "r", "--device", "cuda:1")
    assert_input_error(res, "--device", "CUDA is not available")
    res = run("fit", fitted.parent / "table.csv", *COLUMNS, "--out", tmp_path / "r2", "--device", "nope")
    assert_input_error(res, "--device", 'unknown device "nope"')
    assert not out.exists() and not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()
    with pytest.raises(InputError, match="device"):
        Run.load(fitted, device="cuda")
    for model in (ScorerFit, GeneratorFit):
        with pytest.raises(ValueError, match="CUDA is not available"):
            model(device="cuda")
    assert check_device("cpu") == torch.device("cpu")


# --- 4. top-k larger than the space; bounded memory ------------------------------------------------
def test_top_k_beyond_the_space_gives_the_whole_space(fitted, tmp_path):
    out = tmp_path / "c.csv"
    res = run("generate", fitted, "--top-k", "100000", "--out", out)
    assert res.exit_code == 0, res.output
    assert "fewer than 100000 rows" in res.output
    frame = pd.read_csv(out)
    assert frame.groupby("ctx").size().tolist() == [27, 27]
    assert len(frame[["ctx", "s0", "s1", "s2"]].drop_duplicates()) == 54
    res = run("generate", fitted, "--top-k", "100000", "--fix", "s0=a", "--out", out)
    assert res.exit_code == 0 and pd.read_csv(out).groupby("ctx").size().tolist() == [9, 9]


def test_too_many_output_rows_is_refused(fitted, tmp_path, monkeypatch):
    monkeypatch.setattr("choicegrad.run.MAX_GENERATE_ROWS", 40)
    assert_input_error(run("generate", fitted, "--top-k", "27", "--out", tmp_path / "c.csv"), "--top-k", "at most 40")


def _seven_contexts():
    """An autoregressive generator over 3 slots x 4 categories, 7 contexts, an additive objective."""
    torch.manual_seed(0)
    space = ChoiceSpace.model_validate({"slots": [{"name": f"s{i}", "categories": list("abcd")} for i in range(3)]})
    context = ContextEncoder.model_validate({"columns": [{"name": "c", "kind": "categorical",
                                                          "categories": [str(i) for i in range(7)]}]})
    gen = build(GeneratorConfig(kind="autoregressive", hidden=[16]), space=space, context=context).eval()
    table = torch.randn(7, 3, 4)

    def objective(x, c):
        return table[c.cat[:, 0]].gather(2, x.unsqueeze(-1)).squeeze(-1).sum(1)

    return gen, objective, TableContext(torch.arange(7)[:, None], torch.zeros(7, 0))


@pytest.mark.parametrize("name", ["topk", "exhaustive"])
def test_decoding_contexts_in_groups_changes_nothing(name):
    gen, objective, ctx = _seven_contexts()
    whole = decode(name, gen, objective, ctx, 5)
    grouped = decode(name, gen, objective, ctx, 5, max_rows=2 * 256)     # 2 contexts per group
    for a, b in [(whole.rows, grouped.rows), (whole.scores, grouped.scores), (whole.valid, grouped.valid)]:
        assert torch.equal(a, b)
    assert whole.scorer_calls == grouped.scorer_calls


@pytest.mark.parametrize("name", ["argmax", "sample", "rerank", "polish", "anneal"])
def test_decoding_in_groups_gives_k_distinct_rows(name):
    gen, objective, ctx = _seven_contexts()
    c = decode(name, gen, objective, ctx, 70, max_rows=2 * 8 * 70, budget=300)   # K clipped to the 64 rows
    assert c.rows.shape == (7, 64, 3) and c.valid.all()
    assert all(len({tuple(r) for r in c.rows[b].tolist()}) == 64 for b in range(7))
    assert (c.scores[:, :-1] >= c.scores[:, 1:]).all()


# --- 5. too few rows; a constant score -------------------------------------------------------------
@pytest.mark.parametrize("rows", [1, 2, MIN_ROWS - 1])
def test_too_few_rows_to_fit(tmp_path, rows):
    small_frame().head(rows).to_csv(tmp_path / "t.csv", index=False)
    res = run("fit-scorer", tmp_path / "t.csv", *COLUMNS, "--out", tmp_path / "r", "--epochs", "2")
    assert_input_error(res, "t.csv", f"at least {MIN_ROWS}")
    assert not (tmp_path / "r").exists()
    with pytest.raises(InputError, match="at least"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)          # single-category features: not the point here
        check_fit_rows(load_table(tmp_path / "t.csv", "s?", "y", "ctx"))


def test_constant_score_gives_no_nan(tmp_path):
    small_frame(60).assign(y=3.5).to_csv(tmp_path / "t.csv", index=False)
    res = run("fit-scorer", tmp_path / "t.csv", *COLUMNS, "--out", tmp_path / "r", "--epochs", "2")
    assert res.exit_code == 0, res.output
    assert "constant" in res.output and "nan" not in res.output.lower()
    metrics = json.loads((tmp_path / "r" / "scorer_metrics.json").read_text())   # strict JSON: no NaN
    assert metrics["metrics"]["test"]["r2"] is None
    assert run("score", tmp_path / "r", tmp_path / "t.csv", "--out", tmp_path / "s.csv").exit_code == 0
    assert np.isfinite(pd.read_csv(tmp_path / "s.csv")["score"]).all()


# --- 6. corrupt checkpoints -------------------------------------------------------------------------
def _edit_json(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


CORRUPT_SCORER = {
    "a list": lambda run: (run / "scorer.json").write_text("[1, 2]"),
    "empty object": lambda run: (run / "scorer.json").write_text("{}"),
    "missing key": lambda run: _edit_json(run / "scorer.json", lambda m: m.pop("space")),
    "wrong type": lambda run: _edit_json(run / "scorer.json", lambda m: m.update(k="many")),
    "config not an object": lambda run: _edit_json(run / "scorer.json", lambda m: m.update(config=[1])),
    "bad space": lambda run: _edit_json(run / "scorer.json", lambda m: m.update(space={"slots": 3})),
    "truncated": lambda run: (run / "scorer.json").write_text((run / "scorer.json").read_text()[:40]),
    "wrong shapes": lambda run: _edit_json(run / "scorer.json", lambda m: m["config"].update(embed_dim=3)),
    "not safetensors": lambda run: (run / "scorer.safetensors").write_text("hello"),
    "NaN weights": lambda run: _nan_weights(run / "scorer.safetensors"),
}


def _nan_weights(path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(path))


@pytest.mark.parametrize("how", list(CORRUPT_SCORER))
def test_corrupt_scorer_checkpoint(copy_of, tmp_path, how):
    CORRUPT_SCORER[how](copy_of)
    small_frame(20).to_csv(tmp_path / "rows.csv", index=False)
    for res in (run("score", copy_of, tmp_path / "rows.csv", "--out", tmp_path / "s.csv"),
                run("generate", copy_of, "--out", tmp_path / "g.csv")):
        assert_input_error(res, "scorer.")
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "g.csv").exists()


@pytest.mark.parametrize("how", ["a list", "wrong shapes", "bad shape"])
def test_corrupt_generator_checkpoint(copy_of, tmp_path, how):
    path = copy_of / "generator.json"
    if how == "a list":
        path.write_text("[1, 2]")
    elif how == "wrong shapes":
        _edit_json(path, lambda m: m["config"].update(hidden=[7]))
    else:
        _edit_json(path, lambda m: m["shape"].update(sizes="abc"))
    assert_input_error(run("generate", copy_of, "--out", tmp_path / "g.csv"), "generator.")


# --- 7. scores near 1e300 and 1e-45: the same model, the same ranking -----------------------------
def test_score_stats_do_not_overflow():
    y = np.array([1.0, 2.0, 4.0])
    for scale in (1.0, 1e300, 1e-45, 1e-300):
        mean, std = score_stats(y * scale)
        assert mean == pytest.approx(7 / 3 * scale, rel=1e-12) and std == pytest.approx(np.std(y, ddof=1) * scale, rel=1e-12)
    assert score_stats(np.array([5.0, 5.0])) == (5.0, 1.0)


@pytest.mark.parametrize("scale", [1e300, 1e-45])
def test_huge_and_tiny_scores_fit_and_generate_like_unscaled(fitted, tmp_path, scale):
    small_frame(scale=scale).to_csv(tmp_path / "t.csv", index=False)
    res = run("fit", tmp_path / "t.csv", *COLUMNS, "--out", tmp_path / "run", *FAST)
    assert res.exit_code == 0, res.output
    assert "constant" not in res.output and "nan" not in res.output.lower()
    for folder, out in ((fitted, "base.csv"), (tmp_path / "run", "scaled.csv")):
        res = run("generate", folder, "--top-k", "27", "--decoder", "exhaustive", "--out", tmp_path / out)
        assert res.exit_code == 0, res.output
    base, scaled = pd.read_csv(tmp_path / "base.csv"), pd.read_csv(tmp_path / "scaled.csv")
    key = ["ctx", "s0", "s1", "s2"]
    pd.testing.assert_frame_equal(base[key], scaled[key])
    np.testing.assert_allclose(scaled["score"], base["score"] * scale, rtol=1e-4, atol=1e-4 * scale)
    res = run("score", tmp_path / "run", tmp_path / "t.csv", "--out", tmp_path / "s.csv")
    assert res.exit_code == 0, res.output
    scored = pd.read_csv(tmp_path / "s.csv")["score"]
    assert np.isfinite(scored).all() and scored.abs().min() > 0.01 * scale and scored.abs().max() < 100 * scale


def test_nan_is_never_written(fitted, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="rows 2, 3"):
        check_finite([1.0, np.nan, np.inf], "rows.csv")
    monkeypatch.setattr("choicegrad.scorer.model.Scorer.predict_frame",
                        lambda self, frame, *a, **k: np.full(len(frame), np.nan))
    res = run("score", fitted, fitted.parent / "table.csv", "--out", tmp_path / "s.csv")
    assert_input_error(res, "table.csv", "not a finite number", "rows 1, 2")
    assert not (tmp_path / "s.csv").exists()


def test_non_finite_scores_in_the_table_are_an_error(tmp_path):
    small_frame(30).assign(y=lambda f: f["y"].where(f.index != 4, np.inf)).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputError, match="row 5"):
        load_table(tmp_path / "t.csv", "s?", "y", "ctx")


# --- 8-11. reading tables ---------------------------------------------------------------------------
def test_a_folder_as_the_table(tmp_path):
    for command in ("fit", "fit-scorer"):                                       # streamed: a folder of Parquet files
        res = run(command, tmp_path, *COLUMNS, "--out", tmp_path / "r")
        assert_input_error(res, "holds no .parquet or .pq files")
    with pytest.raises(InputError, match="is a folder; expected a CSV or Parquet file .*stream a folder"):
        load_table(tmp_path, "s?", "y", "ctx")                                 # read whole: a file


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_semicolon_tab_and_pipe_csv_just_work(tmp_path, sep):
    frame = small_frame(30)
    frame.to_csv(tmp_path / "t.csv", index=False, sep=sep)
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.csv"), frame)


def test_comma_wins_a_tie(tmp_path):
    (tmp_path / "t.csv").write_text("a;b,c\n1;2,3\n")
    assert list(read_table(tmp_path / "t.csv").columns) == ["a;b", "c"]


def test_context_forced_numeric_on_text(tmp_path):
    small_frame(30).to_csv(tmp_path / "t.csv", index=False)
    res = run("fit-scorer", tmp_path / "t.csv", "--features", "s?", "--score", "y", "--context", "ctx:num",
              "--out", tmp_path / "r")
    assert_input_error(res, 'column "ctx"', "holds text", "'c1' at rows 1, 2")


def test_latin1_file(tmp_path):
    frame = small_frame(30)
    frame.loc[3, "ctx"] = "café"
    frame.to_csv(tmp_path / "t.csv", index=False, encoding="latin-1")
    with pytest.raises(InputError, match="not UTF-8 text: line 5 has byte 0xe9") as err:
        read_table(tmp_path / "t.csv")
    assert "iconv -f latin1 -t utf-8" in str(err.value)


# --- 12-13. --fix twice; an ID column as a feature ----------------------------------------------------
def test_fix_the_same_feature_twice(fitted, tmp_path):
    res = run("generate", fitted, "--fix", "s0=a", "--fix", "s0=b", "--out", tmp_path / "c.csv")
    assert_input_error(res, "--fix", 'feature "s0" fixed twice (a, b)')
    assert run("generate", fitted, "--fix", "s0=a", "--fix", "s0=a", "--out", tmp_path / "c.csv").exit_code == 0


def test_id_column_as_a_feature_warns(tmp_path):
    n = 1500
    frame = pd.DataFrame({"user": [f"u{i}" for i in range(n)], "s0": np.arange(n) % 3, "y": np.arange(n) % 7})
    with pytest.warns(UserWarning, match="looks like an ID"):
        notes = load_table(frame, "user,s0", "y").warnings
    assert any('"user" has 1500 categories for 1500 rows' in n and "ID" in n for n in notes), notes
    assert not any('"s0"' in n for n in notes)
