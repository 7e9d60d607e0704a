"""The predict side of every LightGBM booster (the fit side is :mod:`ltv.models.lgbm_fit`): the input matrix,
threads, one :class:`PredictCache` per predict call, and the registry of boosters compiled to native code.

Compiled trees (:mod:`ltv.models.native_trees` compiles them with lleaves and calls :func:`register`) score
the same rows ~5x faster on one core than LightGBM's generic node loop, with the same values up to the order
of the float64 sum over trees (|diff| ~1e-14). The registry is keyed by the booster object (weakly), so
pickles are unchanged and a booster that was not compiled uses LightGBM.
"""

from __future__ import annotations

import os
import threading
import weakref

import numpy as np
import pandas as pd

from ltv.frames import column_run
from ltv.models.blocks import Blocks

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Booster -> {rounds: compiled model}
# Rows per call of the compiled code: a block of rows that stays in the CPU cache (2,048 x 313 float64 =
# 5 MB) scores ~1.7x faster than one call on a 50k-row batch, which streams the matrix once per tree block.
CHUNK_ROWS = 2048
_EXACT_IN_FLOAT32 = {np.dtype(t) for t in ("float32", "float16", "int8", "int16", "uint8", "uint16", "bool")}
_ZERO = float(np.float32(1e-35))  # LightGBM kZeroThreshold: its row reader zeroes |x| <= it


class PredictCache:
    """What the boosters of one predict call share: the input matrix per (columns, categories), so a chain
    converts its input once, and the scores :func:`prefetch_scores` computed in one pass.

    Parameters
    ----------
    matrix : X as its boosters' float32 matrix where the caller has it (``ltv.frames.FloatMatrix``), or None.
    threads : threads of the compiled trees' pass (None: every core; a Dask worker's task passes 1).
    """

    def __init__(self, matrix=None, threads: int | None = None):
        self.threads = threads
        self._matrices: list[tuple[list, list | None, np.ndarray]] = []
        self._scores: dict[tuple[int, int], tuple[object, np.ndarray]] = {}
        if matrix is not None:
            self._matrices.append((list(matrix.columns), matrix.categories, matrix.values))

    def matrix(self, X, features, categories) -> np.ndarray:
        """``X[features]`` as :func:`pandas_matrix` builds it, built once per call."""
        for cols, cats, data in self._matrices:
            if cols == list(features) and cats == categories:
                return data
        data = pandas_matrix(X, features, categories)
        self._matrices.append((list(features), categories, data))
        return data

    @property
    def has_scores(self) -> bool:
        return bool(self._scores)

    def scores(self, booster, rounds: int) -> np.ndarray | None:
        hit = self._scores.get((id(booster), rounds))
        return hit[1] if hit is not None and hit[0] is booster else None

    def keep(self, booster, rounds: int, scores: np.ndarray) -> None:
        self._scores[(id(booster), rounds)] = (booster, scores)


def check_frame(X, name: str = "X"):
    """Reject empty input and non-frame objects early, with a message naming the argument (a model matrix
    as :class:`ltv.models.blocks.Blocks` is a frame here)."""
    if isinstance(X, Blocks):
        if len(X) == 0:
            raise ValueError(f"{name} has no rows")
        return X
    if not hasattr(X, "iloc") or not hasattr(X, "columns"):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(X).__name__}")
    if len(X) == 0:
        raise ValueError(f"{name} has no rows")
    return X


def predict_threads(n_rows: int, n_jobs) -> int:
    """Threads of one predict call: 1 for at most one chunk of rows (starting OpenMP / pool workers costs
    ~8-25 ms CPU a call, more than scoring a few rows), else ``n_jobs`` (None or <= 0: every core)."""
    if n_rows <= CHUNK_ROWS:
        return 1
    return int(n_jobs) if n_jobs is not None and int(n_jobs) > 0 else 0


def pandas_matrix(X, features, categories) -> np.ndarray:
    """What ``lightgbm.basic._data_from_pandas`` builds (category columns as their codes under the training
    categories, unknown / missing -> NaN; the rest their values), with the numeric columns read as one block
    instead of LightGBM's per-column ``apply`` (~15 ms for 300 columns). float32 when every numeric column is
    float32 or a narrower int / bool, else float64: both hold every value exactly and LightGBM reads doubles,
    so the predictions equal those of LightGBM's own conversion."""
    if X.columns.tolist() == list(features):
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
    # built transposed (one contiguous row per feature): its column-major view LightGBM reads without a copy
    matrix = np.empty((len(X), len(features)), dtype=dtype, order="F")
    out = matrix.T
    if numeric:
        block = column_run(X, pos[numeric]).to_numpy(dtype=dtype, na_value=np.nan).T
        prefix = numeric == list(range(len(numeric)))  # the usual layout: categoricals last
        out[slice(0, len(numeric)) if prefix else numeric] = block
    for k, j in enumerate(cat_pos):
        col = X[features[j]].array
        if categories is not None and col.categories.tolist() != list(categories[k]):
            col = col.set_categories(categories[k])
        out[j] = np.where(col.codes < 0, np.nan, col.codes)
    return matrix


