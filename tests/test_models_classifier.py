"""BuyerClassifier: early stopping, calibration on held-out rows (not class weights), reliability."""

from __future__ import annotations

import numpy as np
import pytest

from ltv import metrics
from ltv.models import BuyerClassifier
from tests.helpers.chain_data import split_data
from tests.helpers.estimators import classifier

FAST = {"learning_rate": 0.1, "n_estimators": 300, "early_stopping_rounds": 20, "n_jobs": 1}


@pytest.fixture(scope="module")
def data():
    return split_data(n_train=8000, n_valid=6000, n_holdout=10000, seed=11)


def _fit(data, **params):
    X, L = data["train"][:2]
    Xv, Lv = data["valid"][:2]
    es, cal = slice(0, 3000), slice(3000, None)
    clf = classifier(**{**FAST, **params})
    return clf.fit(X, L["buyer_d7"], eval_set=(Xv.iloc[es], Lv["buyer_d7"].iloc[es]),
                   calibration_set=(Xv.iloc[cal], Lv["buyer_d7"].iloc[cal]))  # fmt: skip


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibrated_mean_probability_matches_base_rate_on_untouched_rows(data, method):
    clf = _fit(data, calibration=method)
    X_h, L_h = data["holdout"][:2]
    y = L_h["buyer_d7"].to_numpy()
    p = clf.predict_p(X_h)
    assert p.mean() == pytest.approx(y.mean(), abs=0.012)
    prob_true, prob_pred, count = metrics.reliability_curve(y, p, n_bins=10)
    gap = np.abs(prob_true - prob_pred)
    assert np.sum(gap * count) / count.sum() < 0.025  # expected calibration error
    assert gap.max() < 0.1  # isotonic steps fitted on 3000 rows wobble locally
    assert metrics.auc(y, p) > 0.8


def test_balanced_class_weights_would_fail_the_calibration_check(data):
    """The defect ("calibration" via balanced class weights) inflates probabilities: the same check on
    the raw weighted booster fails by a wide margin, which is why we never weight classes."""
    clf = _fit(data, calibration="none", class_weight="balanced")
    X_h, L_h = data["holdout"][:2]
    assert clf.predict_p(X_h).mean() > L_h["buyer_d7"].mean() + 0.05  # >4x the tolerance above


def test_early_stopping_and_report(data):
    clf = _fit(data)
    assert 1 <= clf.best_iteration_ < FAST["n_estimators"]
    rep = clf.report_
    for key in ("cal_auc", "cal_pr_auc", "cal_brier", "cal_raw_auc", "cal_mean_prob", "cal_base_rate"):
        assert np.isfinite(rep[key])
    assert rep["cal_mean_prob"] == pytest.approx(
        rep["cal_base_rate"], abs=1e-9
    )  # isotonic preserves the mean
    prob_true, prob_pred, count = clf.reliability_
    assert count.sum() == 3000 and len(prob_true) == len(prob_pred)
    assert clf.predict_proba(data["holdout"][0]).shape == (10000, 2)


def test_kwargs_pass_through_to_lightgbm(data):
    clf = _fit(data, max_bin=31, min_split_gain=0.0)
    params = clf.booster_.params
    assert params["max_bin"] == 31 and params["verbose"] == -1
    assert clf.get_params()["lgbm"]["max_bin"] == 31 and clf.lgbm_params()["max_bin"] == 31
    with pytest.raises(ValueError, match="Invalid parameter 'max_bin'"):  # LightGBM's keys: in the mapping
        clf.set_params(max_bin=63)


def test_classifier_input_errors(data):
    X, L = data["train"][:2]
    with pytest.raises(ValueError, match="single class"):
        classifier(**FAST).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="not fitted"):
        BuyerClassifier().predict_p(X)
    with pytest.raises(ValueError, match="calibration must be one of"):
        _fit(data, calibration="balanced")
    with pytest.raises(TypeError, match="DataFrame"):
        classifier(**FAST).fit(X.to_numpy(), L["buyer_d7"])


def test_refit_on_eval_uses_the_early_stopping_rows_with_the_stopped_round_count(data):
    base = _fit(data)
    refit = _fit(data, refit_on_eval=True)
    assert refit.best_iteration_ == base.best_iteration_
    assert refit.booster_.num_trees() == base.best_iteration_  # no early stopping on the refit
    X_h, L_h = data["holdout"][:2]
    y = L_h["buyer_d7"].to_numpy()
    p_base, p_refit = base.predict_p(X_h), refit.predict_p(X_h)
    assert not np.allclose(p_base, p_refit)  # a different booster: it saw 3000 more rows
    # calibration still on untouched rows: the mean matches the base rate, ranking is not worse
    assert p_refit.mean() == pytest.approx(y.mean(), abs=0.012)
    assert metrics.auc(y, p_refit) > metrics.auc(y, p_base) - 0.01
    # without eval rows there is nothing to refit on: the configured rounds, no refit
    X, L = data["train"][:2]
    alone = classifier(**{**FAST, "n_estimators": 40, "refit_on_eval": True}).fit(X, L["buyer_d7"])
    assert alone.booster_.num_trees() == 40
