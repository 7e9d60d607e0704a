"""Raw contract rows as JSON records, the way a client of the model server sends them."""

from __future__ import annotations

import math

import pyarrow as pa


def _jsonable(value, maps_as: str):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        if value and isinstance(value[0], tuple):  # a map as Arrow gives it: list of (key, value)
            if maps_as == "objects":
                return {k: _jsonable(v, maps_as) for k, v in value}
            return [[k, _jsonable(v, maps_as)] for k, v in value]
        return [_jsonable(v, maps_as) for v in value]
    return value


def table_to_records(table: pa.Table, maps_as: str = "pairs") -> list[dict]:
    """Raw contract rows as JSON-ready dicts: maps as [key, value] lists (``pairs``) or objects."""
    return [{k: _jsonable(v, maps_as) for k, v in row.items()} for row in table.to_pylist()]
