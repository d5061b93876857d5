"""Which distance between rows tracks how differently they score? (issue 6's measurement)

For the synthetic NK (k=3) task and tfbind8, with the benchmark's scorer for that task (fitted as in
`choicegrad bench`: NK on random rows, tfbind8 on the rows below each TF's median) and an Aligner
fitted on the same training rows, draw pairs of rows in the same context:
- random pairs: two uniformly random rows;
- single-swap pairs: a random row and the same row with one slot changed;
and report the Spearman correlation between each distance and the true |score difference|:
Hamming distance, summed per-feature cross-entropy (of b under a 0.1-smoothed one-hot of a), the raw
scorer-latent cosine distance, the aligner cosine distance, and, for reference, the scorer's own
predicted |score difference|.

Usage: python benchmarks/aligner_distance.py [--pairs 20000] [--out docs/aligner.md]
       [--cache runs/bench/scorers] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from choicegrad.scorer.aligner import AlignerFit, fit_aligner, single_edits
from choicegrad.bench.harness import build_problem
from choicegrad.metrics import spearman
from choicegrad.bench.report import machine_line

DISTANCES = ("hamming", "cross-entropy", "latent cosine", "aligner cosine", "scorer |diff| (reference)")


def distances(problem, aligner, a, b) -> dict[str, np.ndarray]:
    """a, b (B, M, S) rows in the scorer's indices, same context per b -> each distance (B * M,)."""
    scorer = problem.objective.scorer
    B, M, S = a.shape
    ctx = problem.ctx.repeat_interleave(M)
    fa, fb = a.reshape(B * M, S), b.reshape(B * M, S)
    sizes = torch.tensor(scorer.space.sizes, dtype=torch.float64)
    eps = 0.1
    same = fa == fb
    # float64 and rounded: summation order must not turn equal distances into spurious ranks
    ce = torch.where(same, -torch.log(1 - eps + eps / sizes), -torch.log(eps / sizes)).sum(1).round(decimals=9)
    with torch.no_grad():
        la, lb = scorer.latent(fa, ctx.cat, ctx.num), scorer.latent(fb, ctx.cat, ctx.num)
        za, zb = aligner.embed(fa, ctx.cat, ctx.num), aligner.embed(fb, ctx.cat, ctx.num)
        ds = (scorer(fa, ctx.cat, ctx.num) - scorer(fb, ctx.cat, ctx.num)).abs()
    return {"hamming": (~same).sum(1).numpy(), "cross-entropy": ce.numpy(),
            "latent cosine": (1 - torch.cosine_similarity(la, lb)).numpy(),
            "aligner cosine": (1 - (za * zb).sum(1)).numpy(), "scorer |diff| (reference)": ds.numpy()}


