"""RevenueRegressor: E[log1p revenue | buyer, x] per horizon, ordered d7 <= d14 <= d28 by construction, and its
retransformation to dollars.

The first horizon is modelled on log1p(y); every later horizon models the non-negative increment of cumulative
log1p revenue over the previous one, and predictions add clipped increments, so the order holds for any input.
Train rows are the buyers (buyer_d7 == 1, zero-revenue buyers included), the buyer classifier's event: then
expm1(p * m) is the RMSLE optimum.

Dollars E[y | buyer, x] (``objective=revenue``; bench/revenue.py, README "Bidding"): ``retransform='smearing'``
keeps one total-matching factor per horizon from held-out buyers; 'variance' models the spenders' residual
variance s2(x) (a small LightGBM on out-of-fold train residuals): pi (exp(m / pi + s2 / 2) - 1), pi the train
buyers' spend share; 'mixture' replaces the normal residual by a Gaussian mixture of the standardised residuals
(:mod:`ltv.models.distribution`, it follows a whale tail) and a level L matching the dollar total of the train
buyers (out of fold) and the held-out buyers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ltv import metrics
from ltv.contract import TARGET
from ltv.models.distribution import ResidualMixture, predictive_columns, spend_mean
from ltv.models.lgbm_fit import LGBMEstimator, append_eval_rows, fit_booster
from ltv.models.lgbm_predict import booster_predict, check_frame

RETRANSFORMS = ("smearing", "variance", "mixture")
VARIANCE_EARLY_STOPPING_ROUNDS = 30  # the variance model's signal (squared residuals) is weak: stop early


def cumulative_log_targets(Y: pd.DataFrame, horizons) -> np.ndarray:
    """``(n, k)`` log1p revenue per horizon, clipped at 0 (refunds) and made non-decreasing."""
    missing = [h for h in horizons if h not in Y.columns]
    if missing:
        raise ValueError(f"labels lack revenue horizon column(s) {missing}")
    logs = np.log1p(np.clip(Y[list(horizons)].to_numpy(dtype=np.float64), 0.0, None))
    return np.maximum.accumulate(logs, axis=1)


def spend_scale(s2) -> np.ndarray:
    """The spenders' log-residual scale from the variance model's s2(x), floored at 1e-3: the one scale the
    mixture is fitted on and that predictions and the PIT divide by (a zero would divide by zero)."""
    return np.sqrt(np.clip(np.asarray(s2, dtype=np.float64), 1e-6, None))


def smearing_factor(log_truth, log_pred) -> float:
    """Total-matching factor ``sum(exp(log_truth)) / sum(exp(log_pred))``: Duan's mean of exp(residual) weighted
    by exp(m) (the plain mean assumes residuals independent of m, but whales make the spread grow with m and it
    under-predicts the total by ~12% on the generator); it matches the total of its rows exactly."""
    log_truth, log_pred = np.asarray(log_truth, dtype=np.float64), np.asarray(log_pred, dtype=np.float64)
    if log_truth.size == 0:
        return 1.0
    shift = log_pred.max()  # overflow guard; cancels in the ratio
    return float(np.sum(np.exp(log_truth - shift)) / np.sum(np.exp(log_pred - shift)))


def cumulative_eval(base=None, truth=None, dollars: bool = False):
    """LightGBM eval callable of a horizon's cumulative prediction, ``base`` (the previous horizons' prediction
    on the eval rows) plus the clipped increment, against ``truth`` (the cumulative log target; None: the
    label): RMSLE, or with ``dollars`` the mean absolute error in dollars. Lower is better."""

    def score(y_true, y_pred):
        pred = np.clip(y_pred, 0.0, None) + (0.0 if base is None else base)
        true = y_true if truth is None else truth
        if dollars:
            return "mae_dollars", metrics.mae(np.expm1(true), np.expm1(pred)), False
        return "rmsle", metrics.rmse(true, pred), False

    return score


class RevenueRegressor(LGBMEstimator):
    """One LightGBM per revenue horizon on buyers, log1p scale, ordered predictions; dollars by ``retransform``.

    Parameters
    ----------
    horizons : label columns, shortest first (the chain needs iap_revenue_d7 first); None: iap_revenue_d7.
    lgbm : LightGBM parameters of every horizon's booster, passed to LightGBM unchanged; None: its defaults.
    early_stopping_rounds : rounds without RMSLE improvement on the eval buyers; None disables.
    refit_on_eval : after early stopping, refit each horizon on train + eval rows with its stopped round count.
    retransform : 'smearing' (None), 'variance' or 'mixture' (module doc); the chain fits the per-row models
        (:meth:`fit_variance`) for objective=revenue only: the RMSLE chain reads log revenue.
    variance_lgbm : LightGBM parameters of the variance model (n_jobs, random_state: ``lgbm``'s).
    mixture_components : components of the residual mixture (None: one, a normal).
    quantiles, thresholds : levels and dollar thresholds of the predictive distribution (:meth:`predictive`).
    """

    def __init__(self, horizons=None, lgbm: dict | None = None, early_stopping_rounds: int | None = None,
                 refit_on_eval: bool = False, retransform: str | None = None, variance_lgbm: dict | None = None,
                 mixture_components: int | None = None, quantiles=(), thresholds=()):  # fmt: skip
        self.horizons = horizons
        self.lgbm = lgbm
        self.early_stopping_rounds = early_stopping_rounds
        self.refit_on_eval = refit_on_eval
        self.retransform = retransform
        self.variance_lgbm = variance_lgbm
        self.mixture_components = mixture_components
        self.quantiles = quantiles
        self.thresholds = thresholds

    # ---- log scale ------------------------------------------------------------------------------------
    def fit(self, X, Y: pd.DataFrame, sample_weight=None, eval_set=None) -> RevenueRegressor:
        """Fit one booster per horizon on buyer rows ``X`` with revenue labels ``Y``; ``eval_set`` = (X_es,
        Y_es) of held-out buyers for early stopping (fewer than 10: the configured rounds). Dollars: smearing
        factors of 1 until :meth:`fit_smearing`, no variance model until :meth:`fit_variance`."""
        check_frame(X)
        if self.retransform not in (None, *RETRANSFORMS):
            raise ValueError(f"retransform must be one of {RETRANSFORMS}, got {self.retransform!r}")
        if self.horizons is not None and not list(self.horizons):
            raise ValueError("horizons must name at least one revenue column")
        self.horizons_ = [TARGET] if self.horizons is None else list(self.horizons)
        self.feature_names_in_ = list(X.columns)
        if eval_set is not None and len(eval_set[0]) < 10:
            eval_set = None
        self.boosters_, self.best_iterations_, self.evals_results_ = self._fit_horizons(
            X, Y, sample_weight, eval_set
        )
        if self.refit_on_eval and eval_set is not None:
            X_all, w_all = append_eval_rows(X[self.feature_names_in_], eval_set[0], sample_weight)
            Y_all = pd.concat([Y[self.horizons_], eval_set[1][self.horizons_]], ignore_index=True)
            self.boosters_, _, _ = self._fit_horizons(X_all, Y_all, w_all, None, self.best_iterations_)
        self.smearing_ = {h: 1.0 for h in self.horizons_}
        self.variance_models_ = self.spend_share_ = self.mixtures_ = self.level_ = None
        return self

    def _fit_horizons(self, X, Y, sample_weight, eval_set, rounds=None) -> tuple[list, list[int], list[dict]]:
        """(booster, rounds to predict with, valid curves) per horizon: early-stopped on ``eval_set``, or ``rounds[k]``
        rounds for horizon k (fixed-round copies: refits, out-of-fold residuals)."""
        target = cumulative_log_targets(Y, self.horizons_)
        es_target = None if eval_set is None else cumulative_log_targets(eval_set[1], self.horizons_)
        params = self.lgbm_params(objective="regression", metric="None")
        boosters, best_rounds, curves, base = [], [], [], None
        for k in range(target.shape[1]):
            y_k = target[:, k] - (target[:, k - 1] if k else 0.0)
            es = fevals = None
            if eval_set is not None:
                truth = es_target[:, k]
                es = (eval_set[0][self.feature_names_in_], truth - (es_target[:, k - 1] if k else 0.0))
                fevals = [cumulative_eval(base, truth), cumulative_eval(base, truth, dollars=True)]
            fixed = {} if rounds is None else {"n_estimators": int(rounds[k])}
            patience = self.early_stopping_rounds if rounds is None else None
            booster, best, evals = fit_booster(
                {**params, **fixed}, X, y_k, sample_weight, es, patience, fevals
            )
            boosters.append(booster)
            best_rounds.append(best)
            curves.append(evals)
            if es is not None:
                pred = booster_predict(booster, es[0], self.feature_names_in_, best, None, self.predict_jobs)
                base = np.clip(pred, 0.0, None) + (0.0 if base is None else base)
        return boosters, best_rounds, curves

    def predict_log(self, X, cache=None) -> np.ndarray:
        """``(n, horizons)`` cumulative E[log1p y | buyer, x], non-decreasing across horizons (``cache``: a
        :class:`~ltv.models.lgbm_predict.PredictCache` shared by the boosters of one predict call)."""
        if not hasattr(self, "boosters_"):
            raise ValueError("RevenueRegressor is not fitted; call fit first")
        check_frame(X)
        out = np.empty((len(X), len(self.boosters_)))
        for k, (booster, best) in enumerate(zip(self.boosters_, self.best_iterations_, strict=True)):
            pred = booster_predict(booster, X, self.feature_names_in_, best, cache, self.predict_jobs)
            out[:, k] = np.clip(pred, 0.0, None) + (out[:, k - 1] if k else 0.0)  # a level, then increments
        return out

    # ---- dollars ---------------------------------------------------------------------------------------
    def fit_smearing(self, X, Y: pd.DataFrame) -> RevenueRegressor:
        """One :func:`smearing_factor` per horizon from held-out buyers (``retransform='smearing'``' dollars)."""
        m, truth = self.predict_log(X), cumulative_log_targets(Y, self.horizons_)
        self.smearing_ = {h: smearing_factor(truth[:, k], m[:, k]) for k, h in enumerate(self.horizons_)}
        return self

    def fit_variance(self, X, Y: pd.DataFrame, sample_weight=None, eval_set=None, n_folds: int = 3):
        """The residual-variance model per horizon (``retransform`` 'variance' or 'mixture'; a no-op under
        'smearing'), and under 'mixture' the residual mixture and the level per horizon.

        Train buyers' residuals come from fixed-round copies fitted on the other ``n_folds`` contiguous blocks
        (out of fold, not shrunk by overfitting); s2(x) = E[r^2 | x] early-stops on the held-out buyers'
        squared residuals of this model (``eval_set``, if it has 10 spenders)."""
        self.variance_models_ = self.spend_share_ = self.mixtures_ = self.level_ = None
        if self.retransform in (None, "smearing"):
            return self
        target = cumulative_log_targets(Y, self.horizons_)
        oof = np.zeros_like(target)
        for block in [b for b in np.array_split(np.arange(len(X)), max(int(n_folds), 2)) if b.size]:
            rest = np.setdiff1d(np.arange(len(X)), block)
            w = None if sample_weight is None else np.asarray(sample_weight)[rest]
            boosters, rounds, _ = self._fit_horizons(
                X.iloc[rest], Y.iloc[rest], w, None, self.best_iterations_
            )
            for k, (booster, best) in enumerate(zip(boosters, rounds, strict=True)):
                pred = booster_predict(
                    booster, X.iloc[block], self.feature_names_in_, best, None, self.predict_jobs
                )
                oof[block, k] = np.clip(pred, 0.0, None) + (oof[block, k - 1] if k else 0.0)
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if eval_set is not None and len(eval_set[0]) >= 10:
            es_X, es_target, es_pred = (
                eval_set[0],
                cumulative_log_targets(eval_set[1], self.horizons_),
                self.predict_log(eval_set[0]),
            )
        else:
            eval_set = None
        shared = {k: v for k, v in (self.lgbm or {}).items() if k in ("n_jobs", "random_state")}
        params = {"objective": "regression", **shared, **(self.variance_lgbm or {}), "verbose": -1}
        self.variance_models_, self.spend_share_ = [], []
        for k in range(target.shape[1]):
            pos = target[:, k] > 0
            pi = float(np.clip(np.sum(w[pos]) / max(np.sum(w), 1e-12), 1e-3, 1.0))
            r2 = (target[pos, k] - oof[pos, k] / pi) ** 2  # spenders around their own mean m / pi
            es = None
            if eval_set is not None and (es_target[:, k] > 0).sum() >= 10:
                es_pos = es_target[:, k] > 0
                es = (
                    es_X[self.feature_names_in_].iloc[np.flatnonzero(es_pos)],
                    (es_target[es_pos, k] - es_pred[es_pos, k] / pi) ** 2,
                )
            X_pos = X[self.feature_names_in_].iloc[np.flatnonzero(pos)]
            booster, best, _ = fit_booster(params, X_pos, r2, None if sample_weight is None else w[pos], es,
                                           VARIANCE_EARLY_STOPPING_ROUNDS)  # fmt: skip
            self.variance_models_.append((booster, best))
            self.spend_share_.append(pi)
            if self.retransform == "mixture":
                s2 = booster_predict(booster, X, self.feature_names_in_, best, None, self.predict_jobs)
                scale = spend_scale(s2)
                z = (target[pos, k] - oof[pos, k] / pi) / scale[pos]
                mixture = ResidualMixture(
                    self.mixture_components or 1, (self.lgbm or {}).get("random_state")
                ).fit(z)
                self.mixtures_ = [*(self.mixtures_ or []), mixture]
                # the level: total-matching on the train buyers' out-of-fold dollars and the held-out buyers'
                # (a few whales move a smaller sample's total), for what the mean and the mixture still miss
                num = np.sum(w * np.expm1(target[:, k]))
                den = np.sum(w * pi * spend_mean(oof[:, k] / pi, scale, mixture))
                if eval_set is not None:
                    es_s2 = booster_predict(
                        booster, es_X, self.feature_names_in_, best, None, self.predict_jobs
                    )
                    num += np.sum(np.expm1(es_target[:, k]))
                    den += np.sum(
                        pi * spend_mean(es_pred[:, k] / pi, spend_scale(es_s2), mixture)
                    )
                self.level_ = [*(self.level_ or []), float(num / max(den, 1e-12))]
        return self

    def predict_variance(self, X, cache=None) -> np.ndarray:
        """``(n, k)`` residual variance s2(x) of the spenders' log1p revenue (zeros without a variance model)."""
        if not self.variance_models_:
            return np.zeros((len(X), len(self.horizons_)))
        cols = [booster_predict(b, X, self.feature_names_in_, best, cache, self.predict_jobs)
                for b, best in self.variance_models_]  # fmt: skip
        return np.clip(np.column_stack(cols), 0.0, None)

    def predict_dollars(self, X, log: np.ndarray | None = None, cache=None) -> np.ndarray:
        """``(n, horizons)`` E[y | buyer, x] in dollars, >= 0 and ordered, from this model's
        :meth:`predict_log` of ``X`` (``log``, where the caller has it)."""
        log = self.predict_log(X, cache) if log is None else np.asarray(log, dtype=np.float64)
        if self.mixtures_:
            pi, scale = np.asarray(self.spend_share_), spend_scale(self.predict_variance(X, cache))
            spend = [spend_mean(log[:, k] / pi[k], scale[:, k], mix) for k, mix in enumerate(self.mixtures_)]
            dollars = pi * np.column_stack(spend) * np.asarray(self.level_)
        elif self.variance_models_:
            pi = np.asarray(self.spend_share_)
            dollars = np.clip(
                pi * (np.exp(log / pi + self.predict_variance(X, cache) / 2.0) - 1.0), 0.0, None
            )
        else:
            smear = np.array([self.smearing_[h] for h in self.horizons_])
            dollars = np.clip(np.exp(log) * smear - 1.0, 0.0, None)
        return np.maximum.accumulate(dollars, axis=1)

    def predictive(self, X, p_buyer, log: np.ndarray, cache=None) -> dict[str, np.ndarray]:
        """The first horizon's predictive distribution per row under 'mixture' (else {}): :attr:`quantiles`,
        P(y > t) for :attr:`thresholds` (:func:`~ltv.models.distribution.predictive_columns`) and
        ``spend_scale``, from the buyer probability and this model's :meth:`predict_log` of ``X``."""
        if not self.mixtures_:
            return {}
        pi = float(self.spend_share_[0])
        booster, best = self.variance_models_[0]
        s2 = booster_predict(booster, X, self.feature_names_in_, best, cache, self.predict_jobs)
        scale = spend_scale(s2)
        cols = predictive_columns(np.asarray(p_buyer) * pi, np.asarray(log)[:, 0] / pi, scale, self.mixtures_[0],
                                  self.quantiles, self.thresholds)  # fmt: skip
        return {**cols, "spend_scale": scale}

    def spend_pit(self, log_d7, spend_scale, revenue) -> np.ndarray:
        """PIT of spenders' d7 revenue under their predicted distribution, P(Y <= y | spender, x), from
        ``predict_parts``' log_rev_d7 and spend_scale; NaN where revenue <= 0 (uniform when calibrated)."""
        pi, y = float(self.spend_share_[0]), np.asarray(revenue, dtype=np.float64)
        z = (np.log1p(np.clip(y, 0.0, None)) - np.asarray(log_d7) / pi) / np.asarray(spend_scale)
        return np.where(y > 0, 1.0 - self.mixtures_[0].sf(z), np.nan)
