"""The small-batch shortcuts of extraction (one consolidated block per dtype, per-value Python instead of
Arrow kernels for a few rows, no kernels for all-null / all-valid columns) give exactly the general path's
frame: same columns, order, dtypes and values, on tables with every nested kind (null cells, empty maps,
null values, null cells backed by values, all-null columns, typed-null columns, slices)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ltv import contract
from ltv.features import FeatureBuilder, builder, nested, stateless
from tests.test_features_extract import mixed_table
from tests.test_features_nested import DAY0


@pytest.fixture
def general(monkeypatch):
    """A function extracting with every shortcut turned off (the general, any-size path)."""

    def run(fb: FeatureBuilder, table: pa.Table) -> pd.DataFrame:
        with monkeypatch.context() as m:
            m.setattr(builder, "_SMALL_ROWS", 0)  # no consolidated small-batch frame
            m.setattr(stateless, "_FEW", -1)  # no per-value Python path
            return fb.extract(table)

    return run


def _edge_table(n: int, seed: int = 0) -> pa.Table:
    """mixed_table plus all-null map / list / map-of-map / string / number columns (typed and pa.null())
    and a map whose null cells are backed by values."""
    t = mixed_table(n, seed)
    typed_null = {
        "bcat": pa.nulls(n, contract.CANONICAL_TYPE["bcat"]),
        "user_bundles": pa.nulls(n, contract.CANONICAL_TYPE["user_bundles"]),
        "user_actions_bundles_action_count": pa.nulls(
            n, contract.CANONICAL_TYPE["user_actions_bundles_action_count"]
        ),
        "country": pa.nulls(n, pa.string()),
        "release_msrp": pa.nulls(n),  # pa.null() type
        "cpm": pa.nulls(n),
    }
    offsets = np.arange(n + 1, dtype=np.int32) * 2  # every cell spans two entries, odd rows null
    backed = pa.MapArray.from_arrays(
        pa.array(offsets),
        pa.array([f"k{i % 3}" for i in range(2 * n)]),
        pa.array([float(i) if i % 5 else None for i in range(2 * n)], pa.float64()),
        mask=pa.array([i % 2 == 1 for i in range(n)]),
    )
    typed_null["rev_by_adv"] = backed
    for name, arr in typed_null.items():
        t = t.set_column(t.schema.get_field_index(name), name, arr)
    return t


@pytest.mark.parametrize("n", [1, 2, 5, 9, 40, 300])
def test_small_batch_extraction_equals_the_general_path(n, general):
    fb = FeatureBuilder()
    for table in (mixed_table(n, seed=n), _edge_table(n, seed=n)):
        fast = fb.extract(table)
        assert fast.shape[1] == general(fb, table).shape[1]
        pd.testing.assert_frame_equal(fast, general(fb, table), check_exact=True)


def test_every_row_alone_equals_its_row_of_the_batch(general):
    fb = FeatureBuilder()
    table = _edge_table(60, seed=4)
    whole = general(fb, table)
    rows = [fb.extract(table.slice(i, 1)) for i in range(table.num_rows)]
    pd.testing.assert_frame_equal(pd.concat(rows, ignore_index=True), whole, check_exact=True)
    # a multi-chunk table takes the same path
    chunked = pa.concat_tables([table.slice(0, 3), table.slice(3, 2)])
    pd.testing.assert_frame_equal(fb.extract(chunked), whole.iloc[:5], check_exact=True)


def test_small_batch_frame_is_consolidated_and_typed():
    S = FeatureBuilder().extract(mixed_table(5))
    dtypes = set(S.dtypes.astype(str))
    assert dtypes == {"float32", "object"}
    assert S["country"].tolist() == [S["country"][i] for i in range(5)]  # None kept, not NaN
    assert all(v is None or isinstance(v, str) for v in S["country"])


def test_flatten_of_all_null_cells_backed_by_values_has_no_elements():
    arr = pa.MapArray.from_arrays(
        pa.array([0, 2, 3], pa.int32()),
        pa.array(["a", "b", "c"]),
        pa.array([1.0, 2.0, 3.0]),
        mask=pa.array([True, True]),
    )
    for a in (arr, arr.slice(1, 1), pa.nulls(3, arr.type)):
        flat = nested.flatten(a)
        assert len(flat.parent) == 0 and len(flat.keys) == 0 and len(flat.items) == 0
        assert flat.keys.type == pa.string() and flat.items.type == pa.float64()
        assert not flat.valid.any() and (flat.lengths == 0).all() and flat.lengths.dtype == np.int64
        assert np.isnan(nested.seg_sum(flat, flat.values())).all()


def test_few_row_string_and_parse_helpers_equal_the_encoded_path(monkeypatch):
    col = pa.array(["2023_october", None, "2023_october", "junk", "2025_january"])
    dict_col = col.dictionary_encode()
    fast = [stateless.map_unique(c, stateless._parse_release) for c in (col, dict_col)]
    fast_s = [stateless.strings(c) for c in (col, dict_col)]
    monkeypatch.setattr(stateless, "_FEW", -1)
    for c, f, s in zip((col, dict_col), fast, fast_s, strict=True):
        np.testing.assert_array_equal(f, stateless.map_unique(c, stateless._parse_release))
        assert s.tolist() == stateless.strings(c).tolist() and s.dtype == object
    assert fast_s[0].tolist() == ["2023_october", None, "2023_october", "junk", "2025_january"]


def test_one_row_request_time_from_datetime_and_reference():
    t = mixed_table(3).slice(1, 1)
    S = FeatureBuilder(groups={"recency": True}).extract(t)
    full = FeatureBuilder(groups={"recency": True}).extract(mixed_table(3))
    pd.testing.assert_frame_equal(S, full.iloc[1:2].reset_index(drop=True), check_exact=True)
    no_dt = t.drop_columns(["datetime"])
    fb = FeatureBuilder(groups={"recency": True}, reference_time=DAY0)
    assert np.isfinite(fb.extract(no_dt)["last_buy__days"]).all()


@pytest.fixture(scope="module")
def fitted():
    """A builder fitted on mixed rows with small thresholds, so vocabularies, rare values and segment
    groups are all non-trivial."""
    fb = FeatureBuilder(min_category_count=5, max_categories=2, min_group_count=20, n_quantiles=11)
    return fb.fit(fb.extract(mixed_table(600, seed=9)))


@pytest.mark.parametrize("n", [1, 3, 8, 9, 50])
def test_small_batch_transform_equals_the_general_path(fitted, n, monkeypatch):
    table = _edge_table(n, seed=100 + n)
    # unseen category values and a null group key in the request rows
    country = pa.array((["us", "zz-unseen", None, "es"] * n)[:n], pa.string())
    table = table.set_column(table.schema.get_field_index("country"), "country", country)
    S = fitted.extract(table)
    fast = fitted.transform(S)
    with monkeypatch.context() as m:
        m.setattr(builder, "_SMALL_ROWS", 0)
        from ltv.features import fitted as fitted_mod

        m.setattr(fitted_mod, "_FEW", -1)
        slow = fitted.transform(S)
    assert list(fast.columns) == fitted.feature_names_
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    # one row at a time gives the batch's rows
    rows = [fitted.transform(fitted.extract(table.slice(i, 1))) for i in range(n)]
    pd.testing.assert_frame_equal(pd.concat(rows, ignore_index=True), slow, check_exact=True)


def test_transform_small_reports_missing_columns(fitted):
    S = fitted.extract(mixed_table(2)).drop(columns=["bcat__sum"])
    with pytest.raises(ValueError, match="bcat__sum"):
        fitted.transform(S)


def test_caches_are_rebuilt_after_refit_and_not_pickled():
    import pickle

    fb = FeatureBuilder(min_category_count=1, min_group_count=1, n_quantiles=5)
    S1 = fb.extract(mixed_table(80, seed=1))
    X1 = fb.fit(S1).transform(S1.iloc[:2])
    blob = pickle.dumps(fb)
    assert b"_layout_cache" not in blob and b"_lookup_cache" not in blob and b"_plan_cache" not in blob
    S2 = fb.extract(mixed_table(80, seed=2)).assign(
        country=lambda d: d["country"].map(lambda v: v and v + "2")
    )
    X2 = fb.fit(S2).transform(S2.iloc[:2])
    fresh = FeatureBuilder(min_category_count=1, min_group_count=1, n_quantiles=5).fit(S2)
    pd.testing.assert_frame_equal(X2, fresh.transform(S2.iloc[:2]), check_exact=True)
    assert list(X1["country"].cat.categories) != list(X2["country"].cat.categories)
    back = pickle.loads(blob)
    pd.testing.assert_frame_equal(back.transform(S1.iloc[:2]), X1, check_exact=True)
