"""What every benchmark task has (after BoTorch's BaseTestProblem): a space, contexts, the ground
truth of rows, the statistics of that truth, and a training table.

    task = get_task("potts")                       # any registered task (choicegrad.bench.tasks.registry)
    ctx = task.contexts(64, seed=1)                # the contexts methods are judged on
    y = task.truth(ctx, rows)                      # rows (B, M, S) long -> (B, M) true scores
    stats = task.statistics(ctx)                   # {min, max, mean, median}: (B,) each
    frame = task.training_table("random", n=500)   # what a scorer learns from (table tasks)

Three kinds, which the harness treats differently (choicegrad.bench.harness):

table       a Landscape: C contexts known by id, every row's score stored or computed once; a scorer
            learns its training table and methods are judged on the same C contexts (seen).
contextual  contexts are feature vectors (a table of context columns); a scorer learns a log with one
            context per row, methods are judged on contexts drawn apart from it (unseen).
items       pointer form: each context is a list of item vectors (ItemContext), a row picks one item
            per slot; no scorer: the task's reward is the objective, lists are drawn for training and
            for judging (`draw`). `space` is None: a slot's categories are the items of each list.

A row is (S,) long category indices: into the slot's vocabulary (space.slots[s].categories) for
table and contextual tasks, into the list's items for item tasks. The truth of a row without a
score (a padded item, a repeated item of a slate, an unmeasured variant) is NaN; `enumerate_truth`
gives every row's truth for small spaces (every task here is small enough), from which `statistics`
and `optimum` follow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Optional

import pandas as pd
from torch import Tensor

from choicegrad.bench.tasks import stats as st
from choicegrad.data.space import ChoiceSpace

KINDS = ("table", "contextual", "items")


class BenchmarkTask(ABC):
    """The contract of a benchmark task; see the module docstring.

    name: the registry name; kind: "table", "contextual" or "items"; distinct: rows are slates of
    distinct items (peers and decoders search those only); space: slots and vocabularies (None for
    item tasks); context_columns: load_table's context argument for the training table (None: none).
    """

    name: str
    kind: ClassVar[str]
    distinct: ClassVar[bool] = False
    space: Optional[ChoiceSpace] = None

    @property
    def num_slots(self) -> int:
        """S, the slots of a row."""
        return self.space.num_slots

    @property
    def context_columns(self) -> Optional[list[str]]:
        """The training table's context columns as load_table takes them (None: no context)."""
        return None

    @abstractmethod
    def contexts(self, n: Optional[int] = None, seed: int = 0) -> Any:
        """The B contexts methods are judged on: a table task's C context ids (C,) long (n, seed
        unused: they are the contexts of its table); n contexts drawn from `seed` for the others (a
        context table for contextual tasks, an ItemContext for item tasks)."""

    @abstractmethod
    def truth(self, ctx: Any, rows: Tensor) -> Tensor:
        """ctx: B contexts as `contexts` gives them, rows (B, M, S) long -> (B, M) float true scores
        (NaN: no score)."""

    @abstractmethod
    def enumerate_truth(self, ctx: Any) -> tuple[Tensor, Tensor]:
        """Every row's truth: (values (B, R), NaN where a row has no score; rows (R, S) long, the
        same R rows for every context, slot 0 most significant)."""

    def allowed(self, ctx: Any) -> Tensor:
        """(B, S, V) bool: the categories each context allows in each slot."""
        return self.space.mask().unsqueeze(0).expand(len(ctx), -1, -1)

    def statistics(self, ctx: Any) -> dict[str, Tensor]:
        """{min, max, mean, median}: (B,) each, over the rows with a score of each context (for the
        normalised score and the gap closed, choicegrad.bench.metrics)."""
        return st.nan_stats(self.enumerate_truth(ctx)[0])

    def optimum(self, ctx: Any) -> tuple[Tensor, Tensor]:
        """(rows (B, S) long, values (B,)): the best scored row of each context."""
        values, rows = self.enumerate_truth(ctx)
        index, best = st.nan_argmax(values)
        return rows[index], best

    def context_frame(self, ctx: Any) -> pd.DataFrame:
        """The contexts as the training table's context columns (what a scorer encodes)."""
        raise NotImplementedError(f"{type(self).__name__}: an {self.kind} task has no context table")

    def training_table(self, protocol: str = "random", n: Optional[int] = None, seed: int = 0) -> pd.DataFrame:
        """What a scorer learns from: [context columns] + slot names + "y", rows chosen by `protocol`
        ("random"; table tasks also "below-median"), the same table for the same seed. Item tasks
        have none (the reward itself is the objective): ValueError, as for any protocol a task lacks."""
        raise ValueError(f"{self.name}: an {self.kind} task trains on its reward and has no training table")


def check_rows(rows: Tensor, b: int, s: int) -> int:
    """rows must be (b, M, s) long; -> M. ValueError naming `rows` otherwise."""
    if rows.dim() != 3 or rows.shape[0] != b or rows.shape[2] != s or rows.is_floating_point():
        raise ValueError(f"rows: expected ({b}, M, {s}) long category indices, got {rows.dtype} {tuple(rows.shape)}")
    return int(rows.shape[1])
