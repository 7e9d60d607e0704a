"""RevenueRegressor: E[log1p revenue | buyer, x] per horizon, ordered d7 <= d14 <= d28 by construction.

The first horizon is modelled directly on log1p(y); every later horizon models the non-negative
increment of cumulative log1p revenue over the previous one, and predictions add clipped increments,
so the order holds for any input. Train rows are the buyers (buyer_d7 == 1, zero-revenue buyers
included) so the conditioning event equals the buyer classifier's: then expm1(p * m) is the RMSLE
optimum.

Dollars (E[y | buyer, x], the ``revenue`` objective) need a retransformation of the log-scale mean.
``retransform='variance'`` (default) is a two-part heteroscedastic retransformation (Manning 1998):
buyers spend nothing with probability 1 - pi (a point mass at log1p y = 0; pi is the share of train
buyers with revenue), and the spenders' log revenue has mean m(x) / pi and a variance
s2(x) = E[r^2 | x] modelled on the spenders' out-of-fold residuals, so
E[y | buyer, x] ~ pi (exp(m / pi + s2 / 2) - 1). The whale tail makes the spread grow with x, and a
squared log residual has a light tail, so a few whales cannot swing it the way they swing a ratio of
dollar sums. ``retransform='smearing'`` keeps one total-matching factor per horizon from held-out buyers.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from ltv.models._lgbm import LGBMParamsMixin, append_eval_rows, booster_predict, check_frame, fit_booster

DEFAULT_HORIZONS = ("iap_revenue_d7", "iap_revenue_d14", "iap_revenue_d28")


_OWN = ("refit_on_eval", "retransform", "variance_params")  # our keys, not LightGBM parameters
RETRANSFORMS = ("variance", "smearing")
# the residual-variance model: small, strongly regularised (the signal in squared residuals is weak)
VARIANCE_PARAMS = dict(n_estimators=300, learning_rate=0.03, num_leaves=7, min_child_samples=50,
                       subsample=0.8, subsample_freq=1, colsample_bytree=0.5, reg_lambda=1.0)  # fmt: skip


def cumulative_log_targets(Y: pd.DataFrame, horizons) -> np.ndarray:
    """``(n, k)`` log1p revenue per horizon, clipped at 0 (refunds) and made non-decreasing."""
    missing = [h for h in horizons if h not in Y.columns]
    if missing:
        raise ValueError(f"labels lack revenue horizon column(s) {missing}")
    logs = np.log1p(np.clip(Y[list(horizons)].to_numpy(dtype=np.float64), 0.0, None))
    return np.maximum.accumulate(logs, axis=1)


def smearing_factor(log_truth, log_pred) -> float:
    """Total-matching retransformation factor: ``sum(exp(log_truth)) / sum(exp(log_pred))``."""
    log_truth, log_pred = np.asarray(log_truth, dtype=np.float64), np.asarray(log_pred, dtype=np.float64)
    if log_truth.size == 0:
        return 1.0
    shift = log_pred.max()  # overflow guard; cancels in the ratio
    return float(np.sum(np.exp(log_truth - shift)) / np.sum(np.exp(log_pred - shift)))


def rmsle_feval(base=None, truth=None):
    """LightGBM eval callable: RMSLE of the cumulative log prediction (lower is better).

    For an increment model, ``base`` is the previous horizon's log prediction on the eval rows and
    ``truth`` the cumulative log target, so the score is the horizon's RMSLE, not the increment's.
    """

    def rmsle(y_true, y_pred):
        pred = np.clip(y_pred, 0.0, None) + (0.0 if base is None else base)
        true = y_true if truth is None else truth
        return "rmsle", float(np.sqrt(np.mean((pred - true) ** 2))), False

    return rmsle


def mae_feval(base=None, truth=None):
    """LightGBM eval callable: mean absolute error in dollars of the cumulative prediction."""

    def mae(y_true, y_pred):
        pred = np.clip(y_pred, 0.0, None) + (0.0 if base is None else base)
        true = y_true if truth is None else truth
        return "mae_dollars", float(np.mean(np.abs(np.expm1(pred) - np.expm1(true)))), False

    return mae


class RevenueRegressor(LGBMParamsMixin):
    """One LightGBM per revenue horizon on buyers, log1p scale, ordered predictions.

    Parameters
    ----------
    horizons : label columns, shortest first (default d7, d14, d28; there is no d1 revenue).
    early_stopping_rounds : rounds without RMSLE improvement on the eval buyers; None disables.
    refit_on_eval : after early stopping, refit each horizon on train + eval rows with its stopped round
        count. Off for the buyer regressor (its smearing uses the eval buyers, which must stay out of
        sample); the stacking's direct all-rows model turns it on.
    retransform : 'variance' (per-row residual variance, see the module docstring; fitted by
        ``fit_variance``) or 'smearing' (one held-out factor per horizon, ``fit_smearing``).
    variance_params : LightGBM parameters of the variance model, over ``VARIANCE_PARAMS``.
    Other named parameters and ``**kwargs`` : LightGBM parameters, passed through.
    """

    def __init__(
        self,
        horizons=DEFAULT_HORIZONS,
        n_estimators: int = 1000,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 20,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.5,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int | None = 50,
        n_jobs: int = 2,
        random_state: int | None = 0,
        refit_on_eval: bool = False,
        retransform: str = "variance",
        variance_params: dict | None = None,
        **kwargs,
    ):
        if retransform not in RETRANSFORMS:
            raise ValueError(f"retransform must be one of {RETRANSFORMS}, got {retransform!r}")
        self.refit_on_eval = refit_on_eval
        self.retransform = retransform
        self.variance_params = variance_params
        self.horizons = horizons
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.subsample_freq = subsample_freq
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.kwargs = kwargs

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
            model = lgb.LGBMRegressor(objective="regression", metric="None", **self.lgbm_kwargs(_OWN))
            es = None
            if eval_set is not None:
                truth = eval_target[:, k]
                y_es = truth - (eval_target[:, k - 1] if k else 0.0)
                es = (eval_set[0][self.feature_names_in_], y_es)
                fevals = [rmsle_feval(base_eval, truth), mae_feval(base_eval, truth)]
            best = fit_booster(
                model, X, y_k, sample_weight, es, self.early_stopping_rounds, fevals if es else None
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
        self.variance_ = self.spend_share_ = None  # a refit drops the old retransformation (fit_variance)
        return self

    def _refit(self, X, target, sample_weight, X_es, eval_target):
        """Replace every horizon's booster by one trained on train + eval rows for its early-stopped
        round count (more, and the most recent, rows for the final fit)."""
        X_all, w_all = append_eval_rows(X[self.feature_names_in_], X_es, sample_weight)
        t_all = np.vstack([target, eval_target])
        for k, best in enumerate(self.best_iterations_):
            y_k = t_all[:, k] - (t_all[:, k - 1] if k else 0.0)
            params = {**self.lgbm_kwargs(_OWN), "n_estimators": int(best)}
            model = lgb.LGBMRegressor(objective="regression", metric="None", **params)
            fit_booster(model, X_all, y_k, w_all)
            self.boosters_[k] = model

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

    def fit_variance(self, X, Y: pd.DataFrame, sample_weight=None, eval_set=None, n_folds: int = 3):
        """Residual-variance model per horizon (``retransform='variance'``; a no-op otherwise).

        Residuals of the train buyers come from fixed-round copies fitted on the other ``n_folds``
        contiguous blocks (out of fold, so not shrunk by overfitting); s2(x) = E[r^2 | x] is a small
        LightGBM per horizon, early-stopped on the held-out buyers' squared residuals of this model.
        """
        self._check_fitted()
        self.variance_ = None
        if self.retransform != "variance":
            return self
        horizons = list(self.horizons)
        target = cumulative_log_targets(Y, horizons)
        oof = np.zeros_like(target)
        blocks = [b for b in np.array_split(np.arange(len(X)), max(int(n_folds), 2)) if b.size]
        for block in blocks:
            rest = np.setdiff1d(np.arange(len(X)), block)
            w = None if sample_weight is None else np.asarray(sample_weight)[rest]
            copy_ = self.fixed_clone().set_params(retransform="smearing")
            copy_.fit(X.iloc[rest], Y.iloc[rest], w)
            oof[block] = copy_.log_array(X.iloc[block])
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if eval_set is not None and len(eval_set[0]) >= 10:
            es_target = cumulative_log_targets(eval_set[1], horizons)
            es_pred = self.log_array(eval_set[0])
        else:
            eval_set = None
        params = {**VARIANCE_PARAMS, **(self.variance_params or {})}
        params.update(n_jobs=self.n_jobs, random_state=self.random_state, verbose=-1)
        self.variance_, self.spend_share_ = [], []
        for k in range(len(horizons)):
            pos = target[:, k] > 0
            pi = float(np.clip(np.sum(w[pos]) / max(np.sum(w), 1e-12), 1e-3, 1.0))
            r2 = (target[pos, k] - oof[pos, k] / pi) ** 2  # spenders around their own mean m / pi
            es = None
            if eval_set is not None:
                es_pos = es_target[:, k] > 0
                if es_pos.sum() >= 10:
                    es_r2 = (es_target[es_pos, k] - es_pred[es_pos, k] / pi) ** 2
                    es = (eval_set[0][self.feature_names_in_].iloc[np.flatnonzero(es_pos)], es_r2)
            model = lgb.LGBMRegressor(objective="regression", **params)
            X_pos = X[self.feature_names_in_].iloc[np.flatnonzero(pos)]
            best = fit_booster(model, X_pos, r2, None if sample_weight is None else w[pos], es, 30)
            self.variance_.append((model, best))
            self.spend_share_.append(pi)
        return self

    def predict_variance(self, X, cache: list | None = None) -> np.ndarray:
        """``(n, k)`` residual variance s2(x) of the spenders' log1p revenue per horizon (zeros without a
        variance model)."""
        variance = getattr(self, "variance_", None)
        if not variance:
            return np.zeros((len(X), len(self.horizons)))
        cache = [] if cache is None else cache
        cols = [booster_predict(m, X, self.feature_names_in_, best, cache) for m, best in variance]
        return np.clip(np.column_stack(cols), 0.0, None)

    def share_retransform(self, other: RevenueRegressor) -> RevenueRegressor:
        """Use ``other``'s fitted smearing factors and variance model (cross-fitted copies)."""
        self.smearing_ = other.smearing_
        self.variance_ = getattr(other, "variance_", None)
        self.spend_share_ = getattr(other, "spend_share_", None)
        return self

    def fit_smearing(self, X, Y: pd.DataFrame) -> RevenueRegressor:
        """Smearing factor per horizon from held-out buyers, ``S = sum(1 + y) / sum(exp(m))``
        (``retransform='smearing'``; factors stay 1 under 'variance').

        This is Duan's mean of exp(residual) weighted by exp(m): the plain mean assumes residuals
        independent of m, but whales make the spread grow with m, and the plain factor then
        under-predicts the total (by ~12% on the test generator). The weighted form matches the total
        of the rows it is fitted on exactly.
        """
        self.smearing_ = {h: 1.0 for h in self.horizons}
        if self.retransform != "smearing":
            return self
        m = self.log_array(X)
        truth = cumulative_log_targets(Y, list(self.horizons))
        self.smearing_ = {h: smearing_factor(truth[:, k], m[:, k]) for k, h in enumerate(self.horizons)}
        return self

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
        if getattr(self, "variance_", None):
            pi = np.asarray(self.spend_share_)
            spend = np.exp(log / pi + self.predict_variance(X, cache) / 2.0) - 1.0
            dollars = np.clip(pi * spend * smear, 0.0, None)
        else:
            dollars = np.clip(np.exp(log) * smear - 1.0, 0.0, None)
        return np.maximum.accumulate(dollars, axis=1)
