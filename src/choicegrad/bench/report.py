"""Benchmark results -> a markdown report and PNG plots.

    from choicegrad.bench.report import write_report
    write_report(Path("runs/bench"))          # reads results.csv (+ curves.csv, training.csv if present)

Inputs are the files the benchmark harness (choicegrad.bench.harness) writes into its output directory:

- results.csv: one row per (task, method, seed): the metrics below, `family` ("peer" or "choicegrad"),
  `headline` (the name of the task's headline metric column) and `budget` (scorer calls per context);
- curves.csv: quality vs diversity over sampling temperature (task, method, seed, temperature,
  distinct, median, max, top1);
- training.csv: validation score vs scorer calls while training (task, method, seed, step,
  scorer_calls, seconds, val_score).

Conventions of the report:

- every cell is "mean ± std" over seeds (sample std, ddof=1); one seed, or a spread that rounds to
  zero at the shown precision, shows the mean only; NaN shows as "—"; a metric that is NaN for every method of a task is left out;
- "ratio" is a method's headline mean over the best peer's headline mean. The best peer is the
  peer (family "peer") with the highest headline mean, *excluding* "exhaustive": exhaustive
  enumeration of the scorer is the limit a budgeted search aims at, not a peer under the budget.
  It is shown as a reference row (last, in italics) and takes no part in the bold marking;
- bold marks the best mean per column (ties, at the shown precision, all bold; no bold where every
  row ties): higher is better for
  quality metrics, distinct, new and ratio; lower is better for scorer calls, seconds and peak MB;
- "choicegrad leads / trails / ties the best peer": ties when the two headline means differ by at
  most one std (the larger of the two stds; with no std, only an exact tie is a tie).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from choicegrad.bench.report_format import (DASH, cell, colours, format_value, kept_section, machine_line, read_csv,
                                            save_figure)
from choicegrad.io import atomic_write_text

# Metric columns in the order of the report's tables; each with its display precision and direction.
SCORES = ("top1", "max", "median", "gap_oracle", "gap_scorer", "hit_oracle", "hit_scorer")
METRICS = SCORES + ("distinct", "new", "calls_generate", "calls_train", "seconds_train",
                    "seconds_generate", "peak_mb")
LOWER_IS_BETTER = frozenset({"calls_generate", "calls_train", "seconds_train", "seconds_generate", "peak_mb"})
REFERENCE = frozenset({"exhaustive"})      # methods shown as a reference row, never "the best peer"
DEFAULT_TITLE = "choicegrad benchmark report"

_DESCRIPTIONS = {
    "top1": "normalised true score of the rank-1 candidate",
    "max": "best normalised true score of the k candidates",
    "median": "median normalised true score of the k candidates",
    "gap_oracle": "gap closed by the rank-1 candidate on the ground truth, (f(x) - mean) / (f(x*) - mean)",
    "gap_scorer": "the same on the scorer",
    "hit_oracle": "share of contexts whose rank-1 candidate is the true optimum",
    "hit_scorer": "share of contexts whose rank-1 candidate is the scorer's optimum",
    "distinct": "distinct candidates per context",
    "new": "share of candidates not among the training rows",
    "calls_generate": "scorer calls per context at search / decoding time",
    "calls_train": "scorer calls while training (all contexts)",
    "seconds_train": "training wall time, s",
    "seconds_generate": "search / decoding wall time, s",
    "peak_mb": "peak resident memory above the level at the start of the method (training or search), MB",
    "ratio": "headline / best peer's headline",
}

Frames = Mapping[str, Optional[pd.DataFrame]]


# --------------------------------------------------------------------------------------------------
# Summary


def _is_reference(method) -> bool:
    return str(method).strip().lower() in REFERENCE


def _clean(results: pd.DataFrame) -> pd.DataFrame:
    """A copy with the columns the report relies on: numeric metrics, a family and a headline."""
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame, got {type(results).__name__}")
    missing = [c for c in ("task", "method") if c not in results.columns]
    if missing:
        raise ValueError(f"results lacks the column(s) {', '.join(missing)}; "
                         f"it has {', '.join(map(str, results.columns))}")
    frame = results.copy()
    frame["task"] = frame["task"].astype(str)
    frame["method"] = frame["method"].astype(str)
    for col in METRICS + ("seed", "budget", "contexts", "k"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    if "family" not in frame.columns:   # older files: pipelines are GENERATOR/ESTIMATOR/DECODER
        frame["family"] = np.where(frame["method"].str.contains("/"), "choicegrad", "peer")
    frame["family"] = frame["family"].fillna("").astype(str).str.strip().str.lower()
    if "headline" not in frame.columns:
        frame["headline"] = next((m for m in ("max", "gap_oracle", "top1") if m in frame.columns), "top1")
    frame["headline"] = frame["headline"].astype(str)
    return frame


def _headline(task_rows: pd.DataFrame) -> str:
    names = task_rows["headline"].dropna().astype(str)
    names = names[names.isin(task_rows.columns)]
    if len(names):
        return str(names.iloc[0])
    return next((m for m in ("max", "gap_oracle", "top1") if m in task_rows.columns), METRICS[0])


def _order(methods: pd.DataFrame) -> pd.DataFrame:
    """Peers first, then choicegrad pipelines, then reference rows; first appearance within each."""
    rank = np.where(methods["method"].map(_is_reference), 2, np.where(methods["family"] == "peer", 0, 1))
    return (methods.assign(_rank=rank, _pos=np.arange(len(methods)))
            .sort_values(["_rank", "_pos"], kind="stable").drop(columns=["_rank", "_pos"]))


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method): mean and std over seeds of every metric, and the ratio to the best peer.

    Returns one row per (task, method), tasks in order of first appearance, methods ordered peers,
    choicegrad pipelines, then reference rows (exhaustive). Columns: task, method, family, headline,
    budget, n_seeds, METRIC_mean and METRIC_std for every metric column present (std: sample std
    over seeds, NaN for one seed), headline_mean, headline_std, best_peer (name, or NaN),
    ratio_to_best_peer = headline_mean / the best peer's headline_mean (NaN when there is no peer
    or its headline mean is not positive). The best peer excludes "exhaustive".
    """
    frame = _clean(results)
    metrics = [m for m in METRICS if m in frame.columns]
    rows = []
    for task in frame["task"].unique():
        sub = frame[frame["task"] == task]
        head = _headline(sub)
        methods = sub.drop_duplicates("method")[["method", "family"]]
        for method, family in _order(methods).itertuples(index=False, name=None):
            runs = sub[sub["method"] == method]
            row = {"task": task, "method": method, "family": family, "headline": head,
                   "budget": runs["budget"].iloc[0] if "budget" in runs else np.nan,
                   "n_seeds": int(runs["seed"].nunique()) if "seed" in runs else len(runs)}
            for m in metrics:
                values = runs[m].dropna()
                row[f"{m}_mean"] = float(values.mean()) if len(values) else np.nan
                row[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            row["headline_mean"] = row.get(f"{head}_mean", np.nan)
            row["headline_std"] = row.get(f"{head}_std", np.nan)
            rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=["task", "method", "family", "headline", "budget", "n_seeds",
                                     "headline_mean", "headline_std", "best_peer", "ratio_to_best_peer"])
    out["best_peer"] = None
    out["ratio_to_best_peer"] = np.nan
    for task in out["task"].unique():
        at = out["task"] == task
        peer = _best(out[at], "peer")
        if peer is None:
            continue
        out.loc[at, "best_peer"] = peer["method"]
        denom = peer["headline_mean"]
        if np.isfinite(denom) and denom > 0:
            out.loc[at, "ratio_to_best_peer"] = out.loc[at, "headline_mean"] / denom
    return out.reset_index(drop=True)


