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


def as_written_before_manifests(folder):
    """Make run folder `folder` look like one written before run.json existed: no run.json, and no
    weights digest in scorer.json (whose presence tells a run that lost its run.json)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    (folder / "run.json").unlink()
    scorer = json.loads((folder / "scorer.json").read_text())
    scorer.pop("weights_sha256", None)
    (folder / "scorer.json").write_text(json.dumps(scorer))
