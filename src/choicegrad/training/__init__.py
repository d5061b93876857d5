"""Generator training: context pools, the loop, metrics logging."""

from choicegrad.training.contexts import ContextPool
from choicegrad.training.loop import (GeneratorFit, GeneratorResult, SampledContexts, TableContexts,
                                      fit_generator, fit_table_generator)

__all__ = ["ContextPool", "GeneratorFit", "GeneratorResult", "SampledContexts", "TableContexts", "fit_generator",
           "fit_table_generator"]
