"""The budget benchmark's report: quality against scorer calls per context, one plot and table per task.

    publish_budgets("runs/budgets", "docs/benchmarks.md")

The section is kept between BEGIN and END markers in the markdown file, so `make bench` can rewrite
the rest of docs/benchmarks.md (report.publish keeps the section) and this command only its own part.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from choicegrad.bench.budgets import GENERATOR_MAX, K, curve_area, curves, line_curve
# BEGIN, END, kept_section and splice are also this module's public names (the budget section it owns)
from choicegrad.bench.report_format import (BEGIN, END, DASH, cell, colours, kept_section, machine_line, save_figure,
                                            splice)
from choicegrad.io import atomic_write_text, read_table

DEFAULT = "autoregressive/reinforce"
PEERS_ORDER = ("random", "anneal", "genetic", "gradient-ascent", "greedy")
ITEM_TASKS = ("items", "slates")   # judged on unseen lists by the normalised top-1 (the item tasks of bench.harness.SPECS)


def _methods(curve: pd.DataFrame, task: str) -> list[str]:
    present = list(dict.fromkeys(curve[curve["task"] == task]["method"]))
    pipes = [m for m in present if "/" in m]
    pipes = sorted(pipes, key=lambda m: (not m.endswith(DEFAULT.split("/")[1]) or not m.startswith("autoregressive"), m))
    return pipes + [m for m in PEERS_ORDER if m in present] + [m for m in present if m not in pipes and m not in PEERS_ORDER]


def task_table(frame: pd.DataFrame, task: str) -> str:
    """Methods x budgets (quality mean ± std over seeds), the area under the curve and contexts/s."""
    curve = curves(frame)
    sub = curve[curve["task"] == task]
    budgets = sorted(b for b in sub["budget"].unique())
    head = "| method | " + " | ".join(f"{int(b)} calls" for b in budgets) + " | area | contexts/s at 16 | seconds (largest budget) |"
    lines = [head, "|:---|" + "---:|" * (len(budgets) + 3)]
    for m in _methods(curve, task):
        lines_of = ["peer"] if (sub[sub["method"] == m]["line"] == "peer").any() else ["generator", "search"]
        for ln in lines_of:
            part = sub[(sub["method"] == m) & (sub["line"] == ln)].set_index("budget")
            if part.empty:
                continue
            label = m if ln == "peer" else f"{m} · {'generator alone' if ln == 'generator' else 'draws + polish'}"
            cells = [cell(part["quality"].get(b, math.nan), part["quality_std"].get(b, math.nan), "quality")
                     for b in budgets]
            full = line_curve(curve, task, m)
            a = curve_area(full["budget"], full["quality"]) if ln != "generator" else curve_area(part.index, part["quality"])
            speed = part["contexts_per_s"].get(16, math.nan)
            last = part["seconds"].iloc[-1]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {a:.3f} | "
                         f"{DASH if not np.isfinite(speed) else f'{speed:,.0f}'} | {last:.1f} |")
    ref = frame[(frame["task"] == task) & (frame["line"] == "reference")]
    if len(ref):
        r = ref.iloc[0]
        lines.append(f"| exhaustive (scorer enumeration, {int(r['calls']):,} calls) | "
                     + " | ".join(f"{r[r['metric']]:.3f}" for _ in budgets) + " | | | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines)


def plot_task(frame: pd.DataFrame, task: str, path: Path) -> Path:
    """Quality of the top-1 against scorer calls per context (log axis), one line per method."""
    curve = curves(frame)
    sub = curve[curve["task"] == task]
    metric = str(frame[frame["task"] == task]["metric"].iloc[0])
    methods = _methods(curve, task)
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.subplots()
    zero_x = 4
    for colour, m in zip(colours(len(methods)), methods):
        full = line_curve(curve, task, m)
        pos = full[full["budget"] > 0]
        ax.errorbar(pos["budget"], pos["quality"], yerr=pos["quality_std"].fillna(0), color=colour, marker="o",
                    markersize=3, linewidth=1.5, capsize=2, label=m)
        gen = sub[(sub["method"] == m) & (sub["line"] == "generator")]
        if len(gen):
            g = gen[gen["budget"] > 0]
            ax.plot(g["budget"], g["quality"], color=colour, linestyle=":", linewidth=1.2)
            z = gen[gen["budget"] == 0]
            if len(z):
                ax.plot([zero_x], z["quality"], color=colour, marker="s", markersize=5)
    ref = frame[(frame["task"] == task) & (frame["line"] == "reference")]
    if len(ref):
        ax.axhline(float(ref.iloc[0][metric]), color="#9e9e9e", linestyle="--", linewidth=1,
                   label="enumerating the scorer")
    ticks = [zero_x] + sorted(int(b) for b in sub["budget"].unique() if b > 0)
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0"] + [str(t) for t in ticks[1:]], fontsize=8, rotation=45)
    ax.minorticks_off()
    ax.set_xlabel(f"scorer calls per context (log; 0 = the generator's most likely row; dotted: the generator "
                  f"alone up to {GENERATOR_MAX})", fontsize=8)
    ax.set_ylabel(f"top-1 {metric} (ground truth)")
    seen = bool(frame[frame["task"] == task]["seen"].iloc[0])
    ax.set_title(f"{task}: quality against inference budget ({'seen' if seen else 'unseen'} contexts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", framealpha=0.85)
    return save_figure(fig, path)


def targets(frame: pd.DataFrame) -> list[str]:
    """The issue's budget targets for the default pipeline, measured."""
    curve = curves(frame)
    rows = ["| task | target | measured | met |", "|:---|:---|:---|:---:|"]

    def q(task, method, line, b):
        part = curve[(curve["task"] == task) & (curve["method"] == method) & (curve["line"] == line)
                     & (curve["budget"] == b)]
        return float(part["quality"].iloc[0]) if len(part) else math.nan

    def ok(flag):
        return "yes" if flag else "no"

    def fmt(value):
        return f"{value:.3f}" if np.isfinite(value) else DASH

    for task in curve["task"].unique():
        raw = frame[frame["task"] == task]
        seen, metric = bool(raw["seen"].iloc[0]), str(raw["metric"].iloc[0])
        default = DEFAULT if (curve[curve["task"] == task]["method"] == DEFAULT).any() else \
            next((m for m in curve[curve["task"] == task]["method"] if m.endswith("/reinforce")), None)
        if default is None:
            continue
        ref = raw[raw["line"] == "reference"]
        top16 = q(task, default, "generator", 16)
        peers = [m for m in PEERS_ORDER if (curve[(curve["task"] == task)]["method"] == m).any()]
        if not seen and task not in ITEM_TASKS:
            enum = float(ref.iloc[0][metric]) if len(ref) else math.nan
            rows.append(f"| {task} | generator-only top-1 at 16 calls within 0.005 of enumerating the scorer | "
                        f"{fmt(top16)} against {fmt(enum)} | {ok(top16 >= enum - 0.005)} |")
            g128 = curve[(curve["task"] == task) & (curve["method"] == default) & (curve["line"] == "generator")
                         & (curve["budget"] == 128)]
            if len(g128):
                sc = frame[(frame["task"] == task) & (frame["method"] == default) & (frame["line"] == "generator")
                           & (frame["budget"] == 128)]["gap_scorer"].mean()
                rows.append(f"| {task} | gap closed on the scorer >= 0.995 at 128 calls (generator alone) | "
                            f"{fmt(sc)} | {ok(sc >= 0.995)} |")
            for b in (16, 128):
                mine = q(task, default, "generator", b)
                best = max(((q(task, p, "peer", b), p) for p in peers), default=(math.nan, ""))
                rows.append(f"| {task} | default ahead of every peer at {b} calls | {fmt(mine)} against "
                            f"{best[1]} {fmt(best[0])} | {ok(mine > best[0])} |")
            best10 = max(((q(task, p, "peer", 160), p) for p in peers), default=(math.nan, ""))
            if np.isfinite(best10[0]):
                rows.append(f"| {task} | default at 16 calls >= the best peer at 160 | {fmt(top16)} against "
                            f"{best10[1]} {fmt(best10[0])} | {ok(top16 >= best10[0])} |")
        elif task == "items":
            rows.append(f"| items (unseen lists) | top-1 >= 0.99 at 16 calls | {fmt(top16)} | {ok(top16 >= 0.99)} |")
        elif task == "slates":
            mine = q(task, default, "search", 64)
            best = max(((q(task, p, "peer", 64), p) for p in peers), default=(math.nan, ""))
            rows.append(f"| slates (unseen lists, distinct items) | draws + polish ahead of every peer at 64 calls "
                        f"(generate's default) | {fmt(mine)} against {best[1]} {fmt(best[0])} | {ok(mine > best[0])} |")
        elif task == "ehrlich":
            g = q(task, default, "generator", 128)
            rows.append(f"| ehrlich (seen) | generator alone (topk) at 128 calls >= 0.897 | {g:.4f} | {ok(g >= 0.897)} |")
    return rows


