"""The chain's predict path (one matrix conversion per call, LightGBM on that matrix, the hurdle in numpy)
gives the numbers of LightGBM's own ``Booster.predict`` on DataFrames, for one row and for a batch, and the
LightGBM matrix equals LightGBM's own pandas conversion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ltv.models.chain import hurdle_prediction
from ltv.models.gate import apply_gate
from ltv.models.lgbm_predict import CHUNK_ROWS, PredictCache, predict_threads
from tests.helpers.chain_data import fit_chain, small_chain, split_data


def lgbm_matrix(X, features, booster, cache=None):
    return (cache or PredictCache()).matrix(X, features, booster.pandas_categorical)


def reference_predict(model, X) -> np.ndarray:
    """The chain's prediction through LightGBM's own Booster.predict on DataFrames."""
    clf, reg, whale_model = model.classifier_, model.regressor_, model.whale_
    raw = clf.booster_.predict(X[clf.feature_names_in_], num_iteration=clf.best_iteration_)
    p = raw if clf.calibrator_ is None else clf.calibrator_.transform(raw)
    whale = np.zeros(len(X))
    if whale_model is not None and whale_model.fitted:
        whale = whale_model.booster_.predict(
            X[whale_model.feature_names_in_], num_iteration=whale_model.best_iteration_
        )
    Xr = X[reg.feature_names_in_]
    log_rev = np.empty((len(X), len(reg.boosters_)))
    for k, (booster, best) in enumerate(zip(reg.boosters_, reg.best_iterations_, strict=True)):
        log_rev[:, k] = np.clip(booster.predict(Xr, num_iteration=best), 0.0, None) + (
            log_rev[:, k - 1] if k else 0.0
        )
    if reg.mixtures_:  # mixture: exp(m / pi) E[exp(s z)] over the residual mixture, times the level
        pi = np.asarray(reg.spend_share_)
        s = np.sqrt(
            np.column_stack(
                [np.clip(b.predict(Xr, num_iteration=r), 0, None) for b, r in reg.variance_models_]
            )
        )
        mgf = np.column_stack([np.exp(s[:, k, None] * mix.means_ + 0.5 * (s[:, k, None] * mix.sigmas_) ** 2)
                               @ mix.weights_ for k, mix in enumerate(reg.mixtures_)])  # fmt: skip
        dollars = pi * np.clip(np.exp(log_rev / pi) * mgf - 1.0, 0.0, None) * np.asarray(reg.level_)
    else:  # smearing
        dollars = np.clip(
            np.exp(log_rev) * np.array([reg.smearing_[h] for h in reg.horizons]) - 1.0, 0.0, None
        )
    dollars = np.maximum.accumulate(dollars, axis=1)
    q = apply_gate(p, whale, **model.gate_.params_)
    return hurdle_prediction(q, log_rev[:, 0], dollars[:, 0], model.objective)


def _fit(objective: str):
    d = split_data(n_train=3000, n_valid=1500, n_holdout=2500, seed=3)
    model = small_chain(objective=objective, seed=3)
    fit_chain(model, d)
    # exercise the multi-thread settings at predict time (fitted single-threaded for speed)
    for part in (model.classifier_, model.regressor_, model.whale_):
        part.set_params(lgbm={**part.lgbm, "n_jobs": 2})
    return model, d["holdout"][0]


@pytest.fixture(scope="module")
def rmsle():
    return _fit("rmsle")


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_small_batches_match_reference(rmsle, rows):
    model, X = rmsle
    part = X.iloc[100 : 100 + rows]
    got, want = model.predict(part), reference_predict(model, part)
    assert got.shape == (rows,)
    np.testing.assert_array_equal(got, want)


def test_large_batch_matches_reference_and_row_by_row(rmsle):
    model, X = rmsle
    assert predict_threads(len(X), 2) == 2  # the batch runs on two threads
    batch = model.predict(X)
    np.testing.assert_array_equal(batch, reference_predict(model, X))
    singles = np.concatenate([model.predict(X.iloc[i : i + 1]) for i in range(0, len(X), 250)])
    np.testing.assert_array_equal(singles, batch[::250])
    assert (batch > 0).mean() > 0.5 and np.isfinite(batch).all()
    np.testing.assert_array_equal(model.predict_parts(X)["final"].to_numpy(), batch)


def test_revenue_matches_reference_and_chunks_equal_the_batch():
    model, X = _fit("revenue")
    assert model.regressor_.mixtures_  # the default retransform: the per-row mixture
    batch = model.predict(X)
    for part in (X.iloc[:1], X.iloc[:50], X):
        np.testing.assert_allclose(model.predict(part), reference_predict(model, part), rtol=1e-12, atol=0.0)
    chunks = np.concatenate([model.predict(X.iloc[i : i + 700]) for i in range(0, len(X), 700)])
    np.testing.assert_array_equal(chunks, batch)


def test_one_matrix_conversion_per_call_matches_pandas_codes(rmsle):
    model, X = rmsle
    clf = model.classifier_
    cache = PredictCache()
    first = lgbm_matrix(X.iloc[:5], clf.feature_names_in_, clf.booster_, cache)
    again = lgbm_matrix(X.iloc[:5], clf.feature_names_in_, model.regressor_.boosters_[0], cache)
    assert again is first
    col = clf.feature_names_in_.index("country")
    codes = X["country"].iloc[:5].cat.codes.to_numpy()
    np.testing.assert_array_equal(first[:, col], codes.astype(first.dtype))


def test_predict_threads_rule():
    rows = CHUNK_ROWS  # one thread up to one chunk of rows, then the configured threads
    assert predict_threads(1, 2) == 1 and predict_threads(rows, 8) == 1
    assert predict_threads(rows + 1, 2) == 2
    assert predict_threads(rows + 1, -1) == 0 and predict_threads(rows + 1, None) == 0


def test_lgbm_matrix_matches_lightgbm_conversion_with_unknown_and_missing_categories(rmsle):
    from lightgbm.basic import _data_from_pandas

    model, X = rmsle
    clf = model.classifier_
    part = X.iloc[:40].copy()
    country = np.array(part["country"].astype(object).to_numpy(), dtype=object)
    country[:5], country[5:8] = "fr", None  # a category unseen at fit, missing values
    part["country"] = pd.Categorical(country, categories=["us", "fr", "de", "br", "in", "jp"])
    want = _data_from_pandas(part[clf.feature_names_in_], "auto", "auto", clf.booster_.pandas_categorical)
    got = lgbm_matrix(part, clf.feature_names_in_, clf.booster_)
    assert got.dtype == np.float32  # float32 features, few categories: exact in float32
    np.testing.assert_array_equal(got.astype(np.float64), want[0].astype(np.float64))
    assert np.isnan(got[:8, clf.feature_names_in_.index("country")]).all()
    np.testing.assert_array_equal(model.predict(part), reference_predict(model, part))


@pytest.mark.parametrize("rows", [3, 2500])
def test_lgbm_matrix_any_column_order(rmsle, rows):
    """Categoricals between numeric columns, features in another order than the frame's."""
    from lightgbm.basic import _data_from_pandas

    model, X = rmsle
    booster = model.classifier_.booster_
    feats = list(model.classifier_.feature_names_in_)
    shuffled = [feats[-1], *feats[:3], feats[-2], *feats[3:-2]]
    cats = [booster.pandas_categorical[1], booster.pandas_categorical[0]]
    part = X.iloc[:rows]
    want = _data_from_pandas(part[shuffled], "auto", "auto", cats)[0].astype(np.float64)
    np.testing.assert_array_equal(lgbm_matrix(part, shuffled, booster_with(cats)), want)
    wide = part.assign(f0=part["f0"].astype(np.float64) + 1e-12)  # a float64 column: float64 matrix
    got = lgbm_matrix(wide, shuffled, booster_with(cats))
    assert got.dtype == np.float64
    want = _data_from_pandas(wide[shuffled], "auto", "auto", cats)[0]
    np.testing.assert_array_equal(got, want)


