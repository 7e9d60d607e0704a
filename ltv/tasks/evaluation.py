"""Metrics and plots of one labelled split: shared by training (valid, holdout) and evaluate.py."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ltv import distribution_metrics as dm
from ltv import metrics, plots
from ltv.synthetic import labels as oracle_dist
from ltv.synthetic.hour import ORACLE_COLUMNS

log = logging.getLogger(__name__)


def predict_parts(pipeline, S) -> pd.DataFrame:
    """The chain's ``predict_parts`` of extracted features ``S`` (or of the model matrix as ``Blocks``)."""
    from ltv.models.blocks import Blocks

    X = S if isinstance(S, Blocks) else pipeline.features.transform(S)
    return pipeline.model.predict_parts(X)


def split_metrics(
    labels: pd.DataFrame, pred: np.ndarray, p_buyer: np.ndarray | None = None
) -> dict[str, float]:
    """RMSLE/RMSE/MAE/R2, normalised Gini, total predicted / total actual and (given p_buyer) buyer AUC."""
    y = labels["iap_revenue_d7"].to_numpy(dtype=float)
    out = {
        "rmsle": metrics.rmsle(y, pred),
        "rmse": metrics.rmse(y, pred),
        "mae": metrics.mae(y, pred),
        "r2": metrics.r2(y, pred),
        "gini": metrics.normalized_gini(y, pred),
        "total_ratio": metrics.total_ratio(y, pred),
        "rows": float(len(y)),
    }
    if p_buyer is not None and "buyer_d7" in labels:
        buyer = labels["buyer_d7"].to_numpy(dtype=float)
        if 0 < buyer.sum() < len(buyer):
            out["buyer_auc"] = metrics.auc(buyer, p_buyer)
            out["buyer_pr_auc"] = metrics.pr_auc(buyer, p_buyer)
            out["buyer_brier"] = metrics.brier(buyer, p_buyer)
    return {k: float(v) for k, v in out.items()}


def load_oracle(
    oracle_root: str | Path | None, subset: str, row_ids: pd.Series, labels: bool = False
) -> pd.DataFrame | None:
    """The generator's per-row oracle for ``row_ids`` (aligned, same order), or None when there is none.

    ``labels=True`` also reads the label columns the oracle folder holds for windows without labels of
    their own (the test window) and raises a ValueError, instead of returning None, when any row lacks one.
    """
    folder = Path(oracle_root) / subset if oracle_root else None
    if folder is None or not folder.is_dir():
        if labels:
            raise ValueError(f"no oracle labels: {folder} is not a folder (data.oracle_root, synthetic data)")
        return None
    import pyarrow.dataset as ds

    from ltv.contract import LABEL_COLUMNS, ROW_ID

    dataset = ds.dataset(str(folder), format="parquet", partitioning="hive")
    label_cols = [c for c in LABEL_COLUMNS if labels and c in dataset.schema.names]
    # an oracle written before the distribution columns existed has the expectations only
    oracle_cols = [c for c in ORACLE_COLUMNS if c in dataset.schema.names]
    import pyarrow as pa

    # one hash table of the wanted ids, built once (pandas 3's Series.isin on Arrow strings loops in
    # Python, and Arrow's is_in rebuilds its set per batch: minutes per million ids either way)
    wanted = pd.Index(np.asarray(row_ids, dtype=object))
    frames = []
    for batch in dataset.to_batches(columns=[ROW_ID, *oracle_cols, *label_cols]):
        ids = batch.column(ROW_ID).to_numpy(zero_copy_only=False)
        frames.append(batch.filter(pa.array(wanted.get_indexer(ids) >= 0)).to_pandas())
    found = pd.concat(frames) if frames else pd.DataFrame(columns=[ROW_ID, *oracle_cols, *label_cols])
    aligned = found.drop_duplicates(ROW_ID).set_index(ROW_ID).reindex(pd.Index(row_ids))
    missing = int(aligned["e_log1p"].isna().sum())
    if labels and (missing or "iap_revenue_d7" not in label_cols):
        raise ValueError(f"{missing} of {len(aligned)} row_ids have no oracle label in {folder}")
    if missing:
        log.warning("oracle misses %d of %d rows; not reported", missing, len(aligned))
        return None
    return aligned.reset_index()


def oracle_prediction(oracle: pd.DataFrame, objective: str) -> np.ndarray:
    """The oracle's prediction for the objective: expm1(E[log1p y|x]) for rmsle, E[y|x] for revenue."""
    if objective == "revenue":
        return oracle["e_revenue"].to_numpy(dtype=float)
    return np.expm1(oracle["e_log1p"].to_numpy(dtype=float))


