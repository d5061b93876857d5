"""Files in and out: the one atomic writer, tables (CSV/Parquet), and checkpoints as safetensors
(weights) + JSON (everything else). Loading never unpickles.

Every file is written to a temporary name in the same folder, flushed to disk and renamed into place
(choicegrad.fs), so a crash or a bad input never leaves a half-written file behind. Written files get
the permissions a plain open() would give (0o666 less the umask).

Files choicegrad wrote are read back with suspicion: only regular files are opened (a FIFO or a
device would block or never end), JSON is refused when nested too deep, holding NaN/Infinity or
numbers beyond a float64, and a safetensors file's header is checked against the file's size, the
tensors the model expects and the memory there is, before anything is allocated. Checkpoints carry
the sha256 of their weights.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import math
import os
import stat
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from choicegrad import fs
from choicegrad.errors import InputError, os_reason, show_rows
from choicegrad.version import __version__

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


#: The one atomic writer and its text form live in choicegrad.fs with the other changes to disk.
atomic_path, atomic_write_text = fs.atomic_path, fs.write_text


CSV_DELIMITERS = (",", ";", "\t", "|")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (UTF-8; delimiter , ; tab or | detected from the header) or Parquet file; InputError
    for a missing file, a folder, bad format, text that is not UTF-8, duplicate column names or a
    row that repeats the column names (two files concatenated, their columns not lined up).

    Cells are read as they are written: an empty CSV cell is the only missing value (text such as
    NA, None or n/a is a label like any other; choicegrad.data.space.as_labels)."""
    shown, path = str(path), Path(os.path.abspath(path))   # pandas would expand a leading "~" to the home folder
    if path.is_dir():
        raise InputError(shown, ["is a folder; expected a CSV or Parquet file (choicegrad fit and fit-scorer "
                                     "stream a folder of Parquet files)"])
    if not path.is_file():
        raise InputError(shown, ["file not found" if not path.exists() else
                                     "not a regular file (a pipe, device or socket); give a CSV or Parquet file"])
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(shown, [f'unsupported file type "{suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as fh:
                line = fh.readline()
            sep = csv_delimiter(line)
            header = _split_header(line, sep)
            frame = pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""], encoding="utf-8")
            frame.attrs["text"] = True       # cells were text: choicegrad.data.context reads numbers in it
        else:
            import pyarrow.parquet as pq  # here, not at the top: only Parquet needs it and it is slow to import

            header = pq.read_schema(path).names
            frame = pd.read_parquet(path)
    except UnicodeDecodeError:
        raise InputError(shown, [_not_utf8(path)]) from None
    except (OSError, ValueError, csv.Error, pd.errors.ParserError) as exc:
        raise InputError(shown, [f"cannot read as {suffix[1:]}: {exc}"]) from None
    except Exception as exc:          # pyarrow's own errors (a schema pandas' metadata disagrees with, ...)
        raise InputError(shown, [f"cannot read as {suffix[1:]}: {type(exc).__name__}: {exc}"]) from None
    if any(isinstance(c, str) and c.startswith("\ufeff") for c in frame.columns):   # a byte-order mark repeated
        frame.columns = [c.lstrip("\ufeff") if isinstance(c, str) else c for c in frame.columns]
        header = [c.lstrip("\ufeff") for c in header]
    dupes = sorted(n for n, c in Counter(header).items() if c > 1)
    if dupes:
        raise InputError(shown, [f"duplicate column name{'s' if len(dupes) > 1 else ''}: {', '.join(dupes)}"])
    repeated = header_rows(frame)
    if len(repeated):
        raise InputError(shown, [f"{show_rows(repeated)} hold{'s' if len(repeated) == 1 else ''} the column names "
                                     "again: a second table appended below the first? Its rows need not list the "
                                     "columns in the same order, so they cannot be read by position; join the "
                                     "tables by column name (e.g. pandas.concat) and read the result"])
    return frame


def header_rows(frame: pd.DataFrame) -> np.ndarray:
    """Positions (0-based) of rows whose cells are exactly the column names, in any order."""
    names = [str(c) for c in frame.columns]
    if len(names) < 2 or len(frame) == 0:
        return np.zeros(0, dtype=np.int64)
    first = frame.iloc[:, 0]
    if not (first.dtype == object or pd.api.types.is_string_dtype(first.dtype)):
        return np.zeros(0, dtype=np.int64)
    candidates = np.flatnonzero(first.isin(names).to_numpy())
    want = sorted(names)
    return np.array([i for i in candidates if sorted(map(str, frame.iloc[i].tolist())) == want], dtype=np.int64)


def _split_header(line: str, sep: str) -> list[str]:
    with _csv_field_limit(len(line)):
        return next(csv.reader([line], delimiter=sep), [])


