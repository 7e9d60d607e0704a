"""End-to-end: the ltv_optuna sweeper and the MLflow parent-run callback on a tiny Hydra app.

Every run is a subprocess started in a temporary folder (so plugin discovery does not lean on the repo
being the working dir), with the MLflow store and the Optuna storage under that folder. The app
(tests/sweeper_app) returns (x - 2)^2 + penalty + 0.01 * n and logs it as metric ``objective``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "sweeper_app" / "app.py"
PENALTY = {"none": 0.0, "small": 0.5}


def clean_env(pythonpath: bool = True) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("LTV_MLFLOW_PARENT_RUN_ID", "MLFLOW_TRACKING_URI")
    }
    if pythonpath:  # the tests do not depend on when the editable install last saw hydra_plugins/
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_app(workdir: Path, *overrides: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(APP), "-m", *overrides],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
        env=clean_env(),
    )
    if (proc.returncode == 0) != ok:
        raise AssertionError(
            f"app {' '.join(overrides)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def runs(workdir: Path, experiment: str) -> tuple[list, list]:
    """(parents, children) of an experiment in the workdir's MLflow store."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    all_runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def study(workdir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/mlruns/optuna.db")


def expected_objective(params: dict) -> float:
    return (
        (float(params["override.x"]) - 2.0) ** 2
        + PENALTY[params["override.penalty"]]
        + 0.01 * int(params["override.n"])
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweeper").resolve()


@pytest.fixture(scope="module")
def toy_sweeps(workdir) -> Path:
    """Two invocations of the same 3-trial sweep: the second resumes the study."""
    # Plots are drawn once, at the end of the second invocation, to keep the test short.
    run_app(
        workdir,
        "hparams_search=toy",
        "hydra.sweep.dir=sweep1",
        "tracking.experiment=toy",
        "hydra.sweeper.plots=false",
    )
    run_app(workdir, "hparams_search=toy", "hydra.sweep.dir=sweep2", "tracking.experiment=toy")
    return workdir


def test_plugin_is_discovered_from_another_working_dir(tmp_path):
    # No PYTHONPATH: this checks the installed package (re-run `pip install -e .` after adding hydra_plugins/).
    code = """if True:
        import json
        from hydra.core.config_store import ConfigStore
        from hydra.core.plugins import Plugins
        from hydra.plugins.sweeper import Sweeper
        sweepers = [p.__name__ for p in Plugins.instance().discover(Sweeper)]
        repo = ConfigStore.instance().repo["hydra"]["sweeper"]
        print(json.dumps([sweepers, sorted(repo), sorted(repo.get("sampler", {}))]))
    """
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=clean_env(False)
    )
    assert proc.returncode == 0, proc.stderr
    sweepers, nodes, samplers = json.loads(proc.stdout)
    assert "LtvOptunaSweeper" in sweepers, "hydra_plugins.ltv_optuna_sweeper not installed: pip install -e ."
    assert "BasicSweeper" in sweepers  # the namespace package hides no other plugin
    assert "ltv_optuna.yaml" in nodes
    assert samplers == ["cmaes.yaml", "grid.yaml", "random.yaml", "tpe.yaml"]


def test_sweep_logs_one_parent_per_invocation_with_nested_trials(toy_sweeps):
    parents, children = runs(toy_sweeps, "toy")
    # The callback registered in the app's config and the sweeper share one parent per invocation.
    assert len(parents) == 2 and len(children) == 6
    parents.sort(key=lambda r: int(r.data.params["sweeper.trials_before"]))
    for parent, trial_numbers in zip(parents, ([0, 1, 2], [3, 4, 5]), strict=True):
        assert parent.info.status == "FINISHED" and parent.info.run_name == "toy"
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert sorted(int(c.data.tags["optuna_trial_number"]) for c in mine) == trial_numbers
        assert sorted(c.info.run_name for c in mine) == [f"trial-{n}" for n in trial_numbers]
        for child in mine:  # the metric the child logged is the objective computed from its overrides
            assert child.data.metrics["objective"] == pytest.approx(expected_objective(child.data.params))
    # Best of the whole study, on the second parent: value, params and the child that produced it.
    best = min(children, key=lambda c: c.data.metrics["objective"])
    last = parents[1]
    assert last.data.metrics["best_value"] == pytest.approx(best.data.metrics["objective"])
    assert last.data.tags["best_child_run_id"] == best.info.run_id
    for key in ("x", "n", "penalty"):
        assert last.data.params[f"best.{key}"] == best.data.params[f"override.{key}"]
    assert last.data.metrics["n_trials"] == 6 and last.data.metrics["n_failed"] == 0
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{toy_sweeps}/mlruns/mlflow.db")
    artifacts = {a.path for a in client.list_artifacts(last.info.run_id)}
    assert artifacts == {"optimization_history.png", "param_importances.png", "optimization_results.yaml"}