def _best(task_summary: pd.DataFrame, family: str) -> Optional[pd.Series]:
    """The row of the best method of a family by headline mean (reference rows excluded), or None."""
    rows = task_summary[(task_summary["family"] == family) & ~task_summary["method"].map(_is_reference)]
    rows = rows[np.isfinite(rows["headline_mean"].astype(float))]
    if rows.empty:
        return None
    return rows.loc[rows["headline_mean"].astype(float).idxmax()]


# --------------------------------------------------------------------------------------------------
# Formatting


def _escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def _best_mask(means: pd.Series, metric: str, eligible: pd.Series) -> pd.Series:
    """True where a mean is the best of the column among eligible rows (ties at shown precision)."""
    ok = eligible & means.map(lambda v: v is not None and np.isfinite(v))
    if not ok.any():
        return pd.Series(False, index=means.index)
    best = means[ok].min() if metric in LOWER_IS_BETTER else means[ok].max()
    shown = format_value(best, metric)
    mask = ok & means.map(lambda v: format_value(v, metric) == shown)
    if mask.sum() > 1 and mask.sum() == ok.sum():
        return pd.Series(False, index=means.index)      # every row ties: nothing to single out
    return mask


def _table(summary: pd.DataFrame, headline: str) -> str:
    """The markdown table of one task's summary rows."""
    metrics = [m for m in METRICS if f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any()]
    columns = metrics + (["ratio"] if summary["ratio_to_best_peer"].notna().any() else [])
    eligible = ~summary["method"].map(_is_reference)
    cells = {}
    for m in columns:
        mean = summary["ratio_to_best_peer"] if m == "ratio" else summary[f"{m}_mean"]
        std = pd.Series(np.nan, index=summary.index) if m == "ratio" else summary[f"{m}_std"]
        bold = _best_mask(mean.astype(float), m, eligible)
        cells[m] = [f"**{cell(a, b, m)}**" if is_best else cell(a, b, m)
                    for a, b, is_best in zip(mean, std, bold)]

    def header(m: str) -> str:
        arrow = "↓" if m in LOWER_IS_BETTER else "↑"
        name = f"{m} (headline)" if m == headline else m
        return f"{name} {arrow}"

    lines = ["| " + " | ".join(["method"] + [header(m) for m in columns]) + " |",
             "|:---|" + "---:|" * len(columns)]
    for i, (method, ref) in enumerate(zip(summary["method"], ~eligible)):
        label = f"*{_escape(method)} (reference)*" if ref else _escape(method)
        lines.append("| " + " | ".join([label] + [cells[m][i] for m in columns]) + " |")
    return "\n".join(lines)


