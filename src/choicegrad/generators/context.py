"""Contexts a generator conditions on: table context columns, or a padded list of item vectors.

Both kinds share one small protocol so training and decoding code never branches on the kind:
`len(ctx)`, `ctx.index(idx)`, `ctx.repeat_interleave(k)` and `ctx.to(device)`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor


@dataclass
class TableContext:
    """Encoded context columns of B contexts. cat: (B, C_cat) long; num: (B, C_num) float.

    A context-free table has C_cat = C_num = 0 (shape (B, 0)); B still counts the contexts asked for.
    """

    cat: Tensor
    num: Tensor

    def __len__(self) -> int:
        return int(self.cat.shape[0])

    @property
    def device(self) -> torch.device:
        return self.cat.device

    def index(self, idx) -> TableContext:
        """The contexts at positions `idx` (long tensor, array or slice)."""
        idx = torch.as_tensor(idx, device=self.cat.device) if not isinstance(idx, slice) else idx
        return TableContext(self.cat[idx], self.num[idx])

    def repeat_interleave(self, k: int) -> TableContext:
        """Each context repeated k times in a row: (B, ...) -> (B * k, ...)."""
        return TableContext(self.cat.repeat_interleave(k, 0), self.num.repeat_interleave(k, 0))

    def to(self, device) -> TableContext:
        return TableContext(self.cat.to(device), self.num.to(device))

    @classmethod
    def empty(cls, n: int, device=None) -> TableContext:
        """n contexts of a context-free table."""
        return cls(torch.zeros(n, 0, dtype=torch.long, device=device), torch.zeros(n, 0, device=device))

    def unique(self) -> tuple[TableContext, np.ndarray]:
        """Distinct contexts (rows of cat and num together) and the (B,) id of each original one."""
        key = np.concatenate([self.cat.cpu().numpy().astype(np.float64), self.num.cpu().numpy().astype(np.float64)], 1)
        if key.shape[1] == 0:
            return self.index(slice(0, min(1, len(self)))), np.zeros(len(self), dtype=np.int64)
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        return self.index(torch.as_tensor(first)), inverse.reshape(-1)


@dataclass
class ItemContext:
    """B lists of item vectors, padded. items: (B, N, D) float; mask: (B, N) bool, True = a real item.

    cat (B, C_cat) long and num (B, C_num) float: the lists' context columns (e.g. the user), encoded
    as a TableContext's (empty by default); slot_mask (B, S, N) bool or None: which items each slot
    may take (per-slot eligibility), within `mask`.
    """

    items: Tensor
    mask: Tensor
    cat: Optional[Tensor] = None
    num: Optional[Tensor] = None
    slot_mask: Optional[Tensor] = None

    def __post_init__(self):
        if self.items.dim() != 3:
            raise ValueError(f"items must have shape (B, N, D), got {tuple(self.items.shape)}")
        if tuple(self.mask.shape) != tuple(self.items.shape[:2]) or self.mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool of shape (B, N)={tuple(self.items.shape[:2])}, "
                             f"got {self.mask.dtype} {tuple(self.mask.shape)}")
        B = self.items.shape[0]
        if self.cat is None:
            self.cat = torch.zeros(B, 0, dtype=torch.long, device=self.items.device)
        if self.num is None:
            self.num = torch.zeros(B, 0, device=self.items.device)
        if self.cat.shape[0] != B or self.num.shape[0] != B:
            raise ValueError(f"cat and num must have {B} rows, got {tuple(self.cat.shape)} and {tuple(self.num.shape)}")
        if self.slot_mask is not None and (self.slot_mask.dim() != 3 or self.slot_mask.shape[0] != B
                                           or self.slot_mask.shape[2] != self.items.shape[1]):
            raise ValueError(f"slot_mask must have shape (B, S, N) with B, N = {B}, {self.items.shape[1]}, "
                             f"got {tuple(self.slot_mask.shape)}")
        if len(self.mask) and not bool(self.mask.any(1).all()):
            raise ValueError("every item list needs at least one item (a row of mask is all False)")

    def __len__(self) -> int:
        return int(self.items.shape[0])

    @property
    def device(self) -> torch.device:
        return self.items.device

    def _map(self, fn) -> ItemContext:
        return ItemContext(fn(self.items), fn(self.mask), fn(self.cat), fn(self.num),
                           None if self.slot_mask is None else fn(self.slot_mask))

    def index(self, idx) -> ItemContext:
        idx = torch.as_tensor(idx, device=self.items.device) if not isinstance(idx, slice) else idx
        return self._map(lambda t: t[idx])

    def repeat_interleave(self, k: int) -> ItemContext:
        return self._map(lambda t: t.repeat_interleave(k, 0))

    def to(self, device) -> ItemContext:
        return self._map(lambda t: t.to(device))

    def allowed(self, slots: int) -> Tensor:
        """(B, S, N) bool: the items each of `slots` slots may take (the list, and slot_mask if given)."""
        allowed = self.mask.unsqueeze(1).expand(-1, slots, -1)
        return allowed if self.slot_mask is None else allowed & self.slot_mask


Context = TableContext | ItemContext

DECODE_ROWS = 1 << 13
"""Rows per chunk of sequential decoding: small enough that each step's activations stay in cache
(one large tensor per step spends most of its time on fresh memory)."""


DECODE_ELEMENTS = 1 << 26
"""Logits per chunk of decoding (256 MB of float32): with a large vocabulary, fewer rows than
DECODE_ROWS per chunk, so that a draw's noise never needs (rows, V) for all rows at once."""


