"""A sweep job's Optuna pruning: the per-round hook (``FitClock.on_round``) that reports a booster's valid
loss to the job's trial and stops the fit when the study's pruner says so.

The ltv_optuna sweeper names each job's trial in the environment through ``hydra.job.env_set`` (Hydra sets
it for the job's run only, in whatever process runs it) and keeps the pruner's config and the pruned stage
in the study's user attributes, which every process sees through the storage.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

TRIAL_ENV = {"storage": "LTV_OPTUNA_STORAGE", "study": "LTV_OPTUNA_STUDY", "trial_id": "LTV_OPTUNA_TRIAL_ID"}
PRUNER_ATTR, STAGE_ATTR = "ltv.pruner", "ltv.prune_stage"
DEFAULT_STAGE = "first_stage.classifier"
REPORT_EVERY = 10  # rounds between two reports: each is a write to the study's storage


def trial_env(storage: str, study: str, trial_id: int) -> dict[str, str]:
    """The environment that names one trial for :func:`sweep_trial`."""
    return {TRIAL_ENV["storage"]: storage, TRIAL_ENV["study"]: study, TRIAL_ENV["trial_id"]: str(trial_id)}


def pruning_hook(trial, stage_name: str = DEFAULT_STAGE) -> Callable:
    """``on_round(stage, env)``: every ``REPORT_EVERY`` rounds of a booster fitted in stage ``stage_name``,
    report its first valid metric to ``trial``; raise ``optuna.TrialPruned`` when the pruner says so."""
    import optuna

    def on_round(stage: str, env) -> None:
        if stage != stage_name or not env.evaluation_result_list or (env.iteration + 1) % REPORT_EVERY:
            return
        value = float(env.evaluation_result_list[0][2])
        trial.report(value, step=env.iteration + 1)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {env.iteration + 1} (valid {value:.5f})")

    return on_round


@contextlib.contextmanager
def sweep_trial() -> Iterator[Callable | None]:
    """Within a sweep job (:data:`TRIAL_ENV` set) whose study has a pruner: the job's :func:`pruning_hook`
    (pass it to ``LTVPipeline.fit(on_round=...)``). Otherwise None."""
    env = {k: os.environ.get(v) for k, v in TRIAL_ENV.items()}
    if not all(env.values()):
        yield None
        return
    import optuna
    from hydra.utils import instantiate

    attrs = optuna.load_study(study_name=env["study"], storage=env["storage"]).user_attrs
    if not attrs.get(PRUNER_ATTR):
        yield None
        return
    study = optuna.load_study(
        study_name=env["study"], storage=env["storage"], pruner=instantiate(attrs[PRUNER_ATTR])
    )
    yield pruning_hook(
        optuna.trial.Trial(study, int(env["trial_id"])), attrs.get(STAGE_ATTR) or DEFAULT_STAGE
    )
