"""One task per file of a window on the engine: what training loads through (``ltv.tasks.blocks``).

Each file is read, validated, repaired and sampled as :func:`ltv.data.loader.load_split` reads it, and
only what the per-file function returns travels back: a window's rows never move as a whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from ltv.data.loader import _empty_report, _read, emit_warnings
from ltv.data.schema import DataError, LoadReport
from ltv.data.window import Window, _discover

log = logging.getLogger("ltv.data.loader")  # the loading's progress lines, under one logger


def map_files(
    engine,
    root: str | Path,
    subset: str,
    window: Window,
    fn: Callable[[pa.Table, int], object],
    *,
    seed: int = 0,
    labelled: bool | None = None,
) -> tuple[list, LoadReport]:
    """``fn(table, i)`` of each file ``i`` of a window, one task per file on ``engine``
    (:class:`ltv.cluster.Engine`), gathering only what ``fn`` returns (keep it small: a summary, a path
    written, labels): the window's rows never travel as a whole.

    ``table`` is the file read, validated, repaired and sampled as :func:`load_split` does (features,
    ``row_id``, ``datetime`` and, when labelled, the labels); files that keep no row are skipped.
    Returns ``fn``'s results in file (time) order, and the merged load report. Logs its progress (files,
    rows, rows/s) at least every 30 s.
    """
    labelled = subset == "train" if labelled is None else labelled
    started = time.perf_counter()
    files, empty = _discover(root, subset, window, seed)
    items = [(i, h, p) for i, (h, p) in enumerate(files)]
    results, report = [], _empty_report(root, subset, empty)
    t_log = time.perf_counter()
    outputs = engine.map(_map_one, items, name=lambda item: f"file {item[2]}", subset=subset, window=window,
                         seed=seed, labelled=labelled, per_file=fn)  # fmt: skip
    for done, (out, part) in enumerate(outputs, start=1):
        report.merge(part)
        if out is not None:
            results.append(out)
        if time.perf_counter() - t_log >= 30 or done == len(items):  # never silent on a big window
            t_log, secs = time.perf_counter(), time.perf_counter() - started
            log.info("%s %s: %d/%d files, %s rows kept in %.0f s (%.0f rows/s)", subset, window.describe(),
                     done, len(items), f"{report.rows_kept:,}", secs, report.rows_kept / max(secs, 1e-9))  # fmt: skip
    emit_warnings(report, subset, set())
    if not results:
        raise DataError(f"{window.describe()} of {root}/{subset} has no usable row: {report.summary()}")
    report.seconds = time.perf_counter() - started
    return results, report


def _map_one(item, subset, window, seed, labelled, per_file):
    i, hour, path = item
    table, report = _read(path, subset, hour, window, seed, None, labelled)
    return (per_file(table, i) if table.num_rows else None), report
