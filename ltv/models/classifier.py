"""The chain's two LightGBM classifiers: :class:`BuyerClassifier` (P(buyer_d7), calibrated on held-out rows by
a :class:`Calibrator`) and :class:`WhaleClassifier` (P(top revenue bracket | buyer), the gate's bypass)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from ltv import metrics
from ltv.models.blocks import compile_for, stream
from ltv.models.fitting import stage
from ltv.models.lgbm_fit import LGBMEstimator, append_eval_rows, fit_booster
from ltv.models.lgbm_predict import booster_predict, check_frame

CALIBRATIONS = ("isotonic", "platt", "none")
MIN_WHALES = 5  # fewer positive rows than this (or no negative one): no whale model, the score is 0
_EPS = 1e-6


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class Calibrator(BaseEstimator):
    """A monotone map of a raw booster probability fitted on held-out rows: isotonic regression, Platt scaling
    (logistic regression on the raw logit) or 'none' (identity). Never class weighting: balanced weights
    change the training objective and inflate every probability."""

    def __init__(self, method: str = "none"):
        self.method = method

    def fit(self, prob_raw, y) -> Calibrator:
        if self.method not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.method!r}")
        prob_raw, y = np.asarray(prob_raw, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
        if self.method != "none" and np.unique(y).size < 2:
            raise ValueError("calibration rows contain a single class; need buyers and non-buyers")
        self.model_ = None
        if self.method == "isotonic":
            self.model_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(prob_raw, y)
        elif self.method == "platt":
            self.model_ = LogisticRegression(C=1e6).fit(_logit(prob_raw)[:, None], y)
        return self

    def transform(self, prob_raw) -> np.ndarray:
        """Calibrated probabilities in [0, 1]."""
        prob_raw = np.asarray(prob_raw, dtype=np.float64).ravel()
        if self.method == "isotonic":
            out = self.model_.predict(prob_raw)
        elif self.method == "platt":
            out = self.model_.predict_proba(_logit(prob_raw)[:, None])[:, 1]
        else:
            out = prob_raw
        return np.clip(out, 0.0, 1.0)


class BuyerClassifier(LGBMEstimator):
    """LightGBM buyer probability, calibrated on rows the booster never trained on.

    The caller passes two disjoint held-out sets: ``eval_set`` (early stopping) and ``calibration_set``
    (calibration map, reliability data, AUC / PR-AUC / Brier report); in the chain both come from the valid
    window split by time. No class weights: calibration would have to undo them.

    Parameters
    ----------
    lgbm : LightGBM parameters (n_estimators, learning_rate, num_leaves, n_jobs, random_state, ...), passed
        to LightGBM unchanged; None: LightGBM's defaults.
    early_stopping_rounds : rounds without log-loss improvement on ``eval_set``; None disables.
    calibration : 'isotonic', 'platt' or 'none'.
    refit_on_eval : after early stopping, refit on train + ``eval_set`` rows with the stopped round count
        (the most recent labelled rows before the calibration rows, which stay out of sample).
    """

    def __init__(self, lgbm: dict | None = None, early_stopping_rounds: int | None = None,
                 calibration: str = "none", refit_on_eval: bool = False):  # fmt: skip
        self.lgbm = lgbm
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration = calibration
        self.refit_on_eval = refit_on_eval

    def fit(self, X, y, sample_weight=None, eval_set=None, calibration_set=None) -> BuyerClassifier:
        """Fit the booster on ``(X, y)`` (0/1 buyer label; optional row weights), early-stopped on ``eval_set
        = (X_es, y_es)``, and the calibrator on ``calibration_set = (X_cal, y_cal)`` (None: raw scores)."""
        check_frame(X)
        y = metrics.binary_label(y, "buyer label")
        if y.min() == y.max():
            raise ValueError("buyer label has a single class in the train rows")
        if eval_set is not None:
            eval_set = (eval_set[0], metrics.binary_label(eval_set[1], "eval buyer label"))
        params = self.lgbm_params(objective="binary")
        self.booster_, self.best_iteration_, self.evals_result_ = fit_booster(
            params, X, y, sample_weight, eval_set, self.early_stopping_rounds
        )
        if self.refit_on_eval and eval_set is not None:
            X_all, w_all = append_eval_rows(X, eval_set[0], sample_weight)
            y_all = np.concatenate([y, eval_set[1]])
            self.booster_ = fit_booster(
                {**params, "n_estimators": self.best_iteration_}, X_all, y_all, w_all
            ).booster
        self.feature_names_in_ = list(X.columns)
        self.calibrator_, self.report_, self.reliability_ = None, {}, None
        if calibration_set is not None:
            with stage("calibration", len(calibration_set[0])):
                X_cal, y_cal = (
                    calibration_set[0],
                    metrics.binary_label(calibration_set[1], "calibration buyer label"),
                )
                compile_for(X_cal, [(self.booster_, self.best_iteration_)])
                raw = stream(self.predict_raw, X_cal)
                self.calibrator_ = Calibrator(self.calibration).fit(raw, y_cal)
                p = self.calibrator_.transform(raw)
                self.report_ = {**metrics.classification_report(y_cal, raw, prefix="cal_raw_"),
                                **metrics.classification_report(y_cal, p, prefix="cal_")}  # fmt: skip
                self.reliability_ = metrics.reliability_curve(y_cal, p)
        return self

    def predict_raw(self, X, cache=None) -> np.ndarray:
        """Uncalibrated booster probability at the early-stopped round count (``cache``: a
        :class:`~ltv.models.lgbm_predict.PredictCache` shared by the boosters of one predict call)."""
        if not hasattr(self, "booster_"):
            raise ValueError("BuyerClassifier is not fitted; call fit first")
        check_frame(X)
        return booster_predict(
            self.booster_, X, self.feature_names_in_, self.best_iteration_, cache, self.predict_jobs
        )

    def calibrate(self, raw) -> np.ndarray:
        """The calibrated probability of raw scores ``raw`` (unchanged without a calibrator)."""
        return raw if self.calibrator_ is None else self.calibrator_.transform(raw)

    def predict_p(self, X, cache=None) -> np.ndarray:
        """Calibrated P(buyer_d7 | x) as a 1-D array."""
        return self.calibrate(self.predict_raw(X, cache))

    def predict_proba(self, X) -> np.ndarray:
        """sklearn layout: columns (P(non-buyer), P(buyer)), calibrated."""
        p = self.predict_p(X)
        return np.column_stack([1 - p, p])


class WhaleClassifier(LGBMEstimator):
    """P(revenue >= ``quantile`` of positive train revenue | buyer, x), fitted on train buyers.

    Parameters
    ----------
    quantile : the top bracket: revenue >= this quantile of the positive train revenue.
    lgbm : LightGBM parameters, passed to LightGBM unchanged; None: its defaults.
    early_stopping_rounds : rounds without log-loss improvement on ``eval_set``; None disables.
    enabled : False fits nothing and scores 0 for every row (``whale=none``: no whale bypass).
    """

    def __init__(self, quantile: float | None = None, lgbm: dict | None = None,
                 early_stopping_rounds: int | None = None, enabled: bool = False):  # fmt: skip
        self.quantile = quantile
        self.lgbm = lgbm
        self.early_stopping_rounds = early_stopping_rounds
        self.enabled = enabled

    def fit(self, X, revenue, sample_weight=None, eval_set=None) -> WhaleClassifier:
        """Fit on buyer rows ``X`` with their d7 revenue; ``eval_set`` = (X_es, revenue_es) of held-out
        buyers for early stopping, or None."""
        check_frame(X)
        if self.enabled and self.quantile is None:
            raise ValueError("WhaleClassifier needs quantile (e.g. whale.quantile=0.9) or enabled=False")
        revenue = np.asarray(revenue, dtype=np.float64)
        positive = revenue[revenue > 0]
        top = positive.size and self.quantile is not None
        self.whale_value_ = float(np.quantile(positive, self.quantile)) if top else np.inf
        label = (revenue >= self.whale_value_).astype(int)
        self.booster_ = None
        if not self.enabled or label.sum() < MIN_WHALES or label.sum() == label.size:
            return self
        self.feature_names_in_ = list(X.columns)
        es = None
        if eval_set is not None:
            es_label = (np.asarray(eval_set[1], dtype=np.float64) >= self.whale_value_).astype(int)
            if 0 < es_label.sum() < es_label.size:
                es = (eval_set[0][self.feature_names_in_], es_label)
        self.booster_, self.best_iteration_, self.evals_result_ = fit_booster(
            self.lgbm_params(objective="binary"), X, label, sample_weight, es, self.early_stopping_rounds
        )
        return self

    @property
    def fitted(self) -> bool:
        """Whether a booster was trained (enough whales in the train rows)."""
        return getattr(self, "booster_", None) is not None

    def predict_p(self, X, cache=None) -> np.ndarray:
        """The whale score; zeros when no booster was trained."""
        if not hasattr(self, "whale_value_"):
            raise ValueError("WhaleClassifier is not fitted; call fit first")
        if not self.fitted:
            return np.zeros(len(X))
        return booster_predict(
            self.booster_, X, self.feature_names_in_, self.best_iteration_, cache, self.predict_jobs
        )
