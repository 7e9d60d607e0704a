"""Memory pressure gets an answer, not a loop: a worker restarted for memory, or a process that ran short,
stops the run with MemoryPressureError naming the stage, the limit and what to change."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from ltv import cluster, memory_pressure

LIMIT = 400 * 2**20  # per worker: the nanny restarts a worker at 95% of it (~380 MiB)
REMEDIES = (
    "data.splits.train.fraction=0.15",
    "cluster.memory_limit=",
    "cluster=remote",
    "train.distributed=true",
)


def _allocate_past_the_limit(i: int) -> int:
    """Grows by 10 MiB every 20 ms up to 1 GiB (the nanny polls every 100 ms), then holds it."""
    chunks = []
    while len(chunks) < 100:
        chunks.append(np.ones(10 * 2**20 // 8))  # written, so resident
        time.sleep(0.02)
    time.sleep(30)
    return len(chunks)


_KEPT: list = []  # memory a task leaves behind in its worker, as a leak would


def _stay_above_the_pause(i: int) -> int:
    """Grows this worker to 87% of its limit (paused at 80%, restarted at 95%) and keeps that memory."""
    import psutil
    from distributed import get_worker

    limit, process = get_worker().memory_manager.memory_limit, psutil.Process()
    while process.memory_info().rss < 0.87 * limit:
        _KEPT.append(np.ones(2 * 2**20 // 8))
    time.sleep(1.0)  # long enough for the memory monitor to pause the worker before the next task starts
    return i


@pytest.fixture(scope="module")
def small_cluster():
    """One worker with a 400 MiB memory limit: (cluster config for ``connect`` as ``remote``, client)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, memory_limit=LIMIT, processes=True,
                     dashboard_address=":0", scheduler_port=0) as lc,
        Client(lc, timeout="60s") as client,
    ):  # fmt: skip
        client.wait_for_workers(1, timeout=120)
        yield {"kind": "remote", "address": lc.scheduler_address, "connect_timeout": "30s"}, client


def _assert_names_stage_limit_and_remedies(error: cluster.MemoryPressureError, stage: str) -> None:
    message = str(error)
    assert f"{stage!r} ran out of memory" in message and "memory limit of 400.00 MiB per worker" in message
    assert all(r in message for r in REMEDIES), message
    assert error.stage == stage and error.memory_limit == LIMIT


def test_a_local_worker_past_its_limit_stops_the_run_at_the_first_restart():
    options = {"kind": "local", "n_workers": 1, "threads_per_worker": 1, "memory_limit": "400MiB",
               "dashboard_address": ":0"}  # fmt: skip
    started = time.perf_counter()
    with pytest.raises(cluster.MemoryPressureError) as caught:
        with cluster.connect(options) as engine:
            (pid,) = engine.each_worker(os.getpid)
            connected = time.perf_counter()
            with cluster.stage("load train"):
                list(engine.map(_allocate_past_the_limit, range(3)))
    assert time.perf_counter() - connected < 20  # not a loop: ~1 s of allocation, then the answer
    _assert_names_stage_limit_and_remedies(caught.value, "load train")
    assert caught.value.restarts == 1 and "cluster.memory_restarts=0" in str(caught.value)
    assert time.perf_counter() - started < 60
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the cluster was closed


def test_allowed_restarts_are_recomputed_then_the_run_stops_and_stays_stopped(small_cluster):
    options, client = small_cluster
    before = len(client.get_events(memory_pressure.TOPIC))
    with pytest.raises(cluster.MemoryPressureError) as caught:
        with cluster.connect({**options, "memory_restarts": 1}) as engine:
            with cluster.stage("fit"), cluster.stage("fit classifier"):
                engine.client.submit(_allocate_past_the_limit, 0, pure=False).result()
    _assert_names_stage_limit_and_remedies(caught.value, "fit > fit classifier")
    assert caught.value.restarts == 2 and "cluster.memory_restarts=1" in str(caught.value)
    client.wait_for_workers(1, timeout=60)
    time.sleep(3)  # a loop would have restarted the worker again by now
    assert len(client.get_events(memory_pressure.TOPIC)) - before == 2
    assert sum(len(keys) for keys in client.processing().values()) == 0  # nothing left running


