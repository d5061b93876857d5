"""How well a pointer generator picks interacting items, against the brute-force optimum.

    python benchmarks/item_quality.py [--seeds 0 1 2] [--steps 4000] [--method reinforce] [--json]

Task: ItemSelectionTask(slots=3, dim=4, coupling=1.0, seed=0): lists of item vectors in R^4, a fixed
reward with interactions between the 3 slots, every combination enumerable, so each list has a known
optimum. Per training seed, a PointerGenerator (sequential by default: each slot's query sees the
items chosen in the slots before it) is trained with fit_generator on fresh lists every step
(--train-lengths, default 6 to 12 items; --steps 4,000, twice an item run's default), then measured on unseen lists (drawn with other seeds):

  pick_gap / pick_opt      the generator's single pick (greedy decode) on 500 lists of 8 items:
                           gap closed (y - mean) / (max - mean) over all combinations, and the
                           share of lists where it is the exact optimum
  mode_gap / mode_opt      the generator's most likely slate by a beam of 8 (decode "topk", its first
                           row by log-probability; no objective call), on the same lists
  polish_gap / polish_opt  decode("polish", ..., budget=64): 64 objective calls per list
  ipolish_gap / _opt       (--item-decode) the same with the item runs' options, items.ITEM_DECODE
  pick16_gap               the single pick on 500 lists of 16 items (same reward, longer lists)
  five8 / five40           pick-5 (PickFiveTask(slots=3)): a second generator, same settings but
                           --five-steps steps, trained on lists of 8; share of slots holding a 5
                           from its single pick on 1,000 unseen lists of 8 and of 40 items
  train_s / five_train_s   training seconds of each generator (one CPU thread)

Prints one line per seed and the mean (markdown table; --json: one JSON line each).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from choicegrad.bench.tasks.items import ItemSelectionTask, PickFiveTask
from choicegrad.decoding import decode
from choicegrad.decoding.decoders import beam_search
from choicegrad.generators import GeneratorConfig, ItemObjective, PointerGenerator
from choicegrad.items import ITEM_GENERATOR
from choicegrad.training.contexts import SampledContexts
from choicegrad.training.loop import GeneratorFit, fit_generator

EVAL_SEED = 777          # unseen lists: training draws from the fit seed, validation from seed 0


def reward_scale(task: ItemSelectionTask) -> float:
    """The reward's std over random slates (every combination of 64 lists)."""
    values, _ = task.enumerate(task.draw(64, torch.Generator().manual_seed(1234)))
    return float(values[torch.isfinite(values)].std())


def make_generator(args, slots: int, dim: int, shift=None, scale=None) -> PointerGenerator:
    config = GeneratorConfig(kind="pointer", hidden=[args.hidden, args.hidden], heads=args.heads,
                             attention_layers=args.layers, attention_width=args.width or None)
    return PointerGenerator(slots, dim, config, sequential=args.sequential, item_shift=shift, item_scale=scale)


def make_fit(args, seed: int, steps: int) -> GeneratorFit:
    options = {"baseline": "rloo"} if args.method == "reinforce" else {}
    return GeneratorFit(method=args.method, method_options=options, steps=steps, batch_size=args.batch,
                        samples=args.samples, lr=args.lr, entropy=args.entropy, entropy_end=args.entropy_end,
                        distill=args.distill, distill_sweeps=args.distill_sweeps, seed=seed,
                        val_every=steps, patience=None)   # keep the final state (validation ranks samples, not picks)


def gap_and_optimum(task: ItemSelectionTask, objective, rows, ctx) -> tuple[float, float]:
    """Mean gap closed and share of lists at the optimum of rows (B, S)."""
    stats = task.stats(ctx)
    with torch.no_grad():
        y = objective(rows, ctx)
    gap = task.gap_closed(y, stats)
    return float(gap.mean()), float((y >= stats["max"] - 1e-5).float().mean())


def run_items(args, seed: int) -> dict:
    task = ItemSelectionTask(slots=3, dim=4, lengths=tuple(args.train_lengths), coupling=1.0, seed=0)
    objective = ItemObjective(task.reward, scale=reward_scale(task))
    torch.manual_seed(seed)
    gen = make_generator(args, task.slots, task.dim)
    start = time.perf_counter()
    fit_generator(gen, objective, SampledContexts(task.draw), make_fit(args, seed, args.steps), progress=False)
    train_s = time.perf_counter() - start

    test8 = ItemSelectionTask(slots=3, dim=4, lengths=(8, 8), coupling=1.0, seed=0)      # same reward
    ctx = test8.draw(args.lists, torch.Generator().manual_seed(EVAL_SEED + seed))
    pick_gap, pick_opt = gap_and_optimum(test8, objective, gen.greedy(ctx), ctx)
    with torch.no_grad():
        mode = beam_search(gen, ctx, 8)[0][:, 0]
    mode_gap, mode_opt = gap_and_optimum(test8, objective, mode, ctx)
    polished = decode("polish", gen, objective, ctx, 1, budget=64, generator=torch.Generator().manual_seed(0))
    polish_gap, polish_opt = gap_and_optimum(test8, objective, polished.rows[:, 0], ctx)
    extra = {}
    if args.item_decode:   # the item runs' decoding (choicegrad.items.ITEM_DECODE) at the same budget
        from choicegrad.items import ITEM_DECODE
        polished = decode("polish", gen, objective, ctx, 1, budget=64, generator=torch.Generator().manual_seed(0),
                          **ITEM_DECODE)
        extra["ipolish_gap"], extra["ipolish_opt"] = gap_and_optimum(test8, objective, polished.rows[:, 0], ctx)

    test16 = ItemSelectionTask(slots=3, dim=4, lengths=(16, 16), coupling=1.0, seed=0)
    ctx16 = test16.draw(args.lists, torch.Generator().manual_seed(EVAL_SEED + 100 + seed))
    pick16_gap, pick16_opt = gap_and_optimum(test16, objective, gen.greedy(ctx16), ctx16)
    return {"pick_gap": pick_gap, "pick_opt": pick_opt, "mode_gap": mode_gap, "mode_opt": mode_opt, "polish_gap": polish_gap, "polish_opt": polish_opt,
            "pick16_gap": pick16_gap, "pick16_opt": pick16_opt, **extra, "train_s": train_s}


