"""Property-based fuzzing (hypothesis) of table loading, the CLI and the run-folder loaders.

Invariants: a result whose numbers are finite, or an InputError (in the CLI: exit code 2 and an
`error:` message); never any other exception, never a traceback, never a half-written output. The `ci`
profile (tests/conftest.py; `make test`) tries few examples from a fixed seed, `make fuzz` many. With
CHOICEGRAD_FUZZ_STATS=FILE the examples each test ran, and how they ended, are written to FILE (JSON).
Each distinct failure found is kept, as its minimal example, in KNOWN at the end: a regression case
that must pass now that it is fixed.

Flags that size work (--epochs, --ensemble, --pairwise, --samples, --budget) get small or moderately
large values, so that every example stays under a second or so; the rest also get huge ones.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import shutil
import tempfile
import warnings
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from typer.testing import CliRunner

from choicegrad.bench.tasks import PottsTask
from choicegrad.cli import app
from choicegrad.data.table import load_table
from choicegrad.errors import InputError
from choicegrad.run import Run
from choicegrad.scorer.model import Scorer

STATS: dict[str, Counter] = defaultdict(Counter)


@contextmanager
def tally(test: str):
    """Count one example of `test`, and the exception type of a failing one."""
    STATS[test]["examples"] += 1
    try:
        yield STATS[test]
    except BaseException as exc:
        STATS[test][f"failed: {type(exc).__name__}"] += 1
        raise


@pytest.fixture(autouse=True)
def fuzz_stats():
    """Write STATS to $CHOICEGRAD_FUZZ_STATS (when set) after each test, so a stopped run keeps its counts."""
    yield
    target = os.environ.get("CHOICEGRAD_FUZZ_STATS")
    if target:
        counts = {name: dict(sorted(c.items())) for name, c in sorted(STATS.items())}
        Path(target).write_text(json.dumps(counts, indent=2) + "\n")


def examples(share: float) -> settings:
    """This test's share of the profile's max_examples (a CLI example costs more than a table one)."""
    return settings(max_examples=max(1, round(settings.default.max_examples * share)))


# --- random tables and files -------------------------------------------------------------------------

WEIRD = [1e300, -1e300, 1e-45, -1e-45, 5e-324, float("inf"), float("-inf"), float("nan"), 0.0, -0.0, 3.4e38, 1e39]
NAMES = st.sampled_from(["a", "b", "s0", "s1", "y", "ctx", "ß", "列", "名 前", "x,y", 'q"t', "é;t", " ", "score"]) \
    | st.text(min_size=1, max_size=4)
NUMBERS = st.floats(-10, 10) | st.sampled_from(WEIRD)
CELLS = {
    "str": st.sampled_from(["a", "b", "c", "A", " a", "NA", "null", "1", "1.0", "True"]) | st.text(max_size=3),
    "unicode": st.text(st.characters(min_codepoint=0x80), min_size=1, max_size=3),
    "int": st.integers(-3, 3) | st.sampled_from([2**63 - 1, -(2**63), 10**30]),
    "float": NUMBERS,
    "bool": st.booleans(),
    "empty": st.just(""),
}
CELLS["mixed"] = st.one_of(*CELLS.values())
SCORES = {"float": st.floats(-10, 10), "weird": NUMBERS, "int": st.integers(-10**20, 10**20),
          "text": st.sampled_from(["1", "2.5", "x", "", "1e300", "-inf", "nan", "1,5"]), "mixed": NUMBERS | st.text(max_size=3)}


@st.composite
def column(draw, cells: st.SearchStrategy, n: int) -> list:
    """n cells, with missing ones (None) in some columns."""
    cell = (cells | st.none()) if draw(st.booleans()) else cells
    return draw(st.lists(cell, min_size=n, max_size=n))


@st.composite
def tables(draw) -> tuple[pd.DataFrame, list[str], str, list[str]]:
    """(frame, feature names, score name, context specs): 1-3 features, a score, 0-2 context columns."""
    n = draw(st.integers(0, 3) | st.integers(4, 12))
    n_feat, n_ctx = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    names = draw(st.lists(NAMES, min_size=n_feat + 1 + n_ctx, max_size=n_feat + 1 + n_ctx, unique=True))
    feats, score, ctx = names[:n_feat], names[n_feat], names[n_feat + 1:]
    data = {f: draw(column(CELLS[draw(st.sampled_from(sorted(CELLS)))], n)) for f in feats}
    data[score] = draw(column(SCORES[draw(st.sampled_from(["float", "float", "weird", "int", "text", "mixed"]))], n))
    specs = []
    for c in ctx:
        kind = draw(st.sampled_from(["cat", "num"]))
        data[c] = draw(column(st.sampled_from(["u", "v", "w", "ü"]) if kind == "cat" else NUMBERS, n))
        specs.append(c + draw(st.sampled_from(["", "", ":num", ":cat"])))
    return pd.DataFrame({k: pd.Series(v, dtype=object).infer_objects() for k, v in data.items()}), feats, score, specs


FORMATS = st.one_of(
    st.tuples(st.just("csv"), st.sampled_from([",", ",", ";", "\t"]), st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]),
              st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])),
    st.tuples(st.sampled_from(["parquet", "pq"]), st.none(), st.none(), st.none()),
)


def write(frame: pd.DataFrame, folder: Path, fmt: tuple, stem: str = "table") -> Path:
    """frame as CSV (delimiter, encoding, quoting from `fmt`; unencodable characters replaced) or Parquet
    (columns pyarrow cannot type are written as text)."""
    suffix, sep, encoding, quoting = fmt
    path = folder / f"{stem}.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False, sep=sep, encoding=encoding, errors="replace", quoting=quoting)
        return path
    try:
        frame.to_parquet(path, index=False)
    except Exception:  # mixed or out-of-range object columns: pyarrow refuses them, whatever they are
        text = frame.apply(lambda col: col.map(lambda v: None if v is None else str(v)) if col.dtype == object else col)
        text.to_parquet(path, index=False)
    return path


# --- 1. load_table ------------------------------------------------------------------------------------

CSV = ("csv", ",", "utf-8", csv.QUOTE_MINIMAL)
PARQUET = ("parquet", None, None, None)


@examples(3.0)
@given(table=tables(), fmt=FORMATS, glob=st.booleans())
def test_load_table_is_finite_or_input_error(table, fmt, glob):
    frame, feats, score, context = table
    with tally("load_table") as seen, tempfile.TemporaryDirectory() as tmp:
        path = write(frame, Path(tmp), fmt)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")        # notes ("a single category") and numpy overflow warnings
                data = load_table(path, ",".join(feats) if glob else feats, score, context)
        except InputError as exc:
            seen["input_error"] += 1
            assert exc.problems and all(p.strip() for p in exc.problems)
            return
        assert len(data) == len(frame) == len(data.rows) == len(data.ctx_cat) == len(data.ctx_num) > 0
        assert torch.isfinite(data.y).all(), data.y
        assert torch.isfinite(data.ctx_num).all(), data.ctx_num
        for j, size in enumerate(data.space.sizes):
            assert ((data.rows[:, j] >= -1) & (data.rows[:, j] < size)).all()
        for j, size in enumerate(data.context.cardinalities):
            assert ((data.ctx_cat[:, j] >= 0) & (data.ctx_cat[:, j] < size)).all()
        seen["ok"] += 1


# --- 2. the CLI ----------------------------------------------------------------------------------------

POTTS = PottsTask(slots=3, vocab=4, contexts=2, seed=0)
GOOD = POTTS.table(n=60, seed=1)                  # ctx (c0, c1), s0..s2 (a..d), y
LABELS, CONTEXTS = ["a", "b", "c", "d"], ["c0", "c1"]
HUGE = "99999999999999999999999"
INTS = st.integers(-3, 5).map(str) | st.sampled_from(["0", "-1", HUGE, "-" + HUGE, "1e3", "2.5", "nan", "abc", ""])
FLOATS = st.floats(-5, 5).map(repr) | st.sampled_from(["0", "-0", "nan", "inf", "-inf", "1e308", "1e999", "abc", ""])
DEVICES = st.sampled_from(["cpu", "cpu", "cuda", "cuda:3", "bogus", "", "meta", "mps", "CPU", "cpu:0"])


def invoke(args: list) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def check_cli(result) -> None:
    """Exit code 0, or 2 with an `error:` message on stderr; no other exception, no traceback."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception          # with its own traceback, so distinct crashes are reported apart
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        message = result.stderr.lower()
        assert "error:" in message and message.split("error:", 1)[1].strip(), result.output


