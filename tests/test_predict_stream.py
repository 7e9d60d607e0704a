"""The submission: every row once, atomic output, nothing left behind on failure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ltv.data.schema import SeenRowIds
from ltv.scoring import unique_rows
from ltv.submission import csv_rows, round_significant, write_submission


def _items(batches, fail_on: int | None = None):
    """(row ids, 2 * value) per batch, like scored groups; raises KeyboardInterrupt at batch ``fail_on``."""
    for i, (ids, values) in enumerate(batches, start=1):
        if i == fail_on:
            raise KeyboardInterrupt("simulated interrupt")
        yield pa.chunked_array([pa.array(ids, pa.string())]), 2.0 * np.asarray(values, dtype=float)


def _write(batches, out, fail_on=None) -> dict:
    return write_submission(_items(batches, fail_on), out)


def test_every_row_once_and_values(tmp_path):
    batches = [(["a", "b"], [1.0, 2.0]), (["c", "a"], [3.0, 9.0]), (["d"], [0.5])]
    out = tmp_path / "sub.csv"
    stats = _write(batches, out)
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["row_id", "iap_revenue_d7"]
    assert sub.row_id.tolist() == ["a", "b", "c", "d"]  # the duplicate 'a' of batch 2 is dropped
    assert sub.iap_revenue_d7.tolist() == [2.0, 4.0, 6.0, 1.0]  # the first 'a' wins
    assert stats["rows"] == 4 and stats["duplicates"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


def test_interrupted_run_leaves_no_file_and_keeps_old_one(tmp_path):
    out = tmp_path / "sub.csv"
    out.write_text("row_id,iap_revenue_d7\nold,1\n")
    with pytest.raises(KeyboardInterrupt):
        _write([(["a"], [1.0]), (["b"], [1.0])], out, fail_on=2)
    assert out.read_text() == "row_id,iap_revenue_d7\nold,1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


def test_empty_input_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        _write([], tmp_path / "sub.csv")
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


def test_unique_rows_drops_repeats_from_every_part_of_an_item():
    """A row_id seen in an earlier item is dropped from the ids, the predictions and the extra frame
    alike (first prediction wins); counts say how many."""

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


def test_csv_values_are_those_of_six_significant_digits():
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


def test_parts_columns_follow_the_prediction_and_are_deduplicated(tmp_path):
    """predict.py parts=true: the extra DataFrame's columns come after iap_revenue_d7, row by row."""

    def items():
        for ids, values in ((["a", "b"], [1.0, 2.0]), (["a", "c"], [5.0, 3.0])):
            extra = pd.DataFrame({"p_buyer": np.asarray(values) / 10, "q99": np.asarray(values) * 7})
            yield pa.chunked_array([pa.array(ids, pa.string())]), np.asarray(values), extra

    out = tmp_path / "sub.csv"
    write_submission(items(), out)
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["row_id", "iap_revenue_d7", "p_buyer", "q99"]
    assert sub.row_id.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(sub.p_buyer, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(sub.q99, [7.0, 14.0, 21.0])
