"""Small spaces are enumerated, not learned: fit skips the generator and generate returns the exact top-K."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch

from choicegrad.errors import InputError
from choicegrad.generators import TableContext
from choicegrad.run import ENUMERATION_SPEEDUP, Run, TableSpec, small_space, training_calls
from choicegrad.scorer.fit import ScorerFit
from choicegrad.training.loop import GeneratorFit
from cli_helpers import run

SIZES = (10, 10, 12)          # 1,200 rows per context


def _table(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"f{i}": rng.integers(0, v, n).astype(str) for i, v in enumerate(SIZES)})
    frame["user"] = rng.choice(["ann", "bob", "cy"], n)
    w = rng.normal(size=(3, SIZES[0], SIZES[1]))
    u = frame["user"].map({"ann": 0, "bob": 1, "cy": 2}).to_numpy()
    frame["y"] = w[u, frame.f0.astype(int), frame.f1.astype(int)] + 0.3 * np.cos(frame.f2.astype(int) * (u + 1))
    return frame


def _exact_top(run: Run, k: int) -> dict[str, set[tuple[str, ...]]]:
    """Every row of every training context scored by the run's scorer directly: {user: its top-k rows}."""
    every = torch.tensor(list(itertools.product(*(range(len(s.categories)) for s in run.space.slots))))
    top = {}
    for user in run.contexts["user"]:
        cat, num = run.context.encode(pd.DataFrame({"user": [user] * len(every)}), "contexts")
        with torch.no_grad():
            scores = run.scorer(every, cat, num)
        best = every[scores.argsort(descending=True)[:k]]
        top[user] = {tuple(run.space.slots[s].categories[i] for s, i in enumerate(row)) for row in best.tolist()}
    return top


def test_rule_compares_enumeration_with_the_rows_training_scores():
    from choicegrad.data.space import ChoiceSpace, Slot

    space = ChoiceSpace(slots=[Slot(name=f"f{i}", categories=[str(c) for c in range(v)]) for i, v in enumerate(SIZES)])
    fit = GeneratorFit()
    assert training_calls(fit) == fit.steps * fit.batch_size * fit.samples
    plan = small_space(space, 3, fit)
    assert plan == {"space_rows": 1200, "contexts": 3, "enumeration_calls": 3600, "training_calls": training_calls(fit)}
    many = ENUMERATION_SPEEDUP * training_calls(fit) // 1200
    assert small_space(space, many, fit) is not None and small_space(space, many + 1, fit) is None  # many: train
    assert small_space(space, 3, GeneratorFit(steps=1)) is None                        # a cheap training: train


