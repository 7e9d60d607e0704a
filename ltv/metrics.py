"""Every metric the project reports, one implementation per concept (pure numpy, no I/O).

Regression metrics score dollar predictions of ``iap_revenue_d7``; classification metrics score buyer
probabilities against a 0/1 label. RMSLE clips predictions at 0 (the competition rule) and clips the
truth at 0 too, because d14/d28 revenue can be slightly negative after refunds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _pair(y, pred) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    if y.shape != pred.shape:
        raise ValueError(f"y and pred must have the same length, got {y.shape[0]} and {pred.shape[0]}")
    if y.size == 0:
        raise ValueError("metrics need at least one row, got an empty array")
    return y, pred


def msle(y, pred) -> float:
    """Mean squared log error, ``mean((log1p(pred) - log1p(y))**2)``, both clipped at 0."""
    y, pred = _pair(y, pred)
    return float(np.mean((np.log1p(np.clip(pred, 0, None)) - np.log1p(np.clip(y, 0, None))) ** 2))


def rmsle(y, pred) -> float:
    """Root mean squared log error (the competition metric); predictions clipped at >= 0."""
    return float(np.sqrt(msle(y, pred)))


def rmse(y, pred) -> float:
    """Root mean squared error in the units of ``y``."""
    y, pred = _pair(y, pred)
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def mae(y, pred) -> float:
    """Mean absolute error in the units of ``y``."""
    y, pred = _pair(y, pred)
    return float(np.mean(np.abs(pred - y)))


def r2(y, pred) -> float:
    """Coefficient of determination; 0.0 when ``y`` is constant (no variance to explain)."""
    y, pred = _pair(y, pred)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        return 0.0
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot


def binary_label(y, name: str = "y_bin") -> np.ndarray:
    """``y`` as a float 0/1 array, or a ValueError naming it (the one 0/1 label check)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{name} must contain only 0 and 1")
    return y


def _binary(y_bin, score) -> tuple[np.ndarray, np.ndarray]:
    y, s = _pair(y_bin, score)
    return binary_label(y), s


def auc(y_bin, score) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula with average ranks for ties; NaN if one class."""
    y, s = _binary(y_bin, score)
    n_pos = float(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_auc(y_bin, score) -> float:
    """Average precision (area under the precision-recall curve, step interpolation); NaN if no positive."""
    y, s = _binary(y_bin, score)
    n_pos = y.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order], s[order]
    # one precision/recall point per distinct threshold, so tied scores are not ordered arbitrarily
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last_of_tie]
    k = (np.arange(y.size) + 1)[last_of_tie]
    precision = tp / k
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier(y_bin, prob) -> float:
    """Brier score, ``mean((prob - y)**2)``."""
    y, p = _binary(y_bin, prob)
    return float(np.mean((p - y) ** 2))


def log_loss(y_bin, prob, eps: float = 1e-12) -> float:
    """Binary cross-entropy with probabilities clipped to ``[eps, 1 - eps]``."""
    y, p = _binary(y_bin, prob)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def reliability_curve(y_bin, prob, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability diagram data on equal-count bins of ``prob``.

    Returns
    -------
    prob_true, prob_pred, count : arrays, one entry per non-empty bin (observed rate, mean predicted
        probability, rows in the bin). Equal-count bins, because buyer probabilities crowd near 0.
    """
    y, p = _binary(y_bin, prob)
    order = np.argsort(p, kind="mergesort")
    chunks = [c for c in np.array_split(order, min(n_bins, y.size)) if c.size]
    prob_true = np.array([y[c].mean() for c in chunks])
    prob_pred = np.array([p[c].mean() for c in chunks])
    return prob_true, prob_pred, np.array([c.size for c in chunks])


def gini(y, pred) -> float:
    """Gini of ``y`` ordered by ``pred`` (descending), ties in ``pred`` averaged over their block."""
    y, pred = _pair(y, pred)
    order = np.argsort(-pred, kind="mergesort")
    p_sorted, y_sorted = pred[order], y[order]
    # replace y within tied-prediction blocks by the block mean: the curve must not depend on row order
    _, start, counts = np.unique(-p_sorted, return_index=True, return_counts=True)
    block_mean = np.add.reduceat(y_sorted, start) / counts
    y_sorted = np.repeat(block_mean, counts)
    total = y_sorted.sum()
    if total == 0:
        return 0.0
    n = y.size
    lorenz = np.cumsum(y_sorted) / total
    return float(lorenz.sum() / n - (n + 1) / (2 * n))


def normalized_gini(y, pred) -> float:
    """Gini of ``pred`` divided by the Gini of the perfect ordering: 1 perfect, -1 reversed, ~0 random."""
    best = gini(y, y)
    return 0.0 if best == 0 else gini(y, pred) / best


def total_ratio(y, pred) -> float:
    """``sum(pred) / sum(y)``: 1.0 means unbiased in total (what bidding and budgets need)."""
    y, pred = _pair(y, pred)
    total = y.sum()
    return float("nan") if total == 0 else float(pred.sum() / total)


def decile_table(y, pred, n_bins: int = 10) -> pd.DataFrame:
    """Rows split into ``n_bins`` equal-count groups by descending prediction (decile 1 = highest).

    Columns: decile, rows, mean_pred, mean_actual, sum_pred, sum_actual, share_of_actual,
    cum_share_of_actual (the gain curve), lift (mean_actual / overall mean actual).
    """
    y, pred = _pair(y, pred)
    order = np.argsort(-pred, kind="mergesort")
    groups = [g for g in np.array_split(order, min(n_bins, y.size)) if g.size]
    total = y.sum()
    overall = y.mean()
    rows = []
    for i, g in enumerate(groups, start=1):
        rows.append(
            {
                "decile": i,
                "rows": g.size,
                "mean_pred": pred[g].mean(),
                "mean_actual": y[g].mean(),
                "sum_pred": pred[g].sum(),
                "sum_actual": y[g].sum(),
            }
        )
    table = pd.DataFrame(rows)
    table["share_of_actual"] = table["sum_actual"] / total if total else 0.0
    table["cum_share_of_actual"] = table["share_of_actual"].cumsum()
    table["lift"] = table["mean_actual"] / overall if overall else 0.0
    return table


def regression_report(y, pred, prefix: str = "") -> dict[str, float]:
    """RMSLE, MSLE, RMSE, MAE, R2, normalised Gini and total ratio of dollar predictions, keys prefixed."""
    funcs = {
        "rmsle": rmsle,
        "msle": msle,
        "rmse": rmse,
        "mae": mae,
        "r2": r2,
        "normalized_gini": normalized_gini,
        "total_ratio": total_ratio,
    }
    return {f"{prefix}{name}": f(y, pred) for name, f in funcs.items()}


def classification_report(y_bin, prob, prefix: str = "") -> dict[str, float]:
    """AUC, PR-AUC, Brier, log loss, mean probability and base rate of buyer probabilities, keys prefixed."""
    y, p = _binary(y_bin, prob)
    return {
        f"{prefix}auc": auc(y, p),
        f"{prefix}pr_auc": pr_auc(y, p),
        f"{prefix}brier": brier(y, p),
        f"{prefix}log_loss": log_loss(y, p),
        f"{prefix}mean_prob": float(p.mean()),
        f"{prefix}base_rate": float(y.mean()),
    }
