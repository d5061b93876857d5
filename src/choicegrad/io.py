"""Checkpoints as safetensors (weights) + JSON (everything else). Loading never unpickles.

Every file is written to a temporary name in the same folder and renamed into place, so a crash or a
bad input never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from choicegrad.errors import InputError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(run_dir: str | Path, name: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write RUN/name.safetensors and RUN/name.json atomically (weights first, JSON last)."""
    run_dir = Path(run_dir)
    with atomic_path(run_dir / f"{name}.safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    with atomic_path(run_dir / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load(run_dir: str | Path, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read RUN/name.safetensors + RUN/name.json; InputError naming the missing or broken file."""
    run_dir = Path(run_dir)
    weights, config = run_dir / f"{name}.safetensors", run_dir / f"{name}.json"
    missing = [str(p) for p in (weights, config) if not p.is_file()]
    if missing:
        raise InputError(str(run_dir), [f"missing run file {m}" for m in missing])
    try:
        meta = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(str(config), [f"not valid JSON: {exc}"]) from None
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(str(weights), [f"not a valid safetensors file: {exc}"]) from None
    return state, meta


def versions() -> dict[str, str]:
    """Package and torch versions recorded in every checkpoint."""
    from choicegrad import __version__

    return {"choicegrad": __version__, "torch": torch.__version__}
