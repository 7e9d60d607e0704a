"""A tiny Hydra app for the sweeper tests: objective (x - 2)^2 + penalty, one MLflow run per job.

It mirrors how ``train.py`` is expected to use the tracking helpers: ``store.setup`` from the
``tracking`` config, ``start_job_run`` around the work, return the objective to the sweeper.
Config ``fail_jobs`` / ``nan_jobs`` list Hydra job numbers that raise or return NaN. With ``boost_lr``
set, the job also fits a small LightGBM (stage ``boost``) through the chain's booster plumbing inside
``sweep_trial``, as ``train.py`` fits the chain: a pruner of the sweep can stop it.
"""

from __future__ import annotations

import math
import os
import time

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
        mlflow.set_tag("pid", str(os.getpid()))  # which process ran the job (the launcher tests)
        time.sleep(float(cfg.sleep_s))
        if job_num in cfg.fail_jobs:
            raise RuntimeError(f"job {job_num} was told to fail")
        value = (float(cfg.x) - 2.0) ** 2 + float(cfg.penalty.value) + 0.01 * int(cfg.n)
        if cfg.get("boost_lr") is not None:
            value = _boost(float(cfg.boost_lr))
        if job_num in cfg.nan_jobs:
            value = math.nan
        mlflow.log_metric("objective", value)
    return value


def _boost(learning_rate: float) -> float:
    """Valid log-loss of a seeded LightGBM classifier, fitted in stage 'boost' of a fit clock."""
    import numpy as np

    from ltv.models import fitting
    from ltv.models.lgbm_fit import fit_booster
    from ltv.tasks.pruning import sweep_trial

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 4))
    y = (X[:, 0] + 0.5 * rng.normal(size=4000) > 0).astype(int)
    params = {"objective": "binary", "n_estimators": 100, "learning_rate": learning_rate, "n_jobs": 1}
    with sweep_trial() as on_round, fitting.FitClock(on_round=on_round), fitting.stage("boost", 3000):
        _, best, evals = fit_booster(
            params, X[:3000], y[:3000], eval_set=(X[3000:], y[3000:]), early_stopping_rounds=20
        )
    return float(evals["valid"]["binary_logloss"][best - 1])


if __name__ == "__main__":
    main()
