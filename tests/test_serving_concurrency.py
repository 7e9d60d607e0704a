"""The served model under concurrent requests: one predict at a time per process (see pyfunc_model.py).

MLflow's scoring server runs every request's predict in a thread of its own; predicts that run together
only convoy on the GIL. The throughput itself is a benchmark (``bench/serve.py --clients 1,8``).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from ltv.tracking.pyfunc_model import LTVPyfuncModel

ROW = {"hour": "09", "weekday": 4, "advertiser_bundle": "abc"}


class OverlapRecorder:
    """A pipeline stub that records how many of its predicts ever ran at once."""

    def __init__(self) -> None:
        self.active = self.most = self.calls = 0
        self._lock = threading.Lock()

    def predict(self, table):
        with self._lock:
            self.active += 1
            self.calls += 1
            self.most = max(self.most, self.active)
        time.sleep(0.005)  # releases the GIL, as a real predict's Arrow / numpy calls do
        with self._lock:
            self.active -= 1
        return np.full(table.num_rows, 0.5)


def test_concurrent_requests_predict_one_at_a_time_with_correct_answers():
    model = LTVPyfuncModel()
    model.pipeline = OverlapRecorder()
    frames = [pd.DataFrame([ROW] * (1 + i % 3)) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda f: model.predict(None, f), frames))
    assert model.pipeline.calls == 40 and model.pipeline.most == 1
    assert [len(o) for o in outs] == [len(f) for f in frames]
    assert all((o["iap_revenue_d7"] == 0.5).all() for o in outs)


def test_a_failed_request_does_not_hold_the_lock():
    model = LTVPyfuncModel()
    model.pipeline = OverlapRecorder()
    bad = pd.DataFrame([{**ROW, "weekday": "monday"}])
    for _ in range(2):
        try:
            model.predict(None, bad)
        except Exception as exc:  # noqa: BLE001 - the contract error is what is expected here
            assert "weekday" in str(exc)
        else:
            raise AssertionError("a non-numeric weekday must be rejected")
    assert len(model.predict(None, pd.DataFrame([ROW]))) == 1
