"""The chain's predict path (one matrix conversion per call, compiled-free LightGBM on that matrix, the
stacking head in numpy) gives the numbers of the plain sklearn / LightGBM APIs on DataFrames, for one row
and for a batch, and the LightGBM matrix equals LightGBM's own pandas conversion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ltv.contract import TARGET
from ltv.models import StackingEnsemble, compiled
from ltv.models._lgbm import lgbm_matrix, predict_threads
from ltv.models.hurdle import hurdle_prediction
from ltv.models.meta import first_stage_frame, stack_features
from tests.helpers.chain_data import fit_chain, small_chain, split_data


def _log_reference(reg, X) -> pd.DataFrame:
    out = np.empty((len(X), len(reg.boosters_)))
    for k, (model, best) in enumerate(zip(reg.boosters_, reg.best_iterations_, strict=True)):
        out[:, k] = np.clip(
            model.booster_.predict(X[reg.feature_names_in_], num_iteration=best), 0.0, None
        ) + (out[:, k - 1] if k else 0.0)
    return pd.DataFrame(out, columns=list(reg.horizons), index=X.index)


def _stacking_reference(ens, frame, X) -> np.ndarray:
    M = pd.concat([stack_features(frame), ens.risk_.transform(X).set_index(frame.index)], axis=1)
    M = M.clip(ens.lo_, ens.hi_, axis=1)
    Z = ens._with_base(M, {name: m.predict(M) for name, m in ens.base_.items()})[ens.meta_features_]
    score = np.clip(
        Z[ens.init_column_].to_numpy() + ens.meta_.booster_.predict(Z, num_iteration=ens.meta_iteration_),
        0.0,
        None,
    )
    if ens.objective_ == "revenue":
        factor = np.log1p(frame["rev_d7"].to_numpy()) - frame["log_rev_d7"].to_numpy()
        return frame["p_gated"].to_numpy() * np.clip(np.exp(score + factor) * ens.smearing_ - 1.0, 0.0, None)
    return np.where(frame["p_gated"].to_numpy() > 0, np.expm1(score), 0.0)


def reference_predict(model, X) -> np.ndarray:
    """The chain's prediction through LightGBM's own Booster.predict on DataFrames (the old path)."""
    clf, reg, gate, whale_model = model.classifier_, model.regressor_, model.gate_, model.whale_
    raw = clf.booster_.booster_.predict(X[clf.feature_names_in_], num_iteration=clf.best_iteration_)
    p = raw if clf.calibrator_ is None else clf.calibrator_.transform(raw)
    whale = np.zeros(len(X))
    if whale_model is not None and whale_model.fitted:
        features, rounds = whale_model.feature_names_in_, whale_model.best_iteration_
        whale = whale_model.booster_.booster_.predict(X[features], num_iteration=rounds)
    log_rev = _log_reference(reg, X)
    s2 = np.column_stack(
        [
            np.clip(m.booster_.predict(X[reg.feature_names_in_], num_iteration=best), 0, None)
            for m, best in reg.variance_
        ]
    )
    pi = np.asarray(reg.spend_share_)
    if reg.mixtures_:  # mixture: exp(m / pi) E[exp(s z)] over the residual mixture, times the level
        s = np.sqrt(s2)
        mgf = np.column_stack([np.exp(s[:, k, None] * mix.means_ + 0.5 * (s[:, k, None] * mix.sigmas_) ** 2)
                               @ mix.weights_ for k, mix in enumerate(reg.mixtures_)])  # fmt: skip
        spend = np.clip(np.exp(log_rev.to_numpy() / pi) * mgf - 1.0, 0.0, None)
        dollars = pi * spend * np.asarray(reg.level_)
    else:
        dollars = np.clip(pi * (np.exp(log_rev.to_numpy() / pi + s2 / 2) - 1.0), 0.0, None)
    dollars = np.maximum.accumulate(dollars, axis=1)
    dollars = pd.DataFrame(dollars, columns=log_rev.columns, index=X.index)
    frame = first_stage_frame(raw, p, whale, log_rev, dollars, gate.params_, X.index)
    if model.direct_ is not None:
        frame["log_direct"] = _log_reference(model.direct_, X)[TARGET].to_numpy()
    if isinstance(model.ensemble_, StackingEnsemble):
        final = _stacking_reference(model.ensemble_, frame, X)
    else:
        final = hurdle_prediction(frame["p_gated"], frame["log_rev_d7"], frame["rev_d7"], model.objective)
    return np.clip(np.nan_to_num(final, nan=0.0, posinf=0.0), 0.0, None)


def _fit(ensemble: str, objective: str):
    d = split_data(n_train=3000, n_valid=1500, n_holdout=2500, seed=3)
    model = small_chain(ensemble, objective=objective, seed=3)
    fit_chain(model, d)
    # exercise the multi-thread settings at predict time (fitted single-threaded for speed)
    for part in (model.classifier_, model.regressor_, model.whale_):
        part.booster = {**part.booster, "n_jobs": 2}
    if isinstance(model.ensemble_, StackingEnsemble):
        model.ensemble_.n_jobs = 2
        model.ensemble_.base_["rf"].n_jobs = 2
        model.ensemble_.base_["xgb"].set_params(n_jobs=2)
    return model, d["holdout"][0]


@pytest.fixture(scope="module")
def stacking_rmsle():
    return _fit("stacking", "rmsle")


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_stacking_small_batches_match_reference(stacking_rmsle, rows):
    model, X = stacking_rmsle
    part = X.iloc[100 : 100 + rows]
    got, want = model.predict(part), reference_predict(model, part)
    assert got.shape == (rows,)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0.0)


def test_stacking_large_batch_matches_reference_and_row_by_row(stacking_rmsle):
    model, X = stacking_rmsle
    assert predict_threads(len(X), 2) == 2  # the batch runs on two threads
    batch = model.predict(X)
    np.testing.assert_allclose(batch, reference_predict(model, X), rtol=1e-12, atol=0.0)
    singles = np.concatenate([model.predict(X.iloc[i : i + 1]) for i in range(0, len(X), 250)])
    np.testing.assert_allclose(singles, batch[::250], rtol=1e-12, atol=0.0)
    assert (batch > 0).mean() > 0.5 and np.isfinite(batch).all()


def test_hurdle_revenue_matches_reference():
    model, X = _fit("hurdle", "revenue")
    for part in (X.iloc[:1], X.iloc[:50], X):
        np.testing.assert_array_equal(model.predict(part), reference_predict(model, part))


def test_lgbm_matrix_reuses_one_conversion_and_matches_pandas_codes(stacking_rmsle):
    model, X = stacking_rmsle
    clf = model.classifier_
    cache = []
    first = lgbm_matrix(X.iloc[:5], clf.feature_names_in_, clf.booster_.booster_, cache)
    again = lgbm_matrix(X.iloc[:5], clf.feature_names_in_, model.regressor_.boosters_[0].booster_, cache)
    assert again is first and len(cache) == 1
    col = clf.feature_names_in_.index("country")
    codes = X["country"].iloc[:5].cat.codes.to_numpy()
    np.testing.assert_array_equal(first[:, col], codes.astype(first.dtype))


def test_predict_threads_rule():
    rows = compiled.CHUNK_ROWS  # one thread up to one chunk of rows, then the configured threads
    assert predict_threads(1, 2) == 1 and predict_threads(rows, 8) == 1
    assert predict_threads(rows + 1, 2) == 2
    assert predict_threads(rows + 1, -1) == 0 and predict_threads(rows + 1, None) == 0


def test_lgbm_matrix_matches_lightgbm_conversion_with_unknown_and_missing_categories(stacking_rmsle):
    from lightgbm.basic import _data_from_pandas

    model, X = stacking_rmsle
    clf = model.classifier_
    part = X.iloc[:40].copy()
    country = np.array(part["country"].astype(object).to_numpy(), dtype=object)
    country[:5], country[5:8] = "fr", None  # a category unseen at fit, missing values
    part["country"] = pd.Categorical(country, categories=["us", "fr", "de", "br", "in", "jp"])
    want = _data_from_pandas(
        part[clf.feature_names_in_], "auto", "auto", clf.booster_.booster_.pandas_categorical
    )
    got = lgbm_matrix(part, clf.feature_names_in_, clf.booster_.booster_)
    assert got.dtype == np.float32  # float32 features, few categories: exact in float32
    np.testing.assert_array_equal(got.astype(np.float64), want[0].astype(np.float64))
    assert np.isnan(got[:8, clf.feature_names_in_.index("country")]).all()
    np.testing.assert_array_equal(model.predict(part), reference_predict(model, part))


@pytest.mark.parametrize("rows", [3, 2500])
def test_lgbm_matrix_any_column_order(stacking_rmsle, rows):
    """Categoricals between numeric columns, features in another order than the frame's."""
    from lightgbm.basic import _data_from_pandas

    model, X = stacking_rmsle
    booster = model.classifier_.booster_.booster_
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


