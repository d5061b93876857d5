"""Training metrics: rows appended to RUN/metrics.csv as they come, and kept in memory."""

from __future__ import annotations

import csv
from pathlib import Path
from collections.abc import Iterable
from typing import Any, Optional

from choicegrad import fs

METRIC_FIELDS = ["phase", "step", "loss", "score_mean", "score_max", "entropy", "distinct", "tau",
                 "val_score", "val_best", "scorer_calls", "seconds"]


class MetricsLog:
    """Rows of METRIC_FIELDS appended to RUN/metrics.csv (flushed per row) and kept in memory."""

    def __init__(self, path: Optional[Path], rows: Iterable[dict[str, Any]] = ()):
        """rows: those logged before a resume; the file is rewritten with them, then appended to."""
        self.rows: list[dict[str, Any]] = list(rows)
        self._fh = None
        if path is not None:
            fs.mkdirs(path.parent)
            fs.point("create", path)
            self._fh = path.open("w", newline="")
            self._writer = csv.DictWriter(self._fh, fieldnames=METRIC_FIELDS)
            self._writer.writeheader()
            for row in self.rows:
                self._writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})
            self._fh.flush()

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self._fh is not None:
            fs.point("write", self._fh.name)
            self._writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
