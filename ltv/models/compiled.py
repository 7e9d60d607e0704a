"""Native tree inference: the fitted LightGBM boosters compiled to machine code with lleaves (LLVM).

LightGBM's own predict walks each tree through a generic node loop. Batch scoring of the default chain
spends most of its time there: the buyer classifier alone has ~1,200 trees. lleaves turns every tree
into straight-line compare-and-branch code, which scores the same rows ~5x faster on one core. It gives
the same values up to the order of the float64 sum over trees (|diff| ~1e-14).

Compiling (:mod:`ltv.models.tree_compiler`: once per model and CPU, through a disk cache, checked against
LightGBM) registers the compiled code here, in a process-wide registry keyed by the booster object
(weakly), so pickles are unchanged and a model that was not compiled, or a machine without lleaves, uses
LightGBM as before.
"""

from __future__ import annotations

import os
import threading
import weakref

import numpy as np

ENV_SWITCH = "LTV_COMPILE_TREES"  # "0" / "false" / "no" turns compilation off
_REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Booster -> {num_iteration: model}


def enabled() -> bool:
    """False when ``LTV_COMPILE_TREES`` says off or lleaves cannot be imported."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    try:
        import lleaves  # noqa: F401
    except Exception:  # noqa: BLE001 - an optional accelerator: any import failure means "not here"
        return False
    return True


def lookup(booster, num_iteration):
    """The compiled model of ``booster`` at ``num_iteration`` rounds, or None."""
    try:
        return _REGISTRY.get(booster, {}).get(rounds_of(booster, num_iteration))
    except TypeError:  # not weak-referenceable: never compiled
        return None


def rounds_of(booster, num_iteration) -> int:
    """LightGBM's reading of ``num_iteration`` in ``Booster.predict``: None means the booster's
    ``best_iteration``; that or any value <= 0 (or past the end) means every round."""
    total = booster.current_iteration()
    if num_iteration is None:
        num_iteration = getattr(booster, "best_iteration", 0) or 0
    if int(num_iteration) <= 0 or int(num_iteration) > total:
        return total
    return int(num_iteration)


_ZERO = float(np.float32(1e-35))  # LightGBM kZeroThreshold (a float): its row reader zeroes |x| <= it


def _snap(block: np.ndarray) -> None:
    """LightGBM's zero snapping, in place: |x| <= 1e-35 is 0 to LightGBM's predict (a split at +-1e-35
    would otherwise see the raw value)."""
    tiny = (block <= _ZERO) & (block >= -_ZERO)  # no float temporary the size of the block
    if tiny.any():
        block[tiny & (block != 0.0)] = 0.0


# Rows per call of the compiled code. It runs every block of trees over all the rows it is given, so a
# block of rows that stays in the CPU cache (2,048 x 313 float64 = 5 MB) scores ~1.7x faster than one
# big call on a 50k-row batch, which streams the whole matrix from memory once per block of trees.
CHUNK_ROWS = 2048
_LOCAL = threading.local()  # per thread: the float64 chunk buffer (reused: no allocation per chunk)


def _chunk(data: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of ``data`` (any float layout) as the trees' input, in this thread's buffer."""
    shape = (CHUNK_ROWS, data.shape[1])
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.shape != shape:
        buf = _LOCAL.buf = np.empty(shape, dtype=np.float64)
    block = buf[: hi - lo]
    block[...] = data[lo:hi]  # the float32 -> float64 cast of a chunk that stays in the CPU cache
    _snap(block)
    return block


def predict(model, data: np.ndarray, threads: int) -> np.ndarray:
    """Scores of a compiled ``model`` (LightGBM's output scale); ``threads`` <= 0 means every core."""
    return predict_many([model], data, threads)[0]


def predict_many(models: list, data: np.ndarray, threads: int) -> list[np.ndarray]:
    """Scores of several compiled models on the same rows, in one pass over ``data``.

    ``data`` is the (rows x features) matrix LightGBM would read, float32 or float64, either memory
    order. Rows are converted and scored in chunks of :data:`CHUNK_ROWS` on a thread pool: each chunk
    is cast to float64 once, in a per-thread buffer that stays in the CPU cache, and every model scores
    it there. So neither a float64 copy of the whole matrix nor a pass over it per model is made.
    Chunks are scored independently, so the values depend neither on the chunking nor on the threads.
    """
    n = len(data)
    n_jobs = threads if threads > 0 else (DEFAULT_THREADS or cores())
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
        return outs
    # the GIL is released in the compiled calls; n_jobs > 1 means the process's pool (cores() wide)
    list(_executor().map(score, starts))
    return outs


_POOL = None
DEFAULT_THREADS: int | None = None  # what threads <= 0 means; None: every core (a scoring process sets 1)


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
