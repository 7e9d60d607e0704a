"""Streaming batch scoring: every row once, atomic output, nothing left behind on failure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ltv.data.schema import SeenRowIds
from ltv.tasks.predict import score_to_csv


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
    seen = SeenRowIds()
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


class _TwoStep(_Doubler):
    """Stand-in with the prepare / predict_prepared split; records the thread each step ran on."""

    def __init__(self, fail_prepare_on: int | None = None):
        super().__init__()
        self.prepare_threads, self.prepared = set(), 0
        self.fail_prepare_on = fail_prepare_on

    def prepare(self, table):
        import threading

        self.prepared += 1
        if self.fail_prepare_on == self.prepared:
            raise ValueError(f"bad batch {self.prepared}")
        self.prepare_threads.add(threading.current_thread().name)
        return table.column("release_msrp").to_numpy()

    def predict_prepared(self, values):
        self.calls += 1
        return 2.0 * values


def _same_file_as_one_by_one(tmp_path, pipeline, n_batches: int, **options) -> dict:
    """Score n_batches (two new rows each) and a repeated row_id with ``options``; the file must equal
    the one-batch-at-a-time file. Returns the stats."""
    batches = [_batch([f"r{i}", f"s{i}"], [float(i), 0.5 * i]) for i in range(n_batches)] + [
        _batch(["r1"], [99.0])
    ]
    plain, other = tmp_path / "plain.csv", tmp_path / "other.csv"
    score_to_csv(_Doubler(), iter(batches), plain)
    stats = score_to_csv(pipeline, iter(batches), other, **options)
    assert other.read_bytes() == plain.read_bytes()
    assert stats["rows"] == 2 * n_batches and stats["duplicates"] == 1
    return stats


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_gives_the_same_file_and_runs_prepare_in_the_background(tmp_path, depth):
    two = _TwoStep()
    _same_file_as_one_by_one(tmp_path, two, 7, prefetch_depth=depth)
    assert two.prepare_threads == {"ltv-prefetch"} and two.calls == 8


def test_prefetch_forwards_errors_and_leaves_nothing(tmp_path):
    out = tmp_path / "sub.csv"
    batches = [_batch([f"r{i}"], [1.0]) for i in range(5)]
    with pytest.raises(ValueError, match="bad batch 3"):
        score_to_csv(_TwoStep(fail_prepare_on=3), iter(batches), out, prefetch_depth=1)
    assert list(tmp_path.iterdir()) == []


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    import threading

    from ltv.tasks.predict import prefetch

    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    gen = prefetch(items(), depth=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert not any(t.name == "ltv-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) <= 3 + 2 + 1  # bounded look-ahead


class _Slow(_Doubler):
    """_Doubler whose batches finish out of order (later ones faster) and record their thread."""

    def __init__(self, fail_on_batch: int | None = None):
        super().__init__(fail_on_batch)
        import threading

        self.threads, self._lock = set(), threading.Lock()

    def predict(self, table: pa.Table) -> np.ndarray:
        import threading
        import time

        with self._lock:
            self.threads.add(threading.current_thread().name.split("_")[0])
        time.sleep(0.02 / (1 + table.column("release_msrp").to_numpy()[0]))
        return super().predict(table)


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_workers_write_the_same_file_in_input_order(tmp_path, workers):
    slow = _Slow()  # later batches finish first
    _same_file_as_one_by_one(tmp_path, slow, 9, workers=workers)
    assert slow.threads == {"ltv-score"}


def test_parallel_worker_error_is_raised_and_nothing_is_left(tmp_path):
    out = tmp_path / "sub.csv"
    batches = [_batch([f"r{i}"], [1.0]) for i in range(6)]
    with pytest.raises(KeyboardInterrupt):
        score_to_csv(_Slow(fail_on_batch=3), iter(batches), out, workers=2)
    assert list(tmp_path.iterdir()) == []


def test_workers_setting():
    from ltv.tasks.predict import workers_setting

    assert 1 <= workers_setting("auto") <= 4
    assert workers_setting(3) == 3 and workers_setting("2") == 2
    for bad in (0, -1, "many", None):
        with pytest.raises(ValueError, match="workers="):
            workers_setting(bad)


def test_unique_rows_drops_repeats_from_every_part_of_an_item():
    """A row_id seen in an earlier item is dropped from the ids, the predictions and the extra frame
    alike (first prediction wins); counts say how many."""
    from ltv.tasks.predict import unique_rows

    def item(ids, values):
        extra = pd.DataFrame({"label": np.array(values) * 10.0, "p_buyer": np.array(values) / 10.0})
        return pa.chunked_array([pa.array(ids)]), np.array(values, dtype=float), extra

    counts: dict = {}
    out = list(unique_rows([item(["a", "b"], [1, 2]), item(["c", "a", "d", "b"], [3, 4, 5, 6])], counts))
    assert [i.to_pylist() for i, _, _ in out] == [["a", "b"], ["c", "d"]]
    np.testing.assert_array_equal(out[1][1], [3.0, 5.0])
    assert out[1][2].to_dict("list") == {"label": [30.0, 50.0], "p_buyer": [0.3, 0.5]}
    assert list(out[1][2].index) == [0, 1]
    assert counts["rows"] == 4 and counts["duplicates"] == 2 and counts["rows_per_s"] > 0


def test_parallel_setting_forks_only_on_linux(monkeypatch):
    import sys

    from ltv.tasks import predict as P

    assert P.parallel_setting(" Threads ") == "threads"
    with pytest.raises(ValueError, match="parallel='gpu'"):
        P.parallel_setting("gpu")
    for platform, method, auto in (("linux", "fork", "processes"), ("darwin", "spawn", "threads"),
                                   ("win32", "spawn", "threads")):  # fmt: skip
        monkeypatch.setattr(sys, "platform", platform)
        assert P.start_method() == method
        assert P.parallel_setting("auto") == auto and P.parallel_setting("processes") == "processes"


def test_csv_values_are_those_of_six_significant_digits():
    from ltv.tasks.predict import csv_rows, round_significant

    rng = np.random.default_rng(0)
    x = rng.exponential(size=20_000) * 10.0 ** rng.integers(-12, 9, 20_000)
    x = np.concatenate([x, [0.0, 999999.5, 0.1 + 0.2, 1e22, 5e-324, 123456.5, 1.5e-7]])
    np.testing.assert_array_equal(round_significant(x), [float(f"{v:.6g}") for v in x])
    ids = pa.array([f"id{i}" for i in range(len(x))])
    import io

    back = pd.read_csv(
        io.BytesIO(csv_rows(ids, x)), header=None, names=["row_id", "v"], keep_default_na=False
    )
    assert back.row_id.tolist() == ids.to_pylist()
    np.testing.assert_array_equal(back.v.to_numpy(), [float(f"{v:.6g}") for v in x])
    # a row_id with a delimiter or a quote is quoted (the batch goes through pandas), never split
    odd = csv_rows(pa.array(["a,b", 'q"x', "c"]), np.array([1.0, 2.0, 0.25]))
    assert pd.read_csv(io.BytesIO(odd), header=None)[0].tolist() == ["a,b", 'q"x', "c"]
