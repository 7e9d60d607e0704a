"""The predictive distribution of d7 revenue per row: a point mass at zero and a heavy-tailed spend.

Revenue is 0 with probability 1 - p_paid (p_paid = P(buyer | x) times the train buyers' spend share) and
otherwise ``log1p y = center(x) + scale(x) z``: the revenue regressor's spenders' mean and its
residual-spread model, with ``z`` following a :class:`ResidualMixture`, a Gaussian mixture fitted to the
standardised out-of-fold residuals of the train spenders. A normal ``z`` is the log-normal retransform
(``exp(m + s2 / 2)``), which misses the mean when a few whales sit an order of magnitude above the rest;
a second component takes the whales (bench/revenue.py measures both). Everything is closed form, so a row
costs a few vector operations: mean ``p_paid (exp(center) E[exp(scale z)] - 1)``, exceedance
``p_paid P(z > (log1p t - center) / scale)``, and quantiles by bisection on the mixture's CDF.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

# quantile search: z in [-Z_BOUND, Z_BOUND], halved BISECTIONS times (2^-40 of the span: far below a cent)
Z_BOUND = 40.0
BISECTIONS = 40


def quantile_name(level: float) -> str:
    """Column of the ``level``-quantile: 0.5 -> 'q50', 0.99 -> 'q99', 0.995 -> 'q99.5'."""
    return f"q{round(float(level) * 100, 6):g}"


def exceedance_name(threshold: float) -> str:
    """Column of P(revenue > threshold): 10 -> 'p_over_10', 2.5 -> 'p_over_2.5'."""
    return f"p_over_{float(threshold):g}"


MAX_LOG_FACTOR = 50.0  # the largest log of a retransform factor (e^50 ~ 5e21)


class ResidualMixture:
    """A 1-d Gaussian mixture of standardised log residuals (fitted by EM, seeded).

    Parameters
    ----------
    n_components : mixture components (1: a normal, the log-normal retransform).
    random_state : seed of the EM initialisation.
    """

    def __init__(self, n_components: int = 1, random_state=None):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, z) -> ResidualMixture:
        """Fit to the residuals ``z`` (1-d, finite)."""
        from sklearn.mixture import GaussianMixture

        z = np.asarray(z, dtype=np.float64).reshape(-1)
        k = int(self.n_components)
        if k < 1:
            raise ValueError(f"mixture_components must be >= 1, got {self.n_components!r}")
        if z.size < 10 * k or not np.all(np.isfinite(z)):
            raise ValueError(
                f"ResidualMixture needs >= {10 * k} finite residuals for {k} component(s), got {z.size}"
            )
        gm = GaussianMixture(k, covariance_type="diag", n_init=2, random_state=self.random_state).fit(
            z[:, None]
        )
        self.weights_ = gm.weights_.astype(np.float64)
        self.means_ = gm.means_[:, 0].astype(np.float64)
        self.sigmas_ = np.sqrt(gm.covariances_[:, 0]).astype(np.float64)
        return self

    def mgf(self, s) -> np.ndarray:
        """E[exp(s z)] per value of ``s`` (the retransform of a log-scale mean to dollars)."""
        s = np.asarray(s, dtype=np.float64)[..., None]
        # capped: a wild variance prediction gives a huge, finite factor, never inf dollars
        return (
            np.exp(np.minimum(s * self.means_ + 0.5 * (s * self.sigmas_) ** 2, MAX_LOG_FACTOR))
            @ self.weights_
        )

    def sf(self, z) -> np.ndarray:
        """P(Z > z) per value of ``z``."""
        z = np.asarray(z, dtype=np.float64)[..., None]
        return ndtr((self.means_ - z) / self.sigmas_) @ self.weights_

    def quantile(self, b) -> np.ndarray:
        """The ``b``-quantile of Z per value of ``b`` in (0, 1), by bisection on :meth:`sf`."""
        b = np.asarray(b, dtype=np.float64)
        lo, hi = np.full(b.shape, -Z_BOUND), np.full(b.shape, Z_BOUND)
        for _ in range(BISECTIONS):
            mid = 0.5 * (lo + hi)
            above = self.sf(mid) > 1.0 - b  # the quantile lies above mid
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return 0.5 * (lo + hi)


def spend_mean(center, scale, mixture: ResidualMixture) -> np.ndarray:
    """E[y | spender, x] in dollars: ``exp(center) E[exp(scale z)] - 1``, clipped at 0."""
    return np.clip(np.exp(np.asarray(center, dtype=np.float64)) * mixture.mgf(scale) - 1.0, 0.0, None)


def predictive_columns(p_paid, center, scale, mixture: ResidualMixture, quantiles=(), thresholds=()) -> dict:
    """The revenue's predictive distribution per row: ``quantile_name(a)`` -> its ``a``-quantile (0 where
    ``a <= 1 - p_paid``) and ``exceedance_name(t)`` -> P(y > t), for each level and threshold.

    Parameters
    ----------
    p_paid : P(y > 0 | x). center, scale : the spenders' log1p revenue is ``center + scale z``.
    mixture : the fitted distribution of z.
    """
    p = np.clip(np.asarray(p_paid, dtype=np.float64), 0.0, 1.0)
    center = np.asarray(center, dtype=np.float64)
    scale = np.clip(np.asarray(scale, dtype=np.float64), 1e-6, None)
    out = {}
    levels = np.array([float(a) for a in quantiles])
    if np.any((levels <= 0.0) | (levels >= 1.0)):
        raise ValueError(f"quantiles: each level must lie in (0, 1), got {list(quantiles)}")
    if levels.size:  # one bisection for every level at once: (rows, levels)
        b = (levels - (1.0 - p[:, None])) / np.maximum(p[:, None], 1e-300)  # the level within the spenders
        z = mixture.quantile(np.clip(b, 1e-12, 1.0 - 1e-12))
        spend = np.where(b > 0.0, np.clip(np.expm1(center[:, None] + scale[:, None] * z), 0.0, None), 0.0)
        out.update({quantile_name(a): spend[:, k] for k, a in enumerate(levels)})
    for t in thresholds:
        t = float(t)
        if t < 0.0:
            raise ValueError(f"thresholds: each must be >= 0 dollars, got {t}")
        out[exceedance_name(t)] = p * mixture.sf((np.log1p(t) - center) / scale)
    return out
