"""`choicegrad bench`: the benchmark's commands, a typer sub-app the product CLI (choicegrad.cli) loads
when named. `choicegrad bench [OPTIONS]` runs the suite (`bench suite`); `bench online` and `bench
budgets` are the design rounds and quality against inference budget (also `bench-online` and
`bench-budgets`, as before). Imports typer only; each command imports the benchmark when run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from choicegrad.cli_common import command, require_bench, same_flags
from choicegrad.errors import InputError


class _SuiteByDefault(TyperGroup):
    """`choicegrad bench --out ...` (options first, no command name) runs `bench suite --out ...`."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in ctx.help_option_names:
            args = ["suite", *args]
        return super().parse_args(ctx, args)


bench_app = typer.Typer(
    cls=_SuiteByDefault,
    help="Benchmarks on tasks with known optima (the `bench` extra: pip install 'choicegrad[bench]'). "
         "`choicegrad bench [OPTIONS]` runs the suite, as `choicegrad bench suite [OPTIONS]` does.",
    epilog="Example: choicegrad bench --out runs/bench --docs docs/benchmarks.md   (the standard suite, `make bench`)\n\n"
           "Example: choicegrad bench budgets --out runs/budgets --jobs 2 --docs docs/benchmarks.md\n\n"
           "Example: choicegrad bench online --out runs/online --docs docs/online.md   (`make online`)",
    no_args_is_help=True, add_completion=False, rich_markup_mode=None)

#: The top-level names of the sub-commands, kept from before they were grouped (hidden in the help).
ALIASES = {"bench-online": "online", "bench-budgets": "budgets"}

Seeds = Annotated[str, typer.Option(help="Comma-separated seeds.")]
DataDir = Annotated[Optional[Path], typer.Option(help="Folder with tfbind8/gb1/pard3.parquet (default "
                                                      "$CHOICEGRAD_DATA_DIR, else ../shared/data, else the "
                                                      "`choicegrad data fetch` cache).")]


def _ints(value: Optional[str], flag: str, problems: list[str], positive: bool = False) -> Optional[list[int]]:
    """'0,1, 2' -> [0, 1, 2]: the one parser of the commands' lists of integers (seeds, budgets). A bad
    or empty list adds a 'FLAG: ...' line to `problems` (reported with the command's others) and gives
    None; None (no such option) stays None."""
    if value is None:
        return None
    try:
        numbers = [int(p) for p in value.split(",") if p.strip()]
    except ValueError:
        problems.append(f"{flag}: expected comma-separated integers, got {value!r}")
        return None
    if not numbers:
        problems.append(f"{flag}: expected at least one integer")
    elif positive and min(numbers) < 1:
        problems.append(f"{flag}: expected positive integers, got {value!r}")
    else:
        return numbers
    return None


def _names(value: str, what: str, presets: dict[str, tuple]) -> list[str]:
    """'a,standard' -> ['a', *presets['standard']]: a comma-separated list of names, presets expanded."""
    items = [n.strip() for part in value.split(",") for n in (presets.get(part.strip()) or [part]) if n.strip()]
    if not items:
        raise InputError(f"--{what}", ["expected a comma-separated list, got nothing"])
    return list(dict.fromkeys(items))


SUITE_FLAGS = same_flags("out", "tasks", "methods", "seeds", "data_dir", "docs", "update")


@bench_app.command("suite", epilog="Example: choicegrad bench --tasks potts,nk3 --methods quick --seeds 0 --out runs/bench-quick\n\n"
                   "Example: choicegrad bench --out runs/bench --docs docs/benchmarks.md   (the standard suite, `make bench`)\n\n"
                   "Example: choicegrad bench --tasks tfbind8 --methods anneal,autoregressive/reinforce/polish --out runs/tf\n\n"
                   "Example: choicegrad bench --tasks gb1 --update --out runs/bench --docs docs/benchmarks.md   (re-run one "
                   "task of the suite, keeping the others)")
@command(SUITE_FLAGS)
def bench_cmd(
    out: Annotated[Path, typer.Option(help="Folder for results.csv, curves.csv, training.csv, report.md and plots.")],
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks, or 'standard' (potts, nk3, ehrlich, items, slates, "
                                            "tfbind8, gb1). Also: nk2, nk4, pard3.")] = "standard",
    methods: Annotated[str, typer.Option(help="Comma-separated methods: peers (random, anneal, genetic, "
                                              "gradient-ascent, exhaustive), pipelines GENERATOR/ESTIMATOR/DECODER "
                                              "(e.g. autoregressive/reinforce/polish), 'default', or the presets "
                                              "'standard' / 'quick'.")] = "standard",
    seeds: Seeds = "0,1,2",
    data_dir: DataDir = None,
    docs: Annotated[Optional[Path], typer.Option(help="Also write the report to this markdown file, its figures "
                                                      "in a folder of the same name beside it.")] = None,
    update: Annotated[bool, typer.Option(help="Keep the other tasks' results already in --out and replace only "
                                              "those of --tasks (re-run one task of a suite).")] = False,
) -> None:
    """Run every method on every task and seed with the same scorer, contexts and scorer-call budget;
    score the candidates by ground truth; write a table (mean +- spread over seeds) and plots."""
    require_bench()
    from choicegrad.bench.harness import QUICK_METHODS, SPECS, STANDARD_METHODS, STANDARD_TASKS, parse_method, run_benchmark
    from choicegrad.bench.tasks.registry import missing_data
    from choicegrad.errors import did_you_mean
    from choicegrad.run import check_out_dir

    check_out_dir(out, "--out")
    task_list = _names(tasks, "tasks", {"standard": STANDARD_TASKS})
    method_list = _names(methods, "methods", {"standard": STANDARD_METHODS, "quick": QUICK_METHODS})
    problems = []
    seed_list = _ints(seeds, "--seeds", problems)
    for m in method_list:
        try:
            parse_method(m)
        except ValueError as exc:
            problems.append(str(exc))
    problems += [f"unknown task {t!r}{did_you_mean(t, list(SPECS))}; choose from {', '.join(SPECS)}"
                 for t in task_list if t not in SPECS]
    problems += missing_data(task_list, data_dir)
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


