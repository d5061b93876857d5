"""Column specs as the CLI and load_table take them: name lists, feature globs, context kinds."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from choicegrad.errors import InputError


def parse_names(spec: str | Sequence[str] | None) -> list[str]:
    """'a,b, c' or ['a', 'b,c'] -> ['a', 'b', 'c']."""
    if spec is None:
        return []
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [p.strip() for part in parts for p in str(part).split(",") if p.strip()]


def natural_key(name) -> list:
    """Sort key putting 's2' before 's10': digit runs compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(name)) if part]


def expand_features(patterns: Sequence[str], columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Expand glob patterns ('s*') against `columns`; returns (names, problems). Names keep the order
    given; a pattern's matches come in natural order (s2 before s10), not the file's column order,
    so tables with the same columns in any order give the same features."""
    names, problems = [], []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            hits = sorted((c for c in columns if fnmatch.fnmatchcase(str(c), pat)), key=natural_key)
            if not hits:
                problems.append(f'feature pattern "{pat}" matches no column')
            names.extend(h for h in hits if h not in names)
        elif pat not in names:
            names.append(pat)
    return names, problems


def parse_context(spec: Sequence[str]) -> list[tuple[str, str | None]]:
    """['tf', 'temp:num', 'site:cat'] -> [('tf', None), ('temp', 'numeric'), ('site', 'categorical')]."""
    kinds = {"num": "numeric", "numeric": "numeric", "cat": "categorical", "categorical": "categorical"}
    out = []
    for item in spec:
        name, _, kind = item.partition(":")
        if kind and kind not in kinds:
            raise InputError("--context", [f'"{item}": kind must be one of num, cat (got "{kind}")'])
        out.append((name, kinds.get(kind) if kind else None))
    return out
