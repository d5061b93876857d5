"""Benchmark the gradient estimators against exact gradients computed by enumeration.

For each method: R independent draws of the gradient of -E[f] for one fixed context (one call with the
logits repeated R times), compared with the exact gradient over all V**S rows:
  cos(mean)     cosine between the mean estimate and the exact gradient
  rel.err       ||mean - exact|| / ||exact||  (bias plus Monte-Carlo noise)
  noise floor   sqrt(trace Cov / R) / ||exact||: the rel.err expected from noise alone (unbiased method)
  rel.var       trace Cov / ||exact||^2, the per-draw variance
  cos(1 draw)   mean cosine of single draws with the exact gradient
  ms/call       median wall time of one call + backward with B=256 contexts (single thread)
Spaces: S=3, V=4 (64 rows) and S=6, V=6 (46,656 rows); fixed random MLP scorer; seeded.

    PYTHONPATH=src python benchmarks/gradients.py --out bench.md
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time

import torch

import choicegrad.estimators as G
from choicegrad.bench.toys import RandomMLPScorer

METHODS = [
    ("soft", dict(tau=1.0)),
    ("st", dict(tau=1.0)),
    ("gumbel", dict(tau=1.0)),
    ("st-gumbel", dict(tau=1.0)),
    ("gumbel-rao", dict(tau=1.0, k=10)),
    ("reinmax", dict(tau=1.0)),
    ("reinforce", dict(k=1, baseline="none")),
    ("reinforce", dict(k=4, baseline="mean")),
    ("reinforce", dict(k=4, baseline="rloo")),
    ("reinforce", dict(k=1, baseline="greedy")),
    ("raml", dict(m=8, temperature=0.1)),
]
SPACES = [(3, 4), (6, 6)]


def describe(name, hp):
    return name + ("(" + ", ".join(f"{k}={v}" for k, v in hp.items()) + ")" if hp else "")


def measure(est, logits, f, draws, seed):
    """Per-draw gradients (draws, S*V) of -E[f] for the single context `logits` and scorer rows per draw."""
    L = logits.repeat(draws, 1, 1).requires_grad_(True)
    out = est(L, f, generator=torch.Generator().manual_seed(seed))
    out.loss.backward()
    return (L.grad * draws).reshape(draws, -1), out.scorer_calls / draws


def time_call(est, logits, f, batch=256, repeats=15, seed=0):
    L = logits.repeat(batch, 1, 1).requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(repeats + 2):
        L.grad = None
        t0 = time.perf_counter()
        est(L, f, generator=gen).loss.backward()
        times.append(time.perf_counter() - t0)
    times = sorted(times[2:])
    return 1000 * times[len(times) // 2]


def run(draws: int, seed: int):
    rows = []
    for S, V in SPACES:
        torch.manual_seed(seed)
        f = RandomMLPScorer(S, V, hidden=32, seed=seed + 1, scale=2.0)
        logits = torch.randn(1, S, V)
        _, exact = G.exact_expectation(logits, f)
        e = -exact.reshape(-1)          # estimators put the gradient of -E[f] into logits.grad
        en = e.norm()
        for i, (name, hp) in enumerate(METHODS):
            est = G.get(name, **hp)
            g, calls = measure(est, logits, f, draws, seed=seed + 100 + i)
            mean = g.mean(0)
            tr_cov = float(g.var(0).sum())
            single = torch.nn.functional.cosine_similarity(g, e[None], dim=1)
            rows.append({
                "space": f"S={S}, V={V} ({V ** S:,} rows)",
                "method": describe(name, hp),
                "rows/draw": calls,
                "cos(mean)": float(torch.nn.functional.cosine_similarity(mean, e, dim=0)),
                "rel.err": float((mean - e).norm() / en),
                "noise floor": math.sqrt(tr_cov / draws) / float(en),
                "rel.var": tr_cov / float(en) ** 2,
                "cos(1 draw)": float(single.mean()),
                "ms/call": time_call(est, logits, f),
            })
    return rows


def to_markdown(rows, draws):
    cols = ["space", "method", "rows/draw", "cos(mean)", "rel.err", "noise floor", "rel.var", "cos(1 draw)",
            "ms/call"]
    fmt = {"rows/draw": "{:g}", "cos(mean)": "{:.4f}", "rel.err": "{:.4f}", "noise floor": "{:.4f}",
           "rel.var": "{:.3g}", "cos(1 draw)": "{:.3f}", "ms/call": "{:.2f}"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) for c in cols) + " |")
    lines.append("")
    lines.append(f"{draws:,} draws per method and space; ms/call = median of 15 calls (forward + backward) "
                 f"with B=256 contexts, torch {torch.__version__}, {torch.get_num_threads()} thread, "
                 f"{platform.processor() or platform.machine()}.")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="also write the markdown table to this file")
    ap.add_argument("--draws", type=int, default=50_000, help="independent gradient draws per method")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    table = to_markdown(run(args.draws, args.seed), args.draws)
    print(table)
    print(f"\ntotal {time.time() - t0:.1f} s", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
