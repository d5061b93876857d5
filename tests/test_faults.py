"""Faults, as a user meets them, in real processes: kill -9 during each training phase (scorer, warm
start, generator) then --resume reaches the same files as an uninterrupted run; two fits into one
folder (the second refused); SIGINT/SIGTERM save and say how to resume; an interrupted overwrite
leaves the old run intact. A kill or a full disk at every disk operation: test_fault_injection.py."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from choicegrad.bench.tasks import PottsTask
from choicegrad.run import Run

FIT = ["--force-generator", "--features", "s?", "--score", "y", "--context", "ctx", "--seed", "1", "--steps", "30",
       "--scorer-epochs", "3"]
MODEL_FILES = ("scorer.safetensors", "scorer.json", "generator.safetensors", "generator.json", "contexts.csv")


def cli(*args, failpoints: str = "", wait: bool = True):
    env = {**os.environ, "CHOICEGRAD_FAILPOINTS": failpoints}
    cmd = [sys.executable, "-m", "choicegrad", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def digest(folder, names=MODEL_FILES):
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "table.csv"
    PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=300, seed=1).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def reference(table):
    out = table.parent / "reference"
    res = cli("fit", table, *FIT, "--out", out)
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.parametrize("failpoint", ["scorer=4", "warm=60", "generator=17"])
def test_kill_then_resume_reaches_the_uninterrupted_run(table, reference, tmp_path, failpoint):
    out = tmp_path / "run"
    killed = cli("fit", table, *FIT, "--out", out, "--checkpoint-minutes", "0", failpoints=failpoint)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path / ".run.partial" / ".checkpoint").is_dir()
    if failpoint.startswith("scorer"):
        again = cli("fit", table, *FIT, "--out", out)
        assert again.returncode == 2 and "--resume" in again.stderr      # an interrupted run is not overwritten
    resumed = cli("fit", table, *FIT, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert digest(out) == digest(reference)                              # bit-identical on CPU
    metrics = [pd.read_csv(f / "metrics.csv").drop(columns="seconds") for f in (out, reference)]
    pd.testing.assert_frame_equal(*metrics)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]         # no partial, lock or checkpoint left
    Run.load(out)


def start_long_fit(table, out):
    """A fit that runs until stopped, once its first checkpoint is written (signals are handled by then)."""
    proc = cli("fit", table, *FIT[:-4], "--steps", "100000", "--out", out, "--checkpoint-minutes", "0", wait=False)
    checkpoint = out.parent / f".{out.name}.partial" / ".checkpoint"
    for _ in range(600):
        if checkpoint.is_dir() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    return proc


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_second_writer_refused_and_signal_saves(table, tmp_path, signum):
    out = tmp_path / "run"
    proc = start_long_fit(table, out)
    try:
        second = cli("fit", table, *FIT, "--out", out, "--overwrite")
        assert second.returncode == 2
        assert f"being written by another choicegrad process (pid {proc.pid} on host" in second.stderr
    finally:
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    assert f"interrupted by {name}: checkpoint of the" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    assert (tmp_path / ".run.partial" / ".checkpoint").is_dir() and not out.exists()


def test_interrupted_overwrite_leaves_the_old_run(table, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = digest(out)
    killed = cli("fit", table, *FIT, "--seed", "2", "--out", out, "--overwrite", "--checkpoint-minutes", "0",
                 failpoints="generator=5")
    assert killed.returncode == -signal.SIGKILL
    assert digest(out) == before
    gen = cli("generate", out, "--out", tmp_path / "c.csv", "--top-k", "2")
    assert gen.returncode == 0, gen.stderr                                # the old run still works
    resumed = cli("fit", table, *FIT, "--seed", "2", "--out", out, "--overwrite", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert digest(out) != before and Run.load(out).config["generator_fit"]["seed"] == 2
