"""The generator contract shared by the factorized, autoregressive and pointer generators.

Shapes: B contexts, S slots, V categories per slot (padded: V_max for tables, N_max items for the
pointer form), K or M rows per context. A row is (S,) long category indices.

Every generator is an nn.Module with
- `choice_mask(ctx)` -> (B, S, V) bool, True = a valid category (padding and padded items False);
- `logits(ctx, x=None)` -> (B, S, V) float, masked entries set to MASK_VALUE. For an autoregressive
  generator `x` (B, S, V) holds the rows chosen so far (one-hot, soft, or zeros for "not chosen") and
  slot s's logits depend only on the slots before s in `order`; other generators ignore `x`;
- `order`: the slot order of sequential decoding (identity for non-autoregressive generators);
- autoregressive generators also define `features(ctx)` (what the B contexts contribute, computed
  once) and `slot_logits(features, x, s, carry, padded=True)`: x (B, M, S, V) -> ((B, M, V) slot s's
  logits for M rows per context, carry), called once per slot in `order`; x may also be (B, M, S)
  long rows (-1 = not chosen), which is what decoding passes; carry is the generator's own state for
  those rows (None at the first slot), reordered along M by beam search; padded=False allows logits
  of the slot's own categories only (B, M, V_s). Where `shares_first`, decoding takes the first
  slot's logits once per context (every row of a context is alike before it) and draws its k
  choices from them at once. Decoders call slot_logits within `decoding()`, where the weights do
  not change, so a generator may keep what it derives from them alone for the whole call;
- `own_logits(ctx, slots)`: each slot's logits over its own categories (the ragged layout never
  pads them), which polish uses to rate the categories of a wide slot.
Table generators come in two layouts (GeneratorConfig.layout): "padded" stores every slot's weights
padded to V_max; "ragged" stores the real categories only (sum_s V_s), so a 10^5-category slot beside
dozens of small ones costs about what it costs alone (logits are still returned padded).
From these methods this base class derives sampling, teacher-forced log-probabilities and
relaxed (straight-through) sampling, so decoders and training code work with any generator.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn

from choicegrad.estimators import MASK_VALUE, select
from choicegrad.estimators.gumbel import CDF_VOCABULARY, categorical
from choicegrad.generators.context import DECODE_ELEMENTS, Context, decode_chunk, in_batch_chunks

KINDS = ("factorized", "autoregressive", "pointer")


class GeneratorConfig(BaseModel):
    """Architecture of a generator. Stored with its checkpoint."""

    kind: Literal["factorized", "autoregressive", "pointer"] = "autoregressive"
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1,
                              description="MLP widths (trunk; MADE hidden layers for autoregressive)")
    context_dim: int = Field(16, ge=1, description="embedding size per categorical context column")
    order: Optional[list[int]] = Field(None, description="autoregressive slot order (default 0..S-1)")
    heads: int = Field(4, ge=1, description="pointer: attention heads")
    attention_layers: int = Field(1, ge=0, description="pointer: self-attention layers over the items")
    attention_width: Optional[int] = Field(None, ge=1, description="pointer: None: full transformer layers "
                                           "(N^2 in a list's length); an int: light SetAttention layers of this "
                                           "width (linear in it)")
    layout: Optional[Literal["padded", "ragged"]] = Field(
        None, description="table generators: weights per slot padded to the largest vocabulary, or of each "
                          "slot's own categories only (autoregressive: no skip layer); None: ragged from "
                          "CDF_VOCABULARY categories in a slot or RAGGED_WIDTH slots x categories")


RAGGED_WIDTH = 8192


def resolve_layout(config: GeneratorConfig, sizes: list[int]) -> GeneratorConfig:
    """config with `layout` set: as given, else "ragged" where a slot has CDF_VOCABULARY categories or
    more, or slots x V_max exceeds RAGGED_WIDTH (where padding, and the autoregressive generator's
    (S V_max)^2 skip layer, cost most), else "padded"."""
    if config.layout is not None or config.kind == "pointer":
        return config
    V = max(sizes)
    ragged = V >= CDF_VOCABULARY or len(sizes) * V > RAGGED_WIDTH
    return config.model_copy(update={"layout": "ragged" if ragged else "padded"})


def fill_fixed(rows: Tensor, fixed: Optional[Tensor]) -> Tensor:
    """Put fixed values into rows. rows (B, ..., S) long; fixed (B, S) or (S,) long, -1 = free."""
    if fixed is None:
        return rows
    f = fixed.to(rows.device)
    if f.dim() == 1:
        f = f.expand(rows.shape[0], -1)
    while f.dim() < rows.dim():
        f = f.unsqueeze(1)
    return torch.where(f >= 0, f.expand_as(rows), rows)


def rows_to_inputs(rows: Tensor, V: int, dtype=torch.float32) -> Tensor:
    """(..., S) long rows, -1 = missing/not chosen -> (..., S, V) one-hot, all-zero where missing."""
    hot = F.one_hot(rows.clamp(min=0), V).to(dtype)
    return hot * (rows >= 0).unsqueeze(-1).to(dtype)


def observed_prefix(rows: Tensor, order: list[int]) -> Tensor:
    """(..., S) bool: slot observed (>= 0) and so is every slot before it in `order`, from rows (..., S)
    long. An autoregressive generator's teacher-forced conditional of a slot after a missing one would
    see an all-zero input that its sampling never produces; the observed prefix's terms are exactly
    the log-likelihood of those slots."""
    o = torch.as_tensor(order, device=rows.device)
    seen = (rows.index_select(-1, o) >= 0).to(torch.int64).cumprod(-1).bool()
    return seen.index_select(-1, torch.argsort(o))


def masked_log_softmax(logits: Tensor) -> Tensor:
    """log_softmax over the last axis in fp32 (masked logits already hold MASK_VALUE)."""
    return torch.log_softmax(logits.float(), -1)


class Generator(nn.Module):
    """Abstract generator; see the module docstring for the contract."""

    kind: str = ""
    autoregressive: bool = False
    shares_first: bool = False

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config

    # --- the two methods a generator defines -----------------------------------------------------
    def choice_mask(self, ctx: Context) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def logits(self, ctx: Context, x: Optional[Tensor] = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, ctx: Context):  # pragma: no cover - autoregressive generators only
        raise NotImplementedError

    def decoding(self):
        """A context in which the weights do not change (decoding without autograd): a generator may
        keep what slot_logits computes from its weights alone for the whole call."""
        return contextlib.nullcontext()

    def own_logits(self, ctx: Context, slots: list[int]) -> list[Tensor]:
        """[(B, V_s)] logits(ctx) of each slot in `slots` over its own categories (an autoregressive
        generator's with nothing chosen, which are its first slot's exactly)."""
        full = self.logits(ctx)
        return [full[:, s] for s in slots]

    def slot_logits(self, features, x: Tensor, s: int, carry=None, padded: bool = True) -> tuple[Tensor, Any]:  # pragma: no cover
        raise NotImplementedError

    @property
    def num_slots(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def order(self) -> list[int]:
        return list(range(self.num_slots))

    def meta(self) -> dict:
        """Constructor arguments (besides the config) recorded in the checkpoint."""
        return {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- derived: teacher forcing -----------------------------------------------------------------
    def teacher_logits(self, rows: Tensor, ctx: Context) -> Tensor:
        """Logits of every slot given the rest of the row, in one pass.

        rows (B, M, S) long (-1 = missing) -> (B, M, S, V). For an autoregressive generator slot s
        sees only the slots before it in `order` (a missing one is an all-zero input).
        """
        B, M, S = rows.shape
        if not self.autoregressive:
            logits = self.logits(ctx)
            return logits.unsqueeze(1).expand(B, M, *logits.shape[1:])
        logits = self.logits(ctx.repeat_interleave(M), rows.reshape(B * M, S))
        return logits.reshape(B, M, S, logits.shape[-1])

    def log_prob(self, rows: Tensor, ctx: Context, temperature: float = 1.0) -> Tensor:
        """Log-probability of rows, summed over observed slots.

        rows (B, M, S) or (B, S) long, -1 = missing (left out of the sum) -> (B, M) or (B,). For an
        autoregressive generator only the observed prefix in `order` counts (observed_prefix): the
        slots after a missing one are left out too. Teacher forcing: one forward pass.
        """
        squeeze = rows.dim() == 2
        r = rows.unsqueeze(1) if squeeze else rows
        lp, _ = self.teacher_terms(r, ctx, temperature, entropy=False)
        keep = self.observed(r)
        out = torch.where(keep, lp, torch.zeros_like(lp)).sum(-1)
        return out[:, 0] if squeeze else out

    def observed(self, rows: Tensor) -> Tensor:
        """(..., S) bool: the slots of rows (..., S) long whose log-probability terms log_prob sums."""
        return observed_prefix(rows, self.order) if self.autoregressive else rows >= 0

    def teacher_terms(self, rows: Tensor, ctx: Context, temperature: float = 1.0,
                      entropy: bool = True) -> tuple[Tensor, Optional[Tensor]]:
        """Teacher-forced per slot: (log p(the row's category), entropy of the slot's conditional, or
        None unless `entropy`), each (B, M, S), from rows (B, M, S) long (-1 = missing: category 0's
        entry, to be masked by the caller)."""
        logp = masked_log_softmax(self.teacher_logits(rows, ctx) / temperature)
        lp = logp.gather(-1, rows.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return lp, -(logp.exp() * logp).sum(-1) if entropy else None

    # --- derived: sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, ctx: Context, k: int = 1, temperature: float = 1.0, fixed: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """K rows per context drawn from the generator at `temperature`, fixed slots kept.

        -> (B, k, S) long. Autoregressive generators decode slot by slot in `order`, each choice
        conditioned on the ones before (including fixed values), in chunks of about DECODE_ROWS rows:
        with a seeded `generator`, draws of more rows than that depend on the chunk size. generator:
        a torch.Generator, or a BatchShard of one (data parallelism: ctx is this rank's share).
        Independent slots are drawn by `categorical` (inverse CDF for vocabularies of CDF_VOCABULARY
        categories or more), in chunks of contexts of at most DECODE_ELEMENTS logits.
        """
        if not self.autoregressive:
            S, V = self.choice_mask(ctx.index(slice(0, 1))).shape[1:]
            per_context = S * V * (8 if V >= CDF_VOCABULARY else k)   # inverse CDF: logits, copies, float64 sums

            def draw(c: Context, g) -> Tensor:
                return categorical(self.logits(c).float() / temperature, k, generator=g)

            return fill_fixed(in_batch_chunks(draw, ctx, max(1, DECODE_ELEMENTS // per_context), generator), fixed)

        def pick(logits: Tensor, g, n: int = 1) -> Tensor:
            return categorical(logits.float() / temperature, n, generator=g).reshape(len(logits), n * logits.shape[1])

        return self._decode(ctx, k, pick, fixed, generator)

    @torch.no_grad()
    def greedy(self, ctx: Context, fixed: Optional[Tensor] = None) -> Tensor:
        """(B, S) long: the most likely choice slot by slot (given the earlier ones), fixed slots kept."""
        return self._decode(ctx, 1, lambda logits, g, n=1: logits.argmax(-1), fixed)[:, 0]   # k = 1: n = 1

    def _decode(self, ctx: Context, k: int, pick, fixed: Optional[Tensor], generator=None) -> Tensor:
        """k rows per context (B, k, S), each slot chosen by pick(logits (B, m, V), generator, n) ->
        (B, m * n) long, n choices per row (n > 1 for m = 1 only), `generator` being the chunk's
        (in_batch_chunks)."""
        mask = self.choice_mask(ctx.index(slice(0, 1)))
        S, V = mask.shape[1:]
        if not self.autoregressive:   # all slots at once: chunks only where k x S x V logits per context are many
            def draw(c: Context, g) -> Tensor:
                logits = self.logits(c)
                return pick(logits.unsqueeze(1).expand(len(c), k, S, V), g)

            return fill_fixed(in_batch_chunks(draw, ctx, max(1, DECODE_ELEMENTS // max(1, k * S * V)), generator), fixed)
        ffix = None if fixed is None else fill_fixed(torch.full((len(ctx), S), -1, dtype=torch.long, device=mask.device),
                                                     fixed)
        width = V                                   # logits per row at a step, which sets the chunks
        if self.shares_first and k > 1:             # the first slot's logits once per context, not per row
            sizes = mask[0].sum(-1).tolist()
            width = max([-(-sizes[self.order[0]] // k)] + [sizes[s] for s in self.order[1:]])
        with self.decoding():
            return in_batch_chunks(lambda c, g, f: self._decode_chunk(c, k, lambda x, n: pick(x, g, n), f, S), ctx,
                                   decode_chunk(k, width), generator, ffix)

    def _decode_chunk(self, ctx: Context, k: int, pick, fixed: Optional[Tensor], S: int) -> Tensor:
        rows = torch.full((len(ctx), k, S), -1, dtype=torch.long, device=self.device)
        ffix = None if fixed is None else fixed.unsqueeze(1)
        feats, carry = self.features(ctx), None
        for p, s in enumerate(self.order):
            once = p == 0 and self.shares_first and k > 1
            logits, carry = self.slot_logits(feats, rows[:, :1] if once else rows, s, carry, padded=False)
            choice = pick(logits, k if once else 1)
            if once:
                carry = [c.expand(-1, k, -1) for c in carry]
            if ffix is not None:
                choice = torch.where(ffix[:, :, s] >= 0, ffix[:, :, s], choice)
            rows[:, :, s] = choice
        return rows

    def relaxed_sample(self, ctx: Context, method: str, tau: float = 1.0, fixed: Optional[Tensor] = None,
                       generator: Optional[torch.Generator] = None, k: int = 10) -> tuple[Tensor, Tensor, Tensor]:
        """One row per context whose choices carry `method`'s gradient (see gradients.select).

        -> (x (B, S, V) float: one-hot rows with a surrogate gradient for st/st-gumbel/gumbel-rao/
        reinmax, soft rows for soft/gumbel; index (B, S) long hard choices; logits (B, S, V) the
        conditionals the choices were drawn from). Autoregressive generators feed each choice, with
        its gradient, into the next slot's input (straight-through through the sampled prefix).
        k: conditional Gumbel draws of gumbel-rao.
        """
        if not self.autoregressive:
            logits = self.logits(ctx)
            mask = self.choice_mask(ctx)
            x = select(logits, method, tau, mask=mask, generator=generator, k=k)
            index = x.detach().argmax(-1)
            if fixed is not None:
                pinned = fill_fixed(torch.full_like(index, -1), fixed)
                pin = pinned >= 0
                index = torch.where(pin, pinned, index)
                x = torch.where(pin.unsqueeze(-1), F.one_hot(index, x.shape[-1]).to(x.dtype), x)
            return x, index, logits
        mask = self.choice_mask(ctx)
        B, S, V = mask.shape
        feats, carry = self.features(ctx), None
        slots: list[Tensor] = [torch.zeros(B, V, device=mask.device)] * S
        index = torch.full((B, S), -1, dtype=torch.long, device=mask.device)
        step_logits: list[Tensor] = [torch.zeros(B, V, device=mask.device)] * S
        ffix = None if fixed is None else fill_fixed(torch.full((B, S), -1, dtype=torch.long, device=mask.device), fixed)
        for s in self.order:
            logits, carry = self.slot_logits(feats, torch.stack(slots, 1).unsqueeze(1), s, carry)
            logits = logits[:, 0]
            choice = select(logits, method, tau, mask=mask[:, s], generator=generator, k=k)
            idx = choice.detach().argmax(-1)
            if ffix is not None:
                pin = ffix[:, s] >= 0
                idx = torch.where(pin, ffix[:, s], idx)
                choice = torch.where(pin[:, None], F.one_hot(idx, V).to(choice.dtype), choice)
            slots[s], step_logits[s] = choice, logits
            index[:, s] = idx
        return torch.stack(slots, 1), index, torch.stack(step_logits, 1)


def mask_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """Set invalid categories to MASK_VALUE. logits (B, S, V), mask broadcastable bool."""
    return logits.masked_fill(~mask, MASK_VALUE)


class TableGenerator(Generator):
    """What the table-form generators share: slot sizes (S,), the context columns they embed with a
    ContextTrunk (`trunk_hidden` widths), the (S, V_max) mask of real categories, and `meta()`.
    In the ragged layout also: `offsets` (S + 1 ints, slot s's categories are s's ragged columns
    offsets[s]:offsets[s+1]), buffers `starts` (S,) of offsets[:-1], `columns` (sum V_s,) of each
    ragged column's place in the flat (S * V_max) padded logits, `slot_of` (sum V_s,) its slot, and
    `pad`."""

    def __init__(self, sizes: list[int], cardinalities: list[int], num_numeric: int, config: GeneratorConfig,
                 trunk_hidden: list[int]):
        from choicegrad.generators.trunk import ContextTrunk

        super().__init__(resolve_layout(config, list(sizes)))
        self.sizes, self.cardinalities, self.num_numeric = list(sizes), list(cardinalities), int(num_numeric)
        V = max(sizes)
        self.register_buffer("mask", torch.arange(V)[None, :] < torch.tensor(sizes)[:, None], persistent=False)
        self.trunk = ContextTrunk(self.cardinalities, self.num_numeric, self.config.context_dim, trunk_hidden)
        self.ragged = self.config.layout == "ragged"
        if self.ragged:
            self.offsets = [0]
            for v in sizes:
                self.offsets.append(self.offsets[-1] + int(v))
            slot_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
            self.register_buffer("starts", torch.tensor(self.offsets[:-1]), persistent=False)
            within = torch.arange(self.offsets[-1]) - self.starts[slot_of]
            self.register_buffer("slot_of", slot_of, persistent=False)
            self.register_buffer("columns", slot_of * V + within, persistent=False)

    def own_logits(self, ctx, slots: list[int]) -> list[Tensor]:
        """Generator.own_logits without the padding; the ragged layout never pads them."""
        if self.ragged:
            flat = self.ragged_logits(ctx)
            return [flat[:, self.offsets[s]:self.offsets[s + 1]] for s in slots]
        full = self.logits(ctx)
        return [full[:, s, :self.sizes[s]] for s in slots]

    def ragged_logits(self, ctx) -> Tensor:  # pragma: no cover - each form's
        """Ragged layout: (B, sum V_s) logits(ctx), each slot's own categories (offsets)."""
        raise NotImplementedError

    def pad(self, ragged: Tensor) -> Tensor:
        """(..., sum V_s) ragged logits -> (..., S, V_max), MASK_VALUE in the padding (differentiable)."""
        S, V = self.mask.shape
        out = ragged.new_full((*ragged.shape[:-1], S * V), MASK_VALUE)
        return out.index_copy(-1, self.columns, ragged).reshape(*ragged.shape[:-1], S, V)

    @property
    def num_slots(self) -> int:
        return len(self.sizes)

    def meta(self) -> dict:
        return {"sizes": self.sizes, "cardinalities": self.cardinalities, "num_numeric": self.num_numeric}

    def choice_mask(self, ctx) -> Tensor:
        return self.mask.unsqueeze(0).expand(len(ctx), -1, -1)
