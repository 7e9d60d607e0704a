"""A job that a test stops with SIGTERM: predict.py's path without a model (tests/test_cancellation.py).

``python -m tests.helpers.stoppable_job <output csv> <tracking uri>``: an entry wrapped like the entry
scripts (:func:`ltv.interrupt.entry`) opens an MLflow job run, starts a one-worker LocalCluster and writes
a submission (:func:`ltv.submission.write_submission`) of items scored on the cluster one at a time, each
taking a while, so the temp file exists long before the end. It prints one JSON line (run id, worker
pid) once the cluster is up.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pyarrow as pa

from ltv import cluster
from ltv.interrupt import entry
from ltv.submission import write_submission
from ltv.tracking.store import setup
from ltv.tracking.sweep import start_job_run

ITEMS = 200  # x 0.2 s: far longer than any test waits


def _slow_item(i: int) -> tuple:
    time.sleep(0.2)
    return pa.chunked_array([pa.array([f"row{i}"])]), np.array([float(i)])


@entry
def main(output: str, tracking_uri: str) -> None:
    setup(tracking_uri, "stoppable", os.path.join(os.path.dirname(output), "artifacts"))
    options = {"kind": "local", "n_workers": 1, "threads_per_worker": 1, "dashboard_address": ":0"}
    with start_job_run(run_name="stoppable") as run, cluster.connect(options) as engine:
        (pid,) = engine.each_worker(os.getpid)
        print(json.dumps({"run_id": run.info.run_id, "worker_pid": pid}), flush=True)
        with cluster.stage("score test"):
            write_submission(engine.map(_slow_item, range(ITEMS)), output)


if __name__ == "__main__":
    main(*sys.argv[1:3])
