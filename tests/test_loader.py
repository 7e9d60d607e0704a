"""Loader: windows, pruning, sampling, partition caps, test subset, fn alignment, streaming."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ltv import contract
from ltv.data.groups import file_groups, read_group
from ltv.data.loader import DataError, LoadReport, Window, list_files, read_table
from ltv.data.loader import load_split as _load_split

DAY = "2025-10-01"


def load_split(*args, scheduler=None, **kwargs):
    """The loader's split, computed (on ``scheduler``: Dask's default, or e.g. 'sync')."""
    import dask

    with dask.config.set(scheduler=scheduler) if scheduler else _nothing():
        frame, report = _load_split(*args, **kwargs)
        return frame.compute().reset_index(drop=True), report


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def put(table: pa.Table, name: str, values, type_: pa.DataType | None = None) -> pa.Table:
    """Replace contract column ``name`` of ``table`` (type defaults to the canonical one)."""
    arr = pa.array(values, type_ or contract.CANONICAL_TYPE[name])
    return table.set_column(table.schema.get_field_index(name), name, arr)


def make_table(n: int, split: str = "train", start: int = 0, seed: int = 0) -> pa.Table:
    """A contract table of ``n`` rows with row ids r{start..}, a few features and valid labels."""
    rng = np.random.default_rng(seed)
    t = contract.null_table(n, split)
    t = put(t, "row_id", [f"r{start + i:06d}" for i in range(n)])
    t = put(t, "country", rng.choice(["us", "in", "jp"], n))
    t = put(t, "release_msrp", rng.uniform(100.0, 900.0, n))
    t = put(t, "weekday", np.full(n, 3))
    t = put(t, "cpm", [None if i % 3 == 0 else [("b", float(i)), ("i", 0.5)] for i in range(n)])
    t = put(
        t, "user_actions_bundles_action_count", [[("x", [("open", i)])] if i % 2 else None for i in range(n)]
    )
    t = put(t, "bundles_ins", [["a", "b"] if i % 4 == 0 else None for i in range(n)])
    if split == "train":
        buyer = (np.arange(n) % 10 == 0).astype(np.int32)
        for name in contract.BUYER_LABELS:
            t = put(t, name, buyer)
        for name in ("buy_d7", "buy_d14", "buy_d28"):
            t = put(t, name, buyer.astype(np.int64))
        revenue = buyer * (start + np.arange(n) + 1.0)
        for name in contract.REVENUE_LABELS:
            t = put(t, name, revenue)
        t = put(t, "registration", np.where(np.arange(n) % 7 == 0, np.nan, 1.0))
    return t


def hour(h: int, day: str = DAY) -> str:
    return f"{day}-{h:02d}-00"


def write_part(root, subset: str, dt: str, table: pa.Table, name: str = "part-00000.snappy.parquet", **kw):
    folder = root / subset / f"datetime={dt}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name, **kw)
    return folder / name


@pytest.fixture
def hours6(tmp_path):
    """Train hours 00..05 of 200 rows each (row ids r{h*200 + i}); test hours 00..01 of 100 rows."""
    for h in range(6):
        write_part(tmp_path, "train", hour(h), make_table(200, start=h * 200, seed=h))
    for h in range(2):
        write_part(tmp_path, "test", hour(h, "2025-10-08"), make_table(100, "test", start=10_000 + h * 100))
    return tmp_path


def test_window_bounds_accept_short_folder_and_day_forms():
    assert Window(start="2025-10-01-02", end="2025-10-01-05-00").bounds() == (hour(2), hour(5))
    assert Window(start="2025-10-01", end="2025-10-02").bounds() == (hour(0), "2025-10-02-23-00")
    assert Window().bounds() == (None, None)
    for bad in ("2025-10-01-2", "2025-13-01-00", "2025-10-01-02-30", "yesterday"):
        with pytest.raises(ValueError, match="window 'w'"):
            Window(start=bad, name="w")
    with pytest.raises(ValueError, match="after end"):
        Window(start="2025-10-02", end="2025-10-01", name="w")
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            Window(fraction=fraction)
    with pytest.raises(ValueError, match="max_partitions"):
        Window(max_partitions=0)


def test_window_inclusive_and_pruned(hours6):
    # a corrupt file in a pruned hour must never be opened
    (hours6 / "train" / f"datetime={hour(5)}" / "part-00001.snappy.parquet").write_bytes(b"not parquet")
    for start, end in (("2025-10-01-01", "2025-10-01-03"), (hour(1), hour(3))):
        files = list_files(hours6, "train", Window(start=start, end=end))
        assert [h for h, _ in files] == [hour(1), hour(2), hour(3)]
        frame, report = load_split(hours6, "train", Window(start=start, end=end))
        assert frame["row_id"].tolist() == [f"r{i:06d}" for i in range(200, 800)]
        assert sorted(set(frame["datetime"])) == [hour(1), hour(2), hour(3)]
        assert (len(report.files), report.rows_read, report.rows_kept) == (3, 600, 600)
        assert report.files == [p for _, p in files]
    with pytest.raises(DataError, match="part-00001"):
        load_split(hours6, "train", Window(start=hour(5)))


def test_open_window_and_time_order_across_days(tmp_path):
    write_part(tmp_path, "train", hour(0, "2025-10-02"), make_table(5, start=100))
    write_part(tmp_path, "train", hour(23), make_table(5, start=0))
    frame, _ = load_split(tmp_path, "train", Window(start=hour(23)))
    assert frame["datetime"].tolist() == [hour(23)] * 5 + [hour(0, "2025-10-02")] * 5


def test_multiple_files_per_hour_in_name_order(tmp_path):
    write_part(tmp_path, "train", hour(0), make_table(30, start=100), "part-00007.snappy.parquet")
    write_part(tmp_path, "train", hour(0), make_table(20, start=0), "part-00002.snappy.parquet")
    (tmp_path / "train" / f"datetime={hour(0)}" / "_SUCCESS").write_text("")
    files = list_files(tmp_path, "train", Window())
    assert [p.name for _, p in files] == ["part-00002.snappy.parquet", "part-00007.snappy.parquet"]
    frame, report = load_split(tmp_path, "train", Window())
    assert frame["row_id"].tolist() == [f"r{i:06d}" for i in range(20)] + [
        f"r{i:06d}" for i in range(100, 130)
    ]
    assert report.files == [p for _, p in files]


def test_fraction_is_seeded_per_file_and_about_right(hours6):
    window = Window(start=hour(0), end=hour(3), fraction=0.25, name="train")
    a, report = load_split(hours6, "train", window, seed=1)
    b, _ = load_split(hours6, "train", window, seed=1, scheduler="sync")
    c, _ = load_split(hours6, "train", window, seed=2)
    assert len(a) == 4 * 50 and report.rows_read == 800 and report.rows_sampled == 200
    pd.testing.assert_frame_equal(a, b)
    assert a["row_id"].tolist() != c["row_id"].tolist()
    # rows keep file order, and each file contributes its own seeded quarter
    assert a["row_id"].is_monotonic_increasing
    assert a.groupby("datetime").size().tolist() == [50, 50, 50, 50]
    # read_table samples a file exactly like load_split does
    (h, path) = list_files(hours6, "train", window)[2]
    table, _ = read_table(path, "train", h, window, seed=1)
    assert table.column("row_id").to_pylist() == a.loc[a["datetime"] == h, "row_id"].tolist()


def test_max_partitions_seeded_and_time_ordered(hours6):
    picks = {}
    for seed in range(6):
        files = list_files(hours6, "train", Window(max_partitions=3), seed=seed)
        hours = [h for h, _ in files]
        assert len(hours) == 3 and hours == sorted(hours)
        assert hours == [h for h, _ in list_files(hours6, "train", Window(max_partitions=3), seed=seed)]
        picks[seed] = tuple(hours)
    assert len(set(picks.values())) > 1  # the seed changes the choice
    frame, report = load_split(hours6, "train", Window(max_partitions=3), seed=0)
    assert sorted(set(frame["datetime"])) == list(picks[0]) and len(report.files) == 3
    assert len(list_files(hours6, "train", Window(max_partitions=10))) == 6


def test_test_subset_has_no_labels(hours6):
    frame, report = load_split(hours6, "test", Window(name="test"))
    assert len(frame) == 200 and report.rows_kept == 200
    assert not set(contract.LABEL_COLUMNS) & set(frame.columns)
    table, _ = read_table(list_files(hours6, "test", Window())[0][1], "test", hour(0, "2025-10-08"))
    assert table.column_names == contract.TEST_COLUMNS + ["datetime"]
    with pytest.raises(ValueError, match="subset 'test' has no label"):
        load_split(hours6, "test", Window(), labelled=True)


def test_fn_output_aligned_with_row_id_and_labels(hours6):
    seen_columns = []

    def fn(table: pa.Table) -> pd.DataFrame:
        seen_columns.append(table.column_names)
        ids = pc.cast(pc.utf8_slice_codeunits(table.column("row_id"), 1), pa.int64()).to_numpy()
        cpm_len = [-1 if v is None else len(v) for v in table.column("cpm").to_pylist()]
        # a non-default index must not misalign the attached columns
        return pd.DataFrame({"id_num": ids, "cpm_len": cpm_len}, index=np.arange(len(ids))[::-1])

    frame, _ = load_split(hours6, "train", Window(end=hour(1)), fn)
    assert list(frame.columns[:4]) == ["id_num", "cpm_len", "row_id", "datetime"]
    assert frame["id_num"].tolist() == [int(r[1:]) for r in frame["row_id"]]
    assert frame["cpm_len"].tolist() == [-1 if i % 200 % 3 == 0 else 2 for i in range(400)]
    # labels arrive as float64 aligned with their rows: revenue = row number + 1 for every 10th row
    assert frame["iap_revenue_d7"].dtype == np.float64 and frame["buyer_d7"].dtype == np.float64
    buyers = frame["buyer_d7"] == 1.0
    assert frame.loc[buyers, "iap_revenue_d7"].tolist() == (frame.loc[buyers, "id_num"] + 1.0).tolist()
    assert np.isnan(frame["registration"].iloc[0]) and frame["registration"].iloc[1] == 1.0
    assert all("iap_revenue_d7" not in cols and "datetime" in cols for cols in seen_columns)


def test_fn_none_gives_light_scalar_frame_with_plain_strings(hours6):
    frame, _ = load_split(hours6, "train", Window(end=hour(0)))
    assert not set(contract.NESTED_COLUMNS) & set(frame.columns)
    assert {"country", "release_msrp", "weekday", "row_id", "datetime", "iap_revenue_d7"} <= set(
        frame.columns
    )
    assert frame["country"].dtype == "str" and frame["row_id"].dtype == "str"
    assert frame["advertiser_bundle"].isna().all() and frame["advertiser_bundle"].iloc[0] is not pd.NA


def test_other_numeric_types_of_the_same_kind_load_and_become_canonical(tmp_path):
    t = make_table(10)
    t = put(t, "cpm", [[("b", i)] for i in range(10)], pa.map_(pa.string(), pa.int64()))
    buyer = np.arange(10) % 10 == 0  # make_table's buyers (consistent labels: nothing to repair)
    t = put(t, "buy_d7", buyer.astype(np.int32), pa.int32())
    t = put(t, "buyer_d7", buyer.astype(np.float64), pa.float64())
    t = put(t, "country", ["us"] * 10, pa.large_string())
    path = write_part(tmp_path, "train", hour(0), t)
    table, report = read_table(path, "train", hour(0))
    assert table.schema.remove(table.schema.get_field_index("datetime")) == contract.arrow_schema("train")
    assert table.column("cpm").to_pylist()[3] == [("b", 3.0)]
    assert report.rows_kept == 10 and report.repaired == {}


def test_file_groups_read_in_order_equal_the_files_and_the_split(hours6):
    window = Window(end=hour(2), fraction=0.8)
    groups, _ = file_groups(hours6, "train", window, 70, seed=3)
    items = [read_group(g, "train", window, seed=3) for g in groups]
    assert len(items) == 3  # a 200-row file is one row group: a group of its own
    streamed = pa.concat_tables([t for t, _ in items])
    whole = pa.concat_tables(
        [read_table(p, "train", h, window, seed=3)[0] for h, p in list_files(hours6, "train", window)]
    )
    assert streamed.drop_columns(["registration"]).equals(whole.drop_columns(["registration"]))
    np.testing.assert_array_equal(streamed.column("registration"), whole.column("registration"))  # NaN-aware
    total = LoadReport()
    for _, report in items:
        total.merge(report)
    assert (len(total.files), total.rows_read, total.rows_sampled, total.rows_kept) == (3, 600, 480, 480)
    frame, _ = load_split(hours6, "train", window, seed=3)
    assert frame["row_id"].tolist() == streamed.column("row_id").to_pylist()


def test_load_split_stays_lazy_and_persisted_until_computed(hours6):
    """The split is a Dask frame of one partition per file (persisted: computing it twice reads nothing
    again), equal on the threaded and the sync scheduler."""
    frame, report = _load_split(hours6, "train", Window(end=hour(2)), seed=0)
    assert frame.npartitions == 3 and report.rows_kept == 600
    a = frame.compute().reset_index(drop=True)
    b, _ = load_split(hours6, "train", Window(end=hour(2)), seed=0, scheduler="sync")
    pd.testing.assert_frame_equal(a, b)
    assert frame.compute().reset_index(drop=True).equals(a)


def test_split_log_line_and_metrics(hours6, caplog):
    with caplog.at_level(logging.INFO, logger="ltv.data.loader"):
        _, report = load_split(hours6, "train", Window(end=hour(1), name="valid"))
    line = next(r.getMessage() for r in caplog.records if "window 'valid'" in r.getMessage())
    assert "2 files" in line and "400 rows read" in line and "400 kept" in line and "rows/s" in line
    metrics = report.as_metrics("load.valid.")
    assert metrics["load.valid.rows_kept"] == 400.0 and metrics["load.valid.files"] == 2.0
    assert report.as_metrics("valid")["valid.rows_read"] == 400.0
    assert report.as_metrics("")["duplicates"] == 0.0


def test_seen_row_ids_stay_few_runs_and_catch_repeats_from_any_earlier_batch():
    from ltv.data.schema import LoadReport, SeenRowIds

    seen, rng = SeenRowIds(), np.random.default_rng(3)
    kept = []
    for b in range(40):
        fresh = [f"b{b}-{i}" for i in range(500)]
        old = [kept[i] for i in rng.choice(len(kept), 7, replace=False)] if kept else []
        report = LoadReport(rows_kept=len(fresh) + len(old))
        out = seen.filter_new(pa.table({"row_id": fresh + old}), report)
        assert out.column("row_id").to_pylist() == fresh  # every repeat dropped, new rows in order
        assert report.duplicates == len(old) and report.rows_kept == len(fresh)
        kept += fresh
        assert len(seen._runs) <= int(np.log2(b + 1)) + 1  # a binary counter of sorted runs
        assert all(np.all(np.diff(r) >= 0) for r in seen._runs)
    assert sum(len(r) for r in seen._runs) == len(kept)
    # a batch of repeats only (a whole file seen before) drops every row and the stream goes on
    again = pa.table({"row_id": kept[:300]})
    report = LoadReport(rows_kept=300)
    assert seen.filter_new(again, report).num_rows == 0 and report.duplicates == 300
    assert seen.filter_new(pa.table({"row_id": ["new", kept[5]]}), LoadReport()).column(
        "row_id"
    ).to_pylist() == ["new"]


def test_file_groups_count_rows_per_file_and_split_large_files_by_row_group(tmp_path):
    """Groups hold at most the limit's rows whatever the file sizes (a small first file must not set the
    group size), a large file is cut at its row groups, and reading the groups in order gives the rows,
    sampling and counts of the stream."""
    extra = lambda t: t.append_column("surprise", pa.array(np.ones(t.num_rows)))  # noqa: E731
    write_part(tmp_path, "train", hour(0), make_table(10, start=0))
    write_part(tmp_path, "train", hour(1), extra(make_table(230, start=10)), row_group_size=50)
    write_part(tmp_path, "train", hour(2), make_table(30, start=240))
    write_part(tmp_path, "train", hour(3), make_table(120, start=270), row_group_size=120)  # one big group
    write_part(tmp_path, "train", hour(4), make_table(0, start=390))
    window = Window(fraction=0.5)
    groups, report = file_groups(tmp_path, "train", window, 100, seed=7)
    groups = list(groups)
    parts = [[(h[-5:-3], rg) for h, _, rg in g] for g in groups]
    assert parts == [
        [("00", None)],  # 10 rows; the first 100 rows of hour 01 would overflow
        [("01", (0, 2))],  # 2 row groups of 50
        [("01", (2, 4))],
        [("01", (4, 5)), ("02", None)],  # 30 + 30 rows
        [("03", (0, 1)), ("04", None)],  # 120 rows in one row group (the only group over the limit), 0 rows
    ]
    read = [read_group(g, "train", window, seed=7) for g in groups]
    grouped = pa.concat_tables([t for t, _ in read if t is not None])
    streamed = pa.concat_tables(  # the files read whole, one after another
        [read_table(p, "train", h, window, seed=7)[0] for h, p in list_files(tmp_path, "train", window)]
    )
    assert grouped.column("row_id").to_pylist() == streamed.column("row_id").to_pylist()
    assert grouped.column("cpm").to_pylist() == streamed.column("cpm").to_pylist()
    for _, part in read:
        report.merge(part)
    assert len(report.files) == 5 and report.empty_files == 1  # each file listed once, however cut
    assert report.unexpected_columns == {"surprise": 1}
    assert (report.rows_read, report.rows_sampled, report.rows_kept) == (390, 195, grouped.num_rows)
