"""Which gradient estimator and decoder to use with your own differentiable torch score model.

The problem is the one of tests/test_objectives.py (its construction is copied here, not imported): a
user's own torch net scores rows of 4 features of 6, 7, 8 and 9 categories (3,024 rows per context) for
5 contexts (users), with a per-user term and strong pairwise interactions (bilinear forms of the
feature embeddings); the net indexes its embeddings in the user's own label order, the space is
declared to choicegrad in another order, and forward maps one to the other. It is given to choicegrad
as cg.ModuleObjective(net) and trained with cg.Run.fit_objective(..., force_generator=True) (the space
is small enough to enumerate; the generator is forced so that training is what is measured).

For each method (GeneratorFit(method=...)): reinforce, st-gumbel, reinmax, gumbel-rao, soft,
trajectory-balance, with
  default  GeneratorFit(method=m, seed=s, steps=--steps): every other setting the library's default;
  tuned    (reinforce only) the settings the test uses (DONE_FIT): 600 steps, lr 5e-3, 10 contexts and
           32 rows per step, entropy bonus easing 0.5 -> 0.3, no distillation.
Seed s = 0, 1, 2, ... builds the net with seed 100 + s and fits with seed s (the test's sweep; its own
case is s = 2). The truth is every one of the 3,024 rows scored by the net directly, per user, from
the labels through the user's own indices (no choicegrad). Per fit:
  fit s        wall seconds of Run.fit_objective (scale estimate, warm start, training, writing)
  steps        training steps run (early stopping on validation may end a fit before --steps)
  calls        objective calls (rows scored) during training, as the run records them
  polish       run.generate(k=10): the default decoder, polish, with the objective attached
  generator    Run.load(folder).generate(k=10, decoder="topk"): the generator alone (the run folder
               read back without its objective: its 10 most likely rows by beam search, 0 objective
               calls). With the objective attached, topk draws the same 10 rows but orders them by the
               objective (10 calls per context); the overlap below would be the same.
  top-1        share of contexts whose rank-1 row is the net's best row
  top-10       rows of the 10 returned that are among the net's 10 best, mean over the 5 contexts, and
               (min) the worst context's, averaged over seeds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/own_estimator.py --out runs/own_estimator.json
    ... --seeds 1 --steps 300      (a quick look)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

import choicegrad as cg

# --- the problem: a user's own torch net (as tests/test_objectives.py builds it) ---------------------------

#: The user's own label order: the index of their embeddings.
OWN = {"colour": ["red", "green", "blue", "cyan", "pink", "gold"],
       "size": ["xs", "s", "m", "l", "xl", "xxl", "huge"],
       "shape": ["disc", "star", "cube", "cone", "ring", "drop", "leaf", "bolt"],
       "taste": ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"]}
#: The space as declared to choicegrad: the same labels in another order (reversed, or rotated by two).
DECLARED = {f: labels[::-1] if i % 2 == 0 else labels[2:] + labels[:2] for i, (f, labels) in enumerate(OWN.items())}
#: Contexts in the order given; the net's one-hot is over the sorted categories.
USERS = ["eve", "bob", "dan", "amy", "cat"]
PAIRS = [("colour", "size"), ("size", "shape"), ("shape", "taste"), ("taste", "colour"), ("colour", "shape")]
DIM = 6
#: The settings tests/test_objectives.py trains reinforce with (its DONE_FIT, less the seed).
TUNED = dict(steps=600, lr=5e-3, batch_size=10, samples=32, entropy_end=0.3, distill=0)
METHODS = ["reinforce", "st-gumbel", "reinmax", "gumbel-rao", "soft", "trajectory-balance"]
K = 10


class UserNet(nn.Module):
    """One embedding per feature in the user's own label order, a per-user term and strong pairwise
    interactions (bilinear forms of the embeddings). forward maps the declared label order to its own."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.ModuleDict({f: nn.Embedding(len(v), DIM) for f, v in OWN.items()})
        for e in self.emb.values():
            e.weight.data = torch.randn(e.weight.shape, generator=g)
        self.user = nn.Embedding(len(USERS), len(OWN) * DIM)
        self.user.weight.data = torch.randn(self.user.weight.shape, generator=g) * 0.5
        self.mix = nn.Parameter(torch.randn(len(PAIRS), DIM, DIM, generator=g) * 1.5 / DIM)
        for f in OWN:      # declared index -> own index
            perm = torch.zeros(len(OWN[f]), len(OWN[f]))
            perm[range(len(OWN[f])), [OWN[f].index(label) for label in DECLARED[f]]] = 1
            self.register_buffer(f"perm_{f}", perm)

    def head(self, own: dict, users: torch.Tensor) -> torch.Tensor:
        e = {f: own[f] @ self.emb[f].weight for f in OWN}
        u = (users @ self.user.weight).reshape(-1, len(OWN), DIM)
        s = sum((e[f] * u[:, i]).sum(-1) for i, f in enumerate(OWN))
        for p, (a, b) in enumerate(PAIRS):
            s = s + torch.einsum("nd,de,ne->n", e[a], self.mix[p], e[b])
        return s

    def forward(self, features, context):
        return self.head({f: features[f] @ getattr(self, f"perm_{f}") for f in OWN}, context["user"])

    @torch.no_grad()
    def score_labels(self, frame: pd.DataFrame) -> np.ndarray:
        """The reference, straight from labels through the user's own indices (no choicegrad)."""
        own = {f: nn.functional.one_hot(torch.tensor([OWN[f].index(x) for x in frame[f]]), len(OWN[f])).float()
               for f in OWN}
        users = nn.functional.one_hot(torch.tensor([sorted(USERS).index(u) for u in frame["user"]]), len(USERS))
        return self.head(own, users.float()).numpy()


