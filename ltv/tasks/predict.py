"""Batch scoring: the test window through the registered pipeline into a submission CSV, on the cluster.

Each file group is read, featurised and scored on a Dask worker (the model loaded once per worker
process); groups come back in file order and are appended to a temp file, renamed at the end; every
row_id is written once (:mod:`ltv.scoring`, :mod:`ltv.submission`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ltv import cluster
from ltv.scoring import Scoring, resolve_model_uri, scored_window
from ltv.submission import write_submission
from ltv.tasks import data as data_task
from ltv.tracking.store import setup as setup_tracking

log = logging.getLogger(__name__)


def scoring_spec(cfg: DictConfig, split: str, *, labelled: bool = False, parts: bool = False) -> Scoring:
    """What every scoring task of ``split`` needs, from a predict / evaluate config (the model URI
    resolved to a version here: a missing model fails before any task runs)."""
    import mlflow

    return Scoring(
        model_uri=resolve_model_uri(cfg.model_uri),
        stores=(mlflow.get_tracking_uri(), mlflow.get_registry_uri()),
        subset=data_task.SUBSET[split],
        window=data_task.window(cfg.data, split),
        seed=int(cfg.seed),
        batch_rows=int(cfg.data.batch_rows),
        labelled=labelled,
        parts=parts,
        compile_trees=bool(cfg.get("compile_trees", True)),
        keep_memory=bool(cfg.get("keep_memory", False)),
    )


def predict(cfg: DictConfig) -> Path:
    """Write the submission for ``cfg.split`` of ``cfg.data`` with the pipeline at ``cfg.model_uri``."""
    setup_tracking(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_root)
    root = data_task.ensure_data(cfg.data)
    spec = scoring_spec(cfg, cfg.split, parts=bool(cfg.get("parts", False)))
    with cluster.connect(cfg.get("cluster")) as engine, cluster.stage(f"score {cfg.split}"):
        counts = write_submission(scored_window(engine, root, spec), cfg.output)
    out = Path(cfg.output)
    print(f"submission: {out.resolve()} ({counts['rows']} rows, {counts['rows_per_s']:.0f} rows/s)")
    return out
