"""Trajectory balance (`trajectory-balance`) against independent implementations, and its temperature.

Part 1, the independent check. One small task: a Potts landscape (choicegrad.bench PottsTask) on 4 slots
x 4 categories (256 rows), one context, scores in standard deviations over the 256 rows (the units a
training loop gives the estimators). The target is pi(x) = exp(score(x) / T) / Z, known exactly by
enumeration. Trained on it, with 16 rows per step and the same number of steps:
- choicegrad TB: the autoregressive generator through choicegrad.training.step.TrainingStep (the
  `trajectory-balance` estimator with the learned log Z; Adam at the library's default learning rate,
  log Z at LOG_Z_LR_FACTOR = 50x, gradient clipping 1.0, as fit_generator does); also with log Z at
  only 10x, and with no learned log Z (the estimator's batch estimate, "VarGrad");
- torchgfn TB: torchgfn's TBGFlowNet (Lahlou et al. 2023) on its append-only BitSequence environment
  (2-bit words = 4 categories per slot) with the Potts log-reward, an MLP forward policy, the tree
  backward policy (constant_pb) and a scalar log Z. torchgfn is optional: it is not a choicegrad
  dependency (it pins numpy < 2); install it outside the project's environment, e.g.
  `pip install --no-deps --target DIR torchgfn tensordict torch_geometric ...`, and pass
  `--torchgfn-path DIR`; without it the row is skipped;
- tabular TB: a self-contained implementation in this file (a logits table per prefix, its own
  sampler and loss; no choicegrad code);
- choicegrad reinforce (rloo, k = 16), without an entropy bonus and with bonus c = T (the
  maximiser of E[score] + T * entropy is pi too, but the bonus the loop gives an autoregressive
  generator is the entropy of the conditionals at the sampled rows, not a gradient of the row entropy).
Each model's distribution is enumerated (its log-probability of all 256 rows): total variation and both
KL divergences to pi, the learned log Z against the exact one, P(the best row).

Part 2, the temperature for training (choicegrad.estimators.trajectory_balance.TB_TEMPERATURE): PottsTask with 6 slots
x 6 categories (46,656 rows) and 3 contexts, choicegrad TB at several T against reinforce, measured by
enumeration per context: the expected score's gap to the optimum, P(optimum), the effective number of
rows exp(H), the greedy row's gap, and from 128 draws: distinct rows, distinct rows within 0.5 std of the
optimum, and the best draw's gap; after a small and a larger training budget.

Usage: PYTHONPATH=src python benchmarks/trajectory_balance.py [--steps 1500] [--seeds 3]
       [--torchgfn-path DIR] [--part2-steps 150 800] [--parts 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from choicegrad.bench.tasks import PottsTask
from choicegrad.estimators import enumerate_rows
from choicegrad.generators import AutoregressiveGenerator, GeneratorConfig, TableContext
from choicegrad.generators.policy import policy_of
from choicegrad.training.contexts import SampledContexts
from choicegrad.estimators.trajectory_balance import LOG_Z_LR_FACTOR
from choicegrad.training.loop import GeneratorFit
from choicegrad.training.step import TrainingStep

K = 16   # rows per step (per context)


# --- the task ------------------------------------------------------------------------------------
class Landscape:
    """A PottsTask with every row enumerated: g[c, r] = score of row r in context c / std (all c, r)."""

    def __init__(self, slots: int, vocab: int, contexts: int, seed: int):
        self.task = PottsTask(slots=slots, vocab=vocab, contexts=contexts, seed=seed)
        self.S, self.V, self.C = slots, vocab, contexts
        self.rows = enumerate_rows(slots, vocab)                                   # (R, S), lexicographic
        R = len(self.rows)
        raw = torch.stack([self.task.oracle(torch.full((R,), c), self.rows) for c in range(contexts)])
        self.std = float(raw.std())
        self.g = raw / self.std                                                    # (C, R)

    def code(self, rows: torch.Tensor) -> torch.Tensor:
        """Row index in `self.rows` of rows (..., S)."""
        return (rows * self.V ** torch.arange(self.S - 1, -1, -1)).sum(-1)

    def target(self, T: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(pi (C, R), log Z (C,)) for exp(g / T)."""
        return torch.softmax(self.g / T, 1), torch.logsumexp(self.g / T, 1)

    def objective(self):
        """choicegrad objective f(x, ctx) in the task's units, with `scale` = std (so the training
        step sees g)."""
        task = self.task

        def f(x, ctx):
            rows = x.argmax(-1) if x.is_floating_point() else x
            return task.oracle(ctx.cat[:, 0], rows)

        f.scale = self.std
        return f