def truth(net: UserNet) -> dict[str, list[tuple]]:
    """Per user, the net's 10 best rows over all 3,024, best first."""
    rows = pd.DataFrame(list(itertools.product(*OWN.values())), columns=list(OWN))
    out = {}
    for u in USERS:
        scored = rows.assign(user=u, score=net.score_labels(rows.assign(user=u)))
        top = scored.sort_values("score", ascending=False, kind="stable")[list(OWN)].head(K)
        out[u] = [tuple(r) for r in top.to_numpy()]
    return out


def measure(found: pd.DataFrame, ranked: dict[str, list[tuple]]) -> dict:
    """Per user: is rank 1 the net's best row, and how many of the 10 rows are among its 10 best."""
    top1, overlap = {}, {}
    for u in USERS:
        mine = found[found.user == u].sort_values("rank")
        rows = [tuple(r) for r in mine[list(OWN)].to_numpy()]
        top1[u] = bool(rows and rows[0] == ranked[u][0])
        overlap[u] = len(set(rows) & set(ranked[u]))
    return {"top1": top1, "overlap": overlap}


# --- one fit -------------------------------------------------------------------------------------------------

def one_fit(method: str, settings: str, seed: int, steps: int, ranked, net: UserNet, tmp: Path) -> dict:
    if settings == "tuned":
        fit = cg.GeneratorFit(method=method, seed=seed, **TUNED)
    else:
        fit = cg.GeneratorFit(method=method, seed=seed, steps=steps)
    folder = tmp / f"{method}-{settings}-{seed}"
    said = []
    torch.manual_seed(0)
    t0 = time.perf_counter()
    run = cg.Run.fit_objective(cg.ModuleObjective(net), folder, space=DECLARED, contexts=pd.DataFrame({"user": USERS}),
                               generator_fit=fit, force_generator=True, echo=said.append, progress=False)
    seconds = time.perf_counter() - t0
    config = json.loads((folder / "config.json").read_text())
    assert config["generator"] is not None, "the space was enumerated, not trained"
    training = config["generator_training"]
    log = pd.read_csv(folder / "metrics.csv")
    steps_run = int(log.loc[log.phase.isin(["train", "val"]), "step"].max())
    polished = run.generate(k=K)                                      # decoder None: polish, objective attached
    alone = cg.Run.load(folder)                                       # the folder alone: no objective
    assert alone.objective is None
    proposed = alone.generate(k=K, decoder="topk")
    assert "log_prob" in proposed.columns and proposed.attrs["scorer_calls"] == 0
    return {"method": method, "settings": settings, "seed": seed, "net_seed": 100 + seed,
            "generator_fit": fit.model_dump(), "fit_seconds": seconds, "steps_run": steps_run,
            "stopped": training["stopped"], "training_calls": int(training["scorer_calls"]),
            "best_validation": training["best_validation"],
            "polish": {**measure(polished, ranked), "calls": int(polished.attrs["scorer_calls"])},
            "generator": {**measure(proposed, ranked), "calls": 0}}


