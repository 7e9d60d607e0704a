"""Extraction and transform are one path for any number of rows: a row alone gives its row of the batch
(same columns, order, dtypes, values), on tables with every nested kind (null cells, empty maps, null
values, null cells backed by values, all-null columns, typed-null columns, slices, several chunks)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ltv import contract
from ltv.features import FeatureBuilder, nested, stateless
from ltv.models.lgbm_predict import pandas_matrix
from tests.test_features_extract import mixed_table
from tests.test_features_nested import DAY0


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
    typed_null["rev_by_adv"] = pa.MapArray.from_arrays(
        pa.array(offsets),
        pa.array([f"k{i % 3}" for i in range(2 * n)]),
        pa.array([float(i) if i % 5 else None for i in range(2 * n)], pa.float64()),
        mask=pa.array([i % 2 == 1 for i in range(n)]),
    )
    for name, arr in typed_null.items():
        t = t.set_column(t.schema.get_field_index(name), name, arr)
    return t


@pytest.mark.parametrize("make", [mixed_table, _edge_table])
def test_every_row_alone_equals_its_row_of_the_batch(make):
    fb = FeatureBuilder()
    table = make(60, seed=4)
    whole = fb.extract(table)
    rows = [fb.extract(table.slice(i, 1)) for i in range(table.num_rows)]
    pd.testing.assert_frame_equal(pd.concat(rows, ignore_index=True), whole, check_exact=True)
    chunked = pa.concat_tables([table.slice(0, 3), table.slice(3, 2)])  # several chunks
    pd.testing.assert_frame_equal(fb.extract(chunked), whole.iloc[:5], check_exact=True)


def test_extracted_frame_is_float32_and_object_with_none_for_null():
    S = FeatureBuilder().extract(mixed_table(5))
    assert set(S.dtypes.astype(str)) == {"float32", "object"}
    assert all(v is None or isinstance(v, str) for v in S["country"])
    assert S["country"].isna().any() and None in S["country"].tolist()  # None kept, not NaN
    assert FeatureBuilder().extract(mixed_table(0)).shape[0] == 0


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


def test_string_and_parse_helpers_on_plain_dictionary_chunked_and_null_columns():
    col = pa.array(["2023_october", None, "2023_october", "junk", "2025_january"])
    forms = (col, col.dictionary_encode(), pa.chunked_array([col.slice(0, 2), col.slice(2)]))
    for c in forms:
        months = stateless.map_unique(c, stateless._parse_release)
        np.testing.assert_array_equal(months, [645.0, np.nan, 645.0, np.nan, 660.0])
    *decoded, nulls, large = stateless.strings(*forms, pa.nulls(5), col.cast(pa.large_string()))
    for strings in (*decoded, large):
        assert strings.dtype == object
        assert strings.tolist() == ["2023_october", None, "2023_october", "junk", "2025_january"]
    assert nulls.tolist() == [None] * 5 and stateless.strings() == []
    assert decoded[0][0] is decoded[1][2]  # one str object per distinct value, across the columns


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


def test_transform_of_one_row_equals_its_row_of_the_batch(fitted):
    n = 50
    table = _edge_table(n, seed=150)
    # unseen category values and a null group key in the request rows
    country = pa.array((["us", "zz-unseen", None, "es"] * n)[:n], pa.string())
    table = table.set_column(table.schema.get_field_index("country"), "country", country)
    whole = fitted.transform(fitted.extract(table))
    assert list(whole.columns) == fitted.feature_names_
    assert whole["country"].cat.codes.iloc[1] == len(whole["country"].cat.categories) - 1  # '__unseen__'
    assert whole["country"].cat.codes.iloc[2] == -1  # null stays missing
    stats = fitted.group_stats_.feature_names_
    assert whole[stats].dtypes.eq(np.float32).all() and whole[stats].notna().any().any()
    rows = [fitted.transform(fitted.extract(table.slice(i, 1))) for i in range(n)]
    pd.testing.assert_frame_equal(pd.concat(rows, ignore_index=True), whole, check_exact=True)


def test_transform_table_equals_transform_of_extract(fitted):
    """The pipeline's one-call path (numbers written once; the statistics and the category codes into
    spare rows of the extracted block) gives transform(extract(table)), and the float32 matrix LightGBM
    reads for it, for a batch and for each row, from a builder that has not extracted yet (its block
    grows), and falls back to transform where the fitted numbers are not the extracted ones in order."""
    table = _edge_table(40, seed=151)
    fresh = pickle.loads(pickle.dumps(fitted))
    whole, matrix = fresh.transform_table(table)
    pd.testing.assert_frame_equal(whole, fitted.transform(fitted.extract(table)), check_exact=True)
    categories = [list(whole[c].cat.categories) for c in fitted.categorical_features_]
    expected = pandas_matrix(whole, fitted.feature_names_, categories)
    assert matrix.columns == fitted.feature_names_ and matrix.categories == categories
    assert matrix.values.dtype == expected.dtype == np.float32 and matrix.values.flags.f_contiguous
    np.testing.assert_array_equal(matrix.values, expected)  # NaN where NaN, every other value equal
    rows = [fresh.transform_table(table.slice(i, 1)) for i in range(table.num_rows)]
    pd.testing.assert_frame_equal(pd.concat([X for X, _ in rows], ignore_index=True), whole, check_exact=True)
    np.testing.assert_array_equal(np.concatenate([m.values for _, m in rows]), matrix.values)
    no_stats = FeatureBuilder(groups={"scalars": True, "categoricals": True, "maps_basic": True})
    no_stats.fit(no_stats.extract(mixed_table(100, seed=3)))
    X, matrix = no_stats.transform_table(table)
    pd.testing.assert_frame_equal(X, no_stats.transform(no_stats.extract(table)), check_exact=True)
    assert matrix.values.shape == X.shape
    S = fitted.extract(mixed_table(600, seed=9))
    reordered = FeatureBuilder(min_category_count=5, max_categories=2, min_group_count=20, n_quantiles=11)
    reordered.fit(S[S.columns[::-1]])
    X, matrix = reordered.transform_table(table)
    pd.testing.assert_frame_equal(X, reordered.transform(reordered.extract(table)), check_exact=True)
    assert list(X.columns) == reordered.feature_names_ != fitted.feature_names_ and matrix is None


def test_transform_reports_missing_columns(fitted):
    S = fitted.extract(mixed_table(2)).drop(columns=["bcat__sum"])
    with pytest.raises(ValueError, match="bcat__sum"):
        fitted.transform(S)


def test_derived_state_is_rebuilt_after_refit_and_not_pickled():
    fb = FeatureBuilder(min_category_count=1, min_group_count=1, n_quantiles=5)
    S1 = fb.extract(mixed_table(80, seed=1))
    X1 = fb.fit(S1).transform(S1.iloc[:2])
    blob = pickle.dumps(fb)
    derived = (b"_needed", b"_lookups", b"_plan", b"_width", b"_n_stats", b"_medians", b"_rows")
    assert not any(name in blob for name in derived)
    S2 = fb.extract(mixed_table(80, seed=2)).assign(
        country=lambda d: d["country"].map(lambda v: v and v + "2")
    )
    X2 = fb.fit(S2).transform(S2.iloc[:2])
    fresh = FeatureBuilder(min_category_count=1, min_group_count=1, n_quantiles=5).fit(S2)
    pd.testing.assert_frame_equal(X2, fresh.transform(S2.iloc[:2]), check_exact=True)
    assert list(X1["country"].cat.categories) != list(X2["country"].cat.categories)
    back = pickle.loads(blob)
    pd.testing.assert_frame_equal(back.transform(S1.iloc[:2]), X1, check_exact=True)
