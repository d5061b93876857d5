"""Progress of long work on stderr: a tqdm bar that stays visible when done on a terminal, plain
periodic lines elsewhere (logs, CI, nohup), nothing when disabled.

    bar = progress_bar(total=200, desc="fit scorer", unit="epoch", enabled=None)
    bar.update(1); bar.set_postfix(val="0.031"); bar.close()
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional

from tqdm.auto import tqdm

#: Seconds between plain progress lines when stderr is not a terminal ($CHOICEGRAD_PROGRESS_SECONDS).
LINE_SECONDS = 30.0


class LineProgress:
    """tqdm's update/set_postfix/close, printed as a plain line every `every` seconds (and a last line
    on close when any was printed): `fit scorer: 12/200 epoch, 41 s, member=0 val=0.0312`."""

    def __init__(self, total: Optional[int], desc: str, unit: str, every: float, file=None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.file = file or sys.stderr
        self.n, self.postfix, self.start = 0, "", time.monotonic()
        self.last, self.printed = self.start, False

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.every:
            self._print()

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kwargs.items())

    def _print(self, note: str = "") -> None:
        total = f"/{self.total}" if self.total is not None else ""
        line = f"{self.desc}: {self.n}{total} {self.unit}, {time.monotonic() - self.start:.0f} s"
        print(line + (f", {self.postfix}" if self.postfix else "") + note, file=self.file, flush=True)
        self.last, self.printed = time.monotonic(), True

    def close(self) -> None:
        if self.printed:
            self._print(", done")


class _Off:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def progress_bar(total: Optional[int], desc: str, unit: str, enabled: Optional[bool] = None):
    """enabled None: a bar when stderr is a terminal, else plain lines every LINE_SECONDS; False: silent;
    True: a bar even when stderr is not a terminal."""
    if enabled is False:
        return _Off()
    if enabled or sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True, dynamic_ncols=True)
    every = float(os.environ.get("CHOICEGRAD_PROGRESS_SECONDS", LINE_SECONDS))
    return LineProgress(total, desc, unit, every)
