"""Shared LightGBM plumbing: keyword pass-through, early stopping, fixed-iteration clones."""

from __future__ import annotations

import inspect

import lightgbm as lgb
import numpy as np
import pandas as pd

from ltv.frames import column_run
from ltv.models import _parallel, _progress, compiled

# LightGBM 4.7 deprecates eval_set in favour of eval_X / eval_y; older 4.x only knows eval_set
_EVAL_XY = "eval_X" in inspect.signature(lgb.LGBMModel.fit).parameters
# keys of our estimators that are not LightGBM parameters
_OWN_KEYS = {"early_stopping_rounds", "calibration", "horizons"}


class LGBMParamsMixin:
    """sklearn-style ``get_params`` over the explicit ``__init__`` keywords plus ``**kwargs``."""

    def get_params(self, deep: bool = False) -> dict:
        names = [
            p.name
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
        ]
        params = {n: getattr(self, n) for n in names if n != "self"}
        params.update(getattr(self, "kwargs", {}))
        return params

    def set_params(self, **params):
        for key, value in params.items():
            if hasattr(self, key) and key != "kwargs":
                setattr(self, key, value)
            else:
                self.kwargs[key] = value
        return self

    def lgbm_kwargs(self, exclude=()) -> dict:
        """Parameters for the LightGBM sklearn estimator (ours removed, verbose quiet by default)."""
        params = {k: v for k, v in self.get_params().items() if k not in _OWN_KEYS | set(exclude)}
        params.setdefault("verbose", -1)
        return params

    def fixed_clone(self):
        """Unfitted copy that trains exactly ``best_iteration_`` rounds with no early stopping.

        Used for cross-fitted (out-of-fold) copies: the round count was chosen on the valid window.
        """
        params = self.get_params()
        params["n_estimators"] = int(getattr(self, "best_iteration_", params["n_estimators"]))
        params["early_stopping_rounds"] = None
        return type(self)(**params)


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
    try:
        model.fit(X, y, sample_weight=sample_weight, callbacks=callbacks, **kwargs)
    finally:
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


def binary_label(y, name: str = "y") -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be a 0/1 label")
    return y


# ---- prediction ------------------------------------------------------------------------------------
def predict_threads(n_rows: int, n_jobs) -> int:
    """Thread count of one predict call: 1 for a batch of at most one chunk of the compiled trees
    (``compiled.CHUNK_ROWS``): starting (and spinning) OpenMP / joblib workers costs ~8-25 ms CPU per
    call, far more than scoring a few rows; else ``n_jobs`` (0 = the library default). Threads never
    change values."""
    if n_rows <= compiled.CHUNK_ROWS:
        return 1
    return int(n_jobs) if n_jobs is not None and int(n_jobs) > 0 else 0


_EXACT_IN_FLOAT32 = {np.dtype(t) for t in ("float32", "float16", "int8", "int16", "uint8", "uint16", "bool")}


def _pandas_matrix(X, features, categories) -> np.ndarray:
    """What ``lightgbm.basic._data_from_pandas`` builds: category columns become their codes under the
    training categories (unknown / missing -> NaN; a column whose categories differ is re-coded with
    ``set_categories``, as LightGBM does), the rest their values. The numeric columns are read as one
    block (one ``to_numpy``, a view when they are adjacent in one pandas block) instead of LightGBM's
    per-column ``apply`` (~15 ms for 300 columns), for any number of rows.

    dtype: float32 when every numeric column is float32 or a narrower int / bool (the usual feature
    matrix: half the memory traffic), else float64. Both hold every source value exactly and the C++
    side reads each value as a double, so the predictions equal those of LightGBM's own conversion.
    """
    if X.columns.tolist() == list(features):  # the usual frame: the model's own columns, in order
        pos = np.arange(len(features))
    else:
        pos = X.columns.get_indexer(pd.Index(features, dtype=object))
    if (pos < 0).any():
        raise KeyError(f"{[f for f, p in zip(features, pos, strict=True) if p < 0][:5]} not in the frame")
    dtypes = X.dtypes.to_numpy()[pos]
    is_cat = [isinstance(d, pd.CategoricalDtype) for d in dtypes]
    if categories is not None and sum(is_cat) != len(categories):
        from lightgbm.basic import _data_from_pandas  # raises LightGBM's own error message

        return _data_from_pandas(X[features], "auto", "auto", categories)[0]
    numeric = [j for j, cat in enumerate(is_cat) if not cat]
    cat_pos = [j for j, cat in enumerate(is_cat) if cat]
    exact32 = all(dtypes[j] in _EXACT_IN_FLOAT32 for j in numeric)
    n_codes = [len(dtypes[j].categories) for j in cat_pos] + [len(c) for c in categories or []]
    dtype = np.float32 if exact32 and max(n_codes, default=0) < 2**24 else np.float64
    # built transposed (one contiguous row per feature) and returned as its column-major view, which
    # LightGBM reads without a copy
    out = np.empty((len(features), len(X)), dtype=dtype)
    if numeric:
        block = column_run(X, pos[numeric]).to_numpy(dtype=dtype, na_value=np.nan).T
        prefix = numeric == list(range(len(numeric)))  # the usual layout: categoricals last
        out[slice(0, len(numeric)) if prefix else numeric] = block
    for k, j in enumerate(cat_pos):
        col = X[features[j]].array  # the Categorical
        if categories is not None and col.categories.tolist() != list(categories[k]):
            col = col.set_categories(categories[k])
        out[j] = np.where(col.codes < 0, np.nan, col.codes)
    return out.T


