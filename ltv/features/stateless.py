"""Stateless extraction context and the plain (non-nested) feature groups.

Every group function takes an :class:`ExtractContext` and returns ``{feature name: per-row array}``;
numeric arrays are float64 here and cast to float32 once by the builder. Nothing is fitted, and every
value depends on its own row only (plus the request time of that row), so any chunking of the input
gives the same values.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ltv import contract
from ltv.features import nested

DAY_S = 86400.0
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})

# numeric scalars passed through (timestamps become recencies instead: an absolute time does not generalise)
SCALAR_COLUMNS = [c for c in contract.NUMBER_COLUMNS if c not in contract.TIMESTAMP_COLUMNS]
# raw string columns handed to the fitted category encoding (`hour` is encoded cyclically instead)
CATEGORICAL_COLUMNS = [c for c in contract.STRING_COLUMNS if c != "hour"]


def map_unique(col: pa.Array | pa.ChunkedArray, fn: Callable[[str], float]) -> np.ndarray:
    """Apply ``fn`` to each distinct string once and broadcast the result (float64, NaN for null).

    Low-cardinality strings (hour, release_date, datetime) are parsed per distinct value, not per row.
    """
    arr = nested.as_array(col)
    if pa.types.is_null(arr.type) or arr.null_count == len(arr):
        return np.full(len(arr), np.nan)
    enc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr, null_encoding="encode")
    table = np.array([np.nan if s is None else fn(s) for s in enc.dictionary.to_pylist()] + [np.nan])
    return table[_indices(enc)]


def _indices(enc: pa.DictionaryArray) -> np.ndarray:
    """Dictionary indices as numpy, a null index -> ``len(dictionary)`` (the callers' slot for null). A
    fresh encoding with ``null_encoding="encode"`` has none: no kernel call, which a one-row request
    would pay ~20 us for."""
    if enc.indices.null_count:
        return pc.fill_null(enc.indices, len(enc.dictionary)).to_numpy(zero_copy_only=False)
    return enc.indices.to_numpy()


def strings(*cols: pa.Array | pa.ChunkedArray) -> list[np.ndarray]:
    """String columns -> numpy object arrays of str with None for null, one per column.

    All the columns are decoded together, once per distinct value (one dictionary encoding whatever the
    number of columns or rows): rows share their str objects, whose hashes later stages reuse.
    """
    arrays = [_as_string(nested.as_array(c)) for c in cols]
    if not arrays:
        return []
    enc = pc.dictionary_encode(pa.concat_arrays(arrays), null_encoding="encode")
    values = np.array(enc.dictionary.to_pylist() + [None], dtype=object)[_indices(enc)]
    return np.split(values, np.cumsum([len(a) for a in arrays])[:-1])


def _as_string(arr: pa.Array) -> pa.Array:
    """A string-kind array (plain, large, dictionary-encoded or all-null) as ``pa.string()``."""
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string())
    return arr if arr.type == pa.string() else arr.cast(pa.string())


def _parse_partition(s: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(s, contract.PARTITION_FORMAT)))
    except (TypeError, ValueError):
        return np.nan


def _parse_release(s: str) -> float:
    """'2023_october' -> months since 1970-01 (NaN when unparseable)."""
    year, _, month = str(s).partition("_")
    m = _MONTHS.get(month.strip().lower())
    return float((int(year) - 1970) * 12 + m - 1) if year.isdigit() and m else np.nan


def _parse_int(s: str) -> float:
    try:
        return float(int(s))
    except (TypeError, ValueError):
        return np.nan


class ExtractContext:
    """One table being extracted: its columns, request time per row, and cached flattened columns.

    Parameters
    ----------
    table : contract rows (extra columns ignored).
    reference_time : unix seconds used as every row's request time when ``table`` has no ``datetime``
        column; None means now (UTC) floored to the hour.
    top_k : k of the top-k share of histograms.
    """

    def __init__(self, table: pa.Table, reference_time: float | None = None, top_k: int = 3):
        self.table = table
        self.names = frozenset(table.column_names)  # column_names rebuilds a list on every access
        self.n = table.num_rows
        self.top_k = top_k
        self.request_ts = self._request_time(reference_time)
        self._columns: dict[str, pa.Array] = {}
        self._flat: dict[str, nested.Flat] = {}
        self._values: dict[str, np.ndarray] = {}
        self.cache: dict[str, np.ndarray] = {}  # shared intermediate results between groups

    def _request_time(self, reference_time: float | None) -> np.ndarray:
        if contract.PARTITION_COLUMN in self.names:
            col = nested.as_array(self.table[contract.PARTITION_COLUMN])
            if pa.types.is_timestamp(col.type):  # already parsed by a reader: take it as UTC
                ts = nested.to_float(pc.cast(col, pa.timestamp("s")).cast(pa.int64()))
            else:
                ts = map_unique(col, _parse_partition)
            if np.isnan(ts).any():
                raise ValueError(
                    f"column {contract.PARTITION_COLUMN!r}: expected 'YYYY-MM-DD-HH-00' strings, "
                    "found null or unparseable values"
                )
            return ts
        if reference_time is None:
            reference_time = (time.time() // 3600) * 3600
        return np.full(self.n, float(reference_time))

    def column(self, name: str) -> pa.Array:
        """Column ``name`` as one contiguous array (combined once, cached)."""
        arr = self._columns.get(name)
        if arr is None:
            if name not in self.names:
                raise ValueError(f"feature extraction needs contract column {name!r}, which the table lacks")
            arr = self._columns[name] = nested.as_array(self.table.column(name))
        return arr

    def flat(self, name: str) -> nested.Flat:
        if name not in self._flat:
            self._flat[name] = nested.flatten(self.column(name))
        return self._flat[name]

    def values(self, name: str) -> np.ndarray:
        """Map values of ``name`` as float64 (cached)."""
        if name not in self._values:
            self._values[name] = self.flat(name).values()
        return self._values[name]

    def scalar(self, name: str) -> np.ndarray:
        return nested.to_float(self.column(name))

    def request_hour(self) -> np.ndarray:
        """Hour of day 0-23 per row: the ``hour`` column, the request time where it is null (cached)."""
        if "__hour" not in self.cache:
            hour = map_unique(self.column("hour"), _parse_int)
            self.cache["__hour"] = np.where(np.isnan(hour), (self.request_ts // 3600) % 24, hour)
        return self.cache["__hour"]

    def days_since(self, ts_seconds: np.ndarray) -> np.ndarray:
        """Recency in days of a unix-SECONDS timestamp relative to the row's request hour."""
        return (self.request_ts - ts_seconds) / DAY_S


def scalars(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Numeric scalar columns passed through."""
    return {c: ctx.scalar(c) for c in SCALAR_COLUMNS}


def categoricals(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Raw string columns (object arrays, None for null); encoded by the fitted stage."""
    return dict(zip(CATEGORICAL_COLUMNS, strings(*map(ctx.column, CATEGORICAL_COLUMNS)), strict=True))


def time_features(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Cyclical hour and ISO weekday, weekend flag, device age in months at the request date.

    ``hour`` / ``weekday`` come from their columns; where null, from the request time.
    """
    hour = ctx.request_hour()
    weekday = ctx.scalar("weekday")
    iso_from_ts = (ctx.request_ts // DAY_S + 3) % 7 + 1  # 1970-01-01 was a Thursday (ISO 4)
    weekday = np.where(np.isnan(weekday), iso_from_ts, weekday)
    request_month = ctx.request_ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.float64)
    release_month = map_unique(ctx.column("release_date"), _parse_release)
    return {
        "hour_sin": np.sin(2 * np.pi * hour / 24),
        "hour_cos": np.cos(2 * np.pi * hour / 24),
        "weekday_sin": np.sin(2 * np.pi * (weekday - 1) / 7),
        "weekday_cos": np.cos(2 * np.pi * (weekday - 1) / 7),
        "is_weekend": (weekday >= 6).astype(np.float64),
        "device_age_months": request_month - release_month,
    }


def missing_flags(ctx: ExtractContext, columns: list[str]) -> dict[str, np.ndarray]:
    """``<column>__missing`` = 1.0 where the raw cell is null (computed from the raw column, before any fill)."""
    out = {}
    for c in columns:
        col = ctx.column(c)
        nulls = len(col) if pa.types.is_null(col.type) else col.null_count
        if nulls == len(col):
            out[f"{c}__missing"] = np.ones(len(col))
        elif nulls == 0:  # no kernel call for the common all-valid / all-null columns
            out[f"{c}__missing"] = np.zeros(len(col))
        else:
            out[f"{c}__missing"] = col.is_null().to_numpy(zero_copy_only=False).astype(np.float64)
    return out