def _verdict(summary: pd.DataFrame, headline: str) -> str:
    """The plain-language comparison of one task: best pipeline vs best peer, and the reference."""
    pipe, peer = _best(summary, "choicegrad"), _best(summary, "peer")
    parts = []
    if pipe is not None:
        parts.append(f"Best choicegrad pipeline: {_escape(pipe['method'])} "
                     f"({headline} = {cell(pipe['headline_mean'], pipe['headline_std'], headline)}).")
    else:
        parts.append("No choicegrad pipeline has a finite headline value in this run.")
    if peer is not None:
        parts.append(f"Best peer: {_escape(peer['method'])} "
                     f"({cell(peer['headline_mean'], peer['headline_std'], headline)}).")
    else:
        parts.append("No peer under the budget has a finite headline value in this run.")
    if pipe is not None and peer is not None:
        x, y = float(pipe["headline_mean"]), float(peer["headline_mean"])
        outcome = _compare(x, float(pipe["headline_std"]), y, float(peer["headline_std"]))
        ratio = f"Ratio {format_value(x, headline)}/{format_value(y, headline)} = {x / y:.3f}" if y > 0 else \
            f"Ratio undefined (best peer's {headline} is not positive)"
        phrase = {"leads": "choicegrad leads the best peer",
                  "trails": "choicegrad trails the best peer",
                  "ties": "choicegrad ties the best peer (within one std)"}[outcome]
        parts.append(f"{ratio}: {phrase}.")
    for _, ref in summary[summary["method"].map(_is_reference)].iterrows():
        name = "Exhaustive enumeration of the scorer" if str(ref["method"]).strip().lower() == "exhaustive" \
            else f"Reference {_escape(ref['method'])}"
        parts.append(f"{name} reaches {cell(ref['headline_mean'], ref['headline_std'], headline)}"
                     + (f" (ratio {ref['ratio_to_best_peer']:.3f} to the best peer)."
                        if np.isfinite(ref["ratio_to_best_peer"]) else "."))
    return " ".join(parts)


def _compare(x: float, sx: float, y: float, sy: float) -> str:
    """'leads', 'trails' or 'ties' for x against y: a tie when |x - y| <= max(sx, sy)."""
    spread = max([s for s in (sx, sy) if np.isfinite(s)], default=0.0)
    if abs(x - y) <= spread or x == y:
        return "ties"
    return "leads" if x > y else "trails"


