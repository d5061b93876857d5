"""choicegrad: train generators of discrete choices guided by a score model."""

from __future__ import annotations

__version__ = "0.1.0"

from choicegrad import estimators as gradients  # noqa: E402
from choicegrad.data.context import ContextEncoder  # noqa: E402
from choicegrad.data.table import TableData, load_table  # noqa: E402
from choicegrad.io import read_table  # noqa: E402
from choicegrad.errors import InputError  # noqa: E402
from choicegrad.estimators import select, soft_lookup  # noqa: E402
from choicegrad.scorer.model import EmbeddingScorer, Scorer, ScorerConfig  # noqa: E402
from choicegrad.data.space import MISSING, ChoiceSpace  # noqa: E402
from choicegrad.scorer.fit import ScorerFit, fit_scorer  # noqa: E402

__all__ = [
    "MISSING", "ChoiceSpace", "ContextEncoder", "EmbeddingScorer", "InputError", "Scorer", "ScorerConfig",
    "ScorerFit", "TableData", "fit_scorer", "gradients", "load_table", "read_table", "select",
    "soft_lookup", "__version__",
]