def run_pick_five(args, seed: int) -> dict:
    task = PickFiveTask(slots=3, lengths=(8, 8))
    rows = torch.randint(0, 8, (4096, 3), generator=torch.Generator().manual_seed(1234))
    ctx = task.draw(4096, torch.Generator().manual_seed(1234))
    objective = ItemObjective(task.reward, scale=1.0)
    objective = ItemObjective(task.reward, scale=float(objective(rows, ctx).std()))
    torch.manual_seed(seed)
    gen = make_generator(args, task.slots, 1, shift=[5.0], scale=[3.0])   # items 0..10, standardised
    start = time.perf_counter()
    fit_generator(gen, objective, SampledContexts(task.draw), make_fit(args, seed, args.five_steps),
                  progress=False)
    train_s = time.perf_counter() - start
    out = {"five_train_s": train_s}
    for n in (8, 40):
        ctx = task.draw(1000, torch.Generator().manual_seed(EVAL_SEED + n + seed), lengths=(n, n))
        out[f"five{n}"] = task.accuracy(gen.greedy(ctx), ctx)
    return out


COLUMNS = ["pick_gap", "pick_opt", "mode_gap", "mode_opt", "polish_gap", "polish_opt", "ipolish_gap", "ipolish_opt", "pick16_gap", "five8", "five40", "train_s",
           "five_train_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--method", default="reinforce", help="see choicegrad.estimators.available()")
    ap.add_argument("--steps", type=int, default=4000,
                    help="training steps (twice the item runs' default, items.ITEM_FIT: docs/items.md, part d)")
    ap.add_argument("--five-steps", type=int, default=300, help="training steps of the pick-5 generator")
    ap.add_argument("--batch", type=int, default=32, help="lists per step")
    ap.add_argument("--samples", type=int, default=16, help="rows per list (reinforce k, raml m)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--entropy", type=float, default=0.5)
    ap.add_argument("--entropy-end", type=float, default=0.01)
    ap.add_argument("--distill", type=float, default=None, help="amortised-search weight (None: the default, 1)")
    ap.add_argument("--distill-sweeps", type=int, default=2, help="sweeps of the search the generator learns from")
    ap.add_argument("--hidden", type=int, default=ITEM_GENERATOR.hidden[-1])
    ap.add_argument("--heads", type=int, default=ITEM_GENERATOR.heads)
    ap.add_argument("--layers", type=int, default=ITEM_GENERATOR.attention_layers,
                    help="self-attention layers over the items (default: the item runs')")
    ap.add_argument("--width", type=int, default=ITEM_GENERATOR.attention_width or 0,
                    help="their width: 0 for full transformer layers, else light SetAttention layers of this width")
    ap.add_argument("--sequential", type=int, default=1, help="1: slots see earlier choices; 0: independent slots")
    ap.add_argument("--train-lengths", type=int, nargs=2, default=[6, 12],
                    help="list lengths in training (lo hi): mixed lengths carry over to longer lists")
    ap.add_argument("--lists", type=int, default=500, help="unseen 8- and 16-item lists")
    ap.add_argument("--no-five", action="store_true", help="skip pick-5")
    ap.add_argument("--item-decode", action="store_true",
                    help="also polish with the item runs' decode options (ipolish_gap / ipolish_opt)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    if not args.json:
        print(f"settings: {json.dumps({k: v for k, v in vars(args).items() if k not in ('json', 'seeds')})}")
        print("| seed | " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * (len(COLUMNS) + 1))
    for seed in args.seeds:
        row = run_items(args, seed)
        if not args.no_five:
            row.update(run_pick_five(args, seed))
        rows.append(row)
        show(f"{seed}", row, args.json)
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
    show("mean", mean, args.json)


def show(label: str, row: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"seed": label, **{k: round(v, 4) for k, v in row.items()}}), flush=True)
        return
    cells = ["-" if c not in row else f"{row[c]:.1f}" if c.endswith("_s") else f"{row[c]:.3f}" for c in COLUMNS]
    print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
