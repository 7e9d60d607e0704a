"""Memory pressure gets an answer: the run stops with :class:`MemoryPressureError`, it does not loop.

Dask's answer to a worker past its memory limit is to restart it (its nanny terminates it at
``distributed.worker.memory.terminate``, 95% of ``memory_limit``) and to recompute elsewhere what it held or
ran. On an input too big for the workers that goes round: each restart loses the data that pushed it over,
and the recomputation pushes the next worker over. The nanny announces every such restart as a scheduler
event (topic ``worker-restart-memory``); the client subscribes to it (:func:`guard`, one per connected
engine) and, past ``allowed`` restarts (``cluster.memory_restarts``, 0 by default), cancels its futures
with a message naming the running stage, the worker's memory limit and what to change. The call that waits
(``future.result()``, ``dask.compute``, a booster fitted on the cluster) then raises, and :func:`stage` (or the
engine's block) raises :class:`MemoryPressureError` from it. A ``MemoryError`` raised in this process (the
client ran short, or ``cluster=sync``) or in a task becomes the same error.

A worker whose memory stays above ``distributed.worker.memory.pause`` (80%) without reaching the restart
(memory that is not Dask's data, so it cannot spill) is paused for good: it runs nothing more, and the run
would wait forever. Dask's ``distributed.scheduler.no-workers-timeout`` (``cluster.no_workers_timeout`` on
a LocalCluster) fails the tasks that wait that long with no running worker and logs a
``no-workers-timeout-exceeded`` event (topic ``scheduler``); when the workers are paused then, the guard
stops the run the same way.

Stages are labels the tasks set around their steps (``with stage("load train"): ...``); they nest
(``score valid > load model``), threads that run side by side have their own (``fit > fit classifier |
fit > fit regressor``), and they cost nothing without a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import dask
from dask.utils import format_bytes

log = logging.getLogger(__name__)

TOPIC = "worker-restart-memory"  # what distributed's nanny logs when it restarts a worker for memory
SCHEDULER_TOPIC = "scheduler"  # where the scheduler logs no-workers-timeout-exceeded
REMEDIES = (
    "To fit: sample the input (data.splits.train.fraction=0.15), give each worker more memory "
    "(cluster.memory_limit=8GiB, with fewer cluster.n_workers on one machine), add workers "
    "(cluster=remote cluster.address=tcp://host:8786), or keep the train split on the workers "
    "(train.distributed=true)."
)
_STAGES: dict[int, list[str]] = {}  # per thread: its running stages, outermost first
_GUARDS: list[MemoryGuard] = []  # the engines' guards that are subscribed now
_NOT_OURS = (KeyboardInterrupt, SystemExit, GeneratorExit)  # a stop is a stop, never a memory error


class MemoryPressureError(RuntimeError):
    """A stage ran out of memory: a worker passed its memory limit, or this process ran short.

    The message names the stage, the limit and what to change (:data:`REMEDIES`); ``stage``,
    ``memory_limit`` (bytes per worker, None when unknown or for this process) and ``restarts`` (the
    workers' memory restarts seen by the run) are attributes.
    """

    def __init__(self, message: str, stage: str, memory_limit: int | None = None, restarts: int = 0):
        super().__init__(message)
        self.stage, self.memory_limit, self.restarts = stage, memory_limit, restarts

    def __reduce__(self):
        return type(self), (str(self), self.stage, self.memory_limit, self.restarts)


def current_stage() -> str:
    """The running stages as ``outer > inner`` (threads' own joined by `` | ``), or 'an unnamed stage'."""
    return _running() or "an unnamed stage"


def _running() -> str:
    return " | ".join(" > ".join(stack) for stack in list(_STAGES.values()) if stack)


def _named_stage() -> str:
    """For messages: "stage 'load train'", or 'an unnamed stage'."""
    return f"stage {_running()!r}" if _running() else "an unnamed stage"


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Label the block as stage ``name`` for memory errors, and raise :class:`MemoryPressureError` from
    what the block raises when the run ran out of memory in it (see the module doc)."""
    thread = threading.get_ident()
    stack = _STAGES.setdefault(thread, [])
    stack.append(str(name))
    try:
        with translated():
            yield
    finally:
        stack.pop()
        if not stack:
            _STAGES.pop(thread, None)


class MemoryGuard:
    """The memory restarts of a client's workers: past ``allowed`` of them (None: no limit, Dask's own
    retries), the client's futures are cancelled with the message of :attr:`error`."""

    def __init__(self, client, allowed: int | None = 0, no_workers_timeout: str | None = None):
        self.client, self.allowed, self.no_workers_timeout = client, allowed, no_workers_timeout
        self.restarts: list[dict] = []
        self.error: MemoryPressureError | None = None
        self._limit = _limit(client.scheduler_info(n_workers=-1)["workers"])

    async def on_restart(self, event) -> None:
        """Handler of a :data:`TOPIC` event ``(time, {"worker", "pid", "rss"})``, in the client's loop."""
        _, msg = event
        self.restarts.append(dict(msg))
        if self.error is not None:
            return
        limit = self._limit
        where = f"{msg.get('worker')} (process memory {format_bytes(int(msg.get('rss', 0)))})"
        if self.allowed is not None and len(self.restarts) <= self.allowed:
            log.warning("worker %s restarted for memory during %s (%d of %d allowed: cluster.memory_restarts)",
                        where, current_stage(), len(self.restarts), self.allowed)  # fmt: skip
            return
        await self._stop(
            f"{_named_stage()} ran out of memory: the Dask nanny restarted worker {where}, past its "
            f"memory limit of {format_bytes(limit) if limit else 'unknown'} per worker "
            f"({len(self.restarts)} memory restart(s), cluster.memory_restarts={self.allowed}); the run "
            f"stops here rather than recompute on restarted workers. {REMEDIES}",
            limit,
            f"worker {where} restarted for memory",
        )

    async def on_scheduler_event(self, event) -> None:
        """Handler of a :data:`SCHEDULER_TOPIC` event: tasks timed out waiting for a running worker; the
        run stops when the workers are paused (memory), else the tasks' NoWorkerError says it all."""
        _, msg = event
        if self.error is not None or msg.get("action") != "no-workers-timeout-exceeded":
            return
        workers = (await self.client.scheduler.identity(n_workers=-1))["workers"]
        paused = [a for a, w in workers.items() if w.get("status") == "paused"]
        if not paused:
            return
        limit = _limit(workers) or self._limit
        waited = self.no_workers_timeout or "the scheduler's distributed.scheduler.no-workers-timeout"
        await self._stop(
            f"{_named_stage()} ran out of memory: {len(paused)} of {len(workers)} worker(s) paused above "
            f"{dask.config.get('distributed.worker.memory.pause'):.0%} of their memory limit of "
            f"{format_bytes(limit) if limit else 'unknown'} per worker, memory that does not go down (not "
            f"Dask's data: it cannot spill), and tasks waited {waited} with no running worker "
            f"(cluster.no_workers_timeout). {REMEDIES}",
            limit,
            f"workers {paused} paused for memory",
        )

    async def _stop(self, message: str, limit, what: str) -> None:
        """Record the run's MemoryPressureError and cancel every future, so whatever waits raises now."""
        self.error = MemoryPressureError(message, stage=current_stage(), memory_limit=limit,
                                         restarts=len(self.restarts))  # fmt: skip
        log.error("%s during %r: stopping the run", what, current_stage())
        await self._cancel_all(message)

    async def _cancel_all(self, message: str) -> None:
        from distributed import Future

        futures = [Future(key, self.client) for key in list(self.client.futures)]
        if futures:
            await self.client.cancel(futures, asynchronous=True, reason="memory-pressure", msg=message)


@contextlib.contextmanager
def guard(client, allowed: int | None = 0, no_workers_timeout: str | None = None) -> Iterator[MemoryGuard]:
    """Subscribe ``client`` to its workers' memory restarts and pauses for the block (:class:`MemoryGuard`;
    ``no_workers_timeout``: the scheduler's, for the message), and raise :class:`MemoryPressureError` from
    what the block raises once they stopped the run."""
    watch = MemoryGuard(client, allowed, no_workers_timeout)
    client.subscribe_topic(TOPIC, watch.on_restart)
    client.subscribe_topic(SCHEDULER_TOPIC, watch.on_scheduler_event)
    _GUARDS.append(watch)
    try:
        with translated():
            yield watch
    finally:
        _GUARDS.remove(watch)
        for topic in (TOPIC, SCHEDULER_TOPIC):
            with contextlib.suppress(Exception):  # the client may be closing already
                client.unsubscribe_topic(topic)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise :class:`MemoryPressureError` from what the block raises when a guard stopped the run, or
    from its ``MemoryError``; anything else (a stop, Ctrl-C / SIGTERM, included) passes unchanged."""
    try:
        yield
    except (MemoryPressureError, *_NOT_OURS):
        raise
    except BaseException as exc:  # noqa: BLE001 - asyncio's CancelledError is a BaseException
        error = _pressure_error(exc)
        if error is None:
            raise
        raise error from exc


def _pressure_error(exc: BaseException) -> MemoryPressureError | None:
    """The memory error that explains ``exc``: a guard's, or this process's MemoryError; else None."""
    for watch in reversed(_GUARDS):
        if watch.error is not None:
            e = watch.error
            return MemoryPressureError(str(e), e.stage, e.memory_limit, len(watch.restarts))
    if isinstance(exc, MemoryError):
        return MemoryPressureError(
            f"{_named_stage()} ran out of memory: MemoryError ({exc}) in this process or a task "
            f"({format_bytes(_available_bytes())} available on this machine now). {REMEDIES}",
            stage=current_stage(),
        )
    return None


def _limit(workers: dict) -> int | None:
    """The largest memory limit of ``workers`` (a scheduler identity's), None when none has one."""
    return max((w.get("memory_limit") or 0 for w in workers.values()), default=0) or None


def _available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits_here(nbytes: int, what: str) -> None:
    """Raise :class:`MemoryPressureError` before gathering ``nbytes`` (``what``) into this process when
    twice that (the parts, then the frame made of them) is more than this machine has available."""
    available = _available_bytes()
    if 2 * nbytes > available:
        raise MemoryPressureError(
            f"{_named_stage()}: gathering {what} ({format_bytes(nbytes)} on the workers) into this "
            f"process needs about {format_bytes(2 * nbytes)}, and {format_bytes(available)} is available "
            f"on this machine. {REMEDIES}",
            stage=current_stage(),
        )
