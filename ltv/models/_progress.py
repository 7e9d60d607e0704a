"""Fit-time accounting: wall seconds per stage of a chain fit, and a progress line at least every
``every_s`` seconds while a stage runs, so a long fit is never silent.

A :class:`FitClock` is opened by ``LTVModel.fit`` (``with clock:``); inside it, every component marks
its work with :func:`stage` (a no-op outside a clock, so components fitted alone are unaffected).
Nested stages are recorded under dotted names (``oof_folds.classifier``). Boosters fitted through
``_lgbm.fit_booster`` get :func:`booster_callbacks`: a LightGBM callback that tells the clock its round
and valid loss, and, when a trial handle is set (:func:`set_trial`), an Optuna pruning report.

The clock travels in a ``contextvars.ContextVar``: concurrent fits run by Dask's threaded scheduler or
on a cluster copy it explicitly (:func:`carry`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("ltv.fit")

_CLOCK: contextvars.ContextVar[FitClock | None] = contextvars.ContextVar("ltv_fit_clock", default=None)
_PATH: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("ltv_fit_stage", default=())
_TRIAL: dict[str, object] = {"trial": None, "stage": None}


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
            rate = self.rows * self.round / max(elapsed, 1e-9)
            what += f", round {self.round}/{self.total} ({rate:,.0f} row-rounds/s)"
            if self.valid:
                what += f", valid {self.valid}"
        return what


class FitClock:
    """Seconds per stage (``times``, summed over repeats) and a heartbeat thread that logs every open
    stage at least every ``every_s`` seconds.

    Parameters
    ----------
    every_s : most seconds between two progress lines of a running stage.
    """

    def __init__(self, every_s: float = 30.0):
        self.every_s = float(every_s)
        self.times: dict[str, float] = {}
        self._open: dict[int, _Open] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._token = None
        self._thread = None

    def __enter__(self) -> FitClock:
        self._token = _CLOCK.set(self)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="ltv-fit-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        _CLOCK.reset(self._token)

    def _beat(self) -> None:
        while not self._stop.wait(min(self.every_s, 5.0)):
            now = time.perf_counter()
            with self._lock:
                due = [s for s in self._open.values() if now - s.last_log >= self.every_s]
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
    """The innermost running stage of this context's fit clock (None outside one): what a booster's
    progress reports update (round, total, valid)."""
    clock, path = _CLOCK.get(), ".".join(_PATH.get())
    if clock is None or not path:
        return None
    with clock._lock:
        found = [s for s in clock._open.values() if s.name == path]
    return found[-1] if found else None


def carry(fn: Callable) -> Callable:
    """``fn`` bound to the caller's context (clock and stage path), for a worker thread to run."""
    ctx = contextvars.copy_context()
    return lambda *a, **k: ctx.copy().run(fn, *a, **k)


def set_trial(trial, stage_name: str | None = "first_stage.classifier") -> None:
    """Report the valid loss of the booster fitted in stage ``stage_name`` to Optuna ``trial`` (None:
    stop reporting). Set by the training task from the sweeper's handle; a pruned trial raises
    ``optuna.TrialPruned`` out of the fit."""
    _TRIAL["trial"], _TRIAL["stage"] = trial, stage_name


def valid_text(env) -> str | None:
    """A LightGBM callback environment's first valid metric as a progress line shows it ("l2 0.12345"), or
    None when the fit has no eval set."""
    if not env.evaluation_result_list:
        return None
    _, metric, value, _ = env.evaluation_result_list[0][:4]
    return f"{metric} {value:.5f}"


def booster_callbacks(n_rounds: int, has_eval: bool) -> list:
    """LightGBM callbacks for the booster about to be fitted in the current stage (maybe none)."""
    out = []
    entry = current_stage()
    if entry is not None:
        entry.total = int(n_rounds)

        def progress(env):
            entry.round = env.iteration + 1
            entry.valid = valid_text(env) or entry.valid

        progress.order = 5
        out.append(progress)
    trial = _TRIAL["trial"]
    if trial is not None and has_eval and ".".join(_PATH.get()) == _TRIAL["stage"]:
        out.append(_pruning_callback(trial))
    return out


REPORT_EVERY = 10  # rounds between two reports: each is a write to the study's storage


def _pruning_callback(trial):
    """Report the first valid metric every ``REPORT_EVERY`` rounds; raise ``optuna.TrialPruned`` when the
    pruner says so."""
    import optuna

    def report(env):
        if not env.evaluation_result_list or (env.iteration + 1) % REPORT_EVERY:
            return
        value = float(env.evaluation_result_list[0][2])
        trial.report(value, step=env.iteration + 1)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {env.iteration + 1} (valid {value:.5f})")

    report.order = 40  # after LightGBM's early stopping (30) has recorded the round
    return report


# ---- the trial handle of a sweep job ---------------------------------------------------------------
# The ltv_optuna sweeper names each job's trial in the environment through ``hydra.job.env_set`` (Hydra
# sets it for the job's run only, in whatever process runs it) and keeps the pruner's config and the
# pruned stage in the study's user attributes, which every process sees through the storage.
TRIAL_ENV = {"storage": "LTV_OPTUNA_STORAGE", "study": "LTV_OPTUNA_STUDY", "trial_id": "LTV_OPTUNA_TRIAL_ID"}
PRUNER_ATTR, STAGE_ATTR = "ltv.pruner", "ltv.prune_stage"


def trial_env(storage: str, study: str, trial_id: int) -> dict[str, str]:
    """The environment that names one trial for :func:`sweep_trial`."""
    return {TRIAL_ENV["storage"]: storage, TRIAL_ENV["study"]: study, TRIAL_ENV["trial_id"]: str(trial_id)}


@contextlib.contextmanager
def sweep_trial() -> Iterator[object | None]:
    """Within a sweep job (:data:`TRIAL_ENV` set): the job's Optuna trial, fed the valid loss of the
    booster of the study's prune stage and judged by the study's pruner (``optuna.TrialPruned`` out of
    the fit). Outside a sweep, or with no pruner configured: yields None and changes nothing."""
    import os

    env = {k: os.environ.get(v) for k, v in TRIAL_ENV.items()}
    if not all(env.values()):
        yield None
        return
    import optuna
    from hydra.utils import instantiate

    attrs = optuna.load_study(study_name=env["study"], storage=env["storage"]).user_attrs
    if not attrs.get(PRUNER_ATTR):
        yield None
        return
    pruner = instantiate(attrs[PRUNER_ATTR])
    study = optuna.load_study(study_name=env["study"], storage=env["storage"], pruner=pruner)
    trial = optuna.trial.Trial(study, int(env["trial_id"]))
    set_trial(trial, attrs.get(STAGE_ATTR) or "first_stage.classifier")
    try:
        yield trial
    finally:
        set_trial(None)
