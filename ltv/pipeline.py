"""One fitted object that holds every part: raw contract rows in, revenue out.

``LTVPipeline`` = the feature builder (stateless extraction + fitted encodings) and the model chain, with
``fit`` / ``predict`` / ``predict_parts``. Training extracts features per parquet file in parallel (the
loader calls the builder's ``extract``) and passes them to :meth:`LTVPipeline.fit` as ``LabelledRows``;
inference, batch or served, calls :meth:`LTVPipeline.predict` on an Arrow table of raw rows. Both go
through the same two steps, so chunked, one-row and one-shot predictions are identical.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa

from ltv.contract import PARTITION_FORMAT
from ltv.models.blocks import Blocks
from ltv.models.fitting import LabelledRows


def request_time(datetime_values) -> np.ndarray:
    """Unix seconds of hive ``datetime`` values ('YYYY-MM-DD-HH-00'), for time-ordered folds."""
    values = pd.Series(datetime_values, dtype="object").astype(str)
    uniq = values.unique()
    lookup = {
        v: datetime.strptime(v, PARTITION_FORMAT).replace(tzinfo=timezone.utc).timestamp() for v in uniq
    }
    return values.map(lookup).to_numpy(dtype=np.int64)


def prediction_and_buyer(parts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """(prediction, calibrated buyer probability or None) from the chain's ``predict_parts`` output: its
    final column equals ``predict``'s."""
    p_buyer = parts["p_buyer"].to_numpy() if "p_buyer" in parts else None
    return parts["final"].to_numpy(dtype=np.float64), p_buyer


class LTVPipeline:
    """Feature builder + model chain, with fit / predict on raw contract rows.

    Parameters
    ----------
    features : ltv.features.FeatureBuilder
        Unfitted (or fitted) feature builder.
    model : ltv.models.chain.LTVModel
        Unfitted model chain.
    """

    def __init__(self, features, model):
        self.features = features
        self.model = model

    def fit(
        self, train: pa.Table | LabelledRows, valid: pa.Table | LabelledRows, on_round=None
    ) -> LTVPipeline:
        """Fit the feature encodings on train rows only, then the model chain.

        Parameters
        ----------
        train, valid : pa.Table or LabelledRows
            Raw labelled contract rows (an Arrow table: small data, tests), or their extracted features
            (the builder's ``extract`` output, as the training loader produces it per file) with labels
            and request time in ``LabelledRows``, or the model matrix as ``Blocks`` (the training task's
            windows, encoded per file by these already fitted features).
        on_round : the chain's per-round hook (``LTVModel.fit``), e.g. a sweep's pruning.
        """
        if isinstance(
            getattr(train, "X", None), Blocks
        ):  # the model matrix, encoded file by file by the fitted features
            self.features.check_fitted()
            self.model.fit(train, valid, on_round=on_round)
            self.feature_names_ = list(train.X.columns)
            return self
        train, valid = self._extracted(train), self._extracted(valid)
        self.features.fit(train.X)
        train, valid = (
            dataclasses.replace(rows, X=self.features.transform(rows.X)) for rows in (train, valid)
        )
        self.model.fit(train, valid, on_round=on_round)
        self.feature_names_ = list(train.X.columns)
        return self

    def _extracted(self, rows: pa.Table | LabelledRows) -> LabelledRows:
        if isinstance(rows, LabelledRows):
            return rows
        time = request_time(rows.column("datetime").to_pylist()) if "datetime" in rows.column_names else None
        return LabelledRows(self.features.extract(rows), _labels(rows), time)

    # -- inference ------------------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "feature_names_"):
            raise ValueError("LTVPipeline is not fitted: call fit first")

    def _prepare(self, table: pa.Table):
        """The model matrix of raw rows, ``features.transform(features.extract(table))``, and the same as
        the float32 matrix the boosters read, both from one block of numbers (or None: see
        ``FeatureBuilder.transform_table``)."""
        self._check_fitted()
        return self.features.transform_table(table)

    def predict(self, table: pa.Table, threads: int | None = None) -> np.ndarray:
        """Predicted ``iap_revenue_d7`` for raw contract rows (an Arrow table): finite, >= 0. ``threads``: of
        the compiled trees (None: every core; a Dask worker's task passes 1)."""
        return self.model.predict(*self._prepare(table), threads=threads)

    def predict_parts(self, table: pa.Table, threads: int | None = None) -> pd.DataFrame:
        """The chain's intermediate outputs (buyer probability, per-horizon revenue, ...) and the final one."""
        return self.model.predict_parts(*self._prepare(table), threads=threads).reset_index(drop=True)

    def compile_trees(self, directory=None) -> dict:
        """Compile the model chain's boosters to native code (see ``LTVModel.compile_trees``)."""
        self._check_fitted()
        return self.model.compile_trees(directory)


def _labels(table: pa.Table) -> pd.DataFrame:
    from ltv.contract import LABEL_COLUMNS

    cols = [c for c in LABEL_COLUMNS if c in table.column_names]
    if "iap_revenue_d7" not in cols:
        raise ValueError("training table has no label column 'iap_revenue_d7'")
    return table.select(cols).to_pandas().astype("float64")
