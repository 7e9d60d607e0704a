"""The fit side of every LightGBM booster (the predict side is :mod:`ltv.models.lgbm_predict`): an ``lgbm``
mapping passed through, binned Datasets, early stopping, input checks.

Each booster estimator (``BuyerClassifier``, ``WhaleClassifier``, ``RevenueRegressor``) takes its LightGBM
parameters as one ``lgbm`` mapping, handed to LightGBM unchanged (LightGBM's names or the sklearn aliases it
accepts); our own keys (early stopping, calibration, horizons, ...) are the estimator's other parameters.
Defaults have one home: the code's are neutral (``lgbm=None``: LightGBM's own defaults;
``early_stopping_rounds=None``: no early stopping), every chosen value lives in ``conf/``.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from ltv.models.blocks import Blocks, dataset
from ltv.models.fitting import booster_callbacks, fit_threads

# One LightGBM Dataset construction at a time in a process. Two concurrent fits (``train.concurrent_fits``)
# that built their Datasets at the same moment crashed the process (SIGSEGV inside LightGBM's
# ``__init_from_np2d`` on both threads, about one run in four of the multirun test); the boosting rounds,
# where the time goes, still run side by side.
_CONSTRUCTING = threading.Lock()


class _Constructed:
    """LightGBM callback that runs before the first round, once every Dataset of the fit (train and
    valid) is built, and releases :data:`_CONSTRUCTING`."""

    before_iteration = True
    order = 0  # before any other callback

    def __init__(self):
        _CONSTRUCTING.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            _CONSTRUCTING.release()

    def __call__(self, env) -> None:
        self.release()


class LGBMEstimator(BaseEstimator):
    """An sklearn estimator (``get_params`` / ``set_params`` over its ``__init__`` keywords) one of whose
    parameters, ``lgbm``, is the mapping of LightGBM parameters of its booster(s)."""

    def lgbm_params(self, **fixed) -> dict:
        """The ``lgbm`` mapping (verbose quiet unless it says otherwise) with ``fixed`` (what the estimator
        itself decides, e.g. the objective) as the defaults it may override."""
        return {"verbose": -1, **fixed, **(self.lgbm or {})}

    @property
    def predict_jobs(self):
        """Threads a large predict call uses: the mapping's ``n_jobs`` (None: every core)."""
        return (self.lgbm or {}).get("n_jobs")


def append_eval_rows(X, X_eval, sample_weight=None):
    """(train + eval rows in X's column order, their weights) for a refit; eval rows weigh 1."""
    if isinstance(X, Blocks):
        X_all = X.concat(X_eval)
    else:
        cols = list(X.columns)
        X_all = pd.concat([X[cols], X_eval[cols]], ignore_index=True)
    if sample_weight is None:
        return X_all, None
    return X_all, np.concatenate([np.asarray(sample_weight, dtype=np.float64), np.ones(len(X_eval))])


class Trained(NamedTuple):
    """What :func:`fit_booster` returns: the LightGBM ``Booster``, the rounds to predict with and the valid
    curves (``{"valid": {metric: [value per round]}}``; empty without an eval set)."""

    booster: lgb.Booster
    rounds: int
    evals: dict


def _feval(fn):
    """A ``(y_true, y_pred) -> (name, value, higher_is_better)`` metric as LightGBM's ``feval``."""
    return lambda preds, data: fn(data.get_label(), preds)


