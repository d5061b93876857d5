"""Trajectory balance (`trajectory-balance`): its gradient against the exact one by enumeration, for
per-slot logits and for every generator form; training reaches the target exp(f/T)/Z; the learned
log Z, its optimiser and its checkpoint; hyperparameter errors.

Exact reference: on a tiny space (3 slots x 3 categories, 2 contexts) the expected loss is
    L = (1/B) sum_b sum_x sg(p_b(x)) (log_z_b + log p_b(x) - f_b(x)/T)^2
(samples are not differentiated), computed by enumerating every row; its gradient w.r.t. the policy's
parameters and log_z is compared with the mean of G groups of C-copy estimates (Bonferroni z-test, as
in test_estimators_policies.py).
"""

import math
from statistics import NormalDist

import pytest
import torch

import choicegrad.estimators as E
from choicegrad.bench.tasks import PlantedTask
from choicegrad.bench.toys import RandomMLPScorer
from choicegrad.checkpoints import Checkpointer
from test_checkpoints import StopAt
from choicegrad.data.table import load_table
from choicegrad.errors import Interrupted
from choicegrad.generators import AutoregressiveGenerator, FactorizedGenerator, GeneratorConfig, PointerGenerator
from choicegrad.generators.context import ItemContext, TableContext
from choicegrad.generators.policy import policy_of
from choicegrad.training.contexts import SampledContexts, TableContexts
from choicegrad.training import loop as loop_module
from choicegrad.estimators.trajectory_balance import LOG_Z_LR_FACTOR, TB_TEMPERATURE, LogZ
from choicegrad.training.loop import GeneratorFit, fit_generator
from choicegrad.training.step import TrainingStep

S, V, B = 3, 3, 2
T = 0.7
ALPHA = 1e-4
GROUPS, COPIES = 30, 200


def contextual(seed: int = 1):
    """score(x (N, S, V) one-hot, c (N,) context ids) -> (N,): a random MLP, flipped and shifted per context."""
    base = RandomMLPScorer(S, V, hidden=16, seed=seed, scale=2.0)
    shift, flip = torch.tensor([0.0, 1.5]), torch.tensor([1.0, -1.0])
    return lambda x, c: flip[c] * base(x) + shift[c]


