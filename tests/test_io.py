"""choicegrad.io: the atomic writer (permissions, no litter), tables in and out, checkpoints."""

from __future__ import annotations

import hashlib
import os
import stat
from contextlib import contextmanager

import pandas as pd
import pytest
import torch

from choicegrad.errors import InputError
from choicegrad.fs import _umask
from choicegrad.io import (atomic_path, atomic_write_text, load_checkpoint, read_table, save_checkpoint,
                           write_table)


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it():
    with umask(0o027):
        assert _umask() == 0o027
        assert _umask() == 0o027


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600)])
def test_every_writer_respects_the_umask(tmp_path, mask, expected):
    frame = pd.DataFrame({"a": ["x", "y"], "y": [1.0, 2.0]})
    with umask(mask):
        atomic_write_text(tmp_path / "note.txt", "hello\n")
        write_table(frame, tmp_path / "t.csv")
        write_table(frame, tmp_path / "t.parquet")
        save_checkpoint(tmp_path / "run", "thing", {"w": torch.ones(2)}, {"kind": "test"})
    for path in [tmp_path / "note.txt", tmp_path / "t.csv", tmp_path / "t.parquet",
                 tmp_path / "run" / "thing.safetensors", tmp_path / "run" / "thing.json"]:
        assert mode(path) == expected, path


def test_a_failed_write_leaves_no_file_and_no_litter(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_makes_the_folder_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(target, "one\n")
    atomic_write_text(target, "two ü\n")
    assert target.read_text(encoding="utf-8") == "two ü\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq"])
def test_tables_round_trip(tmp_path, suffix):
    frame = pd.DataFrame({"a": ["x", "y", "z"], "b": [1, 2, 3], "y": [0.5, 1.5, -2.0]})
    path = tmp_path / f"t{suffix}"
    write_table(frame, path)
    pd.testing.assert_frame_equal(read_table(path), frame)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_table_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_table(tmp_path / "absent.csv")
    (tmp_path / "t.txt").write_text("a\n1\n")
    with pytest.raises(InputError, match='unsupported file type ".txt"'):
        read_table(tmp_path / "t.txt")
    (tmp_path / "dup.csv").write_text("a,b,a\n1,2,3\n")
    with pytest.raises(InputError, match="duplicate column name: a"):
        read_table(tmp_path / "dup.csv")
    with pytest.raises(InputError, match='unsupported output type ".txt"'):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


def test_checkpoint_round_trip_and_errors(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])}
    save_checkpoint(tmp_path, "m", state, {"kind": "test", "n": 2})
    loaded, meta = load_checkpoint(tmp_path, "m")
    assert meta == {"kind": "test", "n": 2, "weights_sha256": hashlib.sha256((tmp_path / "m.safetensors").read_bytes()).hexdigest()}
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    with pytest.raises(InputError, match="missing run file"):
        load_checkpoint(tmp_path, "absent")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_checkpoint(tmp_path, "m")
    (tmp_path / "m.json").write_text("{}")
    (tmp_path / "m.safetensors").write_bytes(b"\x80\x04pickle?")
    with pytest.raises(InputError, match="not a valid safetensors file"):
        load_checkpoint(tmp_path, "m")


@pytest.mark.parametrize("text, problem", [(b"[1, 2]", "expected a JSON object, got list"), (b"null", "got NoneType"),
                                           (b'{"kind": "\xff"}', "not valid JSON"), (b"[" * 100000, "not valid JSON")])
def test_checkpoint_json_must_be_an_object(tmp_path, text, problem):
    save_checkpoint(tmp_path, "m", {"w": torch.ones(2)}, {"kind": "test"})
    (tmp_path / "m.json").write_bytes(text)
    with pytest.raises(InputError, match=problem) as info:
        load_checkpoint(tmp_path, "m")
    assert info.value.source == str(tmp_path / "m.json")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_checkpoint_weights_must_be_finite(tmp_path, bad):
    save_checkpoint(tmp_path, "m", {"w": torch.tensor([1.0, bad]), "n": torch.tensor([1, 2])}, {"kind": "test"})
    with pytest.raises(InputError, match="weights hold NaN or inf .*: w$"):
        load_checkpoint(tmp_path, "m")
