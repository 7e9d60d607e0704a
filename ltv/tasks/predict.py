"""Batch scoring: stream the test window through the registered pipeline into a submission CSV.

Memory stays flat in the number of rows: batches are read, scored and appended one at a time. The CSV
is written to a temp file beside the target and renamed at the end, so an interrupted run leaves no
submission behind; a row_id seen twice is written once.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from omegaconf import DictConfig

from ltv.contract import ROW_ID, TARGET
from ltv.data.loader import iter_tables, one_chunk
from ltv.data.schema import SeenRowIds
from ltv.tasks import data as data_task
from ltv.tracking.store import setup as setup_tracking

log = logging.getLogger(__name__)


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
    while memory stays bounded by ``batch_rows``. Each batch is one contiguous chunk per column
    (:func:`ltv.data.loader.one_chunk`).
    """
    pending, size = [], 0
    for item in tables:
        table = _table(item)
        pending.append(table)
        size += table.num_rows
        if size >= batch_rows:
            yield one_chunk(pending)
            pending, size = [], 0
    if pending:
        yield one_chunk(pending)


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
        > 1: score this many batches at once in threads (:func:`score_stream`) while this thread reads
        the next one and writes finished ones in input order. Any setting writes the same file.
    unique_ids : bool
        The stream never repeats a row_id (``iter_tables`` drops repeats): skip the check here.
    """
    return write_submission(
        _scored(pipeline, tables, prefetch_depth, workers), output, log_every_s, unique_ids
    )


def write_submission(
    scored, output: str | os.PathLike, log_every_s: float = 10.0, unique_ids: bool = False
) -> dict[str, float]:
    """Write ``(row_ids, predictions, *extra)`` items to ``output`` (``row_id,iap_revenue_d7``); returns
    counts (:func:`unique_rows`).

    The file is written to a temp name beside ``output`` and renamed at the end, so a failure or an
    interrupt leaves no submission behind; a row_id seen before is written once (its first prediction)
    unless ``unique_ids`` says the pairs never repeat one. A progress line every ``log_every_s``.
    """
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    counts: dict[str, float] = {}
    try:
        with open(tmp, "wb") as fh:
            fh.write(f"{ROW_ID},{TARGET}\n".encode())
            for ids, pred, *_ in unique_rows(scored, counts, unique_ids, log_every_s):
                fh.write(csv_rows(ids, pred))
        if counts["rows"] == 0:
            raise ValueError("no rows were scored: the input window is empty")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info(
        "wrote %s: %d rows in %.1fs (%.0f rows/s), %d duplicate row_ids skipped",
        out,
        counts["rows"],
        counts["seconds"],
        counts["rows_per_s"],
        counts["duplicates"],
    )
    return counts


def unique_rows(scored, counts: dict, unique_ids: bool = False, log_every_s: float = 10.0):
    """The ``(row_ids, predictions, *extra)`` items of ``scored`` with every row_id seen in an earlier
    item dropped (its first prediction wins; ``extra`` DataFrames are filtered alike) unless
    ``unique_ids`` says none repeats; a progress line (rows, rows/s) every ``log_every_s``. ``counts``
    gets rows, duplicates, seconds and rows_per_s, final when the iteration ends."""
    seen = SeenRowIds()
    counts.update(rows=0, duplicates=0, seconds=0.0, rows_per_s=0.0)
    t0 = last = time.perf_counter()
    for ids, pred, *extra in scored:
        if not unique_ids:
            keep = seen.new_mask(ids.to_pandas())
            if not keep.all():
                counts["duplicates"] += int((~keep).sum())
                ids, pred = ids.filter(pa.array(keep)), pred[keep]
                extra = [e if e is None else e.loc[keep].reset_index(drop=True) for e in extra]
        counts["rows"] += len(pred)
        now = time.perf_counter()
        counts["seconds"] = now - t0
        counts["rows_per_s"] = counts["rows"] / max(now - t0, 1e-9)
        if now - last >= log_every_s:
            log.info("scored %d rows, %.0f rows/s", counts["rows"], counts["rows_per_s"])
            last = now
        yield (ids, pred, *extra)


def _scored(pipeline, tables, prefetch_depth: int, workers: int):
    """(row ids, predictions) per input table, in input order."""
    if workers > 1:
        yield from score_stream(pipeline, tables, workers)
        return
    if prefetch_depth > 0 and hasattr(pipeline, "prepare") and hasattr(pipeline, "predict_prepared"):
        pairs = (
            (t, pipeline.predict_prepared(x)) for t, x in prefetch(_staged(pipeline, tables), prefetch_depth)
        )
    else:
        pairs = ((t, pipeline.predict(t)) for t in map(_table, tables))
    for table, pred in pairs:
        yield table.column(ROW_ID), pred


def score_stream(pipeline, tables, workers: int, labelled: bool = False, parts: bool = False):
    """:func:`score_rows` per input table (row ids, predictions, extra), in input order, ``workers``
    batches at once in threads.

    Each worker thread takes a whole batch through features and model; the caller's thread reads the
    next batch meanwhile. Features and the loader hold the GIL part of the time and the model releases
    it, so two batches in flight keep two cores busier than one batch whose stages overlap. Memory:
    ``workers`` + 1 batches. An error in a worker is raised here; closing early cancels queued batches.
    """
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    score = partial(score_rows, pipeline, labelled=labelled, parts=parts)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ltv-score") as pool:
        for _, scored in _in_order(pool, score, map(_table, tables), workers):
            yield scored


def _in_order(pool, fn, items, ahead: int):
    """(item, ``fn(item)``) per item, in input order, ``fn`` run on ``pool`` with at most ``ahead`` + 1
    items submitted and not yet yielded. An error in ``fn`` is raised here; closing early cancels the
    queued items."""
    from collections import deque

    pending: deque = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) > ahead:
                item, done = pending.popleft()
                yield item, done.result()
        while pending:
            item, done = pending.popleft()
            yield item, done.result()
    finally:
        for _, future in pending:
            future.cancel()


_SHARED: dict = {}  # per scoring process: its pipeline (or the error loading it) and the read settings


def _child_start(model_uri: str, compile_trees: bool, read: dict, stores: tuple) -> None:
    """In a new scoring process: point MLflow at the parent's tracking / registry stores (a spawned
    process starts without them) and load the pipeline; trees score on this process's own thread (the
    processes fill the cores). A failure is kept and raised by the first task, so the caller sees it."""
    import mlflow

    from ltv.models import compiled
    from ltv.tracking.pyfunc import load_pipeline

    compiled.DEFAULT_THREADS = 1
    _SHARED.update(read)
    try:
        mlflow.set_tracking_uri(stores[0])
        mlflow.set_registry_uri(stores[1])
        _SHARED["pipeline"] = load_pipeline(model_uri, compile_trees=compile_trees)
    except BaseException as e:  # noqa: BLE001 - forwarded to the parent with the first task
        _SHARED["error"] = e


def score_rows(pipeline, table: pa.Table, labelled: bool = False, parts: bool = False) -> tuple:
    """(row ids, predictions, extra) of one validated table. With ``parts``, extra is a DataFrame of
    the table's label columns (float64; ``labelled`` tables) and ``p_buyer``, the calibrated buyer
    probability, from the same pass over the chain (for metrics); else None."""
    ids = table.column(ROW_ID)
    if not parts:
        return ids, pipeline.predict(table), None
    from ltv.contract import LABEL_COLUMNS
    from ltv.tasks.evaluation import predict_with_buyer

    label_cols = [c for c in LABEL_COLUMNS if c in table.column_names] if labelled else []
    extra = pd.DataFrame(
        {c: table.column(c).to_numpy().astype(np.float64) for c in label_cols}, index=pd.RangeIndex(len(ids))
    )
    pred, p_buyer = predict_with_buyer(pipeline, pipeline.extract(table.drop_columns(label_cols)))
    if p_buyer is not None:
        extra["p_buyer"] = p_buyer
    return ids, pred, extra


def _score_group(group: list) -> tuple:
    """In a scoring process: read one group of file parts and score it, ``batch_rows`` rows at a time
    (a group is larger only when one row group is); (row ids, predictions, extra, report)."""
    from ltv.data.loader import read_group

    shared = _SHARED
    if "error" in shared:
        raise shared["error"]
    labelled = shared["labelled"]
    table, report = read_group(
        group, shared["subset"], shared["window"], seed=shared["seed"], labelled=labelled
    )
    if table is None:
        return None, None, None, report
    step = shared["batch_rows"]
    out = [score_rows(shared["pipeline"], table.slice(lo, step), labelled, shared["parts"])
           for lo in range(0, table.num_rows, step)]  # fmt: skip
    if len(out) == 1:
        return (*out[0], report)
    extra = None if out[0][2] is None else pd.concat([e for _, _, e in out], ignore_index=True)
    return table.column(ROW_ID), np.concatenate([p for _, p, _ in out]), extra, report


def start_method() -> str:
    """How scoring processes start: 'fork' on Linux (cheap: the imports are inherited), else 'spawn'
    (fork is missing on Windows and unsafe on macOS, whose system libraries may hold threads)."""
    import multiprocessing
    import sys

    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def _ready() -> int:
    if "error" in _SHARED:
        raise _SHARED["error"]
    return os.getpid()


class ProcessScorer:
    """Score the window's files in ``workers`` processes: ``with ProcessScorer(...) as s: s.scored()``.

    ``scored()`` yields (row ids, predictions, extra) per group of at most ``batch_rows`` rows
    (consecutive files, or row groups of a larger file: :func:`ltv.data.loader.file_groups`) in file
    order; each group is read, featurised and scored in one of the processes (:func:`score_rows`:
    ``labelled`` reads the labels, ``parts`` returns them with ``p_buyer`` as extra). Processes do not
    share the GIL, which threads do for the Python parts of reading and feature extraction: on 2 cores
    two processes score ~1.15x the rows per second of two threads.

    The processes start (forked on Linux, else spawned: :func:`start_method`) before anything loads
    the model here, and each loads it itself (a loaded chain is not fork-safe: XGBoost's OpenMP state
    hangs a forked child); entering waits until they have (so a throughput figure leaves the load out)
    and raises what loading raised. At most ``workers`` + 1 groups are in flight. A row_id repeated
    across groups is not dropped here (each process sees its own groups): pass the items through
    :func:`unique_rows` (as :func:`write_submission` does).
    ``scored()`` raises DataError when no row survives, like :func:`ltv.data.loader.iter_tables`.
    """

    def __init__(self, model_uri, root, subset: str, window, *, batch_rows: int, seed: int, workers: int,
                 compile_trees: bool = True, labelled: bool = False, parts: bool = False,
                 method: str | None = None):  # fmt: skip
        read = dict(subset=subset, window=window, seed=seed, batch_rows=int(batch_rows), labelled=labelled,
                    parts=parts)  # fmt: skip
        self.args = (str(model_uri), bool(compile_trees), read)
        self.method = method or start_method()
        self.root, self.subset, self.window = root, subset, window
        self.batch_rows, self.seed, self.workers = batch_rows, seed, workers

    def __enter__(self) -> ProcessScorer:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import mlflow

        from ltv.data.loader import emit_warnings, file_groups

        self.groups, self.report = file_groups(
            self.root, self.subset, self.window, self.batch_rows, seed=self.seed
        )
        self.warned: set[str] = set()
        emit_warnings(self.report, self.subset, self.warned)
        stores = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
        context = multiprocessing.get_context(self.method)
        self.pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_child_start,
                                        initargs=(*self.args, stores))  # fmt: skip
        try:
            for ready in [self.pool.submit(_ready) for _ in range(self.workers)]:
                ready.result()
        except BaseException:
            self.pool.shutdown(wait=True, cancel_futures=True)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def scored(self):
        """(row ids, predictions, extra) per group: extra as :func:`score_rows` gives it (``parts``)."""
        from ltv.data.loader import DataError, emit_warnings

        for _, (ids, pred, extra, report) in _in_order(self.pool, _score_group, self.groups, self.workers):
            emit_warnings(report, self.subset, self.warned)  # each message once per load
            self.report.merge(report)
            if ids is not None:
                yield ids, pred, extra
        summary = self.report.summary()
        log.info("stream %s %s: %s", self.subset, self.window.describe(), summary)
        if self.report.rows_kept == 0:
            raise DataError(
                f"{self.window.describe()} of {self.root}/{self.subset} has no usable row: {summary}"
            )


def _staged(pipeline, tables):
    """(table, ``pipeline.prepare(table)``) per input table (a (Table, report) pair gives its table)."""
    for table in map(_table, tables):
        yield table, pipeline.prepare(table)


def parallel_setting(value) -> str:
    """``parallel`` of the predict config: 'processes', 'threads', or 'auto' (processes where they
    fork, i.e. Linux; else threads: a spawned process imports everything and loads the model anew,
    which a short job does not win back). 'processes' works everywhere (:func:`start_method`)."""
    choice = str(value).strip().lower()
    if choice == "auto":
        return "processes" if start_method() == "fork" else "threads"
    if choice not in ("processes", "threads"):
        raise ValueError(f"parallel={value!r}: expected 'auto', 'processes' or 'threads'")
    return choice


def workers_setting(value) -> int:
    """``workers`` of the predict config: 'auto' is one per core (at most 4: memory holds workers + 1
    batches), else a positive int."""
    if str(value).strip().lower() == "auto":
        from ltv.models.compiled import cores

        return max(1, min(4, cores()))
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"workers={value!r}: expected 'auto' or a positive integer")
    return n


@contextmanager
def scored_window(cfg: DictConfig, root, split: str, *, labelled: bool = False, parts: bool = False):
    """``(items, unique_ids)`` for ``split``'s window, scored as the config says (``workers``,
    ``parallel``, ``prefetch``, ``compile_trees``, batches of ``data.batch_rows``): items are (row ids,
    predictions, extra) as :func:`score_rows` gives them; ``unique_ids`` tells :func:`unique_rows`
    whether row ids may repeat across items (they may across the groups of scoring processes). The
    processes, if any, stop when the block ends."""
    from ltv.tracking.pyfunc import load_pipeline

    subset, window = data_task.SUBSET[split], data_task.window(cfg.data, split)
    batch_rows, compile_trees = cfg.data.batch_rows, cfg.get("compile_trees", True)
    workers = workers_setting(cfg.get("workers", 1))
    if workers > 1 and parallel_setting(cfg.get("parallel", "auto")) == "processes":
        with ProcessScorer(cfg.model_uri, root, subset, window, batch_rows=batch_rows, seed=cfg.seed,
                           workers=workers, compile_trees=compile_trees, labelled=labelled,
                           parts=parts) as scorer:  # fmt: skip
            yield scorer.scored(), False
        return
    pipeline = load_pipeline(cfg.model_uri, compile_trees=compile_trees)
    tables = coalesce(iter_tables(root, subset, window, batch_rows=batch_rows, seed=cfg.seed,
                                  labelled=labelled), batch_rows)  # fmt: skip
    if parts or workers > 1:
        yield score_stream(pipeline, tables, workers, labelled, parts), True
    else:  # one batch at a time, the next one read and featurised ahead
        yield _scored(pipeline, tables, cfg.get("prefetch", 1), 1), True  # iter_tables drops repeats


def predict(cfg: DictConfig) -> Path:
    """Write the submission for ``cfg.split`` of ``cfg.data`` with the pipeline at ``cfg.model_uri``."""
    if cfg.get("keep_memory", True):
        from ltv.memory import keep_freed_memory

        keep_freed_memory()
    setup_tracking(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_root)
    root = data_task.ensure_data(cfg.data)
    with scored_window(cfg, root, cfg.split) as (items, unique_ids):
        stats = write_submission(items, cfg.output, unique_ids=unique_ids)
    print(
        f"submission: {Path(cfg.output).resolve()} ({stats['rows']} rows, {stats['rows_per_s']:.0f} rows/s)"
    )
    return Path(cfg.output)
