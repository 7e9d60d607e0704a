"""The Optuna side of the ``ltv_optuna`` sweeper: the study's storage, sampler and grid points, and a job's
result told to its trial."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ._search_space import SearchSpace

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")


class SweepFailedError(RuntimeError):
    """Raised when more than ``max_failure_rate`` of the planned trials failed."""


def resolve_storage(storage: str | None, cwd: Path, default_dir: Path | None = None) -> str:
    """The Optuna storage URL; relative sqlite paths are resolved against ``cwd``.

    None means ``sqlite:///<default_dir>/optuna.db``, ``default_dir`` defaulting to ``<cwd>/mlruns``.
    """
    if storage is None:
        storage = f"sqlite:///{default_dir or cwd / 'mlruns'}/optuna.db"
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        path = Path(storage[len("sqlite:///") :]).expanduser()
        path = (path if path.is_absolute() else cwd / path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{path}"
    return storage


def grid_points(space: SearchSpace) -> dict[str, list[Any]]:
    """The grid GridSampler walks; only discrete distributions have one."""
    grid: dict[str, list[Any]] = {}
    for name, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            grid[name] = [dist.low + i * dist.step for i in range(n + 1)]
        else:
            raise ValueError(f"grid sampler: '{name}' is continuous ({dist}); use choice(...) or range(...)")
    return grid


def build_sampler(sampler_cfg: Any, space: SearchSpace, n_existing: int) -> optuna.samplers.BaseSampler:
    """Instantiate the sampler config; the seed is offset by the trials already in the study.

    A resumed study with the same seed would replay the random start-up points it already tried. The
    grid sampler is the exception: its seed fixes the order of the grid, which must not change between
    invocations (it numbers grid points by that order and skips the numbers already run).
    """
    cfg = OmegaConf.create(
        OmegaConf.to_container(sampler_cfg, resolve=True)
        if isinstance(sampler_cfg, DictConfig)
        else sampler_cfg
    )
    kwargs: dict[str, Any] = {}
    grid = str(cfg.get("_target_", "")).endswith("GridSampler")
    if grid:
        kwargs["search_space"] = grid_points(space)
    elif cfg.get("seed") is not None:
        kwargs["seed"] = int(cfg.seed) + n_existing
    return instantiate(cfg, **kwargs)


def objective_value(ret: JobReturn) -> tuple[float | None, str | None]:
    """``(value, None)`` for a usable float return, else ``(None, why)``: raised, None, NaN, not a number."""
    if ret.status != JobStatus.COMPLETED:
        return None, f"job raised {type(ret._return_value).__name__}: {ret._return_value}"
    value = ret._return_value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None, f"job returned {value!r}, not a float"
    if math.isnan(value):
        return None, "job returned NaN"
    return value, None


def tell(study: optuna.Study, trial: optuna.Trial, value: float | None, pruned: bool = False) -> None:
    """``study.tell``: COMPLETE with ``value``, FAIL when None, PRUNED when ``pruned``.

    GridSampler calls ``study.stop()`` after the last grid point, which raises outside ``optimize``; the
    trial is stored by then, and ``n_trials`` was already capped at the grid size.
    """
    try:
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        elif value is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise
