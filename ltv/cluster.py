"""Where the work runs: dask.distributed, from the calling process to any cluster (the ``cluster`` group).

``connect(cfg.cluster)`` gives an :class:`Engine` for the length of a task:

* ``kind: local`` (the default) starts a ``distributed.LocalCluster`` (worker processes; its keyword
  names: ``n_workers``, ``threads_per_worker``, ``memory_limit``, ``dashboard_address``) and closes it
  when the block ends, also on failure;
* ``kind: sync`` starts nothing: every task runs in the calling process, one after another (debugging,
  the smallest tests);
* ``kind: remote`` connects to a scheduler that is already running at ``address``; nothing is started or
  stopped, and the workers must be able to import ``ltv`` (checked on connect).

The tasks describe their work as functions over files (:meth:`Engine.map`) and as Dask graphs
(``dask.compute`` / ``dask.persist`` use the engine's scheduler inside the block); Dask schedules them,
retries a task whose worker died, and reports errors with the original exception. A worker restarted for
memory stops the run instead (:mod:`ltv.memory_pressure`): past ``cluster.memory_restarts`` such restarts
(0 by default) the block raises :class:`MemoryPressureError` naming the stage that was running (set with
:func:`stage`), the workers' memory limit and what to change; so do workers paused for memory past
``no_workers_timeout`` (a LocalCluster's; a remote scheduler has its own), and a ``MemoryError`` here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import dask

from ltv import memory_pressure
from ltv.memory_pressure import MemoryPressureError, stage

__all__ = ["ClusterError", "Engine", "MemoryPressureError", "connect", "stage", "tag_run"]

log = logging.getLogger(__name__)

KINDS = ("local", "sync", "remote")
_LOCAL_KEYS = ("n_workers", "threads_per_worker", "memory_limit", "dashboard_address")


class ClusterError(RuntimeError):
    """The cluster could not be reached or used (the message names the address and the cause)."""


class Engine:
    """A connected engine: ``client`` is a ``distributed.Client``, or None for ``kind: sync``."""

    def __init__(self, kind: str, client=None, address: str | None = None):
        self.kind, self.client, self.address = kind, client, address

    @property
    def dashboard(self) -> str | None:
        """The dashboard's URL (None without a cluster, or without bokeh installed)."""
        if self.client is None:
            return None
        try:
            return self.client.dashboard_link
        except Exception:  # noqa: BLE001 - no dashboard service on the scheduler
            return None

    @property
    def n_workers(self) -> int:
        """Worker processes (1 for sync: the calling process)."""
        if self.client is None:
            return 1
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    @property
    def n_threads(self) -> int:
        """Task slots over all workers (1 for sync)."""
        if self.client is None:
            return 1
        return sum(self.client.nthreads().values())

    def each_worker(self, fn: Callable, *args) -> list:
        """``fn(*args)`` once in every worker process (a task pinned to each), e.g. to load a model before
        the clock starts; its errors are raised here. Without a cluster, once here."""
        if self.client is None:
            return [fn(*args)]
        workers = list(self.client.scheduler_info(n_workers=-1)["workers"])
        futures = [
            self.client.submit(fn, *args, workers=[w], allow_other_workers=False, pure=False, key=_key(fn, i))
            for i, w in enumerate(workers)
        ]
        return self.client.gather(futures)

    def check_gather(self, *collections, what: str) -> None:
        """Raise :class:`MemoryPressureError` before ``collections`` (persisted on the cluster) are gathered
        into this process when they would not fit in the memory this machine has available (twice their
        size on the workers: the parts, then what is made of them), once they are computed; a collection
        that is not persisted counts nothing. Without a cluster the data is here already: no check."""
        if self.client is None:
            return
        from distributed import futures_of, wait

        futures = futures_of(list(collections))
        wait(futures)
        keys = [f.key for f in futures if f.status == "finished"]
        memory_pressure.check_fits_here(sum(self.client.nbytes(keys=keys, summary=False).values()), what)

    def map(self, fn: Callable, items: Iterable, *, name: Callable[[Any], str] = str, **kwargs) -> Iterator:
        """``fn(item, **kwargs)`` per item, yielded in input order.

        With a cluster every item is a task (submitted at once, earlier items first in priority) that runs
        wherever Dask places it; its result is released once yielded, and closing the iterator cancels
        what has not run. A task whose worker died is retried by Dask (``allowed-failures``); when it
        cannot be, :class:`ClusterError` names the item (``name(item)``). A worker restarted for memory
        stops the run (:class:`MemoryPressureError`, raised by the engine's block or the :func:`stage`). Without one, each ``fn`` call
        runs here when the consumer asks for the next result.
        """
        if self.client is None:
            for item in items:
                yield fn(item, **kwargs)
            return
        from distributed import KilledWorker

        items = list(items)
        futures = [
            self.client.submit(fn, item, **kwargs, pure=False, priority=len(items) - i, key=_key(fn, i))
            for i, item in enumerate(items)
        ]
        try:
            for item, future in zip(items, futures, strict=True):
                try:
                    result = future.result()
                except KilledWorker as exc:
                    raise ClusterError(
                        f"{name(item)}: the workers running it died {exc.args[-1] if exc.args else ''}"
                        " (killed, or out of memory: see the worker logs / the dashboard)"
                    ) from exc
                future.release()
                yield result
        finally:
            self.client.cancel([f for f in futures if not f.done()])


