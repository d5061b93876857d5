"""Tables bigger than memory: a Parquet file, or a folder of them, read as a stream of record batches.

    table = scan_parquet("logs/", "s*", "y", "user", seed=0)    # one pass: vocabularies, statistics
    for rows, cat, num, y in table.batches(epoch=0, batch=4096):  # (b, S) long, (b, C) long, (b, N), (b,)
        ...

`scan_parquet` reads the files once through pyarrow.dataset, `STREAM_BATCH` rows at a time, and keeps
only what does not grow with the rows: each feature's and categorical context column's distinct
values, running sums for the score and the numeric context columns, the rows of each row group in
each split, the held-out rows (about HELD_OUT_ROWS each, at most, for validation and test) and,
when asked, a uniform sample of the training rows (`sample_rows`, what `choicegrad fit`'s generator
learns its contexts and warm start from).
Training then streams the training rows again every epoch, row group by row group: the row groups
are shuffled per epoch and dealt to the ranks (torchrun) and, within a rank, to DataLoader
workers; each reader mixes its rows in a shuffle buffer of SHUFFLE_ROWS. Memory is bounded by those constants, not by the table.

A row's split (train, validation, test) is a hash of its position in the dataset (files in name
order, rows in file order) and the seed: no list of rows is kept, and every rank agrees.
Vocabularies, labels and errors follow load_table: the same table read whole or streamed gives the
same space and context encoder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from choicegrad.data.context import ContextColumn, ContextEncoder
from choicegrad.data.space import ChoiceSpace, Slot, as_labels
from choicegrad.data.table import MIN_ROWS, TableData, check_columns, id_like_features
from choicegrad.distributed import share_sizes
from choicegrad.errors import InputError, did_you_mean

#: Rows decoded from Parquet at a time.
STREAM_BATCH = 65_536
#: Rows each reader mixes before emitting batches (its shuffle buffer).
SHUFFLE_ROWS = 262_144
#: About this many rows are held out for validation (early stopping) and as many for the test
#: metrics (each row with probability HELD_OUT_ROWS / rows, when that is below the fraction): they
#: are kept in memory. Smaller tables hold out their fractions.
HELD_OUT_ROWS = 100_000
#: Training rows `choicegrad fit` samples (uniformly, in the scan) for its generator phase.
GENERATOR_ROWS = 200_000
#: Split codes.
TRAIN, VALIDATION, TEST = 0, 1, 2


def uniform_of(position: np.ndarray, seed: int) -> np.ndarray:
    """(N,) float64 on [0, 1): a hash of (position, seed) for the rows at dataset positions (N,) (splitmix64)."""
    with np.errstate(over="ignore"):
        z = position.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def split_of(position: np.ndarray, seed: int, val_cut: float, test_cut: float) -> np.ndarray:
    """(N,) int8 split of the rows at dataset positions (N,): VALIDATION where uniform_of is below
    val_cut, TEST below val_cut + test_cut, else TRAIN."""
    return _split(uniform_of(position, seed), val_cut, test_cut)


def _split(u: np.ndarray, val_cut: float, test_cut: float) -> np.ndarray:
    return np.where(u < val_cut, VALIDATION, np.where(u < val_cut + test_cut, TEST, TRAIN)).astype(np.int8)


@dataclass(frozen=True)
class Unit:
    """One row group of one file: its place in the dataset and its rows per split."""

    file: str
    row_group: int
    rows: int
    first: int              # position of its first row in the dataset
    in_file: int            # position of its first row in its file
    split_rows: tuple[int, int, int] = (0, 0, 0)


@dataclass
class Codes:
    """A categorical column's values, as pyarrow reads them, -> category codes (-1 = missing)."""

    values: pd.Index         # distinct raw values
    codes: np.ndarray        # (len(values),) int64 code of each

    def __call__(self, array) -> np.ndarray:
        """pyarrow Array (N,) -> (N,) int64 codes; -1 for a missing (null/NaN) or unknown value."""
        import pyarrow as pa

        enc = array if pa.types.is_dictionary(array.type) else array.dictionary_encode()
        where = self.values.get_indexer(enc.dictionary.to_pandas())
        lookup = np.append(np.where(where >= 0, self.codes[np.maximum(where, 0)], -1), -1)
        return lookup[enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)]


