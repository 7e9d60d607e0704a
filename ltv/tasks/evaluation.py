"""Metrics and plots of one labelled split: shared by training (valid, holdout) and evaluate.py."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ltv import metrics, plots
from ltv.synthetic.hour import ORACLE_COLUMNS

log = logging.getLogger(__name__)


def predict_with_buyer(pipeline, S) -> tuple[np.ndarray, np.ndarray | None]:
    """(prediction, calibrated buyer probability or None) of extracted features ``S`` (or of the model
    matrix as ``Blocks``, streamed block by block) from one pass over the chain: the prediction is
    ``predict_parts``' final column, which equals ``predict``'s."""
    from ltv.models.blocks import Blocks
    from ltv.pipeline import prediction_and_buyer

    X = S if isinstance(S, Blocks) else pipeline.features.transform(S)
    return prediction_and_buyer(pipeline.model.predict_parts(X))


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
