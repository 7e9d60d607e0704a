"""Structured configs of the ``ltv_optuna`` sweeper and its samplers, registered in Hydra's ConfigStore.

Select the sweeper with ``defaults: [override /hydra/sweeper: ltv_optuna]`` and a sampler with
``override /hydra/sweeper/sampler: random`` (``tpe`` by default; ``random``, ``cmaes``, ``grid``).
"""

# No ``from __future__ import annotations`` here: Hydra executes this module outside sys.modules while
# scanning for plugins, and dataclasses cannot resolve string annotations then.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

DEFAULT_SEED = 42


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = DEFAULT_SEED
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = DEFAULT_SEED


@dataclass
class CmaEsSamplerConf:
    """Needs the ``cmaes`` package; continuous parameters only (categoricals are sampled at random)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = DEFAULT_SEED
    sigma0: float | None = None
    n_startup_trials: int = 1
    warn_independent_sampling: bool = False


@dataclass
class GridSamplerConf:
    """The grid is built from the (discrete) search space; ``n_trials`` is capped at the unvisited points."""

    _target_: str = "optuna.samplers.GridSampler"
    seed: int | None = DEFAULT_SEED


@dataclass
class LtvOptunaSweeperConf:
    """Settings of one sweep; see ``hydra_plugins.ltv_optuna_sweeper._search_space`` for the ``params`` syntax.

    ``storage`` None means ``optuna.db`` beside the MLflow sqlite db of ``tracking.uri`` (else
    ``<original cwd>/mlruns/optuna.db``); a relative sqlite path is resolved against the original working dir. ``study_name`` None means ``<job name>-<hash of the space>``,
    so re-running the same sweep resumes the same study. A run stops with an error as soon as
    ``failed trials / n_trials > max_failure_rate``.
    """

    _target_: str = "hydra_plugins.ltv_optuna_sweeper.ltv_optuna_sweeper.LtvOptunaSweeper"
    # The sampler stays a config until the sweep knows how many trials the study already holds.
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    direction: str = "minimize"
    study_name: str | None = None
    storage: str | None = None
    n_trials: int = 20
    n_jobs: int | None = 1  # trials in flight; null: one per worker of the ltv_dask launcher
    max_failure_rate: float = 0.25
    params: dict[str, Any] | None = None
    plots: bool = True
    # an optuna.pruners config (``_target_``) or None (no pruning); each job's boosters of stage
    # ``prune_stage`` (``ltv.tasks.pruning``) report their valid loss every 10 rounds
    pruner: Any = None
    prune_stage: str = "first_stage.classifier"


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(
        group="hydra/sweeper", name="ltv_optuna", node=LtvOptunaSweeperConf, provider="ltv_optuna_sweeper"
    )
    for name, node in (
        ("tpe", TPESamplerConf),
        ("random", RandomSamplerConf),
        ("cmaes", CmaEsSamplerConf),
        ("grid", GridSamplerConf),
    ):
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="ltv_optuna_sweeper")


register()
