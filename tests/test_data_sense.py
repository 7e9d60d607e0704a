"""Data checked for sense, not only for type: timestamp units, contradicting labels, buyers, stray files."""

from __future__ import annotations

import warnings
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ltv.data.groups import file_groups, read_group
from ltv.data.loader import DataError, Window, read_table
from ltv.data.loader import load_split as _load_split
from ltv.data.sense import MIN_TRAIN_BUYERS, DataSenseError, check_buyers, check_fit_buyers
from tests.test_loader import hour, make_table, put, write_part

DAY0 = datetime(2025, 9, 20, tzinfo=timezone.utc).timestamp()  # a day before the partition: fine
HOUR0_END = datetime(2025, 10, 1, 1, tzinfo=timezone.utc).timestamp()


def load_split(*args, **kwargs):
    """The loader's split, computed (the tests look at the rows)."""
    frame, report = _load_split(*args, **kwargs)
    return frame.compute().reset_index(drop=True), report


def messages(record) -> list[str]:
    return [str(w.message) for w in record]


def test_timestamps_in_ms_and_us_converted_per_column_with_named_warnings(tmp_path):
    t = make_table(4)
    t = put(t, "last_buy", [DAY0 * 1000, DAY0, None, DAY0 * 1000])  # milliseconds (and one in seconds)
    t = put(t, "first_request_ts", [DAY0 * 1e6] * 4)  # microseconds
    t = put(t, "last_buy_ts_bundle", [[("b", int(DAY0) * 1000)], None, [("c", int(DAY0))], []])
    t = put(t, "user_actions_bundles_action_last_timestamp", [[("x", [("open", int(DAY0) * 1000)])]] * 4)
    path = write_part(tmp_path, "train", hour(0), t)
    with pytest.warns(UserWarning) as record:
        table, report = read_table(path, "train", hour(0))
    assert table.column("last_buy").to_pylist() == [DAY0, DAY0, None, DAY0]
    assert table.column("first_request_ts").to_pylist() == [DAY0] * 4
    assert table.column("last_buy_ts_bundle").to_pylist() == [
        [("b", int(DAY0))],
        None,
        [("c", int(DAY0))],
        [],
    ]
    nested = table.column("user_actions_bundles_action_last_timestamp").to_pylist()
    assert nested == [[("x", [("open", int(DAY0))])]] * 4
    assert table.column("last_buy_ts_bundle").type == pa.map_(pa.string(), pa.int64())  # type kept
    assert report.repaired == {
        "timestamp_ms.last_buy": 2,
        "timestamp_us.first_request_ts": 4,
        "timestamp_ms.last_buy_ts_bundle": 1,
        "timestamp_ms.user_actions_bundles_action_last_timestamp": 4,
    }
    text = messages(record)
    assert any("'last_buy' has timestamps in milliseconds" in m for m in text)
    assert any("'first_request_ts' has timestamps in microseconds" in m for m in text)
    assert report.as_metrics("data.train")["data.train.repaired_timestamp_ms.last_buy"] == 2.0


def test_timestamps_after_the_partition_hour_become_null(tmp_path):
    t = put(make_table(3), "last_ins", [DAY0, HOUR0_END + 86400 * 30, HOUR0_END - 1])
    t = put(t, "last_install_ts_bundle", [[("a", int(HOUR0_END) + 7200), ("b", int(DAY0))], None, None])
    path = write_part(tmp_path, "train", hour(0), t)
    with pytest.warns(UserWarning, match="'last_ins' has timestamps after the hour of their partition"):
        table, report = read_table(path, "train", hour(0))
    assert table.column("last_ins").to_pylist() == [DAY0, None, HOUR0_END - 1]
    assert table.column("last_install_ts_bundle").to_pylist()[0] == [("a", None), ("b", int(DAY0))]
    assert report.repaired == {"future_timestamp.last_ins": 1, "future_timestamp.last_install_ts_bundle": 1}


def test_contradicting_labels_repaired_by_the_stated_rule_and_counted(tmp_path):
    t = make_table(5)  # row 0 is a consistent buyer (revenue 1.0), rows 1..4 non-buyers
    t = put(t, "buyer_d7", np.array([1, 0, 0, 0, 0], np.int32))
    t = put(t, "iap_revenue_d7", [1.0, 5.0, 0, 0, 0])  # row 1: revenue without the flag
    t = put(t, "buyer_d14", np.array([1, 0, 1, 0, 0], np.int32))  # row 2: d14 flag, d28 not
    t = put(t, "buy_d28", np.array([1, 0, 1, 3, 0], np.int64))  # row 3: buys at d28 without the flag
    path = write_part(tmp_path, "train", hour(0), t)
    with pytest.warns(UserWarning) as record:
        table, report = read_table(path, "train", hour(0))
    cols = {
        n: table.column(n).to_pylist() for n in ("buyer_d7", "buyer_d14", "buyer_d28", "buy_d7", "buy_d28")
    }
    assert cols["buyer_d7"] == [1, 1, 0, 0, 0]  # row 1: evidence (revenue) wins
    assert cols["buyer_d14"] == [1, 1, 1, 0, 0]  # row 1: raised to the d7 flag
    assert cols["buyer_d28"] == [1, 1, 1, 1, 0]  # row 1 by horizon; rows 2, 3 by their d28 buys
    assert cols["buy_d7"] == [1, 1, 0, 0, 0] and cols["buy_d28"] == [1, 1, 1, 3, 0]
    assert table.column("iap_revenue_d7").to_pylist() == [1.0, 5.0, 0, 0, 0]  # revenue never changes
    # rows per rule: flag 1 (d7 revenue), 2 and 3 (d28 buys); horizon 1 (d14, d28 from d7); buys 1, 2
    assert report.repaired == {"label_buyer_flag": 3, "label_horizon": 1, "label_buy_count": 2}
    assert report.rows_kept == 5 and report.dropped == {}
    assert any("buyer_dN = 0 with iap_revenue_dN > 0" in m for m in messages(record))


