"""The ``ltv_dask`` launcher: a sweep's batch of trials runs side by side on a Dask cluster's workers.

Trials are the toy app's small LightGBM fits (tests/sweeper_app), on a 2-worker LocalCluster started by
the launcher; the study (sqlite) and the MLflow store are shared by the sweep and the workers.
"""

from __future__ import annotations

import optuna

from tests.test_sweeper_e2e import run_app, runs, study

SWEEP = (
    "hparams_search=toy",
    "hydra/launcher=ltv_dask",
    "+cluster={kind: local, n_workers: 2, dashboard_address: null}",
    "hydra/sweeper/sampler=grid",
    "hydra.sweeper.study_name=par",
    "hydra.sweeper.n_jobs=null",  # one per worker
    "boost_lr=choice(0.001, 0.5)",
    "n=choice(1, 2)",
    "~hydra.sweeper.params.x",
    "~hydra.sweeper.params.penalty",
    "hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, upper: 0.6}",
    "hydra.sweeper.prune_stage=boost",
    "hydra.sweeper.plots=false",
    "tracking.experiment=par",
    "sleep_s=4",  # long enough for the first two jobs to overlap whatever the workers' start-up times
)


def test_trials_run_side_by_side_on_the_workers_of_one_cluster_and_prune(tmp_path):
    run_app(tmp_path, *SWEEP, "hydra.sweeper.n_trials=4")  # two at a time
    trials = study(tmp_path, "par").trials
    assert sorted((t.params["boost_lr"], t.params["n"]) for t in trials) == [
        (0.001, 1), (0.001, 2), (0.5, 1), (0.5, 2)
    ]  # fmt: skip
    states = {(t.params["boost_lr"], t.params["n"]): t.state for t in trials}
    assert all(states[(0.001, n)] == optuna.trial.TrialState.PRUNED for n in (1, 2))
    assert all(states[(0.5, n)] == optuna.trial.TrialState.COMPLETE for n in (1, 2))
    (parent,), children = runs(tmp_path, "par")
    assert parent.data.metrics["n_pruned"] == 2 and len(children) == 4
    by_trial = {int(c.data.tags["optuna_trial_number"]): c for c in children}
    # the cluster lives for the whole sweep: every trial ran in one of the same two worker processes ...
    assert len({c.data.tags["pid"] for c in children}) == 2
    # ... the first two at the same time (each later one starts when a worker is free)
    a, b = by_trial[0], by_trial[1]
    assert a.data.tags["pid"] != b.data.tags["pid"]
    assert a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time
    for t in trials:
        run = by_trial[t.number]
        pruned = t.state == optuna.trial.TrialState.PRUNED
        assert (run.info.status, run.data.tags.get("optuna_trial_state")) == (
            ("KILLED", "PRUNED") if pruned else ("FINISHED", None)
        )