def check_table(path: Path, rows: int) -> pd.DataFrame:
    """A written output table: `rows` rows and a finite score column."""
    frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    assert len(frame) == rows
    assert np.isfinite(pd.to_numeric(frame["score"]).to_numpy(float)).all(), frame
    return frame


@st.composite
def good_tables(draw) -> tuple[pd.DataFrame, list[str], str, list[str]]:
    """0-12 rows of a real table, a few cells replaced by random values."""
    n, start = draw(st.integers(3, 12) | st.integers(0, 2)), draw(st.integers(0, 40))
    frame = GOOD.iloc[start:start + n].reset_index(drop=True).astype(object)
    for _ in range(draw(st.integers(0, 2))):
        if n:
            col = draw(st.sampled_from(list(frame.columns)))
            frame.loc[draw(st.integers(0, n - 1)), col] = draw(CELLS["mixed"] | st.none())
    frame = frame.infer_objects()
    return frame, ["s0", "s1", "s2"], "y", draw(st.sampled_from([["ctx"], ["ctx"], [], ["ctx:num"], ["nothere"]]))


def some(*options: st.SearchStrategy) -> st.SearchStrategy:
    """0-3 of the options (each a [flag, value] pair), so that most examples pass most flags' checks."""
    return st.lists(st.one_of(*options), max_size=3, unique_by=lambda pair: pair[0]).map(lambda ps: [x for p in ps for x in p])


