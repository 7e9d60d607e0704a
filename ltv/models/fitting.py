"""What a chain fit works on and how it runs: the rows it reads (:class:`LabelledRows`), its clock (seconds
per stage, a progress line at least every ``every_s`` seconds, a per-round hook) and its concurrent fits.

A :class:`FitClock` is opened by ``LTVModel.fit``; inside it every component marks its work with
:func:`stage` (a no-op outside a clock). Nested stages get dotted names (``first_stage.classifier``).
Boosters fitted through ``lgbm_fit.fit_booster`` get :func:`booster_callbacks`: the clock learns their round
and valid loss, and the clock's ``on_round`` hook (a sweep's pruning, say) sees every round. The clock
travels in a ``contextvars.ContextVar``; :func:`run_concurrently` carries it into its threads.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from ltv.contract import TARGET
from ltv.models.blocks import Blocks

log = logging.getLogger("ltv.fit")

BUYER = "buyer_d7"


@dataclasses.dataclass(frozen=True)
class LabelledRows:
    """Rows of one window: features ``X`` (a frame, or the model matrix as :class:`Blocks`), their contract
    ``labels`` (iap_revenue_d7, buyer_d7, later horizons) and request ``time`` (unix seconds; None keeps row
    order) for the time-ordered splits."""

    X: pd.DataFrame
    labels: pd.DataFrame
    time: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.X)

    @property
    def y(self) -> np.ndarray:
        """d7 revenue in dollars."""
        return self.labels[TARGET].to_numpy(dtype=np.float64)

    @property
    def buyer(self) -> np.ndarray:
        """The 0/1 buyer label."""
        return self.labels[BUYER].to_numpy()

    def take(self, positions) -> LabelledRows:
        """The rows at ``positions`` (every field cut the same way; sorted positions for Blocks)."""
        positions = np.asarray(positions)
        X = self.X.take(positions) if isinstance(self.X, Blocks) else self.X.iloc[positions]
        return LabelledRows(
            X, self.labels.iloc[positions], None if self.time is None else np.asarray(self.time)[positions]
        )

    def buyers(self) -> LabelledRows:
        """The rows with buyer_d7 == 1."""
        return self.take(np.flatnonzero(self.buyer == 1))

    def in_memory(self) -> LabelledRows:
        """These rows with X as one pandas model matrix (Blocks are read whole: for small subsets)."""
        return dataclasses.replace(self, X=self.X.frame()) if isinstance(self.X, Blocks) else self

    def checked(self, name: str, label_columns) -> LabelledRows:
        """These rows, checked (a frame or Blocks with rows, the ``label_columns``, one label row per X row)
        and re-indexed 0..n-1; errors name the window ``name``."""
        from ltv.models.lgbm_predict import check_frame

        check_frame(self.X, f"{name}.X")
        missing = [c for c in label_columns if c not in self.labels.columns]
        if missing:
            raise ValueError(f"labels of {name} lack column(s) {missing}")
        if len(self.labels) != len(self.X):
            raise ValueError(f"labels of {name} have {len(self.labels)} rows, {name}.X has {len(self.X)}")
        X = self.X if isinstance(self.X, Blocks) else self.X.reset_index(drop=True)
        return dataclasses.replace(self, X=X, labels=self.labels.reset_index(drop=True))

    def split_by_time(self, later_fraction: float) -> tuple[LabelledRows, LabelledRows]:
        """(earlier rows, the latest ``later_fraction`` of the rows) by time, each in row order."""
        n, f = len(self), float(later_fraction)
        if not 0.0 < f < 1.0:
            raise ValueError(f"calibration_fraction must be in (0, 1), got {f}")
        order = np.arange(n) if self.time is None else np.argsort(np.asarray(self.time), kind="stable")
        cut = int(round(n * (1.0 - f)))
        if cut < 1 or cut >= n:
            raise ValueError(
                f"valid window of {n} rows is too small to split for early stopping and calibration"
            )
        return self.take(np.sort(order[:cut])), self.take(np.sort(order[cut:]))


# ---- the clock ------------------------------------------------------------------------------------
_CLOCK: contextvars.ContextVar[FitClock | None] = contextvars.ContextVar("ltv_fit_clock", default=None)
_PATH: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("ltv_fit_stage", default=())


class _Open:
    """One running stage: name, rows, start time and what its booster last reported."""

    def __init__(self, name: str, rows: int):
        self.name, self.rows, self.t0 = name, int(rows), time.perf_counter()
        self.round = self.total = None
        self.valid: str | None = None
        self.last_log = self.t0

    def line(self, now: float) -> str:
        elapsed = now - self.t0
        what = f"stage {self.name}: {self.rows:,} rows, {elapsed:.0f} s"
        if self.round:
            what += f", round {self.round}/{self.total} ({self.rows * self.round / max(elapsed, 1e-9):,.0f} row-rounds/s)"
            if self.valid:
                what += f", valid {self.valid}"
        return what


class FitClock:
    """Seconds per stage (``times``, summed over repeats), a heartbeat thread that logs every open stage at
    least every ``every_s`` seconds (None: no heartbeat), and the per-round hook of the fit.

    Parameters
    ----------
    every_s : most seconds between two progress lines of a running stage; None: no progress lines.
    on_round : ``on_round(stage, env)`` after every boosting round of every booster fitted in this process
        inside the clock (``stage``: the dotted stage name; ``env``: LightGBM's ``CallbackEnv``). What it
        raises stops the fit (a sweep's pruner raises ``optuna.TrialPruned``).
    """

    def __init__(self, every_s: float | None = None, on_round: Callable | None = None):
        self.every_s = every_s
        self.on_round = on_round
        self.times: dict[str, float] = {}
        self._open: dict[int, _Open] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._token = self._thread = None

    def __enter__(self) -> FitClock:
        self._token = _CLOCK.set(self)
        if self.every_s:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="ltv-fit-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
        _CLOCK.reset(self._token)

    def _beat(self) -> None:
        every = float(self.every_s)
        while not self._stop.wait(min(every, 5.0)):
            now = time.perf_counter()
            with self._lock:
                due = [s for s in self._open.values() if now - s.last_log >= every]
                for s in due:
                    s.last_log = now
            for s in due:
                log.info("%s", s.line(now))

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.times[name] = self.times.get(name, 0.0) + float(seconds)


@contextlib.contextmanager
def stage(name: str, rows: int = 0) -> Iterator[None]:
    """Time the enclosed work as stage ``name`` (dotted under an enclosing stage) on ``rows`` rows."""
    clock = _CLOCK.get()
    if clock is None:
        yield
        return
    path = (*_PATH.get(), name)
    full = ".".join(path)
    token = _PATH.set(path)
    entry = _Open(full, rows)
    with clock._lock:
        clock._open[id(entry)] = entry
    try:
        yield
    finally:
        _PATH.reset(token)
        seconds = time.perf_counter() - entry.t0
        with clock._lock:
            del clock._open[id(entry)]
        clock.add(full, seconds)
        log.info("stage %s done: %s rows in %.1f s (%s rows/s)", full, f"{entry.rows:,}", seconds,
                 f"{entry.rows / max(seconds, 1e-9):,.0f}")  # fmt: skip


def current_stage() -> _Open | None:
    """The innermost running stage of this context's clock (None outside one)."""
    clock, path = _CLOCK.get(), ".".join(_PATH.get())
    if clock is None or not path:
        return None
    with clock._lock:
        found = [s for s in clock._open.values() if s.name == path]
    return found[-1] if found else None


def valid_text(env) -> str | None:
    """A LightGBM callback environment's first valid metric as a progress line shows it ("l2 0.12345")."""
    if not env.evaluation_result_list:
        return None
    _, metric, value, _ = env.evaluation_result_list[0][:4]
    return f"{metric} {value:.5f}"


def booster_callbacks(n_rounds: int) -> list:
    """LightGBM callbacks for the booster about to be fitted in the current stage (none outside a clock)."""
    clock, entry = _CLOCK.get(), current_stage()
    if clock is None:
        return []
    name = ".".join(_PATH.get())

    def on_round(env):
        if entry is not None:
            entry.total, entry.round = int(n_rounds), env.iteration + 1
            entry.valid = valid_text(env) or entry.valid
        if clock.on_round is not None:
            clock.on_round(name, env)

    on_round.order = 40  # after LightGBM's early stopping (30) has recorded the round
    return [on_round]


# ---- concurrent fits ------------------------------------------------------------------------------
# LightGBM releases the GIL while it builds trees, so a few boosters fit side by side on threads; each then
# gets cores // concurrent OpenMP threads, so the cores are not oversubscribed (OpenMP teams sharing a core
# wait on each other at every barrier: two 2-thread fits on 2 busy cores ran ~2-3x slower than one each).
_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("ltv_fit_threads", default=None)


def fit_threads() -> int | None:
    """OpenMP threads for a booster fitted now (None: the estimator's own ``n_jobs``)."""
    return _THREADS.get()


def set_fit_threads(threads: int | None) -> contextvars.Token:
    """Give the fits that follow in this context ``threads`` each (a job that has a worker's cores, e.g. a
    sweep's trial on a Dask worker); undo with :func:`reset_fit_threads`."""
    return _THREADS.set(None if threads is None else max(1, int(threads)))


def reset_fit_threads(token: contextvars.Token) -> None:
    _THREADS.reset(token)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_concurrently(tasks: dict[str, Callable[[], object]], concurrent: int | None) -> dict[str, object]:
    """Run ``tasks`` (name -> no-argument callable), at most ``concurrent`` at once, started in the given
    order (callers list the longest first); return name -> result. ``concurrent`` None or <= 1, or a call
    from inside a concurrent task, runs them in order here; otherwise Dask's threaded scheduler runs them,
    each with ``max(1, cores // concurrent)`` fit threads and the caller's clock and stage. The first
    exception is raised."""
    concurrent = min(int(concurrent or 1), len(tasks))
    if concurrent <= 1 or _THREADS.get() is not None:
        return {name: fn() for name, fn in tasks.items()}
    import dask

    threads = max(1, cores() // concurrent)

    def with_threads(fn):
        ctx = contextvars.copy_context()

        def run():
            _THREADS.set(threads)
            return fn()

        return lambda: ctx.copy().run(run)

    # dask.order breaks ties between independent tasks by key, last key first: the keys count down
    n = len(tasks)
    calls = [
        dask.delayed(with_threads(fn), pure=False)(dask_key_name=f"ltv-fit-{n - i:03d}-{name}")
        for i, (name, fn) in enumerate(tasks.items())
    ]
    return dict(zip(tasks, dask.compute(*calls, scheduler="threads", num_workers=concurrent), strict=True))
