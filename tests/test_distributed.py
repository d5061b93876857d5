"""Data-parallel training on 2 CPU ranks (gloo): the ranks agree, equal one process at the same global
batch, and only rank 0 writes the run folder; the scorer, and the generator for every estimator and
both table forms. Ranks are started by torch's elastic launcher (what torchrun runs) and by torchrun
itself."""

import copy
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
from choicegrad.estimators import available, get_class
from choicegrad.estimators.shard import BatchShard
from choicegrad.generators import GeneratorConfig, build
from choicegrad.generators.context import TableContext
from choicegrad.scorer.aligner import Aligner, AlignerFit, fit_aligner
from choicegrad.scorer.fit import ScorerFit, fit_scorer
from choicegrad.scorer.model import Scorer
from choicegrad.training.loop import GeneratorFit, fit_table_generator

# 1,600 training rows in global batches of 123: the last batch holds 1 row, so one rank's share is
# empty (it still joins every all-reduce), and the other batches split 62 / 61.
FIT = dict(epochs=3, batch_size=123, seed=3, patience=10)


def _table(path, n: int = 2000):
    PottsTask(slots=4, vocab=4, contexts=3, seed=0).table(n=n, seed=1).to_csv(path, index=False)
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


def _launch(fn, *args) -> dict:
    """fn(*args) on 2 ranks started by the elastic launcher: -> {rank: its return value}."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0,
                          monitor_interval=0.05)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)}
    try:
        return elastic_launch(config, fn)(*args)
    finally:                                # the launcher's agent installs its own handlers here
        for s, h in handlers.items():
            signal.signal(s, h)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_agree_and_equal_one_process_at_the_same_global_batch(tmp_path):
    path = str(_table(tmp_path / "t.csv"))
    states = _launch(_rank_fit, path)
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


def test_other_commands_refuse_to_run_under_torchrun(tmp_path, runner):
    from choicegrad.cli import app

    args = ["score", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c.csv")]
    done = runner.invoke(app, args, env={"WORLD_SIZE": "2", "RANK": "1"})
    assert done.exit_code == 2 and done.output == ""                            # rank 1 stays quiet
    done = runner.invoke(app, args, env={"WORLD_SIZE": "2", "RANK": "0"})
    assert done.exit_code == 2 and "does not run under torchrun" in done.output


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


# --- the generator -------------------------------------------------------------------------------
# Batch-wide statistics besides the defaults: reinforce's "mean" baseline, weighted-ce's rank weights.
VARIANTS = {"reinforce": [{}, {"baseline": "mean"}], "weighted-ce": [{}, {"weighting": "rank"}]}
# 5 contexts per step split 3 / 2; 7 warm-start rows 4 / 3; amortised search (distill) is on by default.
GEN_FIT = dict(steps=3, batch_size=5, samples=4, warm_start_steps=2, warm_start_batch=7, val_every=2, val_samples=8,
               log_every=1, seed=0, patience=None)


def _generator_fits(folder: str) -> dict:
    """A tiny generator fit for every estimator (and VARIANTS) x table form, on the scorer (and
    aligner) saved in `folder`: -> {name: (state dict, scorer calls, history without timings)}."""
    scorer = Scorer.load(folder)
    aligner = Aligner.load(folder, copy.deepcopy(scorer))
    data = load_table(os.path.join(folder, "t.csv"), "s?", "y", "ctx")
    out = {}
    for method in available():
        for options in VARIANTS.get(method, [{}]):
            for kind in ("factorized", "autoregressive"):
                fit = GeneratorFit(method=method, method_options=options, **GEN_FIT)
                res = fit_table_generator(scorer, data, GeneratorConfig(kind=kind, hidden=[16]), fit, progress=False,
                                          aligner=aligner if get_class(method).needs_aligner else None)
                history = [{k: v for k, v in row.items() if k != "seconds"} for row in res.history]
                out[f"{method} {options} {kind}"] = ({k: v.clone() for k, v in res.generator.state_dict().items()},
                                                     res.scorer_calls, history)
    return out


def _rank_generator_fits(folder: str) -> dict:
    torch.set_num_threads(1)
    from choicegrad import distributed

    world, _ = distributed.join("cpu")
    assert world.size == 2
    try:
        return _generator_fits(folder)
    finally:
        distributed.leave()


def test_generator_fits_on_two_ranks_equal_one_process_for_every_estimator_and_form(tmp_path):
    PottsTask(slots=4, vocab=4, contexts=3, seed=0).table(n=600, seed=1).to_csv(tmp_path / "t.csv", index=False)
    data = load_table(tmp_path / "t.csv", "s?", "y", "ctx")
    scorer = fit_scorer(data, ScorerFit(epochs=2, seed=0), progress=False).scorer
    scorer.save(tmp_path)
    fit_aligner(scorer, data, AlignerFit(steps=3, seed=0), progress=False).aligner.save(tmp_path)
    ranks = _launch(_rank_generator_fits, str(tmp_path))
    one = _generator_fits(str(tmp_path))
    assert set(ranks) == {0, 1} and set(ranks[0]) == set(one)
    assert any(k.startswith("trajectory-balance") for k in one)     # its learned log Z is summed over ranks too
    for name, (state, calls, history) in one.items():
        for key, value in state.items():
            assert torch.equal(ranks[0][name][0][key], ranks[1][name][0][key]), (name, key)   # the ranks agree
            assert torch.allclose(ranks[0][name][0][key], value, atol=1e-5, rtol=1e-4), (name, key)
        assert ranks[0][name][1] == ranks[1][name][1] == calls, name            # every rank's calls, summed
        logged = ranks[0][name][2]                                             # rank 0's metrics: the global batch's
        assert [(r["phase"], r["step"]) for r in logged] == [(r["phase"], r["step"]) for r in history], name
        for mine, theirs in zip(logged, history):
            numbers = [k for k, v in theirs.items() if isinstance(v, float)]
            assert [mine[k] for k in numbers] == pytest.approx([theirs[k] for k in numbers], abs=1e-4), (name, mine)


def test_a_shard_draws_its_rows_of_the_global_draw_and_refuses_another_size():
    from choicegrad.distributed import World
    from choicegrad.estimators.gumbel import conditional_gumbel, uniform

    full = torch.rand((5, 3, 2), generator=torch.Generator().manual_seed(4))
    parts = []
    for rank in range(2):
        shard = BatchShard.of(torch.Generator().manual_seed(4), 5, World(rank, 2))
        assert len(shard) == (3, 2)[rank] and shard.slice == (slice(0, 3), slice(3, 5))[rank]
        parts.append(uniform((len(shard), 3, 2), generator=shard))
        with pytest.raises(ValueError, match="out of step"):
            uniform((5, 3, 2), generator=shard)                   # the global size is not this rank's share
    assert torch.equal(torch.cat(parts), full.clamp(torch.finfo(torch.float32).tiny, 1 - torch.finfo(torch.float32).eps))
    # conditional Gumbels draw (k, B, ...): their batch dimension is the second
    logits, index = torch.randn(5, 4), torch.randint(4, (5,))
    whole = conditional_gumbel(logits, index, 3, generator=torch.Generator().manual_seed(1))
    shard = BatchShard.of(torch.Generator().manual_seed(1), 5, World(1, 2))
    assert torch.equal(conditional_gumbel(logits[3:], index[3:], 3, generator=shard), whole[:, 3:])
    with pytest.raises(TypeError):                               # a draw around `uniform` fails loudly
        torch.rand(3, generator=shard)


@pytest.mark.parametrize("kind", ["factorized", "autoregressive"])
def test_a_shard_samples_the_rows_of_a_draw_made_in_chunks(kind, monkeypatch):
    from choicegrad.distributed import World
    from choicegrad.generators import context

    data = load_table(_table_frame(), "s?", "y", "ctx")
    torch.manual_seed(0)
    gen = build(GeneratorConfig(kind=kind, hidden=[16]), space=data.space, context=data.context)
    ctx = TableContext(data.ctx_cat[:11], data.ctx_num[:11])
    monkeypatch.setattr(context, "DECODE_ROWS", 12)                   # 3 contexts x 4 rows per chunk
    import choicegrad.generators.base as base
    monkeypatch.setattr(base, "DECODE_ELEMENTS", 4 * 3 * 4 * 4)       # factorized: 3 contexts x 4 rows x S x V
    whole = gen.sample(ctx, 4, generator=torch.Generator().manual_seed(2))
    for size in (2, 3):
        parts = []
        for rank in range(size):
            shard = BatchShard.of(torch.Generator().manual_seed(2), len(ctx), World(rank, size))
            parts.append(gen.sample(ctx.index(shard.slice), 4, generator=shard))
        assert torch.equal(torch.cat(parts), whole), size


def _table_frame():
    return PottsTask(slots=4, vocab=4, contexts=3, seed=0).table(n=200, seed=1)


def test_torchrun_fit_killed_in_the_generator_phase_resumes_to_one_run_equal_to_one_process(tmp_path):
    from choicegrad.generators import load

    table = _table(tmp_path / "t.csv", n=400)
    args = ["fit", str(table), "--features", "s?", "--score", "y", "--context", "ctx", "--scorer-epochs", "1",
            "--steps", "4", "--batch-size", "5", "--seed", "3", "--out", "run", "--checkpoint-minutes", "10",
            "--force-generator"]
    # the end of the warm start saves a checkpoint; both ranks are killed at the second training step
    killed = _torchrun(*args, cwd=tmp_path, CHOICEGRAD_FAILPOINTS="generator=2")
    assert killed.returncode != 0 and not (tmp_path / "run").exists()
    assert (tmp_path / ".run.partial" / ".checkpoint" / "generator.json").is_file()
    done = _torchrun(*args, "--resume", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote run/") == 1 and done.stdout.count("scorer: resumed") == 1   # rank 0 alone logs
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"generator.safetensors", "metrics.csv", "config.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]    # no partial folder or lock left
    scorer = Scorer.load(tmp_path / "run")          # the generator phase alone, on the scorer the ranks fitted
    one = fit_table_generator(scorer, load_table(table, "s?", "y", "ctx"), GeneratorConfig(kind="autoregressive"),
                              GeneratorFit(method="reinforce", seed=3, steps=4, batch_size=5), progress=False)
    written = load(tmp_path / "run")[0].state_dict()
    for key, value in one.generator.state_dict().items():
        assert torch.allclose(written[key], value, atol=1e-5, rtol=1e-4), key
    logged = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(logged) == 1 + len(one.history)            # the rows logged before the kill (from the checkpoint) and after


def test_torchrun_fit_refuses_a_batch_of_contexts_smaller_than_the_ranks(tmp_path):
    table = _table(tmp_path / "t.csv", n=100)
    done = _torchrun("fit", str(table), "--features", "s?", "--score", "y", "--context", "ctx", "--batch-size", "1",
                     "--out", "run", cwd=tmp_path)
    assert done.returncode != 0 and "exitcode: 2" in done.stderr                # exit 2 on every rank
    assert done.stderr.count("error: --batch-size") == 1                       # one message, from rank 0
    assert "at least 2 contexts" in done.stderr and not (tmp_path / "run").exists()