def flag(name: str, values: st.SearchStrategy) -> st.SearchStrategy:
    return values.map(lambda v: [name, v])


FIT_SCORER_FLAGS = some(
    flag("--epochs", st.sampled_from(["1", "1", "2", "0", "-1", "abc", ""])),
    flag("--ensemble", st.sampled_from(["1", "2", "0", "-3", "x"])),
    flag("--pairwise", st.sampled_from(["0", "1", "8", "-1", "100000", "x"])),
    flag("--batch-size", INTS), flag("--seed", INTS), flag("--beta", FLOATS),
    flag("--ranking", FLOATS), flag("--train-quantile", FLOATS),
    flag("--max-minutes", FLOATS), flag("--device", DEVICES),
)


def place(kind: str, table: Path, tmp: Path) -> Path:
    """A path argument: the table itself, or a folder, a missing file or a file of the wrong type."""
    if kind == "folder":
        return tmp
    if kind == "missing":
        return tmp / "missing.csv"
    if kind == "txt":
        return Path(shutil.copy(table, tmp / "table.txt"))
    return table


def good(rows: int) -> tuple[pd.DataFrame, list[str], str, list[str]]:
    return GOOD.iloc[:rows], ["s0", "s1", "s2"], "y", ["ctx"]


@examples(1.0)
@given(table=good_tables() | good_tables() | tables(), fmt=FORMATS, extra=FIT_SCORER_FLAGS,
       data_at=st.sampled_from(["table"] * 8 + ["folder", "missing", "txt"]),
       out_at=st.sampled_from(["new"] * 8 + ["empty-folder", "file"]),
       drop=st.sampled_from([None] * 12 + ["--features", "--score", "--out"]))
def test_fit_scorer_cli(table, fmt, extra, data_at, out_at, drop):
    frame, feats, score, context = table
    with tally("fit_scorer_cli") as seen, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = place(data_at, write(frame, tmp, fmt), tmp)
        out = tmp / "run"
        if out_at == "empty-folder":
            out.mkdir()
        elif out_at == "file":
            out.write_text("not a folder")
        named = {"--features": ",".join(feats), "--score": score, "--out": out}
        args = ["fit-scorer", data, *[x for k, v in named.items() if k != drop for x in (k, v)],
                *[x for c in context for x in ("--context", c)], "--epochs", "1", *extra]
        result = invoke(args)
        check_cli(result)
        if result.exit_code == 0:
            assert {"scorer.safetensors", "scorer.json", "scorer_metrics.json"} <= {p.name for p in out.iterdir()}
            assert all(torch.isfinite(t).all() for t in load_file(out / "scorer.safetensors").values())
            Scorer.load(out)
        elif out_at == "file":
            assert out.read_text() == "not a folder"
        else:
            assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
        seen[f"exit_{result.exit_code}"] += 1


