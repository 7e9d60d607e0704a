"""Figures a person would rather look at than read: calibration, deciles, gain curve, importance.

Pure functions: arrays in, a matplotlib Figure out (the tracking layer saves and logs them).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: runs in CI, servers and sweeps
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def calibration_plot(
    y_true: np.ndarray, prob: np.ndarray, n_bins: int = 15, title: str = "Buyer calibration"
):
    """Reliability diagram on quantile bins of the predicted probability (log axes: buyers are rare)."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(prob, dtype=float)
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, n_bins)
    pred = np.array([p[b].mean() for b in bins if len(b)])
    obs = np.array([y[b].mean() for b in bins if len(b)])
    fig, ax = plt.subplots(figsize=(5, 5))
    lo = max(min(pred.min(), obs[obs > 0].min() if (obs > 0).any() else pred.min()), 1e-5)
    ax.plot([lo, 1], [lo, 1], color="grey", lw=1, ls="--", label="perfect")
    ax.plot(pred, np.clip(obs, lo, None), marker="o", label="model")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="mean predicted P(buyer)",
        ylabel="observed buyer rate",
        title=title,
    )
    ax.legend()
    fig.tight_layout()
    return fig


def decile_plot(table: pd.DataFrame, title: str = "Revenue by predicted decile"):
    """Bar chart of mean actual vs mean predicted revenue per prediction decile.

    ``table`` has columns ``decile``, ``mean_actual``, ``mean_pred`` (``ltv.metrics.decile_table``).
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["mean_actual"], width=0.4, label="actual")
    ax.bar(x + 0.2, table["mean_pred"], width=0.4, label="predicted")
    ax.set(
        xticks=x,
        xticklabels=[str(d) for d in table["decile"]],
        xlabel="decile of prediction (1 = highest)",
        ylabel="mean iap_revenue_d7",
        title=title,
    )
    ax.legend()
    fig.tight_layout()
    return fig


def gain_plot(y_true: np.ndarray, preds: dict[str, np.ndarray], title: str = "Cumulative revenue captured"):
    """Gain (Lorenz) chart: share of total revenue captured by the top-x share of rows, per ranking."""
    y = np.asarray(y_true, dtype=float)
    total = y.sum()
    fig, ax = plt.subplots(figsize=(5, 5))
    share = np.arange(1, len(y) + 1) / max(len(y), 1)
    for name, pred in preds.items():
        order = np.argsort(-np.asarray(pred, dtype=float), kind="stable")
        gain = np.cumsum(y[order]) / total if total > 0 else share
        ax.plot(share, gain, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="random")
    ax.set(xlabel="share of rows (ranked by prediction)", ylabel="share of revenue", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def importance_plot(importance: pd.Series, top: int = 30, title: str = "Feature importance (gain)"):
    """Horizontal bars of the ``top`` largest importances (a Series indexed by feature name)."""
    imp = importance.sort_values(ascending=False).head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, max(3, 0.25 * len(imp) + 1)))
    ax.barh(imp.index.astype(str), imp.values)
    ax.set(xlabel="importance", title=title)
    fig.tight_layout()
    return fig


def pit_plot(pit: np.ndarray, n_bins: int = 20, title: str = "PIT of spenders' revenue"):
    """Histogram of probability integral transforms (flat at 1 when the predicted distribution is right)."""
    u = np.asarray(pit, dtype=float)
    u = u[np.isfinite(u)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(
        u, bins=np.linspace(0, 1, n_bins + 1), density=True, alpha=0.8, label=f"model ({u.size} spenders)"
    )
    ax.axhline(1.0, color="grey", lw=1, ls="--", label="calibrated")
    ax.set(xlabel="P(Y <= y | spender, x)", ylabel="density", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def exceedance_plot(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "Reliability of P(revenue > t)"
):
    """Reliability diagram of exceedance probabilities: name -> (mean predicted, observed share) per bin."""
    fig, ax = plt.subplots(figsize=(5, 5))
    lo = 1e-5
    for name, (pred, obs) in curves.items():
        ax.plot(np.clip(pred, lo, None), np.clip(obs, lo, None), marker="o", label=name)
    ax.plot([lo, 1], [lo, 1], color="grey", lw=1, ls="--", label="perfect")
    ax.set(xscale="log", yscale="log", xlabel="mean predicted P(y > t)", ylabel="observed share over t",
           title=title)  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
