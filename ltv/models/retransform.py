"""Dollars from the revenue regressor's log-scale mean: E[y | buyer, x] for the ``revenue`` objective.

``retransform='variance'`` is a two-part heteroscedastic retransformation (Manning 1998): buyers spend
nothing with probability 1 - pi (a point mass at log1p y = 0; pi is the share of train buyers with
revenue), and the spenders' log revenue has mean m(x) / pi and a variance s2(x) = E[r^2 | x] modelled on
the spenders' out-of-fold residuals, so E[y | buyer, x] ~ pi (exp(m / pi + s2 / 2) - 1). The whale tail
makes the spread grow with x, and a squared log residual has a light tail, so a few whales cannot swing it
the way they swing a ratio of dollar sums. ``retransform='mixture'`` keeps that location and spread but
drops the normal shape: the standardised residuals z = r / s(x) get a Gaussian mixture
(:class:`ltv.models.distribution.ResidualMixture`), so E[y | buyer, x] ~ L pi (exp(m / pi) E[exp(s z)] - 1)
follows a heavy whale tail, and the same fit is the revenue's predictive distribution; the level L matches
the total of the train buyers out of fold and of the held-out buyers (bench/revenue.py: without it the mean
ran 25% low even on the default tail).
``retransform='smearing'`` keeps one total-matching factor per horizon from held-out buyers. The fit side lives here, a mixin of ``RevenueRegressor``; its
``predict_dollars`` applies the fitted values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ltv.models.booster import fit_booster
from ltv.models.distribution import ResidualMixture, spend_mean

RETRANSFORMS = ("variance", "mixture", "smearing")
# the variance model stops on the held-out buyers' squared residuals (a weak signal: stop early)
VARIANCE_EARLY_STOPPING_ROUNDS = 30


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


class Retransform:
    """``fit_variance`` / ``fit_smearing`` / ``share_retransform`` of ``RevenueRegressor``."""

    def fit_variance(self, X, Y: pd.DataFrame, sample_weight=None, eval_set=None, n_folds: int = 3):
        """Residual-variance model per horizon (``retransform='variance'`` or ``'mixture'``; a no-op
        otherwise), and under 'mixture' the residual mixture per horizon.

        Residuals of the train buyers come from fixed-round copies fitted on the other ``n_folds``
        contiguous blocks (out of fold, so not shrunk by overfitting); s2(x) = E[r^2 | x] is a small
        LightGBM per horizon, early-stopped on the held-out buyers' squared residuals of this model; the
        mixture is fitted to the spenders' residuals over sqrt(s2(x)).
        """
        self._check_fitted()
        self.variance_ = self.mixtures_ = self.level_ = None
        if self.retransform not in ("variance", "mixture"):
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
        shared = {k: v for k, v in (self.booster or {}).items() if k in ("n_jobs", "random_state")}
        params = {**shared, **(self.variance_booster or {}), "verbose": -1}
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
            X_pos = X[self.feature_names_in_].iloc[np.flatnonzero(pos)]
            weights = None if sample_weight is None else w[pos]
            model, best = fit_booster({"objective": "regression", **params}, X_pos, r2, weights, es,
                                      VARIANCE_EARLY_STOPPING_ROUNDS)  # fmt: skip
            self.variance_.append((model, best))
            self.spend_share_.append(pi)
            if self.retransform == "mixture":
                X_all = X[self.feature_names_in_]
                scale = np.sqrt(np.clip(model.predict(X_all, num_iteration=best), 1e-6, None))
                z = (target[pos, k] - oof[pos, k] / pi) / scale[pos]
                seed = (self.booster or {}).get("random_state")
                mixture = ResidualMixture(self.mixture_components, seed).fit(z)
                self.mixtures_ = [*(self.mixtures_ or []), mixture]
                # the level: total-matching on the train buyers' out-of-fold dollars and the held-out
                # buyers' (every buyer the fit may use out of sample: a few whales move a smaller sample's
                # total), for what the log-scale mean and the mixture still miss
                num = np.sum(w * np.expm1(target[:, k]))
                den = np.sum(w * pi * spend_mean(oof[:, k] / pi, scale, mixture))
                if eval_set is not None:
                    es_scale = np.sqrt(np.clip(model.predict(eval_set[0][self.feature_names_in_], num_iteration=best),
                                               1e-6, None))  # fmt: skip
                    num += np.sum(np.expm1(es_target[:, k]))
                    den += np.sum(pi * spend_mean(es_pred[:, k] / pi, es_scale, mixture))
                self.level_ = [*(self.level_ or []), float(num / max(den, 1e-12))]
        return self

    def share_retransform(self, other: Retransform) -> Retransform:
        """Use ``other``'s fitted smearing factors and variance model (cross-fitted copies)."""
        self.smearing_ = other.smearing_
        self.variance_ = getattr(other, "variance_", None)
        self.mixtures_ = getattr(other, "mixtures_", None)
        self.level_ = getattr(other, "level_", None)
        self.spend_share_ = getattr(other, "spend_share_", None)
        return self

    def fit_smearing(self, X, Y: pd.DataFrame) -> Retransform:
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
