"""Metrics of the registered pipeline on a labelled window (or of a written submission)."""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from omegaconf import DictConfig

from ltv import cluster
from ltv.contract import LABEL_COLUMNS, ROW_ID, TARGET
from ltv.scoring import scored_window, unique_rows
from ltv.tasks import data as data_task
from ltv.tasks import evaluation
from ltv.tasks.predict import scoring_spec
from ltv.tracking import logging as tlog
from ltv.tracking.pyfunc import logged_objective
from ltv.tracking.store import setup as setup_tracking
from ltv.tracking.sweep import start_job_run

log = logging.getLogger(__name__)


def _oracle_root(cfg: DictConfig) -> str:
    """The generator's oracle folder, which holds the test labels; checked before any scoring."""
    root = cfg.data.get("oracle_root")
    if not root:
        raise ValueError(
            "the test window has no labels; split=test / submission= need data.oracle_root (synthetic data)"
        )
    return root


def _oracle_labels(cfg: DictConfig, row_ids: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test labels + oracle from the generator's oracle folder (synthetic data only)."""
    frame = evaluation.load_oracle(_oracle_root(cfg), "test", row_ids, labels=True)
    return frame[[c for c in LABEL_COLUMNS if c in frame]], frame


def _score_window(cfg: DictConfig, root) -> tuple[pd.Series, np.ndarray, pd.DataFrame]:
    """(row ids, predictions, labels + p_buyer) of ``cfg.split``'s window, scored on the cluster as
    predict.py scores it: memory holds a few numbers per row, not the window's features."""
    spec = scoring_spec(cfg, cfg.split, labelled=cfg.split != "test", parts=True)
    counts: dict[str, float] = {}
    with cluster.connect(cfg.get("cluster")) as engine, cluster.stage(f"score {cfg.split}"):
        items = list(unique_rows(scored_window(engine, root, spec), counts))
    log.info("scored %s: %d rows, %.0f rows/s", cfg.split, counts["rows"], counts["rows_per_s"])
    row_ids = pd.Series(pa.chunked_array([i for i, _, _ in items]).to_pandas(), name=ROW_ID)
    extra = pd.concat([e for _, _, e in items], ignore_index=True)
    return row_ids.reset_index(drop=True), np.concatenate([p for _, p, _ in items]), extra


def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Print (and log to MLflow) RMSLE/RMSE/MAE/R2/Gini/total ratio/AUC of the model on ``cfg.split``."""
    setup_tracking(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_root)
    root = data_task.ensure_data(cfg.data)
    if cfg.get("submission") or cfg.split == "test":
        _oracle_root(cfg)  # fail before scoring a window that has no labels to compare with
    p_buyer = None
    if cfg.get("submission"):
        sub = pd.read_csv(cfg.submission)
        if list(sub.columns) != [ROW_ID, TARGET]:
            raise ValueError(
                f"submission {cfg.submission}: expected columns [{ROW_ID}, {TARGET}], got {list(sub.columns)}"
            )
        row_ids, pred = sub[ROW_ID], sub[TARGET].to_numpy(dtype=float)
        labels, oracle = _oracle_labels(cfg, row_ids)
        name = "submission"
    else:
        row_ids, pred, extra = _score_window(cfg, root)
        if cfg.split == "test":
            labels, oracle = _oracle_labels(cfg, row_ids)
        else:
            labels = extra[[c for c in LABEL_COLUMNS if c in extra]]
            oracle = evaluation.load_oracle(cfg.data.get("oracle_root"), "train", row_ids)
        p_buyer = extra["p_buyer"].to_numpy() if "p_buyer" in extra else None
        name = cfg.split
    results = {name: evaluation.split_metrics(labels, pred, p_buyer)}
    oracle_pred = None
    if oracle is not None:  # the oracle of what the model predicts
        oracle_pred = evaluation.oracle_prediction(oracle, logged_objective(str(cfg.model_uri)))
        results["oracle"] = evaluation.split_metrics(labels, oracle_pred, oracle["p_buyer"].to_numpy())
    results["all_zeros"] = evaluation.split_metrics(labels, np.zeros(len(labels)))
    print(evaluation.format_table(results))
    parts = extra if p_buyer is not None else pd.DataFrame(index=labels.index)
    spread = evaluation.distribution_metrics(
        labels, parts, pred, oracle
    )  # objective=revenue: the distribution
    for who, m in spread.items():
        print(
            f"\npredictive distribution, {who}:\n" + "\n".join(f"  {k:<32}{v:>10.4f}" for k, v in m.items())
        )
    if cfg.get("log_to_mlflow", True):
        with start_job_run(
            run_name=f"evaluate-{name}", tags={"ltv.task": "evaluate", "model_uri": str(cfg.model_uri)}
        ):
            for key, m in results.items():
                mlflow.log_metrics({f"{key}.{k}": v for k, v in m.items()})
            for who, m in spread.items():
                mlflow.log_metrics({f"{name}.distribution.{who}.{k}": v for k, v in m.items()})
            figs = {**evaluation.split_figures(labels, pred, p_buyer, oracle_pred),
                    **evaluation.distribution_figures(labels, parts, oracle)}  # fmt: skip
            for fname, fig in figs.items():
                tlog.log_figure(fig, f"plots/{name}/{fname}")
    return results
