"""One MLflow parent run per Hydra multirun, with every job a nested child run.

How the pieces meet (all in the process that runs Hydra; the basic launcher runs jobs in that process too):

* :class:`MlflowParentRunCallback` (registered under ``hydra.callbacks``) creates the parent in
  ``on_multirun_start`` -- which Hydra calls before it builds the sweeper -- and exports its id in
  ``PARENT_RUN_ENV``; ``on_multirun_end`` ends it FINISHED. Hydra skips ``on_multirun_end`` when the
  sweep raises, so an ``atexit`` hook ends a still-running parent FAILED (KILLED when Ctrl-C or SIGTERM
  stopped the process: :mod:`ltv.interrupt`).
* The ``ltv_optuna`` sweeper calls :func:`parent_run`, which adopts that parent when the variable names
  a running run (so a sweep never gets two parents) and otherwise creates and ends its own.
* Each job wraps its work in :func:`start_job_run`: a run nested under the parent, with the job's
  overrides logged as ``override.<key>`` params; it writes its run id to ``RUN_ID_FILE`` in the job's
  output dir so the sweeper can map an Optuna trial to its MLflow run.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ltv.interrupt import run_status, stopped
from ltv.io import atomic_write
from ltv.tracking.names import multirun_name
from ltv.tracking.names import run_name as overrides_run_name
from ltv.tracking.store import PARENT_RUN_ENV, setup, sqlite_uri

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id.txt"
DEFAULT_EXPERIMENT = "ltv"
_PARAM_KEY_BAD = re.compile(r"[^\w.\-/ :]")


def param_key(name: str) -> str:
    """``name`` with the characters MLflow rejects in param/metric keys (``+ ~ @ ...``) replaced by ``_``."""
    return _PARAM_KEY_BAD.sub("_", name)


def tracking_from_config(cfg: DictConfig | None) -> tuple[str, str, Path]:
    """``(tracking_uri, experiment, artifact_root)`` from ``tracking.*`` of a composed config.

    Missing keys fall back to ``sqlite:///<cwd>/mlruns/mlflow.db``, experiment ``ltv`` and artifacts
    beside the sqlite file; a relative sqlite path or artifact root is resolved against the working
    directory (the original one: ``version_base="1.3"`` does not change it).
    """

    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key, default=None) if cfg is not None else None

    uri = get("tracking.uri") or sqlite_uri(Path.cwd() / "mlruns")
    uri = str(uri)
    db_dir = None
    if uri.startswith("sqlite:///"):
        db_path = Path(uri[len("sqlite:///") :]).expanduser()
        db_path = db_path if db_path.is_absolute() else Path.cwd() / db_path
        uri, db_dir = f"sqlite:///{db_path.resolve()}", db_path.resolve().parent
    root = get("tracking.artifact_root") or db_dir or Path.cwd() / "mlruns"
    return uri, str(get("tracking.experiment") or DEFAULT_EXPERIMENT), Path(root).expanduser().resolve()


def start_parent_run(cfg: DictConfig | None, run_name: str | None = None, tags: dict | None = None) -> str:
    """Create a RUNNING parent run in the configured store and export its id in ``PARENT_RUN_ENV``."""
    import mlflow

    uri, experiment, root = tracking_from_config(cfg)
    exp_id = setup(uri, experiment, root)
    run = mlflow.MlflowClient().create_run(
        exp_id, run_name=run_name, tags={"ltv.sweep_parent": "true", **(tags or {})}
    )
    os.environ[PARENT_RUN_ENV] = run.info.run_id
    log.info("MLflow parent run %s (experiment %s, %s)", run.info.run_id, experiment, uri)
    return run.info.run_id


def running_parent() -> str | None:
    """The run id in ``PARENT_RUN_ENV`` if it names a run that is still RUNNING, else None."""
    run_id = os.environ.get(PARENT_RUN_ENV)
    if not run_id:
        return None
    import mlflow

    try:
        status = mlflow.MlflowClient().get_run(run_id).info.status
    except Exception:  # a stale id from another store: treat as absent
        return None
    return run_id if status == "RUNNING" else None


def end_parent_run(run_id: str, status: str = "FINISHED") -> None:
    """End ``run_id`` with ``status`` if it is still running, and clear ``PARENT_RUN_ENV`` if it names it."""
    import mlflow

    client = mlflow.MlflowClient()
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status=status)
    if os.environ.get(PARENT_RUN_ENV) == run_id:
        del os.environ[PARENT_RUN_ENV]


@contextlib.contextmanager
def parent_run(
    cfg: DictConfig | None, run_name: str | None = None, tags: dict | None = None
) -> Iterator[str]:
    """Yield the sweep's parent run id: the callback's running parent if there is one, else a new one.

    A new parent is ended FINISHED on success; any parent (adopted or new) is ended FAILED when the body
    raises (KILLED on Ctrl-C / SIGTERM). An adopted parent is left running on success for its owner (the
    callback) to finish.
    """
    import mlflow

    uri, experiment, root = tracking_from_config(cfg)
    setup(uri, experiment, root)  # the sweeper process logs to the parent through this store
    run_id = running_parent()
    owned = run_id is None
    if owned:
        run_id = start_parent_run(cfg, run_name=run_name, tags=tags)
    else:
        client = mlflow.MlflowClient()
        for key, value in {**(tags or {}), **({"mlflow.runName": run_name} if run_name else {})}.items():
            client.set_tag(run_id, key, value)
    try:
        yield run_id
    except BaseException as exc:
        end_parent_run(run_id, run_status(exc))
        raise
    if owned:
        end_parent_run(run_id, "FINISHED")


def _hydra_job() -> tuple[list[str], Path | None, int | None]:
    """Task overrides, output dir and job number of the current Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], None, None
    hc = HydraConfig.get()
    overrides = list(OmegaConf.select(hc, "overrides.task", default=[]) or [])
    out_dir = OmegaConf.select(hc, "runtime.output_dir", default=None)
    num = OmegaConf.select(hc, "job.num", default=None)
    return overrides, Path(out_dir) if out_dir else None, num


