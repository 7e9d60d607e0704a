"""BuyerClassifier: LightGBM P(buyer_d7) with early stopping and held-out probability calibration."""

from __future__ import annotations

import numpy as np

from ltv import metrics
from ltv.models._lgbm import booster_predict
from ltv.models._progress import stage
from ltv.models.blocks import compile_for, stream
from ltv.models.booster import BoosterParams, append_eval_rows, check_frame, fit_booster
from ltv.models.calibration import Calibrator


class BuyerClassifier(BoosterParams):
    """LightGBM buyer probability, calibrated on rows the booster never trained on.

    The caller passes two disjoint held-out sets: ``eval_set`` (early stopping) and ``calibration_set``
    (isotonic or Platt map, reliability data, AUC/PR-AUC/Brier report). In the chain both come from the
    valid window split by time, first part for early stopping, later part for calibration, so the
    calibrator sees a score distribution the booster neither fitted nor stopped on. There are no
    class weights: they would inflate probabilities and calibration would have to undo them.

    Parameters
    ----------
    booster : LightGBM parameters (n_estimators, learning_rate, num_leaves, n_jobs, random_state, any
        other), passed to ``lightgbm.LGBMClassifier`` unchanged; None: LightGBM's defaults.
    early_stopping_rounds : rounds without log-loss improvement on ``eval_set``; None disables.
    calibration : 'isotonic', 'platt' or 'none'.
    refit_on_eval : after early stopping, refit the booster on train + ``eval_set`` rows with the
        early-stopped round count: the early-stopping rows are the most recent labelled rows before the
        calibration rows, and buyers are rare, so the final booster should not waste them. The
        calibration rows stay untouched, so calibration still sees out-of-sample scores.
    """

    def __init__(
        self,
        booster: dict | None = None,
        early_stopping_rounds: int | None = None,
        calibration: str = "none",
        refit_on_eval: bool = False,
    ):
        self.booster = booster
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration = calibration
        self.refit_on_eval = refit_on_eval

    def fit(self, X, y, sample_weight=None, eval_set=None, calibration_set=None) -> BuyerClassifier:
        """Fit the booster on ``(X, y)`` and the calibrator on ``calibration_set``.

        Parameters
        ----------
        X : DataFrame of numeric / category features. y : 0/1 buyer label.
        sample_weight : optional row weights (e.g. from a sampler).
        eval_set : ``(X_es, y_es)`` for early stopping, or None (train ``n_estimators`` rounds).
        calibration_set : ``(X_cal, y_cal)``; None leaves ``calibrator_`` None (raw probabilities),
            which the chain uses for cross-fitted copies that share the full model's calibrator.
        """
        check_frame(X)
        y = metrics.binary_label(y, "buyer label")
        if y.min() == y.max():
            raise ValueError("buyer label has a single class in the train rows")
        if eval_set is not None:
            eval_set = (eval_set[0], metrics.binary_label(eval_set[1], "eval buyer label"))
        self.booster_, self.best_iteration_ = fit_booster(
            {"objective": "binary", **self.lgbm_kwargs()},
            X,
            y,
            sample_weight,
            eval_set,
            self.early_stopping_rounds,
        )
        if self.refit_on_eval and eval_set is not None:
            self._refit(X, y, sample_weight, eval_set)
        self.feature_names_in_ = list(X.columns)
        self.calibrator_ = None
        self.report_ = {}
        self.reliability_ = None
        if calibration_set is not None:
            with stage("calibration", len(calibration_set[0])):
                self._calibrate(*calibration_set)
        return self

    def _calibrate(self, X_cal, y_cal) -> None:
        y_cal = metrics.binary_label(y_cal, "calibration buyer label")
        compile_for(X_cal, [(self.booster_.booster_, self.best_iteration_)])
        raw = stream(self.predict_raw, X_cal)
        self.calibrator_ = Calibrator(self.calibration).fit(raw, y_cal)
        p = self.calibrator_.transform(raw)
        self.report_ = {
            **metrics.classification_report(y_cal, raw, prefix="cal_raw_"),
            **metrics.classification_report(y_cal, p, prefix="cal_"),
        }
        self.reliability_ = metrics.reliability_curve(y_cal, p)

    def _refit(self, X, y, sample_weight, eval_set):
        """Replace the booster by one trained ``best_iteration_`` rounds on train + eval rows."""
        X_all, w_all = append_eval_rows(X, eval_set[0], sample_weight)
        y_all = np.concatenate([y, eval_set[1]])
        params = {"objective": "binary", **self.lgbm_kwargs(), "n_estimators": self.best_iteration_}
        self.booster_, _ = fit_booster(params, X_all, y_all, w_all)

    def _check_fitted(self):
        if not hasattr(self, "booster_"):
            raise ValueError("BuyerClassifier is not fitted; call fit first")

    def predict_raw(self, X, cache: list | None = None) -> np.ndarray:
        """Uncalibrated booster probability at the early-stopped round count.

        ``cache``: optional per-call list shared by boosters on the same columns (see ``lgbm_matrix``).
        """
        self._check_fitted()
        check_frame(X)
        return booster_predict(self.booster_, X, self.feature_names_in_, self.best_iteration_, cache)

    def predict_p(self, X) -> np.ndarray:
        """Calibrated P(buyer_d7 | x) as a 1-D array."""
        raw = self.predict_raw(X)
        return raw if self.calibrator_ is None else self.calibrator_.transform(raw)

    def predict_proba(self, X) -> np.ndarray:
        """sklearn layout: columns (P(non-buyer), P(buyer)), calibrated."""
        p = self.predict_p(X)
        return np.column_stack([1 - p, p])