def fit_run(folder: Path, task: PottsTask, seed: int) -> Path:
    """A small `choicegrad fit` run folder."""
    task.table(n=120, seed=seed).to_csv(folder / "table.csv", index=False)
    result = invoke(["fit", folder / "table.csv", "--features", "s?", "--score", "y", "--context", "ctx",
                     "--out", folder / "run", "--steps", "5", "--scorer-epochs", "2", "--seed", str(seed)])
    assert result.exit_code == 0, result.output
    return folder / "run"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Run folders: `scorer` (fit-scorer), `fit` (fit), `other` (fit on another space: 2 slots, 3 categories)."""
    tmp = tmp_path_factory.mktemp("fuzz-runs")
    GOOD.to_csv(tmp / "good.csv", index=False)
    result = invoke(["fit-scorer", tmp / "good.csv", "--features", "s?", "--score", "y", "--context", "ctx",
                     "--epochs", "2", "--out", tmp / "scorer"])
    assert result.exit_code == 0, result.output
    (tmp / "a").mkdir(), (tmp / "b").mkdir()
    return {"scorer": tmp / "scorer", "fit": fit_run(tmp / "a", POTTS, 1),
            "other": fit_run(tmp / "b", PottsTask(slots=2, vocab=3, contexts=3, seed=5), 2)}


ODD_CELLS = st.sampled_from(["e", "A", " a", "", "ü"]) | st.none() | st.integers(-1, 1) | st.floats()


@st.composite
def rows_to_score(draw) -> pd.DataFrame:
    """0-6 rows of the runs' columns (ctx, s0..s2): known values only, or some unknown or missing;
    sometimes a column dropped, or a score / extra column added."""
    n = draw(st.integers(1, 6) | st.just(0))
    odd = draw(st.booleans())
    labels = st.sampled_from(LABELS) | ODD_CELLS if odd else st.sampled_from(LABELS)
    contexts = st.sampled_from(CONTEXTS) | st.sampled_from(["c9", ""]) | st.none() if odd else st.sampled_from(CONTEXTS)
    frame = pd.DataFrame({
        "ctx": draw(st.lists(contexts, min_size=n, max_size=n)),
        **{s: draw(st.lists(labels, min_size=n, max_size=n)) for s in ("s0", "s1", "s2")},
    }).astype(object).infer_objects()
    change = draw(st.sampled_from([None] * 4 + ["drop", "score", "extra"]))
    if change == "drop":
        frame = frame.drop(columns=draw(st.sampled_from(list(frame.columns))))
    elif change:
        frame[change] = draw(st.lists(NUMBERS | st.text(max_size=2), min_size=n, max_size=n))
    return frame


@examples(1.0)
@given(rows=rows_to_score(), fmt=FORMATS,
       run_at=st.sampled_from(["scorer"] * 4 + ["fit"] * 2 + ["other", "empty", "missing", "file"]),
       out_suffix=st.sampled_from([".csv"] * 4 + [".parquet", ".pq", ".txt", "", "/"]),
       extra=some(flag("--beta", FLOATS), flag("--unknown", st.sampled_from(["error", "missing", "bogus", ""]))))
def test_score_cli(runs, rows, fmt, run_at, out_suffix, extra):
    with tally("score_cli") as seen, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = write(rows, tmp, fmt, stem="rows")
        run = {"empty": tmp, "missing": tmp / "nothing", "file": path}.get(run_at) or runs[run_at]
        out = tmp / f"scored{out_suffix}" if out_suffix != "/" else tmp
        result = invoke(["score", run, path, "--out", out, *extra])
        check_cli(result)
        if result.exit_code == 0:
            check_table(out, len(rows))
        elif out != tmp:
            assert not out.exists()
        seen[f"exit_{result.exit_code}"] += 1


def contexts_file(kind: str, tmp: Path) -> Path | None:
    if kind == "none":
        return None
    frames = {"good": pd.DataFrame({"ctx": ["c1", "c0"]}), "unknown": pd.DataFrame({"ctx": ["c9"]}),
              "nan": pd.DataFrame({"ctx": ["c1", None]}), "no-column": pd.DataFrame({"tf": ["c1"]}),
              "empty": pd.DataFrame({"ctx": pd.Series([], dtype=object)})}
    if kind in frames:
        frames[kind].to_csv(tmp / "contexts.csv", index=False)
        return tmp / "contexts.csv"
    return {"folder": tmp, "missing": tmp / "missing.csv"}[kind]


FIXES = st.sampled_from([f"s{i}={v}" for i in range(3) for v in LABELS] +
                        ["s0=zz", "bogus", "=", "s9=a", "s0=", "S0=a", "s0=a,s1=b", "s0=a=b", " s1 = b", "s0=a,s0=b"])
GENERATE_FLAGS = some(
    flag("--top-k", INTS | st.sampled_from(["1", "3", "64", "1000000000000"])),
    flag("--decoder", st.sampled_from(["argmax", "sample", "topk", "rerank", "polish", "anneal", "exhaustive",
                                       "Polish", "bogus", ""])),
    flag("--temperature", FLOATS), flag("--samples", st.sampled_from(["1", "7", "0", "-2", "100000", "x"])),
    flag("--budget", st.sampled_from(["1", "7", "0", "-2", "100000", "x"])), flag("--beta", FLOATS),
    flag("--seed", INTS), flag("--device", DEVICES),
)


@examples(1.0)
@given(extra=GENERATE_FLAGS, fixes=st.lists(FIXES, max_size=2),
       contexts=st.sampled_from(["none", "none", "good", "unknown", "nan", "no-column", "empty", "folder", "missing"]),
       run_at=st.sampled_from(["fit", "fit", "fit", "scorer", "missing"]),
       out_suffix=st.sampled_from([".csv", ".csv", ".parquet", ".txt", "/"]))
def test_generate_cli(runs, extra, fixes, contexts, run_at, out_suffix):
    with tally("generate_cli") as seen, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = tmp / f"generated{out_suffix}" if out_suffix != "/" else tmp
        ctx = contexts_file(contexts, tmp)
        run = runs.get(run_at, tmp / "nothing")
        args = ["generate", run, "--out", out, *extra, *[x for f in fixes for x in ("--fix", f)],
                *(["--contexts", ctx] if ctx else [])]
        result = invoke(args)
        check_cli(result)
        if result.exit_code == 0:
            frame = pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)
            assert np.isfinite(frame["score"].to_numpy(float)).all(), frame
            assert set(frame["s0"]) <= set(LABELS) and (frame["rank"] >= 1).all()
        elif out != tmp:
            assert not out.exists()
        seen[f"exit_{result.exit_code}"] += 1


# --- 3. damaged run folders -----------------------------------------------------------------------------

RUN_FILES = ["scorer.safetensors", "scorer.json", "generator.safetensors", "generator.json", "config.json",
             "contexts.csv", "metrics.csv"]
JSON_FILES = ["scorer.json", "generator.json", "config.json"]
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)
DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(RUN_FILES), st.integers(0, 10**6)),
    st.tuples(st.just("flip"), st.sampled_from(RUN_FILES), st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
                                                                     min_size=1, max_size=4)),
    st.tuples(st.just("json"), st.sampled_from(JSON_FILES), JSON),
    st.tuples(st.just("json-node"), st.sampled_from(JSON_FILES), st.tuples(st.integers(0, 10**6), JSON)),
    st.tuples(st.just("delete"), st.sampled_from(RUN_FILES), st.none()),
    st.tuples(st.just("swap"), st.sampled_from(RUN_FILES), st.sampled_from(["fit", "other", "scorer"])),
)


def nodes(value, path=()):
    """Every (path, value) in a JSON value, the root first."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from nodes(child, path + (key,))


