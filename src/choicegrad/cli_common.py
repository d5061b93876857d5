"""What every command shares, the product's (choicegrad.cli) and the benchmark's (choicegrad.bench.cli):
one wrapper that turns errors into exit codes and library argument names into the command's flags,
and the checks of an output table. Imports typer only, so that both command modules import it
without importing each other."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Optional

import typer

from choicegrad.errors import InputError, Interrupted

#: Library argument name -> the flag (or flags) that set it, one table per command.
Flags = Mapping[str, str]

#: The pydantic models the commands build, by the library argument they are passed as: a
#: ValidationError on GeneratorFit.steps is the library's `generator_fit.steps`.
MODEL_ARGUMENTS = {"GeneratorFit": "generator_fit", "ScorerFit": "scorer_fit", "ScorerConfig": "scorer_fit.model",
                   "DesignConfig": "config", "TableSpec": "table", "ItemSpec": "table"}


def say(message: str) -> None:
    """A message on stderr, from rank 0 only: under torchrun every rank fails or stops alike."""
    from choicegrad import distributed

    if distributed.is_main():
        typer.echo(message, err=True)


def fail(message: str) -> None:
    """The message on stderr, then exit code 2."""
    say(f"error: {message}")
    raise typer.Exit(2)


def echo_line(message: str, flags: Optional[Flags] = None) -> None:
    """A library progress line: warnings on stderr, the rest on stdout; the keywords it suggests as
    the command's `flags` (text_with_flags)."""
    if flags:
        message = text_with_flags(message, flags)
    typer.echo(message, err=message.startswith("warning:"))


def require_bench() -> None:
    """Commands that need the `bench` extra (matplotlib): without it, say how to install it, exit code 2."""
    if importlib.util.find_spec("matplotlib") is None:
        fail("this command needs the benchmark extra (matplotlib): pip install 'choicegrad[bench]'")


def flag_of(name: str, flags: Flags) -> str:
    """The flag for library argument `name`, else `name` as it is (a file, a column). An argument of a
    settings model the table does not hold by its dotted name is looked up by its field
    ('generator_fit.steps' -> '--steps')."""
    if name in flags:
        return flags[name]
    model, _, field = name.rpartition(".")
    if model in MODEL_ARGUMENTS.values() and field in flags:
        return flags[field]
    return name


#: A keyword the library's messages suggest, `overwrite=True` or `scale=...`, or Run.use_objective.
_KEYWORD = re.compile(r"(?<![\w.])([a-z][a-z_]*)=(?:(True)\b|(?=\s|$))|\bRun\.use_objective\b")


def text_with_flags(text: str, flags: Flags) -> str:
    """A library message with the keywords it suggests as the command's flags: 'pass overwrite=True'
    -> 'pass --overwrite', 'give scale= to' -> 'give --objective-scale to', 'Run.use_objective' -> the
    --objective flag; keywords the command has no flag for are left as they are."""
    def swap(match: re.Match) -> str:
        if match.group(1) is None:
            return f"{flags['objective']} FILE.py:NAME" if "objective" in flags else match.group(0)
        return flags.get(match.group(1), match.group(0))
    return _KEYWORD.sub(swap, text)


def _problem_with_flags(problem: str, flags: Flags) -> str:
    """'k: expected ...' -> '--top-k: expected ...' when 'k' is a library argument in `flags`; the
    keywords in the text as flags (text_with_flags)."""
    name, sep, rest = problem.partition(": ")
    if sep and flag_of(name, flags) != name:
        return f"{flag_of(name, flags)}: {text_with_flags(rest, flags)}"
    return text_with_flags(problem, flags)


def with_flags(exc: InputError, flags: Flags) -> InputError:
    """The InputError with the library's argument names (its source and each problem's leading name)
    replaced by the command's flags. An error the command raised itself (its source a flag or the
    command) already speaks in flags and is left as it is."""
    if exc.source.startswith(("-", "choicegrad ")):
        return exc
    source, problems = flag_of(exc.source, flags), [_problem_with_flags(p, flags) for p in exc.problems]
    if source == exc.source and problems == exc.problems:
        return exc                      # nothing to replace: the error as raised (with any hints it carries)
    out = InputError(source, problems)
    hints = getattr(exc, "hints", None)
    if hints:
        out.args = (out.args[0] + "".join(f"\n  {h}" for h in hints),)
    return out


def _validation_problems(exc, flags: Flags) -> list[str]:
    """A pydantic ValidationError (an option the settings models reject, e.g. --device cuda without
    CUDA) as 'FLAG: reason' lines."""
    prefix = MODEL_ARGUMENTS.get(exc.title)
    problems = []
    for e in exc.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:
            problems.append(msg)
            continue
        field = ".".join(str(part) for part in e["loc"])
        name = f"{prefix}.{field}" if prefix else field
        flag = flag_of(name, flags)
        if flag == name:                       # not in the table: the flag of the same name
            flag = "--" + str(e["loc"][-1]).replace("_", "-")
        problems.append(f"{flag}: {msg}")
    return problems


def command(flags: Optional[Flags] = None) -> Callable:
    """Decorator of every command: bad input (InputError, a pydantic ValidationError) -> its problems
    on stderr, library argument names replaced by the command's `flags`, and exit code 2, no
    traceback. An OSError (disk full, no permission, ...) -> exit code 2 naming the path and the
    system's reason; every write is atomic, so what was there before is intact. Ctrl-C / SIGTERM ->
    a message and exit code 128 + signal number (130, 143)."""
    flags = dict(flags or {})

    def decorate(fn):
        name = f"choicegrad {fn.__name__.removesuffix('_cmd').replace('_', '-')}"

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                with warnings.catch_warnings(), _terminate_as_interrupt():
                    warnings.simplefilter("ignore", UserWarning)  # our notes are printed by the command
                    return fn(*args, **kwargs)
            except InputError as exc:
                fail(str(with_flags(exc, flags)))
            except OSError as exc:
                from choicegrad.errors import os_error

                fail(str(os_error(exc)))
            except Interrupted as exc:
                say(str(exc))
                raise typer.Exit(128 + exc.signum) from None
            except KeyboardInterrupt as exc:
                signum = getattr(exc, "signum", 2)
                say(f"interrupted by {'SIGTERM' if signum == 15 else 'SIGINT'}: every output is written whole or "
                    "not at all, so nothing is half-written")
                raise typer.Exit(128 + signum) from None
            except ValueError as exc:
                from pydantic import ValidationError

                if not isinstance(exc, ValidationError):
                    raise
                fail(str(InputError(name, _validation_problems(exc, flags))))

        return wrapper

    return decorate


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


def check_table_out(out: Path, flag: str = "--out") -> Path:
    """InputError(flag) unless `out` is a table file (CSV or Parquet) that can be written: the one
    check of every command's output table, before any long work."""
    from choicegrad.io import TABLE_SUFFIXES, check_writable

    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(flag, [f'unsupported output type "{out.suffix}"; expected one of {", ".join(TABLE_SUFFIXES)}'])
    return check_writable(out, flag)


def same_flags(*names: str) -> dict[str, str]:
    """{'data_dir': '--data-dir', ...}: the flags of arguments whose flag is their own name."""
    return {n: "--" + n.replace("_", "-") for n in names}
