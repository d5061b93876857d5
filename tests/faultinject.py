"""Run a choicegrad command the way the fault-injection tests need it: in a fresh process forked from
a server that imported torch and choicegrad once (multiprocessing's forkserver), so that running a
command once per disk operation costs the command's own work, not an interpreter start each time.

    out = run(["fit", "t.csv", ...], cwd, faults="kill@12")   # Outcome(code=-9, stdout, stderr)
    ops = operations(["fit", ...], cwd)                        # [("lock", ".run.lock"), ("mkdir", ...), ...]

`quick=True` shortens the generator's warm start and a design round's generator training in the
child (the same files are written, through the same code, in less time).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

_CTX = mp.get_context("forkserver")
# Imported once, in the server (by name from site-packages: Python 3.11's server preloads before it takes
# this process's sys.path, so not this module). torch's optimisers import torch._dynamo (1 s) on first use.
_CTX.set_forkserver_preload(["torch", "torch._dynamo", "pandas", "pyarrow.parquet", "choicegrad.cli",
                             "choicegrad.run", "choicegrad.design", "choicegrad.bench.tasks"])


@dataclass
class Outcome:
    code: int            # the exit code, or -N when killed by signal N
    stdout: str
    stderr: str


def _quick() -> None:
    """Fewer warm-start and design-round generator steps (what takes most of a tiny run's time)."""
    import choicegrad.design as design
    import choicegrad.design.designer as designer
    from choicegrad.run import Run

    fit = Run.fit.__func__

    def quick_fit(cls, *args, generator_fit=None, **kwargs):
        return fit(cls, *args, generator_fit=generator_fit.model_copy(update={"warm_start_steps": 2}), **kwargs)

    Run.fit = classmethod(quick_fit)
    config = design.DesignConfig

    class QuickDesign(config):
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "generator_steps": 4, "max_minutes": 0.002})

    design.DesignConfig = QuickDesign
    generator_fit = designer.GeneratorFit

    class QuickGeneratorFit(generator_fit):
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "warm_start_steps": 2})

    designer.GeneratorFit = QuickGeneratorFit


def _child(args: list[str], cwd: str, faults: str, quick: bool, out: str, err: str) -> None:
    fd_out, fd_err = os.open(out, os.O_WRONLY | os.O_CREAT), os.open(err, os.O_WRONLY | os.O_CREAT)
    os.dup2(fd_out, 1)
    os.dup2(fd_err, 2)
    os.chdir(cwd)
    code = 0
    try:
        torch.set_num_threads(1)
        if quick:
            _quick()
        if faults:
            os.environ["CHOICEGRAD_FAULTS"] = faults
        from choicegrad.cli import app

        app(args, prog_name="choicegrad")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:                       # a traceback: what the tests look for
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run(args: list[str], cwd: Path, faults: str = "", quick: bool = True, timeout: float = 120) -> Outcome:
    """Run `choicegrad ARGS` in `cwd` with CHOICEGRAD_FAULTS=`faults`; its exit code and output."""
    cwd = Path(cwd)
    out, err = cwd / ".fault-stdout", cwd / ".fault-stderr"
    proc = _CTX.Process(target=_child, args=([str(a) for a in args], str(cwd), faults, quick, str(out), str(err)))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise TimeoutError(f"choicegrad {' '.join(map(str, args))} ran past {timeout} s (faults {faults!r})")
    texts = [p.read_text(errors="replace") if p.exists() else "" for p in (out, err)]
    for p in (out, err):
        p.unlink(missing_ok=True)
    return Outcome(proc.exitcode, *texts)


def operations(args: list[str], cwd: Path, quick: bool = True) -> list[tuple[str, str]]:
    """The disk operations (fault points) `choicegrad ARGS` passes through, in order, as (op, path
    relative to cwd) pairs; the command must succeed."""
    log = Path(cwd) / ".fault-log"
    log.unlink(missing_ok=True)
    done = run(args, cwd, faults=f"log={log}", quick=quick)
    assert done.code == 0, done.stderr
    ops = []
    for line in log.read_text().splitlines():
        _, op, path = line.split(" ", 2)
        ops.append((op, os.path.relpath(path, cwd) if os.path.isabs(path) else path))
    log.unlink()
    return ops
