"""Item problems as tables: one item per slot from a list that changes per context.

- an items table: an id column and attribute columns, numeric or categorical; an item's vector is
  their encoding, in column order: a number as it is, a category one-hot over the categories seen in
  training (an unseen one encodes as zeros, with a warning). So a reward written by the user reads
  the numbers it knows; the models standardise their inputs themselves (ItemEncoder.scaling);
- a log: context columns, one column per slot holding an item id, a score;
- lists: which items each context may choose from, a table of context columns (plus, optionally, a
  list id column that names a list without being an input) and an item id; without one, the whole
  catalogue.

    catalogue = Catalogue.fit(read_table("items.csv"), "id", source="items.csv")
    log = read_log("log.csv", ItemColumns(slots=["left", "right"], score="y", context=["user"]), catalogue)

Every check names the file, the column and the rows (InputError), before anything is trained.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field

from choicegrad.data.context import ContextEncoder, moments, reads_as_numbers
from choicegrad.data.space import as_labels
from choicegrad.errors import InputError, did_you_mean, show_rows
from choicegrad.generators.context import ItemContext

#: Item slots (list entries) per chunk of lists turned into one padded ItemContext batch.
LIST_CHUNK_ITEMS = 1 << 20


class NewCategoryWarning(UserWarning):
    """An item attribute holds a category unseen in the training catalogue (it encodes as zeros)."""


class ItemAttribute(BaseModel):
    """One attribute column: numeric (mean, std of the training catalogue) or categorical (categories)."""

    name: str
    kind: Literal["numeric", "categorical"]
    mean: float = 0.0
    std: float = 1.0
    categories: list[str] = []

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.categories)


class ItemEncoder(BaseModel):
    """The items table's id column and attribute columns, and how they encode into (D,) vectors."""

    id: str
    attributes: list[ItemAttribute] = Field(min_length=1)

    @property
    def dim(self) -> int:
        return sum(a.width for a in self.attributes)

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """Each attribute's columns in the vector: (start, end), a category's one-hot block whole."""
        out, at = [], 0
        for a in self.attributes:
            out.append((at, at + a.width))
            at += a.width
        return out

    @classmethod
    def fit(cls, frame: pd.DataFrame, id_column: str, attributes: Optional[Sequence[str]] = None,
            source: str = "items") -> ItemEncoder:
        """From the training items table: `attributes` (default every column but the id), each
        numeric when its values read as numbers, else categorical."""
        problems = []
        if id_column not in frame.columns:
            problems.append(f'no item id column "{id_column}"{did_you_mean(id_column, frame.columns)}; '
                            f"columns: {', '.join(map(str, frame.columns[:12]))}")
        names = [c for c in frame.columns if c != id_column] if attributes is None else list(attributes)
        for name in names:
            if name not in frame.columns:
                problems.append(f'no attribute column "{name}"{did_you_mean(name, frame.columns)}')
        if not names and not problems:
            problems.append(f'no attribute columns beside the id "{id_column}": an item needs at least one '
                            "(a number or a category) to be scored from")
        if problems:
            raise InputError(source, problems)
        attrs = []
        for name in names:
            values = frame[name]
            if reads_as_numbers(values, frame.attrs.get("text", False)):
                x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
                mean, std = moments(x[np.isfinite(x)])
                attrs.append(ItemAttribute(name=name, kind="numeric", mean=mean, std=std))
            else:
                attrs.append(ItemAttribute(name=name, kind="categorical",
                                           categories=sorted(set(as_labels(values, source).dropna()))))
        return cls(id=id_column, attributes=attrs)

    def scaling(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(shift (D,), scale (D,)): (vector - shift) / scale standardises the numbers by the training
        catalogue's mean and std and leaves the one-hot entries as they are."""
        shift, scale = [], []
        for a in self.attributes:
            shift += [a.mean] if a.kind == "numeric" else [0.0] * a.width
            scale += [a.std or 1.0] if a.kind == "numeric" else [1.0] * a.width
        return torch.tensor(shift, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32)

    def encode(self, frame: pd.DataFrame, source: str = "items") -> tuple[np.ndarray, torch.Tensor]:
        """frame -> (ids (M,) str, vectors (M, D) float32). InputError naming the file, column and
        rows for a missing column, a missing or duplicate id, a missing or non-numeric attribute."""
        problems: list[str] = []
        missing = [c for c in [self.id, *(a.name for a in self.attributes)] if c not in frame.columns]
        if missing:
            raise InputError(source, [f'no column "{c}"{did_you_mean(c, frame.columns)} (items need the id and the '
                                      f"attributes the run was fitted with)" for c in missing])
        if len(frame) == 0:
            raise InputError(source, ["the items table has no rows"])
        ids = as_labels(frame[self.id], source)
        absent = np.flatnonzero(ids.isna().to_numpy())
        if len(absent):
            problems.append(f'column "{self.id}": missing item id at {show_rows(absent)}')
        dup = ids.duplicated(keep=False) & ids.notna()
        if dup.any():
            rows = np.flatnonzero(dup.to_numpy())
            problems.append(f'column "{self.id}": duplicate item ids {", ".join(map(repr, ids[dup].unique()[:5]))} at '
                            f"{show_rows(rows)}; each item once")
        parts, new = [], []
        for a in self.attributes:
            values = frame[a.name]
            if a.kind == "numeric":
                x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
                bad = np.flatnonzero(~np.isfinite(x))
                if len(bad):
                    problems.append(f'column "{a.name}": expected a number for every item, got missing/non-numeric/inf '
                                    f"at {show_rows(bad)}")
                parts.append(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)[:, None].astype(np.float32))
            else:
                labels = as_labels(values, source)
                gone = np.flatnonzero(labels.isna().to_numpy())
                if len(gone):
                    problems.append(f'column "{a.name}": missing value at {show_rows(gone)}')
                codes = pd.Index(a.categories).get_indexer(labels.to_numpy())
                unseen = np.flatnonzero((codes < 0) & labels.notna().to_numpy())
                if len(unseen):
                    new.append(f'column "{a.name}": {", ".join(map(repr, sorted(set(labels.iloc[unseen]))[:5]))} at '
                               f"{show_rows(unseen)} unseen in the training items: encoded as no category")
                hot = np.zeros((len(frame), a.width), dtype=np.float32)
                ok = codes >= 0
                hot[np.flatnonzero(ok), codes[ok]] = 1.0
                parts.append(hot)
        if problems:
            raise InputError(source, problems)
        for note in new:
            warnings.warn(f"{source}: {note}", NewCategoryWarning, stacklevel=3)
        return ids.to_numpy(dtype=object).astype(str), torch.from_numpy(np.concatenate(parts, 1))


