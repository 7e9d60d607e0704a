"""Map, map-of-map and list cells (JSON objects, [key, value] pair lists, tuples, None) -> Arrow arrays.

Every cell is checked (string keys, numeric values, integral values for int64 maps, pairs of exactly two);
an offending cell raises :class:`~ltv.serving.errors.InputError` naming the column and the request row.
The pairs of all cells are unpacked at once, without a Python loop per pair.
"""

from __future__ import annotations

import math
from itertools import chain

import numpy as np
import pyarrow as pa

from ltv import contract as c
from ltv.serving.errors import EXPECT, SEQ_TYPES, InputError, cell_error, is_null

VALUE_TYPES = {int, float, type(None), np.float64, np.float32, np.int64, np.int32}
_DICT_OR_SEQ = (dict, *SEQ_TYPES)


def _bad_pair_cell(column: str, row: int, cell) -> InputError:
    return cell_error(column, row, cell, EXPECT[c.KIND[column]] + " (each pair exactly [key, value])")


def _unpack(column: str, cells: list, rows: np.ndarray) -> tuple[list, list, list, list]:
    """Offsets, keys, values and null mask of map cells (dicts, pair lists, None), pairs checked.

    Every cell becomes a sequence of (key, value) pairs (a dict its ``items()``), and the pairs of all
    cells are unzipped at once in C: no Python loop per pair, for one cell or thousands.
    """
    mask = [is_null(x) for x in cells]
    seqs = [() if null else x.items() if type(x) is dict else x for x, null in zip(cells, mask, strict=True)]
    for i, x in enumerate(seqs):
        if type(x) not in _PAIR_SOURCES:
            raise cell_error(column, int(rows[i]), cells[i], EXPECT[c.KIND[column]])
    sizes = list(map(len, seqs))
    pairs = list(chain.from_iterable(seqs))
    try:  # zip(*pairs) unzips in C; pairs of another length would silently misalign
        ok = set(map(len, pairs)) <= {2}
    except TypeError:
        ok = False
    if not ok:
        offsets = np.cumsum([0, *sizes])
        bad = next(j for j, p in enumerate(pairs) if not isinstance(p, SEQ_TYPES) or len(p) != 2)
        i = int(np.searchsorted(offsets, bad, side="right") - 1)
        raise _bad_pair_cell(column, int(rows[i]), cells[i])
    keys, values = (list(x) for x in zip(*pairs, strict=True)) if pairs else ([], [])
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return offsets, keys, values, mask


_PAIR_SOURCES = {tuple, list, np.ndarray, type({}.items())}


def _first_bad(column, items, ok, offsets, cells, rows, expected) -> InputError:
    """The error for the first item failing ``ok``, naming the request row its cell came from."""
    j = next(j for j, v in enumerate(items) if not ok(v))
    cell = int(np.searchsorted(offsets, j, side="right") - 1)
    return cell_error(column, int(rows[cell]), cells[cell], expected)


def _values_array(values: list, typ: pa.DataType) -> pa.Array:
    """Checked numbers (ints and floats alike, None -> null) as an Arrow array of float64 or int64."""
    arr = np.array(values, dtype=np.float64)  # None -> NaN
    is_none = np.fromiter((v is None for v in values), bool, len(values)) if None in values else None
    if pa.types.is_floating(typ):
        # None is a null value; a NaN sent as a value stays NaN, as it would read from parquet
        return pa.array(arr, type=typ, mask=is_none)
    missing = ~np.isfinite(arr)  # int64 has no NaN: a null / non-finite count or timestamp is null
    return pa.array(np.where(missing, 0, arr).astype(np.int64), mask=missing)


def map_array(column: str, cells: list, typ: pa.MapType, rows: np.ndarray | None = None) -> pa.Array:
    """Validate map cells and build a MapArray of ``typ`` (a map of numbers, or of maps of numbers).

    ``rows[i]`` is the request row cell ``i`` came from (inner maps of a map of maps); default: ``i``.
    """
    rows = np.arange(len(cells)) if rows is None else rows
    offsets, keys, values, mask = _unpack(column, cells, rows)
    expected = EXPECT[c.KIND[column]]
    if not set(map(type, keys)) <= {str}:
        raise _first_bad(
            column, keys, lambda k: type(k) is str, offsets, cells, rows, "string keys in " + expected
        )
    if pa.types.is_map(typ.item_type):
        if not all(type(v) in _DICT_OR_SEQ or is_null(v) for v in values):
            ok = lambda v: type(v) in _DICT_OR_SEQ or is_null(v)  # noqa: E731
            raise _first_bad(column, values, ok, offsets, cells, rows, "inner maps in " + expected)
        inner_rows = np.repeat(rows, np.diff(offsets))
        items = map_array(column, values, typ.item_type, inner_rows)
    else:
        if not set(map(type, values)) <= VALUE_TYPES:
            ok = lambda v: type(v) in VALUE_TYPES  # noqa: E731
            raise _first_bad(column, values, ok, offsets, cells, rows, "numeric values in " + expected)
        items = _values_array(values, typ.item_type)
        if pa.types.is_integer(typ.item_type):
            arr = np.array(values, dtype=np.float64)
            if np.any(np.isfinite(arr) & (arr != np.round(arr))):
                ok = lambda v: v is None or not math.isfinite(v) or v == round(v)  # noqa: E731
                raise _first_bad(column, values, ok, offsets, cells, rows, "integer values in " + expected)
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.array(keys, pa.string()),
        items,
        type=typ,
        mask=pa.array(mask, pa.bool_()),
    )


def list_array(column: str, cells: list) -> pa.Array:
    out = []
    for i, cell in enumerate(cells):
        if isinstance(cell, SEQ_TYPES):
            items = list(cell)
            if not all(isinstance(s, str) for s in items):
                raise cell_error(column, i, cell)
            out.append(items)
        elif is_null(cell):
            out.append(None)
        else:
            raise cell_error(column, i, cell)
    return pa.array(out, type=c.CANONICAL_TYPE[column])
