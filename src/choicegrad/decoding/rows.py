"""Rows of a choice space as tensors: keys for distinctness, the space a decoder may use, single-slot changes.

rows are (..., S) long category indices (-1 where invalid); allowed (B, S, V) bool marks the categories
allowed per context and slot (the generator's mask, restricted to the fixed value on fixed slots).
One space shared by every context is a stride-0 expansion of (1, S, V): what is computed from it per
context is computed once (per_context), which matters when S x V is large (67 x 10^5 per context).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor

from choicegrad.errors import InputError

MAX_ENUMERATE = 5_000_000
_NEG = float("-inf")

_HASH = torch.randint(1, 2**62, (1024,), generator=torch.Generator().manual_seed(12345)) | 1


def row_keys(rows: Tensor, vocab: int) -> Tensor:
    """(..., S) long rows -> (...,) int64 keys, equal iff rows are equal (exact mixed radix when
    vocab**S < 2**62, else a 64-bit multiplicative hash). Keys are >= 0."""
    S = rows.shape[-1]
    r = rows.clamp(min=0)
    if S * math.log2(max(vocab, 2)) < 62:
        radix = vocab ** torch.arange(S - 1, -1, -1, device=rows.device, dtype=torch.long)
        return (r * radix).sum(-1)
    mult = _HASH[:S].to(rows.device) if S <= len(_HASH) else _HASH.repeat(S // len(_HASH) + 1)[:S].to(rows.device)
    return ((r + 1) * mult).sum(-1) & (2**62 - 1)


def first_occurrence(keys: Tensor, valid: Tensor) -> Tensor:
    """(B, M) keys, (B, M) bool -> (B, M) bool: valid and not equal to an earlier valid key."""
    B, M = keys.shape
    sentinel = -1 - torch.arange(M, device=keys.device).expand(B, M)   # invalid entries never collide
    k = torch.where(valid, keys, sentinel)
    order = torch.argsort(k, dim=1, stable=True)
    sk = k.gather(1, order)
    dup_sorted = torch.zeros_like(valid)
    dup_sorted[:, 1:] = sk[:, 1:] == sk[:, :-1]
    dup = torch.zeros_like(valid).scatter(1, order, dup_sorted)
    return valid & ~dup


def _pad(rows: Tensor, scores: Tensor, valid: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    B, M, S = rows.shape
    if M >= k:
        return rows, scores, valid
    extra = k - M
    return (torch.cat([rows, rows.new_full((B, extra, S), -1)], 1),
            torch.cat([scores, scores.new_full((B, extra), _NEG)], 1),
            torch.cat([valid, valid.new_zeros((B, extra))], 1))


def distinct_topk(rows: Tensor, scores: Tensor, k: int, vocab: int, valid: Optional[Tensor] = None,
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """The k best distinct rows per context. rows (B, M, S), scores (B, M) -> rows (B, k, S),
    scores (B, k) best first, valid (B, k); fewer than k distinct valid rows leaves invalid tails."""
    ok = torch.isfinite(scores) if valid is None else valid & torch.isfinite(scores)
    keep = first_occurrence(row_keys(rows, vocab), ok)
    s = torch.where(keep, scores, torch.full_like(scores, _NEG))
    rows, s, keep = _pad(rows, s, keep, k)
    top = s.topk(k, dim=1)
    out_rows = rows.gather(1, top.indices.unsqueeze(-1).expand(-1, -1, rows.shape[-1]))
    out_valid = keep.gather(1, top.indices)
    return torch.where(out_valid.unsqueeze(-1), out_rows, -1), top.values, out_valid


def distinct_in_order(rows: Tensor, valid: Tensor, k: int, vocab: int) -> tuple[Tensor, Tensor]:
    """The first k distinct valid rows per context, in their order. -> rows (B, k, S), valid (B, k)."""
    B, M, S = rows.shape
    keep = first_occurrence(row_keys(rows, vocab), valid)
    priority = torch.where(keep, torch.arange(M, device=rows.device).expand(B, M).float(),
                           torch.full((B, M), float("inf"), device=rows.device))
    rows, priority, keep = _pad(rows, -priority, keep, k)
    top = priority.topk(k, dim=1)
    out_rows = rows.gather(1, top.indices.unsqueeze(-1).expand(-1, -1, S))
    out_valid = keep.gather(1, top.indices)
    return torch.where(out_valid.unsqueeze(-1), out_rows, -1), out_valid


# --- the space a decoder may use ---------------------------------------------------------------
def per_context(allowed: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """fn(allowed) -> (B, ...), computed on one context and expanded when `allowed` is one space
    expanded over the contexts (stride 0), else on all of them."""
    if len(allowed) > 1 and allowed.stride(0) == 0:
        one = fn(allowed[:1])
        return one.expand(len(allowed), *one.shape[1:])
    return fn(allowed)


def union_of(allowed: Tensor) -> Tensor:
    """(S, V) bool: the categories allowed in any context."""
    return allowed[0] if len(allowed) == 1 or (len(allowed) > 1 and allowed.stride(0) == 0) else allowed.any(0)


def allowed_choices(gen_mask: Tensor, fixed: Optional[Tensor]) -> Tensor:
    """(B, S, V) bool: valid categories, restricted to the fixed value on fixed slots (still one
    expanded space when both the mask and the fixed values are shared by every context)."""
    if fixed is None:
        return gen_mask
    B, S, V = gen_mask.shape
    f = fixed.to(gen_mask.device).expand(B, S)
    if B > 1 and gen_mask.stride(0) == 0 and f.stride(0) == 0:
        return allowed_choices(gen_mask[:1], f[:1]).expand(B, S, V)
    pinned = torch.arange(V, device=f.device) == f.unsqueeze(-1)
    return torch.where((f >= 0).unsqueeze(-1), pinned & gen_mask, gen_mask)


def check_fixed(fixed: Optional[Tensor], mask: Tensor) -> Optional[Tensor]:
    """Validate fixed (S,) or (B, S) against the mask (B, S, V); returns (B, S) long or None."""
    if fixed is None:
        return None
    B, S, V = mask.shape
    f = torch.as_tensor(fixed, dtype=torch.long, device=mask.device)
    if tuple(f.shape) not in ((S,), (B, S)):
        raise InputError("fixed", [f"expected shape (S,)={(S,)} or (B, S)={(B, S)}, got {tuple(f.shape)}"])
    f = f.expand(B, S)
    if bool(((f < -1) | (f >= V)).any()):
        raise InputError("fixed", [f"fixed values must be -1 (free) or a category in [0, {V})"])
    ok = mask.gather(-1, f.clamp(min=0).unsqueeze(-1)).squeeze(-1) | (f < 0)
    if not bool(ok.all()):
        raise InputError("fixed", [f"fixed uses invalid categories at (context, slot) {(~ok).nonzero()[:5].tolist()}"])
    return f


def neighbour_count(allowed: Tensor) -> Tensor:
    """(B,) long: single-slot changes of a row in the allowed space (B, S, V)."""
    return per_context(allowed, lambda a: (a.sum(-1) - 1).clamp(min=0).sum(-1))


def space_size(allowed: Tensor) -> Tensor:
    """(B,) float64: rows per context in the allowed space (B, S, V)."""
    # int32: 3x faster than bool's int64 sum
    return per_context(allowed, lambda a: a.sum(-1, dtype=torch.int32).double().prod(-1))


def enumerate_allowed(allowed: Tensor, start: int = 0, stop: Optional[int] = None) -> tuple[Tensor, Tensor, int]:
    """Rows start..stop of the product of the categories allowed in any context.

    allowed (B, S, V) -> (rows (R, S) long, ok (B, R) bool: allowed in that context, total rows).
    """
    union = union_of(allowed)                                                 # (S, V)
    counts = union.sum(-1)                                                    # (S,)
    total = int(torch.prod(counts.double()).item())
    stop = total if stop is None else min(stop, total)
    cats = torch.argsort((~union).to(torch.int8), dim=-1, stable=True)       # allowed categories first
    idx = torch.arange(start, stop, device=allowed.device)
    digits = []
    for s in range(union.shape[0] - 1, -1, -1):  # S digits of a mixed-radix number, last slot fastest
        digits.append(idx % counts[s])
        idx = idx // counts[s]
    d = torch.stack(digits[::-1], -1)                                        # (R, S)
    rows = cats.gather(1, d.T).T
    S = rows.shape[1]
    ok = allowed[:, torch.arange(S, device=rows.device), rows].all(-1)       # (B, R)
    return rows, ok, total


def uniform_rows(allowed: Tensor, n: int, generator: Optional[torch.Generator]) -> Tensor:
    """(B, n, S) rows, each slot uniform over its allowed categories. allowed (B, S, V) bool."""
    B, S, V = allowed.shape
    idx = torch.multinomial(allowed.reshape(B * S, V).float(), n, replacement=True, generator=generator)
    return idx.reshape(B, S, n).transpose(1, 2)


#: change_one_slot draws the new category by rejection (TRIES uniform guesses per row at once) from
#: this many categories on, instead of a (B, M, V) table of the allowed ones.
REJECTION_VOCABULARY = 4096


def cross_rows(first: Tensor, second: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Uniform crossover: each slot from `first` or `second` (B, M, S), half each -> (B, M, S)."""
    pick = torch.rand(first.shape, generator=generator, device=first.device) < 0.5
    return torch.where(pick, first, second)


