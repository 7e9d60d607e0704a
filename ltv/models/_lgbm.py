"""The predict side of every LightGBM booster: the input matrix, threads, compiled trees (the fit side is
:mod:`ltv.models.booster`)."""

from __future__ import annotations

import numpy as np

# ---- prediction fast path ---------------------------------------------------------------------------
# Below this many rows every predict call runs on one thread: starting (and spinning) OpenMP / joblib
# workers costs ~8-25 ms CPU per call, far more than scoring a few rows. Threads never change values.
SMALL_BATCH_ROWS = 2000


def predict_threads(n_rows: int, n_jobs) -> int:
    """Thread count for one predict call: 1 for small batches, else ``n_jobs`` (0 = library default)."""
    if n_rows < SMALL_BATCH_ROWS:
        return 1
    return int(n_jobs) if n_jobs is not None and int(n_jobs) > 0 else 0


_EXACT_IN_FLOAT32 = {np.dtype(t) for t in ("float32", "float16", "int8", "int16", "uint8", "uint16", "bool")}


def _pandas_matrix(X, features, categories) -> np.ndarray:
    """What ``lightgbm.basic._data_from_pandas`` builds: category columns become their codes under the
    training categories (unknown / missing -> NaN), the rest their values. Column-block conversion
    instead of LightGBM's per-column ``apply`` (~15 ms for 300 columns).

    dtype: float32 when every numeric column is float32 or a narrower int / bool (the usual feature
    matrix: half the memory traffic), else float64. Both hold every source value exactly and the C++
    side reads each value as a double, so the predictions equal those of LightGBM's own conversion.
    """
    import pandas as pd

    if len(X) < SMALL_BATCH_ROWS and X.columns.is_unique:
        return _small_matrix(X, features, categories)
    dtypes = dict(zip(X.columns, X.dtypes, strict=True))  # one pass; a Series lookup per feature: ~5 us
    is_cat = [isinstance(dtypes[c], pd.CategoricalDtype) for c in features]
    if categories is not None and sum(is_cat) != len(categories):
        from lightgbm.basic import _data_from_pandas  # raises LightGBM's own error message

        return _data_from_pandas(X[features], "auto", "auto", categories)[0]
    # built transposed (one contiguous row per feature) and returned as its column-major view, which
    # LightGBM reads without a copy: no strided writes, which cost more than the predictions on big batches
    numeric = [j for j, cat in enumerate(is_cat) if not cat]
    exact32 = all(dtypes[features[j]] in _EXACT_IN_FLOAT32 for j in numeric)
    n_codes = [len(dtypes[f].categories) for f, cat in zip(features, is_cat, strict=True) if cat]
    n_codes += [len(c) for c in categories or []]
    dtype = np.float32 if exact32 and max(n_codes, default=0) < 2**24 else np.float64
    out = np.empty((len(features), len(X)), dtype=dtype)
    if numeric and len(X) >= SMALL_BATCH_ROWS:  # one pass per column, straight into its row
        for j in numeric:
            out[j] = X[features[j]].to_numpy(dtype=dtype, na_value=np.nan)
    elif numeric:  # few rows: one multi-column take beats ~300 column look-ups
        block = X[[features[j] for j in numeric]].to_numpy(dtype=dtype, na_value=np.nan).T
        prefix = numeric == list(range(len(numeric)))  # the usual layout: categoricals last
        out[slice(0, len(numeric)) if prefix else numeric] = block
    cat_pos = [j for j, cat in enumerate(is_cat) if cat]
    for k, j in enumerate(cat_pos):
        col = X[features[j]]
        if categories is not None and list(col.cat.categories) != list(categories[k]):
            col = col.cat.set_categories(categories[k])
        codes = col.cat.codes.to_numpy()
        out[j] = np.where(codes < 0, np.nan, codes)
    return out.T


# (X.columns, features) -> positions of the features in X's columns; the Index and the list are held,
# so their ids cannot be reused while cached. A served model sees one column Index object per fitted
# feature builder, so this holds a handful of entries.
_POSITIONS: dict[tuple[int, int], tuple[object, object, np.ndarray]] = {}


def _positions(columns, features) -> np.ndarray:
    key = (id(columns), id(features))
    hit = _POSITIONS.get(key)
    if hit is None or hit[0] is not columns or hit[1] is not features:
        import pandas as pd

        pos = columns.get_indexer(pd.Index(list(features)))
        if len(_POSITIONS) >= 64:  # bounded: frames built per call with fresh Index objects
            _POSITIONS.clear()
        hit = _POSITIONS[key] = (columns, features, pos)
    return hit[2]


