"""Tasks by name: get_task("nk3"), get_task("tfbind8", data_dir="../shared/data")."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Optional

from choicegrad.errors import did_you_mean
from choicegrad.bench.tasks.landscape import REAL, Landscape, gb1, pard3, tfbind8
from choicegrad.bench.tasks.synthetic import ehrlich, nk, potts

DEFAULT_DATA_DIR = Path("../shared/data")   # relative to the working directory, as the demo reads it

TASKS: dict[str, Callable[..., Landscape]] = {
    "potts": potts,
    "nk2": partial(nk, k=2),
    "nk3": partial(nk, k=3),
    "nk4": partial(nk, k=4),
    "ehrlich": ehrlich,
    "tfbind8": tfbind8,
    "gb1": gb1,
    "pard3": pard3,
}


def get_task(name: str, data_dir: Optional[str | Path] = None, **options) -> Landscape:
    """The task `name`. Synthetic tasks take their factory's options (seed, contexts, ...); real ones
    read DATA_DIR/NAME.parquet (default ../shared/data), else the `choicegrad data fetch` cache, and
    take no options."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}{did_you_mean(name, list(TASKS))}; choose from {', '.join(TASKS)}")
    if name in REAL:
        if options:
            raise ValueError(f"{name}: a real landscape takes no options, got {', '.join(sorted(options))}")
        from choicegrad.bench.fetch import find_dataset

        return TASKS[name](find_dataset(name, Path(DEFAULT_DATA_DIR if data_dir is None else data_dir)))
    return TASKS[name](**options)