def _summary_table(summary: pd.DataFrame) -> str:
    has_ref = summary["method"].map(_is_reference).any()
    head = ["task", "headline", "budget", "seeds", "best pipeline", "value", "best peer", "value", "ratio"]
    head += ["exhaustive"] if has_ref else []
    lines = ["| " + " | ".join(head) + " |", "|:---|:---|---:|---:|:---|---:|:---|---:|---:|"
             + ("---:|" if has_ref else "")]
    for task in summary["task"].unique():
        sub = summary[summary["task"] == task]
        headline = str(sub["headline"].iloc[0])
        pipe, peer = _best(sub, "choicegrad"), _best(sub, "peer")
        budget = sub["budget"].dropna()
        seeds = int(sub["n_seeds"].max())

        def val(row):
            return DASH if row is None else cell(row["headline_mean"], row["headline_std"], headline)

        ratio = DASH
        if pipe is not None and np.isfinite(pipe["ratio_to_best_peer"]):
            ratio = format_value(float(pipe["ratio_to_best_peer"]), "ratio")
        cells = [f"[{_escape(task)}](#{_anchor(task)})", headline,
                 format_value(float(budget.iloc[0]), "calls") if len(budget) else DASH, str(seeds),
                 DASH if pipe is None else _escape(pipe["method"]), val(pipe),
                 DASH if peer is None else _escape(peer["method"]), val(peer), ratio]
        if has_ref:
            refs = sub[sub["method"].map(_is_reference)]
            cells.append(DASH if refs.empty else val(refs.iloc[0]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(summary: pd.DataFrame, targets, default: str) -> str:
    """Markdown table: each target (task, metric, op, value) against the default pipeline `default`
    (GENERATOR/ESTIMATOR/DECODER; on a task whose pipelines use another generator, e.g. pointer on
    item tasks, the one with the same estimator and decoder) and against the task's best pipeline.
    Targets of tasks not in the summary are left out."""
    lines = ["| task | target | default pipeline | value | met | best pipeline | value |",
             "|:---|:---|:---|---:|:---:|:---|---:|"]
    _, est, dec = default.split("/")
    for task, metric, op, value in targets:
        sub = summary[(summary["task"] == task) & (summary["family"] == "choicegrad")]
        if sub.empty:
            continue
        col = "ratio_to_best_peer" if metric == "ratio" else f"{metric}_mean"
        if op not in (">=", "<="):
            raise ValueError(f"target {task} {metric}: op must be '>=' or '<=', got {op!r}")
        mine = sub[sub["method"] == default]
        if mine.empty:  # item tasks run every pipeline with the pointer generator
            mine = sub[sub["method"] == f"pointer/{est}/{dec}"]
        better = (lambda v: v >= value) if op == ">=" else (lambda v: v <= value)
        pick = sub[col].astype(float)
        best = sub.loc[pick.idxmax() if op == ">=" else pick.idxmin()] if pick.notna().any() else None
        fmt = (lambda v: f"{v:.3f}") if metric in ("ratio",) + SCORES else (lambda v: f"{v:,.0f}")
        if mine.empty or not np.isfinite(float(mine[col].iloc[0])):
            got, met = DASH, DASH
        else:
            v = float(mine[col].iloc[0])
            got, met = fmt(v), "yes" if better(v) else "**no**"
        best_cell = (DASH, DASH) if best is None else (_escape(best["method"]), fmt(float(best[col])))
        lines.append(f"| {task} | {metric} {op} {fmt(value)} | {_escape(mine['method'].iloc[0]) if len(mine) else DASH} | "
                     f"{got} | {met} | {best_cell[0]} | {best_cell[1]} |")
    return "\n".join(lines)


def _anchor(task: str) -> str:
    """GitHub's heading anchor for '## TASK'."""
    return re.sub(r"[^\w\- ]", "", task.strip().lower()).replace(" ", "-")


def markdown(results: pd.DataFrame, *, images: Optional[Mapping[str, Sequence[str]]] = None,
             title: Optional[str] = DEFAULT_TITLE, preamble: str = "") -> str:
    """The whole report as markdown: title, preamble, a summary table (one row per task), then per
    task (in order of first appearance) a table of methods x metrics, a plain-language verdict and
    the image links `images[task]` (paths relative to where the markdown will live)."""
    summary = summarise(results)
    images = images or {}
    out = []
    if title:
        out += [f"# {title}", ""]
    if preamble:
        out += [preamble.strip(), ""]
    if summary.empty:
        out += ["No results.", ""]
        return "\n".join(out)
    out += ["## Summary", "", _summary_table(summary), "",
            "Each cell is the mean ± sample std over seeds (mean only for one seed or a spread below the shown precision; "
            f"{DASH} where undefined). The ratio is the headline divided by the best peer's headline; "
            "exhaustive enumeration is a reference, not a peer under the budget. In the task tables "
            "↑ / ↓ mark higher / lower is better and bold marks the best value of each column "
            "(reference rows excluded; ties all bold, none where every row ties).", ""]
    used = [m for m in METRICS + ("ratio",)
            if m == "ratio" or (f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any())]
    out += ["<details><summary>Columns</summary>", ""]
    out += [f"- **{m}**: {_DESCRIPTIONS[m]}" for m in used]
    out += ["", "</details>", ""]
    raw_all = _clean(results)
    for task in summary["task"].unique():
        sub = summary[summary["task"] == task].reset_index(drop=True)
        headline = str(sub["headline"].iloc[0])
        facts = [f"headline metric **{headline}** (higher is better)"]
        if sub["budget"].notna().any():
            facts.append(f"budget {format_value(float(sub['budget'].dropna().iloc[0]), 'calls')} scorer calls per context")
        raw = raw_all[raw_all["task"] == task]
        for col, word in (("k", "candidates per context"), ("contexts", "contexts")):
            if col in raw and raw[col].notna().any():
                facts.append(f"{int(raw[col].dropna().iloc[0])} {word}")
        if "seen" in raw and raw["seen"].notna().any():
            seen = bool(raw["seen"].dropna().iloc[0])
            facts.append("evaluation contexts **seen** in training" if seen else
                         "evaluation contexts **unseen** in training (held out)")
        n = sorted(set(int(v) for v in sub["n_seeds"]))
        facts.append(f"{n[0] if len(n) == 1 else f'{n[0]}-{n[-1]}'} seed{'s' if n[-1] != 1 else ''}")
        out += [f"## {task}", "", "; ".join(facts) + ".", "", _table(sub, headline), "",
                _verdict(sub, headline), ""]
        for path in images.get(task, []):
            stem = Path(str(path)).stem
            out += [f"![{_escape(task)}: {stem}]({Path(str(path)).as_posix()})", ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------------------------------
# Plots


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "task"


def _frames(dir_or_frames) -> dict[str, Optional[pd.DataFrame]]:
    """{'results', 'curves', 'training'} from a run directory or a mapping of frames."""
    if isinstance(dir_or_frames, (str, os.PathLike)):
        run = Path(dir_or_frames)
        if not (run / "results.csv").is_file():
            raise FileNotFoundError(f"{run / 'results.csv'} not found: is {run} a benchmark output directory?")
        return {name: read_csv(run / f"{name}.csv") for name in ("results", "curves", "training")}
    if isinstance(dir_or_frames, pd.DataFrame):
        return {"results": dir_or_frames, "curves": None, "training": None}
    if isinstance(dir_or_frames, Mapping):
        unknown = set(dir_or_frames) - {"results", "curves", "training"}
        if unknown:
            raise ValueError(f"unknown frame name(s) {sorted(unknown)}; use results, curves, training")
        return {name: dir_or_frames.get(name) for name in ("results", "curves", "training")}
    raise TypeError("dir_or_frames must be a run directory or a mapping {'results', 'curves', 'training'} "
                    f"of DataFrames, got {type(dir_or_frames).__name__}")


def _legend(ax, n: int) -> None:
    if n == 0:
        return
    if n <= 6:
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  ncol=1 if n <= 24 else 2, frameon=False)


def _plot_headline(summary: pd.DataFrame, task: str, path: Path) -> Optional[Path]:
    headline = str(summary["headline"].iloc[0])
    mean = summary["headline_mean"].astype(float).to_numpy()
    if not np.isfinite(mean).any():
        return None
    std = np.nan_to_num(summary["headline_std"].astype(float).to_numpy(), nan=0.0)
    ref = summary["method"].map(_is_reference).to_numpy()
    peer = (summary["family"] == "peer").to_numpy() & ~ref
    colour = np.where(ref, "#9e9e9e", np.where(peer, "#1f77b4", "#ff7f0e"))
    n = len(summary)
    fig = Figure(figsize=(max(6.0, 0.5 * n + 2.5), 4.8))
    ax = fig.subplots()
    x = np.arange(n)
    ax.bar(x, np.nan_to_num(mean, nan=0.0), yerr=std, color=list(colour), capsize=3, edgecolor="black",
           linewidth=0.5, hatch=None, error_kw={"elinewidth": 1})
    for i in np.flatnonzero(~np.isfinite(mean)):
        ax.text(x[i], 0, "n/a", ha="center", va="bottom", fontsize=7)
    best = _best(summary, "peer")
    handles = [Patch(color="#1f77b4", label="peer"), Patch(color="#ff7f0e", label="choicegrad")]
    if ref.any():
        handles.append(Patch(color="#9e9e9e", label="reference (exhaustive)"))
    if best is not None:
        line = ax.axhline(float(best["headline_mean"]), color="#1f77b4", linestyle="--", linewidth=1.2,
                          label=f"best peer: {best['method']}")
        handles.append(line)
    ax.set_xticks(x)
    long = max(len(str(m)) for m in summary["method"])
    ax.set_xticklabels(summary["method"], rotation=0 if long <= 8 and n <= 6 else 60,
                       ha="center" if long <= 8 and n <= 6 else "right", fontsize=8 if n <= 12 else 7)
    ax.set_ylabel(f"{headline} (mean ± std over seeds)")
    ax.set_title(f"{task}: {headline} per method")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save_figure(fig, path)


def _plot_quality_diversity(curves: Optional[pd.DataFrame], summary: pd.DataFrame, task: str,
                            path: Path) -> Optional[Path]:
    need = {"task", "method", "distinct", "median"}
    sub = None
    if curves is not None and need <= set(curves.columns):
        sub = curves[curves["task"].astype(str) == task].copy()
        for col in ("temperature", "distinct", "median", "max"):
            if col in sub:
                sub[col] = pd.to_numeric(sub[col], errors="coerce")
        sub = sub.dropna(subset=["distinct", "median"])
        if sub.empty:
            sub = None
    if sub is None:          # nothing sampled over temperature: no quality-diversity plot
        return None
    fig = Figure(figsize=(8.5, 5.2))
    ax = fig.subplots()
    methods = list(dict.fromkeys(sub["method"].astype(str)))
    peers = summary[(summary["family"] == "peer")
                    & summary.get("distinct_mean", pd.Series(np.nan, index=summary.index)).notna()
                    & summary.get("median_mean", pd.Series(np.nan, index=summary.index)).notna()]
    palette = colours(len(methods) + len(peers))
    annotate = len(methods) <= 6
    xs = []
    for colour, method in zip(palette, methods):
        runs = sub[sub["method"].astype(str) == method]
        if "temperature" in runs and runs["temperature"].notna().any():
            mean = runs.groupby("temperature", sort=True)[[c for c in ("distinct", "median", "max")
                                                           if c in runs]].mean()
        else:
            mean = runs[[c for c in ("distinct", "median", "max") if c in runs]].mean().to_frame().T
        xs += list(mean["distinct"])
        if len(mean) == 1:
            ax.plot(mean["distinct"], mean["median"], "D", color=colour, label=method)
            continue
        ax.plot(mean["distinct"], mean["median"], "-o", color=colour, markersize=4, label=method)
        if "max" in mean and mean["max"].notna().any():
            ax.plot(mean["distinct"], mean["max"], "--", color=colour, linewidth=1, alpha=0.7)
        if annotate and "temperature" in runs:
            for t in (mean.index[0], mean.index[-1]):
                ax.annotate(f"T={t:g}", (mean.loc[t, "distinct"], mean.loc[t, "median"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour)
    markers = "sP^vX<>hp*"
    for i, (colour, (_, row)) in enumerate(zip(palette[len(methods):], peers.iterrows())):
        style = "s" if _is_reference(row["method"]) else markers[i % len(markers)]
        ax.plot([row["distinct_mean"]], [row["median_mean"]], style, color=colour, markersize=8,
                markeredgecolor="black",
                label=f"{row['method']} ({'reference' if _is_reference(row['method']) else 'peer'})")
        xs.append(row["distinct_mean"])
    xs = np.asarray(xs, float)
    if np.isfinite(xs).any() and np.nanmin(xs) > 0 and np.nanmax(xs) / np.nanmin(xs) > 8:
        ax.set_xscale("log")
    ax.set_xlabel("distinct candidates per context")
    ax.set_ylabel("median normalised true score")
    has_max = "max" in sub and sub["max"].notna().any()
    ax.set_title(f"{task}: quality vs diversity over sampling temperature"
                 + ("\n(solid: median, dashed: max of the candidates)" if has_max else ""), fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, len(methods) + len(peers))
    return save_figure(fig, path)


def _plot_training(training: Optional[pd.DataFrame], task: str, path: Path) -> Optional[Path]:
    if training is None or not {"task", "method", "val_score"} <= set(training.columns):
        return None
    sub = training[training["task"].astype(str) == task].copy()
    for col in ("scorer_calls", "step", "val_score", "seed"):
        if col in sub:
            sub[col] = pd.to_numeric(sub[col], errors="coerce")
    xcol = "scorer_calls" if "scorer_calls" in sub and (sub["scorer_calls"] > 0).any() else "step"
    if xcol not in sub:
        return None
    sub = sub.dropna(subset=[xcol, "val_score"])
    sub = sub[sub[xcol] > 0]
    if sub.empty:
        return None
    if "seed" not in sub:
        sub["seed"] = 0
    fig = Figure(figsize=(8.5, 5.0))
    ax = fig.subplots()
    methods = list(dict.fromkeys(sub["method"].astype(str)))
    for colour, method in zip(colours(len(methods)), methods):
        runs = sub[sub["method"].astype(str) == method]
        series = [g.sort_values(xcol) for _, g in runs.groupby("seed", dropna=False)]
        thin = series if len(series) == 1 or len(methods) <= 8 else []   # many methods: means only
        for s in thin:
            ax.plot(s[xcol], s["val_score"], color=colour, linewidth=0.8,
                    alpha=0.35 if len(series) > 1 else 1.0, label=None if len(series) > 1 else method)
        if len(series) > 1:
            lo = max(float(s[xcol].min()) for s in series)
            hi = min(float(s[xcol].max()) for s in series)
            if hi > lo:
                grid = np.geomspace(lo, hi, 50)
                curves = [np.interp(np.log(grid), np.log(s[xcol].to_numpy(float)), s["val_score"].to_numpy(float))
                          for s in series]
                ax.plot(grid, np.mean(curves, axis=0), color=colour, linewidth=2,
                        label=f"{method} (mean of {len(series)})")
            else:   # seeds do not overlap: the per-seed lines must do
                for s in series if not thin else []:
                    ax.plot(s[xcol], s["val_score"], color=colour, linewidth=0.8, alpha=0.6)
                ax.plot([], [], color=colour, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("scorer calls while training" if xcol == "scorer_calls" else "training step")
    ax.set_ylabel("validation score")
    ax.set_title(f"{task}: training curves")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, len(methods))
    return save_figure(fig, path)


def plots(dir_or_frames: Union[str, os.PathLike, pd.DataFrame, Frames], out_dir: Path
          ) -> dict[str, list[Path]]:
    """Write PNG plots per task into out_dir; return {task: [paths written]}.

    dir_or_frames: a benchmark output directory (results.csv, and curves.csv / training.csv when
    present), a results DataFrame, or a mapping {'results', 'curves', 'training'} of DataFrames
    (None or missing: that plot is skipped). Per task: TASK_headline.png (headline metric per
    method, std error bars, best peer dashed), TASK_quality_diversity.png (median / max normalised
    true score vs distinct candidates over sampling temperature; needs curves) and
    TASK_training.png (validation score vs scorer calls; needs training). Files are written
    atomically (temp file + rename).
    """
    frames = _frames(dir_or_frames)
    if frames["results"] is None:
        raise ValueError("no results to plot")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(frames["results"])
    written: dict[str, list[Path]] = {}
    for task in summary["task"].unique():
        sub = summary[summary["task"] == task].reset_index(drop=True)
        slug = _slug(task)
        paths = [_plot_headline(sub, task, out_dir / f"{slug}_headline.png"),
                 _plot_quality_diversity(frames["curves"], sub, task, out_dir / f"{slug}_quality_diversity.png"),
                 _plot_training(frames["training"], task, out_dir / f"{slug}_training.png")]
        written[task] = [p for p in paths if p is not None]
    return written


# --------------------------------------------------------------------------------------------------
# The report file


def write_report(run_dir: Path, assets_dir: Optional[Path] = None, title: Optional[str] = DEFAULT_TITLE,
                 preamble: str = "") -> Path:
    """Write RUN_DIR/report.md and its plots (in assets_dir, default RUN_DIR/plots); return the md path.

    Reads RUN_DIR/results.csv (required) and curves.csv / training.csv (optional). Image links in the
    report are relative to RUN_DIR. Every file is written to a temp file and renamed into place, so a
    reader never sees a half-written report or image.
    """
    run_dir = Path(run_dir)
    frames = _frames(run_dir)
    results = frames["results"]
    if results is None:
        results = pd.DataFrame(columns=["task", "method"])
    assets = Path(assets_dir) if assets_dir is not None else run_dir / "plots"
    images: dict[str, list[str]] = {}
    if len(results):
        written = plots(frames, assets)
        for task, paths in written.items():
            images[task] = [Path(os.path.relpath(p.resolve(), run_dir.resolve())).as_posix() for p in paths]
    text = markdown(results, images=images, title=title, preamble=preamble)
    return atomic_write_text(run_dir / "report.md", text)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} seconds" if seconds < 60 else f"{seconds / 60:.0f} minutes"


def publish(run_dir: Path, docs_path: Path, command: str = "make bench", targets=(), default: str = "") -> Path:
    """Write the report of RUN_DIR to docs_path (e.g. docs/benchmarks.md) with its figures in a
    folder of the same name beside it (docs/benchmarks/), links relative to the markdown file.
    The preamble states the command, the machine, the date, the wall time and each task's setup
    (from RUN_DIR/setup.json), then `targets` (see targets_table) for the `default` pipeline."""
    run_dir, docs_path = Path(run_dir), Path(docs_path)
    frames = _frames(run_dir)
    results = frames["results"]
    if results is None or not len(results):
        raise FileNotFoundError(f"{run_dir / 'results.csv'}: no results to publish")
    assets = docs_path.parent / docs_path.stem
    written = plots(frames, assets)
    images = {task: [Path(os.path.relpath(q.resolve(), docs_path.parent.resolve())).as_posix() for q in paths]
              for task, paths in written.items()}
    setup_path = run_dir / "setup.json"
    setup = json.loads(setup_path.read_text()) if setup_path.is_file() else {}
    wall = setup.pop("_wall_seconds", None)
    updates = setup.pop("_updates", [])
    machine = setup.pop("_machine", None) or machine_line()      # where the run was made, not published
    lines = [f"Generated by `{command}`"
             + (f" in {_duration(wall)}" if wall else "") + f" on {machine}."
             + "".join(f" Then {', '.join(u['tasks'])} re-run on {u['date']} (`choicegrad bench --tasks "
                       f"{','.join(u['tasks'])} --update`, {_duration(u['seconds'])})." for u in updates), "",
             "Protocol (../shared/DESIGN.md): every method of a task uses the same scorer, the same contexts "
             "and the same budget of scorer calls per context at search / generation time; pipelines "
             "also train a generator first, whose scorer calls (amortised over all contexts) are shown "
             "apart as calls_train. Candidates are scored by the task's ground truth. Synthetic tasks fit "
             "the scorer on random rows, real landscapes on the rows below each context's median.", ""]
    if setup:
        lines += ["| task | contexts | budget / context | candidates | scorer rows | scorer fit (s) | "
                  "scorer test Spearman | scorer enumeration (s) |", "|:---|---:|---:|---:|---:|---:|---:|---:|"]
        for task, info in setup.items():
            test = info.get("scorer_test") or {}
            rho = test.get("spearman")
            lines.append(f"| {task} | {info.get('contexts', DASH)} | {info.get('budget', DASH)} | {info.get('k', DASH)} | "
                         f"{info.get('scorer_rows', DASH)} | {info.get('scorer_seconds', DASH)} | "
                         f"{DASH if rho is None else f'{rho:.3f}'} | {info.get('exhaustive_seconds', DASH)} |")
        lines.append("")
    if targets:
        lines += ["## Targets", "", f"The issue's targets for the default pipeline ({default}, the defaults of "
                  "`choicegrad fit` / `generate`), and the best pipeline on the same metric:", "",
                  targets_table(summarise(results), targets, default), "",
                  "The speed targets, what was tried for each target and why an unmet one falls short: "
                  "[targets.md](targets.md).", ""]
    text = markdown(results, images=images, title="Benchmarks", preamble="\n".join(lines))
    kept = kept_section(docs_path)
    return atomic_write_text(docs_path, text + ("\n" + kept if kept else ""))