def distances(p: torch.Tensor, pi: torch.Tensor) -> dict:
    """TV and both KL divergences between a model's row probabilities p (R,) and the target pi (R,)."""
    p = p.double().clamp_min(1e-300)
    pi = pi.double()
    return {"tv": float(0.5 * (p - pi).abs().sum()),
            "kl_pi_p": float((pi * (pi.clamp_min(1e-300).log() - p.log())).sum()),
            "kl_p_pi": float((p * (p.log() - pi.clamp_min(1e-300).log())).sum())}


# --- choicegrad ----------------------------------------------------------------------------------
def train_choicegrad(land: Landscape, method: str, steps: int, seed: int, options: dict, entropy: float = 0.0,
                     batch: int = 1, hidden=(64, 64), log_z_factor: float = LOG_Z_LR_FACTOR, batch_log_z: bool = False):
    """The autoregressive generator trained through TrainingStep, as fit_generator's loop does
    (Adam at GeneratorFit's default lr; trajectory balance's log Z at log_z_factor x; clip 1.0).
    batch_log_z: trajectory balance without the learned log Z (the estimator's batch estimate)."""
    torch.manual_seed(seed)
    gen = AutoregressiveGenerator([land.V] * land.S, [land.C], 0, GeneratorConfig(hidden=list(hidden), context_dim=8))
    fit = GeneratorFit(method=method, method_options=options, samples=K, batch_size=batch, seed=seed)

    def draw(n, rng):
        return TableContext(torch.randint(land.C, (n, 1), generator=rng), torch.zeros(n, 0))

    step = TrainingStep(gen, land.objective(), SampledContexts(draw, validation_size=1), fit)
    if batch_log_z:
        step.modules = torch.nn.ModuleDict()      # no learned log Z: the estimator's batch estimate
    learned = step.modules["log_z"] if "log_z" in step.modules else None
    groups = [{"params": list(gen.parameters())}]
    if learned is not None:
        groups.append({"params": list(learned.parameters()), "lr": log_z_factor * fit.lr})
    opt = torch.optim.Adam(groups, lr=fit.lr)
    rng = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        loss, _ = step(1.0, entropy, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), fit.grad_clip)
        opt.step()
    seconds = time.perf_counter() - start
    gen.eval()
    ctx = TableContext(torch.arange(land.C)[:, None], torch.zeros(land.C, 0))
    with torch.no_grad():
        logp = policy_of(gen, ctx).log_prob(land.rows.unsqueeze(0).expand(land.C, -1, -1))    # (C, R)
        log_z = learned(ctx) if learned is not None else None
    return gen, logp.exp(), log_z, seconds


