"""Every disk operation of fit, fit-scorer, generate, score and propose, faulted in turn (the way
SQLite tests its I/O): the command is run once to list its operations (choicegrad.fs fault points),
then once per operation with a SIGKILL just before it and once with that operation failing with
ENOSPC. After each fault nothing is lost (the previous run, state or output is intact, or the new
one is complete and verifies), a disk error exits 2 naming the path and ENOSPC with no traceback,
and the next command a user would run succeeds; a resumed fit reaches the uninterrupted run's files
byte for byte."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from faultinject import operations, run
from choicegrad.bench.tasks import PottsTask
from choicegrad.run import Run
from choicegrad.runfolder import verify_run

F = ["--features", "s?", "--score", "y", "--context", "ctx"]
FIT = ["fit", "t.csv", "--force-generator", *F, "--seed", "1", "--scorer-epochs", "1", "--steps", "1"]
SMALL = ["fit", "t.csv", *F, "--seed", "1", "--scorer-epochs", "1", "--steps", "1"]   # a small space: enumerated
SMALL_FILES = ("scorer.safetensors", "scorer.json", "contexts.csv")
MODEL_FILES = ("scorer.safetensors", "scorer.json", "generator.safetensors", "generator.json", "contexts.csv")
STATE_FILES = ("scorer.safetensors", "generator.safetensors", "designer.json")
PROPOSE = ["propose", "t.csv", *F, "--batch", "2", "--ensemble", "2", "--max-minutes", "0.01", "--state", "state",
           "--out", "p.csv"]

# command -> (its arguments, the arguments of the command a user runs after a fault)
COMMANDS = {
    "fit": (FIT + ["--out", "new"], FIT + ["--out", "new", "--resume"]),
    "fit-small": (SMALL + ["--out", "small"], SMALL + ["--out", "small", "--resume"]),
    "fit-overwrite": (FIT[:-4] + ["--seed", "2", "--steps", "1", "--out", "run", "--overwrite"],
                      FIT[:-4] + ["--seed", "2", "--steps", "1", "--out", "run", "--overwrite", "--resume"]),
    # a checkpoint at every batch: a save, then saves that replace it
    "fit-scorer": (["fit-scorer", "t.csv", *F, "--epochs", "2", "--checkpoint-minutes", "0", "--out", "sc"],
                   ["fit-scorer", "t.csv", *F, "--epochs", "2", "--checkpoint-minutes", "0", "--out", "sc", "--resume"]),
    "generate": (["generate", "run", "--top-k", "2", "--out", "c.csv"],) * 2,
    "score": (["score", "run", "t.csv", "--out", "s.csv"],) * 2,
    "propose": (PROPOSE,) * 2,
}


def digest(folder: Path, names) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names if (folder / n).is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """t.csv, a finished run (run/), a design state after one round (state/), earlier outputs
    (c.csv, s.csv, p.csv), and what each command gives uninterrupted (ref-*)."""
    base = tmp_path_factory.mktemp("world")
    PottsTask(slots=3, vocab=3, contexts=2, seed=0).table(n=40, seed=1).to_csv(base / "t.csv", index=False)
    for args in (FIT + ["--out", "run"], PROPOSE, ["generate", "run", "--out", "c.csv", "--top-k", "1"],
                 ["score", "run", "t.csv", "--out", "s.csv"]):
        done = run(args, base)
        assert done.code == 0, done.stderr
    for name in ("fit", "fit-small", "fit-overwrite", "fit-scorer"):
        ref = base / f"ref-{name}"
        shutil.copytree(base, ref, ignore=shutil.ignore_patterns("ref-*"))
        done = run(COMMANDS[name][0], ref)
        assert done.code == 0, done.stderr
    return base


def case(world: Path, where: Path) -> Path:
    shutil.copytree(world, where, ignore=shutil.ignore_patterns("ref-*"))
    return where


def check_intact_or_complete(name: str, world: Path, d: Path) -> None:
    """Right after a fault: what was there is as it was, or the command's result is complete."""
    if name == "fit":
        verify_run(d / "new")          # a reader finishes a move into place that the kill cut short
        if (d / "new").exists():
            Run.load(d / "new")
        else:
            assert not (d / ".new.partial" / "run.json").exists()
    elif name == "fit-small":
        verify_run(d / "small")
        if (d / "small").exists():
            assert Run.load(d / "small").generator is None
    elif name == "fit-overwrite":
        verify_run(d / "run")
        if digest(d / "run", MODEL_FILES) != digest(world / "run", MODEL_FILES):
            assert Run.load(d / "run").config["scorer_fit"]["seed"] == 2
    elif name == "fit-scorer":
        verify_run(d / "sc")
        assert not (d / "sc").exists() or digest(d / "sc", ("scorer.safetensors",))
    elif name in ("generate", "score"):
        out = d / ("c.csv" if name == "generate" else "s.csv")
        if out.read_bytes() != (world / out.name).read_bytes():
            assert len(pd.read_csv(out)) == (4 if name == "generate" else 40)
    else:
        verify_run(d / "state")
        if digest(d / "state", STATE_FILES) != digest(world / "state", STATE_FILES):
            assert '"rounds": 2' in (d / "state" / "designer.json").read_text()
        if (d / "p.csv").read_bytes() != (world / "p.csv").read_bytes():
            assert len(pd.read_csv(d / "p.csv")) == 4


