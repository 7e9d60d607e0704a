"""A tiny Hydra app for the sweeper tests: objective (x - 2)^2 + penalty, one MLflow run per job.

It mirrors how ``train.py`` is expected to use the tracking helpers: ``store.setup`` from the
``tracking`` config, ``start_job_run`` around the work, return the objective to the sweeper.
Config ``fail_jobs`` / ``nan_jobs`` list Hydra job numbers that raise or return NaN.
"""

from __future__ import annotations

import math

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ltv.tracking.store import setup
from ltv.tracking.sweep import start_job_run, tracking_from_config


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    setup(*tracking_from_config(cfg))
    job_num = HydraConfig.get().job.get("num", 0)
    with start_job_run(run_name=f"job {job_num}"):
        if job_num in cfg.fail_jobs:
            raise RuntimeError(f"job {job_num} was told to fail")
        value = (float(cfg.x) - 2.0) ** 2 + float(cfg.penalty.value) + 0.01 * int(cfg.n)
        if job_num in cfg.nan_jobs:
            value = math.nan
        mlflow.log_metric("objective", value)
    return value


if __name__ == "__main__":
    main()
