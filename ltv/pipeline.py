"""One fitted object that holds every part: raw contract rows in, revenue out.

``LTVPipeline`` = the feature builder (stateless extraction + fitted encodings) and the model chain.
Training extracts features per parquet file in parallel (the loader calls :meth:`extract`), then calls
:meth:`fit_extracted`; inference, batch or served, calls :meth:`predict` on an Arrow table of raw rows.
Both go through the same two functions, so chunked, one-row and one-shot predictions are identical.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa

from ltv.contract import PARTITION_FORMAT


def request_time(datetime_values) -> np.ndarray:
    """Unix seconds of hive ``datetime`` values ('YYYY-MM-DD-HH-00'), for time-ordered folds."""
    values = pd.Series(datetime_values, dtype="object").astype(str)
    uniq = values.unique()
    lookup = {
        v: datetime.strptime(v, PARTITION_FORMAT).replace(tzinfo=timezone.utc).timestamp() for v in uniq
    }
    return values.map(lookup).to_numpy(dtype=np.int64)


def finite_revenue(pred) -> np.ndarray:
    """The chain's final column as a prediction: float64, NaN / inf -> 0, clipped at 0."""
    pred = np.asarray(pred, dtype=np.float64)
    return np.clip(np.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)


def prediction_and_buyer(parts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """(prediction, calibrated buyer probability or None) from the chain's ``predict_parts`` output:
    its final column, made finite and >= 0, equals ``predict``'s."""
    p_buyer = parts["p_buyer"].to_numpy() if "p_buyer" in parts else None
    return finite_revenue(parts["final"].to_numpy()), p_buyer


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

    # -- training -------------------------------------------------------------------------------------
    def extract(self, table: pa.Table) -> pd.DataFrame:
        """Stateless features of raw rows (safe per file, per chunk, in parallel)."""
        return self.features.extract(table)

    def fit_extracted(self, S, labels, S_valid, labels_valid, time=None, time_valid=None) -> LTVPipeline:
        """Fit the feature encodings on train rows only, then the model chain.

        Parameters
        ----------
        S, S_valid : DataFrame
            :meth:`extract` output of the train and valid windows; ``S`` may be a Dask DataFrame (with
            ``labels`` one of the same partitions): the model's boosters then train on the cluster
            (``ltv.models.distributed``).
        labels, labels_valid : DataFrame
            Contract label columns aligned with ``S`` / ``S_valid``.
        time, time_valid : array of int, optional
            Request time (unix seconds) per row, for time-ordered folds.
        """
        from dask import is_dask_collection

        self.features.fit(S)
        if is_dask_collection(S):  # a train split on a cluster: encoded where its partitions are
            X = S.map_partitions(self.features.transform, meta=self.features.transform(S._meta)).persist()
        else:
            X = self.features.transform(S)
        X_valid = self.features.transform(S_valid)
        self.model.fit(X, labels, X_valid, labels_valid, time=time, time_valid=time_valid)
        self.feature_names_ = list(X.columns)
        return self

    def fit(self, table: pa.Table, table_valid: pa.Table) -> LTVPipeline:
        """Fit on raw labelled Arrow tables (convenience for small data; training uses the loader)."""
        labels = _labels(table)
        labels_valid = _labels(table_valid)
        time = (
            request_time(table.column("datetime").to_pylist()) if "datetime" in table.column_names else None
        )
        time_valid = (
            request_time(table_valid.column("datetime").to_pylist())
            if "datetime" in table_valid.column_names
            else None
        )
        return self.fit_extracted(
            self.extract(table), labels, self.extract(table_valid), labels_valid, time, time_valid
        )

    # -- inference ------------------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "feature_names_"):
            raise ValueError("LTVPipeline is not fitted: call fit / fit_extracted first")

    def transform_extracted(self, S: pd.DataFrame) -> pd.DataFrame:
        self._check_fitted()
        return self.features.transform(S)

    def predict_extracted(self, S: pd.DataFrame) -> np.ndarray:
        """Predicted ``iap_revenue_d7`` (finite, >= 0) from :meth:`extract` output."""
        return self.predict_prepared(self.transform_extracted(S))

    def predict(self, table: pa.Table) -> np.ndarray:
        """Predicted ``iap_revenue_d7`` for raw contract rows (an Arrow table)."""
        return self.predict_extracted(self.extract(table))

    def prepare(self, table: pa.Table) -> pd.DataFrame:
        """The model matrix of raw rows: ``predict(t) == predict_prepared(prepare(t))``. Batch scoring
        runs this step in a prefetch thread, overlapping it with the model on the previous batch."""
        return self.transform_extracted(self.extract(table))

    def predict_prepared(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted ``iap_revenue_d7`` from :meth:`prepare` output (finite, >= 0)."""
        return finite_revenue(self.model.predict(X))

    def compile_trees(self, directory=None) -> dict:
        """Compile the model chain's boosters to native code (see ``LTVModel.compile_trees``)."""
        self._check_fitted()
        return self.model.compile_trees(directory)

    def predict_parts(self, table: pa.Table) -> pd.DataFrame:
        """The chain's intermediate outputs (buyer probability, per-horizon revenue, ...) and the final one."""
        parts = self.model.predict_parts(self.transform_extracted(self.extract(table)))
        return parts.reset_index(drop=True)


def _labels(table: pa.Table) -> pd.DataFrame:
    from ltv.contract import LABEL_COLUMNS

    cols = [c for c in LABEL_COLUMNS if c in table.column_names]
    if "iap_revenue_d7" not in cols:
        raise ValueError("training table has no label column 'iap_revenue_d7'")
    return table.select(cols).to_pandas().astype("float64")
