"""Generators of rows: context -> choices, in three forms, plus their contexts and objectives.

    gen = build(GeneratorConfig(kind="autoregressive"), space=scorer.space, context=scorer.context)
    rows = gen.sample(ctx, k=16)                  # (B, 16, S)
    save(gen, "runs/one"); gen, meta = load("runs/one")

`factorized` (independent slots), `autoregressive` (slot by slot, MADE) and `pointer` (slot queries
over a list of item vectors). See base.py for the shared contract.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from choicegrad.device import machine_memory
from choicegrad.errors import InputError
from choicegrad.estimators.base import CDF_VOCABULARY
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
    "TableObjective", "build", "check_generator_fits", "fill_fixed", "load", "resolve_layout", "rows_to_inputs", "policy_of", "save",
    "score_rows",
]

_CLASSES = {"factorized": FactorizedGenerator, "autoregressive": AutoregressiveGenerator,
            "pointer": PointerGenerator}


def build(config: GeneratorConfig, *, space=None, context=None, num_slots: Optional[int] = None,
          item_dim: Optional[int] = None, sequential: bool = False, distinct: bool = False,
          item_scaling=None) -> Generator:
    """A fresh generator. Table kinds need `space` (ChoiceSpace) and `context` (ContextEncoder);
    the pointer kind needs `num_slots` and `item_dim` (`context`: the lists' context columns, if any;
    sequential / distinct / item_scaling (shift, scale): see PointerGenerator)."""
    if config.kind == "pointer":
        if num_slots is None or item_dim is None:
            raise ValueError("the pointer generator needs num_slots and item_dim")
        cards, numeric = (context.cardinalities, len(context.numeric)) if context is not None else ((), 0)
        shift, scale = item_scaling if item_scaling is not None else (None, None)
        return PointerGenerator(num_slots, item_dim, config, cards, numeric, sequential=sequential, distinct=distinct,
                                item_shift=None if shift is None else [float(v) for v in shift],
                                item_scale=None if scale is None else [float(v) for v in scale])
    if space is None or context is None:
        raise ValueError(f"the {config.kind} generator needs a choice space and a context encoder")
    return _CLASSES[config.kind](space.sizes, context.cardinalities, len(context.numeric), config)


def training_bytes(config: GeneratorConfig, sizes: list[int]) -> int:
    """Bytes a table generator's vocabulary-sized weights take in training (float32 parameters with
    their gradients and Adam's two moments, buffers once), known before it is built: a lower bound,
    as training also holds (batch, samples, S, V_max) activations."""
    parameters, buffers = _CLASSES[config.kind].vocabulary_elements(list(sizes), config)
    return 4 * (4 * parameters + buffers)



def check_generator_fits(config, space, memory: Optional[int] = None, device: str | torch.device = "cpu") -> None:
    """InputError naming `generator` before any training when the generator of GeneratorConfig
    `config` for ChoiceSpace `space` would need more memory than `device` has (memory: bytes,
    instead of choicegrad.device.machine_memory's): its weights alone, which grow with the slots times the largest
    vocabulary (a lower bound: training also holds (batch, samples, S, V_max) tensors)."""
    need = training_bytes(config, space.sizes)
    have = memory if memory is not None else machine_memory(device)
    if not have or need <= have:
        return
    big = max(space.slots, key=lambda slot: len(slot.categories))
    config = resolve_layout(config, space.sizes)
    if config.layout == "ragged":
        why = f"its weights have {sum(space.sizes):,} rows, one per category of every feature"
    elif config.kind == "autoregressive":
        why = "every slot is padded to the largest vocabulary, and its skip layer grows with (slots x that)^2"
    else:
        why = "one head of the largest vocabulary per slot"
    hint = (f'the ragged layout (GeneratorConfig(layout="ragged"), chosen by itself from {CDF_VOCABULARY:,} categories '
            'in a feature) stores each feature\'s own categories only and has no skip layer; ' if config.layout == "padded" else "")
    raise InputError("generator", [
        f"the {config.kind} generator for this table needs at least {need / 2**30:,.0f} GiB to train, more than the "
        f"{have / 2**30:,.0f} GiB of {torch.device(device)}: feature \"{big.name}\" has {len(big.categories):,} categories and {why}. "
        + hint + "fit_scorer_run (choicegrad fit-scorer) fits the scorer alone"])

def save(generator: Generator, run_dir, extra: Optional[dict] = None) -> None:
    """RUN/generator.safetensors + RUN/generator.json (kind, config, shapes, `extra`), atomically."""
    from choicegrad import io as checkpoint

    meta = {"kind": "choicegrad.Generator", "generator": generator.kind, "config": generator.config.model_dump(),
            "shape": generator.meta(), "versions": checkpoint.versions(), **(extra or {})}
    checkpoint.save_checkpoint(run_dir, "generator", generator.state_dict(), meta)


def _dense_elements(config: GeneratorConfig, inputs: int) -> int:
    """About how many weights the hidden layers of `config` take on `inputs` inputs (a lower bound)."""
    widths = [inputs, *config.hidden]
    return sum(a * b for a, b in zip(widths, widths[1:]))


def _check_size(implied: int, held: int, source: Path) -> None:
    """InputError naming generator.json when its settings imply far more weights than the file beside
    it holds: checked before the generator is built, so settings from elsewhere never allocate more
    than the weights file (itself checked against the memory there is) could fill."""
    if implied > 4 * held + 1_000_000:
        from choicegrad.errors import InputError

        raise InputError(str(source), [f"its settings describe at least {implied:,} weights, the file beside it holds "
                                       f"{held:,}: the two files do not belong together"])


def load(run_dir, map_location="cpu") -> tuple[Generator, dict]:
    """(generator in eval mode, its JSON metadata) from RUN; InputError for missing or broken files."""
    from choicegrad import io as checkpoint
    from choicegrad.errors import InputError

    meta = checkpoint.read_meta(run_dir, "generator")
    source = Path(run_dir) / "generator.json"
    try:
        config = GeneratorConfig.model_validate({"layout": "padded", **meta["config"]})    # before layouts: padded
        shape = meta["shape"]
        held = sum(math.prod(s) for s in checkpoint.weights_header(Path(run_dir) / "generator.safetensors").values())
        if config.kind == "pointer":
            dims = [int(shape["num_slots"]), int(shape["item_dim"])]
            cards, numeric = [int(c) for c in shape.get("cardinalities", [])], int(shape.get("num_numeric", 0))
            if min(dims + cards + [1]) < 1 or numeric < 0:
                raise ValueError(f"shape: slots, item size and cardinalities {dims + cards} must be positive")
            _check_size(_dense_elements(config, dims[1]) + sum(cards) * config.context_dim, held, source)
            shift, scale = shape.get("item_shift"), shape.get("item_scale")
            if shift is not None and (len(shift) != dims[1] or len(scale or []) != dims[1]
                                      or min(abs(float(v)) for v in scale) == 0):
                raise ValueError(f"shape: item_shift and item_scale must hold {dims[1]} numbers, the scale none zero")
            gen: Generator = PointerGenerator(*dims, config, cards, numeric, sequential=bool(shape.get("sequential")),
                                              distinct=bool(shape.get("distinct")), item_shift=shift, item_scale=scale)
        else:
            sizes, cards = [int(v) for v in shape["sizes"]], [int(v) for v in shape["cardinalities"]]
            numeric = int(shape["num_numeric"])
            if not sizes or min(sizes + cards + [1]) < 1 or numeric < 0:
                raise ValueError(f"shape: sizes {sizes} and cardinalities {cards} must be positive (and sizes non-empty)")
            vocabulary, _ = _CLASSES[config.kind].vocabulary_elements(sizes, config)
            context = (len(cards) * config.context_dim + sum(cards) * config.context_dim + numeric)
            _check_size(vocabulary + _dense_elements(config, context), held, source)
            gen = _CLASSES[config.kind](sizes, cards, numeric, config)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError, MemoryError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(str(source), [f"not a choicegrad generator checkpoint: {checkpoint.meta_problem(exc)}"]) from None
    checkpoint.load_state(gen, checkpoint.read_state(gen, run_dir, "generator", meta),
                          Path(run_dir) / "generator.safetensors")
    return gen.to(map_location).eval(), meta