# --- the table -----------------------------------------------------------------------------------------------

def summarise(results: list[dict]) -> list[dict]:
    rows = []
    for method, settings in dict.fromkeys((r["method"], r["settings"]) for r in results):
        mine = [r for r in results if r["method"] == method and r["settings"] == settings]
        row = {"method": method, "settings": settings, "seeds": len(mine),
               "fit_seconds": statistics.mean(r["fit_seconds"] for r in mine),
               "steps_run": statistics.mean(r["steps_run"] for r in mine),
               "training_calls": statistics.mean(r["training_calls"] for r in mine)}
        for dec in ("polish", "generator"):
            top1 = [v for r in mine for v in r[dec]["top1"].values()]
            row[f"{dec}_top1"] = sum(top1) / len(top1)
            row[f"{dec}_overlap_mean"] = statistics.mean(v for r in mine for v in r[dec]["overlap"].values())
            row[f"{dec}_overlap_min"] = statistics.mean(min(r[dec]["overlap"].values()) for r in mine)
            row[f"{dec}_overlap_min_by_seed"] = [min(r[dec]["overlap"].values()) for r in mine]
        row["polish_calls"] = statistics.mean(r["polish"]["calls"] for r in mine)
        rows.append(row)
    return rows


def to_markdown(summary: list[dict]) -> str:
    head = ["method", "settings", "fit s", "steps run", "training calls", "polish top-1", "polish top-10 (min)",
            "generator top-1", "generator top-10 (min)", "min by seed, polish / generator"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in summary:
        by_seed = ", ".join(f"{p}/{g}" for p, g in zip(r["polish_overlap_min_by_seed"],
                                                        r["generator_overlap_min_by_seed"]))
        lines.append("| " + " | ".join([
            r["method"], r["settings"], f"{r['fit_seconds']:.1f}", f"{r['steps_run']:.0f}",
            f"{r['training_calls'] / 1e3:,.0f}k", f"{r['polish_top1']:.0%}",
            f"{r['polish_overlap_mean']:.1f} ({r['polish_overlap_min']:.1f})", f"{r['generator_top1']:.0%}",
            f"{r['generator_overlap_mean']:.1f} ({r['generator_overlap_min']:.1f})", by_seed]) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (net seed 100 + s, fit seed s)")
    ap.add_argument("--steps", type=int, default=cg.GeneratorFit().steps,
                    help="training steps of the default-settings fits (default: GeneratorFit's, %(default)s); "
                         "the tuned reinforce keeps the test's 600")
    ap.add_argument("--methods", nargs="+", default=METHODS, help="methods to run (default: all six)")
    ap.add_argument("--out", help="write every fit's figures and the summary to this JSON file")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    configs = [(m, "default") for m in args.methods]
    if "reinforce" in args.methods:
        configs.insert(args.methods.index("reinforce") + 1, ("reinforce", "tuned"))
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="own_estimator-") as tmp:
        for seed in range(args.seeds):
            net = UserNet(100 + seed)
            ranked = truth(net)
            for method, settings in configs:
                r = one_fit(method, settings, seed, args.steps, ranked, net, Path(tmp))
                results.append(r)
                print(f"seed {seed} {method:>18} {settings:>7}: {r['fit_seconds']:5.1f} s, {r['steps_run']} steps, "
                      f"{r['training_calls']:,} calls, overlap polish {list(r['polish']['overlap'].values())} "
                      f"generator {list(r['generator']['overlap'].values())}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    summary = summarise(results)
    table = to_markdown(summary)
    machine = (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs visible, "
               f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    note = (f"{args.seeds} seeds x 5 contexts; top-1 is the share of the {5 * args.seeds} (seed, context) pairs whose "
            f"rank-1 row is the net's best; top-10 is the mean overlap with the net's 10 best, (min) the worst "
            f"context's per seed, averaged over seeds; default fits: --steps {args.steps} (early stopping may end them "
            f"sooner); wall {wall:.0f} s; {machine}.")
    print(table)
    print()
    print(note)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "wall_seconds": wall, "machine": machine,
                                              "summary": summary, "fits": results, "table": table, "note": note},
                                             indent=2) + "\n")


if __name__ == "__main__":
    main()
