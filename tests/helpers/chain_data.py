"""Seeded numeric generator with a known oracle, for model tests and quality checks (no I/O).

Rows have a few informative numeric features, two categorical "risk" columns and noise columns. A
buyer logit drives buyer_d7; 10% of buyers spend nothing in 7 days; the rest spend
``exp(N(mu(x) + whale_jump * W, sigma))`` dollars, where W ~ Bernoulli(p_whale(x)) is a whale tail.
d14 / d28 add non-negative increments (a few tiny refunds make d28 negative on non-buyers).
The oracle is exact up to Gauss-Hermite quadrature: ``oracle_rmsle`` = expm1(E[log1p y | x]),
``oracle_revenue`` = E[y | x].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(40)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _e_log1p_lognormal(mu: np.ndarray, sigma: float) -> np.ndarray:
    """E[log1p(exp(mu + sigma Z))], Z standard normal (probabilists' Gauss-Hermite)."""
    return np.logaddexp(0.0, mu[:, None] + sigma * _NODES[None, :]) @ _WEIGHTS


def make_chain_data(
    n_rows: int = 10_000,
    seed: int = 0,
    intercept: float = -2.0,
    n_noise: int = 5,
    sigma: float = 0.8,
    whale_jump: float = 2.5,
    zero_buyer_rate: float = 0.1,
):
    """Return ``(X, labels, time, oracle)``.

    X: float32 columns f0..f3, noise n0.., categorical ``country`` and ``dev_os``. labels: buyer_d7,
    iap_revenue_d7/d14/d28 (float64). time: int64 hour index (sorted). oracle: DataFrame with p_buyer,
    m (E[log1p y | buyer, x]), oracle_rmsle, oracle_revenue.
    """
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n_rows, 4))
    country = rng.choice(["us", "jp", "in", "br", "de"], size=n_rows, p=[0.3, 0.1, 0.3, 0.2, 0.1])
    dev_os = rng.choice(["android", "ios"], size=n_rows, p=[0.8, 0.2])
    c_eff = pd.Series(country).map({"us": 0.5, "jp": 0.8, "in": -1.0, "br": -0.3, "de": 0.2}).to_numpy()
    logit = intercept + 1.2 * f[:, 0] + 0.8 * f[:, 1] + c_eff + 0.5 * (dev_os == "ios")
    p = 1.0 / (1.0 + np.exp(-logit))
    mu = 2.5 + 0.7 * f[:, 2] + 0.4 * f[:, 0] + 0.3 * c_eff
    p_whale = 1.0 / (1.0 + np.exp(-(-3.5 + 1.5 * f[:, 3])))
    buyer = rng.random(n_rows) < p
    spends = buyer & (rng.random(n_rows) >= zero_buyer_rate)
    whale = rng.random(n_rows) < p_whale
    y7 = np.where(spends, np.exp(mu + whale_jump * whale + sigma * rng.normal(size=n_rows)), 0.0)
    y14 = y7 + np.where(spends, y7 * rng.exponential(0.3, n_rows), 0.0)
    y28 = y14 + np.where(spends, y7 * rng.exponential(0.3, n_rows), 0.0)
    y28 = np.where(~buyer & (rng.random(n_rows) < 0.002), -0.5, y28)  # refunds
    cols = {f"f{i}": f[:, i].astype(np.float32) for i in range(4)}
    noise = rng.normal(size=(n_rows, n_noise)).astype(np.float32)
    cols.update({f"n{i}": noise[:, i] for i in range(n_noise)})
    X = pd.DataFrame(cols)
    X["country"] = pd.Categorical(country, categories=["br", "de", "in", "jp", "us"])
    X["dev_os"] = pd.Categorical(dev_os, categories=["android", "ios"])
    labels = pd.DataFrame(
        {
            "buyer_d7": buyer.astype(np.float64),
            "iap_revenue_d7": y7,
            "iap_revenue_d14": y14,
            "iap_revenue_d28": y28,
        }
    )
    time = np.sort(rng.integers(0, 96, size=n_rows)).astype(np.int64)
    e_log_pos = p_whale * _e_log1p_lognormal(mu + whale_jump, sigma) + (1 - p_whale) * _e_log1p_lognormal(
        mu, sigma
    )
    m = (1 - zero_buyer_rate) * e_log_pos
    e_y_pos = np.exp(mu + sigma**2 / 2) * (p_whale * np.exp(whale_jump) + 1 - p_whale)
    oracle = pd.DataFrame(
        {
            "p_buyer": p,
            "m": m,
            "oracle_rmsle": np.expm1(p * m),
            "oracle_revenue": p * (1 - zero_buyer_rate) * e_y_pos,
        }
    )
    return X, labels, time, oracle


def small_chain(objective: str = "rmsle", sampling=None, gate: bool = True, seed: int = 0):
    """An unfitted ``LTVModel`` as configured, with few trees and one thread each, for fast tests."""
    from ltv.models import LTVModel
    from tests.helpers import estimators

    fast = {
        "learning_rate": 0.1,
        "n_estimators": 200,
        "early_stopping_rounds": 20,
        "n_jobs": 1,
        "random_state": seed,
    }
    return LTVModel(
        estimators.classifier(**fast),
        estimators.regressor(**fast),
        estimators.gate(enabled=gate),
        whale=estimators.whale(n_jobs=1, random_state=seed) if gate else None,
        sampling=sampling,
        objective=objective,
        random_state=seed,
    )


def split_data(n_train: int = 6000, n_valid: int = 3000, n_holdout: int = 8000, seed: int = 0, **kwargs):
    """``make_chain_data`` cut by time into train / valid / holdout dicts of (X, labels, time, oracle)."""
    X, labels, time, oracle = make_chain_data(n_train + n_valid + n_holdout, seed=seed, **kwargs)
    cuts = {"train": slice(0, n_train), "valid": slice(n_train, n_train + n_valid),
            "holdout": slice(n_train + n_valid, None)}  # fmt: skip
    return {
        name: (X.iloc[s].reset_index(drop=True), labels.iloc[s].reset_index(drop=True), time[s],
               oracle.iloc[s].reset_index(drop=True))
        for name, s in cuts.items()
    }  # fmt: skip


def fit_chain(model, data: dict):
    """``model.fit`` on ``split_data``'s train and valid splits (with their request times)."""
    from ltv.models import LabelledRows

    return model.fit(LabelledRows(*data["train"][:3]), LabelledRows(*data["valid"][:3]))


def synthetic_window(start, hours: int, rows: int, seed: int = 5):
    """Labelled contract rows (an Arrow table) of ``hours`` generated hours from ``start``, with their
    ``datetime`` partition value."""
    import datetime as dt

    import pyarrow as pa

    from ltv.contract import PARTITION_FORMAT
    from ltv.synthetic.hour import draw_hour, hour_table

    tables = []
    for h in range(hours):
        when = start + dt.timedelta(hours=h)
        cols, labels, _ = draw_hour(seed, "train", when, rows)
        table = hour_table(cols, labels, "train")
        tables.append(table.append_column("datetime", pa.array([when.strftime(PARTITION_FORMAT)] * rows)))
    return pa.concat_tables(tables)
