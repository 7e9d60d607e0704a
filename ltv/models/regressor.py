"""RevenueRegressor: E[log1p revenue | buyer, x] per horizon, ordered d7 <= d14 <= d28 by construction.

The first horizon is modelled directly on log1p(y); every later horizon models the non-negative
increment of cumulative log1p revenue over the previous one, and predictions add clipped increments,
so the order holds for any input. Train rows are the buyers (buyer_d7 == 1, zero-revenue buyers
included) so the conditioning event equals the buyer classifier's: then expm1(p * m) is the RMSLE
optimum.

Dollars (E[y | buyer, x], the ``revenue`` objective) come from a retransformation of the log-scale mean
(:mod:`ltv.models.retransform`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ltv import metrics
from ltv.models._lgbm import booster_predict
from ltv.models.booster import BoosterParams, append_eval_rows, check_frame, fit_booster
from ltv.models.distribution import predictive_columns, spend_mean
from ltv.models.retransform import RETRANSFORMS, Retransform, cumulative_log_targets


def rmsle_feval(base=None, truth=None):
    """LightGBM eval callable: RMSLE of the cumulative log prediction (lower is better).

    For an increment model, ``base`` is the previous horizon's log prediction on the eval rows and
    ``truth`` the cumulative log target, so the score is the horizon's RMSLE, not the increment's.
    """

    def rmsle(y_true, y_pred):
        pred = np.clip(y_pred, 0.0, None) + (0.0 if base is None else base)
        true = y_true if truth is None else truth
        return "rmsle", metrics.rmse(true, pred), False

    return rmsle


def mae_feval(base=None, truth=None):
    """LightGBM eval callable: mean absolute error in dollars of the cumulative prediction."""

    def mae(y_true, y_pred):
        pred = np.clip(y_pred, 0.0, None) + (0.0 if base is None else base)
        true = y_true if truth is None else truth
        return "mae_dollars", metrics.mae(np.expm1(true), np.expm1(pred)), False

    return mae


class RevenueRegressor(Retransform, BoosterParams):
    """One LightGBM per revenue horizon on buyers, log1p scale, ordered predictions.

    Parameters
    ----------
    horizons : label columns, shortest first (the first must be iap_revenue_d7; there is no d1 revenue).
    booster : LightGBM parameters of every horizon's booster, passed to ``lightgbm.LGBMRegressor``
        unchanged; None: LightGBM's defaults.
    early_stopping_rounds : rounds without RMSLE improvement on the eval buyers; None disables.
    refit_on_eval : after early stopping, refit each horizon on train + eval rows with its stopped round
        count. Off for the buyer regressor (its smearing uses the eval buyers, which must stay out of
        sample); the stacking's direct all-rows model may turn it on.
    retransform : 'variance' (per-row residual variance, fitted by ``fit_variance``), 'mixture' (that
        variance and a mixture of the standardised residuals) or 'smearing' (one held-out factor per
        horizon, ``fit_smearing``); see :mod:`ltv.models.retransform`.
    variance_booster : LightGBM parameters of the variance model (n_jobs and random_state default to
        ``booster``'s).
    mixture_components : components of the residual mixture (``retransform='mixture'``).
    quantiles, thresholds : the levels and dollar thresholds of the predictive distribution that
        :meth:`predictive` reports (``retransform='mixture'``), with ``spend_scale``, s(x).
    """

    def __init__(
        self,
        horizons=("iap_revenue_d7",),
        booster: dict | None = None,
        early_stopping_rounds: int | None = None,
        refit_on_eval: bool = False,
        retransform: str = "smearing",
        variance_booster: dict | None = None,
        mixture_components: int = 1,
        quantiles=(),
        thresholds=(),
    ):
        if retransform not in RETRANSFORMS:
            raise ValueError(f"retransform must be one of {RETRANSFORMS}, got {retransform!r}")
        self.horizons = horizons
        self.booster = booster
        self.early_stopping_rounds = early_stopping_rounds
        self.refit_on_eval = refit_on_eval
        self.retransform = retransform
        self.variance_booster = variance_booster
        self.mixture_components = mixture_components
        self.quantiles = quantiles
        self.thresholds = thresholds

    def fit(self, X, Y: pd.DataFrame, sample_weight=None, eval_set=None) -> RevenueRegressor:
        """Fit one booster per horizon on buyer rows ``X`` with revenue labels ``Y``.

        ``eval_set`` is ``(X_es, Y_es)`` of held-out buyers for early stopping, or None.
        """
        check_frame(X)
        horizons = list(self.horizons)
        if not horizons:
            raise ValueError("horizons must name at least one revenue column")
        target = cumulative_log_targets(Y, horizons)
        eval_target = None if eval_set is None else cumulative_log_targets(eval_set[1], horizons)
        if eval_set is not None and len(eval_set[0]) < 10:
            eval_set = None  # too few held-out buyers to stop on: train the configured rounds
        self.feature_names_in_ = list(X.columns)
        self.boosters_, self.best_iterations_ = [], []
        base_eval = None
        for k in range(len(horizons)):
            y_k = target[:, k] - (target[:, k - 1] if k else 0.0)
            params = {"objective": "regression", "metric": "None", **self.lgbm_kwargs()}
            es = None
            if eval_set is not None:
                truth = eval_target[:, k]
                y_es = truth - (eval_target[:, k - 1] if k else 0.0)
                es = (eval_set[0][self.feature_names_in_], y_es)
                fevals = [rmsle_feval(base_eval, truth), mae_feval(base_eval, truth)]
            model, best = fit_booster(
                params, X, y_k, sample_weight, es, self.early_stopping_rounds, fevals if es else None
            )
            fixed = getattr(self, "best_iterations_fixed_", None)
            if fixed is not None:  # a cross-fitted copy predicts with the full model's per-horizon rounds
                best = min(best, int(fixed[k]))
            self.boosters_.append(model)
            self.best_iterations_.append(best)
            if es is not None:
                inc = np.clip(model.predict(es[0], num_iteration=best), 0.0, None)
                base_eval = inc if base_eval is None else base_eval + inc
        if self.refit_on_eval and eval_set is not None:
            self._refit(X, target, sample_weight, eval_set[0], eval_target)
        self.best_iteration_ = int(max(self.best_iterations_))
        self.smearing_ = {h: 1.0 for h in horizons}
        self.variance_ = self.spend_share_ = self.mixtures_ = self.level_ = (
            None  # a refit drops the retransform
        )
        return self

    def _refit(self, X, target, sample_weight, X_es, eval_target):
        """Replace every horizon's booster by one trained on train + eval rows for its early-stopped
        round count (more, and the most recent, rows for the final fit)."""
        X_all, w_all = append_eval_rows(X[self.feature_names_in_], X_es, sample_weight)
        t_all = np.vstack([target, eval_target])
        for k, best in enumerate(self.best_iterations_):
            y_k = t_all[:, k] - (t_all[:, k - 1] if k else 0.0)
            params = {
                "objective": "regression",
                "metric": "None",
                **self.lgbm_kwargs(),
                "n_estimators": int(best),
            }
            self.boosters_[k], _ = fit_booster(params, X_all, y_k, w_all)

    def fixed_clone(self):
        clone = super().fixed_clone()
        clone.best_iterations_fixed_ = list(self.best_iterations_)
        return clone

    def _check_fitted(self):
        if not hasattr(self, "boosters_"):
            raise ValueError("RevenueRegressor is not fitted; call fit first")

    def predict_log(self, X, cache: list | None = None) -> pd.DataFrame:
        """Cumulative E[log1p y | buyer, x] per horizon (columns = horizons), non-decreasing across.

        ``cache``: optional per-call list shared by boosters on the same columns (see ``lgbm_matrix``).
        """
        return pd.DataFrame(self.log_array(X, cache), columns=list(self.horizons), index=X.index)

    def log_array(self, X, cache: list | None = None) -> np.ndarray:
        """:meth:`predict_log` as an ``(n, horizons)`` array (no DataFrame: the serving path)."""
        self._check_fitted()
        check_frame(X)
        cache = [] if cache is None else cache  # the horizons' boosters share one input matrix
        out = np.empty((len(X), len(self.boosters_)))
        for k, (model, best) in enumerate(zip(self.boosters_, self.best_iterations_, strict=True)):
            pred = booster_predict(model, X, self.feature_names_in_, best, cache)
            # the first horizon is a level (log1p >= 0), later ones are increments (>= 0)
            out[:, k] = np.clip(pred, 0.0, None) + (out[:, k - 1] if k else 0.0)
        return out

    def predict_variance(self, X, cache: list | None = None) -> np.ndarray:
        """``(n, k)`` residual variance s2(x) of the spenders' log1p revenue per horizon (zeros without a
        variance model)."""
        variance = getattr(self, "variance_", None)
        if not variance:
            return np.zeros((len(X), len(self.horizons)))
        cache = [] if cache is None else cache
        cols = [booster_predict(m, X, self.feature_names_in_, best, cache) for m, best in variance]
        return np.clip(np.column_stack(cols), 0.0, None)

    def predict_dollars(self, X, log: pd.DataFrame | None = None, cache: list | None = None) -> pd.DataFrame:
        """E[y | buyer, x] per horizon in dollars, clipped at 0 and kept ordered: pi (exp(m / pi + s2(x) / 2)
        - 1) with a variance model, exp(m) * S - 1 with smearing factors S.

        ``log``: this model's ``predict_log(X)`` if the caller has it already (not recomputed).
        """
        m = self.log_array(X, cache) if log is None else np.asarray(log, dtype=np.float64)
        return pd.DataFrame(self.dollars_array(X, m, cache), columns=list(self.horizons), index=X.index)

    def dollars_array(self, X, log: np.ndarray, cache: list | None = None) -> np.ndarray:
        """:meth:`predict_dollars` as an array, from this model's :meth:`log_array` of ``X``."""
        smear = np.array([self.smearing_[h] for h in self.horizons])
        mixtures = getattr(self, "mixtures_", None)
        if mixtures:
            pi = np.asarray(self.spend_share_)
            scale = np.sqrt(self.predict_variance(X, cache))
            spend = [spend_mean(log[:, k] / pi[k], scale[:, k], mix) for k, mix in enumerate(mixtures)]
            dollars = pi * np.column_stack(spend) * np.asarray(self.level_)
        elif getattr(self, "variance_", None):
            pi = np.asarray(self.spend_share_)
            spend = np.exp(log / pi + self.predict_variance(X, cache) / 2.0) - 1.0
            dollars = np.clip(pi * spend * smear, 0.0, None)
        else:
            dollars = np.clip(np.exp(log) * smear - 1.0, 0.0, None)
        return np.maximum.accumulate(dollars, axis=1)

    def predictive(self, X, p_buyer, log: np.ndarray, cache: list | None = None) -> dict[str, np.ndarray]:
        """The first horizon's predictive distribution of revenue per row (``retransform='mixture'``; an
        empty dict otherwise): :attr:`quantiles` and P(y > t) for :attr:`thresholds` (see
        :func:`ltv.models.distribution.predictive_columns`), from the buyer probability ``p_buyer`` and this
        model's :meth:`log_array` of ``X``."""
        mixtures = getattr(self, "mixtures_", None)
        if not mixtures:
            return {}
        pi = float(self.spend_share_[0])
        model, best = self.variance_[0]  # the first horizon's only
        scale = np.sqrt(np.clip(booster_predict(model, X, self.feature_names_in_, best, cache), 0.0, None))
        cols = predictive_columns(np.asarray(p_buyer) * pi, np.asarray(log)[:, 0] / pi, scale, mixtures[0],
                                  self.quantiles, self.thresholds)  # fmt: skip
        return {**cols, "spend_scale": scale}

    def spend_pit(self, log_d7, spend_scale, revenue) -> np.ndarray:
        """PIT of spenders' d7 revenue under their predicted distribution, P(Y <= y | spender, x), from
        ``predict_parts``' log_rev_d7 and spend_scale; NaN where revenue <= 0 (uniform when calibrated)."""
        pi, y = float(self.spend_share_[0]), np.asarray(revenue, dtype=np.float64)
        z = (np.log1p(np.clip(y, 0.0, None)) - np.asarray(log_d7) / pi) / np.asarray(spend_scale)
        return np.where(y > 0, 1.0 - self.mixtures_[0].sf(z), np.nan)
