"""Synthetic landscapes with analytic oracles, enumerated once into a Landscape.

Each factory returns a Landscape whose `analytic` is the oracle fn(ctx (N,), rows (N, S)) -> (N,)
and `model` the seeded object behind it (PottsTask, NKModel, EhrlichModel, PlantedTask), so tests can check the
enumerated scores against it. Slots are s0..s{S-1}, categories a, b, c, ... (v00, v01, ... past 26),
context column "ctx" with labels c0..c{C-1}, zero-padded (c00..c31) so label order is context order.
"""

from __future__ import annotations

from choicegrad.data.space import ChoiceSpace, Slot
from choicegrad.bench.tasks.ehrlich import EhrlichModel
from choicegrad.bench.tasks.landscape import Landscape
from choicegrad.bench.tasks.nk import NKModel
from choicegrad.bench.tasks.planted import PlantedTask
from choicegrad.bench.tasks.potts import PottsTask


def category_labels(vocab: int) -> list[str]:
    """vocab labels that sort in index order: a, b, ... (vocab <= 26) or v00, v01, ..."""
    if vocab <= 26:
        return [chr(ord("a") + v) for v in range(vocab)]
    width = len(str(vocab - 1))
    return [f"v{v:0{width}d}" for v in range(vocab)]


def context_labels(contexts: int) -> list[str]:
    """c0..c{C-1}, zero-padded to one width so that sorted labels keep the context order."""
    width = len(str(contexts - 1))
    return [f"c{c:0{width}d}" for c in range(contexts)]


def grid_space(slots: int, vocab: int) -> ChoiceSpace:
    """slots s0..s{S-1}, each with the same `vocab` categories."""
    labels = category_labels(vocab)
    return ChoiceSpace(slots=[Slot(name=f"s{s}", categories=labels) for s in range(slots)])


def _check(slots: int, vocab: int, contexts: int) -> None:
    if slots < 1 or vocab < 2 or contexts < 1:
        raise ValueError(f"slots, vocab, contexts: expected at least 1, 2, 1, got {slots}, {vocab}, {contexts}")


def potts(slots: int = 6, vocab: int = 8, contexts: int = 32, coupling: float = 1.5, seed: int = 0) -> Landscape:
    """PottsTask's landscape (per-context fields + shared couplings), every row enumerated."""
    _check(slots, vocab, contexts)
    task = PottsTask(slots=slots, vocab=vocab, contexts=contexts, coupling=coupling, seed=seed)
    return Landscape.from_oracle("potts", grid_space(slots, vocab), context_labels(contexts), task.oracle,
                                 chunk=1 << 17, model=task)


def nk(k: int = 3, slots: int = 8, vocab: int = 4, contexts: int = 32, weight: float = 0.5, seed: int = 0
       ) -> Landscape:
    """NK landscape of interaction order k (2..4); see choicegrad.bench.tasks.nk."""
    _check(slots, vocab, contexts)
    model = NKModel(k=k, slots=slots, vocab=vocab, contexts=contexts, weight=weight, seed=seed)
    return Landscape.from_oracle(f"nk{k}", grid_space(slots, vocab), context_labels(contexts), model,
                                 chunk=1 << 18, model=model)


def ehrlich(slots: int = 8, vocab: int = 5, motifs: int = 2, motif_length: int = 3, contexts: int = 16,
            quantization: int | None = None, min_feasible: float = 0.6, seed: int = 0) -> Landscape:
    """Ehrlich function (feasibility chain + spaced motifs); optimum 1.0 in every context."""
    _check(slots, vocab, contexts)
    model = EhrlichModel(slots=slots, vocab=vocab, motifs=motifs, motif_length=motif_length, contexts=contexts,
                         quantization=quantization, min_feasible=min_feasible, seed=seed)
    return Landscape.from_oracle("ehrlich", grid_space(slots, vocab), context_labels(contexts), model,
                                 chunk=1 << 16, model=model)


def planted(slots: int = 4, vocab: int = 4, contexts: int = 2, modes: int = 1, bonus: float = 2.0, seed: int = 0
            ) -> Landscape:
    """PlantedTask's landscape: a few planted rows per context, mode 0 the unique optimum."""
    _check(slots, vocab, contexts)
    task = PlantedTask(slots=slots, vocab=vocab, contexts=contexts, modes=modes, bonus=bonus, seed=seed)
    return Landscape.from_oracle("planted", grid_space(slots, vocab), context_labels(contexts), task.oracle,
                                 model=task)
