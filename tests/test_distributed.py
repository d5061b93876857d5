"""Data-parallel training on 2 CPU ranks (gloo): the ranks agree, equal one process at the same global
batch, and only rank 0 writes the run folder. Ranks are started by torch's elastic launcher (what
torchrun runs) and by torchrun itself."""

import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest
import torch
from safetensors.torch import load_file

from choicegrad.bench.tasks import PottsTask
from choicegrad.data.table import load_table
from choicegrad.scorer.fit import ScorerFit, fit_scorer

# 1,600 training rows in global batches of 123: the last batch holds 1 row, so one rank's share is
# empty (it still joins every all-reduce), and the other batches split 62 / 61.
FIT = dict(epochs=3, batch_size=123, seed=3, patience=10)


def _table(path):
    PottsTask(slots=4, vocab=4, contexts=3, seed=0).table(n=2000, seed=1).to_csv(path, index=False)
    return path


def _rank_fit(path: str) -> dict:
    """One rank of a data-parallel scorer fit (run by the launcher): -> its parameters."""
    torch.set_num_threads(1)
    from choicegrad import distributed

    world, device = distributed.join("cpu")
    assert world.size == 2
    data = load_table(path, "s?", "y", "ctx")
    state = fit_scorer(data, ScorerFit(**FIT, device=device), progress=False).scorer.state_dict()
    distributed.leave()
    return {k: v.clone() for k, v in state.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_agree_and_equal_one_process_at_the_same_global_batch(tmp_path):
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    path = str(_table(tmp_path / "t.csv"))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0,
                          monitor_interval=0.05)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)}
    try:
        states = elastic_launch(config, _rank_fit)(path)
    finally:                                # the launcher's agent installs its own handlers here
        for s, h in handlers.items():
            signal.signal(s, h)
    one = fit_scorer(load_table(path, "s?", "y", "ctx"), ScorerFit(**FIT), progress=False).scorer.state_dict()
    assert set(states) == {0, 1}
    for name, value in one.items():
        assert torch.equal(states[0][name], states[1][name]), name            # DDP keeps the ranks identical
        assert torch.allclose(states[0][name], value, atol=1e-5, rtol=1e-4), name


def _torchrun(*args, cwd, **env_vars):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_vars}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={_free_port()}",
           "-m", "choicegrad", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_fit_scorer_writes_one_run_from_rank_0(tmp_path):
    table = _table(tmp_path / "t.csv")
    args = ["fit-scorer", str(table), "--features", "s?", "--score", "y", "--context", "ctx", "--epochs", "3",
            "--batch-size", "123", "--seed", "3"]
    done = _torchrun(*args, "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote run/scorer.safetensors") == 1               # rank 0 alone logs
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"scorer.safetensors", "run.json", "scorer_metrics.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]    # no partial folder or lock left
    one = fit_scorer(load_table(table, "s?", "y", "ctx"), ScorerFit(**FIT), progress=False).scorer
    written = load_file(str(tmp_path / "run" / "scorer.safetensors"))
    reference = {k: v for k, v in one.state_dict().items()}
    assert all(torch.allclose(written[k], reference[k], atol=1e-5, rtol=1e-4) for k in written if k in reference)

    again = _torchrun(*args, "--out", "run", cwd=tmp_path)                      # refused on every rank, no hang
    assert again.returncode != 0
    assert again.stderr.count("already holds a run") == 1


def test_torchrun_fit_killed_then_resumed_equals_an_uninterrupted_fit(tmp_path):
    table = _table(tmp_path / "t.csv")
    args = ["fit-scorer", str(table), "--features", "s?", "--score", "y", "--context", "ctx", "--epochs", "3",
            "--batch-size", "123", "--seed", "3", "--out", "run", "--checkpoint-minutes", "0"]
    killed = _torchrun(*args, cwd=tmp_path, CHOICEGRAD_FAILPOINTS="scorer=20")    # mid second epoch, every rank
    assert killed.returncode != 0 and not (tmp_path / "run").exists()
    assert (tmp_path / ".run.partial" / ".checkpoint" / "scorer.json").is_file()
    done = _torchrun(*args, "--resume", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    one = fit_scorer(load_table(table, "s?", "y", "ctx"), ScorerFit(**FIT), progress=False)
    written = load_file(str(tmp_path / "run" / "scorer.safetensors"))
    reference = one.scorer.state_dict()
    assert all(torch.allclose(written[k], reference[k], atol=1e-5, rtol=1e-4) for k in written if k in reference)
    import json

    history = json.loads((tmp_path / "run" / "scorer_metrics.json").read_text())["metrics"]
    assert history["validation"]["r2"] == pytest.approx(one.metrics["validation"]["r2"], abs=1e-4)


def test_other_commands_refuse_to_run_under_torchrun(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1"}
    done = subprocess.run([sys.executable, "-m", "choicegrad", "score", "a", "b", "--out", "c.csv"], env=env,
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == ""                           # rank 1 stays quiet
    done = subprocess.run([sys.executable, "-m", "choicegrad", "score", "a", "b", "--out", "c.csv"],
                          env={**env, "RANK": "0"}, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and "does not run under torchrun" in done.stderr


def test_fit_under_torchrun_is_a_clear_error(tmp_path, monkeypatch):
    from choicegrad.errors import InputError
    from choicegrad.run import Run, TableSpec

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="fit-scorer under torchrun"):
        Run.fit(_table(tmp_path / "t.csv"), tmp_path / "run", TableSpec(features="s?", score="y", context="ctx"))
    assert not (tmp_path / "run").exists()


def test_shards_cover_the_batch_once_and_a_rank_may_get_none():
    from choicegrad.distributed import World

    batch = torch.arange(7)
    parts = [World(rank=r, size=3).shard(batch) for r in range(3)]
    assert torch.equal(torch.cat(parts), batch) and [len(p) for p in parts] == [3, 2, 2]
    assert [len(World(rank=r, size=2).shard(torch.tensor([4]))) for r in range(2)] == [1, 0]
    assert torch.equal(World().shard(batch), batch)


def test_a_reading_rank_never_writes_checkpoints(tmp_path):
    from choicegrad.checkpoints import Checkpointer

    Checkpointer(tmp_path / "c", writer=False).save("scorer", {"x": torch.ones(2)})
    assert not (tmp_path / "c").exists()
    Checkpointer(tmp_path / "c").save("scorer", {"x": torch.ones(2)})
    assert torch.equal(Checkpointer(tmp_path / "c", resume=True, writer=False).load("scorer")["x"], torch.ones(2))
