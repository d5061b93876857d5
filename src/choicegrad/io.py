"""Files in and out: the one atomic writer, tables (CSV/Parquet), and checkpoints as safetensors
(weights) + JSON (everything else). Loading never unpickles.

Every file is written to a temporary name in the same folder, flushed to disk and renamed into place,
so a crash or a bad input never leaves a half-written file behind. Written files get the permissions a
plain open() would give (0o666 less the umask).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from choicegrad.errors import InputError, show_rows

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def _umask() -> int:
    """The process umask, read from /proc where listed (leaving it untouched); elsewhere set and put
    back at once, 0o077 meanwhile, so a file another thread makes in between is private, never open."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success flush it to disk, give it mode
    0o666 less the umask and rename it onto `path`; on any error delete it. Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())               # mkstemp makes 0o600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through atomic_path; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


CSV_DELIMITERS = (",", ";", "\t", "|")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (UTF-8; delimiter , ; tab or | detected from the header) or Parquet file; InputError
    for a missing file, a folder, bad format, text that is not UTF-8 or duplicate columns."""
    path = Path(path)
    if path.is_dir():
        raise InputError(str(path), ["is a folder; expected a CSV or Parquet file (choicegrad fit and fit-scorer "
                                     "stream a folder of Parquet files)"])
    if not path.is_file():
        raise InputError(str(path), ["file not found"])
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(str(path), [f'unsupported file type "{suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as fh:
                line = fh.readline()
            sep = csv_delimiter(line)
            header = next(csv.reader([line], delimiter=sep), [])
            frame = pd.read_csv(path, sep=sep, keep_default_na=True, encoding="utf-8")
        else:
            import pyarrow.parquet as pq  # here, not at the top: only Parquet needs it and it is slow to import

            header = pq.read_schema(path).names
            frame = pd.read_parquet(path)
    except UnicodeDecodeError:
        raise InputError(str(path), [_not_utf8(path)]) from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(str(path), [f"cannot read as {suffix[1:]}: {exc}"]) from None
    dupes = sorted(n for n, c in Counter(header).items() if c > 1)
    if dupes:
        raise InputError(str(path), [f"duplicate column name{'s' if len(dupes) > 1 else ''}: {', '.join(dupes)}"])
    return frame


def csv_delimiter(header: str) -> str:
    """The delimiter among , ; tab | that splits the header line into the most columns (comma on a tie)."""
    counts = {d: len(next(csv.reader([header], delimiter=d), [])) for d in CSV_DELIMITERS}
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
        raise InputError(name, [f"cannot write {path}: no permission to create files in {folder} "
                                f"({exc.strerror or exc})"]) from None
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
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(str(path), [f'unsupported output type "{suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A UTF-8 JSON file holding an object, as a dict; InputError naming the file otherwise."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise InputError(str(path), [f"not valid JSON: {exc}"]) from None
    if not isinstance(doc, dict):
        raise InputError(str(path), [f"expected a JSON object, got {type(doc).__name__}"])
    return doc


def save_checkpoint(run_dir: str | Path, name: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write RUN/name.safetensors and RUN/name.json atomically (weights first, JSON last)."""
    run_dir = Path(run_dir)
    with atomic_path(run_dir / f"{name}.safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    atomic_write_text(run_dir / f"{name}.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_checkpoint(run_dir: str | Path, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read RUN/name.safetensors + RUN/name.json; InputError naming the missing or broken file: JSON
    that is not an object, weights that do not load or hold NaN/inf."""
    run_dir = Path(run_dir)
    weights, config = run_dir / f"{name}.safetensors", run_dir / f"{name}.json"
    missing = [str(p) for p in (weights, config) if not p.is_file()]
    if missing:
        raise InputError(str(run_dir), [f"missing run file {m}" for m in missing])
    meta = read_json_object(config)
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(str(weights), [f"not a valid safetensors file: {exc}"]) from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(str(weights), [f"weights hold NaN or inf (damaged or a diverged fit): {', '.join(sorted(bad)[:5])}"])
    return state, meta


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
    in one InputError naming `source` (the .safetensors file)."""
    problems = state_problems(module, state)
    if problems:
        raise InputError(str(source), problems[:8] + ([f"and {len(problems) - 8} more"] if len(problems) > 8 else [])
                         + ["the weights do not match the settings in the .json file beside it"])
    module.load_state_dict(state)


save, load = save_checkpoint, load_checkpoint  # the old names, until callers in aligner.py and generators/ switch


def versions() -> dict[str, str]:
    """Package and torch versions recorded in every checkpoint."""
    from choicegrad import __version__  # here, not at the top: choicegrad/__init__ imports modules that import this one

    return {"choicegrad": __version__, "torch": torch.__version__}
