"""Command-line interface: parses and validates arguments, then calls the library."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import InputError

app = typer.Typer(
    help="Train generators of discrete choices guided by a score model.\n\n"
    "Example: choicegrad fit-scorer table.csv --features a,b,c --score y --context user --out runs/one",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def user_errors(fn):
    """Bad input -> a message on stderr and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # our notes are printed by the command
                return fn(*args, **kwargs)
        except InputError as exc:
            _fail(str(exc))

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"choicegrad {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Train generators of discrete choices guided by a score model."""


def _echo_metrics(metrics: dict[str, dict[str, float]]) -> None:
    typer.echo(f"{'held-out set':<14}{'rows':>9}{'R^2':>9}{'Spearman':>10}{'per ctx':>9}")
    for name, m in metrics.items():
        per = m.get("spearman_per_context")
        typer.echo(f"{name:<14}{m['n']:>9}{m['r2']:>9.3f}{m['spearman']:>10.3f}{'' if per is None else f'{per:.3f}':>9}")


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError("--out", [f"{out} exists and is not a folder"])


FEATURES = typer.Option("--features", "-f", help="Feature columns, comma-separated; glob patterns allowed ('s?').")
SCORE = typer.Option("--score", "-y", help="Numeric score column (higher is better).")
CONTEXT = typer.Option("--context", "-c",
                       help="Context columns, comma-separated; append ':num' or ':cat' to override the detected kind.")


@app.command("fit-scorer", epilog="Example: choicegrad fit-scorer ../shared/data/tfbind8.parquet "
             "--features 's?' --score y --context tf --train-quantile 0.5 --out runs/tfbind8")
@user_errors
def fit_scorer_cmd(
    data: Annotated[Path, typer.Argument(help="Training table, CSV or Parquet.")],
    features: Annotated[list[str], FEATURES],
    score: Annotated[str, SCORE],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write (scorer.safetensors, scorer.json, scorer_metrics.json).")],
    context: Annotated[Optional[list[str]], CONTEXT] = None,
    ensemble: Annotated[int, typer.Option(min=1, help="Ensemble members k.")] = 1,
    beta: Annotated[float, typer.Option(min=0.0, help="Pessimism: score = mean - beta * std over members.")] = 0.0,
    ranking: Annotated[float, typer.Option(min=0.0, help="Weight of the pairwise ranking loss.")] = 0.0,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping usually ends sooner).")] = 200,
    batch_size: Annotated[int, typer.Option(min=1)] = 1024,
    train_quantile: Annotated[Optional[float], typer.Option(
        help="Fit only on rows below this score quantile of their context; report the rest as 'upper'.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    max_minutes: Annotated[Optional[float], typer.Option(min=0.01, help="Time limit per ensemble member.")] = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
) -> None:
    """Fit a scorer on a table and print its held-out metrics."""
    from .data import load_table, split_below_quantile
    from .train import ScorerFit, fit_scorer

    _check_out_dir(out)
    table = load_table(data, features, score, context)
    for note in table.warnings:
        typer.echo(f"warning: {note}", err=True)
    extra = {}
    if train_quantile is not None:
        below, upper = split_below_quantile(table, train_quantile)
        extra = {"upper": table.subset(upper)}
        table = table.subset(below)
    cfg = ScorerFit(ensemble=ensemble, beta=beta, ranking=ranking, epochs=epochs, batch_size=batch_size,
                    seed=seed, max_minutes=max_minutes, device=device)
    result = fit_scorer(table, cfg, extra_eval=extra)
    result.scorer.save(out)
    from .checkpoint import atomic_path

    with atomic_path(out / "scorer_metrics.json") as tmp:
        tmp.write_text(json.dumps({"data": str(data), "rows": len(table), "train_quantile": train_quantile,
                                   "fit": cfg.model_dump(), "metrics": result.metrics,
                                   "seconds": result.seconds}, indent=2) + "\n")
    typer.echo(f"fitted on {len(table)} rows in {result.seconds:.1f} s; wrote {out}/scorer.safetensors")
    _echo_metrics(result.metrics)


@app.command("score", epilog="Example: choicegrad score runs/tfbind8 candidates.csv --out scored.csv")
@user_errors
def score_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder written by fit-scorer or fit.")],
    rows: Annotated[Path, typer.Argument(help="Table of rows to score (feature and context columns), CSV or Parquet.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output table (CSV or Parquet) with a 'score' column added.")],
    beta: Annotated[Optional[float], typer.Option(min=0.0, help="Override the ensemble pessimism.")] = None,
) -> None:
    """Score rows with a fitted scorer; writes the rows with a 'score' column."""
    from .data import TABLE_SUFFIXES, read_table, write_table
    from .scorer import Scorer

    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError("--out", [f'unsupported output type "{out.suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    scorer = Scorer.load(run)
    if beta is not None:
        scorer.beta = beta
    frame = read_table(rows)
    if "score" in frame.columns:
        typer.echo(f'warning: {rows} already has a "score" column; it is replaced', err=True)
    frame = frame.assign(score=scorer.predict_frame(frame, str(rows)))
    write_table(frame, out)
    typer.echo(f"scored {len(frame)} rows -> {out}")


@app.command("demo", epilog="Example: choicegrad demo --out runs/demo")
@user_errors
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")] = Path("runs/demo"),
    data: Annotated[Optional[Path], typer.Option(help="Landscape to use (default: ../shared/data/pard3.parquet if present).")] = None,
) -> None:
    """The main job on an embedded default: fit a scorer on pard3 (or a built-in table), show metrics."""
    from .demo import run_demo

    run_demo(out, data, echo=typer.echo)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="choicegrad")


if __name__ == "__main__":
    sys.exit(main())
