"""The few-row LightGBM matrix (positional takes, cached feature positions and category checks) equals the
per-column path and LightGBM's own pandas conversion, for float32 / float64 / int columns, NaN, categoricals
with the training categories, with other categories (re-coded) and with unseen / missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lightgbm.basic import _data_from_pandas

from ltv.models import _lgbm


def _frame(n: int, seed: int = 0, cats=("a", "b", "c")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f32 = rng.random(n).astype(np.float32)
    f32[::3] = np.nan
    return pd.DataFrame(
        {
            "x32": f32,
            "c1": pd.Categorical(rng.choice(["a", "b", "c", None], n), categories=list(cats)),
            "y32": rng.random(n).astype(np.float32),
            "c2": pd.Categorical(rng.choice(["u", "v"], n), categories=["u", "v", "w"]),
        }
    )


TRAINED = [["a", "b", "c"], ["u", "v", "w"]]


@pytest.mark.parametrize("n", [1, 4, 30])
@pytest.mark.parametrize("features", [["x32", "c1", "y32", "c2"], ["x32", "y32", "c1", "c2"], ["c2", "x32"]])
def test_small_matrix_equals_the_column_path_and_lightgbm(n, features, monkeypatch):
    X = _frame(n, seed=n)
    trained = [TRAINED[0] if f == "c1" else TRAINED[1] for f in features if f.startswith("c")]
    small = _lgbm._pandas_matrix(X, features, trained)
    again = _lgbm._pandas_matrix(X, features, trained)  # cached positions / category checks
    monkeypatch.setattr(_lgbm, "SMALL_BATCH_ROWS", 0)
    general = _lgbm._pandas_matrix(X, features, trained)
    reference = _data_from_pandas(X[features], "auto", "auto", trained)[0]
    for m in (small, again):
        assert m.dtype == general.dtype
        np.testing.assert_array_equal(m, general)
    np.testing.assert_array_equal(small.astype(np.float64), reference.astype(np.float64))


def test_other_categories_are_recoded_like_lightgbm(monkeypatch):
    X = _frame(12, seed=3, cats=("c", "a", "zz"))  # other order, an unknown category, 'b' missing
    features = ["x32", "c1", "y32", "c2"]
    small = _lgbm._pandas_matrix(X, features, TRAINED)
    reference = _data_from_pandas(X[features], "auto", "auto", TRAINED)[0]
    np.testing.assert_array_equal(small.astype(np.float64), reference.astype(np.float64))
    monkeypatch.setattr(_lgbm, "SMALL_BATCH_ROWS", 0)
    np.testing.assert_array_equal(small, _lgbm._pandas_matrix(X, features, TRAINED))


def test_float64_and_int_columns_give_a_float64_matrix(monkeypatch):
    X = _frame(5).assign(x64=np.linspace(0, 1, 5), k=np.arange(5, dtype=np.int64))
    features = ["x64", "k", "c1", "x32", "c2"]
    small = _lgbm._pandas_matrix(X, features, TRAINED)
    assert small.dtype == np.float64
    monkeypatch.setattr(_lgbm, "SMALL_BATCH_ROWS", 0)
    np.testing.assert_array_equal(small, _lgbm._pandas_matrix(X, features, TRAINED))


def test_same_column_index_with_other_dtypes_is_not_served_from_the_cache():
    X = _frame(3)
    features = ["x32", "y32"]
    first = _lgbm._pandas_matrix(X, features, None)
    X64 = X.astype({"x32": np.float64, "y32": np.float64})  # may share the column Index object
    second = _lgbm._pandas_matrix(X64, features, None)
    assert first.dtype == np.float32 and second.dtype == np.float64
    np.testing.assert_array_equal(first.astype(np.float64), second)


def test_missing_feature_raises():
    with pytest.raises(KeyError):
        _lgbm._pandas_matrix(_frame(2), ["x32", "nope"], None)
