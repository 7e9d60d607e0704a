"""Vectorised building blocks for the generator: per-row key draws and Arrow MAP / LIST construction.

A nested column is drawn as flat arrays (one entry per map item) plus per-row counts, and turned into Arrow
with offsets in one call; no Python loop touches a row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Items:
    """Flat map items of ``n`` rows: ``row`` (sorted), ``key`` (pool index) and per-row ``counts``."""

    n: int
    row: np.ndarray
    key: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.row, minlength=self.n)

    def per_row_sum(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.row, weights=values, minlength=self.n)

    def per_row_max(self, values: np.ndarray, empty: float = np.nan) -> np.ndarray:
        out = np.full(self.n, -np.inf)
        np.maximum.at(out, self.row, values)
        out[np.isneginf(out)] = empty
        return out


def unique_sorted(codes: np.ndarray) -> np.ndarray:
    """``np.unique(codes)`` (sorted distinct values) by one sort: numpy's hash-based unique is ~50x slower
    on the millions of int64 item codes of a large hour."""
    out = np.sort(codes)
    keep = np.empty(len(out), dtype=bool)
    keep[:1] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out[keep]


def draw_items(rng: np.random.Generator, counts: np.ndarray, cdf: np.ndarray) -> Items:
    """Draw ``counts[i]`` keys for row i from a pool with cumulative probabilities ``cdf``, unique per row.

    Duplicates are dropped (so a row may end with fewer keys than asked); keys come out sorted by pool index.
    """
    n = len(counts)
    rows = np.repeat(np.arange(n, dtype=np.int64), counts)
    keys = np.minimum(np.searchsorted(cdf, rng.random(len(rows)), side="right"), len(cdf) - 1)
    code = unique_sorted(rows * len(cdf) + keys)
    return Items(n, code // len(cdf), code % len(cdf))


def group_items(
    items: Items, mapping: np.ndarray, values: np.ndarray | None = None, how: str = "sum"
) -> tuple[Items, np.ndarray]:
    """Re-key items through ``mapping`` (pool index -> coarser pool index); ``how`` 'sum' or 'max' per new key.

    Without ``values`` it counts the items per new key.
    """
    width = int(mapping.max()) + 1
    code = items.row * width + mapping[items.key]
    uniq, inv = np.unique(code, return_inverse=True)
    vals = np.ones(len(code)) if values is None else np.asarray(values, dtype=np.float64)
    if how == "max":
        out = np.full(len(uniq), -np.inf)
        np.maximum.at(out, inv, vals)
    else:
        out = np.bincount(inv, weights=vals, minlength=len(uniq))
    return Items(items.n, uniq // width, uniq % width), out


def merge_items(a: Items, va: np.ndarray, b: Items, vb: np.ndarray) -> tuple[Items, np.ndarray]:
    """Union of two item sets of the same rows, summing the values of keys present in both."""
    width = int(max(a.key.max(initial=0), b.key.max(initial=0))) + 1
    code = np.concatenate([a.row * width + a.key, b.row * width + b.key])
    uniq, inv = np.unique(code, return_inverse=True)
    out = np.bincount(inv, weights=np.concatenate([va, vb]).astype(np.float64), minlength=len(uniq))
    return Items(a.n, uniq // width, uniq % width), out


def offsets(counts: np.ndarray) -> pa.Array:
    out = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=out[1:])
    return pa.array(out, type=pa.int32())


def map_array(items: Items, names: pa.Array, values, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """MAP<string, value_type> array; rows with ``valid`` False are null (they must hold no items)."""
    keys = names.take(pa.array(items.key))
    vals = values if isinstance(values, pa.Array) else pa.array(np.asarray(values), type=value_type)
    return pa.MapArray.from_arrays(offsets(items.counts), keys, vals, mask=pa.array(~valid))


def list_array(items: Items, names: pa.Array, valid: np.ndarray) -> pa.Array:
    """LIST<string> array of the item names; rows with ``valid`` False are null."""
    return pa.ListArray.from_arrays(
        offsets(items.counts), names.take(pa.array(items.key)), mask=pa.array(~valid)
    )


def keep_rows(items: Items, valid: np.ndarray) -> Items:
    """Drop the items of rows that are not ``valid`` (so null rows hold nothing)."""
    keep = valid[items.row]
    return Items(items.n, items.row[keep], items.key[keep])


def subset(items: Items, keep: np.ndarray) -> Items:
    return Items(items.n, items.row[keep], items.key[keep])


def vocab_strings(vocab: pa.Array, codes: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """``vocab[codes]`` as a string array, null where ``null``: one Arrow take, no per-row Python string."""
    return vocab.take(pa.array(codes, mask=null))


def joined_strings(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation of string arrays (or constant strings) without a separator."""
    return pc.binary_join_element_wise(*parts, "")


def numbers_with_nulls(values: np.ndarray, null: np.ndarray, dtype: pa.DataType | None = None) -> pa.Array:
    return pa.array(values, type=dtype or pa.float64(), mask=null)


def uuid4_strings(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` UUID4-formatted strings from the generator's random bits (vectorised, no uuid module)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexdig = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    nib = np.empty((n, 32), dtype=np.uint8)
    nib[:, 0::2] = hexdig[raw >> 4]
    nib[:, 1::2] = hexdig[raw & 0x0F]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dst, src in ((0, 0), (9, 8), (14, 12), (19, 16), (24, 20)):
        width = {0: 8, 24: 12}.get(dst, 4)
        out[:, dst : dst + width] = nib[:, src : src + width]
    ends = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(ends), pa.py_buffer(out))