@dataclass
class _Running:
    """Count, mean, sum of squared deviations, min and max of float64 values, merged batch by batch
    (Chan et al.), so no batch is kept."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def add(self, x: np.ndarray) -> None:
        if not len(x):
            return
        n, mean = len(x), float(x.mean())
        m2 = float(((x - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n, self.lo, self.hi = total, min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    def std(self, ddof: int) -> float:
        return math.sqrt(self.m2 / (self.n - ddof)) if self.n > ddof else 0.0


@dataclass
class ParquetTable:
    """A scanned Parquet dataset: its space, context encoder and score statistics, its row groups,
    and the held-out rows in memory (TableData each); training rows stream from `batches`."""

    source: str
    space: ChoiceSpace
    context: ContextEncoder
    score: str
    units: list[Unit]
    codes: dict[str, Codes]
    seed: int
    val_cut: float
    test_cut: float
    y_mean: float
    y_std: float
    validation: TableData
    test: TableData
    warnings: list[str] = field(default_factory=list)
    scan_seconds: float = 0.0
    sample: Optional[TableData] = None      # a uniform sample of the training rows, when the scan took one
    category_counts: Optional[torch.Tensor] = None   # (S, V_max) float64: the features' categories in training rows

    def __len__(self) -> int:
        return sum(u.rows for u in self.units)

    @property
    def train_rows(self) -> int:
        return sum(u.split_rows[TRAIN] for u in self.units)

    def readers(self, epoch: int, rank: int = 0, ranks: int = 1, workers: int = 0) -> list[list[int]]:
        """The unit ids each reader of `rank` streams in `epoch` (one reader, or one per DataLoader
        worker): the units in an order drawn from (seed, epoch), dealt to the ranks in turn, then to
        the workers in turn."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.units))
        mine = [int(u) for u in order[rank::ranks]]
        return [mine[w::max(1, workers)] for w in range(max(1, workers))]

    def steps(self, epoch: int, batch: int, ranks: int = 1, workers: int = 0) -> int:
        """Steps of `epoch` for a global `batch`: the most batches any rank's readers emit (each rank
        takes its share of the batch, share_sizes), so every rank runs as many steps."""
        sizes = share_sizes(batch, ranks)
        return max(sum(math.ceil(sum(self.units[u].split_rows[TRAIN] for u in reader) / max(1, sizes[r]))
                       for reader in self.readers(epoch, r, ranks, workers)) for r in range(ranks))

    def batches(self, epoch: int, batch: int, rank: int = 0, ranks: int = 1, workers: int = 0,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """This rank's training batches of `epoch`: (rows (b, S) long, ctx_cat (b, C) long, ctx_num
        (b, N) float, y (b,) float64), b its share of the global `batch` (fewer at a reader's end), then
        empty batches up to `steps`. workers > 0 reads in that many DataLoader worker processes."""
        size = share_sizes(batch, ranks)[rank]
        data = _EpochRows(self, self.readers(epoch, rank, ranks, workers), size, (self.seed, epoch, rank))
        done = 0
        if workers:
            loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers)
            stream = iter(loader)
        else:
            stream = iter(data)
        for item in stream:
            done += 1
            yield item
        empty = _empty(self)
        for _ in range(self.steps(epoch, batch, ranks, workers) - done):
            yield empty

    def read(self, reader: Sequence[int]) -> Iterator[tuple[int, object]]:
        """(dataset position of its first row, pyarrow RecordBatch of the needed columns) for the units
        of `reader`, in order."""
        columns = self.space.names + [self.score] + [c.name for c in self.context.columns]
        for u in reader:
            yield from _read_unit(self.units[u], columns)

    def encode(self, record) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A RecordBatch -> (rows (N, S) long, ctx_cat (N, C) long, ctx_num (N, M) float32, y (N,) float64)."""
        n = record.num_rows
        rows = np.stack([self.codes[f](record.column(f)) for f in self.space.names], 1) if n else \
            np.zeros((0, self.space.num_slots), dtype=np.int64)
        cats = self.context.categorical
        cat = np.stack([self.codes[c.name](record.column(c.name)) for c in cats], 1) if cats and n else \
            np.zeros((n, len(cats)), dtype=np.int64)
        num = np.zeros((n, len(self.context.numeric)), dtype=np.float32)
        for j, col in enumerate(self.context.numeric):
            num[:, j] = (_floats(record.column(col.name)) - col.mean) / col.std
        y = _floats(record.column(self.score))
        return (torch.from_numpy(np.ascontiguousarray(rows)), torch.from_numpy(np.ascontiguousarray(cat)),
                torch.from_numpy(num), torch.from_numpy(y))


class _EpochRows(torch.utils.data.IterableDataset):
    """One rank's training rows of one epoch, in batches of `size`: reader w (a DataLoader worker,
    or the only reader) streams its units through a shuffle buffer of SHUFFLE_ROWS rows."""

    def __init__(self, table: ParquetTable, readers: list[list[int]], size: int, seed: tuple[int, ...]):
        self.table, self.readers, self.size, self.seed = table, readers, max(1, size), seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w = info.id if info is not None else 0
        if info is None and len(self.readers) > 1:   # several readers without workers: one after another
            for r in range(len(self.readers)):
                yield from self._reader(r)
            return
        yield from self._reader(w)

    def _reader(self, w: int):
        t = self.table
        gen = torch.Generator().manual_seed(int(np.random.default_rng([*self.seed, w]).integers(2**62)))
        buffer: list[tuple[torch.Tensor, ...]] = []
        held = 0
        for first, record in t.read(self.readers[w]):
            keep = split_of(np.arange(first, first + record.num_rows), t.seed, t.val_cut, t.test_cut) == TRAIN
            parts = t.encode(record)
            mask = torch.from_numpy(keep)
            buffer.append(tuple(p[mask] for p in parts))
            held += int(keep.sum())
            if held >= SHUFFLE_ROWS:
                rest = yield from self._emit(buffer, gen, final=False)
                buffer, held = [rest], len(rest[0])
        if held:
            yield from self._emit(buffer, gen, final=True)

    def _emit(self, buffer, gen: torch.Generator, final: bool):
        cols = [torch.cat(c) for c in zip(*buffer)]
        perm = torch.randperm(len(cols[0]), generator=gen)
        cols = [c[perm] for c in cols]
        n = len(perm) if final else len(perm) // self.size * self.size
        for start in range(0, n, self.size):
            yield tuple(c[start:start + self.size] for c in cols)
        return tuple(c[n:] for c in cols)


def _read_unit(unit: Unit, columns: list[str]) -> Iterator[tuple[int, object]]:
    """(dataset position of its first row, RecordBatch of `columns`) for one row group, in order."""
    fragment = _fragment(unit.file, [unit.row_group])
    first = unit.first
    for record in fragment.to_batches(columns=columns, batch_size=STREAM_BATCH, use_threads=False):
        yield first, record
        first += record.num_rows


def _fragment(file: str, row_groups: list[int] | None = None):
    """A pyarrow.dataset fragment of a local Parquet file (some of its row groups, or all)."""
    import pyarrow.dataset as ds
    import pyarrow.fs as fs

    return ds.ParquetFileFormat().make_fragment(file, filesystem=fs.LocalFileSystem(), row_groups=row_groups)


def _floats(array) -> np.ndarray:
    """A numeric pyarrow Array -> (N,) float64, null as NaN."""
    import pyarrow as pa

    return array.cast(pa.float64()).to_numpy(zero_copy_only=False, writable=True)


def parquet_files(path: str | Path) -> list[str]:
    """The Parquet files of `path`: the file itself, or a folder's .parquet/.pq files (in
    sub-folders too, in path order; names starting with . or _ skipped, as pyarrow.dataset does; other
    files, e.g. a README, ignored). InputError for a missing path, another file type, or a folder
    without Parquet files."""
    p = Path(path)
    if not p.exists():
        raise InputError(str(p), ["file or folder not found"])
    if p.is_file():
        if p.suffix.lower() not in (".parquet", ".pq"):
            raise InputError(str(p), [f'streaming reads Parquet (.parquet, .pq), not "{p.suffix}"; a CSV table is '
                                      "read whole (leave out stream=True), or convert it to Parquet first"])
        return [str(p.resolve())]
    root = p.resolve()
    named = sorted(f for f in root.rglob("*") if f.suffix.lower() in (".parquet", ".pq")
                   and not any(part.startswith((".", "_")) for part in f.relative_to(root).parts))
    odd = [f for f in named if f.is_symlink() and not f.is_file() or f.exists() and not f.is_file() and not f.is_dir()]
    if odd:                 # a pipe or a device named like a table: reading it could block or never end
        raise InputError(str(odd[0]), ["named like a Parquet file but not a regular file (a pipe, device or broken "
                                       "link); move it out of the folder"])
    files = [str(f) for f in named if f.is_file()]
    if not files:
        raise InputError(str(p), ["the folder holds no .parquet or .pq files"])
    return files


def scan_parquet(path: str | Path, features: str | Sequence[str], score: str,
                 context: str | Sequence[str] | None = None, *, space: dict[str, list[str]] | None = None,
                 seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 sample_rows: int = 0, progress: bool | None = None) -> ParquetTable:
    """Read a Parquet file or folder once, `STREAM_BATCH` rows at a time, into a ParquetTable.

    Columns as in load_table (feature globs, context kinds with ':num'/':cat', a declared `space`).
    Rows go to validation with probability min(val_fraction, HELD_OUT_ROWS / rows), to test with
    min(test_fraction, HELD_OUT_ROWS / rows), by a hash of their position and `seed` (split_of).
    sample_rows > 0: `sample` holds about that many training rows (each with the same probability; all
    of them in a smaller table), by the same hash; its frame has the context columns only.
    InputError naming the file and its rows (1-based) for the first batch with a bad score or
    context value, and for what load_table reports (absent columns, all-missing features...).
    Many parameters: load_table's column arguments, then the split and sample settings of a streamed fit."""
    started = time.perf_counter()
    source = str(path)
    files = parquet_files(path)
    units, schema, n_rows = _row_groups(files)
    feats, ctx_specs = check_columns(schema.names, n_rows, source, features, score, context)
    _check_types(files, schema, [*feats, score, *(c for c, _ in ctx_specs)])
    kinds = _context_kinds(schema, source, ctx_specs)
    if not _numeric(schema.field(score).type):
        raise InputError(source, [f'score column "{score}": expected numbers, the files hold {schema.field(score).type}'])
    if n_rows < MIN_ROWS:
        raise InputError(source, [f"{n_rows} rows to fit a scorer on; at least {MIN_ROWS} are needed"])
    val_cut = min(val_fraction, HELD_OUT_ROWS / n_rows)
    test_cut = min(test_fraction, HELD_OUT_ROWS / n_rows)
    # the sample: training rows whose hash is in the top of [0, 1), apart from the held-out rows at its bottom
    kept = 1.0 - val_cut - test_cut
    sample_from = 1.0 - kept * min(1.0, sample_rows / (n_rows * kept)) if sample_rows > 0 else 2.0
    scan = _Scan(feats, score, kinds, seed, val_cut, test_cut, sample_from)
    columns = feats + [score] + [c for c, _ in ctx_specs]
    counted = scan.read(units, columns, n_rows, progress)
    table = _scanned_table(scan, source, space, ctx_specs, counted, n_rows)
    table.validation, table.test = (_held_out(table, scan.held[s], columns) for s in (VALIDATION, TEST))
    table.category_counts = _category_counts(table.space, table.codes, scan.tally)
    if sample_rows > 0:
        table.sample = _held_out(table, scan.held[TRAIN], [c for c, _ in ctx_specs])
    if not len(table.validation) or table.train_rows < 2:
        raise InputError(source, [f"{n_rows} rows leave {len(table.validation)} for validation and {table.train_rows} "
                                  "for training; fit a table this small read whole (leave out stream=True)"])
    table.scan_seconds = time.perf_counter() - started
    return table


