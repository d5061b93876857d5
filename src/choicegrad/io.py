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

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from choicegrad.errors import InputError

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


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file; InputError for a missing file, bad format or duplicate columns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), ["file not found"])
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(str(path), [f'unsupported file type "{suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    try:
        if suffix == ".csv":
            with path.open(newline="") as fh:
                header = next(csv.reader(fh), [])
            frame = pd.read_csv(path, keep_default_na=True)
        else:
            import pyarrow.parquet as pq  # here, not at the top: only Parquet needs it and it is slow to import

            header = pq.read_schema(path).names
            frame = pd.read_parquet(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(str(path), [f"cannot read as {suffix[1:]}: {exc}"]) from None
    dupes = sorted(n for n, c in Counter(header).items() if c > 1)
    if dupes:
        raise InputError(str(path), [f"duplicate column name{'s' if len(dupes) > 1 else ''}: {', '.join(dupes)}"])
    return frame


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
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise InputError(str(config), [f"not valid JSON: {exc}"]) from None
    if not isinstance(meta, dict):
        raise InputError(str(config), [f"expected a JSON object, got {type(meta).__name__}"])
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(str(weights), [f"not a valid safetensors file: {exc}"]) from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(str(weights), [f"weights hold NaN or inf (damaged or a diverged fit): {', '.join(sorted(bad)[:5])}"])
    return state, meta


save, load = save_checkpoint, load_checkpoint  # the old names, until callers in aligner.py and generators/ switch


def versions() -> dict[str, str]:
    """Package and torch versions recorded in every checkpoint."""
    from choicegrad import __version__  # here, not at the top: choicegrad/__init__ imports modules that import this one

    return {"choicegrad": __version__, "torch": torch.__version__}
