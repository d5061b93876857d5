"""Greedy generation throughput: contexts per second for the factorized and autoregressive generators.

Greedy generation is the generator alone (one row per context, the most likely category slot by
slot, no scorer calls), on the tfbind8 schema: 8 slots x 4 nucleotides, one categorical context
column with 25 TFs, default generator sizes, untrained weights (the cost does not depend on them).
Contexts are generated in batches; the figure is the median over repeats of contexts / second.

Usage: python benchmarks/greedy_speed.py [--contexts 200000] [--batch 65536] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from choicegrad.data.context import ContextColumn, ContextEncoder
from choicegrad.decoding.decoders import beam_search
from choicegrad.generators import GeneratorConfig, TableContext, build
from choicegrad.data.space import ChoiceSpace, Slot


def throughput(kind: str, contexts: int, batch: int, repeats: int) -> float:
    space = ChoiceSpace(slots=[Slot(name=f"s{i}", categories=list("ACGT")) for i in range(8)])
    enc = ContextEncoder(columns=[ContextColumn(name="tf", kind="categorical", categories=[f"tf{i}" for i in range(25)])])
    torch.manual_seed(0)
    gen = build(GeneratorConfig(kind=kind), space=space, context=enc).eval()
    ids = torch.randint(25, (contexts, 1))
    ctx = TableContext(ids, torch.zeros(contexts, 0))
    beam_search(gen, ctx.index(torch.arange(min(batch, contexts))), 1)          # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, contexts, batch):
            rows, _ = beam_search(gen, ctx.index(torch.arange(i, min(i + batch, contexts))), 1)
        rates.append(contexts / (time.perf_counter() - start))
    assert rows.shape[1:] == (1, 8) and bool((rows >= 0).all())
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=65_536)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {kind: round(throughput(kind, args.contexts, args.batch, args.repeats))
           for kind in ("factorized", "autoregressive")}
    print(json.dumps({"contexts_per_second": out, "threads": args.threads, "batch": args.batch}, indent=2))


if __name__ == "__main__":
    main()