# --- torchgfn (optional) -------------------------------------------------------------------------
def train_torchgfn(land: Landscape, T: float, steps: int, seed: int):
    """torchgfn's TBGFlowNet on BitSequence (append-only words of log2(V) bits) with the Potts log-reward."""
    from gfn.estimators import DiscretePolicyEstimator
    from gfn.gflownet import TBGFlowNet
    from gfn.gym.bitSequence import BitSequence
    from gfn.preprocessors import Preprocessor
    from gfn.utils.modules import MLP

    S, V = land.S, land.V
    bits = int(math.log2(V))
    assert 2 ** bits == V and land.C == 1, "torchgfn check: V a power of 2, one context"
    g_of = land.g[0]

    class PottsSequence(BitSequence):
        def log_reward(self, final_states):
            return g_of[land.code(final_states.tensor)] / T

    class OneHot(Preprocessor):   # slot values -1 (unset) .. V (sink) -> one-hot per slot
        def __init__(self):
            super().__init__(output_dim=S * (V + 2))

        def preprocess(self, states):
            t = states.tensor
            return F.one_hot((t + 1).clamp(0, V + 1), V + 2).float().reshape(*t.shape[:-1], -1)

    torch.manual_seed(seed)
    env = PottsSequence(word_size=bits, seq_size=bits * S, n_modes=1, seed=seed)
    pre = OneHot()
    module = MLP(input_dim=pre.output_dim, output_dim=env.n_actions, hidden_dim=64, n_hidden_layers=2)
    gfn = TBGFlowNet(pf=DiscretePolicyEstimator(module, env.n_actions, preprocessor=pre), pb=None,
                     constant_pb=True, init_logZ=0.0)
    opt = torch.optim.Adam(gfn.pf_pb_parameters(), lr=1e-3)            # torchgfn's README settings
    opt.add_param_group({"params": gfn.logz_parameters(), "lr": 1e-1})
    start = time.perf_counter()
    for _ in range(steps):
        trajectories = gfn.sample_trajectories(env, n=K, save_logprobs=True)
        opt.zero_grad()
        loss = gfn.loss(env, trajectories)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    rows = land.rows
    with torch.no_grad():   # log P_F(row) = sum over prefixes of the policy's log-softmax over the V word actions
        lp = torch.zeros(len(rows))
        for level in range(S):
            state = torch.full((len(rows), S), -1, dtype=torch.long)
            state[:, :level] = rows[:, :level]
            logits = module(pre.preprocess(env.States(state)))[:, :V]   # the exit action is masked before S words
            lp += torch.log_softmax(logits, -1).gather(1, rows[:, level:level + 1])[:, 0]
        drawn = gfn.sample_terminating_states(env, 20_000).tensor
    freq = torch.bincount(land.code(drawn), minlength=len(rows)).float() / len(drawn)
    sanity = float(0.5 * (freq - lp.exp()).abs().sum())   # enumeration vs torchgfn's own sampler
    return lp.exp()[None], torch.tensor([float(gfn.logZ.detach())]), seconds, sanity


