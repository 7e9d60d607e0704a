"""frame_to_table: every accepted cell form gives the canonical Arrow value; every bad input a named error."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ltv import contract as c
from ltv.serving.coerce import InputError, frame_to_table
from ltv.serving.signature import input_example
from tests.helpers.stand_in import ConstantishPipeline, contract_rows

BASE = {"hour": "07", "weekday": 3, "advertiser_bundle": "abc"}


def one(**cells) -> pd.DataFrame:
    return pd.DataFrame([{**BASE, **cells}])


def rows(*cells_per_row: dict) -> pd.DataFrame:
    return pd.DataFrame([{**BASE, **cells} for cells in cells_per_row])


def value(table: pa.Table, column: str, row: int = 0):
    return table.column(column)[row].as_py()


def test_output_is_canonical_schema_in_contract_order():
    t = frame_to_table(one())
    assert t.schema.equals(pa.schema([pa.field(n, c.CANONICAL_TYPE[n]) for n in c.FEATURE_COLUMNS]))
    assert value(t, "hour") == "07" and value(t, "weekday") == 3 and value(t, "advertiser_bundle") == "abc"
    # every optional column absent -> all null
    assert all(t.column(n).null_count == 1 for n in c.FEATURE_COLUMNS if n not in BASE)


@pytest.mark.parametrize(
    "cell",
    [
        {"b": 1, "i": 2.5},  # JSON object, int and float mixed
        [["b", 1], ["i", 2.5]],  # JSON list of [key, value] pairs
        [("b", 1.0), ("i", 2.5)],  # tuples, as pandas.read_parquet gives
        np.array([("b", 1.0), ("i", 2.5)], dtype=object),  # numpy array of pairs
    ],
)
def test_map_forms(cell):
    t = frame_to_table(one(cpm=cell))
    assert value(t, "cpm") == [("b", 1.0), ("i", 2.5)]
    assert t.column("cpm").type == pa.map_(pa.string(), pa.float64())


def test_map_null_empty_and_nan_cells_across_rows():
    t = frame_to_table(
        rows({"cpm": None}, {"cpm": {}}, {"cpm": []}, {"cpm": float("nan")}, {"cpm": {"r": 3}})
    )
    assert t.column("cpm").to_pylist() == [None, [], [], None, [("r", 3.0)]]


def test_map_column_mixing_dicts_and_pair_lists():
    t = frame_to_table(rows({"ctr": {"b": 0.5}}, {"ctr": [["i", 1]]}, {"ctr": None}))
    assert t.column("ctr").to_pylist() == [[("b", 0.5)], [("i", 1.0)], None]


def test_integer_map_accepts_integral_floats_and_keeps_int64():
    t = frame_to_table(one(city_hist={"madrid": 3.0, "bcn": 2}, last_buy_ts_bundle=[["x", 1759104000.0]]))
    assert t.column("city_hist").type == pa.map_(pa.string(), pa.int64())
    assert value(t, "city_hist") == [("madrid", 3), ("bcn", 2)]
    assert value(t, "last_buy_ts_bundle") == [("x", 1759104000)]


def test_map_value_none_is_null_value():
    t = frame_to_table(one(cpm={"b": None, "i": 1}, city_hist={"a": None}))
    assert value(t, "cpm") == [("b", None), ("i", 1.0)]
    assert value(t, "city_hist") == [("a", None)]


@pytest.mark.parametrize(
    "cell",
    [
        {"b1": {"click": 3, "install": 1.0}, "b2": {}},
        [["b1", [["click", 3], ["install", 1]]], ["b2", []]],
        [("b1", [("click", 3), ("install", 1)]), ("b2", [])],
        [["b1", {"click": 3, "install": 1}], ["b2", None]],  # inner None: a null inner map
    ],
)
def test_map_of_map_both_forms_at_both_levels(cell):
    t = frame_to_table(one(user_actions_bundles_action_count=cell))
    got = value(t, "user_actions_bundles_action_count")
    assert got[0] == ("b1", [("click", 3), ("install", 1)])
    assert got[1][0] == "b2" and got[1][1] in ([], None)


def test_all_null_nested_columns_present():
    nulls = {"user_actions_bundles_action_count": None, "cpm": None, "user_bundles": None}
    t = frame_to_table(rows(nulls, nulls))
    for name in ("user_actions_bundles_action_count", "cpm", "user_bundles"):
        assert t.column(name).to_pylist() == [None, None] and t.column(name).type == c.CANONICAL_TYPE[name]


def test_list_column_forms():
    t = frame_to_table(
        rows(
            {"user_bundles": ["a", "b"]},
            {"user_bundles": np.array(["c"])},
            {"user_bundles": None},
            {"user_bundles": []},
        )
    )
    assert t.column("user_bundles").to_pylist() == [["a", "b"], ["c"], None, []]


def test_numbers_int_float_none_nan():
    t = frame_to_table(
        rows(
            {"release_msrp": 199, "weekday": 2.0},
            {"release_msrp": None, "weekday": 7},
            {"release_msrp": float("nan"), "weekday": 1},
        )
    )
    assert t.column("release_msrp").to_pylist() == [199.0, None, None]
    assert t.column("weekday").to_pylist() == [2, 7, 1] and t.column("weekday").type == pa.int64()


def test_labels_ignored_extras_kept():
    df = one(iap_revenue_d7=5.0, buyer_d7=1, row_id="r-1", datetime="2025-10-08-07-00")
    t = frame_to_table(df)
    assert "iap_revenue_d7" not in t.column_names and "buyer_d7" not in t.column_names
    assert t.column_names[-2:] == ["datetime", "row_id"]
    assert value(t, "row_id") == "r-1" and value(t, "datetime") == "2025-10-08-07-00"


def test_roundtrip_of_parquet_and_json_forms():
    src = contract_rows(200, seed=3)
    assert frame_to_table(src.to_pandas()).equals(src)  # maps as tuple lists, lists as numpy arrays
    records = json.loads(json.dumps(src.to_pylist()))  # maps as [key, value] lists
    for r in records[::2]:
        r["cpm"] = None if r["cpm"] is None else dict(r["cpm"])  # and some as objects
    assert frame_to_table(pd.DataFrame(records)).equals(src)
    p = ConstantishPipeline()
    np.testing.assert_array_equal(p.predict(frame_to_table(pd.DataFrame(records))), p.predict(src))


def test_input_example_coerces():
    t = frame_to_table(input_example(3))
    assert t.num_rows == 3
    assert value(t, "cpm", 1) == [("b", 1.2), ("i", 9.0)] and value(t, "country", 2) == "us"


def err(df: pd.DataFrame) -> InputError:
    with pytest.raises(InputError) as info:
        frame_to_table(df)
    return info.value


@pytest.mark.parametrize(
    "cells, column, words",
    [
        ({"release_msrp": "cheap"}, "release_msrp", ["a number", "str 'cheap'"]),
        ({"release_msrp": True}, "release_msrp", ["a number"]),
        ({"country": 5}, "country", ["a string"]),
        ({"cpm": 5}, "cpm", ["map of string -> number", "got float 5.0"]),
        ({"cpm": "b=1"}, "cpm", ["map of string -> number"]),
        ({"cpm": {"b": "x"}}, "cpm", ["numeric values"]),
        ({"cpm": {"b": True}}, "cpm", ["numeric values"]),
        ({"cpm": [["b", 1, 2]]}, "cpm", ["[key, value]"]),
        ({"cpm": [["b"]]}, "cpm", ["[key, value]"]),
        ({"cpm": [[1, 2.0]]}, "cpm", ["string keys"]),
        ({"city_hist": {"a": 1.5}}, "city_hist", ["integer values"]),
        (
            {"user_actions_bundles_action_count": {"b": 3}},
            "user_actions_bundles_action_count",
            ["inner maps"],
        ),
        (
            {"user_actions_bundles_action_count": {"b": {"click": "x"}}},
            "user_actions_bundles_action_count",
            ["numeric values"],
        ),
        ({"user_bundles": "abc"}, "user_bundles", ["a list of strings"]),
        ({"user_bundles": ["a", 1]}, "user_bundles", ["a list of strings"]),
        ({"hour": "7"}, "hour", ["'00'..'23'"]),
        ({"hour": 7}, "hour", ["a string"]),
        ({"weekday": 9}, "weekday", ["1..7"]),
        ({"weekday": 2.5}, "weekday", ["an integer"]),
        ({"weekday": None}, "weekday", ["1..7", "null"]),
        ({"datetime": "2025-10-08 07:00"}, "datetime", ["YYYY-MM-DD-HH-00"]),
    ],
)
def test_wrong_type_names_column_row_and_expectation(cells, column, words):
    e = err(rows({}, cells))  # the bad cell is in row 1
    assert e.column == column
    assert f"column '{column}' row 1" in str(e)
    for w in words:
        assert w in str(e), str(e)


def test_unknown_column():
    e = err(one(contry="us"))
    assert e.column == "contry" and "unknown column 'contry'" in str(e)


@pytest.mark.parametrize("missing", ["hour", "weekday", "advertiser_bundle"])
def test_missing_required_column(missing):
    e = err(one().drop(columns=[missing]))
    assert e.column == missing and f"missing required column '{missing}'" in str(e)


def test_empty_frames():
    assert "empty" in str(err(pd.DataFrame()))
    assert "empty" in str(err(one().iloc[:0]))


def test_1000_row_request_is_fast():
    df = pd.DataFrame(json.loads(json.dumps(contract_rows(1000, seed=5).to_pylist())))
    frame_to_table(df)
    best = min(_timed(df) for _ in range(3))
    assert best < 0.25, f"1,000-row coercion took {best * 1e3:.0f} ms"  # ~50 ms here; generous for CI noise


def _timed(df):
    t0 = time.perf_counter()
    frame_to_table(df)
    return time.perf_counter() - t0
