"""RevenueRegressor: horizons ordered by construction, custom RMSLE / MAE evals, smearing and the
residual-variance retransformation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ltv import metrics
from ltv.models import RevenueRegressor
from ltv.models.regressor import cumulative_eval, cumulative_log_targets
from tests.helpers.chain_data import make_chain_data
from tests.helpers.estimators import regressor

FAST = {"learning_rate": 0.1, "n_estimators": 200, "early_stopping_rounds": 20, "n_jobs": 1}
HORIZONS = ["iap_revenue_d7", "iap_revenue_d14", "iap_revenue_d28"]


@pytest.fixture(scope="module")
def fitted():
    X, labels, _, oracle = make_chain_data(16000, seed=21)
    b = np.flatnonzero(labels["buyer_d7"].to_numpy() == 1)
    tr, es, ho = b[: len(b) // 2], b[len(b) // 2 : 3 * len(b) // 4], b[3 * len(b) // 4 :]
    reg = regressor(**FAST, retransform="smearing")
    reg.fit(X.iloc[tr], labels.iloc[tr], eval_set=(X.iloc[es], labels.iloc[es]))
    reg.fit_smearing(X.iloc[es], labels.iloc[es])
    return reg, X.iloc[ho], labels.iloc[ho], oracle.iloc[ho]


@pytest.fixture(scope="module")
def fitted_variance():
    X, labels, _, oracle = make_chain_data(16000, seed=21)
    b = np.flatnonzero(labels["buyer_d7"].to_numpy() == 1)
    tr, es, ho = b[: len(b) // 2], b[len(b) // 2 : 3 * len(b) // 4], b[3 * len(b) // 4 :]
    es_set = (X.iloc[es], labels.iloc[es])
    reg = regressor(**FAST).fit(X.iloc[tr], labels.iloc[tr], eval_set=es_set)
    reg.fit_variance(X.iloc[tr], labels.iloc[tr], eval_set=es_set)
    reg.fit_smearing(X.iloc[es], labels.iloc[es])  # fitted, and unused by the mixture's dollars
    return reg, X.iloc[ho], labels.iloc[ho], oracle.iloc[ho]


def test_variance_retransform_is_unbiased_in_total_and_follows_the_whale_tail(fitted_variance):
    reg, X_h, _, oracle = fitted_variance
    assert reg.retransform == "mixture" and len(reg.mixtures_) == len(reg.level_) == 3
    s2 = reg.predict_variance(X_h)
    assert s2.shape == (len(X_h), 3) and np.all(s2 >= 0)
    # the whale probability grows with f3, so the residual spread must too
    f3 = X_h["f3"].to_numpy()
    hi, lo = s2[f3 > np.quantile(f3, 0.9), 0].mean(), s2[f3 < np.quantile(f3, 0.1), 0].mean()
    assert hi > 1.5 * lo
    rev = reg.predict_dollars(X_h)[:, 0]
    expected = oracle["oracle_revenue"] / oracle["p_buyer"]
    assert rev.sum() / expected.sum() == pytest.approx(1.0, abs=0.15)
    # per-row spread matters: the top f3 decile's dollars are closer to the oracle's than a constant
    # variance (the mean s2 for every row) gets them
    top = f3 > np.quantile(f3, 0.9)
    m = reg.predict_log(X_h)[:, 0]
    const = np.exp(m + s2[:, 0].mean() / 2) - 1
    ratio_var, ratio_const = rev[top].sum() / expected[top].sum(), const[top].sum() / expected[top].sum()
    assert abs(np.log(ratio_var)) < abs(np.log(ratio_const))


def test_variance_model_uses_out_of_fold_residuals():
    """In-sample residuals of a boosted model are shrunk; out-of-fold ones are not: the mean fitted s2
    must match the held-out squared residuals, not the smaller in-sample ones."""
    X, labels, _, _ = make_chain_data(16000, seed=5)
    b = np.flatnonzero(labels["buyer_d7"].to_numpy() == 1)
    tr, ho = b[: 2 * len(b) // 3], b[2 * len(b) // 3 :]
    params = {**FAST, "num_leaves": 63, "min_child_samples": 5, "early_stopping_rounds": None}
    reg = regressor(**params).fit(X.iloc[tr], labels.iloc[tr])
    reg.fit_variance(X.iloc[tr], labels.iloc[tr])
    pi = reg.spend_share_[0]
    assert pi == pytest.approx(0.9, abs=0.03)  # 10% of the test generator's buyers spend nothing

    def spenders_r2(rows):
        truth = cumulative_log_targets(labels.iloc[rows], HORIZONS)[:, 0]
        m = reg.predict_log(X.iloc[rows])[:, 0]
        pos = truth > 0
        return (truth[pos] - m[pos] / pi) ** 2, rows[pos]

    held_out, ho_pos = spenders_r2(ho)
    in_sample, _ = spenders_r2(tr)
    fitted = reg.predict_variance(X.iloc[ho_pos])[:, 0].mean()
    assert in_sample.mean() < 0.8 * held_out.mean()  # the booster overfits its own rows
    assert fitted == pytest.approx(held_out.mean(), rel=0.2)


def test_unknown_retransform_is_refused():
    with pytest.raises(ValueError, match="retransform must be one of"):
        RevenueRegressor(retransform="exp").fit(*make_chain_data(200, seed=1)[:2])


def test_predictions_are_ordered_on_random_inputs(fitted):
    reg, X_h, _, _ = fitted
    rng = np.random.default_rng(0)
    X = X_h.sample(2000, replace=True, random_state=0).reset_index(drop=True)
    for col in [c for c in X.columns if c.startswith(("f", "n"))]:
        X[col] = (rng.normal(size=len(X)) * 10).astype(np.float32)  # far outside the train range
    X.loc[::7, "f0"] = np.nan
    logs = reg.predict_log(X)
    assert np.all(np.diff(logs, axis=1) >= 0) and np.all(logs >= 0)
    dollars = reg.predict_dollars(X)
    assert np.all(np.diff(dollars, axis=1) >= 0) and np.all(np.isfinite(dollars))


def test_log_prediction_tracks_the_oracle(fitted):
    reg, X_h, L_h, oracle = fitted
    truth = np.log1p(L_h["iap_revenue_d7"].to_numpy())
    m = reg.predict_log(X_h)[:, 0]
    rmse_model = np.sqrt(np.mean((m - truth) ** 2))
    rmse_const = np.sqrt(np.mean((truth.mean() - truth) ** 2))
    rmse_oracle = np.sqrt(np.mean((oracle["m"].to_numpy() - truth) ** 2))
    assert rmse_model < rmse_const - 0.5 * (rmse_const - rmse_oracle)  # at least half the achievable gain
    assert abs(m.mean() - truth.mean()) < 0.1


def test_smeared_dollars_are_unbiased_in_total(fitted):
    reg, X_h, L_h, oracle = fitted
    rev = reg.predict_dollars(X_h)[:, 0]
    # compare with the oracle's E[y | buyer, x] total (the realised total carries whale noise)
    expected = (oracle["oracle_revenue"] / oracle["p_buyer"]).sum()
    assert rev.sum() / expected == pytest.approx(1.0, abs=0.15)
    assert reg.smearing_["iap_revenue_d7"] > 1.0  # exp of a log-scale mean undershoots the mean


def test_custom_evals_are_recorded_and_hand_checked(fitted):
    reg = fitted[0]
    evals = reg.evals_results_[0]
    (name,) = evals
    assert set(evals[name]) == {"rmsle", "mae_dollars"}
    y_true, y_pred = np.array([0.0, np.log(2)]), np.array([np.log(2), 0.0])
    assert cumulative_eval()(y_true, y_pred) == ("rmsle", pytest.approx(np.log(2)), False)
    assert cumulative_eval(dollars=True)(y_true, y_pred)[1] == pytest.approx(1.0)
    # increment model: prediction and truth are cumulative (base + clipped increment)
    name, value, _ = cumulative_eval(base=np.array([1.0]), truth=np.array([1.5]))(
        np.array([0.5]), np.array([-3.0])
    )
    assert value == pytest.approx(0.5)
    assert metrics.rmsle([np.e - 1], [0.0]) == pytest.approx(1.0)


def test_cumulative_targets_clip_refunds_and_enforce_order():
    Y = pd.DataFrame(
        {"iap_revenue_d7": [5.0, 0.0], "iap_revenue_d14": [3.0, -1.0], "iap_revenue_d28": [9.0, 0.0]}
    )
    t = cumulative_log_targets(Y, HORIZONS)
    assert t[0].tolist() == pytest.approx([np.log(6), np.log(6), np.log(10)])
    assert t[1].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="iap_revenue_d28"):
        cumulative_log_targets(Y.drop(columns="iap_revenue_d28"), HORIZONS)


def test_horizons_are_config():
    X, labels, _, _ = make_chain_data(3000, seed=2)
    b = labels["buyer_d7"].to_numpy() == 1
    reg = regressor(horizons=["iap_revenue_d7", "iap_revenue_d28"], **FAST).fit(X[b], labels[b])
    logs = reg.predict_log(X)
    assert (
        logs.shape == (len(X), 2) and np.all(logs[:, 1] >= logs[:, 0]) and logs[:, 1].max() > logs[:, 0].max()
    )
    with pytest.raises(ValueError, match="not fitted"):
        RevenueRegressor().predict_log(X)


def test_refit_on_eval_keeps_each_horizons_rounds_and_learns_from_the_eval_rows():
    X, labels, _, _ = make_chain_data(6000, seed=5)
    b = np.flatnonzero(labels["buyer_d7"].to_numpy() == 1)
    tr, es, ho = b[: len(b) // 2], b[len(b) // 2 : 3 * len(b) // 4], b[3 * len(b) // 4 :]
    fit = dict(eval_set=(X.iloc[es], labels.iloc[es]))
    base = regressor(**FAST).fit(X.iloc[tr], labels.iloc[tr], **fit)
    refit = regressor(**FAST, refit_on_eval=True).fit(X.iloc[tr], labels.iloc[tr], **fit)
    assert refit.best_iterations_ == base.best_iterations_
    assert [m.num_trees() for m in refit.boosters_] == base.best_iterations_
    logs = refit.predict_log(X.iloc[ho])
    assert np.all(np.diff(logs, axis=1) >= 0)  # still ordered across horizons
    truth = np.log1p(labels["iap_revenue_d7"].to_numpy()[es])
    err = lambda m: np.sqrt(np.mean((m.predict_log(X.iloc[es])[:, 0] - truth) ** 2))  # noqa: E731
    assert err(refit) < err(base)  # the eval rows are now training rows
    assert "refit_on_eval" not in refit.boosters_[0].params  # not passed to LightGBM


def test_refit_drops_the_previous_variance_model():
    X, labels, _, _ = make_chain_data(4000, seed=8)
    b = np.flatnonzero(labels["buyer_d7"].to_numpy() == 1)
    reg = regressor(**{**FAST, "early_stopping_rounds": None, "n_estimators": 30})
    reg.fit(X.iloc[b], labels.iloc[b]).fit_variance(X.iloc[b], labels.iloc[b])
    assert reg.predict_variance(X.iloc[b]).max() > 0
    reg.fit(X.iloc[b], labels.iloc[b])  # stale s2(x) must not survive a refit
    assert reg.predict_variance(X.iloc[b]).max() == 0
