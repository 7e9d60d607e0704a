"""The label model: a deterministic function of observed features (the ``obs`` reductions) plus noise.

``label_params`` maps observed features to the parameters of the label distribution, ``oracle`` turns
them into exact conditional expectations, and ``draw_labels`` samples the 17 label columns. Nothing here
sees a latent trait, so the oracle is the Bayes-optimal predictor for the data written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, ndtr

from ltv.synthetic.vocab import WORLD

INTERCEPT = -6.04  # calibrated so that ~3.3% of rows are buyers (docs/generator.md)
ZERO_SHARE = 0.10  # P(d7 revenue == 0 | buyer)
SIGMA_BASE = 0.95
SIGMA_WHALE = 1.6
_GH_X, _GH_W = np.polynomial.hermite.hermgauss(40)
_CASINO = list(WORLD.categories).index("real money casino")
_HIGH_VALUE = np.isin(WORLD.categories, ["application", "real money casino", "dating", "finance"])


def _f(x: np.ndarray, fill: float = 0.0) -> np.ndarray:
    return np.where(np.isnan(x), fill, x)


@dataclass
class LabelParams:
    """Per-row parameters: buyer logit ``eta``, whale weight ``w``, log-normal ``mu`` / ``mu_w``; the whale
    component's spread ``sigma_w`` (one for every row)."""

    eta: np.ndarray
    w: np.ndarray
    mu: np.ndarray
    mu_w: np.ndarray
    sigma_w: float = SIGMA_WHALE


def _logit(o: dict) -> np.ndarray:
    log_msrp = np.clip(_f(np.log(o["msrp"]) - 5.8), -1.5, 1.5)
    high = _HIGH_VALUE[o["cat"]].astype(np.float64)
    flat = (
        o["country_eff"]
        + o["cat_eff"]
        + o["adv_eff"]
        + o["make_eff"]
        + 0.40 * o["ios"]
        + 0.35 * o["ios"] * high
        + 0.25 * np.cos(2 * np.pi * (o["hour"] - 21) / 24)
        + 0.10 * o["weekend"]
        + 0.35 * log_msrp
        + 0.12 * _f(o["act_days"] - 4.0)
        + 0.60 * _f(o["wifi"] - 0.5)
        + 0.30 * _f(o["wifi"] - 0.5) * log_msrp
    )
    nested = (
        1.00 * o["has_hist"]
        + 0.30 * np.log1p(o["past_rev"])
        + 0.25 * np.log1p(o["past_buys"])
        + 0.40 * o["has_hist"] * high
        + 1.00 * _f(np.exp(-o["days_last_buy"] / 14.0))
        + 0.50 * _f(np.exp(-o["days_last_ins"] / 7.0))
        + 0.45 * np.log1p(o["sess_total"])
        + 0.30 * (np.log1p(o["n_bundles"]) - 1.0)
        + 0.30 * np.minimum(o["n_new"], 4.0)
        + 0.60 * o["city_entropy"]
        + 0.15 * np.maximum(o["n_osv"] - 1.0, 0.0)
        + 1.20 * o["whale_prank"]
        + 1.20 * (o["cpm_rank"] - 0.5)
        + 0.50 * (o["cpm_rank"] - 0.5) * o["ios"]
        + 0.80 * (o["ctr_rank"] - 0.5)
        + 0.30 * _f(np.log(24.0 * o["share_now"] + 0.25))
        + 1.00 * o["rba_own"]
        + 0.50 * o["adv_actions"]
        + 0.80 * o["adv_purchase"]
        + 0.12 * np.log1p(o["ua_total"])
    )
    return INTERCEPT + flat + nested


