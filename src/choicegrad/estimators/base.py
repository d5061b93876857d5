"""Shared pieces of the gradient estimators: output type, input checks, masking/fixed slots, registry.

Shapes used throughout: B contexts, S slots, V = padded vocabulary size, K samples per context.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import numbers
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

#: Logit given to invalid (masked) categories: large, negative and finite (exp() underflows to 0).
MASK_VALUE = -1e9

ScoreFn = Callable[[Tensor], Tensor]


@dataclasses.dataclass
class EstimatorOutput:
    """What every estimator returns.

    sample: (B, S) long, one hard row per context (methods drawing K rows: the best-scoring of the K,
        first on ties). samples: (B, K, S) long, K = 1 for single-sample methods. scores: (B, K),
        detached scorer values of `samples` (for `soft`/`gumbel`: the score of the soft input).
    loss: scalar; `loss.backward()` writes the estimator's gradient of -E[score], averaged over the
        batch, into the logits' grad. scorer_calls: number of rows passed to score_fn.
    stats: floats for logging. weights: (B, K) or None, the detached coefficient multiplying each
        sample's log-likelihood in the loss (advantages for reinforce, row weights for weighted-ce/raml).
    """

    sample: Tensor
    samples: Tensor
    scores: Tensor
    loss: Tensor
    scorer_calls: int
    stats: dict[str, float]
    weights: Optional[Tensor] = None


def check_tau(tau, name: str = "tau") -> float:
    """Return `tau` as a float, raising ValueError unless it is a positive finite number."""
    try:
        value = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {name}={tau!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {name}={tau!r}")
    return value


def check_int(value, name: str, minimum: int = 1) -> int:
    """Return `value` as an int, raising ValueError naming `name` unless it is an integer >= minimum."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and int(value) == value and value >= minimum)
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return int(value)


def vocab_mask(sizes, vocab: Optional[int] = None, device=None) -> Tensor:
    """Mask for slots with different vocabulary sizes: sizes (S,) -> bool (S, V), True = valid.

    V = `vocab` or max(sizes). Category c of slot s is valid iff c < sizes[s].
    """
    sizes_t = torch.as_tensor(sizes, dtype=torch.long, device=device)
    if sizes_t.dim() != 1 or sizes_t.numel() == 0 or bool((sizes_t < 1).any()):
        raise ValueError(f"sizes must be a non-empty list of positive ints, got {sizes!r}")
    V = int(sizes_t.max()) if vocab is None else int(vocab)
    if V < int(sizes_t.max()):
        raise ValueError(f"vocab={V} is smaller than the largest size {int(sizes_t.max())}")
    return torch.arange(V, device=device)[None, :] < sizes_t[:, None]


@dataclasses.dataclass
class Prepared:
    """Validated inputs. theta: (B, S, V) fp32 logits, invalid categories set to MASK_VALUE and fixed
    slots detached; mask: (B, S, V) bool; fixed: (B, S) long (-1 = free); free: (B, S) bool."""

    theta: Tensor
    mask: Tensor
    fixed: Tensor
    free: Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        B, S, V = self.theta.shape
        return B, S, V