def _row_groups(files: list[str]) -> tuple[list[Unit], object, int]:
    """(the row groups of `files` as Units in dataset order, the first file's schema, rows in all);
    InputError for a file that is not Parquet or whose columns differ from the first's."""
    import pyarrow as pa

    units, schema, position = [], None, 0
    for f in files:
        try:
            fragment = _fragment(f)
            meta, physical = fragment.metadata, fragment.physical_schema
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f, [f"cannot read as Parquet: {exc}"]) from None
        schema = schema or physical
        in_file = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            units.append(Unit(f, g, n, position, in_file))
            position, in_file = position + n, in_file + n
        if sorted(physical.names) != sorted(schema.names):     # columns are read by name: their order may differ
            raise InputError(f, [f"columns {', '.join(physical.names[:8])} differ from {files[0]}'s "
                                 f"({', '.join(schema.names[:8])}): a streamed folder needs one set of columns"])
    return units, schema, position


def _check_types(files: list[str], schema, names: list[str]) -> None:
    """InputError unless each column of `names` has one type in every file, and not a nested one."""
    import pyarrow as pa

    for f in files:
        physical = _fragment(f).physical_schema
        for name in names:
            if physical.field(name).type != schema.field(name).type:
                raise InputError(f, [f'column "{name}" has type {physical.field(name).type}, but '
                                     f"{schema.field(name).type} in {files[0]}"])
            if pa.types.is_nested(physical.field(name).type):
                raise InputError(f, [f'column "{name}" holds lists or records ({physical.field(name).type}), not one '
                                     "label or number per cell; flatten it into one column per element"])


