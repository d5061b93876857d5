"""The benchmark harness on tiny tasks: every kind of method runs, budgets hold, metrics are sane,
ground truth is looked up correctly, and the report and its plots are written."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from choicegrad.bench.harness import (Method, TaskSpec, build_problem, parse_method, quality_diversity,
                                  run_benchmark)
from choicegrad import cli
from choicegrad.cli import app
from choicegrad.bench.tasks import get_task

TINY = {
    "potts": TaskSpec("potts", "gap_oracle", budget=24, k=6, protocol="random", train_rows=500, scorer_epochs=4,
                      steps=20, options={"slots": 4, "vocab": 4, "contexts": 3}),
    "items": TaskSpec("items", "top1", budget=20, k=4, kind="items", steps=15,
                      options={"slots": 2, "dim": 3, "lengths": (3, 5)}),
}
METHODS = ["random", "anneal", "genetic", "gradient-ascent", "exhaustive", "autoregressive/reinforce/polish",
           "autoregressive/reinforce/argmax", "factorized/st-gumbel/rerank", "factorized/aligner/polish"]


def test_parse_method_names():
    assert parse_method("anneal") == Method("anneal", peer="anneal")
    m = parse_method("default")
    assert (m.generator, m.estimator, m.decoder, m.family) == ("autoregressive", "reinforce", "polish", "choicegrad")
    with pytest.raises(ValueError, match="reinforce"):
        parse_method("autoregressive/reinforse/polish")
    with pytest.raises(ValueError, match="anneal"):
        parse_method("aneal")


def test_table_problem_looks_up_ground_truth_by_label(tmp_path):
    problem = build_problem("potts", None, tmp_path, TINY)
    task = get_task("potts", **TINY["potts"].options)
    scorer = problem.objective.scorer
    rows = torch.randint(4, (3, 5, 4), generator=torch.Generator().manual_seed(0))
    labels = scorer.space.decode(rows.reshape(15, 4))                     # scorer indices -> labels
    idx = torch.tensor([[task.space.slots[s].categories.index(v) for s, v in enumerate(r)]
                        for r in labels.itertuples(index=False)])
    expected = task.oracle(torch.arange(3).repeat_interleave(5), idx).reshape(3, 5)
    assert torch.allclose(problem.truth(rows), expected)
    # exhaustive search of the scorer is its own optimum; the oracle stats bound every row
    assert torch.allclose(problem.exhaustive.scores[:, 0], problem.scorer_stats["max"])
    assert bool((problem.truth(problem.exhaustive.rows) <= problem.stats["max"][:, None] + 1e-5).all())


def test_run_benchmark_end_to_end(tmp_path):
    out = tmp_path / "bench"
    results = run_benchmark(["potts", "items"], METHODS, [0, 1], out, specs=TINY, progress=False,
                            log=lambda m: None)
    assert (out / "results.csv").is_file() and (out / "report.md").is_file()
    assert (out / "curves.csv").is_file() and (out / "training.csv").is_file()
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == len(results) == 2 * 2 * len(METHODS) - 2  # the aligner needs data rows: not on items
    assert "pointer/aligner/polish" not in set(frame.method)
    assert frame[frame.method == "factorized/aligner/polish"].calls_train.gt(0).all()
    assert set(frame.loc[frame.task == "items", "generator"].dropna()) == {"pointer"}
    for task, spec in TINY.items():
        rows = frame[frame.task == task]
        searched = rows[rows.method != "exhaustive"]
        # the budget holds per context (a decoder may top up K rows when the generator repeats itself)
        assert (searched.calls_generate <= spec.budget + spec.k).all(), searched[["method", "calls_generate"]]
        assert (rows[rows.family == "peer"].calls_train == 0).all()
        ex = rows[rows.method == "exhaustive"]
        assert (ex.hit_scorer == 1).all() and (ex.gap_scorer - 1).abs().max() < 1e-5
        for col in ("top1", "max", "median", "hit_oracle"):
            assert rows[col].between(-1e-6, 1 + 1e-6).all(), col
        assert (rows["max"] >= rows["top1"] - 1e-6).all() and (rows["max"] >= rows["median"] - 1e-6).all()
        assert (rows.distinct <= spec.k).all()
        # pipelines sharing generator and estimator share one training run per seed
        ar = rows[rows.method.str.endswith("/reinforce/polish") | rows.method.str.endswith("/reinforce/argmax")]
        assert ar.groupby("seed").calls_train.nunique().eq(1).all()
    table = frame[frame.task == "potts"]
    assert table.new.between(0, 1).all()
    assert frame[frame.task == "items"].new.isna().all()
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves.temperature) == {0.25, 0.5, 1.0, 1.5, 2.0}
    report = (out / "report.md").read_text()
    assert "## potts" in report and "## items" in report and "Best peer" in report
    assert list((out / "plots").glob("*.png"))


def test_update_reruns_one_task_and_keeps_the_others(tmp_path):
    from choicegrad.bench.report import publish

    out = tmp_path / "bench"
    quiet = dict(specs=TINY, progress=False, log=lambda m: None)
    run_benchmark(["potts", "items"], ["random", "autoregressive/reinforce/argmax"], [0], out, **quiet)
    before = pd.read_csv(out / "results.csv")
    training = pd.read_csv(out / "training.csv")
    run_benchmark(["potts"], ["anneal"], [0], out, update=True, **quiet)
    after = pd.read_csv(out / "results.csv")
    assert list(after.task.unique()) == ["potts", "items"]                  # a re-run task keeps its place
    assert list(after[after.task == "potts"].method) == ["anneal"]
    pd.testing.assert_frame_equal(after[after.task == "items"].reset_index(drop=True),
                                  before[before.task == "items"].reset_index(drop=True))
    kept = pd.read_csv(out / "training.csv")
    assert set(kept.task) == {"items"} and len(kept) == (training.task == "items").sum()
    import json

    setup = json.loads((out / "setup.json").read_text())
    assert {"potts", "items", "_wall_seconds", "_machine"} <= set(setup)
    assert [u["tasks"] for u in setup["_updates"]] == [["potts"]]
    assert [k for k in setup if not k.startswith("_")] == ["potts", "items"]     # the setup table's order too
    text = publish(out, tmp_path / "docs" / "bench.md").read_text()
    assert "Then potts re-run on" in text and "## items" in text and "## potts" in text
    first = tmp_path / "fresh"                                                 # nothing to keep: an ordinary run
    run_benchmark(["potts"], ["random"], [0], first, update=True, **quiet)
    assert "_updates" not in json.loads((first / "setup.json").read_text())
    (first / "results.csv").write_text("a,b\n1,2\n")
    from choicegrad.errors import InputError

    with pytest.raises(InputError, match="no task column"):
        run_benchmark(["potts"], ["random"], [0], first, update=True, **quiet)


def test_quality_diversity_more_distinct_when_hotter(tmp_path):
    problem = build_problem("potts", None, tmp_path, TINY)
    torch.manual_seed(0)                              # the generator's initial weights
    gen = problem.new_generator("factorized")
    with torch.no_grad():
        for q in gen.parameters():
            q.mul_(6.0)
    cold, hot = quality_diversity(problem, gen, seed=0, temperatures=(0.05, 5.0))
    k = TINY["potts"].k
    # near zero temperature the K samples are (almost) the one greedy row; hot they are (almost) all
    # distinct: a check that fails if both saturate at K, or both at 1
    assert cold["distinct"] <= 1.5 and hot["distinct"] >= 0.75 * k, (cold, hot)


def test_bench_cli_rejects_bad_arguments(tmp_path):
    runner = CliRunner()
    for args, needle in ((["--tasks", "pots"], "potts"), (["--methods", "anneal,autoregressive/reinforse/polish"], "reinforce"),
                         (["--seeds", "a"], "integers"), (["--tasks", "tfbind8", "--data-dir", str(tmp_path)], "fetch")):
        result = runner.invoke(app, ["bench", "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 2, result.output
        assert needle in result.output
    assert not (tmp_path / "x").exists()


def test_data_table_writes_a_task_table_the_pipeline_reads(tmp_path):
    from choicegrad.data.table import load_table

    runner = CliRunner()
    out = tmp_path / "nk2.csv"
    res = runner.invoke(app, ["data", "table", "nk2", "--protocol", "random", "--rows", "500", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = load_table(str(out), "s?", "y", "ctx")
    assert len(data) == 500 and data.space.num_slots == 8
    for args, needle in ((["nk9", "--out", str(tmp_path / "a.csv")], "nk2"),
                         (["nk2", "--protocol", "random", "--out", str(tmp_path / "b.csv")], "n"),
                         (["nk2", "--protocol", "randm", "--out", str(tmp_path / "c.csv")], "random")):
        res = runner.invoke(app, ["data", "table", *args])
        assert res.exit_code == 2 and needle in res.output, res.output
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "b.csv").exists()


@pytest.mark.parametrize("args", [["bench", "--out", "x"], ["data", "fetch", "tfbind8"],
                                  ["data", "table", "nk2", "--out", "x.csv"], ["demo", "--out", "x"]])
def test_bench_commands_without_the_bench_extra_say_how_to_install_it(args, monkeypatch, tmp_path):
    real_find_spec = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "matplotlib" else real_find_spec(name, *a, **k))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "pip install 'choicegrad[bench]'" in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_library_imports_neither_the_benchmark_nor_matplotlib():
    code = ("import sys, choicegrad, choicegrad.cli, choicegrad.decoding, choicegrad.training.loop\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib'\n"
            "assert not any(m.startswith('choicegrad.bench') for m in sys.modules), "
            "[m for m in sys.modules if m.startswith('choicegrad.bench')]\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
