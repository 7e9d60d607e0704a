"""Concurrent requests of one server process share predicts: whoever runs next takes every waiting request.

MLflow's scoring server runs each request's predict in a thread of its own (``asyncio.to_thread``). A small
request's work is mostly Python under the GIL, so predicts that run together only convoy, and one at a
time wastes the queue: while one request's rows are scored, others wait to be scored alone. Here the
requests waiting when a predict ends are scored as one batch (Arrow tables concatenated; the pipeline's
predictions do not depend on which rows share a call), so eight one-row requests cost about one predict
of eight rows, not eight predicts. This is the "dynamic batching" of model servers (TF Serving, Triton,
Ray Serve's ``@serve.batch``), done with a lock because the requests already live in threads: no timer,
no extra thread, a lone request waits for nobody.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(eq=False)
class _Request:
    table: pa.Table
    result: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = False


class SharedPredicts:
    """``predict(table)`` for many threads at once: requests that wait are scored together.

    ``max_rows`` bounds a batch (a request larger than it runs alone). A batch whose predict fails is
    retried one request at a time, so a failing request fails only itself.
    """

    def __init__(self, predict: Callable[[pa.Table], np.ndarray], max_rows: int = 256, owner=None):
        self._predict = predict
        self.max_rows = int(max_rows)
        self.owner = owner  # what ``predict`` belongs to (the caller's check that it is still current)
        self._queue: list[_Request] = []
        self._queue_lock = threading.Lock()
        self.exclusive = threading.Lock()  # one predict at a time per process; hold it to run one alone
        self.batches = self.requests = 0  # counters for tests and curiosity

    def __call__(self, table: pa.Table) -> np.ndarray:
        request = _Request(table)
        with self._queue_lock:
            self._queue.append(request)
        with self.exclusive:
            if not request.done:  # nobody took it along: run it, with whatever else is waiting
                self._run(self._take(request))
        if request.error is not None:
            raise request.error
        return request.result

    def _take(self, own: _Request) -> list[_Request]:
        """``own`` and the waiting requests that fit in ``max_rows`` (in arrival order)."""
        with self._queue_lock:
            batch, rows, rest = [own], own.table.num_rows, []
            for r in self._queue:
                if r is own:
                    continue
                if rows + r.table.num_rows <= self.max_rows:
                    batch.append(r)
                    rows += r.table.num_rows
                else:
                    rest.append(r)
            self._queue = rest
        return batch

    def _run(self, batch: list[_Request]) -> None:
        self.batches += 1
        self.requests += len(batch)
        if len(batch) > 1:
            try:
                pred = np.asarray(self._predict(pa.concat_tables([r.table for r in batch])))
            except Exception:  # noqa: BLE001 - retried alone below, so each request gets its own error
                pred = None
            if pred is not None and pred.shape[0] == sum(r.table.num_rows for r in batch):
                bounds = np.cumsum([0] + [r.table.num_rows for r in batch])
                for r, lo, hi in zip(batch, bounds[:-1], bounds[1:], strict=True):
                    r.result, r.done = pred[lo:hi], True
                return
        for r in batch:
            try:
                r.result = np.asarray(self._predict(r.table))
            except BaseException as e:  # noqa: BLE001 - handed to the request's own thread
                r.error = e
            r.done = True
