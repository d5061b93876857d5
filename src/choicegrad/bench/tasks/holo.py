"""holo-bench's Ehrlich function (the `pytorch-holo` package, Stanton et al. 2024) as an online oracle.

    task = HoloEhrlich(states=32, length=32, motifs=2, motif_length=4, quantization=4, seed=0)
    rows = task.start(512, seed=0)                   # (512, 32) feasible rows, drawn as holo draws them
    y = task.oracle(torch.zeros(512, dtype=torch.long), rows)    # (512,) in [0, 1], -inf if infeasible

The function is holo's own: its transition matrix, motifs, spacings, motif search and feasibility
come from holo's elemental functions, in the order holo's `Ehrlich` class calls them, so the same
seed gives the same function (`benchmarks/holo_ehrlich_check.py` compares the two where botorch is
installed). holo's package imports botorch (and, with it, gpytorch, scipy and pyro) from every
test-function module, and pins numpy < 2; only its elemental files are pure torch. So they are
loaded here from the installed package by their file location, without its test_functions
package: `pip install --no-deps pytorch-holo` is all this task needs.

Its space (32^32 rows here) is far too large to enumerate, so it is not a Landscape: it has no
table of scores, only the oracle, its known range (optimum 1.0, every feasible row >= 0) and a
start of feasible rows (samples of the function's own Markov chain, as holo's initial_solution).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

import torch
from torch import Tensor

from choicegrad.data.space import ChoiceSpace, Slot

#: What `pip` installs holo-bench's test functions as.
PACKAGE = "pytorch-holo"
_MODULE = "choicegrad_holo_elemental"


def holo_missing() -> Optional[str]:
    """A line saying how to install holo-bench, or None when it is installed."""
    if importlib.util.find_spec("holo") is None:
        return f"holo-ehrlich needs holo-bench's test functions: pip install --no-deps {PACKAGE}"
    return None


def elemental() -> ModuleType:
    """holo.test_functions.elemental, loaded from its files alone (see the module docstring)."""
    if _MODULE in sys.modules:
        return sys.modules[_MODULE]
    problem = holo_missing()
    if problem:
        raise ModuleNotFoundError(problem)
    import holo                                       # its __init__ reads its version only

    folder = Path(holo.__path__[0]) / "test_functions" / "elemental"
    spec = importlib.util.spec_from_file_location(_MODULE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODULE]
        raise
    return module


class _Model:
    """What the online Oracle reads off a task's model: the score of an infeasible row."""

    infeasible = float("-inf")


class HoloEhrlich:
    """holo's Ehrlich(num_states=states, dim=length, num_motifs=motifs, motif_length, quantization,
    epistasis_factor=0, noise_std=0, random_seed=seed) as an online task with one context.

    space: `length` slots p0.. of `states` categories "0".. ; oracle(ctx (N,), rows (N, S) long) ->
    (N,) float64: the product over motifs of the quantised share of the motif present at its
    spacing, -inf for a row with a banned transition. `stats`: its range per context (min 0, max 1).
    """

    context_column = None
    context_labels: list = []
    measured = None
    num_contexts = 1
    model = _Model()

    def __init__(self, states: int = 32, length: int = 32, motifs: int = 2, motif_length: int = 4,
                 quantization: Optional[int] = 4, seed: int = 0):
        el = elemental()
        self.name = "holo-ehrlich"
        self.states, self.length, self.quantization, self.seed = states, length, quantization, seed
        g = torch.Generator().manual_seed(seed)
        self.initial_dist = torch.ones(states) / states
        self.transition_matrix = el.sample_sparse_ergodic_transition_matrix(
            states, int(states * 0.4), softmax_temp=0.5, generator=g, repeats_always_possible=True)
        self.stationary_dist = el.dmp_stationary_dist(self.transition_matrix)
        slack = length - motifs * motif_length
        if motif_length < 2 or motifs < 1:
            raise ValueError(f"motifs, motif_length: expected at least 1 motif of at least 2 states (holo spaces a "
                             f"motif's elements), got {motifs} and {motif_length}")
        if slack < 0:
            raise ValueError(f"length: {motifs} motifs of length {motif_length} do not fit in {length} positions")
        drawn = el.sample_dmp(initial_dist=self.stationary_dist.squeeze(-1), transition_matrix=self.transition_matrix,
                              num_steps=motifs * motif_length, num_samples=1, generator=g).squeeze(0)
        self.motifs = list(torch.chunk(drawn, motifs, dim=0))
        self.spacings = []
        for _ in range(motifs):       # holo's spacing: a random point of the simplex, scaled, floored, + 1
            weights = torch.rand(motif_length - 1, generator=g)
            self.spacings.append(1 + ((slack // motifs) * (weights / weights.sum())).floor().to(torch.int64))
        self.space = ChoiceSpace(slots=[Slot(name=f"p{i}", categories=[str(v) for v in range(states)])
                                        for i in range(length)])
        self.stats = {"min": torch.zeros(1), "max": torch.ones(1)}

    @staticmethod
    def missing() -> Optional[str]:
        """What an online run must say before its rounds when holo-bench is not installed (None: it is)."""
        return holo_missing()

    def __repr__(self) -> str:
        return (f"HoloEhrlich(states={self.states}, length={self.length}, motifs={[m.tolist() for m in self.motifs]}, "
                f"spacings={[s.tolist() for s in self.spacings]}, quantization={self.quantization}, seed={self.seed})")

    def oracle(self, ctx: Tensor, rows: Tensor) -> Tensor:
        """(N,) float64 scores of rows (N, S) long (ctx is ignored: one context)."""
        el = elemental()
        x = rows.long()
        value = torch.ones(len(x), device=x.device)
        for motif, spacing in zip(self.motifs, self.spacings):   # in float32, as holo computes it
            value = value * el.motif_search(solution=x, motif=motif, spacing=spacing, mode="present",
                                            quantization=self.quantization).float()   # cubic response at epistasis 0: identity
        value = value.double()
        loglik = el.dmp_sample_log_likelihood(samples=x, initial_dist=self.initial_dist,
                                              transition_matrix=self.transition_matrix)
        return torch.where(loglik > float("-inf"), value, torch.full_like(value, float("-inf")))

    def feasible(self, rows: Tensor) -> Tensor:
        """(N,) bool: no banned transition between neighbouring positions."""
        return self.transition_matrix[rows[:, :-1], rows[:, 1:]].gt(0).all(-1)

    def start(self, n: int, seed: int) -> Tensor:
        """(n, S) long feasible rows: samples of the function's Markov chain from its stationary
        distribution, as holo's initial_solution draws them (seeded by `seed`, not the function's)."""
        return elemental().sample_dmp(initial_dist=self.stationary_dist.squeeze(-1),
                                      transition_matrix=self.transition_matrix, num_steps=self.length, num_samples=n,
                                      generator=torch.Generator().manual_seed(seed)).long()