def fit_booster(params: dict, X, y, sample_weight=None, eval_set=None, early_stopping_rounds=None,
                eval_metric=None) -> Trained:  # fmt: skip
    """Train a LightGBM booster with ``params`` (LightGBM's names or the sklearn aliases it accepts:
    ``n_estimators``, ``random_state``, ``n_jobs``, ``class_weight``, ...) on model matrix ``X``: a pandas
    frame or :class:`ltv.models.blocks.Blocks` (binned batch by batch, never one float matrix),
    early-stopping on ``eval_set = (X_es, y_es)`` (first metric only) if given. Blocks bound to a cluster
    (``Blocks.on``, ``train.distributed=true``) are trained by its workers, each on its share
    (:mod:`.cluster_training`), with this same :func:`train_dataset`.

    ``eval_metric``: ``(y_true, y_pred) -> (name, value, higher_is_better)`` callables (the metrics then
    are these only, whatever ``params`` names).
    """
    params = {"verbose": -1, **params}
    rounds = int(params.pop("n_estimators", 100))
    params.pop("importance_type", None)  # the sklearn wrapper's own keys: no LightGBM parameter
    class_weight = params.pop("class_weight", None)
    if class_weight is not None:  # as LightGBM's sklearn wrapper does: folded into the row weights
        from sklearn.utils.class_weight import compute_sample_weight

        cw = compute_sample_weight(class_weight, y)
        sample_weight = cw if sample_weight is None else np.asarray(sample_weight, dtype=np.float64) * cw
    patience = int(early_stopping_rounds) if eval_set is not None and early_stopping_rounds else None
    feval = None
    if eval_metric is not None:
        params["metric"] = "None"
        feval = [_feval(fn) for fn in (eval_metric if isinstance(eval_metric, list) else [eval_metric])]
    args = (X, y, sample_weight, None, eval_set, None, patience, feval)
    client = getattr(X, "client", None)
    if client is not None:  # train.distributed: the cluster's workers train it, each on its share
        from ltv.models.cluster_training import fit_on_cluster

        booster, evals = fit_on_cluster(train_dataset, client, params, rounds, *args)
    else:
        threads = fit_threads()  # one of several concurrent fits: its share of the cores
        if threads is not None:
            params["n_jobs"] = threads
        booster, evals = train_dataset(params, rounds, *args, booster_callbacks(rounds))
    booster.pandas_categorical = _categories(X)  # predictions re-code a frame of other categories as before
    best = booster.best_iteration if patience else 0
    return Trained(booster, int(best) if best else rounds, evals)


def train_dataset(params: dict, rounds: int, X, y, sample_weight, init_score, eval_set, eval_init_score,
                  patience: int | None, feval, callbacks: list) -> tuple[lgb.Booster, dict]:  # fmt: skip
    """LightGBM's binned Datasets of X (and of the eval set, by X's bin mappers), then ``lightgbm.train``:
    ``rounds`` at most, early-stopped after ``patience`` rounds without improvement of the first metric
    (None: every round). Returns the booster and its valid curves."""
    train = dataset(X, y, sample_weight, params=params, init_score=init_score)
    valid_sets, evals, callbacks = [], {}, list(callbacks)
    if patience:
        valid_sets = [
            dataset(eval_set[0], eval_set[1], reference=train, params=params, init_score=eval_init_score)
        ]
        callbacks.append(lgb.early_stopping(patience, first_metric_only=True, verbose=False))
        callbacks.append(lgb.record_evaluation(evals))
    constructed = _Constructed()
    try:
        if valid_sets and sample_weight is not None:
            _unit_weights(train, valid_sets[0])
        booster = lgb.train(params, train, num_boost_round=rounds, valid_sets=valid_sets,
                            valid_names=["valid"] * len(valid_sets), feval=feval,
                            callbacks=[constructed, *callbacks])  # fmt: skip
    finally:
        constructed.release()  # a fit that failed before its first round
    return booster, evals


def _unit_weights(train: lgb.Dataset, valid: lgb.Dataset) -> None:
    """Give the valid rows weight 1 when the train rows have weights. A valid Dataset binned by reference
    from ``lightgbm.Sequence`` batches gets the train set's weight field zero-filled, and its loss is NaN;
    ``set_weight`` of all ones is a no-op by design, so the field is written directly."""
    train.construct()
    valid.construct()
    valid.set_field("weight", np.ones(valid.num_data(), dtype=np.float32))


def _categories(X) -> list[list] | None:
    if isinstance(X, Blocks):
        return [list(c) for c in X.categories] or None
    if not isinstance(X, pd.DataFrame):
        return None
    cats = [list(X[c].cat.categories) for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    return cats or None
