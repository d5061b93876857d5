"""Issue 27: what a hostile pass found, one test per case. Data lost or silently corrupted, tracebacks,
hangs and memory, and silent or unclear answers: each now exits 2 with a message naming the path,
or simply works. A kill or a full disk at every disk operation: test_fault_injection.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from choicegrad.bench.tasks import PottsTask
from choicegrad.checkpoints import Checkpointer
from choicegrad.data.space import as_labels
from choicegrad.data.stream import scan_parquet
from choicegrad.data.table import load_table
from choicegrad.design import DesignConfig, Designer
from choicegrad.errors import InputError
from choicegrad.io import read_table, read_weights, sha256_file
from choicegrad.run import Run, TableSpec
from choicegrad.runfolder import MANIFEST, RunLock, RunWriter, check_out_path, verify_run
from choicegrad.training.loop import GeneratorFit
from cli_helpers import assert_input_error, run

SPEC = ["--features", "s?", "--score", "y", "--context", "ctx"]
FAST_FIT = ["--steps", "0", "--scorer-epochs", "2", "--seed", "1"]


def table(n: int = 128) -> pd.DataFrame:
    return PottsTask(slots=3, vocab=4, contexts=2, seed=0).table(n=n, seed=1)


@pytest.fixture(scope="module")
def t_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "t.csv"
    table().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fitted(t_csv) -> Path:
    res = run("fit", t_csv, *SPEC, *FAST_FIT, "--out", t_csv.parent / "run")
    assert res.exit_code == 0, res.output
    return t_csv.parent / "run"


# --- data lost or silently corrupted -------------------------------------------------------------
@pytest.mark.parametrize("command", ["fit", "fit-scorer"])
def test_overwrite_replaces_only_a_run(t_csv, fitted, tmp_path, command):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "f").write_text("x")
    args = FAST_FIT if command == "fit" else ["--epochs", "2"]
    res = run(command, t_csv, *SPEC, *args, "--out", d, "--overwrite")
    assert_input_error(res, "is not a choicegrad run folder", "nothing in it was touched")
    assert (d / "f").read_text() == "x" and (d / "sub").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    shutil.copytree(fitted, tmp_path / "run")
    res = run(command, t_csv, *SPEC, *args, "--out", tmp_path / "run", "--overwrite")   # a run is replaced
    assert res.exit_code == 0, res.output
    assert verify_run(tmp_path / "run")["request"]["command"] == command


def test_a_sealed_run_is_never_lost_to_a_kill_before_its_rename(tmp_path):
    """The kill the hostile pass made with strace (after run.json, before the rename): the next
    writer, and a reader, find the finished run."""
    request = {"command": "fit", "data": "t.csv"}
    for reader in (False, True):
        out = tmp_path / f"run{int(reader)}"
        w = RunWriter(out, request)
        w.__enter__()
        (w.dir / "scorer.json").write_text("done")
        (w.dir / ".checkpoint").mkdir()
        manifest = {"run_id": "abc", "files": {"scorer.json": sha256_file(w.dir / "scorer.json")}, "request": request,
                    "replaces": None}
        (w.dir / MANIFEST).write_text(json.dumps(manifest))       # sealed; then killed: no rename, lock dropped
        w.lock.release()
        if reader:
            assert verify_run(out)["run_id"] == "abc"
        else:
            with RunWriter(out, request, resume=True) as again:
                assert again.finished
        assert (out / "scorer.json").read_text() == "done"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}")) == []


def test_propose_holds_the_state_lock_for_the_whole_round(t_csv, tmp_path, monkeypatch):
    state = tmp_path / "state"
    held = []
    ask = Designer.ask

    def probing_ask(self, *args, **kwargs):
        with pytest.raises(InputError, match="being written by another"):
            RunLock(state, "--state").acquire()                 # a second round now: refused
        held.append(True)
        return ask(self, *args, **kwargs)

    monkeypatch.setattr(Designer, "ask", probing_ask)
    res = run("propose", t_csv, *SPEC, "--batch", "2", "--ensemble", "2", "--max-minutes", "0.02", "--state", state,
              "--out", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    assert held == [True] and verify_run(state) is not None


def _interrupted_fit(t_csv: Path, out: Path, monkeypatch) -> Path:
    """A fit stopped in its generator phase after a checkpoint: its partial folder."""
    calls = {"n": 0}
    tick = Checkpointer.tick

    def stop_later(self, name):
        if name == "generator":
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return tick(self, name)

    monkeypatch.setattr(Checkpointer, "tick", stop_later)
    with pytest.raises(KeyboardInterrupt):
        Run.fit(t_csv, out, TableSpec(features="s?", score="y", context="ctx"), generator_fit=GeneratorFit(
            steps=20, warm_start_steps=4), checkpoint_minutes=0, progress=False, echo=lambda m: None,
            force_generator=True)
    monkeypatch.setattr(Checkpointer, "tick", tick)
    partial = out.parent / f".{out.name}.partial"
    assert (partial / ".checkpoint" / "generator.json").is_file()
    return partial


def _rewrite_checkpoint(partial: Path, change) -> None:
    """Change the saved generator state's tensors with `change` and record their new digest, so that
    only the change itself is wrong."""
    from safetensors.torch import load_file, save_file

    from choicegrad.checkpoints import _canonical

    doc_path = partial / ".checkpoint" / "generator.json"
    doc = json.loads(doc_path.read_text())
    weights = partial / ".checkpoint" / doc["weights"]
    tensors = load_file(str(weights))
    change(tensors, doc)
    save_file(tensors, str(weights))
    doc["digest"] = hashlib.sha256(weights.read_bytes() + _canonical(doc["state"])).hexdigest()
    doc_path.write_text(json.dumps(doc))


def test_nan_in_a_checkpoint_is_refused_before_any_training(t_csv, tmp_path, monkeypatch):
    out = tmp_path / "run"
    partial = _interrupted_fit(t_csv, out, monkeypatch)

    def poison(tensors, doc):
        key = doc["state"]["gen"][next(iter(doc["state"]["gen"]))]["__tensor__"]
        tensors[key].view(-1)[0] = float("nan")

    _rewrite_checkpoint(partial, poison)
    trained = []
    monkeypatch.setattr("choicegrad.training.loop.TrainingStep.__call__", lambda *a, **k: trained.append(1))
    with pytest.raises(InputError, match="hold.? NaN"):
        Run.fit(t_csv, out, TableSpec(features="s?", score="y", context="ctx"), generator_fit=GeneratorFit(
            steps=20, warm_start_steps=4), checkpoint_minutes=0, resume=True, progress=False, echo=lambda m: None,
            force_generator=True)
    assert not trained and not out.exists() and partial.is_dir()


def test_a_checkpoint_names_only_its_own_weights_file(tmp_path):
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"precious")
    ckpt = Checkpointer(tmp_path / "run" / ".checkpoint", 0, resume=True)
    ckpt.save("generator", {"w": torch.ones(2)})
    doc = json.loads((ckpt.root / "generator.json").read_text())
    doc["weights"] = "../../victim.safetensors"
    (ckpt.root / "generator.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="not one of its own"):
        ckpt.load("generator")
    ckpt.save("generator", {"w": torch.zeros(2)})               # the next save deletes only its own old file
    assert victim.read_bytes() == b"precious"
    assert torch.equal(ckpt.load("generator")["w"], torch.zeros(2))


def test_na_strings_are_labels_and_only_an_empty_cell_is_missing(tmp_path):
    frame = table(64)
    frame["s0"] = np.array(["NA", "None", "n/a", "null"] * 16, dtype=object)
    frame.loc[3, "s0"] = None
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = load_table(tmp_path / "t.csv", "s?", "y", "ctx")
    assert data.space.slots[0].categories == ["NA", "None", "n/a", "null"]
    assert int(data.rows[3, 0]) == -1 and (data.rows[:, 0] >= 0).sum() == 63


def test_nested_parquet_columns_are_refused(tmp_path):
    frame = table(32)
    frame["s1"] = [np.zeros(3, dtype=np.int64)] * 32
    frame["s2"] = [{"a": 1}] * 32
    frame.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError, match='column "s1" holds lists or records'):
        load_table(tmp_path / "t.parquet", "s?", "y", "ctx")
    (tmp_path / "logs").mkdir()
    frame.to_parquet(tmp_path / "logs" / "a.parquet")
    with pytest.raises(InputError, match='column "s1" holds lists or records'):
        scan_parquet(tmp_path / "logs", "s?", "y", "ctx")


# --- tracebacks, now exit 2 (disk full: test_fault_injection.py) -----------------------------------
def test_deeply_nested_or_huge_json_is_refused(fitted, tmp_path):
    run_dir = shutil.copytree(fitted, tmp_path / "run")
    (run_dir / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="unreadable run manifest"):
        verify_run(run_dir)
    (run_dir / MANIFEST).write_text('{"run_id": "x", "files": {}, "n": 1e400}')
    with pytest.raises(InputError, match="beyond a float64"):
        verify_run(run_dir)
    (run_dir / MANIFEST).write_text('{"run_id": "x", "files": {"../../etc/passwd": "0"}}')
    with pytest.raises(InputError, match="not a file name in the folder"):
        verify_run(run_dir)


@pytest.mark.parametrize("rounds, problem", [('"abc"', "rounds"), ("1e400", "beyond a float64"), ("-5", "rounds"),
                                             ("null", "rounds")])
def test_hostile_designer_state_values(tmp_path, rounds, problem):
    frame = table(120)
    d = Designer("s?", "y", "ctx", config=DesignConfig(ensemble=2, max_minutes=0.02, generator_steps=5))
    d.tell(frame)
    d.ask(2)
    d.save(tmp_path / "state")
    path = tmp_path / "state" / "designer.json"
    text = path.read_text()
    doc = json.loads(text)
    path.write_text(text.replace(f'"rounds": {doc["rounds"]}', f'"rounds": {rounds}'))
    with pytest.raises(InputError, match="does not belong to run"):          # a changed file: refused by its hash
        Designer.load(tmp_path / "state")
    manifest = json.loads((tmp_path / "state" / MANIFEST).read_text())
    manifest["files"]["designer.json"] = sha256_file(path)                  # even with the hash made to match
    (tmp_path / "state" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=problem) as err:
        Designer.load(tmp_path / "state")
    assert "--seed" not in str(err.value)
    doc["spec"] = None
    path.write_text(json.dumps(doc))
    manifest["files"]["designer.json"] = sha256_file(path)
    (tmp_path / "state" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="spec"):
        Designer.load(tmp_path / "state")


def test_a_csv_header_over_128_kib(tmp_path):
    frame = table(32)
    frame.insert(0, "x" * 200_000, 1)
    frame.to_csv(tmp_path / "wide.csv", index=False)
    assert len(load_table(tmp_path / "wide.csv", "s?", "y", "ctx")) == 32


@pytest.mark.parametrize("out", [".", "..", "/", "x/.."])
def test_out_paths_that_cannot_be_a_run_folder(t_csv, tmp_path, out, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    started = time.perf_counter()
    res = run("fit", t_csv, *SPEC, *FAST_FIT, "--out", out, "--overwrite")
    assert_input_error(res, "does not end in a folder name")
    assert time.perf_counter() - started < 5 and sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_a_mount_point_or_the_current_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "mnt").mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p).name == "mnt")
    with pytest.raises(InputError, match="mount point"):
        check_out_path(tmp_path / "mnt")
    monkeypatch.chdir(tmp_path / "mnt")
    with pytest.raises(InputError, match="current folder or one above it"):
        check_out_path(tmp_path)


# --- hangs and memory ------------------------------------------------------------------------------
def test_a_header_claiming_a_gigabyte_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "scorer.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", 1 << 30))
        fh.truncate(8 + (1 << 30))                    # sparse: takes no disk
    started = time.perf_counter()
    with pytest.raises(InputError, match="header claims 1,073,741,824 bytes"):
        read_weights(path)
    assert time.perf_counter() - started < 1


def test_tensors_bigger_than_memory_or_the_model_are_refused_before_reading(tmp_path, monkeypatch):
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 31], "data_offsets": [0, 1 << 33]}}).encode()
    path = tmp_path / "w.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(8 + len(header) + (1 << 33))      # 8 GB claimed, none on disk
    with pytest.raises(InputError, match=r"tensor w has shape \[2147483648\], expected \[4\]"):
        read_weights(path, expect={"w": [4]})
    monkeypatch.setattr("choicegrad.device.available_memory", lambda: 2 << 30)
    with pytest.raises(InputError, match="more than half the 2,048 MiB of memory available"):
        read_weights(path)


def test_a_fifo_is_never_opened_for_reading(tmp_path):
    ckpt = Checkpointer(tmp_path / ".checkpoint", 0, resume=True)
    ckpt.save("generator", {"w": torch.ones(2)})
    weights = ckpt.root / json.loads((ckpt.root / "generator.json").read_text())["weights"]
    weights.unlink()
    os.mkfifo(weights)
    started = time.perf_counter()
    with pytest.raises(InputError, match="not a regular file"):
        ckpt.load("generator")
    assert time.perf_counter() - started < 1


# --- silently wrong or unclear ----------------------------------------------------------------------
def test_a_bit_flip_in_a_checkpoint_is_refused(tmp_path):
    ckpt = Checkpointer(tmp_path / ".checkpoint", 0, resume=True)
    ckpt.save("generator", {"w": torch.arange(4.0)})
    weights = ckpt.root / json.loads((ckpt.root / "generator.json").read_text())["weights"]
    data = bytearray(weights.read_bytes())
    data[-2] ^= 0x01                                   # still a finite float
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 differs"):
        ckpt.load("generator")


def test_column_order_never_changes_the_features(tmp_path):
    frame = table(64)
    frame[["ctx", "s0", "s1", "s2", "y"]].to_csv(tmp_path / "a.csv", index=False)
    frame[["s2", "y", "ctx", "s1", "s0"]].to_csv(tmp_path / "b.csv", index=False)
    a, b = (load_table(tmp_path / n, "s?", "y", "ctx") for n in ("a.csv", "b.csv"))
    assert a.space == b.space and torch.equal(a.rows, b.rows)
    with open(tmp_path / "a.csv", "a") as fh:           # another table appended below, header and all
        fh.write((tmp_path / "b.csv").read_text())
    with pytest.raises(InputError, match="row 65 holds the column names again"):
        read_table(tmp_path / "a.csv")


def test_number_labels_are_canonical_whatever_their_neighbours():
    assert as_labels(pd.Series([1.0, 1.5, 2.5])).tolist() == ["1", "1.5", "2.5"]
    assert as_labels(pd.Series([1.0])).tolist() == ["1"]
    assert as_labels(pd.Series(["1.0", "x", "2.50", "+3", "1e3", None])).tolist() == ["1", "x", "2.5", "3", "1000", None]
    assert as_labels(pd.Series([True, False])).tolist() == as_labels(pd.Series(["true", "FALSE"])).tolist()


def test_float_labels_score_alone(tmp_path):
    frame = table(64)
    frame["s0"] = np.array([1.0, 1.5, 2.5, 4.0] * 16)
    frame.to_csv(tmp_path / "t.csv", index=False)
    res = run("fit-scorer", tmp_path / "t.csv", *SPEC, "--epochs", "2", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    frame.head(1).assign(s0=1.0).to_csv(tmp_path / "one.csv", index=False)     # a file holding only 1.0
    res = run("score", tmp_path / "run", tmp_path / "one.csv", "--out", tmp_path / "scored.csv")
    assert res.exit_code == 0, res.output


def test_a_parquet_folder_with_columns_in_other_orders(tmp_path):
    frame = table(200)
    (tmp_path / "logs").mkdir()
    frame.iloc[:100].to_parquet(tmp_path / "logs" / "a.parquet")
    frame.iloc[100:][["y", "s2", "ctx", "s0", "s1"]].to_parquet(tmp_path / "logs" / "b.parquet")
    scanned = scan_parquet(tmp_path / "logs", "s?", "y", "ctx")
    assert len(scanned) == 200 and scanned.space == load_table(frame, "s?", "y", "ctx").space


def test_resume_with_the_table_named_another_way(t_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(t_csv.parent)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(out, {"command": "fit", "data": "t.csv"}) as w:
            (w.dir / "scorer.json").write_text("phase 1")
            raise KeyboardInterrupt
    with RunWriter(out, {"command": "fit", "data": str(t_csv.resolve())}, resume=True) as w:
        assert w.resuming


def test_out_root_says_what_is_wrong(t_csv):
    res = run("fit-scorer", t_csv, *SPEC, "--out", "/", "--overwrite")
    assert_input_error(res, '"/" does not end in a folder name')
    assert "already holds a run" not in res.output


def test_a_replacement_cut_between_two_renames_is_readable_at_once(fitted, tmp_path):
    """Where the file system cannot exchange two folders in one step, the swap is two renames; a kill
    between them leaves no run at OUT, and the next reader (generate) finishes the swap."""
    out = tmp_path / "run"
    shutil.copytree(fitted, tmp_path / ".run.partial")                      # the new run, sealed
    shutil.copytree(fitted, tmp_path / ".run.old-0123456789ab")                      # the old one, renamed away
    res = run("generate", out, "--top-k", "2", "--out", tmp_path / "c.csv")
    assert res.exit_code == 0, res.output
    assert verify_run(out)
    # a reader removes nothing: the old run is left for the next writer of the folder to remove
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.old-0123456789ab", "c.csv", "run"]


def test_repeated_rows_and_contexts_that_all_failed_are_said(tmp_path):
    frame = table(120)
    repeated = frame.iloc[:5].assign(y=frame["y"].iloc[:5] + 1.0)           # measured again, other scores
    failed = frame.iloc[:6].assign(ctx="c-new", y=-np.inf)
    said = []
    d = Designer("s?", "y", "ctx", config=DesignConfig(ensemble=2, max_minutes=0.02, generator_steps=5))
    d.tell(pd.concat([frame, repeated, failed], ignore_index=True))
    d.ask(2, echo=said.append)
    assert any("5 row(s) were measured more than once" in s and "mean" in s for s in said), said
    assert any("every measured row failed in 1 context(s) (ctx=c-new)" in s for s in said), said


# --- a second hostile pass, after the fixes above ---------------------------------------------------
def test_context_values_near_the_largest_float_standardise(tmp_path):
    frame = table(64).assign(ctx=np.where(np.arange(64) % 2, 1.7e308, 1.6e308))
    frame.to_csv(tmp_path / "t.csv", index=False)
    res = run("fit-scorer", tmp_path / "t.csv", *SPEC, "--epochs", "2", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "Infinity" not in (tmp_path / "run" / "scorer.json").read_text()
    res = run("score", tmp_path / "run", tmp_path / "t.csv", "--out", tmp_path / "s.csv")
    assert res.exit_code == 0 and np.isfinite(pd.read_csv(tmp_path / "s.csv")["score"]).all(), res.output
    frame.head(3).assign(ctx=-1.7e308).to_csv(tmp_path / "far.csv", index=False)    # 67 std away: finite
    res = run("score", tmp_path / "run", tmp_path / "far.csv", "--out", tmp_path / "f.csv")
    assert res.exit_code == 0 and np.isfinite(pd.read_csv(tmp_path / "f.csv")["score"]).all(), res.output


def test_a_parquet_file_whose_pandas_metadata_lies(tmp_path):
    frame = table(32)
    t = pa.Table.from_pandas(frame)
    column = pa.array([[1, 2]] * 32, type=pa.list_(pa.int64()))
    t = t.set_column(t.schema.get_field_index("s1"), pa.field("s1", column.type), column)
    pq.write_table(t.replace_schema_metadata(pa.Table.from_pandas(frame).schema.metadata), tmp_path / "t.parquet")
    with pytest.raises(InputError, match="t.parquet"):
        load_table(tmp_path / "t.parquet", "s?", "y", "ctx")


def test_an_edited_scorer_metrics_file_is_refused(t_csv, tmp_path):
    res = run("fit-scorer", t_csv, *SPEC, "--epochs", "2", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    (tmp_path / "run" / "scorer_metrics.json").write_text('{"metrics": "x"}')
    res = run("fit-scorer", t_csv, *SPEC, "--epochs", "2", "--out", tmp_path / "run", "--resume")
    assert_input_error(res, "scorer_metrics.json", "not the scorer_metrics.json choicegrad wrote")


def test_a_checkpoint_state_changed_or_without_digest_is_refused(tmp_path):
    ckpt = Checkpointer(tmp_path / ".checkpoint", 0, resume=True)
    ckpt.save("generator", {"w": torch.ones(2), "step": 3})
    path = ckpt.root / "generator.json"
    doc = json.loads(path.read_text())
    doc["state"]["step"] = 10**12                              # the JSON part, not the weights
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="sha256 differs"):
        ckpt.load("generator")
    del doc["digest"]
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="holds no digest"):
        ckpt.load("generator")
    with pytest.raises(InputError, match="does not fit this run"):
        ckpt.restore("generator", {"step": "x"}, lambda state: int(state["step"]) + 1)


def _reseal(run_dir: Path) -> None:
    manifest = json.loads((run_dir / MANIFEST).read_text())
    manifest["files"] = {n: sha256_file(run_dir / n) for n in manifest["files"]}
    (run_dir / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("name, change, problem", [
    ("scorer.json", lambda d: d.update(k=100_000), "100000 ensemble members, but the weights beside it hold 1"),
    ("scorer.json", lambda d: d["config"].update(hidden=[20_000, 20_000]), "other weights than the file"),
    ("generator.json", lambda d: d["config"].update(hidden=[200_000, 200_000]), "do not belong together"),
    ("generator.json", lambda d: d["shape"].update(num_numeric=10**12), "do not belong together")])
def test_model_sizes_are_checked_against_the_weights_before_building(fitted, tmp_path, name, change, problem):
    run_dir = shutil.copytree(fitted, tmp_path / "run")
    doc = json.loads((run_dir / name).read_text())
    change(doc)
    (run_dir / name).write_text(json.dumps(doc))
    _reseal(run_dir)                                           # only the settings are wrong
    started = time.perf_counter()
    with pytest.raises(InputError, match=problem):
        Run.load(run_dir)
    assert time.perf_counter() - started < 5


def test_a_run_named_tilde_is_a_folder_here_not_home(fitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(fitted, tmp_path / "~")
    home = tmp_path / "home"
    home.mkdir()
    pd.DataFrame({"ctx": ["nowhere"]}).to_csv(home / "contexts.csv", index=False)
    monkeypatch.setenv("HOME", str(home))
    res = run("generate", "~", "--top-k", "1", "--out", "~c.csv")
    assert res.exit_code == 0, res.output
    assert sorted(pd.read_csv(tmp_path / "~c.csv")["ctx"]) == sorted(pd.read_csv(fitted / "contexts.csv")["ctx"])


@pytest.mark.parametrize("command", ["generate", "score"])
def test_an_output_inside_the_run_folder_is_refused(t_csv, fitted, tmp_path, command):
    run_dir = shutil.copytree(fitted, tmp_path / "run")
    args = [run_dir, "--top-k", "1"] if command == "generate" else [run_dir, t_csv]
    res = run(command, *args, "--out", run_dir / "contexts.csv")
    assert_input_error(res, "is inside the run folder")
    assert verify_run(run_dir)


def test_labels_a_second_pass(tmp_path):
    import decimal

    assert as_labels(pd.Series(["1e400", "2e400"])).tolist() == ["1e400", "2e400"]          # not both "inf"
    assert as_labels(pd.Series(["9" * 5001])).tolist() == ["9" * 5001]                     # an identifier, as text
    assert as_labels(pd.Series([decimal.Decimal("0.50"), decimal.Decimal("1.00")])).tolist() == ["0.5", "1"]
    frame = table(32).assign(s0=np.array(["1.0", "2.5"] * 16, dtype=object))
    data = load_table(frame, "s?", "y", "ctx", space={"s0": ["1.0", "2.5", "4"]})
    assert data.space.slots[0].categories == ["1", "2.5", "4"] and (data.rows[:, 0] >= 0).all()
    (tmp_path / "space.json").write_text(json.dumps({"s0": ["", "a"]}))
    with pytest.raises(InputError, match="is empty"):
        load_table(frame, "s?", "y", "ctx", space=tmp_path / "space.json")


def test_a_fifo_named_like_a_parquet_file_is_refused(tmp_path):
    (tmp_path / "logs").mkdir()
    table(100).to_parquet(tmp_path / "logs" / "a.parquet")
    os.mkfifo(tmp_path / "logs" / "b.parquet")
    with pytest.raises(InputError, match="not a regular file"):
        scan_parquet(tmp_path / "logs", "s?", "y", "ctx")


def test_resume_from_another_folder_with_the_table_named_relatively(t_csv, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.chdir(t_csv.parent)
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(out, {"command": "fit", "data": os.path.abspath("t.csv")}) as w:
            (w.dir / "scorer.json").write_text("phase 1")
            raise KeyboardInterrupt
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    relative = os.path.relpath(t_csv, tmp_path / "elsewhere")
    with RunWriter(out, {"command": "fit", "data": os.path.abspath(relative)}, resume=True) as w:
        assert w.resuming


def test_readers_and_writers_remove_only_their_own_old_folders(fitted, t_csv, tmp_path):
    run_dir = shutil.copytree(fitted, tmp_path / "run")
    keep = shutil.copytree(fitted, tmp_path / ".run.old-keep")          # a user's backup
    (tmp_path / ".run.old-notes").mkdir()
    res = run("generate", run_dir, "--top-k", "1", "--out", tmp_path / "c.csv")
    assert res.exit_code == 0, res.output
    res = run("fit", t_csv, *SPEC, *FAST_FIT, "--out", run_dir, "--overwrite")
    assert res.exit_code == 0, res.output
    assert keep.is_dir() and (tmp_path / ".run.old-notes").is_dir()


def test_a_partial_holding_hidden_files_is_not_removed(t_csv, tmp_path):
    partial = tmp_path / ".e.partial"
    (partial / ".git").mkdir(parents=True)
    (partial / ".env").write_text("secret")
    res = run("fit-scorer", t_csv, *SPEC, "--epochs", "2", "--out", tmp_path / "e")
    assert_input_error(res, "holds files but no request.json")
    assert (partial / ".env").read_text() == "secret"


def test_a_lock_file_that_is_a_link_is_refused(fitted, t_csv, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_dir = shutil.copytree(fitted, tmp_path / "hl")
    os.link(victim, tmp_path / ".hl.lock")
    res = run("fit-scorer", t_csv, *SPEC, "--epochs", "2", "--out", run_dir, "--overwrite")
    assert_input_error(res, "not a lock file choicegrad made")
    assert victim.read_text() == "precious"
    (tmp_path / ".hl.lock").unlink()
    os.symlink(victim, tmp_path / ".hl.lock")
    res = run("fit-scorer", t_csv, *SPEC, "--epochs", "2", "--out", run_dir, "--overwrite")
    assert_input_error(res, "is a symbolic link")
    assert victim.read_text() == "precious"


def test_overwrite_keeps_files_the_run_did_not_write(fitted, t_csv, tmp_path):
    run_dir = shutil.copytree(fitted, tmp_path / "ow")
    shutil.copy(t_csv, run_dir / "mytable.csv")
    res = run("fit-scorer", run_dir / "mytable.csv", *SPEC, "--epochs", "2", "--out", run_dir, "--overwrite")
    assert_input_error(res, "files choicegrad did not write there: mytable.csv")
    assert (run_dir / "mytable.csv").is_file() and verify_run(run_dir)


@pytest.mark.parametrize("delete_old", [False, True])
def test_a_run_replaced_while_it_is_read_is_never_read_mixed(fitted, t_csv, tmp_path, monkeypatch, delete_old):
    """A `fit --overwrite` that swaps in a new run while `generate` reads: the reader sees the old run
    whole (it holds the folder open), or, when the old one is removed under it, the new one whole."""
    from safetensors.torch import load_file

    from choicegrad import fs, generators

    res = run("fit", t_csv, *SPEC, "--steps", "0", "--scorer-epochs", "2", "--seed", "2", "--out", tmp_path / "new")
    assert res.exit_code == 0, res.output
    out = shutil.copytree(fitted, tmp_path / "run")
    load, swapped = generators.load, []

    def swap_then_load(folder, *args, **kwargs):
        if not swapped:
            swapped.append(1)
            assert fs.exchange(tmp_path / "new", out)           # the new run takes the name
            if delete_old:
                shutil.rmtree(tmp_path / "new")                 # and the old one goes, under the reader
        return load(folder, *args, **kwargs)

    monkeypatch.setattr(generators, "load", swap_then_load)
    loaded = Run.load(out)
    expected = fitted if not delete_old else out
    want = load_file(str(expected / "generator.safetensors"))
    assert all(torch.equal(v, want[k]) for k, v in loaded.generator.state_dict().items())
    want = load_file(str(expected / "scorer.safetensors"))
    assert all(torch.equal(v, want[k]) for k, v in loaded.scorer.state_dict().items())


def test_propose_counts_a_round_only_once_its_proposals_are_written(t_csv, tmp_path, monkeypatch):
    import errno

    args = ["propose", t_csv, *SPEC, "--batch", "2", "--ensemble", "2", "--max-minutes", "0.02", "--state",
            tmp_path / "state", "--out", tmp_path / "p.csv"]
    assert run(*args).exit_code == 0
    before = (tmp_path / "state" / "designer.json").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "p.csv"))

    monkeypatch.setattr("choicegrad.io.write_table", full)
    res = run(*args)
    assert_input_error(res, "p.csv", "No space left on device (ENOSPC)")
    assert (tmp_path / "state" / "designer.json").read_bytes() == before


def test_sigterm_and_ctrl_c_exit_with_a_message(fitted, tmp_path, monkeypatch):
    import signal

    from choicegrad import cli

    def terminated(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(Run, "generate", terminated)
    res = run("generate", fitted, "--top-k", "1", "--out", tmp_path / "c.csv")
    assert res.exit_code == 143 and "interrupted by SIGTERM" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "c.csv").exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    with pytest.raises(SystemExit) as exit_:
        cli.main()                                   # Ctrl-C before a command starts (Python importing)
    assert exit_.value.code == 130


def test_unclear_messages_made_clear(t_csv, fitted, tmp_path, monkeypatch):
    import errno
    import tempfile

    real = tempfile.mkstemp

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    res = run("generate", fitted, "--out", tmp_path / "c.csv")
    assert_input_error(res, "Read-only file system (EROFS)")
    monkeypatch.setattr(tempfile, "mkstemp", real)
    (tmp_path / ".p.partial").write_text("x")
    res = run("fit-scorer", t_csv, *SPEC, "--epochs", "2", "--out", tmp_path / "p")
    assert_input_error(res, "is not a folder choicegrad made")
    os.symlink(fitted, tmp_path / "latest")
    res = run("fit-scorer", t_csv, *SPEC, "--epochs", "2", "--out", tmp_path / "latest", "--overwrite")
    assert_input_error(res, "is a symbolic link")
    monkeypatch.chdir(tmp_path / "latest")
    res = run("propose", t_csv, *SPEC, "--batch", "2", "--state", ".", "--out", tmp_path / "p.csv")
    assert_input_error(res, "--state", "does not end in a folder name")
    frame = table(32)
    frame.to_csv(tmp_path / "bom.csv", index=False, encoding="utf-8-sig")
    text = (tmp_path / "bom.csv").read_text(encoding="utf-8")
    (tmp_path / "bom.csv").write_text("\ufeff" + text, encoding="utf-8")      # a second byte-order mark
    assert list(read_table(tmp_path / "bom.csv").columns) == list(frame.columns)