def _parent_experiment(run_id: str | None) -> tuple[str, str] | None:
    """``(run_id, experiment_id)`` of the parent named in the environment, if this store has it."""
    if not run_id:
        return None
    import mlflow

    try:
        return run_id, mlflow.MlflowClient().get_run(run_id).info.experiment_id
    except Exception as exc:  # a leftover variable from another store must not fail the job
        log.warning("ignoring %s=%s: %s", PARENT_RUN_ENV, run_id, exc)
        return None


@contextlib.contextmanager
def start_job_run(
    run_name: str | None = None, tags: dict | None = None, log_overrides: bool = True
) -> Iterator[Any]:
    """Start the MLflow run of one job: nested under ``PARENT_RUN_ENV`` when set, else a plain run.

    Inside Hydra the run is named by :func:`ltv.tracking.names.run_name`: ``run_name`` (a configured
    name, e.g. an experiment's) followed by the task overrides, ``default`` when there are none.
    Call after ``ltv.tracking.store.setup`` (it uses the current tracking URI and experiment; a child
    goes to its parent's experiment so the UI nests it). Inside Hydra it logs the job's task overrides
    as ``override.<key>`` params, tags the job number, and writes the run id to ``RUN_ID_FILE`` in the
    job's output dir. The run ends FINISHED, FAILED if the body raises, KILLED if Ctrl-C or SIGTERM
    (:mod:`ltv.interrupt`) stopped it.

    Yields
    ------
    mlflow.ActiveRun
    """
    import mlflow

    overrides, out_dir, job_num = _hydra_job()
    tags = dict(tags or {})
    if job_num is not None:
        tags.setdefault("hydra_job_num", str(job_num))
    if out_dir is not None:  # inside Hydra (single run or multirun job)
        run_name = overrides_run_name(overrides, base=run_name)
    kwargs: dict[str, Any] = {"run_name": run_name, "tags": tags}
    parent = _parent_experiment(os.environ.get(PARENT_RUN_ENV))
    if mlflow.active_run() is not None:
        kwargs["nested"] = True
    elif parent is not None:
        kwargs.update(parent_run_id=parent[0], experiment_id=parent[1])
    with mlflow.start_run(**kwargs) as run:
        try:
            if out_dir is not None:
                with atomic_write(out_dir / RUN_ID_FILE) as tmp:
                    tmp.write_text(run.info.run_id)
            if log_overrides and overrides:
                mlflow.log_params(
                    {param_key(f"override.{o.split('=', 1)[0]}"): o.split("=", 1)[-1] for o in overrides}
                )
            yield run
        except BaseException as exc:  # MLflow's own exit says FAILED for any exception, a stop included
            mlflow.end_run(run_status(exc))
            raise


def read_job_run_id(output_dir: str | os.PathLike | None) -> str | None:
    """The run id a job wrote with :func:`start_job_run`, or None when it wrote none."""
    if output_dir is None:
        return None
    path = Path(output_dir) / RUN_ID_FILE
    if not path.is_file():
        return None
    return path.read_text().strip() or None


class MlflowParentRunCallback(Callback):
    """Hydra callback: one MLflow parent run per multirun, jobs nested under it via ``PARENT_RUN_ENV``.

    Register in ``conf/config.yaml``::

        hydra:
          callbacks:
            mlflow_parent:
              _target_: ltv.tracking.sweep.MlflowParentRunCallback
    """

    def __init__(self, run_name: str | None = None) -> None:
        self.run_name = run_name
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default=None)
        overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        name = self.run_name or multirun_name(
            overrides, base=OmegaConf.select(config, "tracking.run_name", default=None)
        )
        tags = {"hydra_sweep_dir": str(Path(sweep_dir).resolve())} if sweep_dir else None
        self.run_id = start_parent_run(config, run_name=name, tags=tags)
        atexit.register(self._end_at_exit)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra only gets here when the sweep returned: failed jobs the sweeper tolerated (Optuna's
        # max_failure_rate) do not fail the sweep; a sweep that raised is ended FAILED by the atexit hook.
        self._end_if_running("FINISHED")

    def _end_at_exit(self) -> None:
        self._end_if_running("KILLED" if stopped() else "FAILED")

    def _end_if_running(self, status: str) -> None:
        if self.run_id is None:
            return
        run_id, self.run_id = self.run_id, None
        atexit.unregister(self._end_at_exit)
        end_parent_run(run_id, status)
