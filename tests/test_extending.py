"""docs/architecture.md's recipes ("Where to add things (one file each)"), done as a user would: one
file of their own each for an estimator, a generator, a decoder, a task and a peer, registered by
the public functions, then used through the public API only.

The five files are imported in one subprocess (torch is imported once; the registries of this
pytest worker stay as they are, which tests/test_tasks.py checks exactly), which prints a JSON
summary asserted on here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"

MY_ESTIMATOR = '''
"""An estimator of my own: the score-function gradient summed over every row of a tiny space
(exact, no sampling), written with the Policy methods only."""
import torch
import torch.nn.functional as F

from choicegrad.estimators import Estimator, EstimatorOutput, enumerate_rows, register


@register("enumerate")
class Enumerate(Estimator):
    family = "score-function"

    def __init__(self, max_rows: int = 4096):
        self.max_rows = max_rows

    def estimate(self, policy, score_fn, generator, **extra):
        B, S, V = policy.mask.shape
        if V ** S > self.max_rows:
            raise ValueError(f"enumerate: {V}**{S} rows is more than max_rows={self.max_rows}")
        rows = enumerate_rows(S, V, device=policy.mask.device).unsqueeze(0).expand(B, -1, -1)   # (B, R, S)
        R = rows.shape[1]
        ok = policy.mask.gather(-1, rows.transpose(1, 2)).transpose(1, 2).all(-1)             # (B, R)
        ok &= ((policy.fixed[:, None, :] < 0) | (rows == policy.fixed[:, None, :])).all(-1)
        logp = torch.where(ok, policy.log_prob(rows), torch.zeros(B, R, device=ok.device))
        with torch.no_grad():
            f = score_fn(F.one_hot(rows.reshape(B * R, S), V).float()).reshape(B, R).float()
            p = torch.where(ok, logp.exp(), torch.zeros_like(logp))
        loss = -(p * f * logp).sum(1).mean()                  # grad: -sum_x f(x) grad p(x), batch mean
        sample = policy.sample(1, generator)                  # (B, 1, S)
        code = (sample * V ** torch.arange(S - 1, -1, -1, device=sample.device)).sum(-1)      # its row index
        return EstimatorOutput(sample=sample[:, 0], samples=sample, scores=f.gather(1, code), loss=loss,
                               scorer_calls=B * R, stats={}, entropy=policy.entropy(sample))
'''

MY_GENERATOR = '''
"""A generator of my own: a Markov chain over the slots (slot s's logits depend on the context and
slot s-1's choice), autoregressive, so it brings features and slot_logits."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from choicegrad.generators import GeneratorConfig
from choicegrad.generators.base import TableGenerator, mask_logits


class ChainGenerator(TableGenerator):
    kind = "chain"
    autoregressive = True

    def __init__(self, sizes, cardinalities, num_numeric, config: GeneratorConfig):
        super().__init__(sizes, cardinalities, num_numeric, config.model_copy(update={"layout": "padded"}),
                         config.hidden)
        S, V = len(sizes), max(sizes)
        self.head = nn.Linear(self.trunk.out_dim, S * V)
        self.step = nn.Parameter(torch.zeros(S, V, V))          # slot s-1's choice -> slot s's logits

    def features(self, ctx):
        S, V = self.mask.shape
        return self.head(self.trunk(ctx)).reshape(len(ctx), S, V)

    def _previous(self, x, s):
        """Slot s-1 of x (..., S) long (-1: none) or (..., S, V) float as (..., V) float."""
        V = self.mask.shape[1]
        if x.is_floating_point():
            return x[..., s - 1, :]
        return F.one_hot(x[..., s - 1].clamp(min=0), V).float() * (x[..., s - 1:s] >= 0).float()

    def slot_logits(self, features, x, s, carry=None, padded=True):
        logits = features[:, None, s].expand(len(features), x.shape[1], -1)              # (B, M, V)
        if s > 0:
            logits = logits + self._previous(x, s) @ self.step[s]
        logits = mask_logits(logits, self.mask[s])
        return (logits if padded else logits[..., :self.sizes[s]]), None

    def logits(self, ctx, x: Optional[torch.Tensor] = None):
        feats = self.features(ctx)
        if x is None:
            return mask_logits(feats, self.mask)
        out = [self.slot_logits(feats, x.unsqueeze(1), s)[0][:, 0] for s in range(self.num_slots)]
        return torch.stack(out, 1)
'''

MY_DECODER = '''
"""A decoder of my own: the greedy row, then every single-slot change of it; the K best by the
objective."""
import torch

from choicegrad.decoding import register_decoder
from choicegrad.decoding.scoring import finish


@register_decoder("greedy-neighbours")
def greedy_neighbours(gen, objective, ctx, k, allowed, fixed, options, generator):
    best = gen.greedy(ctx, fixed)                                          # (B, S)
    B, S, V = allowed.shape
    rows = best[:, None, None, :].repeat(1, S, V, 1)                        # (B, S, V, S)
    for s in range(S):
        rows[:, s, :, s] = torch.arange(V)
    valid = allowed.reshape(B, S * V)                                      # a change to an allowed category
    return finish(objective, ctx, rows.reshape(B, S * V, S), valid, k, allowed, generator=generator)
'''

MY_TASK = '''
"""A task of my own: each context has a target row; a row scores its matches plus a little noise."""
import torch

from choicegrad.bench.tasks import Landscape, register_task
from choicegrad.bench.tasks.synthetic import context_labels, grid_space


def matches(slots: int = 3, vocab: int = 3, contexts: int = 2, seed: int = 0) -> Landscape:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(vocab, (contexts, slots), generator=g)
    noise = 0.1 * torch.rand(contexts, vocab ** slots, generator=g)
    radix = vocab ** torch.arange(slots - 1, -1, -1)

    def score(ctx, rows):
        return (rows == target[ctx]).float().sum(-1) + noise[ctx, (rows * radix).sum(-1)]

    return Landscape.from_oracle("matches", grid_space(slots, vocab), context_labels(contexts), score)


register_task("matches", matches)
'''

MY_PEER = '''
"""A peer of my own: hill climbing by single-slot changes from a random row, restarting at random
when a change does not help, `budget` scorer calls per context."""
from choicegrad.bench.peers import register_peer
from choicegrad.decoding.local_search import Archive
from choicegrad.decoding.rows import change_one_slot, uniform_rows


@register_peer("hill-climb", options=("chains",))
def hill_climb(objective, ctx, allowed, k, budget, generator, distinct=False, chains=None):
    B, S, V = allowed.shape
    chains = min(budget, chains or 4)
    arch = Archive(B, k, S, V, allowed.device)
    rows = uniform_rows(allowed, chains, generator)
    score = arch.score(objective, rows, ctx, 1 << 16)
    left = budget - chains
    while left > 0:
        n = min(chains, left)
        moved = change_one_slot(rows[:, :n], allowed, generator)
        new = arch.score(objective, moved, ctx, 1 << 16)
        better = (new > score[:, :n]).unsqueeze(-1)
        rows[:, :n] = moved.where(better, rows[:, :n])
        score[:, :n] = new.where(better[..., 0], score[:, :n])
        left -= n
    return arch.result()
'''

# What a user's script does with the five files: the public API only.
EXERCISE = '''
import json
import sys

import torch

sys.path.insert(0, sys.argv[1])                       # tests/, for the task contract check

import my_decoder, my_estimator, my_generator, my_peer, my_task   # noqa: E401,F401  (they register)
from choicegrad import estimators as E
from choicegrad.bench import peers
from choicegrad.bench.harness import parse_method
from choicegrad.bench.peers import register_peer, search
from choicegrad.bench.tasks import TASKS, get_task, register_task
from choicegrad.data.table import load_table
from choicegrad.decoding import DECODERS, decode, register_decoder
from choicegrad.errors import InputError
from choicegrad.generators import GeneratorConfig, TableContext
from choicegrad.generators.objective import CallableObjective
from choicegrad.run import Run, TableSpec
from choicegrad.scorer.fit import ScorerFit
from choicegrad.training.contexts import TableContexts
from choicegrad.training.loop import GeneratorFit, fit_generator
from test_tasks import check_task_contract

out = {}


def refused(register):
    try:
        register()
    except ValueError as err:
        return "exists already" in str(err)
    return False


# --- the estimator: listed, the exact gradient on a tiny space, trainable by name ---
out["estimator_listed"] = "enumerate" in E.available() and "enumerate" in E.families()["score-function"]
torch.manual_seed(0)
logits = torch.randn(2, 3, 3, requires_grad=True)
w = torch.randn(3, 3)


def f(x):
    return (x * w).sum((-1, -2)) + 2 * x[:, 0, 0] * x[:, 1, 2]


mask = torch.ones(3, 3, dtype=torch.bool)
mask[2, 1] = False
fixed = torch.tensor([[-1, -1, -1], [-1, 2, -1]])
E.get("enumerate")(logits, f, mask=mask, fixed=fixed).loss.backward()
_, grad = E.exact_expectation(logits, f, mask=mask, fixed=fixed)
out["estimator_grad_error"] = float((logits.grad + grad / 2).abs().max())     # loss -E[f], batch mean of 2
out["estimator_refused_twice"] = refused(lambda: E.register("enumerate")(type("Again", (E.Estimator,), {})))

# --- the task: registered, the contract every registered task passes ---
task = get_task("matches", slots=3, vocab=3, contexts=2, seed=1)
check_task_contract(task, "matches")
out["task_listed"] = "matches" in TASKS
out["task_refused_twice"] = refused(lambda: register_task("matches", my_task.matches))

# --- the generator: trained by my estimator and two of the library's, decoded by every decoder ---
data = load_table(task.training_table("random", n=40, seed=0), task.space.names, "y", "ctx")
contexts = TableContexts(data)
ctx = contexts.contexts
ids = ctx.cat[:, 0]
objective = CallableObjective(lambda x, c: task.oracle(c.cat[:, 0], x.argmax(-1) if x.is_floating_point() else x),
                              differentiable=False)
best = task.optimum(ids)[1]
out["generator"] = {}
for method in ("enumerate", "reinforce", "raml"):
    torch.manual_seed(0)
    gen = my_generator.ChainGenerator(data.space.sizes, data.context.cardinalities, len(data.context.numeric),
                                      GeneratorConfig(hidden=[16], context_dim=4))
    fit = GeneratorFit(method=method, steps=40, batch_size=4, samples=8, lr=1e-1, warm_start_steps=0, val_every=20,
                       entropy=0.0, patience=None, keep="last", seed=0, distill=0.0)
    gen = fit_generator(gen, objective, contexts, fit, progress=False).generator
    top = decode("argmax", gen, objective, ctx, 1)
    out["generator"][method] = float((top.scores[:, 0] / best).min())
out["decoded"] = {}
for name in DECODERS:
    c = decode(name, gen, objective, ctx, 4, budget=20)
    out["decoded"][name] = [list(c.rows.shape), bool(c.valid.all()),
                            all(len({tuple(r) for r in c.rows[b].tolist()}) == 4 for b in range(len(ctx)))]

# --- the decoder: reached by decode and by Run.generate (a run trained by my estimator, by name) ---
mine = decode("greedy-neighbours", gen, objective, ctx, 4)
out["decoder_decode"] = [list(mine.rows.shape), bool((mine.scores[:, :-1] >= mine.scores[:, 1:]).all())]
out["decoder_listed"] = "greedy-neighbours" in DECODERS
out["decoder_in_pipelines"] = parse_method("autoregressive/enumerate/greedy-neighbours").decoder == "greedy-neighbours"
out["decoder_refused_twice"] = refused(lambda: register_decoder("polish")(my_decoder.greedy_neighbours))
try:
    decode("greedy-neighbour", gen, objective, ctx, 4)
except InputError as err:
    out["decoder_unknown_hint"] = "greedy-neighbours" in str(err)
run = Run.fit(task.training_table("random", n=50, seed=2), "run", TableSpec(features="s?", score="y", context="ctx"),
              scorer_fit=ScorerFit(epochs=2, seed=0),
              generator_fit=GeneratorFit(method="enumerate", steps=10, warm_start_steps=0, val_every=10, batch_size=4,
                                         samples=4, seed=0),
              force_generator=True, progress=False, echo=lambda line: None)
frame = run.generate(k=3, decoder="greedy-neighbours")
out["run_generate"] = [frame.attrs["decoder"], len(frame), sorted(int(r) for r in frame["rank"].unique())]

# --- the peer: reached by search, within its budget, its options checked ---
allowed = task.allowed(ids)
peer_ctx = TableContext(ids[:, None], torch.zeros(len(ids), 0))
c = search("hill-climb", objective, peer_ctx, allowed, 3, budget=25, generator=torch.Generator().manual_seed(0))
out["peer"] = [list(c.rows.shape), c.scorer_calls, bool(c.valid.all())]
c = search("hill-climb", objective, peer_ctx, allowed, 3, budget=7, generator=torch.Generator().manual_seed(0), chains=2)
out["peer_small_budget_calls"] = c.scorer_calls
out["peer_listed"] = "hill-climb" in peers.PEERS and parse_method("hill-climb").peer == "hill-climb"
try:
    search("hill-climb", objective, peer_ctx, allowed, 3, budget=7, generator=torch.Generator(), steps=2)
except InputError as err:
    out["peer_unknown_option"] = "chains" in str(err)
out["peer_refused_twice"] = refused(lambda: register_peer("anneal")(my_peer.hill_climb))
print(json.dumps(out))
'''


def test_every_recipe_is_one_file_of_the_users_own(tmp_path):
    for name, text in {"my_estimator": MY_ESTIMATOR, "my_generator": MY_GENERATOR, "my_decoder": MY_DECODER,
                       "my_task": MY_TASK, "my_peer": MY_PEER, "exercise": EXERCISE}.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(tmp_path / "exercise.py"), str(TESTS)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["estimator_listed"] and out["estimator_refused_twice"]
    assert out["estimator_grad_error"] < 1e-5                  # exact: it sums over every row
    assert out["task_listed"] and out["task_refused_twice"]    # and check_task_contract passed
    # every estimator brought the chain generator to each context's target row (the score is the
    # matches plus noise below 0.1: above 0.96 of the optimum means every slot matches)
    assert out["generator"].keys() == {"enumerate", "reinforce", "raml"}
    assert all(v > 0.96 for v in out["generator"].values()), out["generator"]
    assert "greedy-neighbours" in out["decoded"] and len(out["decoded"]) >= 8
    assert all(v == [[2, 4, 3], True, True] for v in out["decoded"].values()), out["decoded"]
    assert out["decoder_decode"] == [[2, 4, 3], True]
    assert out["decoder_listed"] and out["decoder_in_pipelines"] and out["decoder_refused_twice"]
    assert out["decoder_unknown_hint"]
    assert out["run_generate"] == ["greedy-neighbours", 6, [1, 2, 3]]   # a run trained by "enumerate"
    assert out["peer"] == [[2, 3, 3], 2 * 25, True]              # 2 contexts, 25 calls each
    assert out["peer_small_budget_calls"] == 2 * 7
    assert out["peer_listed"] and out["peer_unknown_option"] and out["peer_refused_twice"]
