"""Item lists as a product: cold start through the CLI defaults, distinct-item slates, unseen-list speed.

    python benchmarks/item_lists.py                   # all parts, full size (about 9 minutes on 2 shared cores)
    python benchmarks/item_lists.py --quick           # a smoke run (one to two minutes): small data, 150 generator steps
    python benchmarks/item_lists.py --parts a,c --json runs/item_lists.json --work runs/item_lists

Prints one markdown table per part and writes every figure to --json (default WORK/item_lists.json).
One torch thread throughout (the machine is shared); the CLI runs as subprocesses of this Python.

a. Cold start through the CLI defaults. A synthetic item world (ItemWorld): items with 4 numeric
   attributes (price, rating, size, age; on their own scales) and a categorical type (book, game,
   film); a few users (the context column); a true slate reward per user with slot interactions,
   linear + pairwise in the items' standardised vectors (ItemSelectionTask's form, weights drawn per
   user): r_u(e) = sum_s a_us . e_s + sum_{s<t} e_s' B_ust e_t. A log of slates shown from the
   users' lists of a TRAINING catalogue, with noisy scores; the lists the run trains on. Test lists
   (8-12 items) are made ONLY of items of a fresh catalogue that no log row or training list holds
   (cold start: attributes known, never seen). `choicegrad fit LOG --slots ... --lists ... --list-id
   list` and `choicegrad generate RUN --items new_items.csv --lists new_lists.csv --top-k 1` run with
   their DEFAULT settings (--quick lowers --steps only). Truth by brute force over every slate of
   each test list. Figures: the top-1 slate's gap closed (y - mean) / (max - mean) over all slates
   of its list (truth), its exact-optimum share, scorer calls per list (from generate's output line),
   against peers (random, anneal, genetic, greedy) searching the run's scorer with the same calls
   per list, each peer's top-1 judged by the truth; and the scorer's own optimum (exhaustive search
   of the scorer: the ceiling any search on this scorer reaches).
b. Slates with distinct items through the Run path. SlateTask lists (position-based clicks,
   same-topic discount) as tables: an items table with the task's attribute columns (topic one-hot,
   quality, noise, the user's affinities: the task carries the user in every item) and a lists
   table (list id, item id). Run.fit_objective(ItemObjective(task.reward), ..., items=ItemSpec(...,
   distinct=True, list_id="list")) with default settings -- once as written, once with the reward
   wrapped in DistinctItems (a slate repeating an item scores -inf, so fit_items' amortised search
   never targets one; the plain form collapses the generator to one slate per list) -- then
   run.generate(items=, lists=, k=1) on unseen lists: gap closed against the distinct-slate brute force, vs greedy_rows (the k most
   attractive items: ranking by item score) and the peers at equal calls (distinct=True, on the
   same reward).
c. Unseen-list throughput. Lists of 16 items, 3 slots, 20,000 lists never seen, of items never seen
   (part a's run): run.generate(items=, lists=, decoder="argmax", k=1) on tables in memory, lists
   per second; then `choicegrad generate --decoder argmax --top-k 1` end to end on the same tables
   as CSV files (seconds, process start and file reading included); and where the in-memory time
   goes (a profile of the call, grouped by function).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)

from choicegrad.bench import peers as peer_search  # noqa: E402
from choicegrad.bench.metrics import gap_closed  # noqa: E402
from choicegrad.bench.tasks import stats as st  # noqa: E402
from choicegrad.bench.tasks.items import SlateTask  # noqa: E402
from choicegrad.items import ITEM_FIT  # noqa: E402
from choicegrad.bench.tasks.landscape import rows_at  # noqa: E402
from choicegrad.data.items import list_contexts, read_lists  # noqa: E402
from choicegrad.generators.objective import ItemObjective, ItemScorerObjective  # noqa: E402
from choicegrad.items import ItemSpec  # noqa: E402
from choicegrad.run import Run  # noqa: E402

PEERS = ("random", "anneal", "genetic", "greedy")
SLOTS = ["left", "middle", "right"]
CLI = [sys.executable, "-m", "choicegrad"]


# --- a synthetic item world ------------------------------------------------------------------------
class ItemWorld:
    """Items with numeric and categorical attributes, users, and a true slate reward per user.

    An item's vector for the reward is its standardised numbers (by the attributes' true means and
    scales) and its type one-hot (D = 4 + 3). User u's reward of a slate e (S, D):
    sum_s a_us . e_s + sum_{s<t} e_s' B_ust e_t, with a ~ N(0, 1/D), B ~ N(0, coupling^2 / D)."""

    NUMBERS = {"price": (20.0, 8.0), "rating": (3.5, 0.8), "size": (100.0, 30.0), "age": (5.0, 3.0)}
    TYPES = ["book", "game", "film"]

    def __init__(self, users: int = 4, slots: int = 3, coupling: float = 0.7, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.users = [f"u{i}" for i in range(users)]
        self.slots, self.dim = slots, len(self.NUMBERS) + len(self.TYPES)
        D = self.dim
        self.linear = torch.randn(users, slots, D, generator=g, dtype=torch.float64) / D**0.5
        pair = torch.randn(users, slots, slots, D, D, generator=g, dtype=torch.float64) * coupling / D**0.5
        self.pair = torch.triu(torch.ones(slots, slots, dtype=torch.float64), diagonal=1)[None, ..., None, None] * pair

    def catalogue(self, n: int, prefix: str, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        frame = pd.DataFrame({"id": [f"{prefix}{i}" for i in range(n)]})
        for name, (mean, scale) in self.NUMBERS.items():
            frame[name] = np.round(mean + scale * rng.standard_normal(n), 2)
        frame["type"] = rng.choice(self.TYPES, n)
        return frame

    def vectors(self, items: pd.DataFrame) -> torch.Tensor:
        """(M, D) float64: standardised numbers, type one-hot."""
        nums = [(items[c].to_numpy(float) - m) / s for c, (m, s) in self.NUMBERS.items()]
        hot = (items["type"].to_numpy()[:, None] == np.array(self.TYPES)[None, :]).astype(float)
        return torch.from_numpy(np.concatenate([np.stack(nums, 1), hot], 1))

    def reward(self, user: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """user (N,) long, e (N, S, D) -> (N,) true reward."""
        a, B = self.linear[user], self.pair[user]
        return torch.einsum("nsd,nsd->n", e, a) + torch.einsum("nsd,nstde,nte->n", e, B, e)

    def lists(self, items: pd.DataFrame, per_user: int, lengths: tuple[int, int], seed: int,
              start: int = 0) -> pd.DataFrame:
        """per_user lists per user of lengths[0]..lengths[1] distinct items: columns user, list, id."""
        rng = np.random.default_rng(seed)
        rows = []
        number = start
        for user in self.users:
            for _ in range(per_user):
                n = int(rng.integers(lengths[0], lengths[1] + 1))
                for item in rng.choice(items["id"].to_numpy(), n, replace=False):
                    rows.append((user, f"l{number}", item))
                number += 1
        return pd.DataFrame(rows, columns=["user", "list", "id"])

    def log(self, items: pd.DataFrame, lists: pd.DataFrame, rows: int, noise: float, seed: int) -> pd.DataFrame:
        """`rows` slates shown from random lists (an item per slot, uniform over the list, repeats
        allowed) with score = reward + N(0, (noise * reward std)^2)."""
        rng = np.random.default_rng(seed)
        groups = lists.groupby("list", sort=False)
        keys = list(groups.groups)
        members = {k: g["id"].to_numpy() for k, g in groups}
        owner = dict(zip(lists["list"], lists["user"]))
        chosen = rng.choice(len(keys), rows)
        out = pd.DataFrame({"user": [owner[keys[c]] for c in chosen]})
        picks = [rng.choice(members[keys[c]], self.slots) for c in chosen]
        for s, slot in enumerate(SLOTS[:self.slots]):
            out[slot] = [p[s] for p in picks]
        r = self.truth(items, out)
        out["y"] = np.round(r + noise * r.std() * rng.standard_normal(rows), 4)
        return out

    def truth(self, items: pd.DataFrame, slates: pd.DataFrame) -> np.ndarray:
        """The true reward of slates (user, slot columns of item ids) -> (N,)."""
        vec = self.vectors(items)
        index = pd.Index(items["id"])
        e = torch.stack([vec[index.get_indexer(slates[s])] for s in SLOTS[:self.slots]], 1)
        user = torch.from_numpy(pd.Index(self.users).get_indexer(slates["user"])).long()
        return self.reward(user, e).numpy()

    def brute_force(self, items: pd.DataFrame, lists: pd.DataFrame) -> dict:
        """Per test list (in order of first appearance): every slate's truth -> {list: (stats, values)}."""
        vec = self.vectors(items)
        index = pd.Index(items["id"])
        out = {}
        for key, g in lists.groupby("list", sort=False):
            pos = torch.from_numpy(index.get_indexer(g["id"]))
            N = len(pos)
            rows = rows_at(torch.arange(N**self.slots), [N] * self.slots)
            e = vec[pos][rows]
            user = torch.full((len(rows),), self.users.index(g["user"].iloc[0]), dtype=torch.long)
            v = self.reward(user, e)
            out[key] = {"max": float(v.max()), "mean": float(v.mean()), "min": float(v.min())}
        return out


def judge(values: np.ndarray, stats: list[dict]) -> dict:
    """Gap closed (truth) and exact-optimum share of one top-1 value per list."""
    mx = np.array([s["max"] for s in stats])
    mean = np.array([s["mean"] for s in stats])
    gap = (values - mean) / np.maximum(mx - mean, 1e-12)
    return {"gap": float(np.mean(gap)), "optimum": float(np.mean(values >= mx - 1e-9 * np.maximum(1, np.abs(mx)))),
            "lists": len(values)}


def cli(args: list[str], log: Path) -> tuple[str, float]:
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"choicegrad {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr, seconds


# --- part a ------------------------------------------------------------------------------------------
def part_a(args, work: Path) -> dict:
    size = QUICK_A if args.quick else FULL_A
    world = ItemWorld(users=size["users"], coupling=size["coupling"], seed=0)
    train_items = world.catalogue(size["catalogue"], "t", seed=1)
    new_items = world.catalogue(size["catalogue"], "n", seed=2)
    train_lists = world.lists(train_items, size["train_lists"], (8, 12), seed=3)
    test_lists = world.lists(new_items, size["test_lists"], (8, 12), seed=4, start=10**6)
    log = world.log(train_items, train_lists, size["log"], size["noise"], seed=5)
    folder = work / "a"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {n: folder / f"{n}.csv" for n in ("log", "items", "lists", "new_items", "new_lists")}
    for name, frame in (("log", log), ("items", train_items), ("lists", train_lists), ("new_items", new_items),
                        ("new_lists", test_lists)):
        frame.to_csv(paths[name], index=False)
    run_dir, slates_path = folder / "run", folder / "slates.csv"
    fit_cmd = ["fit", str(paths["log"]), "--slots", ",".join(SLOTS), "--items", str(paths["items"]), "--item-id", "id",
               "--context", "user", "--score", "y", "--lists", str(paths["lists"]), "--list-id", "list",
               "--out", str(run_dir), "--overwrite"]
    if args.steps is not None:
        fit_cmd += ["--steps", str(args.steps)]
    fit_out, fit_s = cli(fit_cmd, folder / "fit.log")
    gen_cmd = ["generate", str(run_dir), "--items", str(paths["new_items"]), "--lists", str(paths["new_lists"]),
               "--top-k", "1", "--out", str(slates_path)]
    gen_out, gen_s = cli(gen_cmd, folder / "generate.log")
    calls = int(re.search(r"\((\d+) scorer calls\)", gen_out).group(1))
    n_lists = test_lists["list"].nunique()
    per_list = calls / n_lists
    stats_by = world.brute_force(new_items, test_lists)
    slates = pd.read_csv(slates_path)
    order = list(stats_by)
    slates = slates.set_index("list").loc[order].reset_index()
    stats = [stats_by[k] for k in order]
    rows = {"choicegrad (CLI defaults)": {**judge(world.truth(new_items, slates), stats), "calls": per_list,
                                          "seconds": gen_s}}
    spearman = re.search(r"held-out spearman ([-\d.]+)", fit_out)

    # peers on the run's scorer, the same calls per list
    run = Run.load(run_dir)
    objective = ItemScorerObjective(run.scorer).prepare("cpu")
    catalogue = run.items.catalogue.extended(
        __import__("choicegrad.data.items", fromlist=["Catalogue"]).Catalogue.read(new_items, run.items.record.encoder))
    item_lists = read_lists(test_lists, run.items.record.keys, "id", catalogue)
    cat, num = run.items.record.context.encode(item_lists.keys)
    budget = max(1, int(round(per_list)))
    for name in (*PEERS, "exhaustive"):
        picks = []
        start = time.perf_counter()
        for which, ctx, pos in list_contexts(item_lists, catalogue, cat, num, None, len(SLOTS)):
            allowed = ctx.mask.unsqueeze(1).expand(-1, len(SLOTS), -1)
            cands = peer_search.search(name, objective, ctx, allowed, 1, budget=budget,
                                       generator=torch.Generator().manual_seed(0))
            chosen = pos[torch.arange(len(pos))[:, None], cands.rows[:, 0].clamp(min=0)]
            frame = item_lists.keys.iloc[which].reset_index(drop=True)
            for s, slot in enumerate(SLOTS):
                frame[slot] = catalogue.ids[chosen[:, s].numpy()]
            picks.append(frame)
            calls_peer = cands.scorer_calls / len(pos)
        frame = pd.concat(picks).set_index("list").loc[order].reset_index()
        label = f"{name} (peer)" if name != "exhaustive" else "scorer optimum (exhaustive search of the scorer)"
        rows[label] = {**judge(world.truth(new_items, frame), stats), "calls": calls_peer,
                       "seconds": time.perf_counter() - start}
    best_peer = max((r["gap"] for n, r in rows.items() if n.endswith("(peer)")))
    return {"setup": {**size, "lists": n_lists, "log_rows": len(log), "fit_seconds": round(fit_s, 1),
                      "generate_seconds": round(gen_s, 1), "scorer_spearman": float(spearman.group(1)) if spearman else None,
                      "fit": " ".join(fit_cmd), "generate": " ".join(gen_cmd), "fit_output": fit_out.strip().splitlines()},
            "rows": rows, "best_peer_gap": best_peer,
            "targets": {"gap >= 0.95": rows["choicegrad (CLI defaults)"]["gap"] >= 0.95,
                        "calls <= 64": per_list <= 64,
                        "ahead of the best peer": rows["choicegrad (CLI defaults)"]["gap"] > best_peer}}


FULL_A = {"users": 4, "coupling": 0.7, "catalogue": 300, "train_lists": 100, "test_lists": 50, "log": 20_000,
          "noise": 0.25}
QUICK_A = {"users": 3, "coupling": 0.7, "catalogue": 100, "train_lists": 20, "test_lists": 10, "log": 3_000,
           "noise": 0.25}


# --- part b ------------------------------------------------------------------------------------------
def slate_tables(task: SlateTask, ctx, prefix: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """SlateTask lists as tables: items (id and the task's attribute columns, every item of every list
    its own id) and lists (list, id). The item vector the run builds is the task's own vector."""
    T = task.topics
    names = [f"topic{t}" for t in range(T)] + ["quality"] + [f"noise{j}" for j in range(task.noise)] + \
        [f"affinity{t}" for t in range(T)]
    b, i = torch.nonzero(ctx.mask, as_tuple=True)
    ids = np.char.add(np.char.add(f"{prefix}", b.numpy().astype(str)), np.char.add("_", i.numpy().astype(str)))
    items = pd.DataFrame(ctx.items[b, i].numpy().astype(np.float64), columns=names)
    items.insert(0, "id", ids)
    lists = pd.DataFrame({"list": np.char.add(f"{prefix}", b.numpy().astype(str)), "id": ids})
    return items, lists


def slate_rows(slates: pd.DataFrame, slots: list[str], n: int) -> torch.Tensor:
    """Generated slates (list "<prefix><b>", slot columns of ids "<prefix><b>_<i>") -> (n, S) positions i,
    in list order b."""
    b = slates["list"].str.extract(r"(\d+)$")[0].astype(int).to_numpy().copy()
    rows = torch.full((n, len(slots)), -1, dtype=torch.long)
    for s, slot in enumerate(slots):
        rows[torch.from_numpy(b), s] = torch.from_numpy(slates[slot].str.extract(r"_(\d+)$")[0].astype(int).to_numpy().copy())
    return rows


def part_b(args, work: Path) -> dict:
    from choicegrad.training.loop import GeneratorFit

    size = QUICK_B if args.quick else FULL_B
    task = SlateTask(slots=3, lengths=(8, 12))
    slots = ["top", "second", "third"]
    train = task.draw(size["train_lists"], torch.Generator().manual_seed(10))
    test = task.draw(size["test_lists"], torch.Generator().manual_seed(11))
    items, lists = slate_tables(task, train, "a")
    new_items, new_lists = slate_tables(task, test, "z")
    fit = GeneratorFit(steps=args.steps) if args.steps is not None else None
    spec = ItemSpec(slots=slots, items=items, item_id="id", lists=lists, list_id="list", distinct=True)
    n = len(test)
    generated = {}
    # the reward as the user writes it (fit_items trains distinct runs on DistinctItems of it by itself)
    for label, objective in (("ItemObjective(reward)", ItemObjective(task.reward)),):
        out = work / "b" / "run"
        start = time.perf_counter()
        run = Run.fit_objective(objective, out, items=spec, generator_fit=fit, overwrite=True, progress=False,
                                echo=lambda m: print("  " + m, file=sys.stderr))
        fit_s = time.perf_counter() - start
        draws = run.generator.sample(test, 64, 1.0, None, torch.Generator().manual_seed(0))
        keys = draws[..., 0] * 10_000 + draws[..., 1] * 100 + draws[..., 2]
        distinct_draws = float(np.mean([len(set(k.tolist())) for k in keys]))
        start = time.perf_counter()
        slates = run.generate(items=new_items, lists=new_lists, k=1)
        generated[label] = (slates, time.perf_counter() - start, fit_s, distinct_draws)
    per_list = generated["ItemObjective(reward)"][0].attrs["scorer_calls"] / n
    stats = task.stats(test)
    user = task.user(test)

    def truth(rows: torch.Tensor) -> torch.Tensor:
        sel = test.items[torch.arange(n)[:, None], rows.clamp(min=0)]
        return task.value(sel, user)

    def judged(rows: torch.Tensor, calls: float, seconds: float) -> dict:
        v = truth(rows)
        distinct = bool(((rows.unsqueeze(-1) == rows.unsqueeze(-2)).sum((1, 2)) == rows.shape[1]).all())
        return {"gap": float(gap_closed(v, stats).mean()),
                "optimum": float((v >= stats["max"] - 1e-6).float().mean()), "calls": calls, "seconds": seconds,
                "all_distinct": distinct}

    rows = {}
    for label, (slates, gen_s, fit_s, distinct_draws) in generated.items():
        rows[f"choicegrad, fit_objective({label}), generate k=1"] = {
            **judged(slate_rows(slates, slots, n), slates.attrs["scorer_calls"] / n, gen_s),
            "fit_seconds": fit_s, "distinct_of_64_draws": distinct_draws}
    rows["greedy by item score (greedy_rows)"] = judged(task.greedy_rows(test), 0.0, 0.0)
    objective = ItemObjective(task.reward, scale=1.0)
    allowed = test.mask.unsqueeze(1).expand(-1, len(slots), -1)
    budget = max(1, int(round(per_list)))
    for name in PEERS:
        start = time.perf_counter()
        cands = peer_search.search(name, objective, test, allowed, 1, budget=budget,
                                   generator=torch.Generator().manual_seed(0), distinct=True)
        rows[f"{name} (peer, distinct)"] = judged(cands.rows[:, 0], cands.scorer_calls / n, time.perf_counter() - start)
    best_peer = max(r["gap"] for k, r in rows.items() if "(peer" in k)
    mine = rows["choicegrad, fit_objective(ItemObjective(reward)), generate k=1"]
    return {"setup": {**size, "steps": args.steps or f"the item runs' default ({ITEM_FIT['steps']})"},
            "rows": rows, "best_peer_gap": best_peer,
            "targets": {"gap >= 0.98": mine["gap"] >= 0.98,
                        "ahead of greedy by item score": mine["gap"] > rows["greedy by item score (greedy_rows)"]["gap"],
                        "ahead of the best peer": mine["gap"] > best_peer}}


FULL_B = {"train_lists": 4000, "test_lists": 500}
QUICK_B = {"train_lists": 400, "test_lists": 100}


# --- part c ------------------------------------------------------------------------------------------
def part_c(args, work: Path) -> dict:
    size = QUICK_C if args.quick else FULL_C
    run_dir = work / "a" / "run"
    if not (run_dir / "items.json").is_file():
        raise SystemExit(f"part c decodes with part a's run: run part a first ({run_dir} is missing)")
    world = ItemWorld(users=(QUICK_A if args.quick else FULL_A)["users"], seed=0)
    items = world.catalogue(size["catalogue"], "c", seed=20)
    rng = np.random.default_rng(21)
    L, N = size["lists"], 16
    members = np.argsort(rng.random((L, size["catalogue"])), 1)[:, :N]     # 16 distinct items per list
    lists = pd.DataFrame({"user": np.repeat(np.array(world.users)[rng.integers(0, len(world.users), L)], N),
                          "list": np.repeat(np.char.add("c", np.arange(L).astype(str)), N),
                          "id": items["id"].to_numpy()[members.ravel()]})
    run = Run.load(run_dir)
    run.generate(items=items, lists=lists.iloc[: 16 * 8], decoder="argmax", k=1)   # warm up
    times = []
    for _ in range(size["repeats"]):
        start = time.perf_counter()
        slates = run.generate(items=items, lists=lists, decoder="argmax", k=1)
        times.append(time.perf_counter() - start)
    best = min(times)
    profiler = cProfile.Profile()
    profiler.enable()
    run.generate(items=items, lists=lists, decoder="argmax", k=1)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(28)
    folder = work / "c"
    folder.mkdir(parents=True, exist_ok=True)
    items.to_csv(folder / "items.csv", index=False)
    lists.to_csv(folder / "lists.csv", index=False)
    out, cli_s = cli(["generate", str(run_dir), "--items", str(folder / "items.csv"), "--lists",
                      str(folder / "lists.csv"), "--decoder", "argmax", "--top-k", "1", "--out",
                      str(folder / "slates.csv")], folder / "generate.log")
    (folder / "profile.txt").write_text(text.getvalue())
    return {"lists": L, "items_per_list": N, "slots": len(SLOTS), "rows_out": len(slates),
            "seconds": times, "lists_per_s": L / best, "cli_seconds": cli_s, "cli_lists_per_s": L / cli_s,
            "cli_output": out.strip(), "profile": text.getvalue(), "target": {">= 20,000 lists/s": L / best >= 20_000}}


FULL_C = {"lists": 20_000, "catalogue": 5_000, "repeats": 3}
QUICK_C = {"lists": 2_000, "catalogue": 1_000, "repeats": 1}


def table(rows: dict, columns: list[tuple[str, str, str]]) -> str:
    head = "| method | " + " | ".join(c[1] for c in columns) + " |"
    lines = [head, "|:---|" + "---:|" * len(columns)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(format(r[c[0]], c[2]) if isinstance(r.get(c[0]), (int, float)) else "—"
                                                for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--parts", default="a,b,c")
    p.add_argument("--work", type=Path, default=Path("runs/item_lists"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (part c's target is for both cores: 2)")
    p.add_argument("--steps", type=int, default=None, help="generator steps (default: the CLI's; --quick: 150)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick and args.steps is None:
        args.steps = 150
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    figures = {"machine": "2-core CPU, shared", "quick": args.quick, "command": " ".join(sys.argv)}
    if "a" in parts:
        a = part_a(args, args.work)
        figures["a"] = a
        print("\n### a. Cold start through the CLI defaults\n")
        print(table(a["rows"], [("gap", "gap closed", ".3f"), ("optimum", "exact optimum", ".3f"),
                                ("calls", "scorer calls / list", ".1f"), ("seconds", "seconds", ".1f")]))
        print(f"\n{a['setup']['lists']} test lists of unseen items; scorer held-out spearman "
              f"{a['setup']['scorer_spearman']}; fit {a['setup']['fit_seconds']} s; targets {a['targets']}")
    if "b" in parts:
        b = part_b(args, args.work)
        figures["b"] = b
        print("\n### b. Slates of distinct items (SlateTask) through the Run path\n")
        print(table(b["rows"], [("gap", "gap closed", ".3f"), ("optimum", "exact optimum", ".3f"),
                                ("calls", "reward calls / list", ".1f"), ("seconds", "seconds", ".2f"),
                                ("distinct_of_64_draws", "distinct rows in 64 draws", ".1f")]))
        print(f"\n{b['setup']}; targets {b['targets']}")
    if "c" in parts:
        c = part_c(args, args.work)
        figures["c"] = c
        print("\n### c. Unseen-list throughput (argmax, k=1)\n")
        print("| lists | items / list | in memory: seconds (best) | lists / s | CLI end to end: seconds | lists / s |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(f"| {c['lists']:,} | {c['items_per_list']} | {min(c['seconds']):.2f} | {c['lists_per_s']:,.0f} | "
              f"{c['cli_seconds']:.2f} | {c['cli_lists_per_s']:,.0f} |")
        print("\nprofile (cumulative):\n" + "\n".join(c["profile"].splitlines()[:40]))
    path = args.json or args.work / "item_lists.json"
    path.write_text(json.dumps(figures, indent=2, default=float) + "\n")
    print(f"\nfigures -> {path}")


if __name__ == "__main__":
    main()
