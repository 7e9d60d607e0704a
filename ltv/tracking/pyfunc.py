"""Log the fitted pipeline as an MLflow pyfunc, register it, and move the registry aliases.

The logged model is the whole chain as one artifact: the models-from-code file
``ltv/tracking/pyfunc_model.py``, the joblib-pickled pipeline as artifact ``pipeline``, the ``ltv`` package as
``code_paths`` (so it loads where ltv is not installed), explicit ``pip_requirements`` (inferring them costs
seconds per log) and the hand-written signature of :mod:`ltv.serving.signature`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from ltv.models import native_trees
from ltv.serving import signature as sig

log = logging.getLogger(__name__)

MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the ltv package
REGISTERED_MODEL = "ltv-pipeline"
CHAMPION = "champion"
CANDIDATE = "candidate"
# what unpickling and running the pipeline imports; xgboost ships as xgboost-cpu here (same module)
_REQUIREMENTS = (
    "mlflow",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "lightgbm",
    ("xgboost-cpu", "xgboost"),
    "joblib",
    "lleaves",
    "llvmlite",
)


def pip_requirements() -> list[str]:
    """``name==version`` of the inference dependencies as installed now (absent ones skipped)."""
    reqs = []
    for entry in _REQUIREMENTS:
        for name in (entry,) if isinstance(entry, str) else entry:
            try:
                reqs.append(f"{name}=={metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return reqs


OBJECTIVE_KEY = "ltv_objective"  # MLmodel metadata: what the model predicts (evaluate.py reads it)

# Package paths that loading and scoring the model never import, so the model does not ship them. What it
# does import: pyfunc_model.py -> ltv.serving (coercion, signature), ltv.models.chain and ltv.models.native_trees; the pickled
# pipeline -> ltv.pipeline, ltv.features, ltv.models, ltv.sampling, ltv.metrics, ltv.contract, ltv.io.
# tests/test_pyfunc.py checks that every ltv import in the shipped files resolves inside the copy.
_NOT_SHIPPED = (
    "synthetic",  # the data generator
    "data",  # parquet loading for training and batch scoring (a served request arrives as rows)
    "tasks",  # train / predict / evaluate wiring
    "cluster.py",  # the Dask engine, batch scoring and the submission writer run beside a model, not in it
    "scoring.py",
    "submission.py",
    "config.py",
    "distribution_metrics.py",  # evaluation only
    "memory.py",
    "plots.py",
    "serving/server.py",  # starts `mlflow models serve`
    "tracking/datasets.py",
    "tracking/fitted.py",
    "tracking/logging.py",
    "tracking/names.py",
    "tracking/pyfunc.py",
    "tracking/store.py",
    "tracking/sweep.py",
)


def _copy_package(dest: Path) -> Path:
    """A copy of the ltv package to ship as code_paths: without caches and without ``_NOT_SHIPPED``."""
    target = dest / "ltv"
    skipped = {PACKAGE_DIR / p for p in _NOT_SHIPPED}

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {
            n
            for n in names
            if Path(folder, n) in skipped or n == "__pycache__" or n.endswith((".pyc", ".egg-info"))
        }

    shutil.copytree(PACKAGE_DIR, target, ignore=ignore)
    return target


def set_aliases(name: str, version: str | int, aliases=(CANDIDATE,), set_champion_if_missing: bool = True):
    """Point ``aliases`` at ``version`` of registered model ``name``; ``champion`` too when it has none."""
    client = mlflow.MlflowClient()
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(version))
    if set_champion_if_missing and CHAMPION not in aliases:
        try:
            client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            client.set_registered_model_alias(name, CHAMPION, str(version))
            log.info("no %s@%s yet: version %s is champion", name, CHAMPION, version)


def log_pipeline(
    pipeline,
    *,
    name: str = "model",
    registered_model_name: str | None = REGISTERED_MODEL,
    input_example=None,
    aliases=(CANDIDATE,),
    set_champion_if_missing: bool = True,
    named_inputs: bool = False,
) -> mlflow.models.model.ModelInfo:
    """Log ``pipeline`` as a pyfunc in the active run, register it and set the aliases.

    Parameters
    ----------
    pipeline : object
        Picklable, with ``predict(pa.Table) -> ndarray`` (and ``predict_parts`` for ``params={"parts": True}``).
    name : str
        Name of the logged model inside the run.
    registered_model_name : str or None
        Registry name (``ltv-pipeline``); None logs without registering (and sets no alias).
    input_example : pandas.DataFrame, optional
        Raw contract rows saved with the model; default :func:`ltv.serving.signature.input_example`.
    aliases : sequence of str
        Aliases set on the new version (``candidate``).
    set_champion_if_missing : bool
        Also make the new version ``champion`` when the registered model has no champion yet.
    named_inputs : bool
        See :func:`ltv.serving.signature.model_signature`.

    Returns
    -------
    mlflow.models.model.ModelInfo
        ``model_uri``, ``registered_model_version`` etc.
    """
    import joblib

    if mlflow.active_run() is None:
        raise RuntimeError("log_pipeline needs an active MLflow run (mlflow.start_run())")
    example = sig.input_example(2) if input_example is None else input_example
    # MLflow loads the model once to check the input example: no tree compilation for that load (~30 s for
    # the default chain; a sweep logs a model per trial). predict / evaluate / the server compile at load.
    with tempfile.TemporaryDirectory(prefix="ltv-pyfunc-") as tmp, _env(native_trees.ENV_SWITCH, "0"):
        path = Path(tmp) / "pipeline.joblib"
        joblib.dump(pipeline, path)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(MODEL_FILE),
            artifacts={"pipeline": str(path)},
            code_paths=[str(_copy_package(Path(tmp)))],
            pip_requirements=pip_requirements(),
            signature=sig.model_signature(named_inputs),
            input_example=example,
            registered_model_name=registered_model_name,
            # the default of the load-time switch (load_pipeline(compile_trees=...) overrides it; MLflow
            # only lets a load override keys the logged model_config has)
            model_config={"compile_trees": True},
            # one JSON string: as a YAML tree the 68 columns cost ~50 ms on every MLmodel parse
            metadata={
                "ltv_input_schema": sig.input_schema().to_json(),
                OBJECTIVE_KEY: getattr(getattr(pipeline, "model", None), "objective", None),
            },
        )
    if registered_model_name is not None:
        set_aliases(registered_model_name, info.registered_model_version, aliases, set_champion_if_missing)
        log.info("registered %s version %s", registered_model_name, info.registered_model_version)
    return info


@contextlib.contextmanager
def _env(name: str, value: str):
    """Set environment variable ``name`` for the block, then restore it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def logged_objective(model_uri: str) -> str:
    """The objective (rmsle | revenue) the model at ``model_uri`` was trained for, from its MLmodel file
    (no model load)."""
    objective = (mlflow.models.get_model_info(model_uri).metadata or {}).get(OBJECTIVE_KEY)
    if objective is None:
        raise ValueError(f"model {model_uri} records no objective (metadata {OBJECTIVE_KEY}): log it again")
    return objective


def load_pipeline(model_uri: str, compile_trees: bool = True):
    """The raw fitted pipeline object behind a pyfunc model URI (e.g. ``models:/ltv-pipeline@champion``).

    ``compile_trees``: compile the boosters to native code at load (:mod:`ltv.models.native_trees`; once per
    model and CPU, then from the disk cache). ``LTV_COMPILE_TREES=0`` turns it off everywhere.
    """
    model = mlflow.pyfunc.load_model(model_uri, model_config={"compile_trees": bool(compile_trees)})
    return model.unwrap_python_model().pipeline
