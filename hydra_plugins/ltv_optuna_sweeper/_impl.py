"""The ``ltv_optuna`` sweep loop: Optuna ask/tell, ``n_jobs`` trials in flight, one MLflow parent run."""

from __future__ import annotations

import logging
import math
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ltv.tasks.pruning import PRUNER_ATTR, STAGE_ATTR, trial_env
from ltv.tracking.names import trial_name
from ltv.tracking.sweep import param_key, parent_run, read_job_run_id, tracking_from_config

from . import _report
from ._search_space import SearchSpace, parse_search_space
from ._study import (
    DIRECTIONS,
    SweepFailedError,
    build_sampler,
    grid_points,
    objective_value,
    resolve_storage,
    tell,
)

log = logging.getLogger(__name__)


class LtvOptunaSweeperImpl(Sweeper):
    """See ``config.LtvOptunaSweeperConf`` for the parameters."""

    def __init__(
        self,
        sampler: Any,
        direction: str = "minimize",
        study_name: str | None = None,
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int | None = 1,
        max_failure_rate: float = 0.25,
        params: Any = None,
        plots: bool = True,
        pruner: Any = None,
        prune_stage: str = "first_stage.classifier",
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction must be one of {DIRECTIONS}, got {direction!r}")
        if int(n_trials) < 1 or (n_jobs is not None and int(n_jobs) < 1):
            raise ValueError(f"hydra.sweeper.n_trials and n_jobs must be >= 1, got {n_trials} and {n_jobs}")
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise ValueError(f"hydra.sweeper.max_failure_rate must be in [0, 1], got {max_failure_rate}")
        self.sampler = sampler
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = int(n_trials)
        self.n_jobs = None if n_jobs is None else int(n_jobs)  # None: one per launcher slot (worker)
        self.max_failure_rate = float(max_failure_rate)
        self.params = params
        self.plots = plots
        self.pruner = pruner
        self.prune_stage = prune_stage
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _space(self, arguments: list[str]) -> SearchSpace:
        params = [f"{k}={v}" for k, v in (self.params or {}).items()]
        space = parse_search_space(params + list(arguments), config_loader=self.hydra_context.config_loader)
        if not space.distributions:
            raise ValueError(
                "ltv_optuna: nothing to search; set hydra.sweeper.params (e.g. hparams_search=...) "
                "or pass a sweep override such as x='interval(0, 1)'"
            )
        return space

    def sweep(self, arguments: list[str]) -> optuna.Study:
        cfg = self.config
        space = self._space(arguments)
        cwd = Path(OmegaConf.select(cfg, "hydra.runtime.cwd", default=None) or Path.cwd())
        uri = tracking_from_config(cfg)[0]  # studies live beside the MLflow sqlite db when there is one
        db_dir = Path(uri[len("sqlite:///") :]).parent if uri.startswith("sqlite:///") else None
        storage = self._storage = resolve_storage(self.storage, cwd, db_dir)
        name = self.study_name or f"{cfg.hydra.job.name}-{space.fingerprint()}"
        study = optuna.create_study(
            study_name=name, storage=storage, direction=self.direction, load_if_exists=True
        )
        n_before = len(study.get_trials(deepcopy=False))
        study.sampler = build_sampler(self.sampler, space, n_before)
        self._set_pruner(study)
        n_trials = self.n_trials
        if isinstance(study.sampler, optuna.samplers.GridSampler):
            n_grid = math.prod(len(v) for v in grid_points(space).values())
            n_trials = min(n_trials, max(n_grid - n_before, 0))
        log.info("ltv_optuna: study %r in %s: %d trials so far, %d more", name, storage, n_before, n_trials)
        sweep_dir = Path(cfg.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
        tags = {"sweeper": "ltv_optuna", "optuna_study_name": name, "optuna_storage": storage}
        with parent_run(cfg, run_name=name, tags=tags) as parent_id:
            self._log_settings(parent_id, space, n_trials, n_before)
            try:
                n_failed = self._run_trials(study, space, parent_id, n_trials, job_idx=n_before)
            finally:
                getattr(self.launcher, "close", lambda: None)()  # a launcher's cluster (ltv_dask)
            summary = _report.results(study, n_failed)
            files = [_report.write_results(summary, sweep_dir)]
            files += _report.save_plots(study, sweep_dir) if self.plots and summary["n_complete"] else []
            _report.log_to_parent(parent_id, summary, files)
        log.info("ltv_optuna: best value %s with %s", summary["best_value"], summary["best_params"])
        return study

    def _set_pruner(self, study: optuna.Study) -> None:
        """The pruner for this invocation, kept in the study's user attributes so that each job (in any
        process) judges its own trial with it; None turns pruning off."""
        cfg = self.pruner
        if cfg is not None and not isinstance(cfg, dict):
            cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        if cfg is not None and not (isinstance(cfg, dict) and cfg.get("_target_")):
            raise ValueError(f"hydra.sweeper.pruner must be null or a config with _target_, got {cfg!r}")
        if cfg is not None:
            study.pruner = instantiate(cfg)  # fails here, naming the class, rather than in every job
        study.set_user_attr(PRUNER_ATTR, cfg)
        study.set_user_attr(STAGE_ATTR, self.prune_stage)

    def _trial_overrides(self, study: optuna.Study, trial: optuna.Trial) -> list[str]:
        """Hydra overrides that name ``trial`` to its job (environment variables of that job only); none
        without a pruner or with an in-memory storage, which a job cannot open."""
        if self.pruner is None or self._storage == "sqlite:///:memory:":
            return []
        env = trial_env(self._storage, study.study_name, trial._trial_id)
        return [f"++hydra.job.env_set.{k}='{v}'" for k, v in env.items()]

    def _log_settings(self, parent_id: str, space: SearchSpace, n_trials: int, n_before: int) -> None:
        import mlflow

        params = {
            "sweeper.direction": self.direction,
            "sweeper.n_trials": n_trials,
            "sweeper.n_jobs": self.n_jobs,
            "sweeper.max_failure_rate": self.max_failure_rate,
            "sweeper.sampler": OmegaConf.select(OmegaConf.create(self.sampler), "_target_", default=None),
            "sweeper.trials_before": n_before,
        }
        params.update({param_key(f"space.{k}"): repr(v) for k, v in space.distributions.items()})
        params.update({param_key(f"fixed.{k}"): v for k, v in space.fixed.items()})
        client = mlflow.MlflowClient()
        for key, value in params.items():
            client.log_param(parent_id, key, value)

    def _run_trials(
        self, study: optuna.Study, space: SearchSpace, parent_id: str, n_trials: int, job_idx: int
    ) -> int:
        """Keep ``n_jobs`` trials running: ask one whenever one is told; return the number that failed.

        A launcher with ``submit`` / ``first_done`` (``ltv_dask``) runs them side by side and the next
        trial starts as soon as any one ends (a pruned trial frees its worker at once); any other launcher
        runs each job when it is submitted.
        """
        n_jobs = self.n_jobs or getattr(self.launcher, "slots", lambda: 1)()
        running: dict = {}  # job future -> trial
        n_asked = n_done = n_failed = 0
        while n_done < n_trials:
            while len(running) < n_jobs and n_asked < n_trials:
                trial = study.ask(space.distributions)
                try:
                    overrides = space.overrides(trial.params)
                    self.validate_batch_is_legal([overrides])
                    overrides += self._trial_overrides(study, trial)
                except Exception:
                    # a config error is not the trials' fault, but none may stay RUNNING in the study
                    for t in [trial, *running.values()]:
                        tell(study, t, None)
                    raise
                running[self._submit(overrides, job_idx)] = trial
                job_idx += 1
                n_asked += 1
            future = self._first_done(list(running))
            n_failed += self._tell(study, running.pop(future), future.result(), parent_id)
            n_done += 1
            if n_failed / n_trials > self.max_failure_rate:
                raise SweepFailedError(
                    f"ltv_optuna: {n_failed} of {n_trials} planned trials failed (after {n_done}), more than "
                    f"max_failure_rate={self.max_failure_rate}; see the warnings above for each failure"
                )
        return n_failed

    def _submit(self, overrides: list[str], job_idx: int) -> Future:
        submit = getattr(self.launcher, "submit", None)
        if submit is not None:
            return submit(overrides, job_idx)
        done: Future = Future()  # Hydra's own launchers: the job runs now
        done.set_result(self.launcher.launch([overrides], initial_job_idx=job_idx)[0])
        return done

    def _first_done(self, futures: list) -> Future:
        first_done = getattr(self.launcher, "first_done", None)
        return first_done(futures) if first_done is not None else futures[0]

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn, parent_id: str) -> int:
        import mlflow

        value, error = objective_value(ret)
        output_dir = (
            OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None)
            if ret.hydra_cfg
            else None
        )
        child_id = read_job_run_id(output_dir)
        client = mlflow.MlflowClient()
        if child_id:
            trial.set_user_attr("mlflow_run_id", child_id)
            client.set_tag(child_id, "optuna_trial_number", str(trial.number))
            client.set_tag(child_id, "optuna_study_name", study.study_name)
            client.set_tag(child_id, "mlflow.runName", trial_name(trial.number))  # its parent: the study
        trial.set_user_attr("overrides", list(ret.overrides or []))
        if isinstance(ret._return_value, optuna.TrialPruned):
            tell(study, trial, None, pruned=True)
            _report.mark_pruned(study, trial, child_id, parent_id, str(ret._return_value))
            return 0
        tell(study, trial, value)
        if error is None:
            client.log_metric(parent_id, "trial_value", value, step=trial.number)
            return 0
        raised = ret._return_value if isinstance(ret._return_value, BaseException) else None
        log.warning(
            "ltv_optuna: trial %d failed (%s): %s",
            trial.number,
            " ".join(ret.overrides or []),
            error,
            exc_info=raised,
        )
        return 1
