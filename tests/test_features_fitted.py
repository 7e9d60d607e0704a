"""Fitted stages: fixed category vocabulary, segment statistics, and that nothing is learned outside fit."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest

from ltv.features import FeatureBuilder
from ltv.features.fitted import OTHER, UNSEEN, CategoryEncoder, GroupStats
from tests.test_features_extract import mixed_table


def test_category_encoder_vocabulary_other_unseen_and_null():
    train = pd.DataFrame({"c": ["a"] * 30 + ["b"] * 25 + ["c"] * 5 + [None]}, dtype=object)
    enc = CategoryEncoder(max_categories=200, min_category_count=20).fit(train, ["c"])
    out = enc.transform_column("c", pd.Series(["b", "c", "d", None, "a"], dtype=object))
    assert list(out.categories) == ["a", "b", OTHER, UNSEEN]
    assert list(out.astype(object)) == ["b", OTHER, UNSEEN, np.nan, "a"]
    capped = CategoryEncoder(max_categories=1, min_category_count=20).fit(train, ["c"])
    assert list(capped.transform_column("c", pd.Series(["b"], dtype=object)).astype(object)) == [OTHER]


def _segments(n_us=60, n_es=60, n_fr=10):
    country = ["us"] * n_us + ["es"] * n_es + ["fr"] * n_fr
    x = list(range(1, n_us + 1)) + list(range(101, 101 + n_es)) + [1000] * n_fr
    return pd.DataFrame(
        {"country": pd.Series(country, dtype=object), "release_msrp": np.array(x, np.float32)}
    )


def test_group_stats_rank_and_deviation_per_country_with_global_fallback():
    gs = GroupStats(features=["release_msrp"], min_group_count=50).fit(_segments())
    assert set(gs.segments_) == {"country"}  # the other segments' key columns are absent
    test = pd.DataFrame(
        {
            "country": pd.Series(["us", "us", "es", "fr", "zz", None, "us"], dtype=object),
            "release_msrp": np.array([1e6, -5, 130.5, 50, 50, 50, np.nan], np.float32),
        }
    )
    out = gs.transform(test)
    pct, dev = out["release_msrp__country_pct"], out["release_msrp__country_dev"]
    glob_median = np.median(_segments()["release_msrp"])  # fr (10 rows < 50), unseen and null -> global
    np.testing.assert_allclose(
        dev[:6], [1e6 - 30.5, -5 - 30.5, 0.0, 50 - glob_median, 50 - glob_median, 50 - glob_median], rtol=1e-9
    )
    assert pct[0] == 1.0 and pct[1] == 0.0 and abs(pct[2] - 0.5) < 0.02
    assert np.isnan(pct[6]) and np.isnan(dev[6])


def test_group_stats_are_learned_from_train_rows_only():
    train, extreme = _segments(), _segments()
    extreme["release_msrp"] *= 1000  # wildly different valid rows
    gs = GroupStats(features=["release_msrp"], min_group_count=50).fit(train)
    before = copy.deepcopy(gs.__dict__)
    out_train = gs.transform(train)
    gs.transform(extreme)
    assert gs.groups_ == before["groups_"] == {"country": ["us", "es"]}  # fr: 10 rows < 50
    for key, grid in before["grids_"].items():
        np.testing.assert_array_equal(gs.grids_[key], grid)
    for k, v in gs.transform(train).items():
        np.testing.assert_array_equal(v, out_train[k])
    # the extreme rows are ranked against train: every one of them above the whole train range
    assert (gs.transform(extreme)["release_msrp__country_pct"][:120] == 1.0).all()


def test_builder_fit_transform_dtypes_names_and_state_untouched_by_other_splits():
    fb = FeatureBuilder(min_category_count=1, min_group_count=5)
    train, valid = fb.extract(mixed_table(300, seed=0)), fb.extract(mixed_table(200, seed=1))
    X = fb.fit(train).transform(train)
    assert list(X.columns) == fb.feature_names_
    cats = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    assert set(cats) == set(fb.categorical_features_) and "country" in cats
    assert all(X[c].dtype == np.float32 for c in X.columns if c not in cats)
    assert any(c.endswith("__country_os_pct") for c in X.columns)
    state = pickle.dumps(fb)
    valid["country"] = valid["country"].map({"us": "jp", "es": "es", None: None})  # unseen segment/category
    Xv = fb.transform(valid)
    assert pickle.dumps(fb) == state  # transforming another split learns nothing
    assert list(Xv["country"].cat.categories) == list(X["country"].cat.categories)
    assert UNSEEN in set(Xv["country"].astype(object).dropna())
    pd.testing.assert_frame_equal(fb.transform(train), X)


def test_transform_of_chunks_equals_transform_of_whole():
    fb = FeatureBuilder(min_category_count=1, min_group_count=5)
    S = fb.extract(mixed_table(300))
    X = fb.fit(S).transform(S)
    parts = [fb.transform(S.iloc[a:b]) for a, b in [(0, 1), (1, 120), (120, 300)]]
    pd.testing.assert_frame_equal(pd.concat(parts), X, check_exact=True)


def test_transform_before_fit_and_missing_columns_are_errors():
    fb = FeatureBuilder()
    S = fb.extract(mixed_table(50))
    with pytest.raises(ValueError, match="not fitted"):
        fb.transform(S)
    fb.fit(S)
    with pytest.raises(ValueError, match="bcat__sum"):
        fb.transform(S.drop(columns=["bcat__sum"]))


def test_label_and_id_columns_next_to_the_features_never_enter_x():
    fb = FeatureBuilder(groups={"scalars": True})
    S = fb.extract(mixed_table(30))
    S["iap_revenue_d7"] = 1.0
    S["row_id"] = "r"
    fb.fit(S)
    assert "iap_revenue_d7" not in fb.feature_names_ and "row_id" not in fb.feature_names_
    assert list(fb.transform(S).columns) == fb.feature_names_


def test_group_stats_equal_a_per_group_search_with_ties_nans_and_unseen_groups():
    """The grouped-slice transform gives exactly the mid-rank and deviation of searching each row's own
    group grid, including values equal to a quantile (ties), NaN, +-inf and groups unseen at fit."""
    rng = np.random.default_rng(7)
    n = 6000
    country = rng.choice(["us", "es", "fr", "de", "it"], n, p=[0.4, 0.3, 0.2, 0.09, 0.01])
    x = np.round(rng.exponential(5, n)).astype(np.float32)  # many equal values: quantiles tie with rows
    x[rng.random(n) < 0.1] = np.nan
    train = pd.DataFrame({"country": pd.Series(country, dtype=object), "release_msrp": x})
    gs = GroupStats(features=["release_msrp"], min_group_count=100, n_quantiles=21).fit(train)
    test_country = rng.choice(["us", "es", "fr", "de", "it", "zz", None], 3000)
    tx = np.concatenate([rng.choice(gs.grids_[("country", "release_msrp")].ravel(), 2000), rng.normal(3, 9, 996),
                         [np.nan, np.inf, -np.inf, 0.0]]).astype(np.float32)  # fmt: skip
    test = pd.DataFrame({"country": pd.Series(test_country, dtype=object), "release_msrp": tx})
    out = gs.transform(test)
    grid = gs.grids_[("country", "release_msrp")]
    index = {v: i + 1 for i, v in enumerate(gs.groups_["country"])}
    xv = tx.astype(np.float64)
    want_pct, want_dev = np.empty(len(tx)), np.empty(len(tx))
    for i, (c, v) in enumerate(zip(test_country, xv, strict=True)):
        q = grid[index.get(c, 0)]
        want_pct[i] = (np.searchsorted(q, v, "left") + np.searchsorted(q, v, "right")) / (2.0 * len(q))
        want_dev[i] = v - np.interp(0.5, gs.levels_, q)
    want_pct[np.isnan(xv)] = np.nan
    assert (np.isin(xv, grid)).sum() > 1000  # the ties are really exercised
    np.testing.assert_array_equal(out["release_msrp__country_pct"], want_pct)
    np.testing.assert_array_equal(out["release_msrp__country_dev"], want_dev)
