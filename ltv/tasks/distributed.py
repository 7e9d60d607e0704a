"""``train.distributed``: the check against the cluster, and the splits it loads (train stays on the workers)."""

from __future__ import annotations

from omegaconf import DictConfig

from ltv.contract import LABEL_COLUMNS
from ltv.models.rows import LabelledRows
from ltv.tasks.data import META, load_splits, split_frame


def distributed_training(cfg: DictConfig, engine) -> bool:
    """``train.distributed``, checked against the cluster: a clear error without 2+ workers (the one-process
    fit instead would hold the whole train split in this process, which the option says does not fit)."""
    if not (cfg.get("train") or {}).get("distributed", False):
        return False
    if engine.client is None or engine.n_workers < 2:
        raise ValueError(
            f"train.distributed=true trains the boosters with lightgbm.dask on 2+ workers, but cluster={engine.kind} "
            f"has {engine.n_workers} worker(s): use cluster=local with cluster.n_workers=2 or more (or "
            "cluster=remote), or set train.distributed=false"
        )
    return True


def load_cluster_splits(cfg: DictConfig, extract, engine):
    """:func:`load_splits` with the valid and holdout windows computed here (post-processors, metrics) and
    the train split left on the cluster as (features, labels, None, None) Dask frames."""
    root, loaded, reports = load_splits(cfg, extract)
    out = {}
    for name, frame in loaded.items():
        if name != "train":
            engine.check_gather(frame, what=f"the {name} window")  # a clear error, not a restart loop
            S, labels, time, row_ids = split_frame(frame.compute())
            out[name] = (LabelledRows(S, labels, time), row_ids)
    train = loaded["train"]
    labels = [c for c in LABEL_COLUMNS if c in train.columns]
    out["train"] = (
        LabelledRows(train.drop(columns=[c for c in META if c in train.columns]), train[labels]),
        None,
    )
    return root, out, reports
