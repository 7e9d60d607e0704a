"""The registered model's code (MLflow "models from code"): raw contract rows in, iap_revenue_d7 out.

MLflow copies this file into the logged model and executes it at load time; the ``ltv`` package travels as
``code_paths``, so the model loads where ltv is not installed. The fitted pipeline is the joblib artifact
``pipeline``. Input rows are validated and typed by :func:`ltv.serving.coerce.frame_to_table`; a request
that breaks the contract raises an ``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which the scoring
server answers with HTTP 400 and the message (it names the column, the row and the expectation).
"""

from __future__ import annotations

import threading

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from ltv.models.chain import finite_revenue
from ltv.serving.batching import SharedPredicts
from ltv.serving.coerce import InputError, frame_to_table
from ltv.serving.signature import OUTPUT_COLUMN, PARTS_PARAM


def _as_frame(model_input) -> pd.DataFrame:
    """A DataFrame from what pyfunc may hand over without an input schema (frame, records, columns)."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, list) and all(isinstance(r, dict) for r in model_input):
        return pd.DataFrame(model_input)
    if isinstance(model_input, dict):
        return pd.DataFrame(model_input)
    raise InputError(
        f"expected contract rows as a DataFrame, a list of records or a dict of columns, "
        f"got {type(model_input).__name__}",
        None,
        "a DataFrame of contract rows",
    )


def _checked(pred, n: int) -> np.ndarray:
    """The pipeline's predictions, one per row (or an internal, 5xx, error), as the contract wants them."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    if pred.shape[0] != n:
        raise MlflowException(f"pipeline returned {pred.shape[0]} predictions for {n} rows", INTERNAL_ERROR)
    return finite_revenue(pred)


_MAKE_SHARED = threading.Lock()


class LTVPyfuncModel(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper of the fitted pipeline (``predict(pa.Table)`` / ``predict_parts(pa.Table)``)."""

    pipeline = None
    _shared: SharedPredicts | None = None

    def load_context(self, context) -> None:
        import joblib

        self.pipeline = joblib.load(context.artifacts["pipeline"])
        self._shared = None
        # native tree code (ltv.models.native_trees): same predictions up to float64 summation order, ~5x
        # faster trees; compiled once per model and CPU, then loaded from the disk cache
        if (getattr(context, "model_config", None) or {}).get("compile_trees", True):
            from ltv.models import native_trees

            if native_trees.enabled() and hasattr(self.pipeline, "compile_trees"):
                self.pipeline.compile_trees()

    def _shared_predicts(self) -> SharedPredicts:
        # concurrent requests of this process share predicts (ltv/serving/batching.py); made on first
        # use, so a model built without load_context (tests) gets one too
        with _MAKE_SHARED:
            if self._shared is None or self._shared.owner is not self.pipeline:
                self._shared = SharedPredicts(self.pipeline.predict, owner=self.pipeline)
            return self._shared

    # model_input is hinted pd.DataFrame, one of the hints MLflow derives no signature from (nor validates
    # against): a list type hint would become the signature and its scoring server would then accept only
    # {"inputs": ...} bodies, not dataframe_records / dataframe_split; no hint at all makes every load of
    # this file print MLflow's "Add type hints to the `predict` method" warning. The server hands over a
    # DataFrame; a direct call may still pass records or a dict of columns (_as_frame).
    def predict(self, context, model_input: pd.DataFrame, params=None):
        """Predicted ``iap_revenue_d7`` per input row (finite, >= 0), in input order.

        Parameters
        ----------
        model_input : pandas.DataFrame (or records / dict of columns)
            Raw contract rows; see :func:`ltv.serving.coerce.frame_to_table` for what is accepted.
        params : dict, optional
            ``{"parts": True}`` adds the pipeline's ``predict_parts`` columns after ``iap_revenue_d7``.
        """
        try:
            table = frame_to_table(_as_frame(model_input))
        except InputError as e:
            raise MlflowException(str(e), INVALID_PARAMETER_VALUE) from e
        shared = self._shared_predicts()
        if not (params or {}).get(PARTS_PARAM):
            return pd.DataFrame({OUTPUT_COLUMN: _checked(shared(table), table.num_rows)})
        with shared.exclusive:  # a parts request is not shared: its columns are its own
            out = pd.DataFrame({OUTPUT_COLUMN: _checked(self.pipeline.predict(table), table.num_rows)})
            parts = pd.DataFrame(self.pipeline.predict_parts(table)).reset_index(drop=True)
        out = pd.concat([out, parts.drop(columns=[OUTPUT_COLUMN], errors="ignore")], axis=1)
        return out


mlflow.models.set_model(LTVPyfuncModel())
