"""The objectives and the hurdle composition: first-stage outputs to dollars, and the one home of the
prediction's contract (finite, >= 0).

Estimands (DESIGN.md): objective 'rmsle' targets expm1(E[log1p y | x]); with p and m = E[log1p y |
buyer, x] on the same event that is expm1(p * m). Objective 'revenue' targets E[y | x] = p * E[y | buyer,
x], the latter retransformed from the log scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

OBJECTIVES = ("rmsle", "revenue")


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return objective


def finite_revenue(pred) -> np.ndarray:
    """A dollar prediction as the contract wants it: float64, NaN / inf -> 0, clipped at 0."""
    pred = np.asarray(pred, dtype=np.float64)
    return np.clip(np.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)


def hurdle_prediction(q, log_rev, rev, objective: str) -> np.ndarray:
    """Dollar prediction from a (gated) buyer probability ``q``.

    rmsle: ``expm1(q * log_rev)`` with log_rev = E[log1p y | buyer, x];
    revenue: ``q * rev`` with rev = E[y | buyer, x] (retransformed dollars).
    """
    check_objective(objective)
    q = np.asarray(q, dtype=np.float64)
    out = np.expm1(q * np.asarray(log_rev)) if objective == "rmsle" else q * np.asarray(rev)
    return finite_revenue(out)


def log_factor(frame) -> np.ndarray:
    """log of the buyer regressor's per-row retransformation: log(1 + rev_d7) - log_rev_d7 (>= 0 when the
    regressor's dollars come from its variance model; its log smearing factor otherwise)."""
    return np.log1p(np.asarray(frame["rev_d7"])) - np.asarray(frame["log_rev_d7"])


class HurdleEnsemble:
    """The product only, no learned combination: a baseline that shows what stacking adds."""

    needs_oof = False

    def fit(self, rows=None, objective: str = "rmsle", **_) -> HurdleEnsemble:
        self.objective_ = check_objective(objective)
        return self

    def predict(self, frame: pd.DataFrame, X=None) -> np.ndarray:
        return hurdle_prediction(frame["p_gated"], frame["log_rev_d7"], frame["rev_d7"], self.objective_)