def prepare(logits: Tensor, mask: Optional[Tensor] = None, fixed: Optional[Tensor] = None) -> Prepared:
    """Check logits (B, S, V), mask (S, V) or (B, S, V) bool, fixed (B, S) or (S,) long; build Prepared.

    Logits are upcast to fp32 (gradients still flow back to half-precision logits).
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {type(logits).__name__}"
                        f"{'' if not isinstance(logits, Tensor) else ' of dtype ' + str(logits.dtype)}")
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (B, S, V), got {tuple(logits.shape)}")
    B, S, V = logits.shape
    theta = logits.float()
    if mask is None:
        full_mask = torch.ones(1, 1, 1, dtype=torch.bool, device=logits.device).expand(B, S, V)
    else:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        if tuple(mask.shape) not in ((S, V), (B, S, V)):
            raise ValueError(f"mask must have shape (S, V)={(S, V)} or (B, S, V)={(B, S, V)}, "
                             f"got {tuple(mask.shape)}")
        full_mask = mask.to(logits.device).expand(B, S, V)
        if not bool(full_mask.any(-1).all()):
            bad = (~full_mask.any(-1)).nonzero()[:5].tolist()
            raise ValueError(f"every slot needs at least one valid category; no valid category at "
                             f"(context, slot) {bad}")
        theta = theta.masked_fill(~full_mask, MASK_VALUE)
    if fixed is None:
        fixed_t = torch.full((B, S), -1, dtype=torch.long, device=logits.device)
    else:
        if fixed.dtype.is_floating_point or fixed.dtype == torch.bool:
            raise TypeError(f"fixed must be an integer tensor, got dtype {fixed.dtype}")
        if tuple(fixed.shape) not in ((S,), (B, S)):
            raise ValueError(f"fixed must have shape (B, S)={(B, S)} or (S,)={(S,)}, got {tuple(fixed.shape)}")
        fixed_t = fixed.to(device=logits.device, dtype=torch.long).expand(B, S)
        if bool(((fixed_t < -1) | (fixed_t >= V)).any()):
            raise ValueError(f"fixed values must be -1 (free) or a category in [0, {V}), "
                             f"got min {int(fixed_t.min())} max {int(fixed_t.max())}")
        ok = full_mask.gather(-1, fixed_t.clamp(min=0)[..., None])[..., 0] | (fixed_t < 0)
        if not bool(ok.all()):
            raise ValueError(f"fixed uses masked (invalid) categories at (context, slot) "
                             f"{(~ok).nonzero()[:5].tolist()}")
    free = fixed_t < 0
    if not bool(free.all()):
        theta = torch.where(free[..., None], theta, theta.detach())
    return Prepared(theta=theta, mask=full_mask, fixed=fixed_t, free=free)


def one_hot(index: Tensor, num_classes: int) -> Tensor:
    """(...,) long -> (..., V) float32 one-hot."""
    return F.one_hot(index, num_classes).to(torch.float32)


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    """Insert a K axis after the batch axis while `t` has fewer dims than `like`."""
    while t.dim() < like.dim():
        t = t.unsqueeze(1)
    return t


def apply_fixed(x: Tensor, prep: Prepared) -> Tensor:
    """Replace fixed slots by the one-hot of their value. x: (B, S, V) or (B, K, S, V) float."""
    if bool(prep.free.all()):
        return x
    hot = one_hot(prep.fixed.clamp(min=0), x.shape[-1]).to(x.dtype)
    return torch.where(_bcast(prep.free[..., None], x), x, _bcast(hot, x))


def apply_fixed_index(index: Tensor, prep: Prepared) -> Tensor:
    """Replace fixed slots by their value. index: (B, S) or (B, K, S) long."""
    if bool(prep.free.all()):
        return index
    return torch.where(_bcast(prep.free, index), index, _bcast(prep.fixed, index))


def entropy(theta: Tensor, free: Tensor) -> Tensor:
    """Entropy of the per-slot categoricals softmax(theta), summed over free slots: (B, S, V) -> (B,)."""
    logp = torch.log_softmax(theta, -1)
    h = -(logp.exp() * logp).sum(-1)
    return torch.where(free, h, torch.zeros_like(h)).sum(-1)


def call_scorer(score_fn: ScoreFn, x: Tensor, *, grad: bool) -> Tensor:
    """Score rows x: (B, S, V) or (B, R, S, V) -> (B,) or (B, R), one call to score_fn on the flattened
    (N, S, V) batch. Rows are context-major: row n belongs to context n // R (N = B * R), so a
    context-aware score_fn can use contexts.repeat_interleave(N // B). grad=False: under no_grad.
    """
    lead, (S, V) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape(-1, S, V)
    if grad:
        out = score_fn(flat)
    else:
        with torch.no_grad():
            out = score_fn(flat)
    if not isinstance(out, Tensor) or tuple(out.shape) != (flat.shape[0],):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"score_fn must return a tensor of shape (N,)=({flat.shape[0]},) for input "
                         f"{tuple(flat.shape)}, got {shape}")
    return out.reshape(lead)


def score_stats(scores: Tensor, theta: Tensor, free: Tensor) -> dict[str, float]:
    """Common log values: mean/max score and mean per-context entropy (nats, summed over free slots)."""
    s = scores.detach().float()
    return {
        "score_mean": float(s.mean()),
        "score_max": float(s.max()),
        "entropy": float(entropy(theta.detach(), free).mean()),
    }


class Estimator:
    """Base class. Call: est(logits, score_fn, *, mask=None, fixed=None, generator=None, **extra).

    logits: (B, S, V) float (any float dtype); score_fn: (N, S, V) float -> (N,), higher is better,
    N = B * R with rows grouped by context (row n belongs to context n // R), R = 1 except reinforce
    (k, or k + 1 with the greedy baseline: each context's k samples then its argmax row) and raml (m);
    mask: (S, V) or (B, S, V) bool, True = valid; fixed: (B, S) long, -1 = free slot; generator: a
    torch.Generator used for all randomness. `extra` holds per-call options listed in `call_options`.
    """

    name: str = ""
    uses_tau: bool = False  #: whether a `tau=` per-call override (and a temperature schedule) applies
    call_options: tuple[str, ...] = ()

    def __call__(self, logits: Tensor, score_fn: ScoreFn, *, mask: Optional[Tensor] = None,
                 fixed: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                 **extra) -> EstimatorOutput:
        unknown = sorted(set(extra) - set(self.call_options))
        if unknown:
            hint = " (this method has no temperature; check est.uses_tau)" if "tau" in unknown else ""
            raise TypeError(f"{self.name} got unexpected option(s) {unknown}{hint}; "
                            f"accepted per-call options: {list(self.call_options)}")
        prep = prepare(logits, mask, fixed)
        return self.estimate(prep, score_fn, generator, **extra)

    def estimate(self, prep: Prepared, score_fn: ScoreFn, generator: Optional[torch.Generator],
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
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def normalize_name(name: str) -> str:
    """'ST_Gumbel ' -> 'st-gumbel'."""
    return str(name).strip().lower().replace("_", "-")


def unknown_name_error(name, valid, what: str = "gradient method") -> ValueError:
    """ValueError naming the valid choices, with a difflib 'did you mean' when one is close."""
    close = difflib.get_close_matches(normalize_name(name), list(valid), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {what} {name!r}.{hint} Valid: {', '.join(valid)}")


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
