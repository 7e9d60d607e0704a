"""The fit side of every LightGBM estimator: a ``booster:`` mapping passed through, early stopping,
fixed-round clones, input checks.

Each booster estimator (``BuyerClassifier``, ``RevenueRegressor``, ``WhaleClassifier``) takes its LightGBM
parameters as one ``booster`` mapping, handed to LightGBM's sklearn estimator unchanged (as that wrapper
does with ``**kwargs``); our own keys (early stopping, calibration, horizons, ...) are the estimator's
other parameters. Defaults have one home: the code's are neutral (``booster=None``: LightGBM's own
defaults; ``early_stopping_rounds=None``: no early stopping), every chosen value lives in ``conf/``.
"""

from __future__ import annotations

import inspect
import threading

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from ltv.models import _parallel, _progress

# LightGBM 4.7 deprecates eval_set in favour of eval_X / eval_y; older 4.x only knows eval_set
_EVAL_XY = "eval_X" in inspect.signature(lgb.LGBMModel.fit).parameters

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


class BoosterParams(BaseEstimator):
    """An sklearn estimator (``get_params`` / ``set_params`` over the ``__init__`` keywords) one of whose
    parameters is the ``booster`` mapping of LightGBM parameters (:meth:`lgbm_kwargs`)."""

    def lgbm_kwargs(self, exclude=()) -> dict:
        """The LightGBM parameters of this estimator's booster(s): the ``booster`` mapping (verbose quiet
        unless it says otherwise), less the keys in ``exclude``."""
        params = {"verbose": -1, **(self.booster or {})}
        return {k: v for k, v in params.items() if k not in set(exclude)}

    def fixed_clone(self):
        """Unfitted copy that trains exactly ``best_iteration_`` rounds with no early stopping.

        Used for cross-fitted (out-of-fold) copies: the round count was chosen on the valid window.
        """
        params = self.get_params()
        booster = dict(params["booster"] or {})
        booster["n_estimators"] = int(getattr(self, "best_iteration_", booster.get("n_estimators", 100)))
        return type(self)(**{**params, "booster": booster, "early_stopping_rounds": None})


def append_eval_rows(X, X_eval, sample_weight=None):
    """(train + eval rows in X's column order, their weights) for a refit; eval rows weigh 1."""
    cols = list(X.columns)
    X_all = pd.concat([X[cols], X_eval[cols]], ignore_index=True)
    if sample_weight is None:
        return X_all, None
    return X_all, np.concatenate([np.asarray(sample_weight, dtype=np.float64), np.ones(len(X_eval))])


def fit_booster(model, X, y, sample_weight=None, eval_set=None, early_stopping_rounds=None, eval_metric=None,
                init_score=None, eval_init_score=None):  # fmt: skip
    """Fit a LightGBM sklearn estimator, early-stopping on ``eval_set`` (first metric only) if given.

    ``init_score`` / ``eval_init_score``: a base prediction the boosting corrects (raw score scale).
    Returns the number of boosting rounds to use at prediction time.
    """
    stopping = eval_set is not None and bool(early_stopping_rounds)
    callbacks = _progress.booster_callbacks(model.n_estimators, stopping)
    kwargs = {} if init_score is None else {"init_score": init_score}
    if stopping:
        callbacks.append(
            lgb.early_stopping(int(early_stopping_rounds), first_metric_only=True, verbose=False)
        )
        if _EVAL_XY:
            kwargs["eval_X"], kwargs["eval_y"] = (eval_set[0],), (eval_set[1],)
        else:
            kwargs["eval_set"] = [eval_set]
        if eval_metric is not None:
            kwargs["eval_metric"] = eval_metric
        if eval_init_score is not None:
            kwargs["eval_init_score"] = [eval_init_score]
    threads = _parallel.fit_threads()  # one of several concurrent fits: its share of the cores
    n_jobs = model.get_params()["n_jobs"]
    if threads is not None:
        model.set_params(n_jobs=threads)
    constructed = _Constructed()
    try:
        model.fit(X, y, sample_weight=sample_weight, callbacks=[constructed, *callbacks], **kwargs)
    finally:
        constructed.release()  # a fit that failed before its first round
        model.set_params(n_jobs=n_jobs)  # prediction keeps the configured threads
    best = getattr(model, "best_iteration_", None)
    return int(best) if best else int(model.n_estimators)


def check_frame(X, name: str = "X"):
    """Reject empty input and non-frame objects early, with a message naming the argument."""
    if not hasattr(X, "iloc") or not hasattr(X, "columns"):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(X).__name__}")
    if len(X) == 0:
        raise ValueError(f"{name} has no rows")
    return X
