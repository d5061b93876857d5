"""docs/architecture.md names every module of src/choicegrad, and only modules that exist.

A new module without its line in the doc fails here, and so does a module the doc still names after
it was renamed or removed. Paths are relative to src/choicegrad (`fitting.py`, `decoding/fix.py`),
in backticks; `__init__.py` files need no line. A backticked path under tests/ or benchmarks/ is
relative to the repository and must exist there.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "choicegrad"
DOC = ROOT / "docs" / "architecture.md"

#: Folders of the repository (not the package) that the doc may name files of.
REPO_FOLDERS = ("tests/", "benchmarks/")
#: A backticked token that is a path of a Python file: `run.py`, `bench/tasks/base.py`.
PY_PATH = re.compile(r"`([A-Za-z0-9_][A-Za-z0-9_/]*\.py)`")


def modules() -> set[str]:
    return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}


def named() -> set[str]:
    """The package's module paths the doc names (repository files under REPO_FOLDERS left out)."""
    return {p for p in PY_PATH.findall(DOC.read_text(encoding="utf-8")) if not p.startswith(REPO_FOLDERS)}


def named_repo_files() -> set[str]:
    return {p for p in PY_PATH.findall(DOC.read_text(encoding="utf-8")) if p.startswith(REPO_FOLDERS)}


def test_every_module_has_its_line():
    missing = sorted(modules() - named())
    assert not missing, f"docs/architecture.md does not name (in backticks, relative to src/choicegrad): {missing}"


def test_every_named_module_exists():
    stale = sorted(p for p in named() if not (PACKAGE / p).is_file())
    assert not stale, f"docs/architecture.md names modules that do not exist under src/choicegrad: {stale}"
    stale = sorted(p for p in named_repo_files() if not (ROOT / p).is_file())
    assert not stale, f"docs/architecture.md names files that do not exist in the repository: {stale}"


def test_the_check_reads_paths():
    """The pattern finds nested and top-level paths and leaves call examples alone."""
    text = 'see `decoding/fix.py` and `run.py`, not `load_objective("FILE.py:NAME")` or tests/x.py'
    assert set(PY_PATH.findall(text)) == {"decoding/fix.py", "run.py"}
    assert "decoding/fix.py" in modules() and "bench/tasks/base.py" in modules()
