"""Memory of a process tree, for the benchmarks: a process and everything it started (Dask's nannies and
workers, LightGBM's threads live inside them), summed, since a run's cost is all of it."""

from __future__ import annotations

import threading

import psutil


def tree_rss_mb(pid: int | None = None) -> float:
    """Resident memory (MB) of process ``pid`` (default: this one) plus all its descendants; 0 once it is gone."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for p in family:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            pass
    return total / 2**20


class PeakMemory:
    """Peak of :func:`tree_rss_mb` of ``pid`` over a ``with`` block, sampled every ``every_s`` seconds on a
    thread (``peak`` in MB)."""

    def __init__(self, pid: int | None = None, every_s: float = 0.2):
        self.pid, self.every_s, self.peak = pid, every_s, 0.0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, tree_rss_mb(self.pid))

    def __enter__(self):
        self.peak = tree_rss_mb(self.pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss_mb(self.pid))