def decode_chunk(rows_per_context: int, width: int = 1) -> int:
    """Contexts per chunk of sequential decoding: about DECODE_ROWS rows, fewer when each row holds
    `width` logits at a step (the vocabulary V) and DECODE_ROWS rows would exceed DECODE_ELEMENTS."""
    rows = min(DECODE_ROWS, max(1, DECODE_ELEMENTS // max(1, width)))
    return max(1, rows // max(1, rows_per_context))


def in_context_chunks(fn, ctx: Context, size: int, *per_context):
    """fn(ctx chunk, *per_context chunks) over chunks of `size` contexts, the results joined: tensors
    concatenated along dim 0, tuples and dataclasses (e.g. Candidates) field by field, ints summed.
    per_context: (B, ...) tensors or None."""
    size = max(1, int(size))
    if len(ctx) <= size:
        return fn(ctx, *per_context)
    parts = []
    for start in range(0, len(ctx), size):
        sl = slice(start, start + size)
        parts.append(fn(ctx.index(sl), *(None if t is None else t[sl] for t in per_context)))
    return _join(parts)


def in_batch_chunks(fn, ctx: Context, size: int, generator, *per_context):
    """fn(ctx chunk, generator, *per_context chunks) over chunks of `size` contexts, as
    in_context_chunks. With a BatchShard generator (data parallelism: ctx is this rank's share of a
    global batch) the chunks are the GLOBAL batch's, as one process makes them: this rank calls fn
    for every chunk, with its part of it (perhaps no context) and the chunk's window of the shard, so
    that its draws are one process's and the shared generator advances alike on every rank."""
    from choicegrad.estimators.shard import BatchShard

    if not isinstance(generator, BatchShard):
        return in_context_chunks(lambda c, *p: fn(c, generator, *p), ctx, size, *per_context)
    size = max(1, int(size))
    if generator.size <= size:
        return fn(ctx, generator, *per_context)
    parts = []
    for start in range(0, generator.size, size):
        end = min(start + size, generator.size)
        sl = generator.local(start, end)
        parts.append(fn(ctx.index(sl), generator.window(start, end), *(None if t is None else t[sl] for t in per_context)))
    return _join(parts)


def _join(parts: list):
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, 0)
    if isinstance(first, tuple):
        return tuple(_join(list(p)) for p in zip(*parts))
    if dataclasses.is_dataclass(first):
        return type(first)(**{f.name: _join([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(first)})
    return sum(parts)