class _Scan:
    """What the scan keeps while it reads: each categorical column's distinct raw values (-> the file
    first holding it), each feature value's training rows, running statistics of the numeric context
    columns and the training scores, and the held-out and sampled record batches."""

    def __init__(self, feats: list[str], score: str, kinds: dict[str, str], seed: int, val_cut: float,
                 test_cut: float, sample_from: float):
        self.feats, self.score, self.kinds, self.seed = feats, score, kinds, seed
        self.val_cut, self.test_cut, self.sample_from = val_cut, test_cut, sample_from
        self.categorical = feats + [c for c, k in kinds.items() if k == "categorical"]
        self.numeric = [c for c, k in kinds.items() if k == "numeric"]
        self.seen: dict[str, dict] = {c: {} for c in self.categorical}    # raw value -> file it was first seen in
        self.tally: dict[str, dict] = {f: {} for f in feats}              # raw value -> training rows holding it
        self.running = {c: _Running() for c in self.numeric}
        self.y_train = _Running()
        self.held: dict[int, list] = {VALIDATION: [], TEST: [], TRAIN: []}    # TRAIN: the sample

    def read(self, units: list[Unit], columns: list[str], n_rows: int, progress: bool | None) -> list[Unit]:
        """Read every unit's `columns` batch by batch -> the units with their rows per split."""
        import pyarrow as pa

        from choicegrad.progress import progress_bar

        counted = []
        bar = progress_bar(n_rows, "scan", "row", progress)
        for unit in units:
            counts = np.zeros(3, dtype=np.int64)
            try:
                for first, record in _read_unit(unit, columns):
                    counts += self.add(record, unit, first)
                    bar.update(record.num_rows)
            except (OSError, pa.ArrowInvalid) as exc:
                bar.close()
                raise InputError(unit.file, [f"cannot read row group {unit.row_group}: {exc}"]) from None
            counted.append(Unit(unit.file, unit.row_group, unit.rows, unit.first, unit.in_file,
                                tuple(int(c) for c in counts)))
        bar.close()
        return counted

    def add(self, record, unit: Unit, first: int) -> np.ndarray:
        """Take in one record batch at dataset position `first` -> its rows per split (3,)."""
        import pyarrow as pa

        u = uniform_of(np.arange(first, first + record.num_rows), self.seed)
        split = _split(u, self.val_cut, self.test_cut)
        floats = _check_batch(record, unit, first, self.score, self.kinds)
        for c in self.categorical:
            enc = record.column(c).dictionary_encode()
            values = enc.dictionary.to_pandas()
            for v in values[values.notna()].tolist():
                self.seen[c].setdefault(v, unit.file)
            if c in self.tally:    # each category's training rows, for the scorer's missing slots
                at = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
                n = np.bincount(at[(split == TRAIN) & (at >= 0)], minlength=len(values))
                listed, rows_of = values.tolist(), self.tally[c]
                for i in np.flatnonzero((n > 0) & values.notna().to_numpy()):
                    rows_of[listed[i]] = rows_of.get(listed[i], 0) + int(n[i])
        for c in self.numeric:
            self.running[c].add(floats[c])
        self.y_train.add(floats[self.score][split == TRAIN])
        sampled = (split == TRAIN) & (u >= self.sample_from)
        for s, rows in ((VALIDATION, split == VALIDATION), (TEST, split == TEST), (TRAIN, sampled)):
            if rows.any():
                self.held[s].append(record.filter(pa.array(rows)))
        return np.bincount(split, minlength=3)