# --- a self-contained tabular TB -------------------------------------------------------------------
class TabularTB(nn.Module):
    """Slot-by-slot policy with a free logits table per prefix (V^l prefixes at level l) and a scalar
    log Z; the trajectory-balance loss on its own samples. Independent of choicegrad's estimators."""

    def __init__(self, S: int, V: int):
        super().__init__()
        self.S, self.V = S, V
        self.tables = nn.ParameterList(nn.Parameter(torch.zeros(V ** level, V)) for level in range(S))
        self.log_z = nn.Parameter(torch.zeros(()))

    def sample(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = torch.zeros(n, dtype=torch.long)
        rows, logp = [], torch.zeros(n)
        for table in self.tables:
            logq = torch.log_softmax(table[prefix], -1)
            a = torch.multinomial(logq.detach().exp(), 1, generator=rng)[:, 0]
            logp = logp + logq.gather(1, a[:, None])[:, 0]
            rows.append(a)
            prefix = prefix * self.V + a
        return torch.stack(rows, 1), logp

    def log_prob(self, rows: torch.Tensor) -> torch.Tensor:
        prefix = torch.zeros(len(rows), dtype=torch.long)
        logp = torch.zeros(len(rows))
        for level, table in enumerate(self.tables):
            logp = logp + torch.log_softmax(table[prefix], -1).gather(1, rows[:, level:level + 1])[:, 0]
            prefix = prefix * self.V + rows[:, level]
        return logp


def train_tabular(land: Landscape, T: float, steps: int, seed: int):
    torch.manual_seed(seed)
    model = TabularTB(land.S, land.V)
    opt = torch.optim.Adam([{"params": list(model.tables.parameters()), "lr": 0.05},
                            {"params": [model.log_z], "lr": 0.1}])
    rng = torch.Generator().manual_seed(seed)
    g_of = land.g[0]
    start = time.perf_counter()
    for _ in range(steps):
        rows, logp = model.sample(K, rng)
        loss = ((model.log_z + logp - g_of[land.code(rows)] / T) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        p = model.log_prob(land.rows).exp()
    return p[None], model.log_z.detach()[None], seconds


# --- part 1 ----------------------------------------------------------------------------------------
def fmt(values: list[float], digits: int = 3) -> str:
    if not values or any(v is None for v in values):
        return "-"
    m = statistics.mean(values)
    if len(values) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def part1(args) -> None:
    land = Landscape(4, 4, 1, seed=0)
    have_tgfn = importlib.util.find_spec("gfn") is not None
    if not have_tgfn:
        print("torchgfn is not importable: its row is skipped (see --torchgfn-path)\n")
    print("## Part 1: the same target, exp(score/T)/Z on Potts 4 slots x 4 categories (256 rows), one context\n")
    print(f"{args.steps} steps x {K} rows, seeds 0..{args.seeds - 1} (mean ± sd over seeds). TV = total variation; "
          f"KL(pi||p) penalises rows the model misses, KL(p||pi) mass it puts where pi has little; "
          f"logZ err = learned - exact; P(best) = the model's probability of the best row (pi's in the header).\n")
    for T in args.temperatures:
        pi, log_z = land.target(T)
        best = int(land.g[0].argmax())
        print(f"### T = {T} (pi(best) = {float(pi[0, best]):.3f}, exact log Z = {float(log_z[0]):.3f}, "
              f"exp(H(pi)) = {math.exp(float(-(pi * pi.log()).sum())):.1f} rows)\n")
        print("| implementation | TV | KL(pi‖p) | KL(p‖pi) | log Z err | P(best) | s/run |")
        print("|---|---|---|---|---|---|---|")
        runs = [("choicegrad trajectory-balance", "cg-tb"), ("choicegrad trajectory-balance, log Z lr 10x", "cg-tb10"),
                ("choicegrad trajectory-balance, batch log Z (VarGrad)", "cg-var"), ("torchgfn TBGFlowNet", "tgfn"),
                ("tabular TB (this script)", "tab"), ("choicegrad reinforce (rloo)", "rf"),
                (f"choicegrad reinforce (rloo) + entropy bonus {T}", "rf-ent")]
        for label, key in runs:
            if key == "tgfn" and not have_tgfn:
                continue
            res: dict[str, list] = {k: [] for k in ("tv", "kl_pi_p", "kl_p_pi", "logz", "pbest", "s")}
            sanity = []
            for seed in range(args.seeds):
                lz = None
                if key.startswith("cg-"):
                    _, p, lz, s = train_choicegrad(land, "trajectory-balance", args.steps, seed, {"temperature": T},
                                                   log_z_factor=10.0 if key == "cg-tb10" else LOG_Z_LR_FACTOR,
                                                   batch_log_z=key == "cg-var")
                elif key == "tgfn":
                    p, lz, s, san = train_torchgfn(land, T, args.steps, seed)
                    sanity.append(san)
                elif key == "tab":
                    p, lz, s = train_tabular(land, T, args.steps, seed)
                else:
                    _, p, _, s = train_choicegrad(land, "reinforce", args.steps, seed, {"baseline": "rloo"},
                                                  entropy=T if key == "rf-ent" else 0.0)
                d = distances(p[0], pi[0])
                for k in ("tv", "kl_pi_p", "kl_p_pi"):
                    res[k].append(d[k])
                res["logz"].append(None if lz is None else float(lz[0] - log_z[0]))
                res["pbest"].append(float(p[0, best]))
                res["s"].append(s)
            print(f"| {label} | {fmt(res['tv'])} | {fmt(res['kl_pi_p'])} | {fmt(res['kl_p_pi'])} | "
                  f"{fmt(res['logz'])} | {fmt(res['pbest'])} | {fmt(res['s'], 1)} |")
            if sanity:
                print(f"|  (torchgfn: TV between the enumerated policy and 20,000 of its own draws: "
                      f"{fmt(sanity)}, the sampling noise) | | | | | | |")
            sys.stdout.flush()
        print()


# --- part 2 ----------------------------------------------------------------------------------------
def part2(args) -> None:
    land = Landscape(6, 6, 3, seed=1)
    R = len(land.rows)
    print(f"## Part 2: which temperature for training? Potts 6 slots x 6 categories ({R:,} rows), 3 contexts\n")
    print(f"Steps x 8 contexts x {K} rows, seeds 0..{args.seeds - 1}. Per context, by enumeration: "
          "gap = optimum - E_p[score] (std units); P(opt) = the generator's probability of the optimum; exp(H) = "
          "its effective number of rows; greedy gap = the gap of the generator's greedy row (slot by slot argmax); "
          "from 128 draws per context: distinct rows, distinct rows within 0.5 std of the optimum ('good'), and "
          "the best draw's gap. Means over contexts and seeds.\n")
    configs = [(f"trajectory-balance T={T}", "trajectory-balance", {"temperature": T}, 0.0) for T in args.sweep]
    configs += [("reinforce (rloo), no entropy bonus", "reinforce", {"baseline": "rloo"}, 0.0),
                ("reinforce (rloo), entropy bonus 0.5 (the default)", "reinforce", {"baseline": "rloo"}, 0.5)]
    opt_value = land.g.max(1).values                                                   # (C,)
    good = land.g >= (opt_value[:, None] - 0.5)                                        # (C, R)
    ctx = TableContext(torch.arange(land.C)[:, None], torch.zeros(land.C, 0))
    for steps in args.part2_steps:
        print(f"### {steps} steps ({steps * 8 * K:,} scorer rows)\n")
        print("| method | gap E[score] | P(opt) | exp(H) | greedy gap | distinct /128 | distinct good /128 "
              "| best-of-128 gap | s/run |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, method, options, entropy in configs:
            cols: dict[str, list] = {k: [] for k in ("gap", "popt", "effn", "greedy", "distinct", "good", "best", "s")}
            for seed in range(args.seeds):
                gen, p, _, s = train_choicegrad(land, method, steps, seed, options, entropy=entropy, batch=8,
                                                hidden=(128, 128))
                with torch.no_grad():
                    draws = gen.sample(ctx, 128, generator=torch.Generator().manual_seed(100 + seed))  # (C, 128, S)
                    greedy = land.code(gen.greedy(ctx))                                              # (C,)
                codes = land.code(draws)
                for c in range(land.C):
                    pc = p[c].double()
                    cols["gap"].append(float(opt_value[c] - (pc * land.g[c].double()).sum()))
                    cols["popt"].append(float(pc[land.g[c].argmax()]))
                    cols["effn"].append(math.exp(float(-(pc * pc.clamp_min(1e-300).log()).sum())))
                    cols["greedy"].append(float(opt_value[c] - land.g[c, greedy[c]]))
                    uniq = torch.unique(codes[c])
                    cols["distinct"].append(len(uniq))
                    cols["good"].append(int(good[c, uniq].sum()))
                    cols["best"].append(float(opt_value[c] - land.g[c, codes[c]].max()))
                cols["s"].append(s)
            print(f"| {label} | {fmt(cols['gap'], 2)} | {fmt(cols['popt'], 3)} | {fmt(cols['effn'], 1)} | "
                  f"{fmt(cols['greedy'], 2)} | {fmt(cols['distinct'], 1)} | {fmt(cols['good'], 1)} | "
                  f"{fmt(cols['best'], 3)} | {fmt(cols['s'], 1)} |")
            sys.stdout.flush()
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500, help="part 1 training steps per run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.25, 1.0], help="part 1 temperatures")
    ap.add_argument("--part2-steps", type=int, nargs="+", default=[150, 800], help="part 2 training budgets")
    ap.add_argument("--sweep", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0], help="part 2 temperatures")
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--torchgfn-path", default=None, help="a folder holding torchgfn and its dependencies")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.torchgfn_path:
        sys.path.insert(0, args.torchgfn_path)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s); "
          f"`{' '.join(['benchmarks/trajectory_balance.py'] + sys.argv[1:])}`\n")
    start = time.perf_counter()
    if 1 in args.parts:
        part1(args)
    if 2 in args.parts:
        part2(args)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