def label_params(obs: dict, whale_logit: float = 0.0, whale_sigma: float = SIGMA_WHALE) -> LabelParams:
    """Label-distribution parameters of each row from the observed-feature summaries ``obs``.

    ``whale_logit`` (added to the whale weight's logit) and ``whale_sigma`` (the whale component's log
    spread) make the spenders' tail heavier than the default; 0.0 and ``SIGMA_WHALE`` draw the default data.
    """
    log_msrp = np.clip(_f(np.log(obs["msrp"]) - 5.8), -1.5, 1.5)
    casino = (obs["cat"] == _CASINO).astype(np.float64)
    mu = (
        1.25
        + obs["country_rev"]
        + obs["cat_rev"]
        + 0.25 * obs["ios"]
        + 0.30 * log_msrp
        + 0.20 * np.log1p(obs["past_rev"])
        + 0.40 * obs["whale_prank"]
        + 0.40 * (obs["cpm_rank"] - 0.5)
        + 0.06 * (obs["hour"] >= 18)
    )
    w = expit(
        -6.0
        + 2.8 * obs["whale_prank"]
        + 0.25 * np.log1p(obs["past_rev"])
        + 0.9 * casino
        + 0.5 * obs["ios"]
        + 0.8 * obs["rba_own"]
        + whale_logit
    )
    mu_w = 4.5 + 0.25 * obs["whale_rev"] + 0.5 * obs["country_rev"] + 0.3 * casino
    return LabelParams(eta=_logit(obs), w=w, mu=mu, mu_w=mu_w, sigma_w=float(whale_sigma))


def _e_log1p_lognormal(mu: np.ndarray, sigma: float) -> np.ndarray:
    """E[log1p(exp(mu + sigma Z))], Z ~ N(0, 1), by 40-point Gauss-Hermite quadrature (smooth integrand)."""
    t = mu[:, None] + sigma * np.sqrt(2.0) * _GH_X[None, :]
    return np.logaddexp(0.0, t) @ _GH_W / np.sqrt(np.pi)


def oracle(p: LabelParams) -> dict[str, np.ndarray]:
    """Exact P(buyer_d7), E[log1p(iap_revenue_d7)] and E[iap_revenue_d7] given the observed features, and
    the parameters of the d7 revenue's distribution (:data:`DISTRIBUTION_COLUMNS`, read by
    :func:`exceedance` and :func:`quantile`)."""
    p_buyer = expit(p.eta)
    pos = p_buyer * (1.0 - ZERO_SHARE)
    sw = p.sigma_w
    e_log = (1 - p.w) * _e_log1p_lognormal(p.mu, SIGMA_BASE) + p.w * _e_log1p_lognormal(p.mu_w, sw)
    e_rev = (1 - p.w) * np.exp(p.mu + SIGMA_BASE**2 / 2) + p.w * np.exp(p.mu_w + sw**2 / 2)
    n = len(p_buyer)
    return {"p_buyer": p_buyer, "e_log1p": pos * e_log, "e_revenue": pos * e_rev, "p_paid": pos,
            "whale_weight": p.w, "mu": p.mu, "mu_whale": p.mu_w, "sigma": np.full(n, SIGMA_BASE),
            "sigma_whale": np.full(n, float(sw))}  # fmt: skip


# y = 0 with probability 1 - p_paid, else log y ~ (1 - whale_weight) N(mu, sigma²) + whale_weight N(mu_whale,
# sigma_whale²): what the oracle folder holds per row besides its expectations
DISTRIBUTION_COLUMNS = ["p_paid", "whale_weight", "mu", "mu_whale", "sigma", "sigma_whale"]


def exceedance(dist, t: float) -> np.ndarray:
    """Exact P(iap_revenue_d7 > t) per row of ``dist`` (a mapping with :data:`DISTRIBUTION_COLUMNS`)."""
    a = _columns(dist)
    if t < 0:
        return np.ones(len(a["mu"]))
    return exceedance_log(a, np.full(len(a["mu"]), np.log(t) if t > 0 else -np.inf))


def _columns(dist) -> dict[str, np.ndarray]:
    return {k: np.asarray(dist[k], dtype=np.float64) for k in DISTRIBUTION_COLUMNS}


def quantile(dist, level: float, iterations: int = 60) -> np.ndarray:
    """Exact ``level``-quantile of iap_revenue_d7 per row of ``dist`` (0 where ``level <= 1 - p_paid``),
    by bisection on the log scale (60 halvings of [-30, 30]: far below a cent)."""
    a = _columns(dist)
    lo, hi = np.full(len(a["mu"]), -30.0), np.full(len(a["mu"]), 30.0)
    for _ in range(iterations):  # P(y > exp(mid)) > 1 - level: the quantile lies above mid
        mid = (lo + hi) / 2
        above = exceedance_log(a, mid) > 1.0 - level
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return np.where(a["p_paid"] > 1.0 - level, np.exp((lo + hi) / 2), 0.0)


