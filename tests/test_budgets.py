"""Contextual tasks (unseen contexts) and the quality-against-budget benchmark."""

import dataclasses
import itertools
import math

import pandas as pd
import pytest
import torch

from choicegrad.bench.budget_report import BEGIN, END, kept_section, publish_budgets, splice
from choicegrad.bench.budgets import curve_area, curves, line_curve, run_budgets
from choicegrad.bench.harness import SPECS, build_problem, evaluate
from choicegrad.bench.tasks.contextual import ContextualTask, mixed_ctx, potts_ctx
from choicegrad.cli import app
from choicegrad.data.table import load_table


def test_oracle_matches_the_formula_and_the_enumeration():
    task = ContextualTask(slots=3, vocab=3, dims=2, sites=2, rank=2, seed=3)
    num, site = task.draw(4, seed=5)
    full = task.enumerate(num, site)
    rows = torch.tensor(list(itertools.product(range(3), repeat=3)))
    for c in range(4):
        h = task.fields(num[c:c + 1], site[c:c + 1])[0]
        J = task.J0 + (torch.tanh(num[c] @ task.B)[:, None, None, None, None] * task.Jr).sum(0)
        for r, row in enumerate(rows):
            want = sum(float(h[s, row[s]]) for s in range(3))
            want += sum(float(J[s, t, row[s], row[t]]) for s in range(3) for t in range(s + 1, 3))
            assert float(full[c, r]) == pytest.approx(want, abs=1e-4)
    got = task.oracle(num.repeat_interleave(27, 0), site.repeat_interleave(27), rows.repeat(4, 1))
    assert torch.allclose(got, full.reshape(-1), atol=1e-4)


def test_the_best_row_moves_with_the_context():
    task = potts_ctx()
    num, site = task.draw(64, seed=9)
    best = task.enumerate(num, site).argmax(1)
    assert len(set(best.tolist())) > 16


def test_log_has_one_context_per_row_and_held_out_contexts_are_new():
    task = mixed_ctx()
    log = task.log(500, seed=0)
    held = task.contexts(50, seed=1)
    assert list(log.columns) == ["site", "c0", "c1", "c2", "c3", *task.space.names, "y"]
    assert not log[task.numeric].duplicated().any()
    merged = held.merge(log[["site", *task.numeric]], how="inner")
    assert merged.empty
    assert set(held["site"]) <= set(log["site"])          # unseen numbers, known site levels
    data = load_table(log, task.space.names, "y", task.context_columns)
    assert [c.kind for c in data.context.columns] == ["categorical"] + ["numeric"] * 4
    num, site = task.encode(log)
    assert torch.allclose(task.oracle(num, site, data.rows).double(), torch.tensor(log["y"].to_numpy()), atol=1e-4)


def test_bad_task_settings_name_the_arguments():
    with pytest.raises(ValueError, match="slots, vocab, dims, sites, rank"):
        ContextualTask(slots=1)


def test_curve_area_by_hand():
    # log10 budgets 1, 2, 3: trapezoids (0.5 + 0.7) / 2 and (0.7 + 0.9) / 2, over a width of 2
    assert curve_area([10, 100, 1000], [0.5, 0.7, 0.9]) == pytest.approx((0.6 + 0.8) / 2)
    assert curve_area([0, 10, 100], [0.0, 0.4, 0.4]) == pytest.approx(0.4)    # budget 0 is not on the log axis
    assert math.isnan(curve_area([], []))


TINY = {"potts-ctx": dataclasses.replace(SPECS["potts-ctx"], train_rows=600, scorer_epochs=2, steps=4, contexts=6,
                                         budget=27, options={"slots": 3, "vocab": 3, "dims": 2}),
        "items": dataclasses.replace(SPECS["items"], steps=3, budget=20)}


def test_contextual_problem_judges_unseen_contexts_by_the_truth(tmp_path):
    problem = build_problem("potts-ctx", None, tmp_path / "scorers", TINY)
    assert problem.setup["seen"] is False and not problem.spec.seen
    assert len(problem.ctx) == 6
    report = evaluate(problem, problem.exhaustive)
    assert report["gap_scorer"] == pytest.approx(1.0)                        # the scorer's own optimum
    task = potts_ctx(slots=3, vocab=3, dims=2)
    truth = task.enumerate(*task.encode(task.contexts(6, seed=1)))
    assert problem.stats["max"].tolist() == pytest.approx(truth.max(1).values.tolist())


def test_run_budgets_and_its_report(tmp_path):
    frame = run_budgets(["potts-ctx", "items"], [0], tmp_path / "run", pipelines=["autoregressive/reinforce"],
                        peers=["random"], budgets=[4, 16], specs=TINY, progress=False, log=lambda m: None)
    saved = pd.read_csv(tmp_path / "run" / "budgets.csv")
    assert len(saved) == len(frame)
    gen = frame[(frame["task"] == "potts-ctx") & (frame["line"] == "generator")]
    assert sorted(gen["budget"]) == [0, 4, 16]
    assert gen.set_index("budget")["calls"].to_dict() == {0: 0.0, 4: 4.0, 16: 16.0}
    peer = frame[(frame["method"] == "random") & (frame["task"] == "potts-ctx")]
    assert (peer["calls"] <= peer["budget"]).all()
    assert set(frame[frame["task"] == "items"]["method"]) == {"pointer/reinforce", "random", "exhaustive"}
    curve = curves(frame)
    line = line_curve(curve, "potts-ctx", "autoregressive/reinforce")
    assert list(line["line"]) == ["generator", "generator", "generator"]      # search starts above K calls
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text("# Benchmarks\n\nthe main report\n")
    publish_budgets(tmp_path / "run", docs)
    publish_budgets(tmp_path / "run", docs)                                  # replaces, never repeats
    text = docs.read_text()
    assert text.count(BEGIN) == 1 and text.startswith("# Benchmarks\n\nthe main report")
    assert "### potts-ctx (unseen contexts)" in text and "| items (unseen lists) |" in text
    assert (tmp_path / "docs" / "benchmarks" / "budget-potts-ctx.png").is_file()
    assert kept_section(docs).startswith(BEGIN) and kept_section(docs).rstrip().endswith(END)


def test_splice_appends_then_replaces():
    block = f"{BEGIN}\nnew\n{END}\n"
    once = splice("# T\n", block)
    assert once == f"# T\n\n{BEGIN}\nnew\n{END}\n"
    assert splice(once.replace("new", "old") + "after\n", block) == f"# T\n\n{BEGIN}\nnew\n{END}\nafter\n"


def test_bench_budgets_cli_rejects_bad_names_before_work(runner, tmp_path):
    result = runner.invoke(app, ["bench-budgets", "--out", str(tmp_path / "o"), "--tasks", "pots",
                                 "--peers", "exhaustive", "--budgets", "0"])
    assert result.exit_code == 2
    for text in ("unknown task 'pots'", "unknown peer 'exhaustive'", "--budgets: expected positive"):
        assert text in result.output
    assert not (tmp_path / "o" / "budgets.csv").exists()


def test_parallel_run_gathers_every_task(tmp_path):
    from choicegrad.bench.budgets import run_budgets_parallel

    frame = run_budgets_parallel(["potts-ctx", "items"], [0], tmp_path, 2, pipelines=["autoregressive/reinforce"],
                                 peers=["random"], budgets=[4, 16], specs=TINY)
    assert set(frame["task"]) == {"potts-ctx", "items"}
    assert len(pd.read_csv(tmp_path / "budgets.csv")) == len(frame)
    assert (tmp_path / "tasks" / "items" / "budgets.csv").is_file()
