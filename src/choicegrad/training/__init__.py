"""Generator training: context pools, the loop, metrics logging."""

from choicegrad.training.loop import (GeneratorFit, GeneratorResult, SampledContexts, TableContexts,
                                      fit_generator, fit_table_generator)

__all__ = ["GeneratorFit", "GeneratorResult", "SampledContexts", "TableContexts", "fit_generator",
           "fit_table_generator"]