def booster_predict(booster, X, features, num_iteration, cache: PredictCache | None = None, n_jobs=None):
    """``booster``'s raw prediction (probabilities for binary) of frame ``X`` at ``num_iteration`` rounds:
    LightGBM's values, or equal up to float64 summation order where the booster was compiled."""
    cache = PredictCache() if cache is None else cache
    if cache.has_scores:  # prefetched by the compiled pass (the round count is looked up only then)
        done = cache.scores(booster, rounds_of(booster, num_iteration))
        if done is not None:
            return done
    data = cache.matrix(X, features, booster.pandas_categorical)
    return matrix_predict(booster, data, num_iteration, predict_threads(len(data), n_jobs))


def matrix_predict(booster, data: np.ndarray, num_iteration, threads: int) -> np.ndarray:
    """``booster.predict(data, ...)``, by its compiled native code where the registry has it."""
    native = lookup(booster, num_iteration)
    if native is not None:
        return predict_many([native], data, threads)[0]
    return booster.predict(data, num_iteration=num_iteration, num_threads=threads)


def prefetch_scores(X, requests, cache: PredictCache) -> None:
    """Score every compiled booster of ``requests`` (``(booster, num_iteration, features)``) in one pass per
    input matrix and keep the scores in ``cache`` for :func:`booster_predict`: a chain's first stage runs
    ~10 boosters on the same rows, and one pass converts each chunk once and runs them all while it is in
    the CPU cache. Boosters that are not compiled are left to their own calls."""
    groups: list[tuple[np.ndarray, list, list]] = []
    for booster, num_iteration, features in requests:
        native, rounds = lookup(booster, num_iteration), rounds_of(booster, num_iteration)
        if native is None or cache.scores(booster, rounds) is not None:
            continue
        data = cache.matrix(X, features, booster.pandas_categorical)
        group = next((g for g in groups if g[0] is data), None)
        if group is None:
            group = (data, [], [])
            groups.append(group)
        if (booster, rounds) not in group[2]:
            group[1].append(native)
            group[2].append((booster, rounds))
    for data, models, keys in groups:
        threads = predict_threads(len(data), cache.threads)
        for (booster, rounds), scores in zip(keys, predict_many(models, data, threads), strict=True):
            cache.keep(booster, rounds, scores)


# ---- the registry of compiled boosters ------------------------------------------------------------
def rounds_of(booster, num_iteration) -> int:
    """LightGBM's reading of ``num_iteration`` in ``Booster.predict``: None means the booster's
    ``best_iteration``; that or any value <= 0 (or past the end) means every round."""
    total = booster.current_iteration()
    if num_iteration is None:
        num_iteration = getattr(booster, "best_iteration", 0) or 0
    if int(num_iteration) <= 0 or int(num_iteration) > total:
        return total
    return int(num_iteration)


def register(booster, rounds: int, model) -> None:
    """Score ``booster`` at ``rounds`` rounds with the compiled ``model`` from now on (in this process)."""
    _COMPILED.setdefault(booster, {})[int(rounds)] = model


def lookup(booster, num_iteration):
    """The compiled model of ``booster`` at ``num_iteration`` rounds, or None."""
    try:
        return _COMPILED.get(booster, {}).get(rounds_of(booster, num_iteration))
    except TypeError:  # not weak-referenceable: never compiled
        return None


_LOCAL = threading.local()  # per thread: the float64 chunk buffer (reused: no allocation per chunk)


def _chunk(data: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of ``data`` as the trees' input (float64, LightGBM's zero snapping) in this thread's
    buffer."""
    shape = (CHUNK_ROWS, data.shape[1])
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.shape != shape:
        buf = _LOCAL.buf = np.empty(shape, dtype=np.float64)
    block = buf[: hi - lo]
    block[...] = data[lo:hi]
    tiny = (block <= _ZERO) & (block >= -_ZERO)
    if tiny.any():
        block[tiny & (block != 0.0)] = 0.0
    return block


def predict_many(models: list, data: np.ndarray, threads: int) -> list[np.ndarray]:
    """Scores of several compiled models on the same rows (``threads`` <= 0: every core), chunk by chunk of
    :data:`CHUNK_ROWS` rows: each chunk is cast once into a per-thread buffer and every model scores it
    there. Chunks are scored independently: the values depend neither on the chunking nor the threads."""
    n = len(data)
    n_jobs = threads if threads > 0 else cores()
    outs = [np.empty(n, dtype=np.float64) for _ in models]

    def score(lo: int) -> None:
        hi = min(n, lo + CHUNK_ROWS)
        block = _chunk(data, lo, hi)
        for model, out in zip(models, outs, strict=True):
            out[lo:hi] = model.predict(block, n_jobs=1)

    starts = range(0, n, CHUNK_ROWS)
    if n_jobs == 1 or len(starts) <= 1:
        for lo in starts:
            score(lo)
    else:  # the GIL is released in the compiled calls
        list(_executor().map(score, starts))
    return outs


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_POOL = None


def _executor():
    """One thread pool per process, as wide as the machine: its threads keep their chunk buffers warm."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=cores(), thread_name_prefix="ltv-trees")
    return _POOL


def _forget_pool() -> None:  # a forked child has the pool object but none of its threads
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
