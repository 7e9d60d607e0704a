"""Data set-up for the tasks: generate on first use, windows from config, fingerprint for MLflow, the
labelled splits training fits on."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import NamedTuple

import mlflow
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ltv.contract import LABEL_COLUMNS, PARTITION_COLUMN, ROW_ID, TARGET
from ltv.data.loader import Window, load_split
from ltv.pipeline import request_time
from ltv.tracking.datasets import log_split_input

log = logging.getLogger(__name__)

SUBSET = {"train": "train", "valid": "train", "holdout": "train", "test": "test"}


def ensure_data(data_cfg: DictConfig) -> Path:
    """The data root, generated first when the option says so and nothing is there yet.

    A root that exists is used as it is (a real export, or data generated before): only a missing root
    with a ``generate`` block is generated, so pointing ``data.root`` at an export never writes to it.
    """
    root = Path(data_cfg.root).expanduser()
    if root.exists():
        if not (root / "train").is_dir() and not (root / "test").is_dir():
            raise FileNotFoundError(
                f"data.root={root} exists but has neither train/ nor test/ hive folders (see docs/data_contract.md)"
            )
        return root
    if data_cfg.get("generate") is None:
        raise FileNotFoundError(
            f"data.root={root} does not exist (and this data option does not generate data)"
        )
    from ltv.synthetic import generate

    gen = OmegaConf.to_container(data_cfg.generate, resolve=True)
    oracle_root = data_cfg.get("oracle_root")
    log.info("generating synthetic contract data into %s (%s)", root, gen)
    generate(root, oracle_root=oracle_root, **gen)
    return root


def window(data_cfg: DictConfig, split: str) -> Window:
    """The loader window of ``split`` (train / valid / holdout / test) from ``data.splits``."""
    if split not in data_cfg.splits:
        raise ValueError(f"data.splits has no split {split!r}; expected one of {list(data_cfg.splits)}")
    s = data_cfg.splits[split]
    return Window(
        start=None if s.get("start") is None else str(s.start),
        end=None if s.get("end") is None else str(s.end),
        fraction=float(s.get("fraction", 1.0)),
        max_partitions=s.get("max_partitions"),
        name=split,
    )


def fingerprint(paths: list[Path], root: Path) -> str:
    """Short hash of the input files (relative path + size): which data a run saw."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(Path(p).relative_to(root)).encode())
        h.update(str(Path(p).stat().st_size).encode())
    return h.hexdigest()[:16]


META = [ROW_ID, PARTITION_COLUMN, *LABEL_COLUMNS]


def split_frame(frame: pd.DataFrame):
    """(stateless features, labels, request time, row ids) of a loaded split."""
    frame = frame.reset_index(drop=True)
    S = frame.drop(columns=[c for c in META if c in frame.columns])
    labels = frame[[c for c in LABEL_COLUMNS if c in frame.columns]].reset_index(drop=True)
    return S, labels, request_time(frame[PARTITION_COLUMN]), frame[ROW_ID].reset_index(drop=True)


def load_splits(cfg: DictConfig, extract, splits=("train", "valid", "holdout")):
    """(root, {split: dask frame persisted on the cluster}, {split: LoadReport}) of the labelled windows."""
    root = ensure_data(cfg.data)
    out, reports = {}, {}
    for split in splits:
        out[split], reports[split] = load_split(
            root, SUBSET[split], window(cfg.data, split), extract, seed=cfg.seed, labelled=True
        )
    return root, out, reports


class LoadedBlocks(NamedTuple):
    """What :func:`load_blocks` returns; ``close()`` removes the block files."""

    root: Path
    splits: dict
    reports: dict
    builder: object
    store: object

    def close(self) -> None:
        self.store.close()


def load_blocks(cfg: DictConfig, engine) -> LoadedBlocks:
    """(root, {split: (LabelledRows with Blocks X, row ids)}, {split: LoadReport}, fitted FeatureBuilder,
    the BlockStore):
    the feature encodings fitted from the train files, then train, valid and holdout encoded file by file
    into blocks on disk (:mod:`ltv.tasks.blocks`; ``train.block_dir`` chooses the folder), one task per
    file on ``engine``. Nothing here holds a window's features whole."""
    from hydra.utils import instantiate

    from ltv.cluster import stage
    from ltv.models.fitting import BUYER
    from ltv.tasks.blocks import BlockStore, encode, fit_features

    root = ensure_data(cfg.data)
    builder = instantiate(cfg.features)
    train_cfg = cfg.get("train") or {}
    store = BlockStore(train_cfg.get("block_dir"))
    with stage("fit the feature encodings on the train files"):
        reports = {"train": fit_features(engine, builder, root, window(cfg.data, "train"), cfg.seed,
                                         train_cfg.get("progress_every_s"))}  # fmt: skip
    _release(engine)
    labels = list(dict.fromkeys([TARGET, BUYER, *cfg.regressor.horizons]))  # what the chain and metrics read
    splits = {}
    for split in ("train", "valid", "holdout"):
        with stage(f"encode the {split} window into blocks"):
            rows, ids, report = encode(engine, builder, root, window(cfg.data, split), cfg.seed, store, labels,
                                       keep_row_ids=split != "train")  # fmt: skip
        splits[split] = (rows, ids)
        _release(engine)
        if split != "train":  # the train window's files were counted by the fit pass
            reports[split] = report
    return LoadedBlocks(root, splits, reports, builder, store)


def _release(engine) -> None:
    """Freed memory back to the OS on every worker and here, between two windows: what a window's files
    left in the allocators would otherwise stay resident through the fit (:func:`ltv.memory.release_freed_memory`)."""
    from ltv.memory import release_freed_memory

    engine.each_worker(release_freed_memory)
    if engine.client is not None:
        release_freed_memory()


def log_loaded(cfg: DictConfig, root: Path, reports: dict) -> None:
    """The loaded splits in the active run: load reports as metrics, each split as a dataset input, the
    data root and the fingerprint of every file read."""
    for split, report in reports.items():
        mlflow.log_metrics(report.as_metrics(f"data.{split}"))
        log_split_input(split, root, window(cfg.data, split), report, fingerprint(report.files, root))
    mlflow.set_tag("data_root", str(root))
    mlflow.set_tag("data_fingerprint", fingerprint([p for r in reports.values() for p in r.files], root))