def test_window_without_enough_buyers_fails_before_fitting_naming_window_and_count(tmp_path):
    t = make_table(30)
    for name in ("buyer_d1", "buyer_d7", "buyer_d14", "buyer_d28"):
        t = put(t, name, np.zeros(30, np.int32))
    for name in ("buy_d7", "buy_d14", "buy_d28"):
        t = put(t, name, np.zeros(30, np.int64))
    for name in ("iap_revenue_d7", "iap_revenue_d14", "iap_revenue_d28"):
        t = put(t, name, np.zeros(30))
    write_part(tmp_path, "train", hour(0), t)
    window = Window("2025-10-01-00", "2025-10-01-00", name="train")
    frame, _ = load_split(tmp_path, "train", window)
    with pytest.raises(
        DataSenseError, match=r"window 'train' \[2025-10-01-00-00 .. 2025-10-01-00-00\] has 0 buyers"
    ):
        check_fit_buyers(frame, frame, window, window)
    few = pd.DataFrame({"buyer_d7": [1.0] * (MIN_TRAIN_BUYERS - 1) + [0.0] * 100})
    with pytest.raises(
        DataSenseError, match=f"has {MIN_TRAIN_BUYERS - 1} buyers .* at least {MIN_TRAIN_BUYERS}"
    ):
        check_buyers(few, "window 'x'", MIN_TRAIN_BUYERS)
    assert check_buyers(few, "window 'x'", 5) == MIN_TRAIN_BUYERS - 1


def test_non_parquet_file_in_a_partition_folder_is_skipped_with_a_warning(tmp_path):
    path = write_part(tmp_path, "train", hour(0), make_table(5))
    readme = path.parent / "README.md"
    readme.write_text("exported by hand\n")
    (tmp_path / "train" / "NOTES.txt").write_text("at the subset root\n")
    with pytest.warns(UserWarning) as record:
        frame, report = load_split(tmp_path, "train", Window())
    assert len(frame) == 5 and report.skipped == {"non_parquet_file": 2}
    text = messages(record)
    assert any(f"skipped file {readme}: not a parquet file" in m for m in text)
    assert any("NOTES.txt" in m for m in text)
    groups, group_report = file_groups(tmp_path, "train", Window(), 1000)  # what predict.py scores
    groups = list(groups)
    assert [p for g in groups for _, p, _ in g] == [path] and group_report.skipped == {"non_parquet_file": 2}
    assert read_group(groups[0], "train", Window())[0].num_rows == 5


@pytest.mark.parametrize(
    "folder", ["datetime=2025-10-01", "datetime=2025-13-01-00-00", "hour=2025-10-01-02-00"]
)
def test_invalid_partition_folder_is_skipped_with_a_warning_naming_it(tmp_path, folder):
    write_part(tmp_path, "train", hour(0), make_table(5))
    bad = tmp_path / "train" / folder
    bad.mkdir()
    write_part(tmp_path, "train", hour(0), make_table(5, start=100), name="part-1.parquet")
    (bad / "part-0.parquet").write_bytes(
        (tmp_path / "train" / f"datetime={hour(0)}" / "part-1.parquet").read_bytes()
    )
    with pytest.warns(UserWarning, match=f"skipped folder {bad}: its name is not a partition"):
        frame, report = load_split(tmp_path, "train", Window())
    assert len(frame) == 10 and set(frame["datetime"]) == {hour(0)}
    assert report.skipped == {"bad_partition_folder": 1}


def test_only_invalid_folders_is_an_error_naming_no_hours(tmp_path):
    (tmp_path / "train" / "datetime=yesterday").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="matches no parquet file; no hour folders"):
            load_split(tmp_path, "train", Window())


def test_clean_contract_data_triggers_no_sense_check(tmp_path):
    t = put(make_table(20), "last_buy", [DAY0] * 20)
    write_part(tmp_path, "train", hour(0), t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame, report = load_split(tmp_path, "train", Window())
    assert report.repaired == {} and report.skipped == {} and len(frame) == 20
