"""The engine: sync / local / remote connections, ordered results, and the faults a user can meet."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ltv import cluster


def _slow_square(x: int, delay: float = 0.0) -> tuple[int, int]:
    time.sleep(delay * ((x * 7) % 3))  # later items often finish first
    return x * x, os.getpid()


def _die(x: int) -> int:
    os._exit(17)  # the worker process dies mid-task, every time


def test_sync_runs_in_this_process_in_order():
    with cluster.connect({"kind": "sync"}) as engine:
        out = list(engine.map(_slow_square, range(5)))
        assert engine.client is None and engine.n_workers == 1 and engine.dashboard is None
        assert engine.each_worker(os.getpid) == [os.getpid()]
    assert [v for v, _ in out] == [0, 1, 4, 9, 16] and {p for _, p in out} == {os.getpid()}


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="cluster.kind='yarn'"):
        with cluster.connect({"kind": "yarn"}):
            pass
    with pytest.raises(ValueError, match="cluster.address"):
        with cluster.connect({"kind": "remote", "address": None}):
            pass


def test_unreachable_address_fails_in_bounded_time_naming_it():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    started = time.perf_counter()
    with pytest.raises(cluster.ClusterError, match=f"cluster.address={address}"):
        with cluster.connect({"kind": "remote", "address": address, "connect_timeout": "2s"}):
            pass
    assert time.perf_counter() - started < 30


def test_remote_results_come_back_in_input_order_from_both_workers(local_cluster):
    options, _ = local_cluster
    with cluster.connect(options) as engine:
        assert engine.kind == "remote" and engine.n_workers == 2
        out = list(engine.map(_slow_square, range(12), delay=0.05))
        pids = engine.each_worker(os.getpid)
    assert [v for v, _ in out] == [x * x for x in range(12)]
    assert len(set(pids)) == 2 and {p for _, p in out} <= set(pids) and os.getpid() not in pids


def test_a_worker_killed_mid_run_has_its_tasks_retried(local_cluster):
    options, client = local_cluster
    with cluster.connect(options) as engine:
        victim = engine.each_worker(os.getpid)[0]
        results = engine.map(_slow_square, range(16), delay=0.2)
        first = next(results)
        os.kill(victim, signal.SIGKILL)  # the nanny restarts it; Dask reruns what it held or ran
        rest = list(results)
        client.wait_for_workers(2, timeout=120)
    assert [v for v, _ in [first, *rest]] == [x * x for x in range(16)]


def test_a_task_that_keeps_killing_workers_is_named(local_cluster):
    import dask

    options, client = local_cluster
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with cluster.connect(options) as engine:
            with pytest.raises(cluster.ClusterError, match="group-three: the workers running it died"):
                list(engine.map(_die, [3], name=lambda x: "group-three"))
    client.wait_for_workers(2, timeout=120)


def test_a_remote_worker_without_ltv_gets_an_error_that_says_so(tmp_path):
    """A worker whose Python cannot import ltv (here: a broken ltv first on its path) fails the
    connection with a message naming the package, before any task runs."""
    from distributed import LocalCluster

    fake = tmp_path / "site" / "ltv"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no ltv on this worker')\n")
    with LocalCluster(n_workers=0, dashboard_address=":0", scheduler_port=0) as sched:
        env = {**os.environ, "PYTHONPATH": str(fake.parent)}
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", sched.scheduler_address, "--nthreads", "1",
             "--no-dashboard"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            with pytest.raises(cluster.ClusterError, match="cannot import the ltv package"):
                with cluster.connect({"kind": "remote", "address": sched.scheduler_address}):
                    pass
        finally:
            worker.terminate()
            worker.wait(timeout=60)


def test_local_cluster_is_started_and_closed_with_the_block():
    with cluster.connect(
        {"kind": "local", "n_workers": 1, "threads_per_worker": 1, "dashboard_address": ":0"}
    ) as e:
        assert e.kind == "local" and e.n_workers == 1
        assert e.dashboard and e.dashboard.startswith("http://")
        address = e.address
        pid = e.each_worker(os.getpid)[0]
    time.sleep(0.5)
    with pytest.raises(cluster.ClusterError):
        with cluster.connect({"kind": "remote", "address": address, "connect_timeout": "2s"}):
            pass
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the worker process is gone


def test_a_failing_block_still_closes_the_local_cluster():
    seen = {}
    with pytest.raises(RuntimeError, match="boom"):
        with cluster.connect({"kind": "local", "n_workers": 1, "dashboard_address": ":0"}) as e:
            seen["address"] = e.address
            raise RuntimeError("boom")
    with pytest.raises(cluster.ClusterError):
        with cluster.connect({"kind": "remote", "address": seen["address"], "connect_timeout": "2s"}):
            pass