@dataclass
class Catalogue:
    """Items by id: ids (M,) str, vectors (M, D) float32, frame (id and attribute columns as read)."""

    ids: np.ndarray
    vectors: torch.Tensor
    frame: pd.DataFrame
    encoder: ItemEncoder

    def __post_init__(self):
        self.index = pd.Index(self.ids, dtype=object)     # hashed lookups (an Arrow string index scans in Python)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def read(cls, frame: pd.DataFrame, encoder: ItemEncoder, source: str = "items") -> Catalogue:
        ids, vectors = encoder.encode(frame, source)
        keep = [encoder.id, *(a.name for a in encoder.attributes)]
        return cls(ids, vectors, frame[keep].reset_index(drop=True), encoder)

    @classmethod
    def fit(cls, frame: pd.DataFrame, id_column: str, attributes: Optional[Sequence[str]] = None,
            source: str = "items") -> Catalogue:
        return cls.read(frame, ItemEncoder.fit(frame, id_column, attributes, source), source)

    def extended(self, other: Optional[Catalogue]) -> Catalogue:
        """This catalogue with `other`'s items added; an id in both takes `other`'s attributes."""
        if other is None:
            return self
        keep = ~self.index.isin(other.index)
        frame = pd.concat([self.frame[keep], other.frame], ignore_index=True)
        return Catalogue(np.concatenate([self.ids[keep], other.ids]), torch.cat([self.vectors[torch.from_numpy(keep)],
                                                                                 other.vectors]), frame, self.encoder)

    def positions(self, ids: pd.Series, source: str, column: str) -> np.ndarray:
        """Item ids (a column of a table) -> (R,) long positions; InputError naming the file, column and
        rows for an id absent from the catalogue or a missing cell."""
        labels = as_labels(ids, source)
        pos = self.index.get_indexer(labels.to_numpy())
        problems = []
        gone = np.flatnonzero(labels.isna().to_numpy())
        if len(gone):
            problems.append(f'column "{column}": missing item id at {show_rows(gone)}')
        unknown = np.flatnonzero((pos < 0) & labels.notna().to_numpy())
        if len(unknown):
            shown = ", ".join(map(repr, sorted(set(labels.iloc[unknown]))[:5]))
            problems.append(f'column "{column}": item id {shown} at {show_rows(unknown)} is not in the items table '
                            f'(column "{self.encoder.id}", {len(self):,} items)')
        if problems:
            raise InputError(source, problems)
        return pos.astype(np.int64)

    def eligibility(self, slots: Sequence[str], eligible: Optional[dict[str, dict[str, list[str]]]]) -> Optional[np.ndarray]:
        """(S, M) bool: which items each slot may take ({slot: {attribute column: allowed values}}),
        or None when every slot may take every item."""
        if not eligible:
            return None
        out = np.ones((len(slots), len(self)), dtype=bool)
        for s, slot in enumerate(slots):
            for column, values in (eligible.get(slot) or {}).items():
                labels = as_labels(self.frame[column], "items").to_numpy()
                out[s] &= np.isin(labels, [str(v) for v in values])
        return out