def split_figures(labels: pd.DataFrame, pred: np.ndarray, p_buyer, oracle_pred=None) -> dict[str, object]:
    """Calibration, decile and gain figures of one split (name -> Figure)."""
    y = labels["iap_revenue_d7"].to_numpy(dtype=float)
    figs = {"deciles.png": plots.decile_plot(metrics.decile_table(y, pred))}
    curves = {"model": pred}
    if oracle_pred is not None:
        curves["oracle"] = oracle_pred
    figs["gain.png"] = plots.gain_plot(y, curves)
    if p_buyer is not None and "buyer_d7" in labels:
        figs["calibration.png"] = plots.calibration_plot(labels["buyer_d7"].to_numpy(dtype=float), p_buyer)
    return figs


def format_table(
    rows: dict[str, dict[str, float]], keys=("rmsle", "rmse", "mae", "r2", "gini", "total_ratio", "buyer_auc")
) -> str:
    """A plain-text table: one line per named metric set."""
    head = f"{'':<18}" + "".join(f"{k:>12}" for k in keys)
    lines = [head]
    for name, m in rows.items():
        lines.append(f"{name:<18}" + "".join(f"{m.get(k, float('nan')):>12.4f}" for k in keys))
    return "\n".join(lines)


def distribution_spec(columns) -> tuple[dict[str, float], dict[str, float]]:
    """({quantile column: level}, {exceedance column: threshold}) among ``columns`` (``predict_parts``'
    ``q<level>`` and ``p_over_<t>``, :mod:`ltv.models.distribution`); empty without a distribution."""
    quantiles, thresholds = {}, {}
    for c in columns:
        head, number = (c[:1], c[1:]) if c.startswith("q") else (c[:7], c[7:])
        try:
            value = float(number)
        except ValueError:
            continue
        if head == "q":
            quantiles[c] = value / 100.0
        elif head == "p_over_":
            thresholds[c] = value
    return quantiles, thresholds


def oracle_distribution(
    oracle: pd.DataFrame, quantiles: dict, thresholds: dict
) -> dict[str, np.ndarray] | None:
    """The oracle's exact quantiles and exceedance probabilities under the model's column names (None for
    an oracle written without the distribution's parameters)."""
    if not set(oracle_dist.DISTRIBUTION_COLUMNS) <= set(oracle.columns):
        return None
    cols = {name: oracle_dist.quantile(oracle, a) for name, a in quantiles.items()}
    cols.update({name: oracle_dist.exceedance(oracle, t) for name, t in thresholds.items()})
    return cols


def distribution_metrics(labels: pd.DataFrame, parts: pd.DataFrame, pred, oracle=None) -> dict[str, dict]:
    """For a predictive distribution in ``parts``: pinball loss and coverage per quantile, mean P(y > t)
    over the observed share and its calibration by 10 bins per threshold, sum(pred) / sum(actual) per
    predicted decile; {'model': ..., 'oracle': ...} (the oracle's exact distribution where there is one).
    Empty when ``parts`` holds no distribution."""
    quantiles, thresholds = distribution_spec(parts.columns)
    if not quantiles and not thresholds:
        return {}
    y = labels["iap_revenue_d7"].to_numpy(dtype=float)
    out = {"model": _distribution_metrics(y, parts, quantiles, thresholds, pred)}
    exact = None if oracle is None else oracle_distribution(oracle, quantiles, thresholds)
    if exact is not None:
        out["oracle"] = _distribution_metrics(y, exact, quantiles, thresholds, oracle["e_revenue"].to_numpy())
    return out


def _distribution_metrics(y, cols, quantiles: dict, thresholds: dict, pred) -> dict[str, float]:
    out = dm.distribution_report(y, cols, quantiles.values(), thresholds.values())
    for name, t in thresholds.items():
        predicted, observed, _ = dm.exceedance_bins(y, cols[name], t)
        out[f"{name}_bins_max_abs_err"] = float(np.max(np.abs(predicted - observed)))
    for k, r in enumerate(dm.decile_ratios(y, pred), start=1):
        out[f"decile_{k}_total_ratio"] = float(r)
    return out


def distribution_figures(labels: pd.DataFrame, parts: pd.DataFrame, oracle=None) -> dict[str, object]:
    """PIT histogram of the spenders' outcomes (``parts['pit']``) and the reliability of every P(y > t),
    the oracle's beside the model's where there is one."""
    quantiles, thresholds = distribution_spec(parts.columns)
    if not thresholds:
        return {}
    y = labels["iap_revenue_d7"].to_numpy(dtype=float)
    exact = None if oracle is None else oracle_distribution(oracle, quantiles, thresholds)
    curves = {}
    for name, t in thresholds.items():
        curves[f"model {name}"] = dm.exceedance_bins(y, parts[name], t)[:2]
        if exact is not None:
            curves[f"oracle {name}"] = dm.exceedance_bins(y, exact[name], t)[:2]
    figs = {"exceedance_reliability.png": plots.exceedance_plot(curves)}
    if "pit" in parts:
        figs["pit.png"] = plots.pit_plot(parts["pit"].to_numpy())
    return figs
