"""One booster trained on a Dask cluster's workers (``train.distributed=true``): where its Dataset comes
from and who trains it change, the fit does not.

:func:`ltv.models.lgbm_fit.fit_booster` hands its rows here when they are :class:`~ltv.models.blocks.Blocks`
bound to a cluster (:meth:`Blocks.on`). The blocks are dealt to the workers whole (balanced by rows), and
every worker runs the very function a one-process fit runs (``lgbm_fit.train_dataset``: binned Datasets
from its blocks through ``lightgbm.Sequence`` batches, then ``lightgbm.train``), joined by LightGBM's own
data-parallel network (``tree_learner=data``: histograms all-reduced, the same trees on every worker). So
each worker holds its share of the train rows as LightGBM's binned Dataset (~1 byte a feature), never a
float matrix of them, and nothing of them comes to this process.

Early stopping works as in one process (``lightgbm.dask`` cannot early-stop, LightGBM #3712): every worker
bins the whole early-stopping set by the shared bin mappers, so every worker sees the same model, the same
valid metric and stops at the same round. The first worker's booster comes back; its rounds and valid
metric reach the running fit stage's progress line as Dask events (:class:`_Rounds`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import time
import uuid
from urllib.parse import urlparse

import lightgbm as lgb
import numpy as np

from ltv.models import fitting

log = logging.getLogger(__name__)
NETWORK_TIMEOUT_MIN = 30  # LightGBM's socket time-out: a worker lost mid-fit fails the fit, not hangs it


def deal(blocks, n_workers: int) -> list[tuple[object, np.ndarray]]:
    """``blocks``' parts dealt to at most ``n_workers`` shares, whole parts balanced by rows (largest first
    to the lightest share); returns (Blocks of the share, the share's row positions in ``blocks``) for each
    non-empty share, positions ascending."""
    sizes = [len(p) for p in blocks.parts]
    bounds = np.cumsum([0, *sizes])
    shares: list[list[int]] = [[] for _ in range(max(1, min(n_workers, len(sizes))))]
    load = [0] * len(shares)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        j = int(np.argmin(load))
        shares[j].append(i)
        load[j] += sizes[i]
    out = []
    for parts in shares:
        parts.sort()
        rows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in parts])
        out.append((dataclasses.replace(blocks, parts=[blocks.parts[i] for i in parts], client=None), rows))
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


class _Network:
    """LightGBM's process-wide network (``Booster.set_network``), opened before the Datasets are built (the
    bin mappers are found jointly) and closed after the fit."""

    def __init__(self, machines: str, port: int, n: int):
        self.machines, self.port, self.n = machines, port, n
        self._network = False

    def __enter__(self):
        lgb.Booster.set_network(self, self.machines, self.port, NETWORK_TIMEOUT_MIN, self.n)
        return self

    def __exit__(self, *exc):
        lgb.Booster.free_network(self)


class _Rounds:
    """LightGBM callback on the first worker: its round and first valid metric, sent to the client as a
    Dask event on ``topic`` at most every ``every_s`` seconds and at the last round."""

    order = 5

    def __init__(self, topic: str, every_s: float = 1.0):
        self.topic, self.every_s, self._last = topic, float(every_s), 0.0

    def __call__(self, env) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s and env.iteration + 1 < env.end_iteration:
            return
        self._last = now
        from distributed import get_worker

        get_worker().log_event(
            self.topic,
            {"round": env.iteration + 1, "total": env.end_iteration, "valid": fitting.valid_text(env)},
        )


def _on_worker(train, network, params, X, y, weight, init_score, eval_set, eval_init_score, rounds,
               patience, feval, topic):  # fmt: skip
    """One worker's part of the fit: ``train`` (``lgbm_fit.train_dataset``) inside the network."""
    import os

    from distributed import get_worker

    missing = [p.source for p in X.parts if isinstance(p.source, str) and not os.path.exists(p.source)]
    if missing:
        raise FileNotFoundError(
            f"worker {get_worker().address} cannot read the train block {missing[0]}: train.distributed=true "
            "needs train.block_dir to be a folder every worker and the client see at the same path"
        )
    threads = ("num_threads", "num_thread", "nthread", "nthreads", "n_jobs")  # LightGBM's aliases
    params = {
        **{k: v for k, v in params.items() if k not in threads},
        "num_threads": get_worker().state.nthreads,
    }
    callbacks = [] if topic is None else [_Rounds(topic)]
    joined = contextlib.nullcontext()  # one share: no network
    if network is not None:
        params.update(tree_learner=params.get("tree_learner", "data"), num_machines=network[2])
        joined = _Network(*network)
    with joined:
        fitted = train(params, rounds, X, y, weight, init_score, eval_set, eval_init_score, patience, feval,
                       callbacks)  # fmt: skip
    return fitted if topic is not None else None  # the first worker's booster comes back