def context_score(seed: int = 1):
    """score_fn (N, S, V) -> (N,) for B contexts, rows context-major (row n belongs to context n // (N / B))."""
    score = contextual(seed)
    return lambda x: score(x, torch.arange(B).repeat_interleave(x.shape[0] // B))


def make(kind: str, seed: int = 0):
    """(parameters, build_policy(copies) -> policy over B * copies contexts (context-major))."""
    torch.manual_seed(seed)
    if kind == "logits":
        logits = torch.randn(B, S, V, requires_grad=True)
        return [logits], lambda c: E.LogitsPolicy.from_logits(logits.repeat_interleave(c, 0))
    config = GeneratorConfig(kind=kind, hidden=[8], context_dim=2, heads=1, attention_layers=0)
    if kind == "pointer":
        gen = PointerGenerator(S, 2, config)
        ctx = ItemContext(items=torch.randn(B, V, 2), mask=torch.ones(B, V, dtype=torch.bool))
    else:
        cls = AutoregressiveGenerator if kind == "autoregressive" else FactorizedGenerator
        gen = cls([V] * S, [2], 0, config)
        ctx = TableContext(torch.tensor([[0], [1]]), torch.zeros(B, 0))
    with torch.no_grad():   # away from the near-uniform start, so the gradient has structure
        for p in gen.parameters():   # (less for the pointer, whose attention saturates quickly)
            p.add_((0.2 if kind == "pointer" else 0.5) * torch.randn_like(p))
    return [p for p in gen.parameters() if p.requires_grad], lambda c: policy_of(gen, ctx.repeat_interleave(c))


def flat_grad(params, loss) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def exact_tb_loss(policy, f, log_z: torch.Tensor, temperature: float = T) -> torch.Tensor:
    """(1/B) sum_b sum_x sg(p_b(x)) (log_z_b + log p_b(x) - f_b(x)/T)^2 by enumeration."""
    rows = E.enumerate_rows(S, V)                                          # (R, S)
    R = rows.shape[0]
    with torch.no_grad():
        fx = f(torch.nn.functional.one_hot(rows.repeat(B, 1), V).float()).reshape(B, R)
    logp = policy.log_prob(rows.unsqueeze(0).expand(B, R, S))             # (B, R)
    delta = log_z[:, None] + logp - fx / temperature
    return (logp.detach().exp() * delta ** 2).sum(1).mean()


def exact_target(f, temperature: float = T) -> tuple[torch.Tensor, torch.Tensor]:
    """(exp(f/T)/Z (B, R), log Z (B,)) by enumeration."""
    rows = E.enumerate_rows(S, V)
    fx = f(torch.nn.functional.one_hot(rows.repeat(B, 1), V).float()).reshape(B, -1) / temperature
    return torch.softmax(fx, 1), torch.logsumexp(fx, 1)


def z_test(grads: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Per coordinate |mean - exact| beyond the Bonferroni z times its SE, plus fp32 rounding (1e-5 of
    the largest exact coordinate: a nearly deterministic coordinate has SE ~ 0)."""
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(grads.shape[0])
    z = NormalDist().inv_cdf(1 - ALPHA / (2 * exact.numel()))
    return (mean - exact).abs() > z * se + 1e-5 * float(exact.abs().max())


def group_grads(params, policy_for, f, est, log_z=None, seed=0) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(GROUPS):
        extra = {} if log_z is None else {"log_z": log_z.repeat_interleave(COPIES)}
        out.append(flat_grad(params, est(policy_for(COPIES), f, generator=rng, **extra).loss))
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["logits", "autoregressive", "factorized", "pointer"])
def test_gradient_with_learned_log_z_matches_enumeration(kind):
    """Gradient w.r.t. the policy's parameters and log_z, for each policy form (and a power check)."""
    params, policy_for = make(kind, seed=1)
    f = context_score()
    log_z = torch.tensor([1.0, -0.5], requires_grad=True)
    every = params + [log_z]
    exact = flat_grad(every, exact_tb_loss(policy_for(1), f, log_z))
    grads = group_grads(every, policy_for, f, E.get("trajectory-balance", k=4, temperature=T), log_z=log_z, seed=3)
    bad = z_test(grads, exact)
    assert not bool(bad.any()), f"{int(bad.sum())} of {exact.numel()} coordinates biased"
    assert bool(z_test(0.8 * grads, exact).any())          # the test has power against a 20% error


@pytest.mark.parametrize("kind", ["logits", "autoregressive"])
def test_batch_log_z_gradient_matches_enumeration_at_any_log_z(kind):
    """Without log_z (VarGrad, k/(k-1)-corrected): the policy gradient of TB, which on-policy does not
    depend on log Z (E[grad log p] = 0): checked against the exact one at two different log Z."""
    params, policy_for = make(kind, seed=2)
    f = context_score(seed=4)
    exact = flat_grad(params, exact_tb_loss(policy_for(1), f, torch.zeros(B)))
    other = flat_grad(params, exact_tb_loss(policy_for(1), f, torch.tensor([3.0, -2.0])))
    assert torch.allclose(exact, other, atol=1e-5)
    grads = group_grads(params, policy_for, f, E.get("trajectory-balance", k=3, temperature=T), seed=5)
    bad = z_test(grads, exact)
    assert not bool(bad.any()), f"{int(bad.sum())} of {exact.numel()} parameters biased"
    assert bool(z_test(grads * 2 / 3, exact).any())         # the uncorrected batch mean would fail


def test_output_contract_and_residuals():
    f = context_score()
    logits = torch.randn(B, S, V, requires_grad=True)
    log_z = torch.zeros(B, requires_grad=True)
    out = E.get("trajectory-balance", k=5, temperature=T)(logits, f, generator=torch.Generator().manual_seed(0),
                                                          log_z=log_z)
    assert out.samples.shape == (B, 5, S) and out.scores.shape == (B, 5) and out.sample.shape == (B, S)
    assert torch.equal(out.sample, out.samples[torch.arange(B), out.scores.argmax(1)])
    assert out.scorer_calls == B * 5 and out.entropy.shape == (B,) and "log_z" in out.stats
    lp = E.LogitsPolicy.from_logits(logits).log_prob(out.samples)
    assert torch.allclose(out.weights, (log_z[:, None] + lp - out.scores / T).detach(), atol=1e-5)
    assert torch.allclose(out.loss, (out.weights ** 2).mean(), atol=1e-5)
    out.loss.backward()
    assert logits.grad is not None and log_z.grad is not None
    assert E.families()["reward-proportional"] == ["trajectory-balance"]


def test_bad_hyperparameters_and_call_options():
    for bad in (0, -1.0, float("nan"), float("inf"), "warm"):
        with pytest.raises(ValueError, match="temperature"):
            E.get("trajectory-balance", temperature=bad)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="k"):
            E.get("trajectory-balance", k=bad)
    logits = torch.randn(B, S, V)
    f = context_score()
    with pytest.raises(ValueError, match="k >= 2"):
        E.get("trajectory-balance", k=1)(logits, f)
    E.get("trajectory-balance", k=1)(logits, f, log_z=torch.zeros(B))   # fine with a learned log Z
    with pytest.raises(ValueError, match="log_z"):
        E.get("trajectory-balance")(logits, f, log_z=torch.zeros(B + 1))
    with pytest.raises(TypeError, match="log_z"):
        E.get("trajectory-balance")(logits, f, log_z=[0.0, 0.0])
    with pytest.raises(TypeError, match="tau"):
        E.get("trajectory-balance")(logits, f, tau=0.5)


def test_log_z_module_reads_each_context_kind():
    table = LogZ([3, 2], 2)
    with torch.no_grad():
        table.embeds[0].weight.copy_(torch.tensor([[1.0], [2.0], [3.0]]))
        table.numeric.weight.fill_(1.0)
        table.bias.fill_(0.5)
    ctx = TableContext(torch.tensor([[2, 1], [0, 0]]), torch.tensor([[1.0, 1.0], [0.0, -1.0]]))
    assert torch.allclose(table(ctx), torch.tensor([3 + 0 + 2 + 0.5, 1 + 0 - 1 + 0.5]))
    assert torch.equal(LogZ()(TableContext.empty(4)), torch.zeros(4))
    items = LogZ(item_dim=2)
    with torch.no_grad():
        items.items.weight.copy_(torch.tensor([[1.0, 10.0]]))
    ctx = ItemContext(torch.tensor([[[1.0, 0.0], [3.0, 1.0]], [[2.0, 2.0], [9.0, 9.0]]]),
                      torch.tensor([[True, True], [True, False]]))
    assert torch.allclose(items(ctx), torch.tensor([2.0 + 5.0, 2.0 + 20.0]))


def tiny_problem():
    """(score_fn as for the estimator, an objective (x, ctx) over the same 2 contexts, their sampler)."""
    score = contextual(seed=7)

    def objective(x, ctx):   # x (N, S, V) one-hot or (N, S) long; ctx.cat[:, 0] = the context id
        hot = x if x.is_floating_point() else torch.nn.functional.one_hot(x, V).float()
        return score(hot, ctx.cat[:, 0])

    def draw(n, rng):
        return TableContext(torch.randint(B, (n, 1), generator=rng), torch.zeros(n, 0))

    return context_score(seed=7), objective, SampledContexts(draw, validation_size=8)


def test_training_reaches_the_target_distribution():
    """The autoregressive generator trained through TrainingStep (learned log Z per context, a 10x
    learning rate) samples exp(f/T)/Z: total variation < 0.05 per context (0.013 at 250 steps), log Z within 0.05."""
    f, objective, contexts = tiny_problem()
    torch.manual_seed(0)
    gen = AutoregressiveGenerator([V] * S, [B], 0, GeneratorConfig(hidden=[32], context_dim=4))
    fit = GeneratorFit(method="trajectory-balance", method_options={"temperature": T}, batch_size=16, samples=16)
    step = TrainingStep(gen, objective, contexts, fit)
    assert step.estimator.k == 16 and step.estimator.temperature == T and list(step.modules) == ["log_z"]
    opt = torch.optim.Adam([{"params": gen.parameters()}, {"params": step.modules.parameters(), "lr": 5e-2}], lr=5e-3)
    rng = torch.Generator().manual_seed(0)
    for _ in range(250):
        loss, _ = step(1.0, 0.5, rng)          # the entropy bonus is ignored for trajectory balance
        opt.zero_grad()
        loss.backward()
        opt.step()
    target, log_z = exact_target(f)
    ctx = TableContext(torch.tensor([[0], [1]]), torch.zeros(B, 0))
    rows = E.enumerate_rows(S, V)
    with torch.no_grad():
        p = policy_of(gen, ctx).log_prob(rows.unsqueeze(0).expand(B, -1, S)).exp()
        learned = step.modules["log_z"](ctx)
    tv = 0.5 * (p - target).abs().sum(1)
    assert bool((tv < 0.05).all()), tv
    assert torch.allclose(learned, log_z, atol=0.05), (learned, log_z)


def test_fit_generator_trains_and_checkpoints_log_z(tmp_path, monkeypatch):
    """fit_generator optimises log Z (at LOG_Z_LR_FACTOR x lr, started at the first batch's estimate) and
    a resumed run is bit-identical, log Z included; the default temperature is TB_TEMPERATURE, k is fit.samples."""
    task = PlantedTask(slots=3, vocab=3, contexts=2, modes=2, seed=1)
    data = load_table(task.table(200, seed=0), "s?", "y", "ctx")
    fit = GeneratorFit(method="trajectory-balance", steps=30, batch_size=8, samples=4, val_every=10,
                       warm_start_steps=5, log_every=5, seed=2)
    loops = []
    original = loop_module._Loop.run

    def keep(self, progress):   # keep each run's _Loop to look at its log Z and optimiser
        loops.append(self)
        return original(self, progress)

    monkeypatch.setattr(loop_module._Loop, "run", keep)

    def run(checkpoint=None):
        torch.manual_seed(0)
        gen = AutoregressiveGenerator([3] * 3, [2], 0, GeneratorConfig(hidden=[16], context_dim=4))
        return fit_generator(gen, task.objective(), TableContexts(data), fit, progress=False, checkpoint=checkpoint)

    full = run()
    first = loops[-1]
    assert first.step_fn.estimator.temperature == TB_TEMPERATURE and first.step_fn.estimator.k == 4
    assert len(first.opt.param_groups) == 2
    assert first.opt.param_groups[1]["lr"] == pytest.approx(LOG_Z_LR_FACTOR * fit.lr)
    log_z = first.modules["log_z"]
    assert bool(log_z.ready) and float(log_z.bias.detach()) != 0.0
    with pytest.raises(Interrupted):
        run(StopAt(tmp_path / "ck", "generator", 13))
    resumed = run(Checkpointer(tmp_path / "ck", resume=True))
    a, b = full.generator.state_dict(), resumed.generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    za, zb = log_z.state_dict(), loops[-1].modules["log_z"].state_dict()
    assert za.keys() == zb.keys() and all(torch.equal(za[k], zb[k]) for k in za)
    assert (full.best_val, full.scorer_calls) == (resumed.best_val, resumed.scorer_calls)


def test_pointer_generator_trains_with_item_log_z():
    """Item contexts: the learned log Z reads the item vectors; the pointer generator picks the five."""
    from choicegrad.bench.tasks import PickFiveTask
    from choicegrad.decoding import decode
    from choicegrad.generators import ItemObjective, build

    task = PickFiveTask(slots=3, lengths=(4, 12))
    torch.manual_seed(0)
    gen = build(GeneratorConfig(kind="pointer", hidden=[32, 32], attention_layers=1), num_slots=3, item_dim=1)
    fit = GeneratorFit(method="trajectory-balance", steps=150, batch_size=32, samples=8, lr=3e-3, warm_start_steps=0,
                       val_every=50, patience=None)
    fit_generator(gen, ItemObjective(task.reward), SampledContexts(task.draw, validation_size=64), fit)
    fresh = task.draw(1000, torch.Generator().manual_seed(99), lengths=(20, 40))   # never seen in training
    best = decode("argmax", gen, ItemObjective(task.reward), fresh, 1)
    assert task.accuracy(best.rows[:, 0], fresh) >= 0.99
