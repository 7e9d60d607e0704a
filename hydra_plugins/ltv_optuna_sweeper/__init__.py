"""ltv's Hydra sweeper on current Optuna: ``override hydra/sweeper: ltv_optuna``.

Light on purpose: Hydra imports every non-underscore module here while scanning for plugins, so Optuna and
MLflow are only imported (in ``_impl``) when a sweep actually runs.
"""