def damage(folder: Path, how: str, name: str, arg, runs: dict[str, Path]) -> None:
    """Apply one DAMAGE to folder/name: truncate, flip bytes, replace the JSON or one of its nodes, delete,
    or swap in the file of another run."""
    path = folder / name
    if how == "swap":
        source = runs[arg] / name
        if source.is_file():
            shutil.copy(source, path)
        else:
            path.unlink(missing_ok=True)
        return
    if not path.is_file():
        return
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[:arg % (len(raw) + 1)])
    elif how == "flip" and raw:
        data = bytearray(raw)
        for at, mask in arg:
            data[at % len(data)] ^= mask
        path.write_bytes(bytes(data))
    elif how == "json":
        path.write_text(json.dumps(arg))
    elif how == "json-node":
        try:
            doc = json.loads(raw)
        except ValueError:
            return
        where, value = arg
        if isinstance(where, str) and not isinstance(doc, dict):
            return
        places = list(nodes(doc))
        at = (where,) if isinstance(where, str) else places[where % len(places)][0]   # a top-level key, or any node
        if not at:
            doc = value
        else:
            parent = doc
            for key in at[:-1]:
                parent = parent[key]
            parent[at[-1]] = value
        path.write_text(json.dumps(doc))
    elif how == "delete":
        path.unlink()


