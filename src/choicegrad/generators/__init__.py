"""Generators of rows: context -> choices, in three forms, plus their contexts and objectives.

    gen = build(GeneratorConfig(kind="autoregressive"), space=scorer.space, context=scorer.context)
    rows = gen.sample(ctx, k=16)                  # (B, 16, S)
    save(gen, "runs/one"); gen, meta = load("runs/one")

`factorized` (independent slots), `autoregressive` (slot by slot, MADE) and `pointer` (slot queries
over a list of item vectors). See base.py for the shared contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from choicegrad.generators.autoregressive import AutoregressiveGenerator
from choicegrad.generators.base import KINDS, Generator, GeneratorConfig, fill_fixed, resolve_layout, rows_to_inputs
from choicegrad.generators.context import Context, ItemContext, TableContext
from choicegrad.generators.factorized import FactorizedGenerator
from choicegrad.generators.objective import ItemObjective, Objective, TableObjective, score_rows
from choicegrad.generators.pointer import PointerGenerator
from choicegrad.generators.policy import SequentialPolicy, policy_of

__all__ = [
    "KINDS", "AutoregressiveGenerator", "Context", "FactorizedGenerator", "Generator", "GeneratorConfig",
    "ItemContext", "ItemObjective", "Objective", "PointerGenerator", "SequentialPolicy", "TableContext",
    "TableObjective", "build", "fill_fixed", "load", "resolve_layout", "rows_to_inputs", "policy_of", "save",
    "score_rows",
]

_CLASSES = {"factorized": FactorizedGenerator, "autoregressive": AutoregressiveGenerator,
            "pointer": PointerGenerator}


def build(config: GeneratorConfig, *, space=None, context=None, num_slots: Optional[int] = None,
          item_dim: Optional[int] = None) -> Generator:
    """A fresh generator. Table kinds need `space` (ChoiceSpace) and `context` (ContextEncoder);
    the pointer kind needs `num_slots` and `item_dim`."""
    if config.kind == "pointer":
        if num_slots is None or item_dim is None:
            raise ValueError("the pointer generator needs num_slots and item_dim")
        return PointerGenerator(num_slots, item_dim, config)
    if space is None or context is None:
        raise ValueError(f"the {config.kind} generator needs a choice space and a context encoder")
    return _CLASSES[config.kind](space.sizes, context.cardinalities, len(context.numeric), config)


def training_bytes(config: GeneratorConfig, sizes: list[int]) -> int:
    """Bytes a table generator's vocabulary-sized weights take in training (float32 parameters with
    their gradients and Adam's two moments, buffers once), known before it is built: a lower bound,
    as training also holds (batch, samples, S, V_max) activations."""
    parameters, buffers = _CLASSES[config.kind].vocabulary_elements(list(sizes), config)
    return 4 * (4 * parameters + buffers)


def save(generator: Generator, run_dir, extra: Optional[dict] = None) -> None:
    """RUN/generator.safetensors + RUN/generator.json (kind, config, shapes, `extra`), atomically."""
    from choicegrad import io as checkpoint

    meta = {"kind": "choicegrad.Generator", "generator": generator.kind, "config": generator.config.model_dump(),
            "shape": generator.meta(), "versions": checkpoint.versions(), **(extra or {})}
    checkpoint.save_checkpoint(run_dir, "generator", generator.state_dict(), meta)


def load(run_dir, map_location="cpu") -> tuple[Generator, dict]:
    """(generator in eval mode, its JSON metadata) from RUN; InputError for missing or broken files."""
    from choicegrad import io as checkpoint
    from choicegrad.errors import InputError

    meta = checkpoint.read_meta(run_dir, "generator")
    try:
        config = GeneratorConfig.model_validate({"layout": "padded", **meta["config"]})    # before layouts: padded
        shape = meta["shape"]
        if config.kind == "pointer":
            gen: Generator = PointerGenerator(int(shape["num_slots"]), int(shape["item_dim"]), config)
        else:
            sizes, cards = [int(v) for v in shape["sizes"]], [int(v) for v in shape["cardinalities"]]
            if not sizes or min(sizes + cards + [1]) < 1:
                raise ValueError(f"shape: sizes {sizes} and cardinalities {cards} must be positive (and sizes non-empty)")
            gen = _CLASSES[config.kind](sizes, cards, int(shape["num_numeric"]), config)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(str(Path(run_dir) / "generator.json"),
                         [f"not a choicegrad generator checkpoint: {checkpoint.meta_problem(exc)}"]) from None
    checkpoint.load_state(gen, checkpoint.read_state(gen, run_dir, "generator", meta),
                          Path(run_dir) / "generator.safetensors")
    return gen.to(map_location).eval(), meta
