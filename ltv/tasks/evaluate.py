"""Metrics of the registered pipeline on a labelled window (or of a written submission)."""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ltv.contract import LABEL_COLUMNS, ROW_ID, TARGET
from ltv.data.loader import load_split
from ltv.tasks import data as data_task
from ltv.tasks import evaluation
from ltv.tasks.train import split_frame
from ltv.tracking import logging as tlog
from ltv.tracking.store import setup as setup_tracking
from ltv.tracking.sweep import start_job_run

log = logging.getLogger(__name__)


def _oracle_labels(cfg: DictConfig, row_ids: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test labels + oracle from the generator's oracle folder (synthetic data only)."""
    import pyarrow.dataset as ds

    root = cfg.data.get("oracle_root")
    if not root:
        raise ValueError(
            "the test window has no labels; split=test / submission= need data.oracle_root (synthetic data)"
        )
    table = ds.dataset(f"{root}/test", format="parquet", partitioning="hive").to_table()
    frame = table.to_pandas().drop_duplicates(ROW_ID).set_index(ROW_ID).reindex(pd.Index(row_ids))
    if frame[TARGET].isna().any():
        raise ValueError(
            f"{int(frame[TARGET].isna().sum())} row_ids have no oracle test label in {root}/test"
        )
    frame = frame.reset_index()
    return frame[[c for c in LABEL_COLUMNS if c in frame]], frame


def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Print (and log to MLflow) RMSLE/RMSE/MAE/R2/Gini/total ratio/AUC of the model on ``cfg.split``."""
    if cfg.get("keep_memory", True):
        from ltv.memory import keep_freed_memory

        keep_freed_memory()
    setup_tracking(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_root)
    root = data_task.ensure_data(cfg.data)
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
        from ltv.tracking.pyfunc import load_pipeline

        pipeline = load_pipeline(cfg.model_uri, compile_trees=cfg.get("compile_trees", True))
        frame, _ = load_split(
            root,
            data_task.SUBSET[cfg.split],
            data_task.window(cfg.data, cfg.split),
            pipeline.extract,
            seed=cfg.seed,
            labelled=cfg.split != "test",
            scheduler=cfg.data.scheduler,
            num_workers=cfg.data.num_workers,
        )
        if cfg.split == "test":
            S = frame.drop(columns=[c for c in ("row_id", "datetime") if c in frame]).reset_index(drop=True)
            row_ids = frame[ROW_ID].reset_index(drop=True)
            labels, oracle = _oracle_labels(cfg, row_ids)
        else:
            S, labels, _, row_ids = split_frame(frame)
            oracle = evaluation.load_oracle(cfg.data.get("oracle_root"), "train", row_ids)
        pred = pipeline.predict_extracted(S)
        parts = pipeline.model.predict_parts(pipeline.transform_extracted(S))
        p_buyer = parts["p_buyer"].to_numpy() if "p_buyer" in parts else None
        name = cfg.split
    results = {name: evaluation.split_metrics(labels, pred, p_buyer)}
    oracle_pred = None
    if oracle is not None:
        oracle_pred = evaluation.oracle_prediction(oracle, cfg.objective)
        results["oracle"] = evaluation.split_metrics(labels, oracle_pred, oracle["p_buyer"].to_numpy())
    results["all_zeros"] = evaluation.split_metrics(labels, np.zeros(len(labels)))
    print(evaluation.format_table(results))
    if cfg.get("log_to_mlflow", True):
        with start_job_run(
            run_name=f"evaluate-{name}", tags={"ltv.task": "evaluate", "model_uri": str(cfg.model_uri)}
        ):
            for key, m in results.items():
                mlflow.log_metrics({f"{key}.{k}": v for k, v in m.items()})
            for fname, fig in evaluation.split_figures(labels, pred, p_buyer, oracle_pred).items():
                tlog.log_figure(fig, f"plots/{name}/{fname}")
    return results
