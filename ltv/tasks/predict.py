"""Batch scoring: stream the test window through the registered pipeline into a submission CSV.

Memory stays flat in the number of rows: batches are read, scored and appended one at a time. The CSV
is written to a temp file beside the target and renamed at the end, so an interrupted run leaves no
submission behind; a row_id seen twice is written once.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from omegaconf import DictConfig

from ltv.contract import ROW_ID, TARGET
from ltv.data.loader import iter_tables
from ltv.tasks import data as data_task
from ltv.tracking.store import setup as setup_tracking

log = logging.getLogger(__name__)


class _SeenIds:
    """Row ids written so far, as 64-bit hashes in sorted chunks (a few bytes per row, not a Python set)."""

    def __init__(self):
        self._chunks: list[np.ndarray] = []

    def new_mask(self, ids: pd.Series) -> np.ndarray:
        h = pd.util.hash_pandas_object(ids, index=False).to_numpy()
        first = ~pd.Series(h).duplicated().to_numpy()
        for chunk in self._chunks:
            idx = np.searchsorted(chunk, h)
            idx[idx == len(chunk)] = 0
            first &= chunk[idx] != h if len(chunk) else True
        self._chunks.append(np.sort(h[first]))
        if len(self._chunks) > 16:  # keep lookups cheap
            self._chunks = [np.sort(np.concatenate(self._chunks))]
        return first


def round_significant(x, digits: int = 6) -> np.ndarray:
    """``x`` rounded to ``digits`` significant decimal digits (the value ``'%.{digits}g'`` prints), vectorised.

    The result is the double nearest to that decimal, so its shortest representation is that decimal.
    Zeros, non-finite values and magnitudes below 1e-290 are returned as they are.
    """
    out = np.array(x, dtype=np.float64, copy=True)
    mask = np.isfinite(out) & (np.abs(out) >= 1e-290)
    v = out[mask]
    k = digits - 1 - np.floor(np.log10(np.abs(v))).astype(np.int64)  # decimals to keep
    p = np.power(10.0, np.abs(k))
    with np.errstate(over="ignore", invalid="ignore"):
        out[mask] = np.where(k >= 0, np.round(v * p) / p, np.round(v / p) * p)
    return out


_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="none")


def csv_rows(ids: pa.Array | pa.ChunkedArray, pred: np.ndarray) -> bytes:
    """``row_id,prediction`` lines (no header), predictions to 6 significant digits.

    Arrow's CSV writer (C++, outside the GIL; pandas' ``to_csv`` cost ~3 us a row); a row_id holding a
    comma, quote or newline sends the batch through pandas, which quotes it.
    """
    values = round_significant(pred)
    try:
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(pa.table({ROW_ID: ids, TARGET: values}), sink, _CSV_OPTIONS)
        return sink.getvalue().to_pybytes()
    except pa.ArrowInvalid:
        frame = pd.DataFrame({ROW_ID: ids.to_pandas(), TARGET: values})
        return frame.to_csv(header=False, index=False, float_format="%.6g", lineterminator="\n").encode()


def _table(item) -> pa.Table:
    """The table of a loader item: a pyarrow.Table, or a (Table, LoadReport) pair."""
    return item[0] if isinstance(item, tuple) else item


def coalesce(tables, batch_rows: int):
    """Group small Arrow tables (one per hour file) into batches of about ``batch_rows`` rows.

    Per-call overhead of the models dominates on small batches; a few large batches keep scoring fast
    while memory stays bounded by ``batch_rows``. Each batch is one contiguous chunk per column: feature
    extraction on one chunk is up to 2x faster than on ten (the copy costs ~5% of that).
    """
    pending, size = [], 0
    for item in tables:
        table = _table(item)
        pending.append(table)
        size += table.num_rows
        if size >= batch_rows:
            yield _one_chunk(pending)
            pending, size = [], 0
    if pending:
        yield _one_chunk(pending)


def _one_chunk(tables: list) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks()


class _Done:
    """End-of-stream marker of :func:`prefetch` (carries the producer's exception, if any)."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def prefetch(items, depth: int = 1):
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    The producer's work (parquet decoding, Arrow casts, feature extraction: mostly outside the GIL)
    overlaps the consumer's (the model). Items arrive in order; an exception in the producer is raised
    in the consumer; closing the generator early stops the producer. Memory: ``depth`` + 2 items.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            put(_Done(e))
            return
        put(_Done())

    worker = threading.Thread(target=produce, name="ltv-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, _Done):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def score_to_csv(
    pipeline,
    tables,
    output: str | os.PathLike,
    log_every_s: float = 10.0,
    prefetch_depth: int = 0,
    workers: int = 1,
    unique_ids: bool = False,
) -> dict[str, float]:
    """Score an iterable of Arrow tables into ``output`` (``row_id,iap_revenue_d7``); returns counts.

    Parameters
    ----------
    pipeline : LTVPipeline-like
        Has ``predict(table) -> ndarray``; with ``prepare(table)`` and ``predict_prepared(prepared)``
        (the same prediction in two steps) the first step runs in the prefetch thread.
    tables : iterable of pyarrow.Table or (Table, report) pairs
        Raw contract rows with ``row_id``.
    output : path
        Final CSV path; written via a temp file and an atomic rename.
    prefetch_depth : int
        With one worker, > 0: read (and prepare) up to this many batches ahead in a background thread
        (:func:`prefetch`), overlapping input decoding and features with the model.
    workers : int
        > 1: score this many batches at once in threads (:func:`score_parallel`) while this thread reads
        the next one and writes finished ones in input order. Any setting writes the same file.
    unique_ids : bool
        The stream never repeats a row_id (``iter_tables`` drops repeats): skip the check here.
    """
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    seen = _SeenIds()
    rows = dup = 0
    t0 = last = time.perf_counter()
    try:
        with open(tmp, "wb") as fh:
            fh.write(f"{ROW_ID},{TARGET}\n".encode())
            for table, pred in _scored(pipeline, tables, prefetch_depth, workers):
                ids = table.column(ROW_ID)
                if not unique_ids:
                    keep = seen.new_mask(ids.to_pandas())
                    if not keep.all():
                        dup += int((~keep).sum())
                        ids, pred = ids.filter(pa.array(keep)), pred[keep]
                fh.write(csv_rows(ids, pred))
                rows += len(pred)
                now = time.perf_counter()
                if now - last >= log_every_s:
                    log.info("scored %d rows, %.0f rows/s", rows, rows / (now - t0))
                    last = now
        if rows == 0:
            raise ValueError("no rows were scored: the input window is empty")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    elapsed = time.perf_counter() - t0
    log.info(
        "wrote %s: %d rows in %.1fs (%.0f rows/s), %d duplicate row_ids skipped",
        out,
        rows,
        elapsed,
        rows / max(elapsed, 1e-9),
        dup,
    )
    return {"rows": rows, "duplicates": dup, "seconds": elapsed, "rows_per_s": rows / max(elapsed, 1e-9)}


def _scored(pipeline, tables, prefetch_depth: int, workers: int):
    """(table, predictions) per input table, in input order."""
    if workers > 1:
        yield from score_parallel(pipeline, tables, workers)
        return
    if prefetch_depth > 0 and hasattr(pipeline, "prepare") and hasattr(pipeline, "predict_prepared"):
        for table, prepared in prefetch(_staged(pipeline, tables), prefetch_depth):
            yield table, pipeline.predict_prepared(prepared)
        return
    for table in map(_table, tables):
        yield table, pipeline.predict(table)


def score_parallel(pipeline, tables, workers: int):
    """(table, ``pipeline.predict(table)``) per input table, in input order, ``workers`` batches at once.

    Each worker thread takes a whole batch through features and model; the caller's thread reads the
    next batch meanwhile. Features and the loader hold the GIL part of the time and the model releases
    it, so two batches in flight keep two cores busier than one batch whose stages overlap. Memory:
    ``workers`` + 1 batches. An error in a worker is raised here; closing early cancels queued batches.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ltv-score") as pool:
        try:
            for table in map(_table, tables):
                pending.append((table, pool.submit(pipeline.predict, table)))
                if len(pending) > workers:
                    table, done = pending.popleft()
                    yield table, done.result()
            while pending:
                table, done = pending.popleft()
                yield table, done.result()
        finally:
            for _, future in pending:
                future.cancel()


def _staged(pipeline, tables):
    """(table, ``pipeline.prepare(table)``) per input table (a (Table, report) pair gives its table)."""
    for table in map(_table, tables):
        yield table, pipeline.prepare(table)


def workers_setting(value) -> int:
    """``workers`` of the predict config: 'auto' is one per core (at most 4: memory holds workers + 1
    batches), else a positive int."""
    if str(value).strip().lower() == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(4, cores))
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"workers={value!r}: expected 'auto' or a positive integer")
    return n


def predict(cfg: DictConfig) -> Path:
    """Write the submission for ``cfg.split`` of ``cfg.data`` with the pipeline at ``cfg.model_uri``."""
    from ltv.tracking.pyfunc import load_pipeline

    if cfg.get("keep_memory", True):
        from ltv.memory import keep_freed_memory

        keep_freed_memory()
    setup_tracking(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_root)
    pipeline = load_pipeline(cfg.model_uri, compile_trees=cfg.get("compile_trees", True))
    root = data_task.ensure_data(cfg.data)
    subset = data_task.SUBSET[cfg.split]
    tables = iter_tables(
        root, subset, data_task.window(cfg.data, cfg.split), batch_rows=cfg.data.batch_rows, seed=cfg.seed
    )
    stats = score_to_csv(
        pipeline,
        coalesce(tables, cfg.data.batch_rows),
        cfg.output,
        prefetch_depth=cfg.get("prefetch", 1),
        workers=workers_setting(cfg.get("workers", 1)),
        unique_ids=True,  # iter_tables drops a row_id it has seen in an earlier batch
    )
    print(
        f"submission: {Path(cfg.output).resolve()} ({stats['rows']} rows, {stats['rows_per_s']:.0f} rows/s)"
    )
    return Path(cfg.output)
