"""The ``ltv_optuna`` Hydra sweeper: a thin shell that defers Optuna/MLflow imports to ``_impl``."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import LtvOptunaSweeperConf, register

register()  # Hydra may re-execute config.py during its scan; make sure the nodes exist either way.

__all__ = ["LtvOptunaSweeper", "LtvOptunaSweeperConf"]


class LtvOptunaSweeper(Sweeper):
    """Optuna ask/tell sweeper with a persistent study and an MLflow parent run (see ``config.py``)."""

    def __init__(self, **kwargs: Any) -> None:
        from ._impl import LtvOptunaSweeperImpl

        self.sweeper = LtvOptunaSweeperImpl(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
