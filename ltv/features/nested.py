"""Vectorised reductions over Arrow MAP / LIST columns (no Python loop over cells).

A nested column is flattened once into a :class:`Flat`: per row a validity flag and a length, and per
element its parent row (elements are contiguous per row, in row order). Every reduction is then a
``np.bincount`` / ``ufunc.reduceat`` over parent indices, so the cost is linear in the number of elements
and independent of how the table was chunked or sliced.

Conventions, shared by every feature built on top:

- a null cell gives NaN for every statistic (its missing flag says why);
- an empty container gives count 0 and sum 0; mean / max / min / std / entropy / shares are NaN;
- null values inside a map are ignored by every value statistic (``count`` still counts the entry).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous Arrow array (chunked columns are combined; a column with no chunk becomes empty)."""
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def to_float(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Numeric Arrow array -> float64 numpy with NaN for null (any integer / float / null type)."""
    arr = as_array(arr)
    if pa.types.is_null(arr.type) or arr.null_count == len(arr):  # all null: no cast kernel needed
        return np.full(len(arr), np.nan)
    return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)


@dataclass
class Flat:
    """A nested column flattened one level.

    Attributes
    ----------
    n : number of rows.
    valid : bool per row, False for a null cell.
    lengths : int64 per row, number of elements (0 for a null cell).
    parent : int64 per element, its row.
    keys : Arrow array of map keys (or list values), one per element.
    items : Arrow array of map values (None for a list), one per element.
    """

    n: int
    valid: np.ndarray
    lengths: np.ndarray
    parent: np.ndarray
    keys: pa.Array
    items: pa.Array | None

    @functools.cached_property
    def starts(self) -> np.ndarray:
        """Position of each row's first element in the flattened arrays."""
        out = np.zeros(self.n, dtype=np.int64)
        np.cumsum(self.lengths[:-1], out=out[1:])
        return out

    @functools.cached_property
    def invalid(self) -> np.ndarray:
        """Bool per row: a null cell."""
        return ~self.valid

    @functools.cached_property
    def nonempty(self) -> np.ndarray:
        """Bool per row: at least one element."""
        return self.lengths > 0

    @functools.cached_property
    def nonempty_starts(self) -> np.ndarray:
        return self.starts[self.nonempty]

    def values(self) -> np.ndarray:
        """Map values as float64 (NaN for a null value)."""
        if self.items is None:
            raise TypeError("values() needs a MAP column; this one is a LIST")
        return to_float(self.items)


def flatten(col: pa.Array | pa.ChunkedArray) -> Flat:
    """Flatten a MAP or LIST column, respecting slicing (offsets not starting at 0) and null cells.

    ``MapArray.keys`` / ``.items`` and ``ListArray.values`` ignore a slice, so the element range is cut
    from the absolute offsets; null cells backed by a non-empty range (legal in Arrow) are dropped.
    """
    arr = as_array(col)
    n = len(arr)
    if pa.types.is_null(arr.type):
        # an all-null column typed null (e.g. inferred from JSON): no elements, usable as map or list
        empty = pa.array([], pa.string())
        return Flat(n, np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(0, np.int64), empty, pa.nulls(0))
    if pa.types.is_map(arr.type):
        keys, items = arr.keys, arr.items
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        keys, items = arr.values, None
    else:
        raise TypeError(f"expected a MAP or LIST Arrow column, got {arr.type}")
    if arr.null_count == n:
        # every cell null (most nested cells of a single request): no elements, whatever the offsets;
        # what the general path below gives after dropping the null cells' ranges, without its kernels
        items = items.slice(0, 0) if items is not None else None
        zeros = np.zeros(n, np.int64)
        return Flat(n, np.zeros(n, bool), zeros, np.zeros(0, np.int64), keys.slice(0, 0), items)
    valid = np.ones(n, bool) if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
    offsets = arr.offsets.to_numpy().astype(np.int64, copy=False)
    lo, hi = (int(offsets[0]), int(offsets[-1])) if n else (0, 0)
    lengths = np.diff(offsets)
    keys = keys.slice(lo, hi - lo)
    items = items.slice(lo, hi - lo) if items is not None else None
    if arr.null_count and lengths[~valid].any():
        keep = pa.array(np.repeat(valid, lengths))
        keys = keys.filter(keep)
        items = items.filter(keep) if items is not None else None
        lengths = np.where(valid, lengths, 0)
    parent = np.repeat(np.arange(n, dtype=np.int64), lengths)
    return Flat(n, valid, lengths, parent, keys, items)


def flatten_inner(outer: Flat) -> Flat:
    """For a map of maps: the inner maps flattened, with ``parent`` pointing at the outer ROW."""
    inner = flatten(outer.items)
    return Flat(
        outer.n,
        outer.valid,
        np.bincount(outer.parent[inner.parent], minlength=outer.n),
        outer.parent[inner.parent],
        inner.keys,
        inner.items,
    )


def _null_out(flat: Flat, out: np.ndarray) -> np.ndarray:
    out = out.astype(np.float64, copy=False)  # bincount of zero elements returns int64
    out[flat.invalid] = np.nan
    return out


def count(flat: Flat) -> np.ndarray:
    """Number of entries per row (NaN for a null cell)."""
    return _null_out(flat, flat.lengths.astype(np.float64))


def seg_sum(flat: Flat, v: np.ndarray) -> np.ndarray:
    """Sum of the non-NaN values per row; 0 for an empty cell."""
    nan = np.isnan(v)
    if nan.any():
        s = np.bincount(flat.parent[~nan], weights=v[~nan], minlength=flat.n)
    else:
        s = np.bincount(flat.parent, weights=v, minlength=flat.n)
    return _null_out(flat, s)


def _seg_extreme(flat: Flat, v: np.ndarray, ufunc: np.ufunc, fill: float) -> np.ndarray:
    out = np.full(flat.n, np.nan)
    nonempty = flat.nonempty
    if len(v) == 0:
        return out
    nan = np.isnan(v)
    filled = np.where(nan, fill, v) if nan.any() else v
    red = ufunc.reduceat(filled, flat.nonempty_starts)
    out[nonempty] = np.where(np.isinf(red) & (red == fill), np.nan, red)
    return out


def seg_max(flat: Flat, v: np.ndarray) -> np.ndarray:
    """Largest non-NaN value per row; NaN when a row has none."""
    return _seg_extreme(flat, v, np.maximum, -np.inf)


def seg_min(flat: Flat, v: np.ndarray) -> np.ndarray:
    """Smallest non-NaN value per row; NaN when a row has none."""
    return _seg_extreme(flat, v, np.minimum, np.inf)


def map_stats(flat: Flat, v: np.ndarray, stats: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Several of count / sum / mean / max / min / std at once, sharing the per-row sums and counts
    (same values as the single-statistic functions)."""
    out: dict[str, np.ndarray] = {}
    nan = np.isnan(v)
    has_nan = bool(nan.any())
    parent, vals = (flat.parent[~nan], v[~nan]) if has_nan else (flat.parent, v)
    if {"sum", "mean", "std"} & set(stats):
        total = np.bincount(parent, weights=vals, minlength=flat.n).astype(np.float64)
        k = np.bincount(parent, minlength=flat.n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(k > 0, total / np.maximum(k, 1), np.nan)
    for s in stats:
        if s == "count":
            out[s] = count(flat)
        elif s == "sum":
            out[s] = _null_out(flat, total)
        elif s == "mean":
            out[s] = mean
        elif s == "max":
            out[s] = seg_max(flat, v)
        elif s == "min":
            out[s] = seg_min(flat, v)
        elif s == "std":
            dev2 = np.bincount(parent, weights=(vals - mean[parent]) ** 2, minlength=flat.n)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[s] = np.where(k > 0, np.sqrt(dev2 / np.maximum(k, 1)), np.nan)
        else:
            raise ValueError(f"unknown map statistic {s!r}")
    return out


def entropy_and_top(flat: Flat, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shannon entropy (nats) of the normalised values, top-1 share and top-``k`` share per row.

    Negative and null values are treated as 0 (a histogram has no negative mass). NaN where the row
    has no positive mass.
    """
    w = np.where(np.isnan(v) | (v < 0), 0.0, v)
    total = np.bincount(flat.parent, weights=w, minlength=flat.n).astype(np.float64)
    has = total > 0
    p = w / np.where(has, total, 1.0)[flat.parent]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    ent = -np.bincount(flat.parent, weights=plogp, minlength=flat.n)
    # rank inside the row by descending share: sort on row * 2 + (1 - p); p is in [0, 1], so rows never
    # interleave and the order stays row-major (one stable float sort, no per-row work)
    order = np.argsort(flat.parent * 2.0 + (1.0 - p), kind="stable")
    rank = np.arange(len(p)) - flat.starts[flat.parent]
    ps = p[order]
    top1 = np.bincount(flat.parent, weights=np.where(rank < 1, ps, 0.0), minlength=flat.n)
    topk = np.bincount(flat.parent, weights=np.where(rank < k, ps, 0.0), minlength=flat.n)
    nan = ~has
    return (
        _null_out(flat, np.where(nan, np.nan, ent)),
        np.where(nan, np.nan, top1),
        np.where(nan, np.nan, topk),
    )


def first_of_runs(sorted_ids: np.ndarray) -> np.ndarray:
    """Positions where a run of equal values starts in an already sorted array."""
    if len(sorted_ids) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))


