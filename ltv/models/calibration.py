"""Probability calibration of a raw booster score on rows the booster did not train on.

Calibration is a monotone map fitted on held-out rows, never class weighting: balanced class weights
change the training objective and inflate every probability (mean prob >> base rate).
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

METHODS = ("isotonic", "platt", "none")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class Calibrator:
    """Isotonic regression or Platt scaling (logistic regression on the raw logit).

    Parameters
    ----------
    method : 'isotonic', 'platt' or 'none' (identity).
    """

    def __init__(self, method: str = "isotonic"):
        self.method = method

    def fit(self, prob_raw, y) -> Calibrator:
        """Fit on raw probabilities ``prob_raw`` and 0/1 labels ``y`` of held-out rows."""
        if self.method not in METHODS:
            raise ValueError(f"calibration must be one of {METHODS}, got {self.method!r}")
        prob_raw = np.asarray(prob_raw, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        if self.method != "none" and np.unique(y).size < 2:
            raise ValueError("calibration rows contain a single class; need buyers and non-buyers")
        if self.method == "isotonic":
            self.model_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(prob_raw, y)
        elif self.method == "platt":
            self.model_ = LogisticRegression(C=1e6).fit(_logit(prob_raw)[:, None], y)
        else:
            self.model_ = None
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
