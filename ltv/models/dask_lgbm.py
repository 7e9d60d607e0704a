"""One LightGBM booster trained with ``lightgbm.dask`` on a Dask DataFrame, cut at its best round.

``lightgbm.dask`` cannot early-stop (LightGBM #3712, #6351): :func:`fit_dask_booster` trains the configured
``n_estimators`` against the valid rows (``eval_set``), reads the valid curve (``evals_result_``),
keeps the round count the one-process early stopping would keep (:func:`best_round`: first metric,
``early_stopping_rounds`` patience) and returns the model cut there (:func:`truncate`) as a plain
local LightGBM estimator (``to_local``), so inference, pickles and compiled trees are unchanged.

Known pitfalls handled here: each worker's partitions are concatenated where they are and empty ones
dropped (one training partition per worker); LightGBM picks its own ports (several workers share a
host); ``num_threads`` is the worker's thread count (``n_jobs`` is kept for the local model's
predictions only); the valid rows go to every training partition as one whole copy, because the
model (and its ``evals_result_``) comes back from whichever worker LightGBM calls its first, and
custom metrics score the first copy.
"""

from __future__ import annotations

import logging
import time
import uuid

import lightgbm as lgb
import numpy as np
import pandas as pd

from ltv.models import _progress

log = logging.getLogger(__name__)
TARGET_COLUMN, WEIGHT_COLUMN = "__ltv_target", "__ltv_weight"  # a booster frame's target and weight
_HIGHER_BETTER = ("auc", "average_precision", "ndcg", "map")  # LightGBM's maximised metrics


# ---- the round count ------------------------------------------------------------------------------
def best_round(curve, patience: int | None, higher_better: bool = False) -> int:
    """Rounds (1-based) LightGBM's early stopping would keep on the valid ``curve`` of its first metric:
    the best round seen before ``patience`` rounds pass without a strict improvement (the whole curve's
    best without ``patience``)."""
    curve = list(curve)
    if not curve:
        raise ValueError("best_round needs a non-empty valid curve")
    best, best_i = curve[0], 0
    for i, value in enumerate(curve[1:], start=1):
        if (value > best) if higher_better else (value < best):
            best, best_i = value, i
        elif patience and i - best_i >= int(patience):
            break
    return best_i + 1


def truncate(model, rounds: int):
    """``model`` (a fitted local LightGBM estimator) cut to its first ``rounds`` trees: ``predict``
    then equals ``predict(num_iteration=rounds)`` of the uncut model."""
    booster = model.booster_
    if int(rounds) < booster.current_iteration():
        model._Booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=int(rounds)))
    return model


# ---- one booster on the cluster ------------------------------------------------------------------
def _local_parts(frame, client):
    """``frame`` persisted, as one partition per worker that holds rows (each worker's partitions
    concatenated where they are), and its row count."""
    from distributed import wait

    futures = client.compute(frame.to_delayed())  # one future per partition, computed where its inputs are
    wait(futures)
    sizes = client.gather(client.map(len, futures, pure=False))
    holders = client.who_has(futures)
    groups: dict[str, list] = {}
    for future, n in zip(futures, sizes, strict=True):
        if n:
            groups.setdefault(next(iter(holders[future.key])), []).append(future)
    if not groups:
        raise ValueError("no training rows left for a booster (every partition is empty)")
    parts = [
        client.submit(pd.concat, fs, workers=[w], allow_other_workers=False, pure=False)
        for w, fs in groups.items()
    ]
    import dask.dataframe as dd

    return dd.from_delayed(parts, meta=frame._meta, verify_meta=False), int(sum(sizes))


def _copies(client, data, n: int):
    """``n`` partitions, each the whole of ``data`` (a frame or series, broadcast to every worker)."""
    import dask.dataframe as dd

    future = client.scatter(data, broadcast=True, hash=False)
    return dd.from_delayed([future] * n, meta=data.iloc[:0], verify_meta=False)


def _first_copy(feval, n: int):
    """A custom metric over the first of the worker's copies of the eval rows (see :func:`_copies`)."""

    def metric(y_true, y_pred):
        return feval(np.asarray(y_true)[:n], np.asarray(y_pred)[:n])

    metric.__name__ = getattr(feval, "__name__", "metric")
    return metric