@examples(1.0)
@given(base=st.sampled_from(["fit", "fit", "scorer"]), damages=st.lists(DAMAGE, min_size=1, max_size=3))
def test_damaged_run_folder(runs, base, damages):
    with tally("damaged_run") as seen, tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(runs[base], Path(tmp) / "run"))
        for how, name, arg in damages:
            damage(folder, how, name, arg, runs)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        outcomes = []
        for load in (Scorer.load, Run.load):
            try:
                load(folder)
                outcomes.append("ok")
            except InputError:
                outcomes.append("input_error")
        (Path(tmp) / "rows.csv").write_text("ctx,s0,s1,s2\nc0,a,b,c\nc1,d,d,d\n")
        scored = invoke(["score", folder, Path(tmp) / "rows.csv", "--out", Path(tmp) / "scored.csv"])
        check_cli(scored)
        if scored.exit_code == 0:
            check_table(Path(tmp) / "scored.csv", 2)
        generated = invoke(["generate", folder, "--top-k", "3", "--decoder", "argmax", "--out", Path(tmp) / "gen.csv"])
        check_cli(generated)
        if generated.exit_code == 0:
            assert np.isfinite(pd.read_csv(Path(tmp) / "gen.csv")["score"].to_numpy(float)).all()
        assert scored.exit_code == 2 or outcomes[0] == "ok", scored.output       # the CLI loads as the library does
        assert generated.exit_code == 2 or outcomes[1] == "ok", generated.output
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before       # reading a run never writes to it
        seen[f"scorer_{outcomes[0]}, run_{outcomes[1]}"] += 1


# --- design rounds: propose on random tables, failures, spaces and flags ----------------------------------

SPACES = st.sampled_from([None] * 4 + [{"s0": list("abcdz")}, {"s1": list("dcbaq"), "s2": list("abcd")}] * 2
                         + [{"s0": ["a"]}, {"nope": ["a"]}, {"s1": []}, [1], {"s2": [1.5]}])
PROPOSE_FLAGS = some(
    flag("--batch", st.sampled_from(["1", "3", "5", "1", "3", "0", "-2", "x", "100000000"])),
    flag("--min-distance", st.sampled_from(["1", "2", "3", "1", "2", "4", "0"])),
    flag("--kappa", st.sampled_from(["0", "1", "2.5"]) | FLOATS),
    flag("--acquisition", st.sampled_from(["ucb", "thompson", "ucb", "thompson", "ei", ""])),
    flag("--ensemble", st.sampled_from(["2", "3", "2", "3", "1", "x"])), flag("--seed", INTS),
    flag("--device", st.just("cpu") | DEVICES), flag("--generator-steps", st.sampled_from(["0", "3", "-1", "x"])),
    flag("--local-share", st.sampled_from(["0", "0.5", "1", "1.5", "x"])),
    flag("--min-feasible", st.sampled_from(["0", "0.5", "1", "-0.1", "x"])),
)


