"""Candidate metrics (choicegrad.bench.metrics) against hand-computed cases."""

import math

import torch

from choicegrad.bench.metrics import candidate_report, gap_closed, normalise


def test_normalised_and_gap_closed_by_hand():
    v = torch.tensor([[3.0, 1.0], [10.0, 0.0]])
    lo, hi, mean = torch.tensor([1.0, 0.0]), torch.tensor([5.0, 10.0]), torch.tensor([2.0, 5.0])
    assert torch.allclose(normalise(v, {"min": lo, "max": hi}), torch.tensor([[0.5, 0.0], [1.0, 0.0]]))
    assert torch.allclose(gap_closed(v, {"mean": mean, "max": hi}), torch.tensor([[1 / 3, -1 / 3], [1.0, -1.0]]))


def test_candidate_report_by_hand():
    # two contexts, three candidates each (best first by the scorer); truth in [0, 10] for both
    true = torch.tensor([[10.0, 4.0, 6.0], [5.0, 8.0, 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    stats = {"min": torch.tensor([0.0, 0.0]), "max": torch.tensor([10.0, 10.0]), "mean": torch.tensor([5.0, 5.0])}
    scorer = torch.tensor([[2.0, 1.0, 0.5], [3.0, 2.5, -math.inf]])
    scorer_stats = {"max": torch.tensor([2.0, 4.0]), "mean": torch.tensor([0.0, 1.0])}
    new = torch.tensor([[True, False, True], [True, True, True]])
    r = candidate_report(true, valid, stats=stats, scorer=scorer, scorer_stats=scorer_stats, new=new)
    assert math.isclose(r["top1"], (1.0 + 0.5) / 2, rel_tol=1e-6)
    assert math.isclose(r["max"], (1.0 + 0.8) / 2, rel_tol=1e-6)
    assert math.isclose(r["median"], (0.6 + (0.5 + 0.8) / 2) / 2, rel_tol=1e-6)  # the invalid third row is left out
    assert math.isclose(r["gap_oracle"], (1.0 + 0.0) / 2, rel_tol=1e-6)
    assert math.isclose(r["hit_oracle"], 0.5, rel_tol=1e-6)
    assert math.isclose(r["gap_scorer"], (1.0 + 2 / 3) / 2, rel_tol=1e-6)
    assert math.isclose(r["hit_scorer"], 0.5, rel_tol=1e-6)
    assert math.isclose(r["distinct"], 2.5, rel_tol=1e-6)
    assert math.isclose(r["new"], 4 / 5, rel_tol=1e-6)


def test_candidate_report_without_scorer_or_training_rows():
    true = torch.tensor([[1.0, 0.0]])
    stats = {"min": torch.tensor([0.0]), "max": torch.tensor([1.0]), "mean": torch.tensor([0.5])}
    r = candidate_report(true, torch.ones(1, 2, dtype=torch.bool), stats=stats)
    assert math.isnan(r["new"]) and math.isnan(r["gap_scorer"]) and r["hit_oracle"] == 1.0