ONLINE_FLAGS = {**same_flags("out", "tasks", "methods", "seeds", "rounds", "batch", "minutes", "docs", "data_dir", "append"),
                "run_online": "choicegrad bench-online"}


@bench_app.command("online", epilog="Example: choicegrad bench online --out runs/online --docs docs/online.md   "
                   "(every task, method and seed: `make online`)\n\n"
                   "Example: choicegrad bench online --tasks ehrlich --methods designer,genetic --seeds 0 --rounds 3 "
                   "--out runs/online-quick")
@command(ONLINE_FLAGS)
def bench_online_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for online.csv (one row per round) and specs.json.")],
    tasks: Annotated[str, typer.Option(help="Comma-separated: tfbind8, gb1, ehrlich, nk3, holo-ehrlich (holo-bench's "
                                            "Ehrlich function: pip install --no-deps pytorch-holo).")] =
        "tfbind8,gb1,ehrlich,nk3",
    methods: Annotated[str, typer.Option(help="Comma-separated: designer, genetic, random, offline; "
                                              "'designer:min_distance=3' is a designer with other settings.")] =
        "designer,genetic,random,offline",
    seeds: Seeds = "0,1,2",
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
    require_bench()
    from choicegrad.bench.online import request_problems, run_online, task_specs
    from choicegrad.bench.online_report import publish_online

    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    problems: list[str] = []
    seed_list = _ints(seeds, "--seeds", problems)
    problems += request_problems(task_list, method_list, data_dir)
    if problems:
        raise InputError("run_online", problems)
    if docs is not None:
        from choicegrad.io import check_writable

        check_writable(docs, "--docs")
    try:
        run_online(task_list, method_list, seed_list, out, echo=lambda m: typer.echo(m, err=True),
                   specs=task_specs(task_list, rounds, batch, minutes), data_dir=data_dir, append=append)
    except FileNotFoundError as exc:
        raise InputError("choicegrad bench-online", [str(exc)]) from None
    typer.echo(f"wrote {out}/online.csv")
    if docs is not None:
        publish_online(out, docs)
        typer.echo(f"wrote {docs}")


BUDGETS_FLAGS = {**same_flags("out", "tasks", "pipelines", "peers", "budgets", "seeds", "jobs", "data_dir", "docs"),
                 "run_budgets": "choicegrad bench-budgets"}


@bench_app.command("budgets", epilog="Example: choicegrad bench budgets --out runs/budgets --jobs 2 --docs "
                   "docs/benchmarks.md   (every budget task, 3 seeds: part of `make bench`)\n\n"
                   "Example: choicegrad bench budgets --tasks items --seeds 0 --pipelines autoregressive/reinforce "
                   "--peers random,genetic --out runs/budgets-quick")
@command(BUDGETS_FLAGS)
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
    seeds: Seeds = "0,1,2",
    jobs: Annotated[int, typer.Option(min=1, help="Tasks run at once, each in its own process with one torch thread "
                                                  "(1: every task in this process).")] = 1,
    data_dir: DataDir = None,
    docs: Annotated[Optional[Path], typer.Option(help="Also write (or replace) the budget section of this markdown "
                                                      "file, figures in the folder of the same name beside it.")] = None,
) -> None:
    """Quality against inference budget: each pipeline (its generator alone, and draws + polish) and each
    peer at several scorer-call budgets per context, judged by ground truth; on unseen contexts for the
    contextual tasks. Also contexts per second at each budget."""
    require_bench()
    from choicegrad.bench.budgets import request_problems, run_budgets, run_budgets_parallel
    from choicegrad.run import check_out_dir

    check_out_dir(out, "--out")
    task_list, pipe_list, peer_list = _names(tasks, "tasks", {}), _names(pipelines, "pipelines", {}), _names(peers, "peers", {})
    problems: list[str] = []
    seed_list = _ints(seeds, "--seeds", problems)
    budget_list = _ints(budgets, "--budgets", problems, positive=True)
    problems += request_problems(task_list, pipe_list, peer_list, data_dir)
    if docs is not None:
        from choicegrad.io import check_writable

        check_writable(docs, "--docs")
    if problems:
        raise InputError("run_budgets", problems)
    try:
        options = {"pipelines": pipe_list, "peers": peer_list, "budgets": budget_list,
                   "data_dir": data_dir}
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
