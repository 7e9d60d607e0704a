"""Validation and repair of raw contract tables (docs/data_contract.md), one Arrow table at a time.

Bad input gets either a clear error (``SchemaError`` for a missing or mistyped column, ``DataError`` for an
unreadable file or a window without rows) or a counted repair recorded in a ``LoadReport``; nothing is
silently dropped or guessed. Everything here is vectorised Arrow/numpy work: no Python loop over rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ltv import contract
from ltv.data.rowids import SeenRowIds  # noqa: F401  (re-exported: the loader imports it from here)
from ltv.data.sense import repair_labels


class SchemaError(ValueError):
    """A file does not follow the contract schema (missing column, column of the wrong kind)."""


class DataError(ValueError):
    """Data that cannot be used: an unreadable parquet file, a window without files or without rows."""


@dataclass
class LoadReport:
    """Counts of what a load read, kept, dropped and repaired; reports of files or batches ``merge``.

    ``rows_read`` counts rows in the files, ``rows_sampled`` after the window's row fraction and
    ``rows_kept`` after the purge, so ``rows_sampled - rows_kept == sum(dropped.values())``.
    ``repaired`` counts cells (or, for ``dictionary_string``, columns) fixed in place; ``files`` lists
    the files read (0-row ones included), e.g. for a data fingerprint.
    """

    rows_read: int = 0
    rows_sampled: int = 0
    rows_kept: int = 0
    files: list[Path] = field(default_factory=list)  # the files read, in load order
    empty_partitions: int = 0
    empty_files: int = 0
    seconds: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    unexpected_columns: dict[str, int] = field(default_factory=dict)  # column -> number of files
    skipped: dict[str, int] = field(default_factory=dict)  # non_parquet_file / bad_partition_folder
    warnings: list[str] = field(default_factory=list)  # messages to emit once per load

    @property
    def duplicates(self) -> int:
        """Rows dropped because their row_id was seen before (in the same or an earlier file)."""
        return self.dropped.get("duplicate_row_id", 0)

    def drop(self, reason: str, n: int) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)

    def repair(self, reason: str, n: int) -> None:
        if n:
            self.repaired[reason] = self.repaired.get(reason, 0) + int(n)

    def skip(self, reason: str, n: int) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + int(n)

    def merge(self, other: LoadReport) -> LoadReport:
        """Add ``other``'s counts into this report; returns self."""
        for name in ("rows_read", "rows_sampled", "rows_kept", "empty_partitions", "empty_files"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.files.extend(other.files)
        self.seconds += other.seconds
        for mine, theirs in (
            (self.dropped, other.dropped),
            (self.repaired, other.repaired),
            (self.unexpected_columns, other.unexpected_columns),
            (self.skipped, other.skipped),
        ):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        self.warnings.extend(w for w in other.warnings if w not in self.warnings)
        return self

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{prefix.name: value}`` dict for MLflow (a prefix ending in '.', '_' or '/' is used as is)."""
        sep = "" if not prefix or prefix[-1] in "._/" else "."
        out = {
            "rows_read": self.rows_read,
            "rows_sampled": self.rows_sampled,
            "rows_kept": self.rows_kept,
            "files": len(self.files),
            "empty_partitions": self.empty_partitions,
            "empty_files": self.empty_files,
            "duplicates": self.duplicates,
        }
        out.update({f"dropped_{k}": v for k, v in self.dropped.items()})
        out.update({f"repaired_{k}": v for k, v in self.repaired.items()})
        out.update({f"skipped_{k}": v for k, v in self.skipped.items()})
        return {f"{prefix}{sep}{k}": float(v) for k, v in out.items()}

    def summary(self) -> str:
        """One log line: files, rows, rows/s, and each drop / repair reason with its count."""
        rate = self.rows_read / self.seconds if self.seconds > 0 else float("nan")
        parts = [
            f"{len(self.files)} files",
            f"{self.rows_read:,} rows read",
            f"{self.rows_sampled:,} sampled",
            f"{self.rows_kept:,} kept",
            f"{rate:,.0f} rows/s",
        ]
        if self.empty_partitions or self.empty_files:
            parts.append(f"empty partitions={self.empty_partitions} files={self.empty_files}")
        for title, counts in (
            ("dropped", self.dropped),
            ("repaired", self.repaired),
            ("skipped", self.skipped),
        ):
            if counts:
                parts.append(f"{title}: " + ", ".join(f"{k}={v:,}" for k, v in sorted(counts.items())))
        return "; ".join(parts)


def expected_columns(subset: str) -> list[str]:
    """Contract columns of a file of ``subset``: 'train' has the labels, every other subset does not."""
    return contract.TRAIN_COLUMNS if subset == "train" else contract.TEST_COLUMNS


def check_schema(schema: pa.Schema, path: str | Path, subset: str) -> list[str]:
    """Check a file's Arrow schema against the contract; return its unexpected (extra) column names.

    Raises
    ------
    SchemaError
        Naming the file, each missing column with its expected kind, or each column whose Arrow type
        is not of the expected kind (another numeric type of the same kind is fine).
    """
    names = schema.names
    twice = sorted(n for n, c in Counter(names).items() if c > 1)
    if twice:
        raise SchemaError(f"{path}: column(s) {twice} appear more than once")
    present = set(names)
    expected = expected_columns(subset)
    missing = [c for c in expected if c not in present]
    if missing:
        what = ", ".join(f"'{c}' (expected kind {contract.KIND[c]})" for c in missing)
        raise SchemaError(f"{path}: missing contract column(s) {what} for subset '{subset}'")
    wrong = [c for c in expected if not contract.type_matches(c, schema.field(c).type)]
    if wrong:
        what = ", ".join(
            f"'{c}' is {schema.field(c).type}, expected kind {contract.KIND[c]} "
            f"(e.g. {contract.CANONICAL_TYPE[c]})"
            for c in wrong
        )
        raise SchemaError(f"{path}: column(s) of the wrong type: {what}")
    wanted = set(expected)
    return [n for n in names if n not in wanted]


def conform(table: pa.Table, columns: list[str], path: str | Path, report: LoadReport) -> pa.Table:
    """Cast ``columns`` to their canonical contract types (dictionary strings counted as a repair).

    A label cast that would change values (e.g. double 0.5 where int32 is canonical) raises ``DataError``
    naming the column and the file; a feature whose values do not fit its canonical integer type (e.g.
    fractional counts inside a map) keeps them exactly as float64 instead.
    """
    for name in columns:
        col = table.column(name)
        target = contract.CANONICAL_TYPE[name]
        if col.type == target:
            continue
        if pa.types.is_dictionary(col.type):
            report.repair("dictionary_string", 1)
        try:
            col = col.cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            if name in contract.LABEL_COLUMNS:
                raise DataError(
                    f"{path}: column '{name}' of type {col.type} cannot become {target}: {exc}"
                ) from exc
            # Feature values with fractions where the contract writes integers: keep them exact as float64.
            col = col.cast(_float_variant(target), safe=True)
        table = table.set_column(table.schema.get_field_index(name), name, col)
    return table


def _float_variant(t: pa.DataType) -> pa.DataType:
    """``t`` with its integer leaf (scalar or map value) replaced by float64."""
    if pa.types.is_map(t):
        return pa.map_(t.key_type, _float_variant(t.item_type))
    return pa.float64() if pa.types.is_integer(t) else t


def _repair_map_chunk(arr: pa.Array) -> tuple[pa.Array, int]:
    """Null out NaN / inf values inside a (possibly nested) map array, keeping every key."""
    if len(arr) == 0:
        return arr, 0
    # A sliced map array still exposes its whole child: restrict it to this slice's entries first.
    offsets = arr.offsets
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    keys, items = arr.keys.slice(first, last - first), arr.items.slice(first, last - first)
    if pa.types.is_map(items.type):
        new_items, n = _repair_map_chunk(items)
    elif pa.types.is_floating(items.type):
        bad = pc.invert(pc.is_finite(items))  # null values stay null (not counted)
        n = int(pc.sum(bad).as_py() or 0)
        new_items = pc.if_else(bad, pa.scalar(None, items.type), items) if n else items
    else:
        return arr, 0
    if n == 0:
        return arr, 0
    mask = arr.is_null() if arr.null_count else None
    return pa.MapArray.from_arrays(pc.subtract(offsets, first), keys, new_items, mask=mask), n


def repair_values(table: pa.Table, report: LoadReport) -> pa.Table:
    """Replace NaN / inf inside map cells and inf in scalar float columns by null, counting each cell.

    Required labels are not touched here (``purge_rows`` drops their rows instead).
    """
    skip = set(contract.REQUIRED_LABELS)
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if name in skip:
            continue
        if pa.types.is_map(col.type):
            chunks, total = [], 0
            for chunk in col.chunks:
                fixed, n = _repair_map_chunk(chunk)
                chunks.append(fixed)
                total += n
            if total:
                report.repair("nonfinite_map_value", total)
                table = table.set_column(i, name, pa.chunked_array(chunks, type=col.type))
        elif pa.types.is_floating(col.type):
            bad = pc.is_inf(col)
            n = int(pc.sum(bad).as_py() or 0)
            if n:
                report.repair("infinite_number", n)
                table = table.set_column(i, name, pc.if_else(bad, pa.scalar(None, col.type), col))
    return table


def _mask(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _label_masks(table: pa.Table) -> list[tuple[str, np.ndarray]]:
    n = table.num_rows
    missing, infinite, negative = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    for name in contract.REQUIRED_LABELS:
        col = table.column(name)
        missing |= _mask(pc.is_null(col, nan_is_null=True))
        if pa.types.is_floating(col.type):
            infinite |= _mask(pc.is_inf(col))
    for name in contract.NON_NEGATIVE_LABELS:
        col = table.column(name)
        if not pa.types.is_boolean(col.type):  # booleans cannot be negative (and have no less kernel)
            negative |= _mask(pc.less(col, 0))
    return [("missing_label", missing), ("infinite_label", infinite), ("negative_label", negative)]


def purge_rows(table: pa.Table, labelled: bool, report: LoadReport) -> pa.Table:
    """Drop rows without row_id, (if ``labelled``) with missing / inf / negative required labels, and
    repeated row_ids within the table (first kept). Each dropped row is counted once, under the first
    reason that applies: ``missing_row_id``, ``missing_label``, ``infinite_label``, ``negative_label``,
    ``duplicate_row_id``. Labels of the kept rows that contradict each other are then repaired
    (:func:`ltv.data.sense.repair_labels`).
    """
    rid = table.column(contract.ROW_ID)
    masks = [("missing_row_id", _mask(pc.or_kleene(pc.is_null(rid), pc.equal(pc.utf8_length(rid), 0))))]
    if labelled:
        masks += _label_masks(table)
    drop = np.zeros(table.num_rows, bool)
    for reason, m in masks:
        report.drop(reason, np.count_nonzero(m & ~drop))
        drop |= m
    if drop.any():
        table = table.filter(pa.array(~drop))
    if labelled:
        table = repair_labels(table, report)
    return dedupe(table, report)


def dedupe(table: pa.Table, report: LoadReport) -> pa.Table:
    """Keep the first row of each row_id within ``table``, counting the others as ``duplicate_row_id``."""
    rid = table.column(contract.ROW_ID)
    unique = pc.unique(rid)
    if len(unique) == table.num_rows:
        return table
    first = np.sort(pc.index_in(unique, value_set=rid).to_numpy())
    report.drop("duplicate_row_id", table.num_rows - len(first))
    return table.take(pa.array(first))