def test_results_yaml_matches_the_study(toy_sweeps):
    got = yaml.safe_load((toy_sweeps / "sweep2" / "optimization_results.yaml").read_text())
    s = study(toy_sweeps, "toy")
    assert got["name"] == "toy" and got["best_value"] == pytest.approx(s.best_value)
    assert got["best_params"] == s.best_params and got["n_trials"] == 6
    assert got["best_mlflow_run_id"] == s.best_trial.user_attrs["mlflow_run_id"]
    assert (toy_sweeps / "sweep2" / "param_importances.png").stat().st_size > 1000
    assert not (toy_sweeps / "sweep1" / "param_importances.png").exists()  # plots=false


def test_second_invocation_resumes_the_study(toy_sweeps):
    trials = study(toy_sweeps, "toy").trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # The sampler is reseeded on resume, so the second batch does not replay the first one's points.
    first, second = ({round(t.params["x"], 9) for t in trials[i : i + 3]} for i in (0, 3))
    assert not first & second
    # Ranges are end-exclusive and intervals bounded: n in {1, 2, 3}, x in [-2, 6].
    assert {t.params["n"] for t in trials} <= {1, 2, 3} and all(-2 <= t.params["x"] <= 6 for t in trials)
    # Job numbers continue across invocations, so the output dirs never collide.
    assert sorted(p.name for p in (toy_sweeps / "sweep2").iterdir() if p.is_dir()) == ["3", "4", "5"]


def test_failed_and_nan_trials_are_failures_and_the_sweep_goes_on(workdir):
    run_app(
        workdir,
        "hparams_search=toy",
        "hydra.sweep.dir=fail_ok",
        "hydra.sweeper.study_name=fail_ok",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0.5",  # 2 failures of 4 planned is not more than half
        "fail_jobs=[1]",
        "nan_jobs=[2]",
        "tracking.experiment=fail_ok",
        "hydra.sweeper.plots=false",
    )
    states = [t.state.name for t in study(workdir, "fail_ok").trials]
    assert states == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    (parent,), children = runs(workdir, "fail_ok")
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_failed"] == 2
    status = {int(c.data.tags["optuna_trial_number"]): c.info.status for c in children}
    assert status == {0: "FINISHED", 1: "FAILED", 2: "FINISHED", 3: "FINISHED"}
    assert math.isnan(
        next(c for c in children if c.data.tags["optuna_trial_number"] == "2").data.metrics["objective"]
    )


def test_exceeding_max_failure_rate_stops_the_sweep(workdir):
    proc = run_app(
        workdir,
        "hparams_search=toy",
        "hydra.sweep.dir=fail_stop",
        "hydra.sweeper.study_name=fail_stop",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.max_failure_rate=0.5",
        "fail_jobs=[0,1]",
        "tracking.experiment=fail_stop",
        "~hydra.callbacks.mlflow_parent",  # no callback: the sweeper makes (and fails) its own parent
        ok=False,
    )
    assert "2 of 3 planned trials failed" in proc.stderr and "max_failure_rate=0.5" in proc.stderr
    assert [t.state.name for t in study(workdir, "fail_stop").trials] == ["FAIL", "FAIL"]  # trial 2 never ran
    (parent,), children = runs(workdir, "fail_stop")
    assert parent.info.status == "FAILED" and len(children) == 2
    assert parent.data.tags["sweeper"] == "ltv_optuna" and "hydra_sweep_dir" not in parent.data.tags


def test_plain_multirun_gets_one_parent_with_nested_jobs(workdir):
    run_app(workdir, "x=1,3", "penalty=small", "hydra.sweep.dir=plain", "tracking.experiment=plain")
    (parent,), children = runs(workdir, "plain")
    assert parent.info.status == "FINISHED" and parent.data.tags["hydra_sweep_dir"] == str(workdir / "plain")
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    got = sorted((c.data.params["override.x"], c.data.metrics["objective"]) for c in children)
    assert got == [("1", pytest.approx(1.51)), ("3", pytest.approx(1.51))]


@pytest.mark.slow
def test_plain_multirun_with_a_failing_job_ends_the_parent_failed(workdir):
    # Hydra skips on_multirun_end when the basic sweeper raises; the callback's atexit hook ends the parent.
    run_app(
        workdir,
        "x=1,3",
        "fail_jobs=[1]",
        "hydra.sweep.dir=plain_fail",
        "tracking.experiment=plain_fail",
        ok=False,
    )
    (parent,), children = runs(workdir, "plain_fail")
    assert parent.info.status == "FAILED"
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
