"""Bad data at the loader: a clear error naming what is wrong, or a counted, logged repair."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ltv.data.groups import file_groups, read_group
from ltv.data.loader import DataError, SchemaError, Window, read_table
from ltv.data.loader import load_split as _load_split
from tests.test_loader import hour, make_table, put, write_part


def load_split(*args, **kwargs):
    """The loader's split, computed (the tests look at the rows)."""
    frame, report = _load_split(*args, **kwargs)
    return frame.compute().reset_index(drop=True), report


def stream(root, subset, window, batch_rows=100_000, seed=0):
    """What scoring reads, group by group (``ltv.scoring`` runs each group as a task): (report of the
    window's empty partitions, [(table or None, report) per file group])."""
    groups, report = file_groups(root, subset, window, batch_rows, seed=seed)
    return report, [read_group(g, subset, window, seed=seed) for g in groups]


def test_missing_column_names_column_file_and_kind(tmp_path):
    path = write_part(tmp_path, "train", hour(0), make_table(5).drop_columns(["cpm", "buyer_d7"]))
    with pytest.raises(SchemaError) as err:
        load_split(tmp_path, "train", Window())
    message = str(err.value)
    assert "'cpm' (expected kind map)" in message and "'buyer_d7' (expected kind number)" in message
    assert str(path) in message
    assert isinstance(err.value, ValueError)


def test_wrong_type_names_column_file_expected_kind_and_found_type(tmp_path):
    t = put(make_table(5), "country", np.arange(5), pa.int64())
    t = put(t, "bundles_ins", [[1]] * 5, pa.list_(pa.int64()))
    path = write_part(tmp_path, "train", hour(0), t)
    with pytest.raises(SchemaError) as err:
        read_table(path, "train", hour(0))
    message = str(err.value)
    assert "'country' is int64, expected kind string" in message
    assert (
        "'bundles_ins' is list<" in message
        and "int64>, expected kind list" in message
        and str(path) in message
    )


def test_unexpected_column_warned_once_by_name_and_dropped(tmp_path, caplog):
    for h in range(2):
        t = make_table(5, start=10 * h).append_column("campaign_id", pa.array(["c"] * 5))
        write_part(tmp_path, "train", hour(h), t)
    with pytest.warns(UserWarning) as record, caplog.at_level(logging.WARNING):
        frame, report = load_split(tmp_path, "train", Window())
    mine = [str(w.message) for w in record if "campaign_id" in str(w.message)]
    assert mine == [
        "unexpected column(s) in subset 'train', not in the contract and ignored: 'campaign_id' (2 files)"
    ]
    assert "campaign_id" in caplog.text
    assert "campaign_id" not in frame.columns and report.unexpected_columns == {"campaign_id": 2}


def test_datetime_column_inside_a_file_loses_to_the_folder(tmp_path):
    t = make_table(3).append_column("datetime", pa.array(["1999-01-01-00-00"] * 3))
    write_part(tmp_path, "train", hour(4), t)
    with pytest.warns(UserWarning, match="'datetime' \\(1 file\\)"):
        frame, _ = load_split(tmp_path, "train", Window())
    assert frame["datetime"].tolist() == [hour(4)] * 3


