"""Shared pieces of the gradient estimators: input checks, masks and fixed slots, scorer calls, names.

Shapes used throughout: B contexts, S slots, V = padded vocabulary size, K samples per context.
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

#: Logit given to invalid (masked) categories: large, negative and finite (exp() underflows to 0).
MASK_VALUE = -1e9

#: Registered estimator classes by name (filled by contract.register): here, in the module every other
#: one imports, so that `select` can tell a registered method from a misspelt one without a cycle.
REGISTRY: dict[str, type] = {}

#: score_fn(x) -> (N,) scores: x (N, S, V) one-hot or relaxed rows; hard rows of a vocabulary of
#: CDF_VOCABULARY categories or more come as (N, S) long indices instead (`hard_rows`).
ScoreFn = Callable[[Tensor], Tensor]

#: Vocabularies of at least this many categories are drawn by inverse CDF (`categorical`): one uniform
#: per draw and one pass over the probabilities per context and slot, instead of Gumbel-max's V
#: noise values per draw (at 10^5 categories, 128 draws of one slot would take 12.8M). Smaller
#: vocabularies keep Gumbel-max, so their seeded draws are as before.
CDF_VOCABULARY = 4096


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


def check_mask(mask: Optional[Tensor], shape: tuple[int, int, int], device) -> Tensor:
    """Full (B, S, V) bool mask from mask (S, V) or (B, S, V) bool or None (all valid)."""
    B, S, V = shape
    if mask is None:
        return torch.ones(1, 1, 1, dtype=torch.bool, device=device).expand(B, S, V)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) not in ((S, V), (B, S, V)):
        raise ValueError(f"mask must have shape (S, V)={(S, V)} or (B, S, V)={(B, S, V)}, got {tuple(mask.shape)}")
    full = mask.to(device).expand(B, S, V)
    if not bool(full.any(-1).all()):
        bad = (~full.any(-1)).nonzero()[:5].tolist()
        raise ValueError(f"every slot needs at least one valid category; no valid category at (context, slot) {bad}")
    return full


def check_fixed_slots(fixed: Optional[Tensor], mask: Tensor) -> Tensor:
    """(B, S) long fixed values (-1 = free) from fixed (B, S) or (S,) integer or None, checked
    against the full mask (B, S, V)."""
    B, S, V = mask.shape
    if fixed is None:
        return torch.full((B, S), -1, dtype=torch.long, device=mask.device)
    if fixed.dtype.is_floating_point or fixed.dtype == torch.bool:
        raise TypeError(f"fixed must be an integer tensor, got dtype {fixed.dtype}")
    if tuple(fixed.shape) not in ((S,), (B, S)):
        raise ValueError(f"fixed must have shape (B, S)={(B, S)} or (S,)={(S,)}, got {tuple(fixed.shape)}")
    fixed_t = fixed.to(device=mask.device, dtype=torch.long).expand(B, S)
    if bool(((fixed_t < -1) | (fixed_t >= V)).any()):
        raise ValueError(f"fixed values must be -1 (free) or a category in [0, {V}), "
                         f"got min {int(fixed_t.min())} max {int(fixed_t.max())}")
    ok = mask.gather(-1, fixed_t.clamp(min=0)[..., None])[..., 0] | (fixed_t < 0)
    if not bool(ok.all()):
        raise ValueError(f"fixed uses masked (invalid) categories at (context, slot) {(~ok).nonzero()[:5].tolist()}")
    return fixed_t


def one_hot(index: Tensor, num_classes: int) -> Tensor:
    """(...,) long -> (..., V) float32 one-hot."""
    return F.one_hot(index, num_classes).to(torch.float32)


def hard_rows(index: Tensor, V: int) -> Tensor:
    """Hard rows as estimators hand them to score_fn: (..., S) long -> (..., S, V) float32 one-hots,
    or, from CDF_VOCABULARY categories on, the (..., S) indices themselves (one-hots of 32 x 16
    rows of 67 slots over 10^5 categories would take 27 GB)."""
    return index if V >= CDF_VOCABULARY else one_hot(index, V)


def call_scorer(score_fn: ScoreFn, x: Tensor, *, grad: bool) -> Tensor:
    """Score rows x: (B, S, V) or (B, R, S, V) -> (B,) or (B, R), one call to score_fn on the flattened
    (N, S, V) batch; long x (B, S) or (B, R, S) (`hard_rows`) goes as (N, S). Rows are context-major:
    row n belongs to context n // R (N = B * R), so a context-aware score_fn can use
    contexts.repeat_interleave(N // B). grad=False: under no_grad.
    """
    row = 1 if not x.is_floating_point() else 2
    lead = x.shape[:-row]
    flat = x.reshape(-1, *x.shape[-row:])
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


def score_stats(scores: Tensor, entropy: Tensor) -> dict[str, float]:
    """Common log values: mean/max score and mean per-context entropy (nats, summed over free slots)."""
    s = scores.detach().float()
    return {"score_mean": float(s.mean()), "score_max": float(s.max()), "entropy": float(entropy.detach().mean())}


def normalize_name(name: str) -> str:
    """'ST_Gumbel ' -> 'st-gumbel'."""
    return str(name).strip().lower().replace("_", "-")


def unknown_name_error(name, valid, what: str = "gradient method") -> ValueError:
    """ValueError naming the valid choices, with a difflib 'did you mean' when one is close."""
    close = difflib.get_close_matches(normalize_name(name), list(valid), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {what} {name!r}.{hint} Valid: {', '.join(valid)}")