def value_at(flat: Flat, v: np.ndarray, match: np.ndarray) -> np.ndarray:
    """Per row, the value of the (first non-NaN) entry whose ``match`` flag is set; NaN when none."""
    sel = match & ~np.isnan(v)
    out = np.full(flat.n, np.nan)
    rows = flat.parent[sel]
    first = first_of_runs(rows)
    out[rows[first]] = v[sel][first]
    return out


def key_equals(flat: Flat, key: str) -> np.ndarray:
    """Bool per element: the entry's key equals ``key``."""
    if len(flat.keys) == 0:
        return np.zeros(0, bool)
    return pc.equal(flat.keys, key).to_numpy(zero_copy_only=False)


def key_equals_row(flat: Flat, per_row: pa.Array) -> np.ndarray:
    """Bool per element: the entry's key equals the same row's string in ``per_row`` (null never equals)."""
    if len(flat.parent) == 0:
        return np.zeros(0, bool)
    target = pc.take(as_array(per_row), pa.array(flat.parent))
    return pc.fill_null(pc.equal(flat.keys, target), False).to_numpy(zero_copy_only=False)


def unique_pairs(parent: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Sorted unique (row, code) pair keys ``row * n_codes + code``.

    The keys are already sorted by row, so numpy's stable sort (timsort / radix) is far cheaper here
    than ``np.unique``'s hash path.
    """
    keys = np.sort(parent * np.int64(max(n_codes, 1)) + codes, kind="stable")
    return keys[first_of_runs(keys)]


def count_in(flat: Flat, codes: np.ndarray, other_pairs: np.ndarray, n_codes: int) -> np.ndarray:
    """Per row, how many elements also occur in the same row of another column.

    ``other_pairs`` are that column's sorted unique pair keys (:func:`unique_pairs`); membership is a
    binary search of this column's pair keys in them.
    """
    keys = flat.parent * np.int64(max(n_codes, 1)) + codes
    pos = np.minimum(np.searchsorted(other_pairs, keys), max(len(other_pairs) - 1, 0))
    hit = (other_pairs[pos] == keys) if len(other_pairs) else np.zeros(len(keys), bool)
    return _null_out(flat, np.bincount(flat.parent, weights=hit.astype(np.float64), minlength=flat.n))