@contextmanager
def _csv_field_limit(size: int) -> Iterator[None]:
    """Let Python's csv module read a field of `size` characters (its default stops at 128 KiB)."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, size + 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def csv_delimiter(header: str) -> str:
    """The delimiter among , ; tab | that splits the header line into the most columns (comma on a tie)."""
    counts = {d: len(_split_header(header, d)) for d in CSV_DELIMITERS}
    return max(CSV_DELIMITERS, key=lambda d: (counts[d], d == ","))


def _not_utf8(path: Path) -> str:
    """'not UTF-8 text: line N has byte 0x..' for the first line that does not decode, plus a hint."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                where = f"line {number} has byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
                break
        else:
            where = "a byte sequence does not decode"
    return (f"not UTF-8 text: {where}; convert it first, e.g. iconv -f latin1 -t utf-8 {path.name} "
            f"> {path.stem}-utf8{path.suffix}")


def check_writable(path: str | Path, name: str = "out") -> Path:
    """InputError naming `name` unless a file can be written at `path`: its folder exists (or can be
    made inside the nearest existing folder) and a file can be created there. Checks by creating and
    deleting a temporary file, so it works for permissions, read-only mounts and a file in the way."""
    path = Path(path)
    if path.is_dir():
        raise InputError(name, [f"{path} is a folder; expected a file name"])
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(name, [f"cannot write {path}: {folder} is a file, not a folder"])
    try:
        fd, tmp = tempfile.mkstemp(prefix=".choicegrad-check.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        why = ("no permission to create files there" if exc.errno in (errno.EACCES, errno.EPERM) else os_reason(exc))
        raise InputError(name, [f"cannot write {path}: {why} ({folder}{', ' + os_reason(exc) if exc.errno in (errno.EACCES, errno.EPERM) else ''})"]) from None
    return path


def check_finite(values, source: str, what: str = "score") -> None:
    """InputError naming `source` and the rows (1-based) where `values` are NaN or infinite: a table
    never gets NaN written as a prediction."""
    values = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise InputError(source, [f"{what} is {values[bad[0]]} at {show_rows(bad)}: not a finite number, so nothing "
                                  "is written"])


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write CSV or Parquet (chosen by the suffix) through atomic_path."""
    path = Path(os.path.abspath(path))      # as named: pandas would expand a leading "~"
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(str(path), [f'unsupported output type "{suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)


#: Largest JSON file choicegrad reads back (its own are kilobytes; a bigger one is not ours).
MAX_JSON_BYTES = 64 << 20
#: Largest safetensors header (its JSON list of tensors) read: ours are a few kilobytes.
MAX_HEADER_BYTES = 16 << 20


def read_regular(path: str | Path, limit: Optional[int] = None) -> bytes:
    """The bytes of `path`, opened only when it is a regular file (never blocking on a FIFO or a
    device) and no larger than `limit`; InputError naming the file otherwise."""
    path = Path(path)
    fd = _open_regular(path)
    try:
        info = os.fstat(fd)
        if limit is not None and info.st_size > limit:
            raise InputError(str(path), [f"{info.st_size:,} bytes, more than the {limit:,} such a file may have"])
        chunks, size = [], 0
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            chunks.append(block)
            size += len(block)
            if limit is not None and size > limit:
                raise InputError(str(path), [f"more than the {limit:,} bytes such a file may have"])
        return b"".join(chunks)
    finally:
        os.close(fd)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond a float64")
    return value


def parse_json(text: str, source: str) -> Any:
    """JSON text -> Python, refusing what choicegrad never writes (InputError naming `source`):
    nesting deeper than Python's recursion allows, NaN/Infinity, and numbers beyond a float64 (1e400)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise InputError(source, ["not valid JSON for choicegrad: nested too deep"]) from None
    except ValueError as exc:
        raise InputError(source, [f"not valid JSON: {exc}"]) from None


def read_json(path: str | Path, limit: int = MAX_JSON_BYTES) -> Any:
    """A UTF-8 JSON file (a regular file of at most `limit` bytes) parsed by parse_json."""
    raw = read_regular(path, limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), [f"not valid JSON: not UTF-8 text ({exc})"]) from None
    return parse_json(text, str(path))


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A UTF-8 JSON file holding an object, as a dict; InputError naming the file otherwise."""
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise InputError(str(path), [f"expected a JSON object, got {type(doc).__name__}"])
    return doc


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(run_dir: str | Path, name: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write RUN/name.safetensors and RUN/name.json atomically (weights first, JSON last); the JSON
    records the weights' sha256, which load_checkpoint checks."""
    run_dir = Path(run_dir)
    data = safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in state.items()})
    with atomic_path(run_dir / f"{name}.safetensors") as tmp:
        tmp.write_bytes(data)                # Python's own write: a full disk is an OSError naming the file
    atomic_write_text(run_dir / f"{name}.json", json.dumps({**meta, "weights_sha256": sha256_bytes(data)}, indent=2,
                                                           sort_keys=True) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


Shapes = Mapping[str, Sequence[int]]
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def read_weights(path: str | Path, expect: Optional[Shapes] = None, sha256: Optional[str] = None,
                 finite: bool = True, also: bytes = b"", former: Optional[Shapes] = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked before any tensor is allocated: a regular file;
    its header at most MAX_HEADER_BYTES and inside the file; every tensor's bytes inside the data
    and as many as its dtype and shape need; in all no more than half the memory there is; with
    `expect` (name -> shape, e.g. a model's state), exactly those tensors and shapes (or, for a name
    in `former`, the shape older files held); with `sha256`, the digest of the file's bytes followed
    by `also` (read in blocks, never whole). Then the tensors are read (memory-mapped, once) and
    checked: no NaN or inf (finite=False: the caller checks). InputError naming the file for each
    problem."""
    path = Path(path)
    source = str(path)
    fd = _open_regular(path)
    try:
        size = os.fstat(fd).st_size
        header, n = _read_header(fd, size, source)
        _check_header(header, size - 8 - n, source, expect, former)
        if sha256 is not None:
            digest, offset = hashlib.sha256(), 0
            while block := os.pread(fd, 1 << 22, offset):
                digest.update(block)
                offset += len(block)
            digest.update(also)
            if offset != size:
                raise InputError(source, ["the file changed while it was read"])
            if digest.hexdigest() != sha256:
                raise InputError(source, ["its sha256 differs from the one recorded beside it: the file was changed or "
                                          "damaged after it was written"])
        same = f"/proc/self/fd/{fd}"         # the very file checked above, not whatever the name holds now
        try:
            state = load_file(same if os.path.exists(same) else str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise InputError(source, [f"not a valid safetensors file: {exc}"]) from None
    finally:
        os.close(fd)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad and finite:
        raise InputError(source, [f"weights hold NaN or inf (damaged or a diverged fit): {', '.join(sorted(bad)[:5])}"])
    return state


def weights_header(path: str | Path) -> dict[str, list[int]]:
    """The tensors a safetensors file declares (name -> shape), checked against the file and the
    memory there is, without reading any tensor: what a loader compares a model's settings with
    before it builds (and allocates) the model."""
    path = Path(path)
    fd = _open_regular(path)
    try:
        size = os.fstat(fd).st_size
        header, n = _read_header(fd, size, str(path))
    finally:
        os.close(fd)
    _check_header(header, size - 8 - n, str(path), None)
    return {k: [int(d) for d in v["shape"]] for k, v in header.items() if k != "__metadata__"}


def _open_regular(path: Path) -> int:
    """A read-only descriptor of `path`, opened without blocking and only when it is a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError(str(path), ["file not found"]) from None
    except OSError as exc:
        raise InputError(str(path), [f"cannot open: {exc.strerror}"]) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(str(path), ["not a regular file (a pipe, device, socket or folder); refused"])
    return fd


def _read_header(fd: int, size: int, source: str) -> tuple[Any, int]:
    """(the JSON header of the safetensors file open at `fd`, its length), read only when it is at most
    MAX_HEADER_BYTES and inside the file's `size` bytes."""
    head = os.pread(fd, 8, 0)
    if len(head) < 8:
        raise InputError(source, [f"not a valid safetensors file: {size} bytes, too short for a header"])
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise InputError(source, [f"not a valid safetensors file: its header claims {n:,} bytes, the file has "
                                  f"{size:,} (at most {MAX_HEADER_BYTES:,} are read)"])
    return parse_json(os.pread(fd, n, 8).decode("utf-8", errors="replace"), f"{source} (header)"), n


def _check_header(header: Any, data_bytes: int, source: str, expect: Optional[Shapes],
                  former: Optional[Shapes] = None) -> None:
    if not isinstance(header, dict):
        raise InputError(source, ["not a valid safetensors file: its header is not a JSON object"])
    problems, total = [], 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], [int(d) for d in entry["shape"]], entry["data_offsets"]
            need = math.prod(shape) * _DTYPE_BYTES[dtype]
            ok = (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_bytes
                  and end - begin == need and min(shape, default=0) >= 0)
        except (KeyError, TypeError, ValueError):
            ok, need = False, 0
        if not ok:
            problems.append(f'tensor "{name}": its header entry does not fit the file ({data_bytes:,} bytes of data)')
        total += need
    if problems:
        raise InputError(source, ["not a valid safetensors file"] + problems[:5])
    if expect is not None:
        have = {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        want = {k: [int(d) for d in v] for k, v in expect.items()}
        wrong = [f"missing tensor {k}" for k in want if k not in have]
        wrong += [f"unexpected tensor {k}" for k in have if k not in want]
        old = {k: [int(d) for d in v] for k, v in (former or {}).items()}
        wrong += [f"tensor {k} has shape {have[k]}, expected {want[k]}" for k in want
                  if k in have and have[k] != want[k] and have[k] != old.get(k)]
        if wrong:
            raise InputError(source, wrong[:8] + ([f"and {len(wrong) - 8} more"] if len(wrong) > 8 else [])
                             + ["the weights do not match the settings in the .json file beside it"])
    from choicegrad.device import available_memory

    free = available_memory()
    if free and 2 * total > free:
        raise InputError(source, [f"its tensors need {total / 2**20:,.0f} MiB, more than half the "
                                  f"{free / 2**20:,.0f} MiB of memory available"])


def load_checkpoint(run_dir: str | Path, name: str, expect: Optional[Shapes] = None,
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read RUN/name.safetensors + RUN/name.json; InputError naming the missing or broken file: JSON
    that is not an object, weights that do not load, hold NaN/inf, differ from the sha256 the JSON
    records (files written before it: not checked) or, with `expect`, from those tensors' shapes."""
    meta = read_meta(run_dir, name)
    return read_weights(Path(run_dir) / f"{name}.safetensors", expect, weights_digest(meta, run_dir, name)), meta


def read_meta(run_dir: str | Path, name: str) -> dict[str, Any]:
    """RUN/name.json of a checkpoint, checking first that RUN/name.safetensors is there too."""
    run_dir = Path(run_dir)
    weights, config = run_dir / f"{name}.safetensors", run_dir / f"{name}.json"
    missing = [str(p) for p in (weights, config) if not os.path.lexists(p)]
    if missing:
        raise InputError(str(run_dir), [f"missing run file {m}" for m in missing])
    return read_json_object(config)


def read_state(module: torch.nn.Module, run_dir: str | Path, name: str, meta: dict[str, Any],
               prefix: str = "") -> dict[str, torch.Tensor]:
    """RUN/name.safetensors for `module`, whose shapes (keys under `prefix`) are checked in the file's
    header before anything is read (or the shapes its `former_shapes()` says older files held, which
    its load converts); the sha256 recorded in `meta` checked. Load with load_state."""
    expect = {f"{prefix}{k}": v.shape for k, v in module.state_dict().items()}
    former = {f"{prefix}{k}": v for k, v in getattr(module, "former_shapes", dict)().items()}
    return read_weights(Path(run_dir) / f"{name}.safetensors", expect, weights_digest(meta, run_dir, name),
                        former=former)


def weights_digest(meta: dict[str, Any], run_dir: str | Path, name: str) -> Optional[str]:
    """The weights' sha256 a checkpoint's JSON records (None for files written before it did)."""
    digest = meta.get("weights_sha256")
    if digest is not None and not isinstance(digest, str):
        raise InputError(str(Path(run_dir) / f"{name}.json"), ["weights_sha256: expected a hex string"])
    return digest


def meta_problem(exc: Exception) -> str:
    """One line saying what is wrong in a checkpoint's JSON, from the error that rebuilding it raised:
    a missing field, a wrong type, or pydantic's field-by-field report."""
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic.ValidationError
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in errors()[:5])
    return str(exc)


def state_problems(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Why `state` cannot load into `module`: missing, unexpected or wrongly shaped tensors (empty
    when it can; a warm start checks this before copying weights)."""
    own = module.state_dict()
    problems = [f"missing tensor {k}" for k in own if k not in state]
    problems += [f"unexpected tensor {k}" for k in state if k not in own]
    return problems + [f"tensor {k} has shape {list(state[k].shape)}, expected {list(v.shape)}"
                       for k, v in own.items() if k in state and state[k].shape != v.shape]


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """module.load_state_dict(state) with every missing, unexpected or wrongly shaped tensor reported
    in one InputError naming `source` (the .safetensors file); a state of an older layout first
    converted by the module's `upgrade_state`, where it has one."""
    state = getattr(module, "upgrade_state", lambda s: s)(state)
    problems = state_problems(module, state)
    if problems:
        raise InputError(str(source), problems[:8] + ([f"and {len(problems) - 8} more"] if len(problems) > 8 else [])
                         + ["the weights do not match the settings in the .json file beside it"])
    module.load_state_dict(state)


def versions() -> dict[str, str]:
    """Package and torch versions recorded in every checkpoint."""
    return {"choicegrad": __version__, "torch": torch.__version__}