@st.composite
def measured_tables(draw) -> tuple[pd.DataFrame, list[str], str, list[str]]:
    """10-40 rows of a real table (or a few), some scores replaced by failures (-inf, empty, NaN) or junk."""
    frame, feats, score, context = draw(good_tables())
    n, start = draw(st.integers(10, 40)), draw(st.integers(0, 20))
    if draw(st.booleans()):
        frame = GOOD.iloc[start:start + n].reset_index(drop=True)
    frame = frame.astype({score: object})
    for i in draw(st.lists(st.integers(0, max(0, len(frame) - 1)), max_size=6)):
        if len(frame):
            frame.loc[i, score] = draw(st.sampled_from(["-inf", "", None, float("nan"), "-Infinity", "inf", "x"]))
    return frame, feats, score, context


@examples(0.25)
@given(table=measured_tables() | tables(), fmt=FORMATS, extra=PROPOSE_FLAGS, space=SPACES,
       state_at=st.sampled_from([None, None, "new", "new", "file", "other-folder"]),
       contexts_at=st.sampled_from([None, None, None, "known", "known", "unknown", "empty"]))
def test_propose_cli(table, fmt, extra, space, state_at, contexts_at):
    frame, feats, score, context = table
    with tally("propose_cli") as seen, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write(frame, tmp, fmt)
        out = tmp / "next.csv"
        args = ["propose", data, "--features", ",".join(feats), "--score", score, "--out", out,
                *[x for c in context for x in ("--context", c)], "--max-minutes", "0.02", *extra]
        if "--batch" not in extra:
            args += ["--batch", "2"]
        if space is not None:
            (tmp / "space.json").write_text(json.dumps(space))
            args += ["--space", tmp / "space.json"]
        if state_at is not None:
            state = tmp / "state"
            if state_at == "file":
                state.write_text("x")
            elif state_at == "other-folder":
                state.mkdir()
                (state / "keep.txt").write_text("keep")
            args += ["--state", state]
        if contexts_at is not None:
            values = {"known": ["c0"], "unknown": ["zz"], "empty": []}[contexts_at]
            pd.DataFrame({"ctx": values}, dtype=object).to_csv(tmp / "ctx.csv", index=False)
            args += ["--contexts", tmp / "ctx.csv"]
        result = invoke(args)
        check_cli(result)
        if result.exit_code == 0:
            batch = pd.read_csv(out, keep_default_na=False)
            assert {"predicted", "uncertainty", "rank"} <= set(batch.columns)
            assert len(batch) or "fewer rows not yet measured remain" in result.output   # every row measured
            assert np.isfinite(batch[[c for c in ("predicted", "uncertainty", "p_feasible") if c in batch]]
                               .to_numpy(float)).all()
            cols = [c for c in batch.columns if c in frame.columns and c != score]
            told = set(map(tuple, frame[cols].astype(str).to_numpy()))
            assert not told & set(map(tuple, batch[cols].astype(str).to_numpy()))     # never a measured row
        else:
            assert not out.exists()
        if state_at == "other-folder":
            assert (tmp / "state" / "keep.txt").read_text() == "keep"
        seen[f"exit_{result.exit_code}"] += 1


# --- the failures found, one minimal example each --------------------------------------------------------

def found(where: str, what: str) -> tuple:
    """A fixed failure, kept as a regression case: `what` it was and on which branch it was mended.
    No mark: the case must pass."""
    return ()


