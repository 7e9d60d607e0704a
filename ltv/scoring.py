"""Score a window with the registered pipeline, on the engine of :mod:`ltv.cluster`.

The window's files are cut into groups of at most ``batch_rows`` rows (:func:`ltv.data.groups.file_groups`:
whole files, or runs of row groups of a larger file); each group is one task that reads, validates,
featurises and scores its rows where it runs, and returns only row ids, predictions and (for metrics) the
labels and buyer probability. The model is loaded once per process (:func:`pipeline_for`), not per task.
Results come back in file order; a row_id seen in an earlier group is dropped (:func:`unique_rows`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ltv.cluster import stage
from ltv.contract import LABEL_COLUMNS, ROW_ID, TARGET
from ltv.data.groups import file_groups, read_group
from ltv.data.loader import DataError, Window, emit_warnings
from ltv.data.schema import SeenRowIds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scoring:
    """What a scoring task needs besides its file group (small: it travels with every task)."""

    model_uri: str
    stores: tuple[str, str]  # MLflow tracking and registry URIs (a worker starts without them)
    subset: str
    window: Window
    seed: int = 0
    batch_rows: int = 50_000
    labelled: bool = False  # read (and return) the label columns
    parts: bool = False  # return labels, p_buyer and the predictive distribution beside the prediction
    compile_trees: bool = True
    keep_memory: bool = False


_MODELS: OrderedDict = OrderedDict()  # per process: (model_uri, compile_trees, stores) -> pipeline
_MODELS_LOCK = threading.Lock()
_KEEP = 2  # pipelines a long-lived worker keeps (the least recently used one goes)


def _in_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def pipeline_for(spec: Scoring):
    """The pipeline at ``spec.model_uri``, loaded once per process (a per-process cache keyed by the URI)."""
    key = (spec.model_uri, spec.compile_trees, spec.stores)
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        import mlflow

        from ltv.tracking.pyfunc import load_pipeline

        if spec.keep_memory:
            from ltv.memory import keep_freed_memory

            keep_freed_memory()
        mlflow.set_tracking_uri(spec.stores[0])
        mlflow.set_registry_uri(spec.stores[1])
        started = time.perf_counter()
        _MODELS[key] = load_pipeline(spec.model_uri, compile_trees=spec.compile_trees)
        log.info("loaded %s in %.1fs", spec.model_uri, time.perf_counter() - started)
        while len(_MODELS) > _KEEP:
            _MODELS.popitem(last=False)
        return _MODELS[key]


def score_rows(pipeline, table: pa.Table, labelled: bool = False, parts: bool = False) -> tuple:
    """(row ids, predictions, extra) of one validated table. With ``parts``, extra is a DataFrame of
    the table's label columns (float64; ``labelled`` tables) and ``p_buyer``, the calibrated buyer
    probability, from the same pass over the chain (for metrics); else None."""
    ids = table.column(ROW_ID)
    # in a Dask worker the compiled trees score on the task's own thread (the workers fill the cores); in
    # the calling process (cluster=sync) they use every core
    threads = 1 if _in_worker() else None
    if not parts:
        return ids, pipeline.predict(table, threads=threads), None
    from ltv.pipeline import prediction_and_buyer

    label_cols = [c for c in LABEL_COLUMNS if c in table.column_names] if labelled else []
    extra = pd.DataFrame(
        {c: table.column(c).to_numpy().astype(np.float64) for c in label_cols}, index=pd.RangeIndex(len(ids))
    )
    parts = pipeline.predict_parts(table.drop_columns(label_cols), threads=threads)
    pred, p_buyer = prediction_and_buyer(parts)
    if p_buyer is not None:
        extra["p_buyer"] = p_buyer
    # the predictive distribution (objective=revenue), and its PIT where the revenue is known
    dist = [c for c in parts.columns if c == "expected_revenue" or c.startswith(("q", "p_over_"))]
    extra = extra.assign(**{c: parts[c].to_numpy() for c in dist})
    if TARGET in extra:
        pit = pipeline.model.spend_pit(parts, extra[TARGET].to_numpy())
        if pit is not None:
            extra["pit"] = pit
    return ids, pred, extra


def score_group(group: list, spec: Scoring) -> tuple:
    """One task: read a file group and score it ``batch_rows`` rows at a time (a group is larger only
    when one row group is); (row ids, predictions, extra, report), the first three None when no row of
    the group survives validation."""
    table, report = read_group(group, spec.subset, spec.window, seed=spec.seed, labelled=spec.labelled)
    if table is None:
        return None, None, None, report
    pipeline, step = pipeline_for(spec), spec.batch_rows
    out = [score_rows(pipeline, table.slice(lo, step), spec.labelled, spec.parts)
           for lo in range(0, table.num_rows, step)]  # fmt: skip
    if len(out) == 1:
        return (*out[0], report)
    extra = None if out[0][2] is None else pd.concat([e for _, _, e in out], ignore_index=True)
    return table.column(ROW_ID), np.concatenate([p for _, p, _ in out]), extra, report


def _load(spec: Scoring) -> None:
    pipeline_for(spec)


def describe_group(group: list) -> str:
    """'file group <first file> (+N parts)' for error messages."""
    hour, path, row_groups = group[0]
    more = f" (+{len(group) - 1} more parts)" if len(group) > 1 else ""
    where = "" if row_groups is None else f" row groups {row_groups[0]}-{row_groups[1] - 1}"
    return f"file group {path}{where}{more}"


def resolve_model_uri(model_uri: str) -> str:
    """``models:/name@alias`` as the version it points at now (``models:/name/3``): every worker loads
    the same version even if the alias moves meanwhile, and a missing model fails here, before any
    task runs. Other URIs are returned as they are."""
    uri = str(model_uri)
    if not uri.startswith("models:/") or "@" not in uri:
        return uri
    import mlflow

    name, alias = uri[len("models:/") :].split("@", 1)
    version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
    return f"models:/{name}/{version}"


def scored_window(engine, root, spec: Scoring):
    """(row ids, predictions, extra) per file group of ``spec``'s window, in file order, scored on
    ``engine`` (:meth:`ltv.cluster.Engine.map`). Returns once every worker has loaded the model (so a
    rate measured over the iteration leaves the load out); loader warnings are emitted once per load,
    the load report is logged at the end, and DataError is raised when no row survives."""
    groups, report = file_groups(root, spec.subset, spec.window, spec.batch_rows, seed=spec.seed)
    with stage("load model"):
        engine.each_worker(_load, spec)
    return _collect(engine.map(score_group, groups, spec=spec, name=describe_group), report, root, spec)


def _collect(results, report, root, spec: Scoring):
    warned: set[str] = set()
    emit_warnings(report, spec.subset, warned)
    for ids, pred, extra, part in results:
        emit_warnings(part, spec.subset, warned)  # each message once per load
        report.merge(part)
        if ids is not None:
            yield ids, pred, extra
    summary = report.summary()
    log.info("scored %s %s: %s", spec.subset, spec.window.describe(), summary)
    if report.rows_kept == 0:
        raise DataError(f"{spec.window.describe()} of {root}/{spec.subset} has no usable row: {summary}")


def unique_rows(scored, counts: dict, log_every_s: float = 10.0):
    """The ``(row_ids, predictions, *extra)`` items of ``scored`` with every row_id seen in an earlier
    item dropped (its first prediction wins; ``extra`` DataFrames are filtered alike); a progress line
    (rows, rows/s) every ``log_every_s``. ``counts`` gets rows, duplicates, seconds and rows_per_s,
    final when the iteration ends."""
    seen = SeenRowIds()
    counts.update(rows=0, duplicates=0, seconds=0.0, rows_per_s=0.0)
    t0 = last = time.perf_counter()
    for ids, pred, *extra in scored:
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
