"""Metric functions against hand-computed numbers, sklearn as an independent reference, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ltv import metrics


def test_rmsle_hand_values():
    assert metrics.rmsle([0, 1], [1, 0]) == pytest.approx(math.log(2))
    assert metrics.msle([0, 1], [1, 0]) == pytest.approx(math.log(2) ** 2)
    assert metrics.rmsle([3.0], [3.0]) == 0.0
    # log1p(e - 1) = 1, so the error is exactly 1
    assert metrics.rmsle([0.0], [math.e - 1]) == pytest.approx(1.0)


def test_rmsle_clips_negative_predictions_and_refunds():
    assert metrics.rmsle([0.0, 0.0], [-5.0, -0.5]) == 0.0
    assert metrics.rmsle([-2.0], [0.0]) == 0.0  # a refund counts as zero revenue


def test_rmse_mae_r2_hand_values():
    assert metrics.rmse([0, 0], [3, 4]) == pytest.approx(math.sqrt(12.5))
    assert metrics.mae([0, 0], [3, -4]) == pytest.approx(3.5)
    assert metrics.r2([1, 2, 3], [1, 2, 3]) == 1.0
    assert metrics.r2([1, 2, 3], [2, 2, 2]) == pytest.approx(0.0)
    assert metrics.r2([1, 2, 3], [3, 2, 1]) == pytest.approx(-3.0)


def test_auc_and_pr_auc_hand_values():
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert metrics.auc(y, s) == pytest.approx(0.75)
    # precision at the positives: 1/1 (0.8), then 2/3 (0.35): AP = 0.5*1 + 0.5*2/3
    assert metrics.pr_auc(y, s) == pytest.approx(0.5 + 1 / 3)
    assert metrics.auc([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0.5)
    assert math.isnan(metrics.auc([1, 1], [0.1, 0.2]))


def test_auc_pr_auc_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.1).astype(int)
    s = np.round(rng.random(2000) + 0.3 * y, 2)  # rounding creates ties
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.pr_auc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_brier_and_log_loss():
    assert metrics.brier([0, 1], [0.2, 0.6]) == pytest.approx(0.1)
    assert metrics.log_loss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))


def test_normalized_gini_perfect_reversed_random():
    rng = np.random.default_rng(1)
    y = np.where(rng.random(20000) < 0.1, rng.lognormal(2, 1, 20000), 0.0)
    assert metrics.normalized_gini(y, y) == pytest.approx(1.0)
    assert metrics.normalized_gini(y, 2 * y + 1) == pytest.approx(1.0)  # rank-based
    assert metrics.normalized_gini(y, -y) == pytest.approx(-1.0)
    assert abs(metrics.normalized_gini(y, rng.random(20000))) < 0.05
    # a constant prediction has no ordering: ties averaged, Gini 0
    assert metrics.normalized_gini(y, np.ones_like(y)) == pytest.approx(0.0, abs=1e-12)


def test_gini_hand_value():
    # y = [1,2,3,4] sorted desc: Lorenz .4,.7,.9,1 -> 3/4 - 5/8 = 0.125
    assert metrics.gini([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(0.125)


def test_total_ratio():
    assert metrics.total_ratio([1, 3], [2, 2]) == 1.0
    assert metrics.total_ratio([1, 1], [3, 3]) == 3.0
    assert math.isnan(metrics.total_ratio([0, 0], [1, 1]))


def test_decile_table_values():
    y = np.arange(100, dtype=float)
    table = metrics.decile_table(y, y)
    assert len(table) == 10 and table["rows"].sum() == 100
    assert table["mean_actual"].iloc[0] == pytest.approx(94.5)  # top decile = 90..99
    assert table["mean_pred"].is_monotonic_decreasing
    assert table["cum_share_of_actual"].iloc[-1] == pytest.approx(1.0)
    assert table["lift"].iloc[0] == pytest.approx(94.5 / 49.5)


def test_reliability_curve_of_calibrated_probabilities():
    rng = np.random.default_rng(2)
    p = rng.beta(1, 8, 50000)
    y = (rng.random(50000) < p).astype(int)
    prob_true, prob_pred, count = metrics.reliability_curve(y, p, n_bins=10)
    assert count.sum() == 50000
    assert np.max(np.abs(prob_true - prob_pred)) < 0.02


def test_reports_have_prefixed_keys():
    rep = metrics.regression_report([0, 1, 2], [0, 1, 2], prefix="holdout_")
    assert rep["holdout_rmsle"] == 0.0 and rep["holdout_total_ratio"] == 1.0
    assert set(rep) == {
        f"holdout_{k}" for k in ("rmsle", "msle", "rmse", "mae", "r2", "normalized_gini", "total_ratio")
    }
    cls = metrics.classification_report([0, 1], [0.2, 0.9], prefix="cal_")
    assert cls["cal_auc"] == 1.0 and cls["cal_base_rate"] == 0.5


def test_input_errors_are_value_errors():
    with pytest.raises(ValueError, match="same length"):
        metrics.rmsle([1, 2], [1])
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        metrics.rmse([], [])
