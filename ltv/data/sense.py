"""Checks that contract data makes sense, not only that it has the right types (README, "Data").

* Timestamps (``contract.TIMESTAMP_COLUMNS`` and the values of ``TIMESTAMP_MAP_COLUMNS``) are unix
  seconds. A value of 1e11 or more is not a date in seconds (that would be after the year 5000): from
  1e11 it is read as milliseconds, from 1e14 as microseconds, and converted to seconds; a value after the
  end of its partition hour (a date in the future of the request) becomes null. Each is counted per
  column (``repaired["timestamp_ms.<column>"]``, ``"timestamp_us.<column>"``, ``"future_timestamp.<column>"``)
  and warned about once per load naming the column and the unit.
* Labels that contradict each other are repaired by one rule, evidence of a purchase wins: a positive
  ``iap_revenue_dN`` or ``buy_dN`` makes ``buyer_dN`` 1 (``label_buyer_flag``); a buyer flag or buy count
  is raised to the one of the horizon before it, since horizons are cumulative (``label_horizon``); a
  buyer's ``buy_dN`` is raised to at least 1 (``label_buy_count``). Revenue itself is never changed
  (d14 / d28 may fall below d7 through refunds). Rows, not cells, are counted, once per reason.
* A training window needs buyers: :func:`check_buyers` fails before fitting, naming the window and
  the count.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ltv import contract

MS_FROM = 1e11  # seconds from here on would be after the year 5000
US_FROM = 1e14
_UNITS = (("us", US_FROM, 1_000_000), ("ms", MS_FROM, 1_000))
MIN_TRAIN_BUYERS = 20  # LightGBM's default min_child_samples: fewer and the revenue stage cannot split
MIN_VALID_BUYERS = 5  # calibration and the gate are fitted on the valid window's buyers


class DataSenseError(ValueError):
    """A window that type-checks but cannot be used: e.g. a training window without (enough) buyers."""


def _hour_end(hour: str) -> float:
    """Unix seconds at the end of partition hour 'YYYY-MM-DD-HH-00' (UTC)."""
    start = datetime.strptime(hour, contract.PARTITION_FORMAT).replace(tzinfo=timezone.utc)
    return start.timestamp() + 3600.0


def _fix_values(values: pa.Array, limit: float, counts: dict[str, int]) -> pa.Array:
    """Leaf timestamp values: ms / us converted to seconds, values after ``limit`` nulled (same type)."""
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)) or len(values) == 0:
        return values
    x = values.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls arrive as NaN
    is_int = pa.types.is_integer(values.type)
    out = x.copy()
    done = np.zeros(len(x), bool)
    for unit, lower, factor in _UNITS:
        m = (x >= lower) & ~done
        if m.any():
            counts[f"timestamp_{unit}"] = counts.get(f"timestamp_{unit}", 0) + int(m.sum())
            out[m] = np.floor(x[m] / factor) if is_int else x[m] / factor
            done |= m
    future = out > limit
    if future.any():
        counts["future_timestamp"] = counts.get("future_timestamp", 0) + int(future.sum())
    if not done.any() and not future.any():
        return values
    mask = np.isnan(x) | future
    return pa.array(out, mask=mask).cast(values.type)


def _fix_map(arr: pa.Array, limit: float, counts: dict[str, int]) -> pa.Array:
    """The same on the (possibly nested) values of a map array, keeping every key and the offsets."""
    offsets = arr.offsets
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    keys, items = arr.keys.slice(first, last - first), arr.items.slice(first, last - first)
    before = dict(counts)
    if pa.types.is_map(items.type):
        new_items = _fix_map(items, limit, counts) if len(items) else items
    else:
        new_items = _fix_values(items, limit, counts)
    if counts == before:
        return arr
    mask = arr.is_null() if arr.null_count else None
    return pa.MapArray.from_arrays(pc.subtract(offsets, first), keys, new_items, mask=mask)


def fix_timestamps(table: pa.Table, hour: str, report) -> pa.Table:
    """Convert ms / us timestamps to unix seconds and null those after partition ``hour``, per column.

    Parameters
    ----------
    table : pyarrow.Table
        Contract columns (canonical or float-variant types; any subset of the columns).
    hour : str
        The partition 'YYYY-MM-DD-HH-00' the rows were requested in.
    report : ltv.data.schema.LoadReport
        Gets ``repaired["timestamp_ms.<col>"]`` / ``"timestamp_us.<col>"`` / ``"future_timestamp.<col>"``
        and one warning per column and kind (identical for every file, so emitted once per load).

    Returns
    -------
    pyarrow.Table
        The same columns and types.
    """
    limit = _hour_end(hour)
    for name in contract.TIMESTAMP_COLUMNS + contract.TIMESTAMP_MAP_COLUMNS:
        if name not in table.column_names:
            continue
        col, counts = table.column(name), {}
        fix = _fix_map if pa.types.is_map(col.type) else _fix_values
        chunks = [fix(chunk, limit, counts) if len(chunk) else chunk for chunk in col.chunks]
        if not counts:
            continue
        table = table.set_column(table.schema.get_field_index(name), name, pa.chunked_array(chunks, col.type))
        for kind, n in counts.items():
            report.repair(f"{kind}.{name}", n)
            report.warnings.append(_timestamp_message(name, kind))
    return table


def _timestamp_message(name: str, kind: str) -> str:
    if kind == "future_timestamp":
        return (
            f"column '{name}' has timestamps after the hour of their partition (in the future of the "
            f"request): set to null; counted as repaired future_timestamp.{name}"
        )
    unit = {"timestamp_ms": "milliseconds", "timestamp_us": "microseconds"}[kind]
    return (
        f"column '{name}' has timestamps in {unit}, not unix seconds: converted to seconds; "
        f"counted as repaired {kind}.{name}"
    )


_RULES = {
    "label_buyer_flag": "buyer_dN = 0 with iap_revenue_dN > 0 or buy_dN > 0: buyer_dN set to 1",
    "label_horizon": "a buyer flag or buy count below the earlier horizon's: raised to it",
    "label_buy_count": "buy_dN = 0 for a buyer (buyer_dN = 1): buy_dN set to 1",
}


def repair_labels(table: pa.Table, report) -> pa.Table:
    """Make the labels of each row agree (module docstring: evidence of a purchase wins); rows counted
    per rule as ``repaired["label_buyer_flag" | "label_horizon" | "label_buy_count"]`` and each rule
    that fired warned once per load. Needs the required labels without nulls (after the purge)."""
    names = contract.BUYER_LABELS + ["buy_d7", "buy_d14", "buy_d28"] + contract.REVENUE_LABELS
    if table.num_rows == 0 or any(n not in table.column_names for n in names):
        return table
    v = {n: pc.cast(table.column(n), pa.float64()).to_numpy(zero_copy_only=False) for n in names}
    changed = {rule: np.zeros(table.num_rows, bool) for rule in _RULES}

    def raise_to(name: str, floor: np.ndarray, rule: str) -> None:
        floor = np.ceil(floor)  # flags and counts are integers (a fractional one fails its cast later)
        low = v[name] < floor
        if low.any():
            v[name] = np.where(low, floor, v[name])
            changed[rule] |= low

    for d in ("7", "14", "28"):
        evidence = (v[f"iap_revenue_d{d}"] > 0) | (v[f"buy_d{d}"] > 0)
        raise_to(f"buyer_d{d}", evidence.astype(np.float64), "label_buyer_flag")
    for early, late in zip(contract.BUYER_LABELS, contract.BUYER_LABELS[1:], strict=False):
        raise_to(late, v[early], "label_horizon")
    for early, late in (("buy_d7", "buy_d14"), ("buy_d14", "buy_d28")):
        raise_to(late, v[early], "label_horizon")
    for d in ("7", "14", "28"):
        raise_to(f"buy_d{d}", v[f"buyer_d{d}"], "label_buy_count")
    if not any(m.any() for m in changed.values()):
        return table
    for rule, rows in changed.items():
        if rows.any():
            report.repair(rule, int(rows.sum()))
            report.warnings.append(
                f"labels contradict each other ({_RULES[rule]}); counted as repaired {rule}"
            )
    for name in contract.BUYER_LABELS + ["buy_d7", "buy_d14", "buy_d28"]:
        col = table.column(name)
        fixed = pa.array(v[name]).cast(col.type)
        table = table.set_column(table.schema.get_field_index(name), name, fixed)
    return table


def check_buyers(labels, window: str, minimum: int, label: str = "buyer_d7") -> int:
    """Raise :class:`DataSenseError` when ``labels`` (a loaded window) has fewer than ``minimum`` buyers.

    Parameters
    ----------
    labels : pandas.DataFrame
        The window's label columns (``label`` at least).
    window : str
        How to name the window in the message, e.g. ``Window.describe()``.
    minimum : int
        Buyers the stages fitted on this window need (:data:`MIN_TRAIN_BUYERS`, :data:`MIN_VALID_BUYERS`).

    Returns
    -------
    int
        The number of buyers.
    """
    n_rows = len(labels)
    buyers = int((np.asarray(labels[label], dtype=np.float64) > 0).sum()) if n_rows else 0
    if buyers < minimum:
        raise DataSenseError(
            f"{window} has {buyers} buyers ({label} = 1) in {n_rows:,} rows; fitting needs at least "
            f"{minimum} (the classifier needs both classes, the revenue stage buyers to split on): "
            f"widen the window or raise its row fraction"
        )
    return buyers


def check_fit_buyers(train_labels, valid_labels, train_window, valid_window) -> None:
    """Before fitting: the train window has :data:`MIN_TRAIN_BUYERS` buyers and the valid window (early
    stopping, calibration, gate) :data:`MIN_VALID_BUYERS`; a :class:`DataSenseError` names the window
    (``Window.describe()``) and its count otherwise."""
    check_buyers(train_labels, train_window.describe(), MIN_TRAIN_BUYERS)
    check_buyers(valid_labels, valid_window.describe(), MIN_VALID_BUYERS)
