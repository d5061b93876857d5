"""choicegrad: train generators of discrete choices guided by a score model.

The whole pipeline, table -> scorer -> estimator -> generator -> decoder -> candidates:

    table = cg.load_table("t.csv", features="s?", score="y", context="ctx")
    scorer = cg.fit_scorer(table, cg.ScorerFit(seed=0)).scorer
    result = cg.fit_table_generator(scorer, table, fit=cg.GeneratorFit(method="reinforce"))
    run = cg.Run.fit("t.csv", "runs/one", cg.TableSpec(features="s?", score="y", context="ctx"))
    designer = cg.Designer(features="s?", score="y", context="ctx"); designer.tell(frame); designer.ask(128)
"""

from __future__ import annotations

__version__ = "0.1.0"

from choicegrad import estimators  # noqa: E402
from choicegrad.data import MISSING, ChoiceSpace, ContextEncoder, TableData, load_table  # noqa: E402
from choicegrad.decoding import Candidates, DecodeOptions, decode  # noqa: E402
from choicegrad.design import DesignConfig, Designer  # noqa: E402
from choicegrad.errors import InputError  # noqa: E402
from choicegrad.estimators import select, soft_lookup  # noqa: E402
from choicegrad.generators import Generator, GeneratorConfig, TableContext, TableObjective, build, policy_of  # noqa: E402
from choicegrad.io import read_table, write_table  # noqa: E402
from choicegrad.run import Run, TableSpec  # noqa: E402
from choicegrad.scorer import EmbeddingScorer, Scorer, ScorerConfig, ScorerFit, fit_scorer  # noqa: E402
from choicegrad.training import GeneratorFit, TableContexts, fit_generator, fit_table_generator  # noqa: E402

__all__ = [
    "MISSING", "Candidates", "ChoiceSpace", "ContextEncoder", "DecodeOptions", "DesignConfig", "Designer",
    "EmbeddingScorer", "Generator",
    "GeneratorConfig", "GeneratorFit", "InputError", "Run", "Scorer", "ScorerConfig", "ScorerFit", "TableContext",
    "TableContexts", "TableData", "TableObjective", "TableSpec", "build", "decode", "estimators", "fit_generator",
    "fit_scorer", "fit_table_generator", "load_table", "policy_of", "read_table", "select", "soft_lookup",
    "write_table", "__version__",
]