def lgbm_matrix(X, features, booster, cache: list | None = None) -> np.ndarray:
    """``X[features]`` as the float matrix LightGBM's own pandas path builds (same category codes).

    ``cache`` (a list owned by one predict call) reuses the matrix across boosters trained on the same
    columns and categories, so a chain converts its input once instead of once per booster. Compiled
    trees read the same matrix (:func:`compiled.predict_many` casts it chunk by chunk).
    """
    categories = booster.pandas_categorical
    if cache is not None:
        for entry in cache:
            if entry[0] == "matrix" and entry[1] == features and entry[2] == categories:
                return entry[3]
    matrix = _pandas_matrix(X, features, categories)
    if cache is not None:
        cache.append(("matrix", list(features), categories, matrix))
    return matrix


def _cached_scores(cache: list | None, booster, num_iteration):
    """Scores :func:`prefetch_scores` left in ``cache`` for ``booster`` at ``num_iteration``, or None."""
    rounds = None
    for entry in cache or ():
        if entry[0] == "scores" and entry[1] is booster:
            rounds = compiled.rounds_of(booster, num_iteration) if rounds is None else rounds
            if entry[2] == rounds:
                return entry[3]
    return None


def prefetch_scores(X, requests, cache: list) -> None:
    """Score every compiled booster of ``requests`` (``(booster, num_iteration, features)``) in one pass
    per input matrix and keep the scores in ``cache``, where :func:`booster_predict` finds them.

    A chain's first stage runs ~10 boosters on the same rows: one pass converts each chunk of rows to
    the trees' input once and runs them all while it is in the CPU cache, instead of ~10 passes over
    the batch. The scores are the ones each booster would give alone (same code, same chunks).
    Boosters that are not compiled are left to their own calls.
    """
    groups: list[tuple[np.ndarray, list, list]] = []  # per distinct input matrix (one per column set)
    for booster, num_iteration, features in requests:
        native = compiled.lookup(booster, num_iteration)
        if native is None or _cached_scores(cache, booster, num_iteration) is not None:
            continue
        rounds = compiled.rounds_of(booster, num_iteration)
        data = lgbm_matrix(X, features, booster, cache)
        group = next((g for g in groups if g[0] is data), None)
        if group is None:
            group = (data, [], [])
            groups.append(group)
        _, models, keys = group
        if (booster, rounds) not in keys:
            models.append(native)
            keys.append((booster, rounds))
    for data, models, keys in groups:
        threads = predict_threads(len(data), 0)
        for (booster, rounds), scores in zip(keys, compiled.predict_many(models, data, threads), strict=True):
            cache.append(("scores", booster, rounds, scores))


def booster_predict(model, X, features, num_iteration, cache: list | None = None) -> np.ndarray:
    """``model.predict`` (regressor) / ``predict_proba[:, 1]`` (binary classifier) of a fitted LightGBM
    sklearn estimator, without the per-call DataFrame conversion and thread start-up: bit-identical, or
    equal up to float64 summation order (~1e-14) where the booster was compiled (:mod:`compiled`)."""
    booster = model.booster_
    done = _cached_scores(cache, booster, num_iteration)
    if done is not None:
        return done
    data = lgbm_matrix(X, features, booster, cache)
    threads = predict_threads(len(data), getattr(model, "n_jobs", None))
    return matrix_predict(booster, data, num_iteration, threads)


def matrix_predict(booster, data: np.ndarray, num_iteration, threads: int) -> np.ndarray:
    """``booster.predict(data, ...)``, by its compiled native code when :mod:`ltv.models.compiled` has it."""
    native = compiled.lookup(booster, num_iteration)
    if native is not None:
        return compiled.predict(native, data, threads)
    return booster.predict(data, num_iteration=num_iteration, num_threads=threads)