def test_risk_encoder_lookup_matches_series_map():
    """The index lookup gives what ``Series.map(table).fillna(prior)`` gave: unseen and missing values
    fall back to the prior (categorical, numeric and string key columns)."""
    from ltv.models.meta import RiskEncoder, _keys

    rng = np.random.default_rng(5)
    n = 400
    X = pd.DataFrame(
        {
            "country": pd.Categorical(rng.choice(["us", "jp", None], n), categories=["jp", "us", "de"]),
            "dev_os": rng.choice([1.0, 2.0, np.nan], n),
            "dev_make": pd.Series(rng.choice(["a", "b", None], n), dtype=object),
        }
    )
    y = rng.exponential(2.0, n) * (rng.random(n) < 0.3)
    enc = RiskEncoder(["country", "dev_os", "dev_make"], smoothing=10.0).fit(X, y)
    new = X.iloc[:6].copy()
    new["country"] = pd.Categorical(["de", "us", None, "jp", "de", "us"], categories=["jp", "us", "de"])
    new["dev_os"] = [3.0, 1.0, np.nan, 2.0, 1.0, 9.0]
    new["dev_make"] = pd.Series(["zz", "a", None, "b", "a", "q"], dtype=object)
    got = enc.transform(new)
    for c in enc.columns_:
        want = _keys(new[c]).map(enc.tables_[c]).fillna(enc.prior_).to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(got[f"risk_{c}"].to_numpy(), want)
    assert got.loc[0, "risk_dev_make"] == enc.prior_ and got.loc[0, "risk_country"] == enc.prior_
    assert list(got.columns) == ["risk_country", "risk_dev_os", "risk_dev_make"]
    # rows encoded a few at a time equal the batch
    many = enc.transform_columns(X)
    few = [enc.transform_columns(X.iloc[i : i + 3]) for i in range(0, n, 3)]
    for key, values in many.items():
        np.testing.assert_array_equal(np.concatenate([f[key] for f in few]), values)


def test_stacking_revenue_chunks_equal_the_batch_and_the_reference():
    """Under the revenue head too, batches of 100 rows give the whole batch's dollars, which are those
    of the plain-API path."""
    model, X = _fit("stacking", "revenue")
    batch = model.predict(X)
    np.testing.assert_allclose(batch, reference_predict(model, X), rtol=1e-12, atol=0.0)
    small = np.concatenate([model.predict(X.iloc[i : i + 100]) for i in range(0, 500, 100)])
    np.testing.assert_allclose(small, batch[:500], rtol=1e-12, atol=0.0)
    assert np.all(np.isfinite(batch)) and batch.sum() > 0