def _scanned_table(scan: _Scan, source: str, space, ctx_specs, counted: list[Unit], n_rows: int) -> ParquetTable:
    """The ParquetTable of a finished scan (space, context encoder, score statistics, notes), its
    held-out rows not yet set; InputError for what _space reports or a score overflowing float64."""
    feats, seen, running, y_train, score = scan.feats, scan.seen, scan.running, scan.y_train, scan.score
    space_, codes, notes = _space(source, feats, seen, space)
    encoder = ContextEncoder(columns=[
        ContextColumn(name=c, kind="categorical", categories=_categories(seen[c])[0]) if scan.kinds[c] == "categorical"
        else ContextColumn(name=c, kind="numeric", mean=running[c].mean, std=running[c].std(0) or 1.0,
                           min=running[c].lo, max=running[c].hi) for c, _ in ctx_specs])
    for c in encoder.categorical:
        codes[c.name] = _codes(seen[c.name], c.categories)
    y_std = y_train.std(1) or 1.0
    if not (math.isfinite(y_train.mean) and math.isfinite(y_std)):
        raise InputError(source, [f'score column "{score}": its mean or spread overflows a float64; rescale the scores'])
    notes += [f"{source}: {n}" for n in id_like_features(n_rows, feats, [len(seen[f]) for f in feats])]
    if y_train.n and y_train.lo == y_train.hi:
        notes.append(f'{source}: score column "{score}" is constant ({y_train.lo:g} on every training row); a scorer '
                     "fitted on it predicts that value everywhere")
    return ParquetTable(source, space_, encoder, score, counted, codes, scan.seed, scan.val_cut, scan.test_cut,
                        y_train.mean, y_std, None, None, notes)


