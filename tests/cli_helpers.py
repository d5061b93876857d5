"""Shared helpers of the CLI tests: run a command in-process, check an exit-2 message."""

from typer.testing import CliRunner

from choicegrad.cli import app


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_input_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for n in needles:
        assert n in result.output, result.output