def check_recovered(name: str, world: Path, d: Path) -> None:
    """After the next command: the complete result, nothing of ours left beside it."""
    if name in ("fit", "fit-small", "fit-overwrite", "fit-scorer"):
        out = {"fit": "new", "fit-small": "small", "fit-overwrite": "run", "fit-scorer": "sc"}[name]
        files = {"fit-scorer": ("scorer.safetensors", "scorer.json"), "fit-small": SMALL_FILES}.get(name, MODEL_FILES)
        assert verify_run(d / out) is not None
        assert digest(d / out, files) == digest(world / f"ref-{name}" / out, files)      # byte for byte
    elif name == "propose":
        assert verify_run(d / "state") is not None and len(pd.read_csv(d / "p.csv")) == 4
    litter = sorted(p.name for p in d.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))
    assert litter == [], litter
    for folder in (p for p in d.iterdir() if p.is_dir()):
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def faulted(args, d: Path, mode: str, i: int, op: str, path: str) -> tuple[str, bool]:
    """Run `args` in d with operation i killed or failing with ENOSPC -> (where, whether the command
    finished as if nothing failed). No traceback; a kill is a kill; a failing write exits 2 naming
    ENOSPC, or passes (the caller says whether that write may)."""
    done = run(args, d, faults=f"{mode}@{i}")
    where = f"{mode} at operation {i} ({op} {path})"
    assert "Traceback" not in done.stderr, (where, done.stderr)
    if mode == "kill":
        assert done.code == -9, (where, done.code, done.stderr)
    elif done.code != 0:
        assert done.code == 2 and "No space left on device (ENOSPC)" in done.stderr, (where, done.stderr)
    return where, mode == "enospc" and done.code == 0


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_disk_operation_killed_or_failing(world, tmp_path, name):
    args, after = COMMANDS[name]
    ops = operations(args, case(world, tmp_path / "count"))
    kinds = {op for op, _ in ops}
    assert {"create", "write", "rename"} <= kinds, ops
    if name in ("fit", "fit-scorer"):
        assert {"lock", "mkdir", "remove", "unlink"} <= kinds, ops     # the run folder's own steps
    if name == "fit-overwrite":
        assert "exchange" in kinds, ops                                # the old run swapped out in one step
    let_pass = []
    for i, (op, path) in enumerate(ops, 1):
        for mode in ("kill", "enospc"):
            d = case(world, tmp_path / f"{mode}{i}")
            where, passed = faulted(args, d, mode, i, op, path)
            if passed:
                let_pass.append((op, path))
            check_intact_or_complete(name, world, d)
            again = run(after, d)
            assert again.code == 0, (where, again.stderr)
            check_recovered(name, world, d)
            shutil.rmtree(d)
    # only a failure nothing depends on is let pass: the lock file's owner note and its removal
    assert all(Path(path).name.endswith(".lock") for _, path in let_pass), let_pass



# --- item runs: the writes only they make (items.json, items.csv, lists.csv), generate and score ----
ITEM = ["--slots", "left,middle,right", "--item-id", "id", "--context", "user", "--score", "y"]
ITEM_FIT = ["fit", "log.csv", *ITEM, "--items", "items.csv", "--lists", "lists.csv", "--list-id", "list",
            "--seed", "1", "--scorer-epochs", "1", "--steps", "2"]
