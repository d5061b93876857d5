"""The estimator contract: `Estimator` (one loss for any policy), its output, and the registry by name.

Shapes: B contexts, S slots, V = padded vocabulary size, K samples per context.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import typing
from typing import Any, Callable, ClassVar, Optional

import pydantic
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from choicegrad.errors import InputError
from choicegrad.estimators.base import REGISTRY, ScoreFn, normalize_name, unknown_name_error
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

    What a training loop (choicegrad.training.step) reads, so that it never branches on a name: the
    class attributes below, `options_model` (its typed options, GeneratorFit.method_options validated
    into them, see `for_fit`), and the hooks `modules` / `module_options` / `after_step` for trainable
    parameters of its own (trajectory balance's log Z).
    """

    name: str = ""
    uses_tau: bool = False  #: whether a `tau=` per-call override (and the loop's temperature schedule) applies
    call_options: tuple[str, ...] = ()
    required_options: tuple[str, ...] = ()  #: the call options it cannot run without
    wants_data_rows: bool = False  #: a training loop should pass data rows as `targets`
    family: str = ""  #: pathwise, score-function, supervised, learned or reward-proportional (listings, docs)
    #: hyperparameter -> the GeneratorFit field that is its default in training (e.g. {"k": "samples"})
    fit_defaults: ClassVar[dict[str, str]] = {}
    #: hyperparameters whose default in training differs from the constructor's
    training_defaults: ClassVar[dict[str, Any]] = {}
    #: options a training loop drops because it does that part itself (reinforce's entropy: the loop's bonus)
    training_ignores: ClassVar[tuple[str, ...]] = ()
    #: options of the training step rather than of the estimator (a pydantic model; None: none)
    step_options: ClassVar[Optional[type[BaseModel]]] = None
    #: needs an Aligner, and reference rows of a table (its per-call embed / positives / negatives)
    needs_aligner: ClassVar[bool] = False
    #: amortised-search weight when GeneratorFit.distill is None (None: the loop's default)
    default_distill: ClassVar[Optional[float]] = None
    #: whether the loop's entropy bonus is added to its loss
    entropy_bonus: ClassVar[bool] = True
    #: learning rate of its `modules` relative to the generator's
    module_lr: ClassVar[float] = 1.0

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

    # -- what a training loop asks of an estimator (defaults: nothing of its own) ------------------------

    def modules(self, gen) -> dict[str, nn.Module]:
        """Trainable modules it adds for generator `gen` (on its device), by checkpoint key; the loop
        optimises them with the generator (at `module_lr` times its learning rate) and saves them."""
        return {}

    def module_options(self, modules: dict[str, nn.Module], ctx) -> dict[str, Any]:
        """Per-call options computed by its `modules` for the batch's contexts `ctx`."""
        return {}

    def after_step(self, modules: dict[str, nn.Module], out: EstimatorOutput,
                   whole: Callable[[Tensor], Tensor]) -> None:
        """After the loss of a training step; whole(t) is the global batch of a per-context tensor
        (data parallelism; t itself in one process)."""

    @classmethod
    def options_model(cls) -> type[BaseModel]:
        """Its typed options: the constructor's keyword arguments (annotated types, defaults) and the
        training step's `step_options`; unknown names are refused."""
        return _options_model(cls)

    @classmethod
    def for_fit(cls, fit) -> tuple["Estimator", Optional[BaseModel]]:
        """(the estimator, its step options) for a GeneratorFit: fit.method_options validated into the
        typed options, with the training defaults (`fit_defaults`, `training_defaults`) where unset.
        InputError('method_options') naming the option and the method when one is unknown or invalid."""
        given = dict(fit.method_options)
        accepted = set(cls.options_model().model_fields)
        unknown = sorted(set(given) - accepted)
        if unknown:
            raise InputError("method_options", [f'{cls.name} has no option "{k}"{_did_you_mean(k, accepted)}; its '
                                                f"options: {', '.join(sorted(accepted))}" for k in unknown])
        for key, field in cls.fit_defaults.items():
            given.setdefault(key, getattr(fit, field))
        for key, value in cls.training_defaults.items():
            given.setdefault(key, value)
        try:
            options = cls.options_model().model_validate(given)
        except pydantic.ValidationError as err:
            raise InputError("method_options", [f"{cls.name} option \"{'.'.join(map(str, e['loc']))}\": {e['msg']}"
                                                for e in err.errors()]) from None
        values = options.model_dump(exclude_unset=True)
        step_keys = set(cls.step_options.model_fields) if cls.step_options is not None else set()
        hyper = {k: v for k, v in values.items() if k not in step_keys and k not in cls.training_ignores}
        try:
            est = cls(**hyper)
        except ValueError as err:
            raise InputError("method_options", [f"{cls.name}: {err}"]) from None
        steps = cls.step_options(**{k: v for k, v in values.items() if k in step_keys}) if step_keys else None
        return est, steps

    def hyperparameters(self) -> dict:
        """Constructor arguments of this instance."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


def _did_you_mean(name: str, options) -> str:
    close = difflib.get_close_matches(name, sorted(options), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


@functools.cache
def _options_model(cls: type[Estimator]) -> type[BaseModel]:
    hints = typing.get_type_hints(cls.__init__)
    fields: dict[str, Any] = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            fields[p.name] = (hints.get(p.name, Any), p.default if p.default is not p.empty else ...)
    name = f"{cls.__name__}Options"
    if cls.step_options is not None:
        return pydantic.create_model(name, __base__=cls.step_options, **fields)
    return pydantic.create_model(name, __config__=ConfigDict(extra="forbid", allow_inf_nan=False), **fields)


_REGISTRY: dict[str, type[Estimator]] = REGISTRY


def register(name: str):
    """Class decorator adding an Estimator subclass to the registry under `name` (then listed by
    available(), trainable by every generator through GeneratorFit(method=name)); ValueError for a
    name already taken."""
    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"an estimator named {name!r} exists already; choose another name")
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