class booster_with:  # noqa: N801 - a stand-in exposing only ``pandas_categorical``
    def __init__(self, cats):
        self.pandas_categorical = cats


def test_lgbm_matrix_recodes_other_categories_like_lightgbm():
    """A category column whose categories differ from the training ones (other order, an unknown one,
    one missing) is re-coded as LightGBM does; float64 / int columns give a float64 matrix."""
    from lightgbm.basic import _data_from_pandas

    rng = np.random.default_rng(3)
    X = pd.DataFrame(
        {
            "x32": rng.random(12).astype(np.float32),
            "c1": pd.Categorical(rng.choice(["a", "c", "zz", None], 12), categories=["c", "a", "zz"]),
            "k": np.arange(12, dtype=np.int64),
            "c2": pd.Categorical(rng.choice(["u", "v"], 12), categories=["u", "v", "w"]),
        }
    )
    trained = [["a", "b", "c"], ["u", "v", "w"]]
    for features in (["x32", "c1", "c2"], ["k", "x32", "c1", "c2"]):
        got = lgbm_matrix(X, features, booster_with(trained))
        want = _data_from_pandas(X[features], "auto", "auto", trained)[0]
        assert got.dtype == (np.float64 if "k" in features else np.float32)
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))
    with pytest.raises(KeyError, match="nope"):
        lgbm_matrix(X, ["x32", "nope"], booster_with(None))
