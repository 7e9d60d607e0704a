"""The served model under concurrent requests: waiting requests share one predict (ltv/serving/batching.py).

MLflow's scoring server runs every request's predict in a thread of its own. Predicts never overlap in a
process; the requests that wait while one runs are scored together and each gets its own rows back. The
throughput itself is a benchmark (``bench/serve.py --clients 1,8``).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest

from ltv.serving.batching import SharedPredicts
from ltv.tracking.pyfunc_model import LTVPyfuncModel
from tests.helpers.stand_in import ConstantishPipeline, contract_rows


class Recorder:
    """Wraps a pipeline: records how many predicts ran at once, their sizes, and fails on a marked row."""

    def __init__(self, pipeline, poison: str | None = None) -> None:
        self.pipeline, self.poison = pipeline, poison
        self.active = self.most = 0
        self.sizes: list[int] = []
        self._lock = threading.Lock()

    def predict(self, table: pa.Table) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.sizes.append(table.num_rows)
        try:
            time.sleep(0.01)  # releases the GIL, as a real predict's Arrow / numpy calls do
            if self.poison is not None and self.poison in table.column("row_id").to_pylist():
                raise ValueError(f"row {self.poison} cannot be scored")
            return self.pipeline.predict(table)
        finally:
            with self._lock:
                self.active -= 1


def _requests(n: int) -> list[pa.Table]:
    table = contract_rows(3 * n, seed=5)
    sizes = [1 + i % 3 for i in range(n)]
    bounds = np.cumsum([0, *sizes])
    return [table.slice(lo, hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def test_concurrent_requests_share_predicts_and_each_gets_its_own_rows():
    model = LTVPyfuncModel()
    model.pipeline = Recorder(ConstantishPipeline(1.0))
    tables = _requests(40)
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda t: model.predict(None, t.to_pandas()), tables))
    expected = [ConstantishPipeline(1.0).predict(t) for t in tables]
    for out, exp in zip(outs, expected, strict=True):
        np.testing.assert_allclose(out["iap_revenue_d7"].to_numpy(), exp, rtol=1e-12, atol=0)
    assert np.std(np.concatenate(expected)) > 0  # the rows differ, so a mix-up would show
    recorder = model.pipeline
    assert recorder.most == 1  # never two predicts at once in one process
    assert sum(recorder.sizes) == sum(t.num_rows for t in tables)
    assert len(recorder.sizes) < len(tables) and max(recorder.sizes) > 3  # waiting requests were batched


def test_a_failing_request_fails_alone_and_the_others_get_answers():
    tables = _requests(24)
    poison = tables[5].column("row_id")[0].as_py()
    shared = SharedPredicts(Recorder(ConstantishPipeline(1.0), poison=poison).predict)
    results: dict[int, object] = {}

    def call(i):
        try:
            results[i] = shared(tables[i])
        except ValueError as e:
            results[i] = e

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, range(len(tables))))
    assert isinstance(results[5], ValueError) and poison in str(results[5])
    for i, t in enumerate(tables):
        if i != 5:
            np.testing.assert_allclose(results[i], ConstantishPipeline(1.0).predict(t), rtol=1e-12)
    assert shared.requests >= len(tables)


def test_batches_stay_within_max_rows_and_a_big_request_runs_alone():
    recorder = Recorder(ConstantishPipeline(1.0))
    shared = SharedPredicts(recorder.predict, max_rows=4)
    tables = [*_requests(30), contract_rows(9, seed=8)]
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(shared, tables))
    assert [len(o) for o in outs] == [t.num_rows for t in tables]
    assert 9 in recorder.sizes and all(s <= 4 for s in recorder.sizes if s != 9)


def test_a_failed_request_does_not_block_the_next_one():
    model = LTVPyfuncModel()
    model.pipeline = ConstantishPipeline(1.0)
    good = contract_rows(2, seed=3).to_pandas()
    bad = good.assign(weekday="monday")
    for _ in range(2):
        with pytest.raises(Exception, match="weekday"):
            model.predict(None, bad)
    assert len(model.predict(None, good)) == 2
