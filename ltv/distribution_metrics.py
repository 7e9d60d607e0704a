"""Metrics of a predictive distribution of revenue: pinball loss, coverage, exceedance calibration, total
ratio by predicted decile, PIT. Pure functions of arrays (:mod:`ltv.metrics` holds the point metrics).
"""

from __future__ import annotations

import numpy as np


def pinball(y, q, level: float) -> float:
    """Mean pinball (quantile) loss of the ``level``-quantile predictions ``q`` (lower is better)."""
    y, q = np.asarray(y, dtype=np.float64), np.asarray(q, dtype=np.float64)
    diff = y - q
    return float(np.mean(np.maximum(level * diff, (level - 1.0) * diff)))


def coverage(y, q) -> float:
    """Share of outcomes at or below their predicted quantile (a calibrated ``a``-quantile gives ~a)."""
    return float(np.mean(np.asarray(y, dtype=np.float64) <= np.asarray(q, dtype=np.float64)))


def exceedance_bins(y, prob, threshold: float, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration of P(y > threshold) on equal-count bins of the prediction ``prob``.

    Returns
    -------
    predicted, observed, rows : per non-empty bin, the mean prediction, the observed share over the
        threshold and the bin's row count.
    """
    y, p = np.asarray(y, dtype=np.float64), np.asarray(prob, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    bins = [b for b in np.array_split(order, min(n_bins, max(p.size, 1))) if b.size]
    over = y > threshold
    return (np.array([p[b].mean() for b in bins]), np.array([over[b].mean() for b in bins]),
            np.array([b.size for b in bins]))  # fmt: skip


def exceedance_ratio(y, prob, threshold: float) -> float:
    """Mean predicted P(y > threshold) over the observed share above it (1.0: right on average)."""
    observed = float(np.mean(np.asarray(y, dtype=np.float64) > threshold))
    return float("nan") if observed == 0 else float(np.mean(prob)) / observed


def decile_ratios(reference, pred, n_bins: int = 10) -> np.ndarray:
    """``sum(pred) / sum(reference)`` per equal-count bin of descending ``pred`` (bin 0 = highest);
    ``reference`` is the outcome, or the oracle's expected revenue where there is one (less noise)."""
    ref, pred = np.asarray(reference, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    order = np.argsort(-pred, kind="mergesort")
    bins = [b for b in np.array_split(order, min(n_bins, max(pred.size, 1))) if b.size]
    return np.array([pred[b].sum() / ref[b].sum() if ref[b].sum() > 0 else np.nan for b in bins])


def worst_decile(ratios) -> float:
    """The decile ratio farthest from 1 on the log scale (1.0: every decile right in total)."""
    r = np.asarray(ratios, dtype=np.float64)
    r = r[np.isfinite(r) & (r > 0)]
    return float("nan") if r.size == 0 else float(r[np.argmax(np.abs(np.log(r)))])


def distribution_report(y, columns: dict, quantiles, thresholds, prefix: str = "") -> dict[str, float]:
    """Pinball loss and coverage per quantile, mean predicted over observed share per threshold.

    ``columns`` maps ``q<level>`` / ``p_over_<t>`` names (``ltv.models.distribution``) to arrays.
    """
    from ltv.models.distribution import exceedance_name, quantile_name

    out = {}
    for a in quantiles:
        name = quantile_name(a)
        out[f"{prefix}pinball_{name}"] = pinball(y, columns[name], float(a))
        out[f"{prefix}coverage_{name}"] = coverage(y, columns[name])
    for t in thresholds:
        name = exceedance_name(t)
        out[f"{prefix}{name}_ratio"] = exceedance_ratio(y, columns[name], float(t))
    return out
