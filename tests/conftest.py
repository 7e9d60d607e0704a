"""Shared fixtures: composed configs, tiny generated data, a private MLflow store per test session."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# compiled trees (ltv.models.native_trees) of the session's models go to a private cache, not ~/.cache;
# subprocesses (train.py / predict.py / the model server) inherit it
os.environ.setdefault("LTV_TREE_CACHE", tempfile.mkdtemp(prefix="ltv-trees-"))


def run_entry(script: str, *overrides: str, cwd: Path, timeout: int = 600, env: dict | None = None):
    """Run an entry script (train.py / predict.py / evaluate.py) in a subprocess; fail with its output."""
    full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    full_env.pop(("LTV_MLFLOW_PARENT_RUN_ID"), None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(overrides)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """A project root for the session's end-to-end runs: data/, mlruns/, outputs/ live under it."""
    return tmp_path_factory.mktemp("ltv-root")


@pytest.fixture(scope="session")
def local_cluster():
    """A 2-worker LocalCluster for the session (no fixed ports, a timeout on every wait): (cluster config
    for ``ltv.cluster.connect`` as ``remote``, the client)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", scheduler_port=0
        ) as cluster,
        Client(cluster, timeout="60s") as client,
    ):
        client.wait_for_workers(2, timeout=120)
        yield {"kind": "remote", "address": cluster.scheduler_address, "connect_timeout": "30s"}, client
