"""Tiny optimisation runs: free logits (no network) on a space with a planted optimum reach it."""

import pytest
import torch
import torch.nn.functional as F

import choicegrad.estimators as G



S, V = 3, 4
OPT = torch.tensor([2, 0, 3])


class PlantedScorer(torch.nn.Module):
    """f(x) = sum_s <a_s, x_s> + sum_{s<t} x_s^T W_st x_t, with unary terms favouring OPT by a margin
    and weak random pairwise terms; works on hard and soft rows."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        a = torch.rand(S, V, generator=g) * 0.5
        a[torch.arange(S), OPT] = 1.0
        self.register_buffer("a", a)
        self.register_buffer("W", torch.randn(S, S, V, V, generator=g) * 0.05)

    def forward(self, x):
        unary = (x * self.a).sum((1, 2))
        pair = torch.einsum("nsv,stvw,ntw->n", x, torch.triu(torch.ones(S, S), 1)[..., None, None] * self.W, x)
        return unary + pair


@pytest.fixture(scope="module")
def scorer():
    f = PlantedScorer()
    rows = G.enumerate_rows(S, V)
    vals = f(F.one_hot(rows, V).float())
    top2 = vals.topk(2).values
    assert torch.equal(rows[vals.argmax()], OPT) and float(top2[0] - top2[1]) > 0.1  # planted, unique
    return f


def optimise(est, f, *, batch=16, steps=300, lr=0.1, extra_fn=None, seed=0):
    param = torch.zeros(1, S, V, requires_grad=True)
    opt = torch.optim.Adam([param], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        extra = extra_fn() if extra_fn else {}
        n = extra["targets"].shape[0] if "targets" in extra else batch
        out = est(param.expand(n, S, V), f, generator=gen, **extra)
        out.loss.backward()
        opt.step()
    return param.detach()[0]


CONFIGS = [
    ("soft", dict(tau=1.0)),
    ("st", dict(tau=1.0)),
    ("gumbel", dict(tau=0.5)),
    ("st-gumbel", dict(tau=1.0)),
    ("gumbel-rao", dict(tau=1.0, k=5)),
    ("reinmax", dict(tau=1.0)),
    ("reinforce", dict(k=1, baseline="none")),
    ("reinforce", dict(k=4, baseline="mean")),
    ("reinforce", dict(k=4, baseline="rloo")),
    ("reinforce", dict(k=1, baseline="greedy")),
    ("raml", dict(m=8, temperature=0.1)),      # no targets: fits its own best samples
]


@pytest.mark.parametrize("name,hp", CONFIGS, ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in hp.items())}"
                                                   for n, hp in CONFIGS])
def test_reaches_planted_optimum(name, hp, scorer):
    batch = 4 if name in ("reinforce", "raml") else 16
    logits = optimise(G.get(name, **hp), scorer, batch=batch)
    assert torch.equal(logits.argmax(-1), OPT), (name, hp, torch.softmax(logits, -1))
    if name not in ("soft", "st"):  # stochastic methods: the distribution concentrates on the optimum
        assert float(torch.softmax(logits, -1)[torch.arange(S), OPT].min()) > 0.5


def data_rows(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, V, (n, S), generator=g)
    rows[0] = OPT
    return rows


def test_weighted_ce_with_data_including_optimum(scorer):
    rows = data_rows()
    scores = scorer(F.one_hot(rows, V).float())
    extra = lambda: {"targets": rows, "target_scores": scores}  # noqa: E731
    logits = optimise(G.get("weighted-ce", weighting="softmax", temperature=0.05), scorer, extra_fn=extra)
    assert torch.equal(logits.argmax(-1), OPT)


def test_weighted_ce_with_missing_slots(scorer):
    rows = data_rows()
    rows[1:, 1] = -1         # slot 1 only observed in the optimum row
    extra = lambda: {"targets": rows}  # noqa: E731  (scored by the scorer, missing slots filled)
    logits = optimise(G.get("weighted-ce", weighting="rank"), scorer, extra_fn=extra)
    assert torch.equal(logits.argmax(-1), OPT)


def test_raml_with_data_including_optimum(scorer):
    rows = data_rows()
    extra = lambda: {"targets": rows}  # noqa: E731
    logits = optimise(G.get("raml", m=16, temperature=0.02, edit_prob=0.3), scorer, extra_fn=extra)
    assert torch.equal(logits.argmax(-1), OPT)
