"""Where MLflow keeps runs: one sqlite store and one artifact folder, set explicitly everywhere.

MLflow 3 refuses a plain ``file:./mlruns`` store unless an opt-in variable is set, and a stray
``mlruns/*/meta.yaml`` flips its default back to that store; so every entry point calls :func:`setup`
with an absolute sqlite URI and every experiment gets an absolute ``artifact_location``.
"""

from __future__ import annotations

import os
from pathlib import Path

PARENT_RUN_ENV = "LTV_MLFLOW_PARENT_RUN_ID"  # set by sweeps/multirun; train jobs nest under it
# MLflow 3's UI opens an experiment by its kind: without this tag it may infer "GenAI" and land on the
# Overview / Traces page; "custom_model_development" puts runs, metrics and charts first (the values are
# the UI's ExperimentKind enum; mlflow.experimentKind is the tag its experiment page reads).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def sqlite_uri(mlruns_dir: str | os.PathLike) -> str:
    """``sqlite:///<abs>/mlflow.db`` for an mlruns folder (created if missing)."""
    d = Path(mlruns_dir).expanduser().resolve()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}"


def setup(tracking_uri: str, experiment: str, artifact_root: str | os.PathLike) -> str:
    """Point MLflow at ``tracking_uri`` and make sure ``experiment`` exists with an absolute artifact root,
    tagged as a model-training experiment (``EXPERIMENT_KIND_TAG``; an existing one lacking it gets it).

    Parameters
    ----------
    tracking_uri : str
        Usually ``sqlite:///<abs path>/mlruns/mlflow.db``.
    experiment : str
        Experiment name; created when missing.
    artifact_root : path
        Folder under which the experiment's artifacts live (``<artifact_root>/<experiment>``).

    Returns
    -------
    str
        The experiment id.
    """
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = Path(artifact_root).expanduser().resolve() / experiment
        exp_id = client.create_experiment(
            experiment, artifact_location=location.as_uri(), tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    else:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        exp_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in exp.tags:  # created before the tag, or by another tool: keep a set kind
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def runs_url(tracking_uri: str, experiment: str, host: str, port: int) -> str:
    """The MLflow UI address that opens ``experiment`` on its runs table (MLflow 3.17 opens a fresh
    browser on the GenAI overview whatever the experiment's kind; ``workflowType=machine_learning`` does
    not). The experiment is created, as :func:`setup` does, when the store has none of that name yet."""
    root = (
        Path(tracking_uri[len("sqlite:///") :]).parent if tracking_uri.startswith("sqlite:///") else "mlruns"
    )
    exp_id = setup(tracking_uri, experiment, root)
    return f"http://{host}:{port}/#/experiments/{exp_id}?workflowType=machine_learning"


def main(argv=None) -> None:
    """``python -m ltv.tracking.store URI HOST PORT``: print :func:`runs_url` of conf/tracking's experiment."""
    import sys

    from omegaconf import OmegaConf

    from ltv.config import CONFIG_DIR

    uri, host, port = (argv if argv is not None else sys.argv[1:])[:3]
    experiment = OmegaConf.load(Path(CONFIG_DIR) / "tracking" / "local.yaml").experiment
    print(f"ltv runs: {runs_url(uri, experiment, host, int(port))}")


if __name__ == "__main__":
    main()
