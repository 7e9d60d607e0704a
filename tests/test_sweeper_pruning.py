"""Pruning: a sweep's pruner stops a trial through its booster's valid loss; the study and MLflow say so.

The toy app (tests/sweeper_app) fits one small LightGBM per trial through the chain's booster plumbing
(``fit_booster`` in a fit-clock stage, inside ``sweep_trial``), so this runs in seconds.
"""

from __future__ import annotations

import optuna
import pytest

from tests.conftest import run_entry
from tests.test_sweeper_e2e import run_app, runs, study


def test_threshold_pruner_prunes_the_slow_learner_and_mlflow_shows_it(tmp_path):
    # grid over two learning rates: at round 10, lr 0.001 is still at the prior's log-loss (~0.69 > 0.6)
    # and is pruned; lr 0.5 is far below the threshold and completes
    run_app(
        tmp_path,
        "hparams_search=toy",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.study_name=prune",
        "hydra.sweeper.n_trials=2",
        "boost_lr=choice(0.001, 0.5)",
        "~hydra.sweeper.params.x",
        "~hydra.sweeper.params.n",
        "~hydra.sweeper.params.penalty",
        "hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, upper: 0.6}",
        "hydra.sweeper.prune_stage=boost",
        "hydra.sweeper.plots=false",
        "tracking.experiment=prune",
    )
    trials = {t.params["boost_lr"]: t for t in study(tmp_path, "prune").trials}
    slow, fast = trials[0.001], trials[0.5]
    assert slow.state == optuna.trial.TrialState.PRUNED
    assert list(slow.intermediate_values) == [10] and slow.intermediate_values[10] > 0.6
    assert fast.state == optuna.trial.TrialState.COMPLETE and fast.value < 0.6
    assert list(fast.intermediate_values)[:2] == [10, 20]  # reported every 10 rounds
    (parent,), children = runs(tmp_path, "prune")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["n_pruned"] == 1 and parent.data.metrics["n_failed"] == 0
    by_trial = {int(c.data.tags["optuna_trial_number"]): c for c in children}
    pruned = by_trial[slow.number]
    assert pruned.info.status == "KILLED" and pruned.data.tags["optuna_trial_state"] == "PRUNED"
    assert pruned.data.tags["optuna_pruned_at_step"] == "10"
    assert by_trial[fast.number].info.status == "FINISHED"


def test_no_pruner_means_no_reports(tmp_path):
    run_app(
        tmp_path,
        "hparams_search=toy",
        "hydra.sweeper.study_name=noprune",
        "hydra.sweeper.n_trials=1",
        "+boost_lr=0.001",
        "hydra.sweeper.prune_stage=boost",
        "hydra.sweeper.plots=false",
        "tracking.experiment=noprune",
    )
    (trial,) = study(tmp_path, "noprune").trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.intermediate_values == {}


@pytest.mark.slow
def test_train_sweep_prunes_the_chain_through_its_classifier(tmp_path):
    # the real task on tiny data (the gate's search space, which has no pruner of its own): every trial's
    # classifier log-loss exceeds the threshold at round 10, so
    # each trial stops in its first booster, is PRUNED in the study and KILLED in MLflow; the features
    # were loaded once for the sweep (the second and third trials reuse them)
    proc = run_entry(
        "train.py", "hparams_search=lgbm_gate", "experiment=tiny", f"paths.root={tmp_path}",
        "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=chain_prune", "hydra.sweeper.plots=false",
        "hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, upper: 0.001}",
        cwd=tmp_path, timeout=900,
    )  # fmt: skip
    trials = study(tmp_path, "chain_prune").trials
    assert [t.state.name for t in trials] == ["PRUNED"] * 3
    assert all(list(t.intermediate_values) == [10] for t in trials)
    (parent,), children = runs(tmp_path, "ltv")
    assert parent.data.metrics["n_pruned"] == 3
    assert {c.info.status for c in children} == {"KILLED"}
    assert (
        proc.stderr.count("reusing the loaded and extracted frames")
        + proc.stdout.count("reusing the loaded and extracted frames")
        == 2
    )