def exceedance_log(a: dict, log_t: np.ndarray) -> np.ndarray:
    """P(y > exp(log_t)) per row (``log_t`` an array), for :func:`quantile`."""
    w = a["whale_weight"]
    tail = (1 - w) * ndtr((a["mu"] - log_t) / a["sigma"]) + w * ndtr(
        (a["mu_whale"] - log_t) / a["sigma_whale"]
    )
    return a["p_paid"] * tail


def draw_labels(rng: np.random.Generator, p: LabelParams, obs: dict) -> dict[str, np.ndarray]:
    """Sample the 17 label columns (numpy; NaN marks a null registration / retention value)."""
    n = len(p.eta)
    prob = expit(p.eta)
    buyer7 = rng.random(n) < prob
    paid = buyer7 & (rng.random(n) >= ZERO_SHARE)
    whale = rng.random(n) < p.w
    log_y = np.where(
        whale, p.mu_w + p.sigma_w * rng.standard_normal(n), p.mu + SIGMA_BASE * rng.standard_normal(n)
    )
    rev7 = np.where(paid, np.exp(log_y), 0.0)
    buyer1 = buyer7 & (rng.random(n) < 0.62)
    buyer14 = buyer7 | (rng.random(n) < 0.25 * prob)
    buyer28 = buyer14 | (rng.random(n) < 0.25 * prob)
    buy7 = np.where(buyer7, 1 + rng.poisson(0.3 + 0.25 * np.log1p(rev7)), 0)
    extra14 = np.where(
        buyer14 & ~buyer7,
        1 + rng.poisson(0.3, n),
        np.where(buyer7, rng.poisson(0.25 + 0.1 * np.log1p(rev7)), 0),
    )
    extra28 = np.where(buyer28 & ~buyer14, 1 + rng.poisson(0.3, n), np.where(buyer14, rng.poisson(0.3, n), 0))
    add14 = extra14 * np.exp(p.mu - 0.5 + SIGMA_BASE * rng.standard_normal(n))
    add28 = extra28 * np.exp(p.mu - 0.5 + SIGMA_BASE * rng.standard_normal(n))
    refund = np.where(paid & (rng.random(n) < 0.004), rev7 + 2.5 * rng.random(n), 0.0)  # rare, may go below 0
    rev14 = rev7 + add14 - refund
    rev28 = rev14 + add28
    return {
        "buyer_d1": buyer1.astype(np.int32),
        "buyer_d7": buyer7.astype(np.int32),
        "buyer_d14": buyer14.astype(np.int32),
        "buyer_d28": buyer28.astype(np.int32),
        "buy_d7": buy7.astype(np.int64),
        "buy_d14": (buy7 + extra14).astype(np.int64),
        "buy_d28": (buy7 + extra14 + extra28).astype(np.int64),
        "iap_revenue_d7": rev7,
        "iap_revenue_d14": rev14,
        "iap_revenue_d28": rev28,
        **_engagement_labels(rng, obs["act_days"], buyer7),
    }


def _engagement_labels(rng: np.random.Generator, act_days: np.ndarray, buyer7: np.ndarray) -> dict:
    """registration and retention* (0/1, or day fractions for the ``*_to_*`` ones), null together for 7%."""
    n = len(buyer7)
    ret_null = rng.random(n) < 0.07
    act = np.where(np.isnan(act_days), 3.0, act_days)
    r1 = rng.random(n) < expit(-0.6 + 0.25 * (act - 4) + 1.0 * buyer7)
    r3 = r1 & (rng.random(n) < 0.6)
    r7 = r3 & (rng.random(n) < 0.65)
    frac = np.round(np.clip(r1 * (0.3 + 0.7 * rng.random(n)), 0, 1), 4)

    def nullable(x: np.ndarray) -> np.ndarray:
        return np.where(ret_null, np.nan, x.astype(np.float64))

    return {
        "registration": nullable(r1 | buyer7 | (rng.random(n) < 0.3)),
        "retention_d1_to_d7": nullable(frac),
        "retention_d3_to_d7": nullable(np.round(frac * r3, 4)),
        "retention_d7_to_d14": nullable(np.round(frac * r7, 4)),
        "retention_d1": nullable(r1),
        "retention_d3": nullable(r3),
        "retentiond7": nullable(r7),
    }
