"""Amortised search (GeneratorFit.distill): search-improved targets, the replay, and training with it."""

import torch

from choicegrad.bench.tasks import PottsTask
from choicegrad.data.table import load_table
from choicegrad.generators import GeneratorConfig, TableContext
from choicegrad.generators.objective import TableObjective
from choicegrad.scorer.fit import ScorerFit, fit_scorer
from choicegrad.training.distill import Distillation
from choicegrad.training.loop import GeneratorFit, fit_table_generator


def quadratic(x, ctx):
    """A context-free score on 3 slots x 4 categories: the row (3, 3, 3) is best; one slot at a time climbs."""
    return (x if not x.is_floating_point() else x.argmax(-1)).float().sum(-1)


def test_targets_climb_from_the_best_draw_and_the_replay_keeps_the_best_per_context():
    d = Distillation(weight=1.0, sweeps=1, num_contexts=5, slots=3, device="cpu")
    ctx = TableContext.empty(2)
    allowed = torch.ones(2, 3, 4, dtype=torch.bool)
    samples = torch.tensor([[[0, 0, 0], [1, 0, 0]], [[2, 2, 2], [0, 1, 0]]])
    scores = quadratic(samples.reshape(-1, 3), None).reshape(2, 2)
    rows, calls = d.targets(quadratic, ctx, allowed, samples, scores, torch.tensor([0, 4]))
    assert calls == 2 + 2 * 3 * 3                              # the starts re-scored, one sweep of changes
    assert quadratic(rows, None).tolist() == [4.0, 7.0]         # the best change of the best draw
    assert rows[1].tolist() == [2, 2, 3]
    assert d.scores[[0, 4]].tolist() == [4.0, 7.0] and d.rows[1].tolist() == [-1, -1, -1]
    first = rows.clone()
    worse = torch.tensor([[[0, 0, 0]], [[0, 0, 0]]])
    rows, _ = d.targets(quadratic, ctx, allowed, worse, torch.zeros(2, 1), torch.tensor([0, 4]))
    assert torch.equal(rows, first)                            # replayed: nothing better was found
    fresh = Distillation(weight=1.0, sweeps=1, num_contexts=None, slots=3, device="cpu")
    rows, _ = fresh.targets(quadratic, ctx, allowed, worse, torch.zeros(2, 1), None)
    assert quadratic(rows, None).tolist() == [3.0, 3.0]         # no ids: this step's search alone


def test_a_context_drawn_twice_in_a_step_keeps_its_best_row():
    d = Distillation(weight=1.0, sweeps=1, num_contexts=3, slots=3, device="cpu")
    ctx = TableContext.empty(3)
    allowed = torch.ones(3, 3, 4, dtype=torch.bool)
    samples = torch.tensor([[[2, 2, 2]], [[0, 0, 0]], [[2, 2, 0]]])        # context 1 drawn twice: 7 and 3 reached
    rows, _ = d.targets(quadratic, ctx, allowed, samples, torch.zeros(3, 1), torch.tensor([1, 1, 2]))
    assert d.scores.tolist() == [float("-inf"), 7.0, 7.0]
    assert quadratic(d.rows[1:], None).tolist() == [7.0, 7.0]
    assert quadratic(rows, None).tolist() == [7.0, 7.0, 7.0]              # both draws of context 1 learn the best


def test_trajectory_balance_and_a_single_context_are_not_distilled_by_default():
    from choicegrad.training.step import DISTILL, distill_weight

    assert distill_weight(None, "reinforce") == DISTILL > 0
    assert distill_weight(None, "reinforce", contexts=None) == DISTILL      # a stream of fresh contexts
    assert distill_weight(None, "reinforce", contexts=2) == DISTILL
    assert distill_weight(None, "reinforce", contexts=1) == 0.0             # nothing to amortise
    assert distill_weight(0.5, "reinforce", contexts=1) == 0.5              # unless asked for
    assert distill_weight(None, "trajectory-balance") == 0.0
    assert distill_weight(0.5, "trajectory-balance") == 0.5


def test_a_table_without_contexts_trains_without_distillation_by_default():
    from choicegrad.training.contexts import TableContexts
    from choicegrad.training.step import TrainingStep

    frame = PottsTask(slots=3, vocab=3, contexts=2, seed=0).table(n=200, seed=1)
    one = load_table(frame, "s?", "y")                     # no context column: one context
    two = load_table(frame, "s?", "y", "ctx")
    from choicegrad.generators import AutoregressiveGenerator

    gen = AutoregressiveGenerator(one.space.sizes, [], 0, GeneratorConfig(kind="autoregressive", hidden=[8]))
    steps = [TrainingStep(gen, None, TableContexts(d), GeneratorFit(method="reinforce")) for d in (one, two)]
    assert steps[0].distill is None and steps[1].distill is not None and steps[1].distill.weight == 1.0


def test_fit_with_distillation_spends_the_search_calls_and_learns(tmp_path):
    frame = PottsTask(slots=4, vocab=4, contexts=3, seed=0).table(n=600, seed=1)
    data = load_table(frame, "s?", "y", "ctx")
    scorer = fit_scorer(data, ScorerFit(epochs=5, seed=0), progress=False).scorer
    base = dict(method="reinforce", steps=40, val_every=20, warm_start_steps=0, seed=1)
    cfg = GeneratorConfig(kind="autoregressive", hidden=[32])
    plain = fit_table_generator(scorer, data, cfg, GeneratorFit(**base, distill=0.0), progress=False)
    distilled = fit_table_generator(scorer, data, cfg, GeneratorFit(**base, distill=1.0), progress=False)
    assert distilled.scorer_calls > plain.scorer_calls
    objective = TableObjective(scorer)
    ctx = TableContext(*scorer.context.encode(frame[["ctx"]].drop_duplicates()))
    with torch.no_grad():
        greedy = [objective(g.generator.greedy(ctx), ctx) for g in (plain, distilled)]
    # the greedy row of the generator that learned from search scores at least as well in every context
    assert bool((greedy[1] >= greedy[0] - 1e-6).all()) and float(greedy[1].mean()) > float(greedy[0].mean())
