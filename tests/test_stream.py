"""Streamed Parquet tables (choicegrad.data.stream): a multi-file dataset read in batches smaller than
the table, the same space and encoders as reading it whole, every training row once per epoch across
ranks and workers, fits that match an in-memory fit, a resume after a kill, and clear errors."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from choicegrad.bench.tasks import PottsTask
from choicegrad.data import stream as stream_mod
from choicegrad.data.stream import TRAIN, VALIDATION, scan_parquet, split_of
from choicegrad.data.table import load_table
from choicegrad.scorer.fit import ScorerFit, fit_scorer, fit_scorer_stream


def _frame(n=3000, seed=1) -> pd.DataFrame:
    frame = PottsTask(slots=4, vocab=4, contexts=3, seed=0).table(n=n, seed=seed)
    frame["pos"] = np.arange(n, dtype=np.float64)             # numeric context: names each row
    frame["code"] = pd.array(np.arange(n) % 5, dtype="Int64")   # an integer feature with gaps
    frame.loc[frame.index % 7 == 0, "code"] = pd.NA
    return frame


def _folder(tmp_path, frame: pd.DataFrame):
    """The frame as a folder: 3 files (one .pq, one in a sub-folder; in the frame's order by path), of
    several row groups (sizes 300, 1000, 170), a _SUCCESS marker and a README that are not Parquet."""
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    n = len(frame)
    pq.write_table(table.slice(0, n // 3), folder / "a.parquet", row_group_size=300)
    pq.write_table(table.slice(n // 3, n // 3), folder / "b.pq", row_group_size=1000)
    pq.write_table(table.slice(2 * (n // 3)), folder / "sub" / "c.parquet", row_group_size=170)
    (folder / "_SUCCESS").write_text("")
    (folder / "README.md").write_text("not a table")
    return folder


@pytest.fixture
def small_budget(monkeypatch):
    """Read 64 rows at a time and mix 256: the table is many times the batch budget."""
    monkeypatch.setattr(stream_mod, "STREAM_BATCH", 64)
    monkeypatch.setattr(stream_mod, "SHUFFLE_ROWS", 256)
    seen = []
    read = stream_mod._read_unit

    def recording(unit, columns):
        for first, record in read(unit, columns):
            seen.append(record.num_rows)
            yield first, record

    monkeypatch.setattr(stream_mod, "_read_unit", recording)
    return seen


SPEC = dict(features="s?,code", score="y", context="ctx,pos")


def test_a_streamed_folder_gives_the_space_and_encoders_of_the_whole_table(tmp_path, small_budget):
    frame = _frame()
    table = scan_parquet(_folder(tmp_path, frame), **SPEC, seed=5, progress=False)
    whole = load_table(frame, SPEC["features"], "y", SPEC["context"])
    assert max(small_budget) <= 64 and sum(small_budget) == len(frame)       # read in batches, each row once
    assert table.space == whole.space
    for a, b in zip(table.context.columns, whole.context.columns, strict=True):     # running sums: float rounding
        assert (a.name, a.kind, a.categories, a.min, a.max) == (b.name, b.kind, b.categories, b.min, b.max)
        assert (a.mean, a.std) == pytest.approx((b.mean, b.std), rel=1e-12) if a.kind == "numeric" else True
    assert len(table) == len(frame) and len(table.units) == 4 + 1 + 6
    # the held-out rows are those the hash puts there, encoded as the whole table encodes them
    split = split_of(np.arange(len(frame)), 5, table.val_cut, table.test_cut)
    val = np.sort(table.validation.ctx_num[:, 0].numpy() * table.context.numeric[0].std + table.context.numeric[0].mean)
    assert np.allclose(val, np.flatnonzero(split == VALIDATION), atol=1e-3)
    at = torch.as_tensor(np.flatnonzero(split == VALIDATION))
    order = torch.as_tensor(np.argsort(table.validation.frame["pos"].to_numpy()))
    assert torch.equal(table.validation.rows[order], whole.rows[at])
    assert table.train_rows == int((split == TRAIN).sum()) == sum(u.split_rows[TRAIN] for u in table.units)
    train_y = whole.y.numpy()[split == TRAIN]
    assert table.y_mean == pytest.approx(train_y.mean()) and table.y_std == pytest.approx(train_y.std(ddof=1))


def test_the_scan_samples_training_rows_uniformly_for_the_generator(tmp_path, small_budget):
    frame = _frame()
    folder = _folder(tmp_path, frame)
    table = scan_parquet(folder, **SPEC, seed=5, sample_rows=600, progress=False)
    split = split_of(np.arange(len(frame)), 5, table.val_cut, table.test_cut)
    pos = table.context.numeric[0]
    at = np.rint(table.sample.ctx_num[:, 0].numpy().astype(np.float64) * pos.std + pos.mean).astype(np.int64)
    assert (split[at] == TRAIN).all() and len(set(at)) == len(at)                # training rows, each once
    assert abs(len(at) - 600) < 4 * np.sqrt(600)                                 # a binomial count about 600
    assert np.array_equal(np.sort(at), np.sort(table.sample.frame["pos"].to_numpy().astype(np.int64)))
    assert list(table.sample.frame.columns) == ["ctx", "pos"]                    # context columns only
    assert torch.equal(table.sample.rows, load_table(frame, SPEC["features"], "y", SPEC["context"]).rows[at])
    everything = scan_parquet(folder, **SPEC, seed=5, sample_rows=10**6, progress=False)
    assert len(everything.sample) == everything.train_rows                      # a small table: all its training rows
    assert scan_parquet(folder, **SPEC, seed=5, progress=False).sample is None   # fit-scorer asks for none


def test_fit_streams_a_folder_and_trains_the_generator_on_the_scans_sample(tmp_path, monkeypatch):
    from choicegrad import run as run_mod
    from choicegrad.run import Run, TableSpec
    from choicegrad.training.loop import GeneratorFit

    monkeypatch.setattr(run_mod, "GENERATOR_ROWS", 500)
    folder = _folder(tmp_path, _frame())
    lines = []
    fitted = Run.fit(folder, tmp_path / "run", TableSpec(features=["s?,code"], score="y", context=["ctx"]),
                     generator="factorized", scorer_fit=ScorerFit(epochs=3, seed=1),
                     generator_fit=GeneratorFit(method="st-gumbel", steps=40, seed=1), echo=lines.append, progress=False,
                     force_generator=True)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["streamed"] and config["rows"] == 3000 and abs(config["generator_rows"] - 500) < 100
    assert json.loads((tmp_path / "run" / "run.json").read_text())["request"]["stream"]
    assert sorted(pd.read_csv(tmp_path / "run" / "contexts.csv")["ctx"].astype(str)) == sorted(fitted.scorer.context.columns[0].categories)
    out = fitted.generate(k=4, decoder="sample")
    assert len(out) == 4 * 3 and np.isfinite(out["score"]).all()


def _positions(table, batch) -> np.ndarray:
    pos = table.context.numeric[0]
    return np.rint(batch[2][:, 0].numpy().astype(np.float64) * pos.std + pos.mean).astype(np.int64)


@pytest.mark.parametrize("ranks,workers", [(1, 0), (2, 0), (2, 2)])
def test_an_epoch_streams_every_training_row_once_in_equal_steps_per_rank(tmp_path, small_budget, ranks, workers):
    frame = _frame(1500)
    table = scan_parquet(_folder(tmp_path, frame), **SPEC, progress=False)
    split = split_of(np.arange(len(frame)), 0, table.val_cut, table.test_cut)
    got, steps = [], []
    for rank in range(ranks):
        batches = list(table.batches(epoch=3, batch=100, rank=rank, ranks=ranks, workers=workers))
        steps.append(len(batches))
        assert all(len(b[0]) <= len(torch.arange(100).tensor_split(ranks)[rank]) for b in batches)
        got += [p for b in batches for p in _positions(table, b)]
    assert steps == [table.steps(3, 100, ranks, workers)] * ranks               # no rank waits for another
    assert sorted(got) == list(np.flatnonzero(split == TRAIN))
    y = torch.cat([b[3] for b in table.batches(epoch=3, batch=100, rank=0, ranks=ranks, workers=workers)])
    assert torch.allclose(y, torch.as_tensor(frame["y"].to_numpy()[_positions_all(table, 3, ranks, workers)]).double())


def _positions_all(table, epoch, ranks, workers):
    return np.concatenate([_positions(table, b) for b in table.batches(epoch=epoch, batch=100, rank=0, ranks=ranks,
                                                                          workers=workers)])


def test_epochs_and_ranks_read_the_row_groups_in_different_orders(tmp_path):
    table = scan_parquet(_folder(tmp_path, _frame(1500)), **SPEC, progress=False)
    assert table.readers(0) != table.readers(1)
    a, b = table.readers(0, 0, 2), table.readers(0, 1, 2)
    assert not set(a[0]) & set(b[0]) and sorted(a[0] + b[0]) == list(range(len(table.units)))


def test_a_streamed_fit_matches_an_in_memory_fit(tmp_path):
    frame = _frame()
    table = scan_parquet(_folder(tmp_path, frame), **SPEC, progress=False)
    fit = ScorerFit(epochs=6, batch_size=128, seed=2)
    streamed = fit_scorer_stream(table, fit, progress=False)
    whole = fit_scorer(load_table(frame, SPEC["features"], "y", SPEC["context"]), fit, progress=False)
    assert streamed.metrics["test"]["n"] == len(table.test)
    assert streamed.metrics["test"]["r2"] > 0.5
    assert abs(streamed.metrics["test"]["r2"] - whole.metrics["test"]["r2"]) < 0.1


def _cli(*args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "choicegrad", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)


FIT_ARGS = ["--features", "s?,code", "--score", "y", "--context", "ctx,pos", "--epochs", "3", "--batch-size", "97",
            "--seed", "4"]


def test_a_killed_streamed_fit_resumes_to_the_uninterrupted_result(tmp_path):
    from safetensors.torch import load_file

    folder = _folder(tmp_path, _frame(2000))
    killed = _cli("fit-scorer", folder, *FIT_ARGS, "--checkpoint-minutes", "0", "--out", tmp_path / "run", cwd=tmp_path,
                  CHOICEGRAD_FAILPOINTS="scorer=20",   # mid second epoch
                  OMP_NUM_THREADS="1")                 # as this process (conftest): sums in the same order
    assert killed.returncode != 0 and not (tmp_path / "run").exists()
    from choicegrad.run import TableSpec, fit_scorer_run            # as the CLI calls it, in this process
    from choicegrad.scorer.model import ScorerConfig

    spec = TableSpec(features=["s?,code"], context=["ctx,pos"], score="y")
    fit = ScorerFit(model=ScorerConfig(pairwise=None), epochs=3, batch_size=97, seed=4)
    for out, resume in (("run", True), ("whole", False)):
        fit_scorer_run(folder, tmp_path / out, spec, fit, resume=resume, checkpoint_minutes=0, echo=lambda m: None,
                       progress=False)
    a, b = load_file(str(tmp_path / "run" / "scorer.safetensors")), load_file(str(tmp_path / "whole" / "scorer.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    doc = json.loads((tmp_path / "run" / "scorer_metrics.json").read_text())
    assert doc["streamed"] and doc["rows"] == 2000


def test_streamed_inputs_that_cannot_work_are_refused_before_any_folder(tmp_path, runner):
    from choicegrad.cli import app

    frame = _frame(600)
    _folder(tmp_path, frame)                                     # tmp_path / "data"
    bad = frame.copy()
    bad.loc[17, "y"] = np.nan
    (tmp_path / "bad").mkdir()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "bad" / "a.parquet")
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), tmp_path / "bad" / "b.parquet")
    typed = frame.copy()
    typed["ctx"] = typed["ctx"].astype(str) + "x"
    (tmp_path / "typed").mkdir()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "typed" / "a.parquet")
    pq.write_table(pa.Table.from_pandas(typed.assign(y=typed["y"].astype(str)), preserve_index=False),
                   tmp_path / "typed" / "b.parquet")
    frame.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "a.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "space.json").write_text(json.dumps({"s0": ["0", "1"]}))
    cases = [
        (["bad"], ["b.parquet", "row 18", "score"]),
        (["typed"], ["b.parquet", "y"]),
        (["t.csv", "--stream"], ["CSV", "leave out --stream"]),
        (["empty"], ["no .parquet"]),
        (["corrupt"], ["a.parquet", "cannot read as Parquet"]),
        (["missing"], ["not found"]),
        (["data", "--train-quantile", "0.5"], ["--train-quantile"]),
        (["data", "--space", tmp_path / "space.json"], ['column "s0"', "unknown categor"]),
        (["data", "--features", "nope"], ['"nope" not found']),
    ]
    for (args, words), command in itertools.product(cases, ("fit-scorer", "fit")):
        extra = [] if "--features" in args else ["--features", "s?,code"]
        done = runner.invoke(app, [command, str(tmp_path / args[0]), *map(str, args[1:]), *extra, "--score", "y",
                                   "--context", "ctx,pos", "--out", str(tmp_path / "run")])
        assert done.exit_code == 2, (args, done.output)
        assert all(w in done.output for w in words), (args, done.output)
        assert "Traceback" not in done.output
        assert not [p for p in tmp_path.iterdir() if "run" in p.name], args     # nothing half-written


def test_torchrun_streams_each_ranks_row_groups_and_writes_one_run(tmp_path):
    """2 ranks whose row groups hold different numbers of rows (one rank runs out first and takes
    empty batches): no hang, one run written by rank 0, a scorer as good as one process's."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = _folder(tmp_path, _frame(2000))

    def torchrun():
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                               f"--master-port={port}", "-m", "choicegrad", "fit-scorer", str(folder), *FIT_ARGS,
                               "--out", "run"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    done = torchrun()
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote run/scorer.safetensors") == 1               # rank 0 alone logs
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"scorer.safetensors", "run.json", "scorer_metrics.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]    # no partial folder or lock left
    doc = json.loads((tmp_path / "run" / "scorer_metrics.json").read_text())
    assert doc["streamed"] and doc["metrics"]["test"]["r2"] > 0.3
    again = torchrun()                                                          # refused on every rank, no hang
    assert again.returncode != 0 and again.stderr.count("already holds a run") == 1