ITEM_FILES = ("items.json", "items.csv", "lists.csv", "generator.safetensors", "scorer.safetensors")
ITEM_COMMANDS = {
    "item-fit": (ITEM_FIT + ["--out", "new"], ITEM_FIT + ["--out", "new", "--resume"]),
    "item-generate": (["generate", "irun", "--top-k", "2", "--out", "c.csv"],) * 2,
    "item-score": (["score", "irun", "c.csv", "--out", "s.csv"],) * 2,
}


@pytest.fixture(scope="module")
def item_world(tmp_path_factory) -> Path:
    """log.csv, items.csv, lists.csv (2 users, 2 lists of 6 items each), a finished item run (irun/),
    its slates (c.csv) and their scores (s.csv), and the uninterrupted fit (ref-item-fit/new)."""
    import numpy as np

    base = tmp_path_factory.mktemp("item_world")
    rng = np.random.default_rng(0)
    ids = [f"i{j}" for j in range(12)]
    pd.DataFrame({"id": ids, "price": rng.uniform(0, 9, 12).round(2), "type": list("ab") * 6}).to_csv(
        base / "items.csv", index=False)
    log = pd.DataFrame({"user": rng.choice(["ann", "bob"], 60)})
    for slot in ("left", "middle", "right"):
        log[slot] = rng.choice(ids, 60)
    log["y"] = rng.normal(size=60).round(3)
    log.to_csv(base / "log.csv", index=False)
    lists = [(u, f"L{u}{k}", i) for u in ("ann", "bob") for k in range(2) for i in rng.choice(ids, 6, replace=False)]
    pd.DataFrame(lists, columns=["user", "list", "id"]).to_csv(base / "lists.csv", index=False)
    for args in (ITEM_FIT + ["--out", "irun"], ["generate", "irun", "--top-k", "2", "--out", "c.csv"],
                 ["score", "irun", "c.csv", "--out", "s.csv"]):
        done = run(args, base)
        assert done.code == 0, done.stderr
    ref = base / "ref-item-fit"
    shutil.copytree(base, ref, ignore=shutil.ignore_patterns("ref-*"))
    done = run(ITEM_COMMANDS["item-fit"][0], ref)
    assert done.code == 0, done.stderr
    return base


@pytest.mark.parametrize("name", list(ITEM_COMMANDS))
def test_item_run_writes_killed_or_failing(item_world, tmp_path, name):
    """As above, for what item runs add: a fit's writes of items.json, items.csv and lists.csv and its
    move into place (the rest of its operations are a table run's, faulted above), and every operation
    of generate and score on an item run."""
    args, after = ITEM_COMMANDS[name]
    ops = list(enumerate(operations(args, case(item_world, tmp_path / "count")), 1))
    if name == "item-fit":
        ops = [(i, (op, path)) for i, (op, path) in ops
               if Path(path).name.startswith((".items.", "items.", ".lists.", "lists.")) or path == "new"]
        assert len(ops) >= 7, ops
    out = {"item-fit": "new", "item-generate": "c.csv", "item-score": "s.csv"}[name]
    for i, (op, path) in ops:
        for mode in ("kill", "enospc"):
            d = case(item_world, tmp_path / f"{mode}{i}")
            where, passed = faulted(args, d, mode, i, op, path)
            assert not passed, (where, "a failed write went unnoticed")
            if name == "item-fit":       # no run, or a complete one; never a part of one
                verify_run(d / "new")
                assert not (d / "new").exists() or len(Run.load(d / "new").generate(k=1, decoder="argmax")) == 4
            else:                        # the earlier output as it was, or the complete new one
                assert (d / out).read_bytes() == (item_world / out).read_bytes() or len(pd.read_csv(d / out)) == 8
            again = run(after, d)
            assert again.code == 0, (where, again.stderr)
            if name == "item-fit":
                assert digest(d / "new", ITEM_FILES) == digest(item_world / "ref-item-fit" / "new", ITEM_FILES)
            assert (d / out).exists()
            litter = sorted(p.name for p in d.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))
            assert litter == [], (where, litter)
            shutil.rmtree(d)
