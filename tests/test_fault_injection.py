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
            done = run(args, d, faults=f"{mode}@{i}")
            where = f"{mode} at operation {i} ({op} {path})"
            assert "Traceback" not in done.stderr, (where, done.stderr)
            if mode == "kill":
                assert done.code == -9, (where, done.code, done.stderr)
            elif done.code != 0:
                assert done.code == 2 and "No space left on device (ENOSPC)" in done.stderr, (where, done.stderr)
            else:
                let_pass.append((op, path))
            check_intact_or_complete(name, world, d)
            again = run(after, d)
            assert again.code == 0, (where, again.stderr)
            check_recovered(name, world, d)
            shutil.rmtree(d)
    # only a failure nothing depends on is let pass: the lock file's owner note and its removal
    assert all(Path(path).name.endswith(".lock") for _, path in let_pass), let_pass

