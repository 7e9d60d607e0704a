"""Plain groups (scalars, categoricals, time, missing flags), request time, real parquet round trip and
chunked == one-shot extraction."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ltv import contract
from ltv.features import FeatureBuilder
from tests.test_features_nested import DAY0, NAN, close, extract, table_with


def test_scalars_pass_through_as_float32():
    fb = FeatureBuilder(groups={"scalars": True})
    S = fb.extract(table_with(2, release_msrp=[199.0, None], weekday=[3, 7], wifi_ratio=[0.5, None]))
    assert all(S[c].dtype == np.float32 for c in S.columns)
    close(S["release_msrp"], [199, NAN])
    close(S["weekday"], [3, 7])
    assert list(S.index) == [0, 1]


def test_categoricals_are_strings_with_none():
    S = FeatureBuilder(groups={"categoricals": True}).extract(table_with(3, country=["us", None, "es"]))
    assert S["country"].dtype == object
    assert S["country"].tolist() == ["us", None, "es"]


def test_time_cyclical_weekend_and_device_age():
    t = table_with(
        4,
        hour=["00", "06", "18", "12"],
        weekday=[1, 3, 6, None],
        release_date=["2023_october", None, "2025_january", "not a date"],
    )
    f = extract(t, time=True)
    close(f["hour_sin"], [0, 1, -1, 0])
    close(f["hour_cos"], [1, 0, 0, -1])
    # weekday null -> from the request date, 2025-10-01, a Wednesday (ISO 3)
    close(
        f["weekday_sin"],
        [0, math.sin(2 * math.pi * 2 / 7), math.sin(2 * math.pi * 5 / 7), math.sin(2 * math.pi * 2 / 7)],
    )
    close(f["is_weekend"], [0, 0, 1, 0])
    close(f["device_age_months"], [24, NAN, 9, NAN])


def test_missing_flags_follow_the_enabled_groups():
    t = table_with(3, bcat=[None, [], [("a", 1.0)]], release_msrp=[None, 1.0, 2.0])
    f = extract(t, maps_basic=True, missing_flags=True)
    close(f["bcat__missing"], [1, 0, 0])  # an empty map is present, not missing
    assert "release_msrp__missing" not in f  # scalars are off
    f = extract(t, maps_basic=True, scalars=True, missing_flags=True)
    close(f["release_msrp__missing"], [1, 0, 0])
    assert not [c for c in extract(t, maps_basic=True) if c.endswith("__missing")]


def test_request_time_without_datetime_column():
    t = table_with(1, datetime=None, last_ins=[DAY0])
    fixed = FeatureBuilder(groups={"recency": True}, reference_time=DAY0 + 36 * 3600).extract(t)
    close(fixed["last_ins__days"], [1.5])
    now = FeatureBuilder(groups={"recency": True}).extract(t)["last_ins__days"][0]
    expected = ((time.time() // 3600) * 3600 - DAY0) / 86400
    assert abs(now - expected) <= 1 / 24 + 1e-6


def test_bad_datetime_is_rejected():
    t = table_with(1, datetime="2025/10/01 05h")
    with pytest.raises(ValueError, match="datetime"):
        FeatureBuilder(groups={"time": True}).extract(t)


def test_dictionary_typed_strings_and_datetime():
    t = table_with(2, datetime=None, country=pa.array(["us", None]).dictionary_encode())
    t = t.append_column("datetime", pa.array([REQ := "2025-10-01-05-00", REQ]).dictionary_encode())
    S = FeatureBuilder(groups={"categoricals": True, "time": True}).extract(t)
    assert S["country"].tolist() == ["us", None]
    close(S["hour_sin"], [math.sin(2 * math.pi * 5 / 24)] * 2)  # hour column null -> request hour


def mixed_table(n: int, seed: int = 0) -> pa.Table:
    """``n`` rows drawn from hand-written cells of every nested kind (None, empty, one key, duplicates)."""
    rng = np.random.default_rng(seed)
    maps = [[("a", 1.0), ("b", 3.0)], None, [], [("c", 2.0)], [("a", None), ("b", 4.0)]]
    imaps = [[("x", DAY0), ("y", DAY0 - 86400)], None, [], [("z", DAY0 - 5 * 86400)]]
    mm = [[("b1", [("open", DAY0), ("buy", 1)]), ("b2", [])], None, [], [("b3", [("x", None)])]]
    lists = [["x", "y", "y"], None, [], ["z"], ["adv1", "x"]]
    cols = {}
    for name, kind, typ in contract.FEATURE_SPEC:
        if kind == contract.MAP:
            pool = maps if pa.types.is_floating(typ.item_type) else imaps
        else:
            pool = {contract.MAP_OF_MAP: mm, contract.LIST: lists}.get(kind)
        if pool is not None:
            cols[name] = [pool[i] for i in rng.integers(0, len(pool), n)]
    cols["advertiser_bundle"] = list(np.array(["adv1", "z", None], dtype=object)[rng.integers(0, 3, n)])
    cols["country"] = list(np.array(["us", "es", None], dtype=object)[rng.integers(0, 3, n)])
    cols["hour"] = [f"{h:02d}" for h in rng.integers(0, 24, n)]
    cols["release_date"] = list(np.array(["2023_october", None], dtype=object)[rng.integers(0, 2, n)])
    cols["release_msrp"] = list(np.where(rng.random(n) < 0.2, None, rng.gamma(2, 100, n)))
    cols["last_buy"] = [DAY0 - 86400 * int(d) for d in rng.integers(0, 30, n)]
    t = table_with(n, datetime=None, **cols)
    hours = [
        f"2025-10-0{1 + d}-{h:02d}-00"
        for d, h in zip(rng.integers(0, 3, n), rng.integers(0, 24, n), strict=True)
    ]
    return t.append_column("datetime", pa.array(hours))


def test_chunked_and_sliced_extraction_equals_one_shot():
    t = mixed_table(400)
    fb = FeatureBuilder()
    whole = fb.extract(t)
    pieces = [fb.extract(t.slice(a, b - a)) for a, b in [(0, 1), (1, 97), (97, 250), (250, 400)]]
    pd.testing.assert_frame_equal(pd.concat(pieces, ignore_index=True), whole, check_exact=True)
    # the same rows as a multi-chunk table (each column a ChunkedArray of slices)
    chunked = pa.concat_tables([t.slice(0, 150), t.slice(150, 1), t.slice(151)])
    assert chunked.column("bcat").num_chunks == 3
    pd.testing.assert_frame_equal(fb.extract(chunked), whole, check_exact=True)


def test_parquet_with_map_and_list_types_gives_nonzero_history(tmp_path):
    t = mixed_table(300, seed=1)
    path = tmp_path / "part-00000.parquet"
    pq.write_table(t.drop_columns(["datetime"]), path, row_group_size=64)
    back = pq.read_table(path)
    assert pa.types.is_map(back.schema.field("iap_revenue_usd_bundle").type)
    assert pa.types.is_list(back.schema.field("user_bundles").type)
    back = back.append_column("datetime", t["datetime"])
    S = FeatureBuilder().extract(back)
    for c in (
        "iap_revenue_usd_bundle__sum",
        "num_buys_bundle__count",
        "whale_users_bundle_total_revenue__max",
        "cpm__mean",
        "user_bundles__len",
        "last_buy_ts_bundle__days_latest",
        "country_hist__entropy",
        "user_actions_bundles_action_count__actions",
    ):
        assert np.nansum(np.abs(S[c].to_numpy())) > 0, c
    pd.testing.assert_frame_equal(S, FeatureBuilder().extract(t), check_exact=True)


def test_datetime_as_arrow_timestamp():
    t = table_with(1, datetime=None, last_ins=[DAY0])
    t = t.append_column(
        "datetime", pa.array([np.datetime64("2025-10-02T12:00:00", "s")]).cast(pa.timestamp("us"))
    )
    close(FeatureBuilder(groups={"recency": True}).extract(t)["last_ins__days"], [1.5])


def test_parallel_threads_give_the_one_shot_values():
    from concurrent.futures import ThreadPoolExecutor

    t, fb = mixed_table(400, seed=3), FeatureBuilder()
    bounds = [(0, 100), (100, 200), (200, 300), (300, 400)]
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda ab: fb.extract(t.slice(ab[0], ab[1] - ab[0])), bounds))
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), fb.extract(t), check_exact=True)


def test_empty_and_one_row_tables():
    fb = FeatureBuilder()
    full = fb.extract(mixed_table(50))
    empty = fb.extract(mixed_table(50).slice(0, 0))
    assert len(empty) == 0 and list(empty.columns) == list(full.columns)
    one = fb.extract(mixed_table(50).slice(7, 1))
    pd.testing.assert_frame_equal(one, full.iloc[7:8].reset_index(drop=True), check_exact=True)
    X = fb.fit(full).transform(empty)
    assert list(X.columns) == fb.feature_names_ and len(X) == 0
