"""The estimator contract: `Estimator` (one loss for any policy), its output, and the registry by name.

Shapes: B contexts, S slots, V = padded vocabulary size, K samples per context.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Optional

import torch
from torch import Tensor

from choicegrad.estimators.base import ScoreFn, normalize_name, unknown_name_error
from choicegrad.estimators.policy import LogitsPolicy


@dataclasses.dataclass
class EstimatorOutput:
    """What every estimator returns.

    sample: (B, S) long, one hard row per context (methods drawing K rows: the best-scoring of the K,
        first on ties). samples: (B, K, S) long, K = 1 for single-sample methods. scores: (B, K),
        detached scorer values of `samples` (for `soft`/`gumbel`: the score of the soft input).
    loss: scalar; `loss.backward()` writes the estimator's gradient of -E[score], averaged over the
        batch, into the logits' grad (trajectory-balance instead minimises its own loss, whose optimum
        samples exp(score/T)/Z; see trajectory_balance.py). scorer_calls: number of rows passed to score_fn.
    stats: floats for logging. weights: (B, K) or None, the detached coefficient multiplying each
        sample's log-likelihood in the loss (advantages for reinforce, row weights for weighted-ce/raml,
        residuals for trajectory-balance).
    entropy: (B,) differentiable entropy estimate of the policy at the rows used (see Policy.entropy),
        for a training loop's entropy bonus.
    """

    sample: Tensor
    samples: Tensor
    scores: Tensor
    loss: Tensor
    scorer_calls: int
    stats: dict[str, float]
    weights: Optional[Tensor] = None
    entropy: Optional[Tensor] = None


class Estimator:
    """Base class: a training signal for any policy (see choicegrad.estimators.policy).

    est(policy, score_fn, *, generator=None, **extra), or est(logits, score_fn, *, mask=None,
    fixed=None, generator=None, **extra) for per-slot logits (B, S, V) (wrapped in a LogitsPolicy).
    score_fn: (N, S, V) float -> (N,), higher is better, N = B * R with rows grouped by context (row n
    belongs to context n // R), R = 1 except reinforce (k, or k + 1 with the greedy baseline: each
    context's k samples then its greedy row), raml (m) and trajectory-balance (k); mask: (S, V) or
    (B, S, V) bool, True = valid; fixed: (B, S) long, -1 = free slot; generator: a torch.Generator for
    all randomness.
    `extra` holds per-call options listed in `call_options`. Subclasses implement `estimate`.
    """

    name: str = ""
    uses_tau: bool = False  #: whether a `tau=` per-call override (and a temperature schedule) applies
    call_options: tuple[str, ...] = ()
    wants_data_rows: bool = False  #: a training loop should pass data rows as `targets`
    family: str = ""  #: pathwise, score-function, supervised, learned or reward-proportional (listings, docs)

    def __call__(self, policy, score_fn: ScoreFn, *, mask: Optional[Tensor] = None,
                 fixed: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                 **extra) -> EstimatorOutput:
        unknown = sorted(set(extra) - set(self.call_options))
        if unknown:
            hint = " (this method has no temperature; check est.uses_tau)" if "tau" in unknown else ""
            raise TypeError(f"{self.name} got unexpected option(s) {unknown}{hint}; "
                            f"accepted per-call options: {list(self.call_options)}")
        if isinstance(policy, Tensor) or not hasattr(policy, "log_prob"):
            policy = LogitsPolicy.from_logits(policy, mask, fixed)
        elif mask is not None or fixed is not None:
            raise TypeError("mask= and fixed= go with logits; a policy carries its own mask and fixed slots")
        return self.estimate(policy, score_fn, generator, **extra)

    def estimate(self, policy, score_fn: ScoreFn, generator: Optional[torch.Generator],
                 **extra) -> EstimatorOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        """Constructor arguments of this instance."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


_REGISTRY: dict[str, type[Estimator]] = {}


def register(name: str):
    """Class decorator adding an Estimator subclass to the registry under `name`."""
    def deco(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def available() -> list[str]:
    """Registered method names, sorted: the one list every other listing (CLI, benchmark) uses."""
    return sorted(_REGISTRY)


def families() -> dict[str, list[str]]:
    """Method names by family, e.g. {'pathwise': ['gumbel', ...], 'score-function': ['reinforce'], ...}."""
    out: dict[str, list[str]] = {}
    for name in available():
        out.setdefault(_REGISTRY[name].family, []).append(name)
    return out


def get_class(name: str) -> type:
    """The estimator class registered as `name` (its family, its options), without building one."""
    key = normalize_name(name)
    if key not in _REGISTRY:
        raise unknown_name_error(name, available())
    return _REGISTRY[key]


def get(name: str, **hyperparams) -> Estimator:
    """Build the estimator registered as `name` with its hyperparameters, e.g. get('reinforce', k=8)."""
    key = normalize_name(name)
    if key not in _REGISTRY:
        raise unknown_name_error(name, available())
    cls = _REGISTRY[key]
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self"]
    bad = sorted(set(hyperparams) - set(accepted))
    if bad:
        close = {b: difflib.get_close_matches(b, accepted, n=1) for b in bad}
        hints = "".join(f" ({b!r}: did you mean {c[0]!r}?)" for b, c in close.items() if c)
        raise ValueError(f"{key} got unknown hyperparameter(s) {bad}{hints}; accepted: {accepted}")
    return cls(**hyperparams)
