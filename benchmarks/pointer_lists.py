"""The pointer generator's cost against the length of its item lists (up to 10^5 items per list).

    python benchmarks/pointer_lists.py [--lengths 1000,10000,100000] [--contexts 8] [--slots 4] [--k 128]

For each list length N and each form of attention over the items -- none, one full transformer layer
(only where its N x N scores fit in memory), one light SetAttention layer of width 32 (linear in N,
as the item runs' generator) -- builds a pointer generator (hidden 256, 256; 4 heads) over random
8-dimensional item vectors, then times, for --contexts lists of N items: 128 draws per list
(`sample`), and one training step of reinforce (4 draws per list, the reward a fixed linear
function of the selected items, backward and Adam). Prints one JSON line per setting with seconds
per list and the peak resident memory of the process so far.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from choicegrad import estimators
from choicegrad.generators import GeneratorConfig, ItemObjective, PointerGenerator, policy_of
from choicegrad.generators.context import ItemContext


def measure(n: int, attention: str, contexts: int, slots: int, k: int) -> dict:
    torch.manual_seed(0)
    config = GeneratorConfig(kind="pointer", attention_layers=int(attention != "none"),
                             attention_width=32 if attention == "set" else None)
    gen = PointerGenerator(slots, 8, config)
    ctx = ItemContext(torch.randn(contexts, n, 8), torch.ones(contexts, n, dtype=torch.bool))
    weights = torch.randn(8)
    objective = ItemObjective(lambda selected, c: (selected @ weights).sum(-1))
    start = time.perf_counter()
    with torch.no_grad():
        rows = gen.sample(ctx, k, generator=torch.Generator().manual_seed(1))
    draw = time.perf_counter() - start
    assert rows.shape == (contexts, k, slots) and int(rows.max()) < n
    opt = torch.optim.Adam(gen.parameters(), lr=1e-3)
    start = time.perf_counter()
    out = estimators.get("reinforce", k=4)(policy_of(gen, ctx), lambda x: objective(x, ctx.repeat_interleave(len(x) // contexts)),
                                           generator=torch.Generator().manual_seed(2))
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    step = time.perf_counter() - start
    return {"items_per_list": n, "attention": attention, "lists": contexts,
            "sample_seconds_per_list": round(draw / contexts, 4), "train_step_seconds_per_list": round(step / contexts, 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="1000,10000,100000")
    ap.add_argument("--contexts", type=int, default=8)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--max-attention-items", type=int, default=10_000,
                    help="longest list measured with a full transformer layer (its N x N scores per head)")
    args = ap.parse_args()
    for n in (int(x) for x in args.lengths.split(",")):
        for attention in ("none", "full", "set"):
            if attention == "full" and n > args.max_attention_items:
                continue
            print(json.dumps(measure(n, attention, args.contexts, args.slots, args.k)), flush=True)


if __name__ == "__main__":
    main()
