"""The labelled windows as blocks for training: the feature encodings fitted from the train files, then
every window encoded file by file into float32 blocks on disk (:mod:`ltv.models.blocks`).

Two passes over the train files, each one task per file on the engine (:func:`ltv.data.files.map_files`):

1. **fit**: extract each file's features and send back only the columns the encodings are fitted on
   (categorical features, segment keys and features: strings as ``category``), from which the
   ``FeatureBuilder`` learns its vocabularies and segment statistics;
2. **encode**: extract again and encode with the fitted builder into the model matrix
   (``FeatureBuilder.transform_table``: numbers, segment statistics, category codes), written as one
   ``.npy`` block per file; labels, request times and row-id hashes come back.

So no process ever holds a window's features whole: the client keeps labels and times, the workers one
file at a time, and LightGBM builds its binned Datasets from the blocks (``lightgbm.Sequence`` batches).
"""

from __future__ import annotations

import atexit
import functools
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import union_categoricals

from ltv import contract
from ltv.data.files import map_files
from ltv.data.loader import LoadReport, Window
from ltv.io import atomic_write
from ltv.models.blocks import Blocks, Part
from ltv.models.fitting import FitClock, LabelledRows, stage
from ltv.pipeline import request_time

log = logging.getLogger(__name__)


class BlockStore:
    """A folder of block files that lives as long as the splits that read it: removed by :meth:`close`
    (or at exit). ``parent``: where to make it (None: the system's temp folder); on a cluster it must be a
    path every worker and this process share."""

    def __init__(self, parent: str | Path | None = None):
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="ltv-blocks-", dir=parent))
        atexit.register(self.close)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def fit_features(engine, builder, root: Path, window: Window, seed: int, progress_every_s: float | None) -> LoadReport:
    """Fit ``builder``'s encodings on the train window's files, one task per file; returns the load report.
    The fit itself logs a progress line at least every ``progress_every_s`` seconds (None: none)."""
    results, report = map_files(engine, root, "train", window, functools.partial(_fit_part, builder=builder),
                                seed=seed)  # fmt: skip
    values = _concat([frame for frame, _ in results])
    log.info(
        "fitting the feature encodings on %s train rows x %d columns", f"{len(values):,}", values.shape[1]
    )
    with FitClock(progress_every_s), stage("feature_encodings", len(values)):
        builder.fit_from(values, results[0][1])
    log.info("features fitted on %s train rows: %d columns", f"{len(values):,}", len(builder.feature_names_))
    return report


def _fit_part(table: pa.Table, i: int, builder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the fit columns of the file's features, strings as category; the features' empty schema)."""
    S = builder.extract(table.drop_columns([c for c in contract.LABEL_COLUMNS if c in table.column_names]))
    cols = [c for c in builder.fit_columns() if c in S.columns]
    part = S[cols]
    part = part.astype({c: "category" for c in cols if part[c].dtype == object})
    return part, S.iloc[:0]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames of the same columns, one after another; category columns united (codes, not strings)."""
    out = {}
    for c in frames[0].columns:
        cols = [f[c] for f in frames]
        if isinstance(cols[0].dtype, pd.CategoricalDtype):
            out[c] = pd.Categorical(union_categoricals([col.array for col in cols]))
        else:
            out[c] = np.concatenate([col.to_numpy() for col in cols])
    return pd.DataFrame(out)


def encode(engine, builder, root: Path, window: Window, seed: int, store: BlockStore, labels: list[str],
           keep_row_ids: bool = False) -> tuple[LabelledRows, pd.Series | None, LoadReport]:  # fmt: skip
    """The window's rows as (LabelledRows whose X is Blocks of ``builder``'s model matrix on disk in
    ``store`` and whose labels are the ``labels`` columns (float64: only those the fit reads, ~8 bytes a
    row each), row ids when ``keep_row_ids`` (for the oracle), the load report). A row_id seen in an
    earlier file is dropped and counted, as :func:`ltv.data.loader.load_split` does."""
    fn = functools.partial(_encode_part, builder=builder, folder=str(store.path), name=window.name or "split",
                           keep=list(labels))  # fmt: skip
    results, report = map_files(engine, root, "train", window, fn, seed=seed, labelled=True)
    hashes = np.concatenate([r["hashes"] for r in results])
    dup = pd.Series(hashes).duplicated(keep="first").to_numpy()
    if dup.any():
        report.drop("duplicate_row_id", int(dup.sum()))
        report.rows_kept -= int(dup.sum())
    parts, lo = [], 0
    for r in results:
        keep, lo = ~dup[lo : lo + r["n"]], lo + r["n"]
        if keep.any():
            parts.append(Part(r["path"], r["n"], None if keep.all() else np.flatnonzero(keep)))
    categories = [list(builder.encoder_.categories(c)) for c in builder.categorical_features_]
    blocks = Blocks(list(builder.feature_names_), categories, parts)
    labels = pd.concat([r["labels"] for r in results], ignore_index=True)[~dup].reset_index(drop=True)
    time = np.concatenate([r["time"] for r in results])[~dup]
    ids = None
    if keep_row_ids:
        ids = pd.Series(
            pa.chunked_array([r["row_ids"] for r in results]).to_numpy(zero_copy_only=False)[~dup]
        )
    mb = sum(len(p) for p in parts) * len(blocks.columns) * 4 / 1e6
    log.info("%s %s: %s rows encoded in %d blocks (%.0f MB on disk)", window.name, window.describe(),
             f"{len(labels):,}", len(parts), mb)  # fmt: skip
    return LabelledRows(blocks, labels, time), ids, report


def _encode_part(table: pa.Table, i: int, builder, folder: str, name: str, keep: list[str]) -> dict:
    """Encode one file into its block file; return what the client keeps (labels, times, ids)."""
    from ltv.models.lgbm_predict import pandas_matrix

    labels = [c for c in contract.LABEL_COLUMNS if c in table.column_names]
    X, matrix = builder.transform_table(table.drop_columns(labels))
    values = matrix.values if matrix is not None else pandas_matrix(X, list(builder.feature_names_), None)
    path = Path(folder) / f"{name}-{i:05d}.npy"
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(values, dtype=np.float32))
    ids = table.column(contract.ROW_ID)
    return {
        "path": str(path),
        "n": table.num_rows,
        "labels": pd.DataFrame(
            {
                c: pc.cast(table.column(c), pa.float64()).to_numpy(zero_copy_only=False)
                for c in keep
                if c in labels
            }
        ),
        "time": request_time(table.column(contract.PARTITION_COLUMN).to_numpy(zero_copy_only=False)),
        "hashes": pd.util.hash_pandas_object(
            pd.Series(ids.to_numpy(zero_copy_only=False)), index=False
        ).to_numpy(),
        "row_ids": ids.combine_chunks(),
    }
