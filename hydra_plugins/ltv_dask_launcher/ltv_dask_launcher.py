"""The ``ltv_dask`` launcher: each job of a multirun is a task on the ``cluster`` of the run's config.

Hydra's basic launcher runs a batch of jobs one after another in the calling process. This one runs them
on ``dask.distributed``, where the rest of ltv already runs (``ltv.cluster``): ``cluster=local`` starts a
LocalCluster of one-thread workers (one job per worker process at a time, so a sweep's batch of
``hydra.sweeper.n_jobs`` trials runs side by side), ``cluster=remote`` sends them to a running scheduler,
``cluster=sync`` runs them in order in this process (the basic launcher's behaviour). The cluster is
started on the first batch and kept until the sweep ends, so a worker keeps its loaded frames between
trials (``ltv.tasks.frames_cache``). A job runs in its worker with ``cluster.kind=sync`` (a worker starts no
cluster of its own) and with the worker's threads for its fits.
"""

# no `from __future__ import annotations`: Hydra executes this module outside sys.modules while scanning
# for plugins, and dataclasses cannot resolve string annotations then

import atexit
import contextlib
import logging
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# what a job needs from the launching process's environment (the sweep's MLflow parent run, the store)
_PASSED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "LTV_MLFLOW_PARENT_RUN_ID")
_ONE_JOB = threading.Lock()  # one job at a time per worker process (a job sets process-wide env vars)


@dataclass
class LtvDaskLauncherConf:
    _target_: str = "hydra_plugins.ltv_dask_launcher.ltv_dask_launcher.LtvDaskLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="ltv_dask", node=LtvDaskLauncherConf)


def _execute(idx, overrides, hydra_context, config, task_function, singleton_state, env) -> JobReturn:
    """One job in a worker process: Hydra's globals restored, then ``run_job`` as the basic launcher does."""
    from distributed import get_worker

    from ltv.models import fitting

    with _ONE_JOB:
        setup_globals()
        Singleton.set_state(singleton_state)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update({k: v for k, v in env.items() if v is not None})
        token = fitting.set_fit_threads(get_worker().state.nthreads)
        try:
            return _run(idx, overrides, hydra_context, config, task_function, in_worker=True)
        finally:
            fitting.reset_fit_threads(token)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _run(idx, overrides, hydra_context, config, task_function, in_worker: bool) -> JobReturn:
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx
        sweep_config.hydra.job.num = idx
        if in_worker and OmegaConf.select(sweep_config, "cluster") is not None:
            sweep_config.cluster = {"kind": "sync"}
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


class LtvDaskLauncher(Launcher):
    """Launch a batch of jobs as Dask tasks (see the module doc); results come back in batch order."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._engine = None
        self._stack: contextlib.ExitStack | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _connect(self):
        """The engine, started with the first job: Hydra's globals and logging are set up once, before
        ``cluster.connect`` (which quiets distributed's INFO lines, so nothing resets that after it)."""
        if self._engine is None:
            from ltv import cluster

            setup_globals()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

            opts: dict[str, Any] = dict(
                OmegaConf.to_container(self.config.get("cluster") or {}, resolve=True)
            )
            if opts.get("kind", "local") == "local":
                opts["threads_per_worker"] = 1  # a trial per worker process, each fit on its core
            self._stack = contextlib.ExitStack()
            self._engine = self._stack.enter_context(cluster.connect(opts))
            atexit.register(self.close)
            log.info("ltv_dask: %s engine, %d worker(s)", self._engine.kind, self._engine.n_workers)
        return self._engine

    def slots(self) -> int:
        """Jobs that can run at once: one per worker (1 for ``cluster=sync``)."""
        return self._connect().n_workers

    def close(self) -> None:
        """Close the cluster this launcher started (the sweeper calls it when the sweep ends)."""
        stack, self._stack, self._engine = self._stack, None, None
        if stack is not None:
            stack.close()

    def submit(self, overrides, idx: int):
        """Start job ``idx``; a future of its ``JobReturn`` (already done for ``cluster=sync``)."""
        engine = self._connect()
        log.info("ltv_dask: job #%d : %s", idx, " ".join(filter_overrides(overrides)))
        if engine.client is None:  # sync: now, in this process
            done: Future = Future()
            done.set_result(_run(idx, list(overrides), self.hydra_context, self.config, self.task_function,
                                 in_worker=False))  # fmt: skip
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            return done
        env = {k: os.environ.get(k) for k in _PASSED_ENV}
        return engine.client.submit(_execute, idx, list(overrides), self.hydra_context, self.config,
                                    self.task_function, Singleton.get_state(), env, pure=False)  # fmt: skip

    def first_done(self, futures: list):
        """The first of ``futures`` (from :meth:`submit`) that has finished, waiting for one if none has."""
        done = [f for f in futures if f.done()]
        if not done:
            from distributed import wait

            done = list(wait(futures, return_when="FIRST_COMPLETED").done)
        return min(done, key=futures.index)

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        """Hydra's batch interface (a plain ``-m`` multirun): every job submitted at once, results in order."""
        futures = [self.submit(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        return [f.result() for f in futures]