def section(run_dir: Path, docs_path: Path, command: str) -> str:
    frame = read_table(Path(run_dir) / "budgets.csv")
    assets = docs_path.parent / docs_path.stem
    out = [BEGIN, "## Quality against inference budget; unseen contexts", "",
           f"Generated by `{command}` on {machine_line()}.", "",
           "Every method at several scorer-call budgets per context, judged by the ground truth of the row it "
           f"ranks first (gap closed; normalised score on items). Pipelines are trained once per seed; then "
           f"the **generator alone** returns its b most likely distinct rows (beam search) scored and ranked "
           f"(at 0 calls: its most likely row, no scorer call), and **draws + polish** is the default decoder "
           f"of `choicegrad generate` at that budget. K = {K} candidates per context. Peers search the scorer "
           "with the same calls. *area*: mean quality over log10(calls) from 16 to the largest budget "
           "(a pipeline's curve: the generator alone at 16, then draws + polish). *contexts/s*: evaluation "
           "contexts decoded per second, every context in one batch (with `--jobs 2`, one CPU thread per task; "
           "`benchmarks/unseen_speed.py` measures generation speed at scale).", "",
           "potts-ctx and mixed-ctx (choicegrad.bench.tasks.contextual) are trained from a log of 40,000 rows, "
           "one context per row, and judged on 256 contexts drawn apart from the log: **no evaluation context "
           "was seen in training**. items and slates (pages of distinct items; peers search distinct rows) are "
           "judged on item lists drawn apart from training (unseen lists). "
           "ehrlich's contexts are its training contexts (seen).", "",
           "### Targets", "", *targets(frame), ""]
    for task in frame["task"].unique():
        seen = bool(frame[frame["task"] == task]["seen"].iloc[0])
        img = plot_task(frame, task, assets / f"budget-{task}.png")
        rel = Path(os.path.relpath(img.resolve(), docs_path.parent.resolve())).as_posix()
        n = int(frame[(frame["task"] == task) & (frame["seed"] >= 0)]["seed"].nunique())
        out += [f"### {task} ({'seen' if seen else 'unseen'} contexts)", "",
                f"{int(frame[frame['task'] == task]['contexts'].iloc[0])} evaluation contexts, {n} seed"
                f"{'s' if n != 1 else ''}.", "", task_table(frame, task), "", f"![{task}: budget curve]({rel})", ""]
    out.append(END)
    return "\n".join(out) + "\n"


def publish_budgets(run_dir: str | Path, docs_path: str | Path, command: str = "choicegrad bench-budgets") -> Path:
    """Write (or replace) the budget section of docs_path, with its plots in docs_path's asset folder."""
    docs_path = Path(docs_path)
    old = docs_path.read_text() if docs_path.is_file() else "# Benchmarks\n"
    return atomic_write_text(docs_path, splice(old, section(Path(run_dir), docs_path, command)))
