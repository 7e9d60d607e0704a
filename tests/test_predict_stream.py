"""Streaming batch scoring: every row once, atomic output, nothing left behind on failure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ltv.tasks.predict import _SeenIds, score_to_csv


class _Doubler:
    """Stand-in pipeline: prediction = 2 * release_msrp."""

    def __init__(self, fail_on_batch: int | None = None):
        self.calls = 0
        self.fail_on_batch = fail_on_batch

    def predict(self, table: pa.Table) -> np.ndarray:
        self.calls += 1
        if self.fail_on_batch == self.calls:
            raise KeyboardInterrupt("simulated interrupt")
        return 2.0 * table.column("release_msrp").to_numpy()


def _batch(ids, values):
    return pa.table({"row_id": pa.array(ids, pa.string()), "release_msrp": pa.array(values, pa.float64())})


def test_every_row_once_and_values(tmp_path):
    batches = [_batch(["a", "b"], [1.0, 2.0]), _batch(["c", "a"], [3.0, 9.0]), _batch(["d"], [0.5])]
    out = tmp_path / "sub.csv"
    stats = score_to_csv(_Doubler(), iter(batches), out)
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["row_id", "iap_revenue_d7"]
    assert sub.row_id.tolist() == ["a", "b", "c", "d"]  # the duplicate 'a' of batch 2 is dropped
    assert sub.iap_revenue_d7.tolist() == [2.0, 4.0, 6.0, 1.0]  # the first 'a' wins
    assert stats["rows"] == 4 and stats["duplicates"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


def test_interrupted_run_leaves_no_file_and_keeps_old_one(tmp_path):
    out = tmp_path / "sub.csv"
    out.write_text("row_id,iap_revenue_d7\nold,1\n")
    batches = [_batch(["a"], [1.0]), _batch(["b"], [1.0])]
    with pytest.raises(KeyboardInterrupt):
        score_to_csv(_Doubler(fail_on_batch=2), iter(batches), out)
    assert out.read_text() == "row_id,iap_revenue_d7\nold,1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


def test_empty_input_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        score_to_csv(_Doubler(), iter([]), tmp_path / "sub.csv")
    assert list(tmp_path.iterdir()) == []


def test_seen_ids_across_many_batches():
    seen = _SeenIds()
    rng = np.random.default_rng(0)
    ids = pd.Series([f"id{i}" for i in rng.integers(0, 3000, size=20_000)])
    kept = np.concatenate(
        [seen.new_mask(ids.iloc[i : i + 700].reset_index(drop=True)) for i in range(0, 20_000, 700)]
    )
    assert kept.sum() == ids.nunique()
    assert ids[kept].is_unique


def test_coalesce_groups_small_tables_without_losing_rows():
    from ltv.tasks.predict import coalesce

    tables = [
        _batch([f"r{i}_{j}" for j in range(n)], [float(j) for j in range(n)])
        for i, n in enumerate([3, 4, 2, 7, 1])
    ]
    batches = list(coalesce(iter(tables), batch_rows=6))
    assert [b.num_rows for b in batches] == [7, 9, 1]
    assert sum((b.column("row_id").to_pylist() for b in batches), []) == sum(
        (t.column("row_id").to_pylist() for t in tables), []
    )