def _small_matrix(X, features, categories) -> np.ndarray:
    """:func:`_pandas_matrix` for a few rows (serving): the same matrix, with positional takes instead
    of ~300 label look-ups, the feature positions cached per (column Index, feature list), and the
    categorical codes read from the Categorical itself.

    Same dtype rule, same codes (the category check against the training categories is the same; a
    column whose categories differ is re-coded with ``set_categories`` as LightGBM does).
    """
    import pandas as pd

    pos = _positions(X.columns, features)
    if (pos < 0).any():
        raise KeyError(f"{[f for f, p in zip(features, pos, strict=True) if p < 0][:5]} not in the frame")
    all_dtypes = X.dtypes.to_numpy()
    dtypes = all_dtypes[pos]
    is_cat = [isinstance(d, pd.CategoricalDtype) for d in dtypes]
    if categories is not None and sum(is_cat) != len(categories):
        from lightgbm.basic import _data_from_pandas  # raises LightGBM's own error message

        return _data_from_pandas(X[features], "auto", "auto", categories)[0]
    numeric = [j for j, cat in enumerate(is_cat) if not cat]
    exact32 = all(dtypes[j] in _EXACT_IN_FLOAT32 for j in numeric)
    cat_pos = [j for j, cat in enumerate(is_cat) if cat]
    n_codes = [len(dtypes[j].categories) for j in cat_pos] + [len(c) for c in categories or []]
    dtype = np.float32 if exact32 and max(n_codes, default=0) < 2**24 else np.float64
    out = np.empty((len(features), len(X)), dtype=dtype)
    if numeric:
        block = X.iloc[:, pos[numeric]].to_numpy(dtype=dtype, na_value=np.nan).T
        prefix = numeric == list(range(len(numeric)))  # the usual layout: categoricals last
        out[slice(0, len(numeric)) if prefix else numeric] = block
    for k, j in enumerate(cat_pos):
        col = _column_array(X, pos[j])  # the Categorical
        if categories is not None and not _same_categories(col.dtype, categories[k]):
            col = col.set_categories(categories[k])
        codes = col.codes
        out[j] = np.where(codes < 0, np.nan, codes)
    return out.T


def _column_array(X, j: int):
    """The array of column ``j`` (a Categorical for a category column) without building a Series: with
    pandas' str column labels, ``X.iloc[:, j]`` costs ~40 us, mostly in looking up the label."""
    mgr = getattr(X, "_mgr", None)
    if mgr is not None and hasattr(mgr, "iget_values"):  # pandas 2.x / 3.x internals; public path below
        return mgr.iget_values(j)
    return X.iloc[:, j].array


# CategoricalDtype -> training category lists it was found equal to (both held, so ids stay valid); the
# encoder hands out one dtype object per column, so a served model compares ~200 names once, not per call
_SAME: dict[tuple[int, int], tuple[object, object]] = {}


def _same_categories(dtype, trained: list) -> bool:
    key = (id(dtype), id(trained))
    hit = _SAME.get(key)
    if hit is not None and hit[0] is dtype and hit[1] is trained:
        return True
    same = list(dtype.categories) == list(trained)
    if same:
        if len(_SAME) >= 256:
            _SAME.clear()
        _SAME[key] = (dtype, trained)
    return same


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
    from ltv.models.compiled import rounds_of

    rounds = None
    for entry in cache or ():
        if entry[0] == "scores" and entry[1] is booster:
            rounds = rounds_of(booster, num_iteration) if rounds is None else rounds
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
    from ltv.models import compiled

    groups: dict[int, tuple[np.ndarray, list, list]] = {}
    for booster, num_iteration, features in requests:
        native = compiled.lookup(booster, num_iteration)
        if native is None or _cached_scores(cache, booster, num_iteration) is not None:
            continue
        rounds = compiled.rounds_of(booster, num_iteration)
        data = lgbm_matrix(X, features, booster, cache)
        _, models, keys = groups.setdefault(id(data), (data, [], []))
        if (booster, rounds) not in keys:
            models.append(native)
            keys.append((booster, rounds))
    for data, models, keys in groups.values():
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
    from ltv.models import compiled

    native = compiled.lookup(booster, num_iteration)
    if native is not None:
        return compiled.predict(native, data, threads)
    return booster.predict(data, num_iteration=num_iteration, num_threads=threads)