def fit_on_cluster(train, client, params: dict, rounds: int, X, y, weight, init_score, eval_set,
                   eval_init_score, patience, feval):  # fmt: skip
    """``train(params, rounds, X, y, ...)`` (``lgbm_fit.train_dataset``) run by the workers of ``client`` on
    their shares of Blocks ``X``; returns the first worker's (booster, valid curves)."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    shares = deal(X, len(workers))
    workers = workers[: len(shares)]
    ports = client.run(_free_port, workers=workers) if len(shares) > 1 else {}
    machines = ",".join(f"{urlparse(w).hostname}:{ports[w]}" for w in workers)
    topic = f"ltv-rounds-{uuid.uuid4().hex}"
    entry = fitting.current_stage()

    def follow(event):
        msg = event[1]
        if entry is not None:
            entry.round, entry.total = max(entry.round or 0, int(msg["round"])), int(msg["total"])
            entry.valid = msg["valid"] or entry.valid

    def cut(values, rows):
        return None if values is None else np.asarray(values)[rows]

    if eval_set is not None:  # one copy sent to each worker, not one in each task's arguments
        eval_set = client.scatter(eval_set, broadcast=True, hash=False)
    client.subscribe_topic(topic, follow)
    log.info("training a booster on %d workers: %s rows in shares of %s", len(shares), f"{len(X):,}",
             ", ".join(f"{len(rows):,}" for _, rows in shares))  # fmt: skip
    try:
        futures = [
            client.submit(
                _on_worker,
                train,
                (machines, ports[w], len(shares)) if ports else None,
                params,
                share,
                cut(y, rows),
                cut(weight, rows),
                cut(init_score, rows),
                eval_set,
                eval_init_score,
                rounds,
                patience,
                feval,
                topic if i == 0 else None,
                workers=[w],
                allow_other_workers=False,
                pure=False,
            )  # fmt: skip
            for i, (w, (share, rows)) in enumerate(zip(workers, shares, strict=True))
        ]
        return _gather(client, futures, workers)[0]
    finally:
        client.unsubscribe_topic(topic)


def _gather(client, futures, workers: list[str]) -> list:
    """The fit's results; a worker that leaves (restarted, lost) fails the fit at once: its share is pinned
    to it, and the other workers wait for it in LightGBM's network."""
    from distributed import wait

    while True:
        try:
            wait(futures, timeout=2)
        except TimeoutError:
            pass
        if all(f.done() for f in futures) or any(f.status == "error" for f in futures):
            return client.gather(futures)
        gone = sorted(set(workers) - set(client.scheduler_info(n_workers=-1)["workers"]))
        if gone:
            client.cancel(futures)
            raise RuntimeError(
                f"worker {gone[0]} left the cluster while it trained its share of a booster (restarted for "
                "memory, or lost): the distributed fit stops. Give each worker more memory "
                "(cluster.memory_limit) or add workers"
            )