def change_one_slot(rows: Tensor, allowed: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """rows (B, M, S) with one slot each moved to a different allowed category: the slot uniform over
    the slots with more than one allowed category, the category uniform over the others allowed there
    (rows of a one-row space stay as they are). allowed (B, S, V) -> (B, M, S)."""
    B, M, S = rows.shape
    V = allowed.shape[-1]
    free = per_context(allowed, lambda a: (a.sum(-1) > 1).float())                     # (B, S)
    free = free + (free.sum(1, keepdim=True) == 0).float()
    slot = torch.multinomial(free, M, replacement=True, generator=generator)           # (B, M)
    cur = rows.gather(2, slot.unsqueeze(-1))                                            # (B, M, 1)
    if V >= REJECTION_VOCABULARY:
        return rows.scatter(2, slot.unsqueeze(-1), _other_category(allowed, slot, cur, generator))
    ok = allowed.gather(1, slot.unsqueeze(-1).expand(B, M, V))                         # (B, M, V)
    other = ok & (torch.arange(V, device=rows.device) != cur)
    w = torch.where(other.any(-1, keepdim=True), other, ok).float()
    cat = torch.multinomial(w.reshape(B * M, V), 1, generator=generator).reshape(B, M, 1)
    return rows.scatter(2, slot.unsqueeze(-1), cat)


def _other_category(allowed: Tensor, slot: Tensor, cur: Tensor, generator: Optional[torch.Generator],
                    tries: int = 16) -> Tensor:
    """(B, M, 1): for each row a category of its `slot` (B, M) allowed and other than `cur` (B, M, 1),
    uniform among them: the first of `tries` uniform guesses below the slot's last allowed category
    that hits one; rows whose guesses all miss (sparse allowed sets) draw from the full table."""
    B, M = slot.shape
    V = allowed.shape[-1]
    last = per_context(allowed, lambda a: V - a.flip(-1).to(torch.uint8).argmax(-1))    # (B, S): 1 + last allowed
    top = last.gather(1, slot).unsqueeze(-1)                                            # (B, M, 1)
    guess = (torch.rand(B, M, tries, generator=generator, device=slot.device) * top).long().clamp_(max=V - 1)
    hit = allowed[torch.arange(B, device=slot.device)[:, None, None], slot.unsqueeze(-1), guess] & (guess != cur)
    only = per_context(allowed, lambda a: a.sum(-1)).gather(1, slot).unsqueeze(-1) <= 1  # nothing else to move to
    first = hit.to(torch.uint8).argmax(-1, keepdim=True)                               # (B, M, 1)
    out = torch.where(hit.any(-1, keepdim=True), guess.gather(-1, first), cur)
    missed = ~hit.any(-1) & ~only[..., 0]
    if bool(missed.any()):                                                              # sparse: the exact table
        b, m = missed.nonzero(as_tuple=True)
        ok = allowed[b, slot[b, m]] & (torch.arange(V, device=slot.device) != cur[b, m])
        out[b, m, 0] = torch.multinomial(ok.float(), 1, generator=generator)[:, 0]
    return out
