"""What training logs about the fitted chain (parameters it learned, fit times, feature importance)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from ltv.tracking import logging as tlog


def log_fitted(pipeline, fit_seconds: float) -> None:
    """The fitted chain's numbers: fit seconds (per stage too), feature names, fitted parameters (gate,
    calibration, rounds) as JSON files and as ``fitted.*`` metrics."""
    mlflow.log_metric("time.fit_s", fit_seconds)
    mlflow.log_metrics({f"time.fit.{k}_s": v for k, v in getattr(pipeline.model, "fit_times_", {}).items()})
    tlog.log_json(pipeline.feature_names_, "features/feature_names.json")
    fitted = getattr(pipeline.model, "fitted_params_", {}) or {}
    gate = fitted.get("gate", fitted)
    tlog.log_json(fitted.get("buyer_threshold", gate), "buyer_threshold.json")
    tlog.log_json(gate, "buyer_gating.json")
    tlog.log_json(fitted, "fitted_params.json")
    flat = {f"fitted.{k}": float(v) for k, v in _flat_numbers(fitted).items()}
    if flat:
        mlflow.log_metrics(flat)


def _flat_numbers(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_numbers(v, name + "."))
        elif (
            isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, bool)
            and np.isfinite(v)
        ):
            out[name] = v
    return out


def log_importance(pipeline) -> None:
    """The buyer classifier's feature importance: a plot and a CSV."""
    imp = getattr(pipeline.model, "feature_importance_", None)
    if imp is None:
        clf = getattr(pipeline.model, "classifier_", None) or getattr(pipeline.model, "classifier", None)
        imp = getattr(clf, "feature_importance_", None)
    if imp is None:
        return
    imp = imp if isinstance(imp, pd.Series) else pd.Series(imp)
    from ltv import plots

    tlog.log_figure(plots.importance_plot(imp), "plots/feature_importance.png")
    tlog.log_frame(imp.rename("importance").rename_axis("feature").reset_index(), "features/importance.csv")
