"""choicegrad.bench.report: summary statistics, the markdown report and its plots, on hand-made results."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from choicegrad.bench.report import markdown, plots, summarise, write_report

PEERS = ("random", "anneal", "exhaustive")
PIPES = ("autoregressive/reinforce/polish", "factorized/st-gumbel/argmax")


def _row(task, method, seed, **metrics):
    peer = "/" not in method
    base = {"task": task, "method": method, "family": "peer" if peer else "choicegrad",
            "generator": "" if peer else method.split("/")[0], "estimator": method if peer else method.split("/")[1],
            "decoder": "" if peer else method.split("/")[2], "seed": seed, "contexts": 4, "k": 8,
            "top1": 0.5, "max": 0.8, "median": 0.4, "gap_scorer": np.nan, "gap_oracle": np.nan,
            "hit_scorer": 0.0, "hit_oracle": 0.0, "distinct": 8.0, "new": np.nan,
            "calls_generate": 100.0, "calls_train": 0.0 if peer else 5000.0, "seconds_train": 0.0 if peer else 2.0,
            "seconds_generate": 0.5, "peak_mb": 300.0}
    base.update(metrics)
    return base


# Task "potts" (headline gap_oracle): exhaustive reaches far more than any peer; the best pipeline
# (autoregressive, 0.7 / 0.8 / 0.9 -> 0.8 ± 0.1) leads the best peer (anneal, 0.5 / 0.6 / 0.4 -> 0.5 ± 0.1).
POTTS = {
    "random": [0.2, 0.3, 0.1],
    "anneal": [0.5, 0.6, 0.4],
    "exhaustive": [0.95, 0.95, 0.95],
    "autoregressive/reinforce/polish": [0.7, 0.8, 0.9],
    "factorized/st-gumbel/argmax": [0.3, 0.2, 0.1],
}
# Task "gb1" (headline max): choicegrad trails (0.4 vs 0.6, stds 0.1 at most).
GB1 = {
    "random": [0.6, 0.7, 0.5],
    "anneal": [0.55, 0.55, 0.55],
    "exhaustive": [0.9, 0.9, 0.9],
    "autoregressive/reinforce/polish": [0.4, 0.5, 0.3],
    "factorized/st-gumbel/argmax": [0.35, 0.35, 0.35],
}


@pytest.fixture
def results() -> pd.DataFrame:
    rows = []
    for method, values in POTTS.items():
        for seed, v in enumerate(values):
            extra = {"calls_generate": {"random": 100.0, "anneal": 90.0, "exhaustive": 65536.0}.get(method, 80.0)}
            if method == "factorized/st-gumbel/argmax":
                extra["calls_generate"] = 80.0          # ties with autoregressive: both bold
            rows.append(_row("potts", method, seed, gap_oracle=v, gap_scorer=v - 0.05, **extra,
                             headline="gap_oracle", budget=100))
    for method, values in GB1.items():
        for seed, v in enumerate(values):
            rows.append(_row("gb1", method, seed, max=v, new=0.9, headline="max", budget=50,
                             seconds_generate=0.2 if method == "anneal" else 0.5))
    return pd.DataFrame(rows)


def _curves(results):
    rows = []
    for task in results["task"].unique():
        for method in ("autoregressive/reinforce", "factorized/st-gumbel"):
            for seed in (0, 1):
                for t in (0.5, 1.0, 2.0):
                    rows.append({"task": task, "method": method, "seed": seed, "temperature": t,
                                 "distinct": 2 + 3 * t + seed, "median": 0.6 - 0.1 * t, "max": 0.9 - 0.05 * t,
                                 "top1": 0.7})
    return pd.DataFrame(rows)


def _training(results):
    rows = []
    for task in results["task"].unique():
        for method in ("autoregressive/reinforce", "factorized/st-gumbel"):
            for seed in (0, 1, 2):
                for step in range(1, 6):
                    rows.append({"task": task, "method": method, "seed": seed, "step": step * 10,
                                 "scorer_calls": step * 1000 + seed * 10, "seconds": step * 0.1,
                                 "val_score": 1 - 1 / step})
    return pd.DataFrame(rows)


def _task_table(report: str, task: str) -> list[list[str]]:
    """The rows (cells) of a task's table, header first."""
    section = report.split(f"\n## {task}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if not ln.startswith("|:")]


def _column(table, name):
    header = [h.split(" ")[0] for h in table[0]]
    i = header.index(name)
    return {row[0]: row[i] for row in table[1:]}


def test_summarise_means_stds_and_ratio(results):
    s = summarise(results)
    assert list(s["task"].unique()) == ["potts", "gb1"]
    potts = s[s["task"] == "potts"].set_index("method")
    # order: peers (exhaustive last, as a reference), then pipelines
    assert list(potts.index) == ["random", "anneal", *PIPES, "exhaustive"]
    ar = potts.loc["autoregressive/reinforce/polish"]
    assert ar["gap_oracle_mean"] == pytest.approx(0.8)
    assert ar["gap_oracle_std"] == pytest.approx(0.1)              # sample std of 0.7, 0.8, 0.9
    assert ar["gap_scorer_mean"] == pytest.approx(0.75)
    assert ar["n_seeds"] == 3
    assert potts.loc["random", "gap_oracle_std"] == pytest.approx(0.1)
    assert potts.loc["exhaustive", "gap_oracle_std"] == pytest.approx(0.0)
    assert math.isnan(potts.loc["random", "new_mean"])
    # best peer excludes exhaustive (0.95) and uses the headline gap_oracle, not max (0.8 for all)
    assert set(potts["best_peer"]) == {"anneal"}
    assert ar["ratio_to_best_peer"] == pytest.approx(0.8 / 0.5)
    assert potts.loc["anneal", "ratio_to_best_peer"] == pytest.approx(1.0)
    assert potts.loc["exhaustive", "ratio_to_best_peer"] == pytest.approx(0.95 / 0.5)
    gb1 = s[s["task"] == "gb1"].set_index("method")
    assert gb1.loc["random", "headline"] == "max"
    assert gb1.loc["autoregressive/reinforce/polish", "ratio_to_best_peer"] == pytest.approx(0.4 / 0.6)


def test_single_seed_std_is_nan_and_shows_mean_only(results):
    one = results[results["seed"] == 0]
    s = summarise(one).set_index(["task", "method"])
    assert s["n_seeds"].eq(1).all()
    assert s["gap_oracle_std"].isna().all()
    table = _task_table(markdown(one), "potts")
    assert _column(table, "gap_oracle")["random"] == "0.200"


def test_table_bold_cells_and_nan_columns(results):
    report = markdown(results)
    potts = _task_table(report, "potts")
    header = [h.split(" ")[0] for h in potts[0]]
    assert header[0] == "method"
    # new is NaN everywhere on potts: dropped there; gb1 has it
    assert "new" not in header and "new" in [h.split(" ")[0] for h in _task_table(report, "gb1")[0]]
    gap = _column(potts, "gap_oracle")
    assert gap["autoregressive/reinforce/polish"] == "**0.800 ± 0.100**"
    assert gap["anneal"] == "0.500 ± 0.100"
    assert gap["*exhaustive (reference)*"] == "0.950"     # reference: never bold, no std when spread is 0
    # lower is better: calls 80 ties for both pipelines; exhaustive is not eligible
    calls = _column(potts, "calls_generate")
    assert calls["autoregressive/reinforce/polish"] == "**80**"
    assert calls["factorized/st-gumbel/argmax"] == "**80**"
    assert calls["random"] == "100"
    assert _column(potts, "calls_train")["random"] == "**0**"
    assert _column(potts, "calls_train")["autoregressive/reinforce/polish"] == "5,000"
    gb1 = _task_table(report, "gb1")
    assert _column(gb1, "seconds_generate")["anneal"] == "**0.2**"       # lower is better
    assert _column(gb1, "seconds_generate")["random"] == "0.5"
    assert _column(gb1, "max")["random"] == "**0.600 ± 0.100**"
    # ties at the shown precision are all bold; a column where every row ties has no bold
    assert _column(potts, "top1") == dict.fromkeys(_column(potts, "top1"), "0.500")
    assert _column(potts, "ratio")["autoregressive/reinforce/polish"] == "**1.600**"


def test_statements(results):
    report = markdown(results)
    potts = report.split("\n## potts\n", 1)[1].split("\n## ", 1)[0]
    assert "Best choicegrad pipeline: autoregressive/reinforce/polish (gap_oracle = 0.800 ± 0.100)." in potts
    assert "Best peer: anneal (0.500 ± 0.100)." in potts
    assert "Ratio 0.800/0.500 = 1.600: choicegrad leads the best peer." in potts
    assert "Exhaustive enumeration of the scorer reaches 0.950" in potts
    gb1 = report.split("\n## gb1\n", 1)[1]
    assert "Best peer: random (0.600 ± 0.100)." in gb1
    assert "choicegrad trails the best peer" in gb1
    # a gap within one std is a tie
    close = results.copy()
    close.loc[(close["task"] == "gb1") & (close["method"] == PIPES[0]), "max"] = [0.55, 0.65, 0.45]
    assert "choicegrad ties the best peer (within one std)" in markdown(close)
    # summary table at the top: one row per task, before the task sections
    top = report.split("\n## potts\n", 1)[0]
    assert "| [potts](#potts) | gap_oracle | 100 | 3 | autoregressive/reinforce/polish | 0.800 ± 0.100 | anneal" in top
    assert "[gb1](#gb1) | max |" in top


def test_images_are_linked_under_their_task(results):
    report = markdown(results, images={"gb1": ["plots/gb1_headline.png"]}, preamble="Run by `make bench`.")
    assert "Run by `make bench`." in report
    assert "![gb1: gb1_headline](plots/gb1_headline.png)" in report.split("\n## gb1\n", 1)[1]
    assert "plots/gb1" not in report.split("\n## gb1\n", 1)[0]


def _no_temp_files(root):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_write_report_with_all_inputs(tmp_path, results):
    results.to_csv(tmp_path / "results.csv", index=False)
    _curves(results).to_csv(tmp_path / "curves.csv", index=False)
    _training(results).to_csv(tmp_path / "training.csv", index=False)
    path = write_report(tmp_path, title="Bench", preamble="hello")
    assert path == tmp_path / "report.md"
    text = path.read_text()
    assert text.startswith("# Bench\n\nhello\n")
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert {p.name for p in pngs} == {f"{t}_{kind}.png" for t in ("potts", "gb1")
                                      for kind in ("headline", "quality_diversity", "training")}
    for p in pngs:
        assert p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({p.relative_to(tmp_path).as_posix()})" in text
    assert _no_temp_files(tmp_path) == []


def test_write_report_without_curves_or_training(tmp_path, results):
    one = results[results["seed"] == 0]
    one.to_csv(tmp_path / "results.csv", index=False)
    assets = tmp_path / "assets"
    path = write_report(tmp_path, assets_dir=assets)
    assert sorted(p.name for p in assets.iterdir()) == ["gb1_headline.png", "potts_headline.png"]
    assert "](assets/potts_headline.png)" in path.read_text()
    assert _no_temp_files(tmp_path) == []


def test_plots_many_long_methods_and_nan(tmp_path):
    rows = []
    for i in range(20):
        method = f"autoregressive/estimator-with-a-long-name-{i}/polish" if i > 2 else f"peer{i}"
        for seed in (0, 1):
            rows.append(_row("t", method, seed, family="peer" if i <= 2 else "choicegrad",
                             top1=np.nan if i == 5 else 0.01 * i + seed * 0.01, headline="top1", budget=10))
    frame = pd.DataFrame(rows)
    out = plots({"results": frame, "curves": None}, tmp_path)
    assert [p.name for p in out["t"]] == ["t_headline.png"]
    top1 = _column(_task_table(markdown(frame), "t"), "top1")
    assert top1["autoregressive/estimator-with-a-long-name-5/polish"] == "—"
    assert top1["autoregressive/estimator-with-a-long-name-19/polish"] == "**0.195 ± 0.007**"


def test_targets_table_checks_the_default_pipeline(results):
    from choicegrad.bench.report import targets_table

    targets = (("potts", "gap_scorer", ">=", 0.7), ("potts", "calls_generate", "<=", 50),
               ("gb1", "ratio", ">=", 1.0), ("missing-task", "max", ">=", 0.5))
    table = targets_table(summarise(results), targets, "autoregressive/reinforce/polish")
    lines = table.splitlines()
    assert len(lines) == 2 + 3                                         # the missing task is left out
    # potts: default gap_scorer = mean(0.65, 0.75, 0.85) = 0.75 >= 0.7; calls 80 > 50
    assert lines[2] == ("| potts | gap_scorer >= 0.700 | autoregressive/reinforce/polish | 0.750 | yes | "
                        "autoregressive/reinforce/polish | 0.750 |")
    assert "| 80 | **no** | autoregressive/reinforce/polish | 80 |" in lines[3]
    # gb1: ratio 0.4 / 0.6 (random, the best peer)
    assert "| 0.667 | **no** |" in lines[4]


def test_benchmark_default_pipeline_is_the_cli_default():
    from choicegrad import cli
    from choicegrad.bench.harness import DEFAULT_PIPELINE

    assert DEFAULT_PIPELINE == f"{cli.DEFAULT_GENERATOR}/{cli.DEFAULT_METHOD}/{cli.DEFAULT_DECODER}"
