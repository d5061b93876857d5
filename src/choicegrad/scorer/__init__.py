"""The scorer: an embedding model of f(context, row) (hard or soft rows), its fit, and the aligner."""

from choicegrad.scorer.fit import ScorerFit, ScorerResult, fit_scorer
from choicegrad.scorer.model import EmbeddingScorer, Scorer, ScorerConfig

__all__ = ["EmbeddingScorer", "Scorer", "ScorerConfig", "ScorerFit", "ScorerResult", "fit_scorer"]
