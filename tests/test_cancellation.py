"""A run stopped by SIGTERM or Ctrl-C: no temp file left, its cluster closed, its MLflow run KILLED."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from omegaconf import OmegaConf

from ltv import interrupt
from ltv.tracking.store import PARENT_RUN_ENV
from ltv.tracking.sweep import parent_run, start_job_run
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one costs seconds); each test uses its own experiment."""
    import os

    before, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield f"sqlite:///{tmp_path_factory.mktemp('tracking')}/mlruns/mlflow.db"
    mlflow.set_tracking_uri(before)
    mlflow.set_registry_uri(registry)
    for k, v in env.items():  # set_registry_uri exports its URI to child processes: later tests' children
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def cfg(store, request, monkeypatch):
    from ltv.tracking.store import setup
    from ltv.tracking.sweep import tracking_from_config

    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    cfg = OmegaConf.create({"tracking": {"uri": store, "experiment": request.node.name}})
    setup(*tracking_from_config(cfg))
    return cfg


def _status(run_id: str) -> str:
    return mlflow.MlflowClient().get_run(run_id).info.status


def _wait_for_file(folder: Path, pattern: str, proc: subprocess.Popen, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} in {folder} (job exit status {proc.poll()}): {proc.stderr.read()}")


def test_sigterm_mid_write_leaves_no_temp_file_closes_the_cluster_and_kills_the_run(tmp_path):
    import psutil

    out, db = tmp_path / "submission.csv", f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    env.pop(PARENT_RUN_ENV, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.stoppable_job", str(out), db],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        started = json.loads(proc.stdout.readline())
        _wait_for_file(tmp_path, ".submission.csv.tmp-*", proc)  # the write is under way
        time.sleep(0.5)  # a few items into it
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file
    assert not out.exists()
    assert not psutil.pid_exists(started["worker_pid"])  # the LocalCluster was closed
    mlflow.set_tracking_uri(db)
    assert _status(started["run_id"]) == "KILLED"


@pytest.mark.parametrize(
    "raised, expected",
    [(KeyboardInterrupt(), "KILLED"), (interrupt.Terminated("stopped by SIGTERM"), "KILLED"),
     (ValueError("bad input"), "FAILED"), (None, "FINISHED")],
)  # fmt: skip
def test_a_job_run_ends_killed_when_stopped_failed_when_it_fails(cfg, raised, expected):
    with pytest.raises(type(raised)) if raised else contextlib.nullcontext():
        with start_job_run(run_name="job") as run:
            if raised:
                raise raised
    assert _status(run.info.run_id) == expected and mlflow.active_run() is None


def test_a_sweep_parent_stopped_by_sigterm_ends_killed_with_its_job(cfg):
    with pytest.raises(interrupt.Terminated):
        with parent_run(cfg, run_name="sweep") as parent, start_job_run(run_name="job") as run:
            raise interrupt.Terminated("stopped by SIGTERM")
    assert (_status(parent), _status(run.info.run_id)) == ("KILLED", "KILLED")


def test_the_entry_scripts_are_wrapped_for_sigterm():
    import runpy

    wrapper = interrupt.entry(lambda: None).__code__
    for script in ("train.py", "predict.py", "evaluate.py"):
        main = runpy.run_path(str(ROOT / script), run_name="not_main")["main"]
        assert main.__code__ is wrapper, script
