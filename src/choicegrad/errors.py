"""Errors raised for bad user input. The CLI turns them into a message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class InputError(ValueError):
    """Bad user input. Carries every problem found, so the user fixes them in one go.

    `source` names the file or argument; `problems` are one-line descriptions.
    """

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) found\n{lines}")


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest option, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def show_rows(rows: Sequence[int], limit: int = 5) -> str:
    """'rows 3, 8, 12 and 4 more' for 0-based data-row positions, shown 1-based (header excluded)."""
    shown = ", ".join(str(int(r) + 1) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def os_reason(exc: OSError) -> str:
    """What the system said and its code: 'No space left on device (ENOSPC)'."""
    import errno

    code = errno.errorcode.get(exc.errno or 0, "")
    return f"{exc.strerror or exc}" + (f" ({code})" if code else "")


def os_error(exc: OSError, source: str | None = None) -> InputError:
    """An OSError (disk full, no permission, a read-only or vanished file system, ...) as the one-line
    InputError the CLI prints: the path, what the system said and its code, e.g.
    'RUN/scorer.json: No space left on device (ENOSPC)'."""
    path = exc.filename if exc.filename is not None else source
    return InputError(str(path) if path is not None else "choicegrad", [os_reason(exc)])


class Interrupted(Exception):
    """SIGINT/SIGTERM during a fit: the phase `phase` saved a checkpoint in `run` (unless phase is
    "now": a second signal stopped at once, keeping the last checkpoint). The CLI exits 128 + signum."""

    def __init__(self, signum: int, run, phase: str):
        import signal

        self.signum, self.run, self.phase = signum, run, phase
        name = signal.Signals(signum).name
        saved = ("stopped at once; the last checkpoint is kept" if phase == "now"
                 else f"checkpoint of the {phase} phase saved")
        super().__init__(f"interrupted by {name}: {saved} in {run}; run the same command with --resume to continue")