ROW = {"fixes": [], "contexts": "none", "run_at": "fit", "out_suffix": ".csv"}
KNOWN = [
    pytest.param(test_load_table_is_finite_or_input_error,
                 dict(table=(pd.DataFrame({"a": ["x", "y"], "y": [0.0, 1e300]}), ["a"], "y", []), fmt=CSV, glob=False),
                 marks=found("wt-a", "a score of 1e300 becomes inf in float32 (data/table.py load_table)"),
                 id="load_table-score-1e300"),
    pytest.param(test_load_table_is_finite_or_input_error,
                 dict(table=(pd.DataFrame({"a": [1e300, 0.0], "y": [0.0, 1.0]}), ["a"], "y", []), fmt=PARQUET, glob=False),
                 marks=found("wt-a", "an integral float label beyond int64 raises TypeError (data/space.py as_labels)"),
                 id="load_table-feature-1e300"),
    pytest.param(test_score_cli,
                 dict(rows=pd.DataFrame({"ctx": ["c0"], "s0": ["a"], "s1": ["b"], "s2": [2.0**63]}), fmt=CSV,
                      run_at="scorer", out_suffix=".csv", extra=[]),
                 marks=found("wt-a", "TypeError from data/space.py as_labels via Scorer.predict_frame"),
                 id="score-feature-2**63"),
    pytest.param(test_fit_scorer_cli, dict(table=good(1), fmt=CSV, extra=[], data_at="table", out_at="new", drop=None),
                 marks=found("main", "one row: ZeroDivisionError (scorer/fit.py fit_scorer, empty training split)"),
                 id="fit-scorer-1-row"),
    pytest.param(test_fit_scorer_cli, dict(table=good(2), fmt=CSV, extra=[], data_at="table", out_at="new", drop=None),
                 marks=found("main", "two rows: exit 0 with NaN weights (scorer/fit.py fit_scorer: y_std of one training row)"),
                 id="fit-scorer-2-rows"),
    *[pytest.param(test_fit_scorer_cli, dict(table=good(12), fmt=CSV, extra=["--device", device], data_at="table",
                                             out_at="new", drop=None),
                   marks=found("main", f"--device {device!r}: torch's error escapes (scorer/fit.py fit_scorer)"),
                   id=f"fit-scorer-device-{device or 'empty'}") for device in ("cuda", "", "meta")],
    *[pytest.param(test_fit_scorer_cli, dict(table=good(12), fmt=CSV, extra=[flag, value], data_at="table", out_at="new",
                                             drop=None), marks=found("main", what), id=name)
      for name, flag, value, what in [
          ("fit-scorer-seed-huge", "--seed", HUGE, "ValueError: Overflow when unpacking long long (scorer/fit.py seed_everything)"),
          ("fit-scorer-seed-negative", "--seed", "-1", "ValueError: expected non-negative integer (scorer/fit.py seed_everything)"),
          ("fit-scorer-batch-size-huge", "--batch-size", HUGE, "ValueError: Overflow when unpacking long long (scorer/fit.py fit_scorer)"),
          ("fit-scorer-ranking-inf", "--ranking", "inf", "exit 0 with NaN weights (scorer/fit.py fit_scorer)")]],
    pytest.param(test_generate_cli, dict(extra=["--seed", HUGE], **ROW),
                 marks=found("wt-a", "ValueError: Overflow when unpacking long long (run.py Run.generate)"),
                 id="generate-seed-huge"),
    pytest.param(test_generate_cli, dict(extra=["--top-k", HUGE], **ROW),
                 marks=found("wt-a", "OverflowError (decoding/decoders.py distinct_draws)"), id="generate-top-k-huge"),
    *[pytest.param(test_generate_cli, dict(extra=["--device", device], **ROW),
                   marks=found("wt-a", f"--device {device!r}: torch's error escapes (Scorer.load, Run.generate)"),
                   id=f"generate-device-{device or 'empty'}") for device in ("cuda", "", "meta")],
    pytest.param(test_damaged_run_folder, dict(base="fit", damages=[("json-node", "generator.json", ("context", None))]),
                 marks=found("wt-a", 'generator.json "context": null raises pydantic ValidationError (run.py _check_pair)'),
                 id="damaged-generator-context-null"),
    pytest.param(test_damaged_run_folder, dict(base="fit", damages=[("flip", "config.json", [(0, 0x80)])]),
                 marks=found("wt-a", "config.json not UTF-8 raises UnicodeDecodeError (run.py _read_config)"),
                 id="damaged-config-json-not-utf8"),
    pytest.param(test_damaged_run_folder, dict(base="fit", damages=[("flip", "scorer.json", [(0, 0xFF)])]),
                 id="damaged-scorer-json-not-utf8"),      # was UnicodeDecodeError (io.load_checkpoint)
    pytest.param(test_damaged_run_folder, dict(base="scorer", damages=[("json", "scorer.json", None)]),
                 id="damaged-scorer-json-null"),          # was TypeError (Scorer.load)
]


@pytest.mark.parametrize("test, arguments", KNOWN)
def test_known_failure(request, test, arguments):
    """Each distinct failure the fuzzer found, as its minimal example."""
    body = test.hypothesis.inner_test
    if "runs" in inspect.signature(body).parameters:
        arguments = {**arguments, "runs": request.getfixturevalue("runs")}
    body(**arguments)
