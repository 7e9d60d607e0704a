"""What a finished sweep leaves behind: ``optimization_results.yaml`` and two plots, also on the MLflow parent."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf

from ltv.io import atomic_write
from ltv.tracking.sweep import param_key

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


def results(study: optuna.Study, n_failed_now: int) -> dict[str, Any]:
    """Summary of the whole study (every invocation so far), in the official plugin's layout plus extras."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    out: dict[str, Any] = {
        "name": study.study_name,
        "best_params": None,
        "best_value": None,
        "direction": study.direction.name.lower(),
        "n_trials": len(trials),
        "n_complete": len(complete),
        "n_failed": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        "n_failed_this_run": n_failed_now,
    }
    if complete:
        best = study.best_trial
        out.update(
            best_params=dict(best.params),
            best_value=float(best.value),
            best_trial=best.number,
            best_mlflow_run_id=best.user_attrs.get("mlflow_run_id"),
        )
    return out


def write_results(summary: dict[str, Any], sweep_dir: Path) -> Path:
    path = sweep_dir / RESULTS_FILE
    with atomic_write(path) as tmp:
        OmegaConf.save(OmegaConf.create(summary), tmp)
    return path


def save_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optimisation history and parameter importances as PNGs; a plot that cannot be drawn is skipped.

    Importances need at least two completed trials whose parameters vary; with fewer Optuna raises,
    which here is a logged warning, not a failed sweep.
    """
    import matplotlib

    matplotlib.use("Agg")  # sweeps run headless; no-op when Agg is already in use
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    paths = []
    for name, plot in (
        ("optimization_history", ovm.plot_optimization_history),
        ("param_importances", ovm.plot_param_importances),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna flags its matplotlib plots as experimental
                axes = plot(study)
            fig = getattr(axes, "figure", None) or axes.ravel()[0].figure
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(fig)
            paths.append(path)
        except Exception as exc:  # noqa: BLE001 - a missing plot must not fail a finished sweep
            log.warning("ltv_optuna: skipped %s plot: %s", name, exc)
    return paths


def log_to_parent(run_id: str, summary: dict[str, Any], files: list[Path]) -> None:
    """Best value/params/child run id and the files, on the MLflow parent run."""
    import mlflow

    client = mlflow.MlflowClient()
    for key in ("n_trials", "n_complete", "n_failed"):
        client.log_metric(run_id, key, summary[key])
    if summary["best_value"] is not None:
        client.log_metric(run_id, "best_value", summary["best_value"])
        for name, value in summary["best_params"].items():
            client.log_param(run_id, param_key(f"best.{name}"), value)
        client.set_tag(run_id, "best_trial_number", str(summary["best_trial"]))
        if summary["best_mlflow_run_id"]:
            client.set_tag(run_id, "best_child_run_id", summary["best_mlflow_run_id"])
    for path in files:
        client.log_artifact(run_id, str(path))
