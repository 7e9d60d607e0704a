"""In-process tests of the parent/child run helpers in ltv.tracking.sweep (private sqlite store)."""

from __future__ import annotations

import os

import mlflow
import pytest
from omegaconf import OmegaConf

from ltv.tracking.store import PARENT_RUN_ENV
from ltv.tracking.sweep import parent_run, read_job_run_id, start_job_run, start_parent_run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one costs seconds); each test uses its own experiment."""
    before = mlflow.get_tracking_uri()
    yield f"sqlite:///{tmp_path_factory.mktemp('tracking')}/mlruns/mlflow.db"
    mlflow.set_tracking_uri(before)


@pytest.fixture
def cfg(store, request, monkeypatch):
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    return OmegaConf.create({"tracking": {"uri": store, "experiment": request.node.name}})


def status(run_id: str) -> str:
    return mlflow.MlflowClient().get_run(run_id).info.status


def test_parent_run_owns_a_new_parent_and_nests_job_runs(cfg, tmp_path):
    with parent_run(cfg, run_name="sweep", tags={"k": "v"}) as parent:
        assert os.environ[PARENT_RUN_ENV] == parent and status(parent) == "RUNNING"
        with start_job_run(run_name="job") as run:
            child = run.info.run_id
    assert status(parent) == "FINISHED" and status(child) == "FINISHED"
    child_run = mlflow.MlflowClient().get_run(child)
    assert child_run.data.tags["mlflow.parentRunId"] == parent
    assert mlflow.MlflowClient().get_run(parent).data.tags["k"] == "v"
    assert PARENT_RUN_ENV not in os.environ
    assert read_job_run_id(tmp_path / "nowhere") is None  # outside Hydra no id file is written


def test_parent_run_adopts_a_running_parent_and_fails_it_on_error(cfg):
    owner = start_parent_run(cfg, run_name="callback")
    with parent_run(cfg, run_name="study") as adopted:
        assert adopted == owner
    assert status(owner) == "RUNNING"  # the callback ends what it started
    assert mlflow.MlflowClient().get_run(owner).info.run_name == "study"
    with pytest.raises(RuntimeError, match="boom"), parent_run(cfg):
        raise RuntimeError("boom")
    assert status(owner) == "FAILED"


def test_job_run_ignores_a_stale_parent_and_fails_with_its_body(cfg, monkeypatch):
    parent = start_parent_run(cfg)
    mlflow.MlflowClient().set_terminated(parent)
    monkeypatch.setenv(PARENT_RUN_ENV, "0" * 32)  # an id this store does not know
    with pytest.raises(ValueError, match="bad"), start_job_run(run_name="job") as run:
        raise ValueError("bad")
    got = mlflow.MlflowClient().get_run(run.info.run_id)
    assert got.info.status == "FAILED" and "mlflow.parentRunId" not in got.data.tags


class FakeLauncher:
    """Runs the objective (x - 2)^2 in-process and records each batch; jobs in ``fail`` raise."""

    def __init__(self, fail=()):
        self.batches, self.fail = [], set(fail)

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus

        self.batches.append((initial_job_idx, [list(o) for o in job_overrides]))
        returns = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            x = float(dict(o.split("=", 1) for o in overrides)["x"])
            ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            ret.return_value = (x - 2) ** 2
            if idx in self.fail:
                ret.status, ret.return_value = JobStatus.FAILED, RuntimeError(f"job {idx}")
            returns.append(ret)
        return returns


def sweeper_with(launcher, **settings):
    from hydra_plugins.ltv_optuna_sweeper._impl import LtvOptunaSweeperImpl

    sweeper = LtvOptunaSweeperImpl(
        sampler={"_target_": "optuna.samplers.RandomSampler", "seed": 0}, **settings
    )
    sweeper.launcher = launcher
    sweeper.validate_batch_is_legal = lambda batch: None  # no Hydra config loader here
    return sweeper


def test_a_batch_launcher_runs_each_trial_when_it_is_asked(cfg):
    import optuna

    from hydra_plugins.ltv_optuna_sweeper._search_space import parse_search_space

    launcher = FakeLauncher()
    sweeper = sweeper_with(launcher, n_trials=5, n_jobs=2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = parse_search_space(["x=interval(0, 4)", "data=tiny"])
    n_failed = sweeper._run_trials(study, space, start_parent_run(cfg), n_trials=5, job_idx=0)
    assert n_failed == 0
    assert [(idx, len(batch)) for idx, batch in launcher.batches] == [(i, 1) for i in range(5)]
    assert all(batch[-1] == "data=tiny" for _, batches in launcher.batches for batch in batches)
    assert [t.value for t in study.trials] == pytest.approx([(t.params["x"] - 2) ** 2 for t in study.trials])


class FakeAsyncLauncher(FakeLauncher):
    """``submit`` / ``first_done`` as the ltv_dask launcher has them; jobs end newest first."""

    def __init__(self):
        super().__init__()
        self.pending, self.most_in_flight = [], 0

    def submit(self, overrides, idx):
        from concurrent.futures import Future

        future = Future()
        self.pending.append((future, overrides, idx))
        self.most_in_flight = max(self.most_in_flight, len(self.pending))
        return future

    def first_done(self, futures):
        future, overrides, idx = self.pending.pop()  # the newest job ends first
        assert future in futures
        future.set_result(self.launch([overrides], idx)[0])
        return future


def test_an_async_launcher_keeps_n_jobs_trials_in_flight_and_tells_each_as_it_ends(cfg):
    import optuna

    from hydra_plugins.ltv_optuna_sweeper._search_space import parse_search_space

    launcher = FakeAsyncLauncher()
    sweeper = sweeper_with(launcher, n_trials=5, n_jobs=3)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = parse_search_space(["x=interval(0, 4)"])
    assert sweeper._run_trials(study, space, start_parent_run(cfg), n_trials=5, job_idx=0) == 0
    assert launcher.most_in_flight == 3
    # jobs 0-2 start together, job 2 ends first and job 3 takes its place, and so on
    assert [idx for idx, _ in launcher.batches] == [2, 3, 4, 1, 0]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
    assert [t.value for t in study.trials] == pytest.approx([(t.params["x"] - 2) ** 2 for t in study.trials])


def test_failure_budget_is_max_failure_rate_times_n_trials(cfg):
    import optuna

    from hydra_plugins.ltv_optuna_sweeper._search_space import parse_search_space
    from hydra_plugins.ltv_optuna_sweeper._study import SweepFailedError

    space, parent = parse_search_space(["x=interval(0, 4)"]), start_parent_run(cfg)
    # 10 trials at 0.2: two failures are tolerated, the third stops the sweep right after its batch.
    ok = optuna.create_study()
    assert (
        sweeper_with(FakeLauncher(fail={1, 7}), max_failure_rate=0.2)._run_trials(ok, space, parent, 10, 0)
        == 2
    )
    assert [t.state.name for t in ok.trials].count("FAIL") == 2 and len(ok.trials) == 10
    stop = optuna.create_study()
    with pytest.raises(SweepFailedError, match="3 of 10 planned trials failed"):
        sweeper_with(FakeLauncher(fail={0, 1, 2}), max_failure_rate=0.2)._run_trials(
            stop, space, parent, 10, 0
        )
    assert [t.state.name for t in stop.trials] == ["FAIL"] * 3
