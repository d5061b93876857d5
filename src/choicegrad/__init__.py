"""choicegrad: train generators of discrete choices guided by a score model.

The whole pipeline, table -> scorer -> estimator -> generator -> decoder -> candidates:

    table = cg.load_table("t.csv", features="s?", score="y", context="ctx")
    scorer = cg.fit_scorer(table, cg.ScorerFit(seed=0)).scorer
    result = cg.fit_table_generator(scorer, table, fit=cg.GeneratorFit(method="reinforce"))
    run = cg.Run.fit("t.csv", "runs/one", cg.TableSpec(features="s?", score="y", context="ctx"))
    designer = cg.Designer(features="s?", score="y", context="ctx"); designer.tell(frame); designer.ask(128)
"""

from __future__ import annotations

from choicegrad.version import __version__

# Public names -> the module that defines them, imported on first use (PEP 562): `choicegrad --help` and
# the command line's Ctrl-C handling start before torch and pandas are imported.
_EXPORTS = {
    "MISSING": "choicegrad.data", "ChoiceSpace": "choicegrad.data", "ContextEncoder": "choicegrad.data",
    "TableData": "choicegrad.data", "load_table": "choicegrad.data",
    "Candidates": "choicegrad.decoding", "DecodeOptions": "choicegrad.decoding", "decode": "choicegrad.decoding",
    "DesignConfig": "choicegrad.design", "Designer": "choicegrad.design",
    "InputError": "choicegrad.errors",
    "select": "choicegrad.estimators", "soft_lookup": "choicegrad.estimators",
    "Generator": "choicegrad.generators", "GeneratorConfig": "choicegrad.generators",
    "TableContext": "choicegrad.generators", "TableObjective": "choicegrad.generators", "build": "choicegrad.generators",
    "policy_of": "choicegrad.generators",
    "read_table": "choicegrad.io", "write_table": "choicegrad.io",
    "Run": "choicegrad.run", "TableSpec": "choicegrad.run",
    "EmbeddingScorer": "choicegrad.scorer", "Scorer": "choicegrad.scorer", "ScorerConfig": "choicegrad.scorer",
    "ScorerFit": "choicegrad.scorer", "fit_scorer": "choicegrad.scorer",
    "GeneratorFit": "choicegrad.training", "TableContexts": "choicegrad.training", "fit_generator": "choicegrad.training",
    "fit_table_generator": "choicegrad.training", "ContextPool": "choicegrad.training",
    "FrameObjective": "choicegrad.objectives", "ModuleObjective": "choicegrad.objectives",
    "load_objective": "choicegrad.objectives", "estimate_scale": "choicegrad.objectives",
    "Objective": "choicegrad.generators.objective", "ItemObjective": "choicegrad.generators.objective",
    "CallableObjective": "choicegrad.generators.objective", "ItemContext": "choicegrad.generators",
    "SampledContexts": "choicegrad.training", "ItemSpec": "choicegrad.items",
    "ItemScorer": "choicegrad.scorer.items", "fit_item_scorer": "choicegrad.scorer.items",
    "ItemScorerObjective": "choicegrad.generators.objective", "ListPool": "choicegrad.training.contexts",
    "PointerGenerator": "choicegrad.generators", "SlateDesigner": "choicegrad.design.slates",
}

__all__ = sorted(_EXPORTS) + ["estimators", "__version__"]


def __getattr__(name: str):
    import importlib

    if name == "estimators":
        return importlib.import_module("choicegrad.estimators")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'choicegrad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