def _key(fn: Callable, i: int) -> str:
    import uuid

    return f"{getattr(fn, '__name__', 'task')}-{i}-{uuid.uuid4().hex[:8]}"


def _options(cfg) -> dict:
    if cfg is None:
        return {"kind": "sync"}
    if isinstance(cfg, Mapping):
        return dict(cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


@contextlib.contextmanager
def connect(cfg) -> Iterator[Engine]:
    """An :class:`Engine` for the block, as ``cfg`` (the ``cluster`` config) says; see the module doc.

    Raises
    ------
    ValueError
        ``cluster.kind`` is not one of local / sync / remote, or remote has no ``address``.
    ClusterError
        The scheduler at ``cluster.address`` does not answer within ``connect_timeout``, or its workers
        cannot import ``ltv``.
    MemoryPressureError
        From what the block raised once more than ``memory_restarts`` workers (0 by default; None: Dask's
        own retries only) were restarted for memory, or from a ``MemoryError`` of the block.
    """
    opts = _options(cfg)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines drown the task's own
    kind = str(opts.get("kind", "local"))
    if kind not in KINDS:
        raise ValueError(f"cluster.kind={kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "sync":
        with dask.config.set(scheduler="sync"), memory_pressure.translated():
            yield Engine("sync")
        return
    timeout = opts.get("connect_timeout") or "60s"
    allowed = opts.get("memory_restarts", 0)
    if kind == "remote":
        address = opts.get("address")
        if not address:
            raise ValueError("cluster=remote needs cluster.address, e.g. cluster.address=tcp://host:8786")
        with _client(address, timeout) as client:
            _check_workers(client, address)
            with memory_pressure.guard(client, allowed):
                yield _announce(Engine("remote", client, address))
        return
    from distributed import LocalCluster

    kwargs = {k: opts[k] for k in _LOCAL_KEYS if opts.get(k) is not None}
    started = time.perf_counter()
    # read by the scheduler when it starts: tasks waiting that long with no running worker (all paused
    # for memory, or gone) fail, and the memory guard names a pause
    waiting = opts.get("no_workers_timeout")
    with dask.config.set({"distributed.scheduler.no-workers-timeout": waiting} if waiting else {}):
        local = LocalCluster(processes=True, **kwargs)
    with (
        local as cluster,
        _client(cluster, timeout) as client,
        memory_pressure.guard(client, allowed, no_workers_timeout=waiting),
    ):
        log.info("local cluster up in %.1fs", time.perf_counter() - started)
        yield _announce(Engine("local", client, cluster.scheduler_address))


@contextlib.contextmanager
def _client(address, timeout):
    from distributed import Client

    try:
        client = Client(address, timeout=timeout, set_as_default=True)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at cluster.address={address} within {timeout}: {exc}"
        ) from exc
    try:
        yield client
    finally:
        client.close()


def _check_workers(client, address: str) -> None:
    """Fail with a clear message when a worker of a remote cluster cannot import ``ltv``."""
    try:
        client.wait_for_workers(1, timeout="30s")
    except (TimeoutError, OSError) as exc:
        raise ClusterError(
            f"the Dask scheduler at {address} has no worker (start `dask worker {address}`)"
        ) from exc
    # eval is pickled by reference (a builtin), so the check itself needs nothing from ltv on the worker
    try:
        client.run(eval, "__import__('ltv.cluster').__name__")
    except ImportError as exc:
        raise ClusterError(
            f"a Dask worker of {address} cannot import the ltv package ({exc}): install the project on every "
            "worker (pip install <the project>) with the same versions as the client"
        ) from exc


def _announce(engine: Engine) -> Engine:
    link = engine.dashboard
    log.info(
        "Dask %s cluster at %s: %d workers, %d threads; dashboard %s",
        engine.kind,
        engine.address,
        engine.n_workers,
        engine.n_threads,
        link or "(not available: install bokeh)",
    )
    return engine


def tag_run(engine: Engine) -> None:
    """Record the engine on the active MLflow run (kind, workers, dashboard URL)."""
    import mlflow

    tags = {"cluster.kind": engine.kind, "cluster.workers": str(engine.n_workers)}
    if engine.address:
        tags["cluster.address"] = str(engine.address)
    if engine.dashboard:
        tags["cluster.dashboard"] = engine.dashboard
    mlflow.set_tags(tags)
