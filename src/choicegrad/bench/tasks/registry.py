"""Every benchmark task by name, one registry: get_task("nk3"), get_task("items", slots=2),
get_task("tfbind8", data_dir="path/to/data"). Each is a BenchmarkTask (choicegrad.bench.tasks.base):
table landscapes (synthetic and real), contextual tasks and item tasks alike; the harness, the
online benchmark and the contract tests (tests/test_tasks.py) read them from here.

A real landscape (tfbind8, gb1, pard3) is read from NAME.parquet in the first of: the `data_dir`
argument, $CHOICEGRAD_DATA_DIR, SHARED_DATA_DIR (if it exists), the `choicegrad data fetch` cache
(a folder without NAME.parquet falls through to the cache).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

from choicegrad.bench.fetch import find_dataset
from choicegrad.bench.tasks.base import BenchmarkTask
from choicegrad.bench.tasks.contextual import mixed_ctx, potts_ctx
from choicegrad.bench.tasks.items import ItemSelectionTask, PickFiveTask, SlateTask
from choicegrad.bench.tasks.landscape import REAL, gb1, pard3, tfbind8
from choicegrad.bench.tasks.synthetic import ehrlich, nk, planted, potts
from choicegrad.errors import did_you_mean

DATA_DIR_ENV = "CHOICEGRAD_DATA_DIR"
# This repository's layout keeps the real landscapes in a `shared/data` folder beside the checkout:
# relative to the working directory (the repository root), used when it exists.
SHARED_DATA_DIR = Path("../shared/data")

#: name -> factory(**options) of the task (a real landscape's factory takes its file instead)
TASKS: dict[str, Callable[..., BenchmarkTask]] = {
    # table landscapes
    "potts": potts,
    "nk2": partial(nk, k=2),
    "nk3": partial(nk, k=3),
    "nk4": partial(nk, k=4),
    "ehrlich": ehrlich,
    "planted": planted,
    "tfbind8": tfbind8,
    "gb1": gb1,
    "pard3": pard3,
    # contexts as features, judged on unseen contexts
    "potts-ctx": potts_ctx,
    "mixed-ctx": mixed_ctx,
    # item lists (pointer form)
    "items": ItemSelectionTask,
    "slates": SlateTask,
    "pick-five": PickFiveTask,
}


def register_task(name: str, factory: Callable[..., BenchmarkTask]) -> Callable[..., BenchmarkTask]:
    """Add task `name` to TASKS: factory(**options) -> a BenchmarkTask (get_task passes its options).
    ValueError for a name already taken. Returns the factory, so it also reads as a class decorator's
    target: register_task("my-task", MyTask)."""
    if name in TASKS:
        raise ValueError(f"a task named {name!r} exists already; choose another name")
    if not callable(factory):
        raise ValueError(f"task {name!r}: expected a factory(**options) -> BenchmarkTask, got {factory!r}")
    TASKS[name] = factory
    return factory


def data_dir_for(data_dir: Optional[str | Path] = None) -> Optional[Path]:
    """The folder to look for real landscapes in: `data_dir`, else $CHOICEGRAD_DATA_DIR, else
    SHARED_DATA_DIR if it exists, else None (only the `choicegrad data fetch` cache)."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return SHARED_DATA_DIR if SHARED_DATA_DIR.is_dir() else None


def find_task_data(name: str, data_dir: Optional[str | Path] = None) -> Path:
    """NAME.parquet of a real landscape in data_dir_for(data_dir), else in the fetch cache, else
    FileNotFoundError (saying how to fetch it)."""
    return find_dataset(name, data_dir_for(data_dir))


def missing_data(names: Sequence[str], data_dir: Optional[str | Path] = None) -> list[str]:
    """A line per real landscape among `names` whose data find_task_data does not find (saying how to
    fetch it): checked before any long work."""
    problems = []
    for name in names:
        if name in REAL:
            try:
                find_task_data(name, data_dir)
            except FileNotFoundError as exc:
                problems.append(str(exc))
    return problems


def get_task(name: str, data_dir: Optional[str | Path] = None, **options) -> BenchmarkTask:
    """The task `name`. Synthetic tasks take their factory's options (seed, contexts, ...); real ones
    read NAME.parquet (find_task_data: data_dir, $CHOICEGRAD_DATA_DIR, ../shared/data, the fetch
    cache) and take no options."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}{did_you_mean(name, list(TASKS))}; choose from {', '.join(TASKS)}")
    if name in REAL:
        if options:
            raise ValueError(f"{name}: a real landscape takes no options, got {', '.join(sorted(options))}")
        return TASKS[name](find_task_data(name, data_dir))
    return TASKS[name](**options)