def test_labels_in_test_subset_are_unexpected(tmp_path):
    write_part(tmp_path, "test", hour(0), make_table(5, "train"))
    with pytest.warns(UserWarning) as record:
        frame, _ = load_split(tmp_path, "test", Window())
    assert len(record) == 1 and "'buyer_d1' (1 file), 'buyer_d7' (1 file)" in str(record[0].message)
    assert "iap_revenue_d7" not in frame.columns and len(frame) == 5


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty_bytes"])
def test_corrupt_or_truncated_file_names_the_file(tmp_path, damage):
    write_part(tmp_path, "train", hour(0), make_table(50))
    path = write_part(tmp_path, "train", hour(1), make_table(50, start=100))
    data = path.read_bytes()
    path.write_bytes(
        {"garbage": b"x" * 4000, "truncated": data[: len(data) // 2], "empty_bytes": b""}[damage]
    )
    with pytest.raises(DataError, match="cannot read parquet file .*datetime=2025-10-01-01-00/part-00000"):
        load_split(tmp_path, "train", Window())
    with pytest.raises(DataError, match=str(path)):
        stream(tmp_path, "train", Window())


def test_corrupt_page_behind_a_valid_footer_names_the_file(tmp_path):
    path = write_part(tmp_path, "train", hour(0), make_table(500))
    data = bytearray(path.read_bytes())
    data[200:2000] = b"\xff" * 1800  # inside the column chunks, footer intact
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=str(path)):
        read_table(path, "train", hour(0))


def test_empty_partition_and_zero_row_file_skipped_warned_counted(tmp_path):
    write_part(tmp_path, "train", hour(0), make_table(10))
    (tmp_path / "train" / f"datetime={hour(1)}").mkdir()
    zero = write_part(tmp_path, "train", hour(2), make_table(0))
    write_part(tmp_path, "train", hour(3), make_table(10, start=100))
    with pytest.warns(UserWarning) as record:
        frame, report = load_split(tmp_path, "train", Window())
    messages = " | ".join(str(w.message) for w in record)
    assert f"skipped empty partition {tmp_path}/train/datetime={hour(1)}" in messages
    assert f"skipped 0-row file {zero}" in messages
    assert (report.empty_partitions, report.empty_files, len(report.files), len(frame)) == (1, 1, 3, 20)
    with pytest.warns(UserWarning, match="0-row file"):
        table, _ = read_table(zero, "train", hour(2))
    assert table.num_rows == 0 and "datetime" in table.column_names
    first, items = stream(tmp_path, "train", Window())
    said = first.warnings + [m for _, r in items for m in r.warnings]
    assert sorted(m.split(" /")[0] for m in said) == ["skipped 0-row file", "skipped empty partition"]
    assert first.empty_partitions == 1 and sum(r.empty_files for _, r in items) == 1


def test_empty_window_names_window_and_available_range(tmp_path):
    for h in (3, 4, 5):
        write_part(tmp_path, "train", hour(h), make_table(5, start=10 * h))
    window = Window(start="2025-10-09-00", end="2025-10-09-23", name="holdout")
    with pytest.raises(DataError) as err:
        load_split(tmp_path, "train", window)
    message = str(err.value)
    assert "window 'holdout' [2025-10-09-00-00 .. 2025-10-09-23-00]" in message
    assert f"available hours {hour(3)} .. {hour(5)} (3 folders)" in message
    with pytest.raises(DataError, match="window 'holdout'"):
        stream(tmp_path, "train", window)
    with pytest.raises(DataError, match="subset folder .*test does not exist"):
        load_split(tmp_path, "test", Window())


def test_rows_without_row_id_dropped_and_counted(tmp_path, caplog):
    t = put(make_table(10), "row_id", ["a", None, "", "d", "e", "f", "g", "h", "i", None])
    write_part(tmp_path, "train", hour(0), t)
    with caplog.at_level(logging.INFO, logger="ltv.data.loader"):
        frame, report = load_split(tmp_path, "train", Window())
    assert frame["row_id"].tolist() == ["a", "d", "e", "f", "g", "h", "i"]
    assert report.dropped == {"missing_row_id": 3} and report.rows_kept == 7
    assert "missing_row_id=3" in caplog.text


def test_nan_and_missing_required_labels_dropped_optional_kept(tmp_path):
    t = make_table(10)
    t = put(t, "iap_revenue_d7", [np.nan, 1.0, 0, 0, 0, 0, 0, 0, 0, 0])
    t = put(t, "buyer_d1", [0, 0, None, 0, 0, 0, 0, 0, 0, 0])
    t = put(t, "iap_revenue_d28", [0, 0, 0, np.inf, 0, 0, 0, 0, 0, 0])
    t = put(t, "registration", [np.nan] * 10)  # optional label: legitimately missing
    write_part(tmp_path, "train", hour(0), t)
    frame, report = load_split(tmp_path, "train", Window())
    assert frame["row_id"].tolist() == [f"r{i:06d}" for i in [1, 4, 5, 6, 7, 8, 9]]
    assert report.dropped == {"missing_label": 2, "infinite_label": 1}
    assert frame["registration"].isna().all()
    # unlabelled use of the same rows keeps them all
    frame, report = load_split(tmp_path, "train", Window(), labelled=False)
    assert len(frame) == 10 and report.dropped == {}


def test_negative_labels_dropped_but_refunds_kept(tmp_path):
    t = make_table(6)
    t = put(t, "iap_revenue_d7", [-1.0, 0, 0, 0, 0, 0])
    t = put(t, "buy_d7", [0, -2, 0, 0, 0, 0])
    t = put(t, "iap_revenue_d14", [0, 0, -2.42, 0, 0, 0])  # refunds: legal
    t = put(t, "iap_revenue_d28", [0, 0, -2.42, -0.5, 0, 0])
    write_part(tmp_path, "train", hour(0), t)
    frame, report = load_split(tmp_path, "train", Window())
    assert frame["row_id"].tolist() == [f"r{i:06d}" for i in [2, 3, 4, 5]]
    assert frame["iap_revenue_d14"].tolist()[0] == -2.42
    assert report.dropped == {"negative_label": 2}


def test_duplicate_row_ids_first_kept_within_and_across_files(tmp_path):
    a = put(make_table(4), "row_id", ["x", "y", "x", "z"])
    b = put(make_table(3, start=100), "row_id", ["y", "w", "w"])
    write_part(tmp_path, "train", hour(0), a)
    write_part(tmp_path, "train", hour(1), b)
    frame, report = load_split(tmp_path, "train", Window())
    assert frame["row_id"].tolist() == ["x", "y", "z", "w"]
    assert frame["datetime"].tolist() == [hour(0)] * 3 + [hour(1)]  # the earlier hour's 'y' wins
    assert report.duplicates == 3 and report.rows_kept == 4 and report.rows_sampled == 7
    # scoring: a group drops its own repeats (here "x" and "w"); ltv.scoring.unique_rows drops a row_id
    # an earlier group had ("y")
    from ltv.scoring import unique_rows

    _, items = stream(tmp_path, "train", Window(), batch_rows=2)
    assert [t.column("row_id").to_pylist() for t, _ in items] == [["x", "y", "z"], ["y", "w"]]
    assert sum(r.duplicates for _, r in items) == 2
    counts = {}
    kept = list(unique_rows(((t.column("row_id"), np.arange(t.num_rows)) for t, _ in items), counts))
    assert [i for ids, _ in kept for i in ids.to_pylist()] == ["x", "y", "z", "w"]
    assert counts["duplicates"] == 1 and counts["rows"] == 4


def test_nonfinite_values_in_maps_become_null_entries_kept(tmp_path):
    t = make_table(4)
    t = put(t, "cpm", [[("b", np.nan), ("i", 1.0)], None, [("r", np.inf), ("b", -np.inf)], []])
    mom = pa.map_(pa.string(), pa.map_(pa.string(), pa.float64()))
    t = put(
        t,
        "user_actions_bundles_action_count",
        [[("x", [("open", np.nan), ("buy", 2.0)])], None, None, []],
        mom,
    )
    t = put(t, "release_msrp", [np.inf, 1.0, np.nan, 2.0])
    path = write_part(tmp_path, "train", hour(0), t)
    table, report = read_table(path, "train", hour(0))
    assert table.column("cpm").to_pylist() == [
        [("b", None), ("i", 1.0)],
        None,
        [("r", None), ("b", None)],
        [],
    ]
    assert table.column("user_actions_bundles_action_count").to_pylist()[0] == [
        ("x", [("open", None), ("buy", 2.0)])
    ]
    assert table.column("user_actions_bundles_action_count").to_pylist()[1:] == [None, None, []]
    assert table.column("release_msrp").to_pylist()[:2] == [None, 1.0]  # inf -> null; NaN is plain missing
    assert report.repaired == {"nonfinite_map_value": 4, "infinite_number": 1}
    assert table.num_rows == 4


def test_nonfinite_repairs_counted_once_when_streaming_slices(tmp_path):
    n = 50
    t = put(make_table(n), "cpm", [[("b", np.nan if i % 5 == 0 else 1.0), ("i", 2.0)] for i in range(n)])
    mom = pa.map_(pa.string(), pa.map_(pa.string(), pa.float64()))
    t = put(
        t,
        "user_actions_bundles_action_count",
        [[("x", [("o", np.inf if i % 7 == 0 else 1.0)])] for i in range(n)],
        mom,
    )
    path = write_part(tmp_path, "train", hour(0), t)
    whole, report = read_table(path, "train", hour(0))
    assert report.repaired == {"nonfinite_map_value": 10 + 8}
    pq.write_table(pq.read_table(path), path, row_group_size=6)  # a scoring group per row group
    _, items = stream(tmp_path, "train", Window(), batch_rows=6)
    assert len(items) == 9
    assert sum(r.repaired.get("nonfinite_map_value", 0) for _, r in items) == 18
    assert (
        pa.concat_tables([t for t, _ in items])
        .select(["cpm", "user_actions_bundles_action_count"])
        .equals(whole.select(["cpm", "user_actions_bundles_action_count"]))
    )


def test_dictionary_encoded_strings_become_plain_strings(tmp_path):
    t = make_table(6)
    countries = t.column("country").to_pylist()
    t = t.set_column(t.schema.get_field_index("country"), "country", t.column("country").dictionary_encode())
    path = write_part(tmp_path, "train", hour(0), t)
    assert pa.types.is_dictionary(pq.read_schema(path).field("country").type)
    table, report = read_table(path, "train", hour(0))
    assert table.schema.field("country").type == pa.string()
    assert table.column("country").to_pylist() == countries
    assert report.repaired == {"dictionary_string": 1}


def test_label_values_that_do_not_fit_the_contract_type(tmp_path):
    t = put(make_table(3), "buyer_d7", [0.0, 0.5, 1.0], pa.float64())
    path = write_part(tmp_path, "train", hour(0), t)
    with pytest.raises(DataError, match=f"{path}: column 'buyer_d7' of type double cannot become int32"):
        read_table(path, "train", hour(0))


def test_no_usable_row_is_an_error_not_an_empty_frame(tmp_path):
    write_part(tmp_path, "train", hour(0), put(make_table(3), "iap_revenue_d7", [np.nan] * 3))
    with pytest.raises(DataError, match="window 'train' .* no usable row.*missing_label=3"):
        load_split(tmp_path, "train", Window(name="train"))


def test_fn_returning_wrong_rows_is_a_clear_error(tmp_path):
    write_part(tmp_path, "train", hour(0), make_table(3))
    with pytest.raises(ValueError, match="fn must return a DataFrame of 3 rows .*part-00000.*got 2 rows"):
        load_split(tmp_path, "train", Window(), lambda t: make_table(2).select(["weekday"]).to_pandas())


def test_clean_data_raises_no_warning(tmp_path):
    write_part(tmp_path, "train", hour(0), make_table(20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame, report = load_split(tmp_path, "train", Window())
    assert len(frame) == 20 and report.dropped == {} and report.repaired == {}