def _numeric(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _context_kinds(schema, source: str, specs) -> dict[str, str]:
    """Each context column's kind: as asked, else numeric for a numeric Parquet type (as load_table)."""
    kinds = {}
    for name, kind in specs:
        numeric = _numeric(schema.field(name).type)
        if kind == "numeric" and not numeric:
            raise InputError(source, [f'context: column "{name}" is read as numbers (:num) but holds '
                                      f"{schema.field(name).type}; leave out \":num\" to use its values as categories"])
        kinds[name] = kind or ("numeric" if numeric else "categorical")
    return kinds


def _check_batch(record, unit: Unit, first: int, score: str, kinds: dict[str, str]) -> dict[str, np.ndarray]:
    """InputError naming the file and rows of `record` with a non-finite score, a missing categorical
    context value or a non-finite numeric one; else the score and numeric context columns as float64
    (N,) by name, read once for the checks and the running sums."""
    import pyarrow.compute as pc

    from choicegrad.errors import show_rows

    base = unit.in_file + first - unit.first           # position of the record's first row in its file
    problems = []
    floats = {score: _floats(record.column(score))}
    bad = np.flatnonzero(~np.isfinite(floats[score]))
    if len(bad):
        problems.append(f'score column "{score}": expected finite numbers, got missing/non-numeric/inf at '
                        f"{show_rows(bad + base)}")
    for name, kind in kinds.items():
        col = record.column(name)
        if kind == "numeric":
            floats[name] = _floats(col)
            bad = np.flatnonzero(~np.isfinite(floats[name]))
            what = "expected finite numbers, got missing/inf"
        else:
            bad = np.flatnonzero(pc.is_null(col, nan_is_null=True).to_numpy(zero_copy_only=False))
            what = "missing value"
        if len(bad):
            problems.append(f'context column "{name}": {what} at {show_rows(bad + base)}')
    if problems:
        raise InputError(unit.file, problems + ["(the scan stops at the first batch of rows with a problem)"])
    return floats


def _categories(seen: dict) -> tuple[list[str], dict]:
    """(sorted labels, raw value -> label) of a column's distinct raw values, labelled as load_table
    labels the whole column (as_labels: integral floats print as integers)."""
    raw = list(seen)
    labels = as_labels(pd.Series(raw)).tolist() if raw else []
    mapping = dict(zip(raw, labels))
    return sorted(set(labels)), mapping


def _codes(seen: dict, categories: list[str]) -> Codes:
    _, mapping = _categories(seen)
    where = {label: i for i, label in enumerate(categories)}
    raw = list(mapping)
    return Codes(pd.Index(raw) if raw else pd.Index([], dtype=object),
                 np.array([where.get(mapping[r], -1) for r in raw], dtype=np.int64))


def _space(source: str, feats: list[str], seen: dict[str, dict], declaration) -> tuple[ChoiceSpace, dict, list[str]]:
    """The feature space (declared categories where given, else the labels seen, sorted), each
    feature's Codes and notes; InputError for an all-missing feature or a label outside a declaration."""
    problems, notes, slots, codes = [], [], [], {}
    for name in declaration or {}:
        if name not in feats:
            problems.append(f'space: "{name}" is not among the features ({", ".join(feats[:12])})'
                            f"{did_you_mean(name, feats)}")
    for f in feats:
        labels, mapping = _categories(seen[f])
        if not labels:
            problems.append(f'feature column "{f}" has no values (every row is missing)')
            continue
        if len(labels) == 1:
            notes.append(f'{source}: feature column "{f}" has a single category ({labels[0]!r}); nothing to choose there')
        cats = list(declaration[f]) if declaration and f in declaration else labels
        outside = [(label, seen[f][r]) for r, label in mapping.items() if label not in set(cats)]
        if outside:
            shown = ", ".join(f"{label!r} (in {Path(file).name})" for label, file in sorted(outside)[:5])
            problems.append(f'column "{f}": unknown categor{"ies" if len(outside) > 1 else "y"} {shown}; '
                            f"known: {', '.join(cats[:8])}{' ...' if len(cats) > 8 else ''}")
        slots.append(Slot(name=f, categories=cats))
        codes[f] = _codes(seen[f], cats)
    if problems:
        raise InputError(source, problems)
    return ChoiceSpace(slots=slots), codes, notes


def _category_counts(space: ChoiceSpace, codes: dict[str, Codes], tally: dict[str, dict]) -> torch.Tensor:
    """(S, V_max) float64 training-row count of each feature's categories, from raw value -> count."""
    out = torch.zeros(space.num_slots, space.max_size, dtype=torch.float64)
    for s, f in enumerate(space.names):
        raw = list(tally[f])
        if raw:
            where = codes[f].values.get_indexer(pd.Index(raw))
            code = np.where(where >= 0, codes[f].codes[np.maximum(where, 0)], -1)
            n = np.array([tally[f][r] for r in raw], dtype=np.float64)
            out[s] = torch.from_numpy(np.bincount(code[code >= 0], n[code >= 0], minlength=space.max_size))
    return out


def _held_out(table: ParquetTable, records: list, columns: list[str]) -> TableData:
    """The kept RecordBatches as a TableData (its frame holds their raw `columns`)."""
    import pyarrow as pa

    if records:
        parts = [table.encode(r) for r in records]
        rows, cat, num, y = (torch.cat(p) for p in zip(*parts))
        frame = pa.Table.from_batches(records).select(columns).to_pandas()
    else:
        rows, cat, num, y = _empty(table)
        frame = pd.DataFrame(columns=columns)
    return TableData(table.space, table.context, table.score, rows, cat, num, y, frame, source=table.source)


def _empty(table: ParquetTable) -> tuple[torch.Tensor, ...]:
    """Empty (rows, ctx_cat, ctx_num, y) tensors of the table's widths."""
    return (torch.zeros(0, table.space.num_slots, dtype=torch.long),
            torch.zeros(0, len(table.context.categorical), dtype=torch.long),
            torch.zeros(0, len(table.context.numeric)), torch.zeros(0, dtype=torch.float64))