def test_fit_enumerates_a_small_space_and_generate_returns_the_exact_top_k(tmp_path):
    _table().to_csv(tmp_path / "t.csv", index=False)
    res = run("fit", tmp_path / "t.csv", "--features", "f?", "--score", "y", "--context", "user",
              "--scorer-epochs", "2", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "not trained" in res.output and "1,200 rows" in res.output and "--force-generator" in res.output
    assert not (tmp_path / "run" / "generator.safetensors").exists()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["enumerated"]["space_rows"] == 1200 and config["generator"] is None

    res = run("generate", tmp_path / "run", "--top-k", "10", "--out", tmp_path / "top.csv")
    assert res.exit_code == 0, res.output
    assert "with exhaustive" in res.output and "(3600 scorer calls)" in res.output      # 1,200 per context
    got = pd.read_csv(tmp_path / "top.csv", dtype=str)
    exact = _exact_top(Run.load(tmp_path / "run"), 10)
    for user, rows in got.groupby("user"):
        assert set(map(tuple, rows[["f0", "f1", "f2"]].to_numpy().tolist())) == exact[user]

    res = run("generate", tmp_path / "run", "--decoder", "polish", "--out", tmp_path / "p.csv")
    assert res.exit_code == 2 and "needs a generator" in res.output and "--force-generator" in res.output
    assert not (tmp_path / "p.csv").exists()


def test_force_generator_trains_one_and_every_summary_counts_calls_against_the_space(tmp_path):
    lines = []
    fitted = Run.fit(_table(600), tmp_path / "run", TableSpec(features="f?", score="y", context="user"),
                     scorer_fit=ScorerFit(epochs=1), generator_fit=GeneratorFit(steps=5), echo=lines.append,
                     progress=False, force_generator=True)
    assert fitted.generator is not None and fitted.config["enumerated"] is None
    summary = lines[-1]
    assert "per context, against 1,200 rows in each context's space" in summary
    assert fitted.generate(k=3).attrs["decoder"] == "polish"
    with pytest.raises(InputError, match="force_generator"):
        Run.fit(_table(600), tmp_path / "small", TableSpec(features="f?", score="y", context="user"),
                scorer_fit=ScorerFit(epochs=1), echo=lines.append, progress=False).generate(decoder="sample")


def test_an_objective_run_over_a_small_space_enumerates_with_the_objective(tmp_path):
    from choicegrad.objectives import FrameObjective

    space = {"a": ["x", "y", "z"], "b": ["p", "q"]}
    best = {"u": ("z", "q"), "v": ("x", "p")}

    def score(frame: pd.DataFrame) -> np.ndarray:
        want = frame["who"].map(lambda w: best[w])
        return np.array([(a == t[0]) + (b == t[1]) for a, b, t in zip(frame.a, frame.b, want)], dtype=float)

    lines = []
    fitted = Run.fit_objective(FrameObjective(score), tmp_path / "run", space=space,
                               contexts=pd.DataFrame({"who": ["u", "v"]}), echo=lines.append, progress=False)
    assert fitted.generator is None and "not trained" in lines[-1] and "objective calls" in lines[-1]
    top = fitted.generate(k=1)
    assert {r.who: (r.a, r.b) for r in top.itertuples()} == best and top.attrs["scorer_calls"] == 12
    again = Run.load(tmp_path / "run")
    with pytest.raises(InputError, match="no generator"):
        again.generate(k=1)
    assert len(again.use_objective(FrameObjective(score)).generate(k=2)) == 4


def test_generate_min_distance_spreads_the_exact_top_rows(tmp_path):
    """--min-distance 2 on an enumerated run: exhaustive's rows, each the best of every row at least 2
    features from the ones before it (greedy over the 32K best, brute force here); a decoder that
    cannot take it, or a distance below 1, exits 2 with nothing written."""
    _table().to_csv(tmp_path / "t.csv", index=False)
    assert run("fit", tmp_path / "t.csv", "--features", "f?", "--score", "y", "--context", "user",
               "--scorer-epochs", "2", "--out", tmp_path / "run").exit_code == 0
    res = run("generate", tmp_path / "run", "--top-k", "6", "--min-distance", "2", "--out", tmp_path / "far.csv")
    assert res.exit_code == 0, res.output
    assert "with exhaustive" in res.output and "(3600 scorer calls)" in res.output
    got = pd.read_csv(tmp_path / "far.csv", dtype=str)
    loaded = Run.load(tmp_path / "run")
    every = torch.tensor(list(itertools.product(*(range(len(s.categories)) for s in loaded.space.slots))))
    for user, rows in got.groupby("user"):
        cat, num = loaded.context.encode(pd.DataFrame({"user": [user] * len(every)}), "contexts")
        with torch.no_grad():
            order = every[loaded.scorer(every, cat, num).argsort(descending=True)[:192]].tolist()
        want: list[list[int]] = []
        for row in order:
            if len(want) < 6 and all(sum(a != b for a, b in zip(row, w)) >= 2 for w in want):
                want.append(row)
        labels = [[loaded.space.slots[s].categories[i] for s, i in enumerate(r)] for r in want]
        assert rows[["f0", "f1", "f2"]].to_numpy().tolist() == labels
    res = run("generate", tmp_path / "run", "--min-distance", "2", "--decoder", "slices", "--out", tmp_path / "x.csv")
    assert res.exit_code == 2 and "--min-distance: slices does not take it" in res.output
    res = run("generate", tmp_path / "run", "--min-distance", "0", "--out", tmp_path / "x.csv")
    assert res.exit_code == 2 and "--min-distance" in res.output
    assert not (tmp_path / "x.csv").exists()
