"""What every benchmark report shares: number formatting, reading a results table, figure colours and
saving, the machine line, and the budget section kept between markers in a published markdown file.

The reports (report.py, budget_report.py, online_report.py) import these public names; this module
imports no other benchmark module, so no report depends on another through it.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps

from choicegrad.io import atomic_path

DASH = "—"
# the budget benchmark's section of docs/benchmarks.md, which `make bench` keeps when it rewrites the rest
BEGIN, END = "<!-- budgets: begin -->", "<!-- budgets: end -->"


def format_value(value: float, metric: str) -> str:
    """One number at the metric's precision: 3 decimals for scores and shares, integers for calls,
    1 decimal for seconds and MB (3 decimals below 0.1), 3 decimals for ratios (0.998 is not 1.00)."""
    if value is None or not np.isfinite(value):
        return DASH
    if metric.startswith("calls"):
        return f"{value:,.0f}"
    if metric.startswith("seconds") or metric == "peak_mb":
        return f"{value:.1f}" if value == 0 or abs(value) >= 0.095 else f"{value:.3f}"
    if metric == "distinct":
        return f"{value:.1f}"
    return f"{value:.3f}"


def cell(mean: float, std: float, metric: str) -> str:
    """'mean ± std' at the metric's precision; the spread left out when it rounds to zero."""
    text = format_value(mean, metric)
    if text != DASH and std is not None and np.isfinite(std):
        spread = format_value(abs(std), metric)
        if spread.strip("0.,") != "":           # a spread below the shown precision is left out
            text += f" ± {spread}"
    return text


def read_csv(path: Path) -> Optional[pd.DataFrame]:
    """A benchmark table, or None for a missing, empty or header-only file."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    return frame if len(frame) else None


def save_figure(fig, path: Path) -> Path:
    """Save a figure as PNG atomically: a temp file in the same folder, then a rename."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def colours(n: int) -> list:
    """n distinct line colours (tab10, tab20 past 10)."""
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def machine_line() -> str:
    """The machine and date a figure was measured on, in one line."""
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, torch {torch.__version__} on the CPU, "
            f"{datetime.date.today().isoformat()}")


def splice(text: str, block: str) -> str:
    """`text` with its BEGIN..END section replaced by `block` (appended when it has none)."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + block.rstrip("\n") + tail
    return text.rstrip("\n") + "\n\n" + block


def kept_section(path: Path) -> str:
    """The BEGIN..END section of an existing markdown file ('' when absent)."""
    if not Path(path).is_file():
        return ""
    text = Path(path).read_text()
    if BEGIN not in text or END not in text:
        return ""
    return BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"