class _WorkerRounds:
    """LightGBM callback for a ``lightgbm.dask`` fit: where the rounds run (each worker), it sends the round
    and the first valid metric to the client as a Dask event (``Worker.log_event`` on ``topic``) at most
    every ``every_s`` seconds and at the last round; the client's handler (:func:`_follow_rounds`) puts
    them in the running fit stage, whose progress line then reads as a one-process booster's."""

    order = 5

    def __init__(self, topic: str, every_s: float = 1.0):
        self.topic, self.every_s, self._last = topic, float(every_s), 0.0

    def __call__(self, env) -> None:
        now = time.monotonic()
        last_round = env.iteration + 1 >= env.end_iteration
        if now - self._last < self.every_s and not last_round:
            return
        self._last = now
        from distributed import get_worker

        get_worker().log_event(
            self.topic,
            {"round": env.iteration + 1, "total": env.end_iteration, "valid": _progress.valid_text(env)},
        )


def _follow_rounds(client, entry):
    """(callbacks for the fit, a function that stops following): the workers' round events go into the
    fit stage ``entry`` (``ltv.models._progress``) of this process, or nowhere outside a chain fit."""
    if entry is None:
        return [], lambda: None
    topic = f"ltv-rounds-{uuid.uuid4().hex}"

    def handler(event):
        msg = event[1]
        entry.round, entry.total = max(entry.round or 0, int(msg["round"])), int(msg["total"])
        entry.valid = msg["valid"] or entry.valid

    client.subscribe_topic(topic, handler)
    return [_WorkerRounds(topic)], lambda: client.unsubscribe_topic(topic)


def fit_dask_booster(factory, params: dict, frame, eval_set=None, patience=None, eval_metric=None):
    """Fit ``factory(**params)`` (``lightgbm.DaskLGBMClassifier`` / ``DaskLGBMRegressor``) on ``frame``
    (features plus :data:`TARGET_COLUMN` and :data:`WEIGHT_COLUMN`, a Dask DataFrame on the default
    client's cluster) and return ``(local model cut at its best round, that round count)``.

    ``eval_set`` = ``(X_es, y_es)`` in memory, or None (every round is kept); ``patience``: the
    booster's ``early_stopping_rounds`` (None keeps every round); ``eval_metric``: custom metrics, as
    the one-process fit passes them.
    """
    from distributed import default_client

    client = default_client()
    params = dict(params)
    n_jobs = params.pop("n_jobs", None)  # lightgbm.dask sets num_threads to each worker's threads
    estimator = factory(client=client, **params)
    frame, rows = _local_parts(frame, client)
    X, y, w = frame.drop(columns=[TARGET_COLUMN, WEIGHT_COLUMN]), frame[TARGET_COLUMN], frame[WEIGHT_COLUMN]
    kwargs = {}
    if eval_set is not None:
        X_es, y_es = eval_set[0][list(X.columns)], pd.Series(np.asarray(eval_set[1], dtype=np.float64))
        n = frame.npartitions
        kwargs = {
            "eval_X": (_copies(client, X_es, n),),
            "eval_y": (_copies(client, y_es, n),),
            "eval_names": ["valid"],
        }
        if eval_metric is not None:
            kwargs["eval_metric"] = [_first_copy(m, len(X_es)) for m in eval_metric]
    started = time.perf_counter()
    log.info("lightgbm.dask: %d rounds on %s rows in %d partitions", estimator.n_estimators, f"{rows:,}",
             frame.npartitions)  # fmt: skip
    callbacks, stop_following = _follow_rounds(client, _progress.current_stage())
    try:
        estimator.fit(X, y, sample_weight=w, callbacks=callbacks, **kwargs)
    finally:
        stop_following()
    seconds = time.perf_counter() - started
    log.info("lightgbm.dask: %s rows x %d rounds in %.1f s (%s rows/s)", f"{rows:,}", estimator.n_estimators,
             seconds, f"{rows / max(seconds, 1e-9):,.0f}")  # fmt: skip
    model = estimator.to_local()
    if n_jobs is not None:
        model.set_params(n_jobs=n_jobs)  # predictions use the configured threads, as in process
    rounds = int(model.booster_.current_iteration())
    if eval_set is not None and patience:
        results = estimator.evals_result_.get("valid") or {}
        if not results:
            raise RuntimeError(
                "lightgbm.dask returned no valid curve (evals_result_) to pick the round count"
            )
        metric, curve = next(iter(results.items()))
        rounds = best_round(curve, patience, metric.startswith(_HIGHER_BETTER))
    return truncate(model, rounds), rounds