def check_eligible(eligible: Optional[dict[str, dict[str, list[str]]]], slots: Sequence[str],
                   encoder: ItemEncoder, name: str = "eligible") -> None:
    """InputError naming `name` for a slot or attribute column the eligibility rules name that does not exist."""
    problems = []
    attributes = [a.name for a in encoder.attributes]
    for slot, rules in (eligible or {}).items():
        if slot not in slots:
            problems.append(f'unknown slot "{slot}"{did_you_mean(slot, slots)}; slots: {", ".join(slots)}')
        for column, values in (rules or {}).items():
            if column not in attributes:
                problems.append(f'slot "{slot}": "{column}" is not an item attribute{did_you_mean(column, attributes)}')
            if not values:
                problems.append(f'slot "{slot}": no allowed values of "{column}"')
    if problems:
        raise InputError(name, problems)


def check_columns(frame: pd.DataFrame, columns: Sequence[str], source: str, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(source, [f'no {what} column "{c}"{did_you_mean(c, frame.columns)}; columns: '
                                  f"{', '.join(map(str, frame.columns[:12]))}" for c in missing])


@dataclass
class ItemLog:
    """A log read against a catalogue: slots (R, S) long positions, y (R,) float64, its context
    columns encoded (cat (R, C_cat), num (R, C_num)), and the context frame (R, C)."""

    slots: torch.Tensor
    y: torch.Tensor
    cat: torch.Tensor
    num: torch.Tensor
    contexts: pd.DataFrame


def read_log(frame: pd.DataFrame, slots: Sequence[str], score: str, context: Sequence[str], catalogue: Catalogue,
             encoder: ContextEncoder, source: str = "log") -> ItemLog:
    """The log's rows as catalogue positions; InputError naming the file, column and rows for a
    missing column, an id absent from the items table, a missing or non-finite score."""
    check_columns(frame, [*slots, score, *context], source, "log")
    if len(frame) == 0:
        raise InputError(source, ["the log has no rows"])
    problems, pos = [], []
    for s in slots:
        try:
            pos.append(catalogue.positions(frame[s], source, s))
        except InputError as exc:
            problems += exc.problems
    y = pd.to_numeric(frame[score], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        problems.append(f'column "{score}": expected a finite number, got missing/non-numeric/inf at {show_rows(bad)}')
    if problems:
        raise InputError(source, problems)
    cat, num = encoder.encode(frame, source)
    return ItemLog(torch.from_numpy(np.stack(pos, 1)), torch.from_numpy(np.array(y, dtype=np.float64)), cat, num,
                   frame[list(context)].reset_index(drop=True))


@dataclass
class ItemLists:
    """Lists of items: keys (L, key columns) one row per list, members (total,) long catalogue
    positions grouped by list, offsets (L + 1,) where list l is members[offsets[l]:offsets[l + 1]]."""

    keys: pd.DataFrame
    members: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def whole(cls, keys: pd.DataFrame, items: int) -> ItemLists:
        """Every key's list the whole catalogue of `items` items."""
        L = len(keys)
        return cls(keys.reset_index(drop=True), np.tile(np.arange(items), L), np.arange(L + 1) * items)

    def subset(self, which: np.ndarray) -> ItemLists:
        lengths = self.lengths[which]
        starts = self.offsets[:-1][which]
        idx = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        return ItemLists(self.keys.iloc[which].reset_index(drop=True), self.members[idx],
                         np.concatenate([[0], np.cumsum(lengths)]))

    def table(self, catalogue: Catalogue, id_column: str) -> pd.DataFrame:
        """One row per (list, item): the key columns and the item id."""
        frame = self.keys.loc[np.repeat(np.arange(len(self)), self.lengths)].reset_index(drop=True)
        frame[id_column] = catalogue.ids[self.members]
        return frame


def read_lists(frame: pd.DataFrame, keys: Sequence[str], item_id: str, catalogue: Catalogue,
               source: str = "lists") -> ItemLists:
    """One list per distinct value of the key columns (context columns and the list id, if any; no
    key: the whole table is one list), in order of first appearance. A repeated (list, item) row
    is dropped with a warning. InputError naming the file, column and rows for a missing column or
    an id absent from the items table."""
    check_columns(frame, [*keys, item_id], source, "lists")
    if len(frame) == 0:
        raise InputError(source, ["the lists table has no rows: every list needs at least one item"])
    pos = catalogue.positions(frame[item_id], source, item_id)
    if keys:
        labels = pd.DataFrame({k: as_labels(frame[k], source) for k in keys})
        gone = labels.isna().any(axis=1).to_numpy()
        if gone.any():
            cols = [k for k in keys if labels[k].isna().any()]
            raise InputError(source, [f'column "{c}": missing value at {show_rows(np.flatnonzero(labels[c].isna().to_numpy()))}'
                                      for c in cols])
        group = labels.groupby(list(keys), sort=False, dropna=False).ngroup().to_numpy()
    else:
        group = np.zeros(len(frame), dtype=np.int64)
    pair = pd.Series(group.astype(np.int64) * (len(catalogue) + 1) + pos)
    repeated = np.flatnonzero(pair.duplicated().to_numpy())
    if len(repeated):
        warnings.warn(f"{source}: {len(repeated):,} repeated (list, item) rows dropped ({show_rows(repeated)})",
                      UserWarning, stacklevel=2)
    keep = np.flatnonzero(~pair.duplicated().to_numpy())
    group, pos = group[keep], pos[keep]
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=int(group.max()) + 1)
    first = np.unique(group, return_index=True)[1]
    key_frame = frame.iloc[keep[first]][list(keys)].reset_index(drop=True) if keys else pd.DataFrame(index=[0])
    return ItemLists(key_frame, pos[order], np.concatenate([[0], np.cumsum(counts)]))


def check_lists(lists: ItemLists, slots: Sequence[str], distinct: bool, eligible: Optional[np.ndarray],
                source: str = "lists") -> None:
    """InputError naming the lists (their keys) that cannot fill the slots: fewer items than slots
    under `distinct`, or a slot with no eligible item."""
    problems = []
    lengths = lists.lengths

    def named(which: np.ndarray) -> str:
        shown = [", ".join(f"{k}={v}" for k, v in row.items()) or "the list" for _, row in lists.keys.iloc[which[:3]].iterrows()]
        return "; ".join(shown) + (f" and {len(which) - 3:,} more" if len(which) > 3 else "")

    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        problems.append(f"{len(empty):,} list(s) with no item: {named(empty)}")
    if distinct:
        short = np.flatnonzero((lengths < len(slots)) & (lengths > 0))
        if len(short):
            problems.append(f"{len(short):,} list(s) with fewer items than the {len(slots)} slots, which distinct items "
                            f"need: {named(short)}")
    if eligible is not None and len(lists.members):
        ok = eligible[:, lists.members]                                   # (S, total)
        group = np.repeat(np.arange(len(lists)), lengths)
        for s, slot in enumerate(slots):   # a loop over slots, not rows
            has = np.bincount(group[ok[s]], minlength=len(lists)) > 0
            none = np.flatnonzero(~has & (lengths > 0))
            if len(none):
                problems.append(f'{len(none):,} list(s) with no item eligible for slot "{slot}": {named(none)}')
    if problems:
        raise InputError(source, problems)


def list_contexts(lists: ItemLists, catalogue: Catalogue, cat: torch.Tensor, num: torch.Tensor,
                  eligible: Optional[np.ndarray], slots: int, chunk_items: int = LIST_CHUNK_ITEMS):
    """Yield (list indices (b,), ItemContext of those lists, positions (b, N_max) long, -1 = padding)
    over chunks of lists of about `chunk_items` padded item slots each (longest lists first within
    the order they come, so a chunk pads little). cat/num: (L, C) encoded key contexts."""
    lengths = lists.lengths
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        width = max(1, int(lengths[order[start]]))
        n = max(1, chunk_items // width)
        which = order[start:start + n]
        start += n
        lens = lengths[which]
        N = int(lens.max())
        col = np.arange(N)
        mask = col[None, :] < lens[:, None]
        pos = np.full((len(which), N), -1, dtype=np.int64)
        flat = (lists.offsets[which][:, None] + col[None, :])[mask]
        pos[mask] = lists.members[flat]
        pos_t = torch.from_numpy(pos)
        mask_t = torch.from_numpy(mask)
        items = catalogue.vectors[pos_t.clamp(min=0)] * mask_t.unsqueeze(-1)
        slot_mask = None
        if eligible is not None:
            slot_mask = torch.from_numpy(eligible)[:, pos_t.clamp(min=0)].permute(1, 0, 2) & mask_t.unsqueeze(1)
        w = torch.from_numpy(which)
        yield which, ItemContext(items, mask_t, cat[w], num[w], slot_mask), pos_t


__all__ = ["Catalogue", "ItemAttribute", "ItemEncoder", "ItemLists", "ItemLog", "NewCategoryWarning", "check_eligible",
           "check_lists", "list_contexts", "read_lists", "read_log"]
