"""The predict side of every LightGBM booster: the input matrix, threads, compiled trees (the fit side is
:mod:`ltv.models.booster`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ltv.frames import column_run
from ltv.models import compiled


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


def pandas_matrix(X, features, categories) -> np.ndarray:
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
    matrix = np.empty((len(X), len(features)), dtype=dtype, order="F")  # owns its memory (no view's base)
    out = matrix.T
    if numeric:
        block = column_run(X, pos[numeric]).to_numpy(dtype=dtype, na_value=np.nan).T
        prefix = numeric == list(range(len(numeric)))  # the usual layout: categoricals last
        out[slice(0, len(numeric)) if prefix else numeric] = block
    for k, j in enumerate(cat_pos):
        col = X[features[j]].array  # the Categorical
        if categories is not None and col.categories.tolist() != list(categories[k]):
            col = col.set_categories(categories[k])
        out[j] = np.where(col.codes < 0, np.nan, col.codes)
    return matrix


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
    matrix = pandas_matrix(X, features, categories)
    if cache is not None:
        cache.append(("matrix", list(features), categories, matrix))
    return matrix


def matrix_cache(matrix) -> list:
    """A per-call cache for :func:`lgbm_matrix` that starts with ``matrix`` (an ``ltv.frames.FloatMatrix``
    made with the frame, or None): boosters trained on exactly its columns and categories take it as it
    is, being what :func:`_pandas_matrix` would build for them."""
    return [] if matrix is None else [("matrix", matrix.columns, matrix.categories, matrix.values)]


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