def test_workers_paused_for_good_stop_the_run_after_no_workers_timeout():
    options = {"kind": "local", "n_workers": 1, "threads_per_worker": 1, "memory_limit": "400MiB",
               "dashboard_address": ":0", "no_workers_timeout": "2s"}  # fmt: skip
    with pytest.raises(cluster.MemoryPressureError) as caught:
        with cluster.connect(options) as engine:
            connected = time.perf_counter()
            with cluster.stage("features fit"):
                list(engine.map(_stay_above_the_pause, range(6)))
    assert time.perf_counter() - connected < 20  # ~2 s of no_workers_timeout, not forever
    message = str(caught.value)
    assert "'features fit' ran out of memory: 1 of 1 worker(s) paused above 80%" in message
    assert "waited 2s with no running worker" in message and all(r in message for r in REMEDIES)
    assert caught.value.memory_limit == LIMIT and caught.value.restarts == 0


def test_a_memory_error_in_this_process_names_the_stage(monkeypatch):
    monkeypatch.setattr(memory_pressure, "_available_bytes", lambda: 3 * 2**30)
    with pytest.raises(cluster.MemoryPressureError) as caught:
        with cluster.connect({"kind": "sync"}), cluster.stage("holdout"):
            raise MemoryError("Unable to allocate 8.00 TiB for an array")
    message = str(caught.value)
    assert "'holdout' ran out of memory: MemoryError (Unable to allocate 8.00 TiB" in message
    assert "3.00 GiB available on this machine" in message and all(r in message for r in REMEDIES)
    assert isinstance(caught.value.__cause__, MemoryError) and caught.value.stage == "holdout"


@pytest.mark.parametrize("raised", [ValueError("bad row"), KeyboardInterrupt()])
def test_other_errors_and_stops_pass_through_a_stage_unchanged(raised):
    with pytest.raises(type(raised)) as caught:
        with cluster.connect({"kind": "sync"}), cluster.stage("features fit"):
            raise raised
    assert caught.value is raised and memory_pressure.current_stage() == "an unnamed stage"


def test_gathering_more_than_this_machine_has_is_refused_before_it_starts(small_cluster, monkeypatch):
    import dask.dataframe as dd
    import pandas as pd

    options, _ = small_cluster
    frame = pd.DataFrame({"x": np.arange(100_000, dtype=np.int64)})  # 800,000 bytes of values
    with cluster.connect(options) as engine:
        persisted = dd.from_pandas(frame, npartitions=4).persist()
        monkeypatch.setattr(memory_pressure, "_available_bytes", lambda: 10 * 2**30)
        engine.check_gather(persisted, what="the train split")  # fits
        monkeypatch.setattr(memory_pressure, "_available_bytes", lambda: 2**20)
        with pytest.raises(cluster.MemoryPressureError) as caught, cluster.stage("load train"):
            engine.check_gather(persisted, what="the train split")
    message = str(caught.value)
    assert "'load train': gathering the train split (" in message and "1.00 MiB is available" in message
    assert "train.distributed=true" in message
    with cluster.connect({"kind": "sync"}) as engine:
        engine.check_gather(dd.from_pandas(frame, npartitions=2), what="nothing")  # in-process: no check


def test_stages_of_threads_side_by_side_are_named_each():
    import threading

    inside, release = threading.Barrier(2), threading.Event()

    def fit(name):
        with cluster.stage("fit"), cluster.stage(name):
            inside.wait(timeout=10)
            release.wait(timeout=10)

    worker = threading.Thread(target=fit, args=("fit regressor",))
    worker.start()
    with cluster.stage("fit"), cluster.stage("fit classifier"):
        inside.wait(timeout=10)
        seen = memory_pressure.current_stage()
        release.set()
    worker.join(timeout=10)
    assert sorted(seen.split(" | ")) == ["fit > fit classifier", "fit > fit regressor"]
    assert memory_pressure.current_stage() == "an unnamed stage"
