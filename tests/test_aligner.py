"""The aligner: a contrastive projection of the scorer's latent; the `aligner` generator method."""

import json

import pytest
import torch
from typer.testing import CliRunner

from choicegrad import estimators as gradients
from choicegrad.scorer.aligner import AlignerFit, Aligner, fit_aligner, single_edits, soft_contrastive_loss
from choicegrad.cli import app
from choicegrad.data.table import load_table
from choicegrad.training.loop import GeneratorFit, TableContexts, fit_table_generator
from choicegrad.generators import GeneratorConfig
from choicegrad.bench.tasks import PottsTask
from choicegrad.scorer.fit import ScorerFit, fit_scorer


@pytest.fixture(scope="module")
def table():
    return load_table(PottsTask(slots=4, vocab=4, contexts=2, seed=0).table(n=600, seed=1), "s?", "y", "ctx")


@pytest.fixture(scope="module")
def scorer(table):
    return fit_scorer(table, ScorerFit(epochs=15, seed=0, model={"hidden": [32, 32]}), progress=False).scorer


def fixed_batch_loss(aligner, table, fit):
    """The contrastive loss on a fixed batch: 64 rows of each context and their scores."""
    idx = torch.cat([torch.nonzero(torch.as_tensor(table.context_groups()) == g).flatten()[:64] for g in (0, 1)])
    with torch.no_grad():
        z = aligner.embed(table.rows[idx], table.ctx_cat[idx], table.ctx_num[idx])
        return float(soft_contrastive_loss(z, table.y[idx] / float(aligner.scorer.y_std),
                                           torch.as_tensor(table.context_groups())[idx], fit.temperature, fit.bandwidth))


def test_self_similarity_is_one_for_hard_and_soft_rows(scorer, table):
    aligner = Aligner(scorer, AlignerFit(seed=0))
    rows, cat, num = table.rows[:5], table.ctx_cat[:5], table.ctx_num[:5]
    assert torch.allclose(aligner.similarity(rows, rows, cat, num), torch.ones(5), atol=1e-6)
    soft = torch.softmax(torch.randn(5, 4, 4), -1)
    assert torch.allclose(aligner.similarity(soft, soft, cat, num), torch.ones(5), atol=1e-6)
    # a one-hot soft row embeds exactly like its hard row (the scorer's soft lookup)
    hot = torch.nn.functional.one_hot(rows, 4).float()
    assert torch.allclose(aligner.embed(hot, cat, num), aligner.embed(rows, cat, num), atol=1e-5)


def test_training_reduces_the_contrastive_loss(scorer, table):
    fit = AlignerFit(steps=150, seed=0)
    before = fixed_batch_loss(Aligner(scorer, fit.model_copy(update={"steps": 0})), table, fit)
    torch.manual_seed(0)
    result = fit_aligner(scorer, table, fit, progress=False)
    after = fixed_batch_loss(result.aligner, table, fit)
    assert after < before - 0.05, (before, after)
    assert all(not p.requires_grad for p in scorer.parameters())  # frozen unless finetune


def test_single_edits_change_exactly_one_slot():
    rows = torch.randint(3, (200, 5))
    rows[:, 2] = torch.randint(2, (200,))      # slot 2 has two categories
    out = single_edits(rows, torch.tensor([3, 3, 2, 3, 3]), torch.Generator().manual_seed(0))
    assert bool(((out != rows).sum(1) == 1).all())
    assert bool((out[:, 2] < 2).all())


def test_aligner_gradients_reach_the_logits(scorer, table):
    aligner = Aligner(scorer, AlignerFit(seed=0))
    B = 6
    ctx_cat, ctx_num = table.ctx_cat[:B], table.ctx_num[:B]
    logits = torch.randn(B, 4, 4, requires_grad=True)
    pos = torch.nn.functional.normalize(torch.randn(B, 3, 32), dim=-1)
    neg = torch.nn.functional.normalize(torch.randn(B, 3, 32), dim=-1)
    for relaxation in ("st-gumbel", "soft"):
        est = gradients.get("aligner", relaxation=relaxation, score_weight=0.5)
        out = est(logits, lambda x: scorer(x, ctx_cat, ctx_num), generator=torch.Generator().manual_seed(0),
                  embed=lambda x: aligner.embed(x, ctx_cat, ctx_num), positives=pos, negatives=neg)
        logits.grad = None
        out.loss.backward()
        assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
        assert out.samples.shape == (B, 1, 4) and out.scorer_calls == B
    with pytest.raises(ValueError, match="positives"):
        gradients.get("aligner")(logits, lambda x: x.sum((1, 2)))


@pytest.mark.parametrize("kind", ["factorized", "autoregressive"])
def test_generator_trained_with_the_aligner_moves_towards_good_rows(scorer, table, kind):
    aligner = fit_aligner(scorer, table, AlignerFit(steps=100, seed=0), progress=False).aligner
    fit = GeneratorFit(method="aligner", steps=60, warm_start_steps=0, seed=0, patience=None, val_every=30)
    torch.manual_seed(0)
    res = fit_table_generator(scorer, table, GeneratorConfig(kind=kind, hidden=[32]), fit, aligner=aligner,
                              progress=False)
    trained = [h for h in res.history if h.get("phase") == "val"]
    assert trained[-1]["val_score"] >= trained[0]["val_score"] - 1e-6
    assert res.scorer_calls > 0
    with pytest.raises(ValueError, match="Aligner"):
        fit_table_generator(scorer, table, GeneratorConfig(kind=kind, hidden=[32]), fit, progress=False)


def test_references_are_each_contexts_best_and_worst_rows(table):
    contexts = TableContexts(table)
    ids = torch.tensor([0, 1, 1])
    good, bad = contexts.references(ids, 5, 0.1, torch.Generator().manual_seed(0))
    groups = torch.as_tensor(table.context_groups())
    for b, c in enumerate(ids.tolist()):
        y = table.y[groups == c]
        cut_hi, cut_lo = torch.quantile(y, 0.88), torch.quantile(y, 0.12)
        rows = table.rows[groups == c]
        for r in good[b]:
            assert float(y[(rows == r).all(1)].max()) >= cut_hi
        for r in bad[b]:
            assert float(y[(rows == r).all(1)].min()) <= cut_lo


def test_save_load_round_trip(scorer, table, tmp_path):
    aligner = fit_aligner(scorer, table, AlignerFit(steps=5, seed=0), progress=False).aligner
    aligner.save(tmp_path)
    again = Aligner.load(tmp_path, scorer)
    rows, cat, num = table.rows[:8], table.ctx_cat[:8], table.ctx_num[:8]
    assert torch.allclose(again.embed(rows, cat, num), aligner.embed(rows, cat, num))
    meta = json.loads((tmp_path / "aligner.json").read_text())
    assert meta["config"]["dim"] == 32


def test_fit_cli_with_the_aligner_method(tmp_path):
    PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=300, seed=1).to_csv(tmp_path / "t.csv", index=False)
    runner = CliRunner()
    res = runner.invoke(app, ["fit", str(tmp_path / "t.csv"), "--features", "s?", "--score", "y", "--context", "ctx",
                              "--out", str(tmp_path / "run"), "--method", "aligner", "--steps", "40",
                              "--scorer-epochs", "5", "--max-minutes", "1", "--force-generator"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "aligner.safetensors").is_file()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["generator_fit"]["method"] == "aligner" and config["aligner"]["seconds"] > 0
    res = runner.invoke(app, ["generate", str(tmp_path / "run"), "--top-k", "5", "--out", str(tmp_path / "c.csv")])
    assert res.exit_code == 0, res.output
