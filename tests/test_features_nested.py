"""Hand-computed values for every nested feature family (maps, histograms, ad formats, sessions, purchase
history, recency, map-of-map actions, lists, whale, interactions) and the Arrow edge cases."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from ltv import contract
from ltv.features import FeatureBuilder, nested

NAN = math.nan
DAY0 = 1_759_276_800  # 2025-10-01 00:00 UTC (a Wednesday), unix seconds
REQUEST = "2025-10-01-05-00"  # request hour: DAY0 + 5 h
H5 = 5 / 24  # a day-truncated timestamp of the request day is 5 hours old


def table_with(n: int, datetime: str | None = REQUEST, **columns) -> pa.Table:
    """An all-null contract table of ``n`` rows with some columns set (canonical type unless an Arrow
    array is given), plus the ``datetime`` partition column."""
    t = contract.null_table(n, "test")
    for name, values in columns.items():
        arr = values if isinstance(values, pa.Array) else pa.array(values, contract.CANONICAL_TYPE[name])
        t = t.set_column(t.schema.get_field_index(name), name, arr)
    if datetime is not None:
        t = t.append_column("datetime", pa.array([datetime] * n))
    return t


def extract(table: pa.Table, **groups) -> dict[str, np.ndarray]:
    fb = FeatureBuilder(groups=groups or None)
    S = fb.extract(table)
    return {c: S[c].to_numpy() for c in S.columns}


def close(actual, expected) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=1e-6, atol=1e-6, equal_nan=True
    )


def test_generic_map_stats_with_null_cell_empty_one_key_and_null_value():
    bcat = [[("a", 1.0), ("b", 3.0)], None, [], [("c", 2.0)], [("a", None), ("b", 4.0)]]
    f = extract(table_with(5, bcat=bcat), maps_basic=True)
    close(f["bcat__count"], [2, NAN, 0, 1, 2])  # entries, null value included
    close(f["bcat__sum"], [4, NAN, 0, 2, 4])
    close(f["bcat__mean"], [2, NAN, NAN, 2, 4])
    close(f["bcat__max"], [3, NAN, NAN, 2, 4])
    close(f["bcat__min"], [1, NAN, NAN, 2, 4])
    close(f["bcat__std"], [1, NAN, NAN, 0, 0])


def test_int64_and_double_map_values_give_the_same_numbers():
    cells = [[("open", 2), ("buy", 5)], None, []]
    as_int = extract(table_with(3, advertiser_actions_action_count=cells), maps_basic=True)
    dbl = pa.array(cells, pa.map_(pa.string(), pa.float64()))
    as_dbl = extract(table_with(3, advertiser_actions_action_count=dbl), maps_basic=True)
    close(as_int["advertiser_actions_action_count__sum"], [7, NAN, 0])
    for k in as_int:
        close(as_int[k], as_dbl[k])


def test_histogram_entropy_and_top_shares_with_ties():
    hist = [[("us", 3), ("ca", 1)], None, [], [("es", 5)], [("a", 1), ("b", 1), ("c", 1), ("d", 1)]]
    f = extract(table_with(5, country_hist=hist), histograms=True)
    h0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    close(f["country_hist__count"], [2, NAN, 0, 1, 4])
    close(f["country_hist__sum"], [4, NAN, 0, 5, 4])
    close(f["country_hist__entropy"], [h0, NAN, NAN, 0, math.log(4)])
    close(f["country_hist__top1_share"], [0.75, NAN, NAN, 1, 0.25])
    close(f["country_hist__top3_share"], [1, NAN, NAN, 1, 0.75])


def test_ad_format_values_per_format():
    cpm = [[("b", 1.5), ("i", 2.0)], None, [], [("r", 0.5)], [("b", None), ("r", 3.0)]]
    f = extract(table_with(5, cpm=cpm), ad_format=True)
    close(f["cpm__b"], [1.5, NAN, NAN, NAN, NAN])
    close(f["cpm__i"], [2.0, NAN, NAN, NAN, NAN])
    close(f["cpm__r"], [NAN, NAN, NAN, 0.5, 3.0])
    close(f["cpm__count"], [2, NAN, 0, 1, 2])
    close(f["cpm__mean"], [1.75, NAN, NAN, 0.5, 3.0])
    close(f["cpm__max"], [2.0, NAN, NAN, 0.5, 3.0])


def test_sessions_totals_peak_and_duration_per_session():
    sessions = [[("a", 2.0), ("b", 3.0)], None, [], [("c", 5.0)]]
    duration = [[("a", 100.0), ("b", 50.0)], None, [], [("c", 10.0)]]
    f = extract(table_with(4, avg_daily_sessions=sessions, avg_duration=duration), sessions=True)
    close(f["avg_daily_sessions__sum"], [5, NAN, 0, 5])
    close(f["avg_daily_sessions__max"], [3, NAN, NAN, 5])
    close(f["avg_duration__sum"], [150, NAN, 0, 10])
    close(f["duration_per_session"], [30, NAN, NAN, 2])


def test_purchase_history_and_the_advertised_bundle():
    rev = [[("adv1", 10.0), ("x", 5.0)], None, [], [("y", 7.0)]]
    buys = [[("adv1", 2), ("x", 1)], None, [], [("y", 1)]]
    f = extract(
        table_with(
            4, iap_revenue_usd_bundle=rev, num_buys_bundle=buys, advertiser_bundle=["adv1", "adv1", "z", "q"]
        ),
        purchase_history=True,
    )
    close(f["iap_revenue_usd_bundle__sum"], [15, NAN, 0, 7])
    close(f["num_buys_bundle__max"], [2, NAN, NAN, 1])
    close(f["iap_revenue_usd_bundle__advertiser"], [10, NAN, 0, 0])
    close(f["num_buys_bundle__advertiser"], [2, NAN, 0, 0])
    close(f["revenue_per_purchase"], [5, NAN, NAN, 7])


def test_advertiser_context_looks_up_the_advertised_app_its_category_and_the_request_hour():
    adv = ["adv1", "adv1", "z", "adv1"]
    f = extract(
        table_with(
            4,
            advertiser_bundle=adv,
            advertiser_category=["games", "games", None, "finance"],
            rev_by_adv=[[("adv1", 12.5), ("x", 3.0)], None, [("adv1", 1.0)], []],
            last_buy_ts_bundle=[[("adv1", DAY0 - 2 * 86400)], None, [], [("x", DAY0)]],
            iap_revenue_usd_category=[[("games", 4.0), ("finance", 9.0)], None, [("games", 1.0)], []],
            last_install_ts_category=[None, [("games", DAY0)], [], [("finance", DAY0 - 86400)]],
            user_actions_bundles_action_count=[
                [("adv1", [("open", 2), ("purchase", 1)]), ("x", [("open", 7)])],
                None,
                [("adv1", [("open", 4)])],
                [("adv1", [])],
            ],
            hour_ratio=[[("5", 0.25), ("6", 0.75)], [("05", 0.5)], [("6", 1.0)], None],
        ),
        advertiser_context=True,
    )
    close(f["rev_by_adv__advertiser"], [12.5, NAN, 0, 0])  # 0: a map without the key; NaN: no map
    close(f["last_buy_ts_bundle__advertiser_days"], [2 + H5, NAN, NAN, NAN])
    close(f["iap_revenue_usd_category__advertiser_category"], [4, NAN, 0, 0])  # null category: no key
    close(f["last_install_ts_category__advertiser_category_days"], [NAN, H5, NAN, 1 + H5])
    close(f["user_actions_bundles_action_count__advertiser"], [3, NAN, 0, 0])
    close(f["hour_ratio__current"], [0.25, 0.5, 0, NAN])  # request hour 5: keys '5' and '05' alike


def test_recency_in_days_from_unix_seconds_relative_to_the_request_hour():
    first = [DAY0, DAY0 - 10 * 86400, None]
    last_buy_map = [[("a", DAY0), ("b", DAY0 - 3 * 86400)], None, []]
    f = extract(table_with(3, first_request_ts=first, last_buy_ts_bundle=last_buy_map), recency=True)
    close(f["first_request_ts__days"], [H5, 10 + H5, NAN])
    # a timestamp on the request day is between 0 and 1 day old (read as nanoseconds it would be ~20,000 days)
    assert 0 <= f["first_request_ts__days"][0] < 1
    close(f["last_buy_ts_bundle__days_latest"], [H5, NAN, NAN])
    close(f["last_buy_ts_bundle__days_oldest"], [3 + H5, NAN, NAN])
    close(f["last_buy_ts_bundle__count"], [2, NAN, 0])


def test_recency_uses_each_rows_own_request_hour():
    t = table_with(2, datetime=None, last_ins=[DAY0, DAY0])
    t = t.append_column("datetime", pa.array(["2025-10-01-00-00", "2025-10-03-12-00"]))
    close(extract(t, recency=True)["last_ins__days"], [0.0, 2.5])


def test_user_actions_map_of_maps():
    counts = [[("b1", [("open", 3), ("buy", 1)]), ("b2", [])], None, [], [("b3", [("x", None)])]]
    stamps = [
        [("b1", [("open", DAY0), ("buy", DAY0 - 86400)]), ("b2", [("v", DAY0 - 2 * 86400)])],
        None,
        [],
        [],
    ]
    f = extract(
        table_with(
            4, user_actions_bundles_action_count=counts, user_actions_bundles_action_last_timestamp=stamps
        ),
        user_actions=True,
    )
    c, s = "user_actions_bundles_action_count", "user_actions_bundles_action_last_timestamp"
    close(f[f"{c}__bundles"], [2, NAN, 0, 1])
    close(f[f"{c}__actions"], [2, NAN, 0, 1])
    close(f[f"{c}__sum"], [4, NAN, 0, 0])
    close(f[f"{c}__max"], [3, NAN, NAN, NAN])
    close(f[f"{s}__days_latest"], [H5, NAN, NAN, NAN])
    close(f[f"{s}__days_oldest"], [2 + H5, NAN, NAN, NAN])
    close(f[f"{s}__actions"], [3, NAN, 0, 0])


def test_lists_length_unique_and_overlaps_with_duplicates():
    f = extract(
        table_with(
            4,
            new_bundles=[["x", "y", "y"], None, [], ["z"]],
            user_bundles=[["y", "q"], ["x"], [], ["z", "z"]],
            bundles_ins=[["adv1", "k"], None, [], []],
            advertiser_bundle=["adv1", "adv1", "z", "z"],
        ),
        lists=True,
    )
    close(f["new_bundles__len"], [3, NAN, 0, 1])
    close(f["new_bundles__nunique"], [2, NAN, 0, 1])
    close(f["user_bundles__nunique"], [2, 1, 0, 1])
    close(f["new_bundles__in_user_bundles"], [2, NAN, 0, 1])  # each element counts, duplicates too
    close(f["advertiser_bundle__in_bundles_ins"], [1, NAN, 0, 0])
    close(f["advertiser_bundle__in_user_bundles"], [0, 0, 0, 1])
    close(f["bundles_ins__len"], [2, NAN, 0, 0])


def test_whale_and_interactions():
    prank = [[("a", 0.9), ("b", 0.4)], None]
    sessions = [[("a", 2.0), ("b", 3.0)], None]
    rev = [[("a", 9.0)], None]
    buys = [[("a", 3)], None]
    f = extract(
        table_with(
            2,
            whale_users_bundle_revenue_prank=prank,
            avg_daily_sessions=sessions,
            iap_revenue_usd_bundle=rev,
            num_buys_bundle=buys,
        ),
        whale=True,
        interactions=True,
    )
    close(f["whale_users_bundle_revenue_prank__max"], [0.9, NAN])
    close(f["whale_users_bundle_revenue_prank__mean"], [0.65, NAN])
    close(f["whale_x_sessions"], [0.9 * math.log(6), 0])
    close(f["revenue_x_purchases"], [math.log(10) * math.log(4), 0])
    assert "avg_daily_sessions__sum" not in f  # the sessions group is off: only the interaction is produced


def test_flatten_respects_slices_and_null_cells_backed_by_values():
    # row 1 is null but its offsets span two values (legal Arrow): they must not leak into any row
    arr = pa.MapArray.from_arrays(
        pa.array([0, 2, 4, 5], pa.int32()),
        pa.array(["a", "b", "c", "d", "e"]),
        pa.array([1.0, 2, 30, 40, 5]),
        mask=pa.array([False, True, False]),
    )
    flat = nested.flatten(arr)
    close(nested.seg_sum(flat, flat.values()), [3, NAN, 5])
    sliced = nested.flatten(arr.slice(1))
    close(nested.seg_sum(sliced, sliced.values()), [NAN, 5])
    close(nested.count(sliced), [NAN, 1])
    lst = pa.array([["a"], ["b", "c"], None, ["d"]], pa.list_(pa.string())).slice(1, 2)
    close(nested.count(nested.flatten(lst)), [2, NAN])


def test_all_null_typed_column_is_accepted():
    t = table_with(2, bcat=pa.nulls(2))  # pa.null() type: e.g. an all-null column in a real export
    f = extract(t, maps_basic=True, missing_flags=True)
    close(f["bcat__sum"], [NAN, NAN])
    close(f["bcat__missing"], [1, 1])


def test_missing_column_names_it():
    t = table_with(2).drop_columns(["bcat"])
    with pytest.raises(ValueError, match="bcat"):
        extract(t, maps_basic=True)


def test_all_null_typed_map_of_maps_and_lists():
    t = table_with(2, user_actions_bundles_action_count=pa.nulls(2), user_bundles=pa.nulls(2))
    f = extract(t, user_actions=True, lists=True)
    close(f["user_actions_bundles_action_count__actions"], [NAN, NAN])
    close(f["user_bundles__len"], [NAN, NAN])


def test_vectorised_reductions_match_a_per_cell_reference_on_random_maps():
    rng = np.random.default_rng(7)
    cells = []
    for _ in range(300):
        r = rng.random()
        if r < 0.15:
            cells.append(None)
        else:
            n = 0 if r < 0.25 else int(rng.integers(1, 8))
            vals = np.round(rng.gamma(1.0, 5.0, n), 3)
            cells.append([(f"k{j}", None if rng.random() < 0.1 else float(x)) for j, x in enumerate(vals)])
    arr = pa.array(cells, pa.map_(pa.string(), pa.float64())).slice(3)  # sliced on purpose
    flat = nested.flatten(arr)
    got = nested.map_stats(flat, flat.values(), ("count", "sum", "mean", "max", "min", "std"))
    ent, top1, top3 = nested.entropy_and_top(flat, flat.values(), 3)
    for i, cell in enumerate(cells[3:]):
        vals = [v for _, v in cell or [] if v is not None]
        w = sorted((v for v in vals if v > 0), reverse=True)
        expected = {
            "count": NAN if cell is None else len(cell),
            "sum": NAN if cell is None else sum(vals),
            "mean": np.mean(vals) if vals else NAN,
            "max": max(vals) if vals else NAN,
            "min": min(vals) if vals else NAN,
            "std": np.std(vals) if vals else NAN,
        }
        for k, v in expected.items():
            close([got[k][i]], [v])
        if sum(w) > 0:
            p = np.array(w) / sum(w)
            close([ent[i], top1[i], top3[i]], [-(p * np.log(p)).sum(), p[0], p[:3].sum()])
        else:
            close([ent[i], top1[i], top3[i]], [NAN, NAN, NAN])