def measure(task: str, pairs: int, cache: Path, data_dir) -> tuple[dict, dict]:
    start = time.perf_counter()
    problem = build_problem(task, data_dir, cache)
    fitted = fit_aligner(problem.objective.scorer, problem.data, AlignerFit(seed=0), progress=False)
    B = len(problem.ctx)
    M = max(1, pairs // B)
    rng = torch.Generator().manual_seed(0)
    sizes = torch.tensor(problem.objective.scorer.space.sizes)
    a = (torch.rand(B, M, len(sizes), generator=rng) * sizes).long()
    out = {}
    for kind in ("random pairs", "single-swap pairs"):
        b = (torch.rand(B, M, len(sizes), generator=rng) * sizes).long() if kind == "random pairs" else \
            single_edits(a.reshape(B * M, -1), sizes, rng).reshape(a.shape)
        truth = (problem.truth(a) - problem.truth(b)).abs().flatten().numpy()
        d = distances(problem, fitted.aligner, a, b)
        out[kind] = {name: spearman(d[name], truth) for name in DISTANCES}
    info = {"contexts": B, "pairs": B * M, "aligner_seconds": round(fitted.seconds, 1),
            "aligner_final_loss": round(float(np.mean([h["loss"] for h in fitted.history[-50:]])), 4),
            "scorer_test_spearman": problem.setup.get("scorer_test", {}).get("spearman"),
            "seconds": round(time.perf_counter() - start, 1)}
    return out, info


def fmt(v: float) -> str:
    return "undefined (constant)" if not np.isfinite(v) else f"{v:+.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--tasks", default="nk3,tfbind8")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench/scorers"))
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown report here (e.g. docs/aligner.md)")
    args = ap.parse_args()
    torch.manual_seed(0)
    lines = ["| task | pairs | " + " | ".join(DISTANCES) + " |", "|:---|:---|" + "---:|" * len(DISTANCES)]
    verdicts, infos = [], {}
    for task in args.tasks.split(","):
        res, info = measure(task, args.pairs, args.cache, args.data_dir)
        infos[task] = info
        for kind, row in res.items():
            lines.append(f"| {task} | {kind} | " + " | ".join(fmt(row[d]) for d in DISTANCES) + " |")
        swap = res["single-swap pairs"]
        base = [swap[d] for d in ("hamming", "cross-entropy") if np.isfinite(swap[d])]
        best_base = max(base) if base else float("nan")
        beats = np.isfinite(swap["aligner cosine"]) and (not base or swap["aligner cosine"] > best_base)
        verdicts.append(f"- **{task}**: on single-swap pairs the aligner's Spearman is {fmt(swap['aligner cosine'])}; "
                        f"Hamming and cross-entropy are {'constant there (every pair differs in one slot), so they cannot rank these pairs at all' if not base else f'at most {best_base:+.3f}'}"
                        f" -> the aligner {'beats' if beats else 'does NOT beat'} them. Raw latent cosine: "
                        f"{fmt(swap['latent cosine'])}; the scorer's own |diff|: {fmt(swap['scorer |diff| (reference)'])}.")
        print(lines[-2], lines[-1], sep="\n", flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        setup = "\n".join(f"- {t}: {i['contexts']} contexts, {i['pairs']} pairs per kind; aligner fitted in "
                          f"{i['aligner_seconds']} s (final loss {i['aligner_final_loss']}); scorer test Spearman "
                          f"{i['scorer_test_spearman'] if i['scorer_test_spearman'] is None else round(i['scorer_test_spearman'], 3)}; "
                          f"{i['seconds']} s in all" for t, i in infos.items())
        text = f"""# The aligner: which distance says two rows behave alike?

Generated by `python benchmarks/aligner_distance.py --out docs/aligner.md` on {machine_line()}.

One swapped category can turn a good row into a bad one, so "how many categories match" is the wrong
distance between rows. `choicegrad.scorer.aligner.Aligner` is a projection head on the scorer's latent,
trained contrastively (soft targets exp(-|y_i - y_j| / bandwidth), in-batch negatives of the same
context, half of each batch single-slot edits scored by the scorer) so that cosine similarity tracks
how alike two rows score. The table gives, for pairs of rows in the same context, the Spearman
correlation between each distance and the true |score difference| (higher is better; a distance
that ranks pairs perfectly by how differently they score reaches +1).

{table}

{chr(10).join(verdicts)}

Setup: the scorer of `choicegrad bench` for each task (NK3: fitted on 30,000 random rows; tfbind8:
on the rows below each TF's median), the aligner with its defaults (`AlignerFit()`), rows drawn
uniformly. Cross-entropy is the users' per-feature loss: -sum_s log p_s(b_s) with p the 0.1-smoothed
one-hot of a; on hard rows it is a function of the Hamming distance (per slot vocabulary), so on
single-swap pairs of equal-sized vocabularies both are constant.
{setup}

How the generator uses it: `choicegrad fit ... --method aligner` fits an aligner after the scorer,
saves it with the run (aligner.safetensors + aligner.json) and trains the generator to pull its
straight-through Gumbel rows towards each context's best data rows and away from its worst in aligner
space (InfoNCE, temperature 0.1), optionally plus `score_weight` times the scorer. Its results beside
every other method are in [benchmarks.md](benchmarks.md) (`autoregressive/aligner/polish`).
"""
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
