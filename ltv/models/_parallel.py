"""Independent fits of a chain run at once: Dask runs them (threads in-process, or a cluster's workers).

LightGBM releases the GIL while it builds trees, so in one process a few boosters fit side by side on
threads; each then gets ``cores // concurrent`` OpenMP threads (:func:`fit_threads`), so the cores are
not oversubscribed (OpenMP teams that share a core wait on each other at every barrier: measured here,
two 2-thread fits on 2 busy cores ran ~2-3x slower than one thread each).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable

from ltv.models import _progress

_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("ltv_fit_threads", default=None)


def fit_threads() -> int | None:
    """OpenMP threads for a booster fitted now (None: the estimator's own ``n_jobs``)."""
    return _THREADS.get()


def set_fit_threads(threads: int | None) -> contextvars.Token:
    """Give the fits that follow in this context ``threads`` each, in order (a job that has a worker's
    cores, e.g. a sweep's trial on a Dask worker); undo with :func:`reset_fit_threads`."""
    return _THREADS.set(None if threads is None else max(1, int(threads)))


def reset_fit_threads(token: contextvars.Token) -> None:
    _THREADS.reset(token)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_concurrently(tasks: dict[str, Callable[[], object]], concurrent: int) -> dict[str, object]:
    """Run ``tasks`` (name -> no-argument callable), at most ``concurrent`` at once, started in the given
    order; return name -> result.

    ``concurrent <= 1``, or a call from inside a concurrent task, runs them in order in this thread.
    Otherwise Dask's threaded scheduler runs them, each with ``max(1, cores // concurrent)`` fit
    threads and the caller's fit clock and stage (so their seconds and progress lines are recorded).
    The first exception is raised (e.g. ``optuna.TrialPruned``).
    """
    concurrent = min(int(concurrent), len(tasks))
    if concurrent <= 1 or _THREADS.get() is not None:  # nested in a concurrent task: in order
        return {name: fn() for name, fn in tasks.items()}
    import dask

    threads = max(1, cores() // concurrent)

    def with_threads(fn):
        def run():
            _THREADS.set(threads)
            return fn()

        return _progress.carry(run)

    # start in the order given (callers list the longest fit first): dask.order breaks ties between
    # independent tasks by key, last key first, so the keys count down
    n = len(tasks)
    calls = [
        dask.delayed(with_threads(fn), pure=False)(dask_key_name=f"ltv-fit-{n - i:03d}-{name}")
        for i, (name, fn) in enumerate(tasks.items())
    ]
    results = dask.compute(*calls, scheduler="threads", num_workers=concurrent)
    return dict(zip(tasks, results, strict=True))
