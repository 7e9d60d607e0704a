"""How a chain fit runs (ltv.models.fitting): seconds per stage, heartbeat lines, the per-round hook a sweep's
pruning attaches to (ltv.tasks.pruning), concurrent fits."""

from __future__ import annotations

import logging
import time

import numpy as np
import optuna
import pytest

from ltv.models import LabelledRows, fitting
from ltv.models.lgbm_fit import fit_booster
from ltv.tasks.pruning import pruning_hook
from tests.helpers.chain_data import small_chain, split_data


@pytest.fixture(scope="module")
def fitted():
    data = split_data(n_train=4000, n_valid=2000, n_holdout=500, seed=3)
    (X, L, t, _), (Xv, Lv, tv, _) = data["train"], data["valid"]
    model = small_chain("revenue", seed=3).set_params(concurrent_fits=2)
    return model.fit(LabelledRows(X, L, t), LabelledRows(Xv, Lv, tv))


def test_fit_times_name_every_stage(fitted):
    times = fitted.fit_times_
    expected = {
        "first_stage", "first_stage.classifier", "first_stage.classifier.calibration", "first_stage.regressors",
        "first_stage.variance", "first_stage.whale", "smearing", "gate", "total",
    }  # fmt: skip
    assert set(times) == expected, set(times) ^ expected
    assert all(v >= 0 for v in times.values())
    top = sum(v for k, v in times.items() if "." not in k and k != "total")
    assert top <= times["total"] + 1e-6
    assert top >= 0.8 * times["total"]  # the stages cover the fit: nothing big is untimed
    nested = sum(v for k, v in times.items() if k.startswith("first_stage.") and k.count(".") == 1)
    # the first-stage models fit concurrently (2 at once): their seconds add up across the threads
    assert times["first_stage"] * 0.9 <= nested <= 2 * times["first_stage"] + 1e-6


def test_heartbeat_logs_a_running_stage(caplog):
    caplog.set_level(logging.INFO, logger="ltv.fit")
    with fitting.FitClock(every_s=0.2) as clock, fitting.stage("slow_step", rows=1000):
        time.sleep(0.9)
    beats = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("stage slow_step: 1,000 rows")
    ]
    assert len(beats) >= 2, beats
    done = [r.getMessage() for r in caplog.records if "slow_step done" in r.getMessage()]
    assert len(done) == 1 and "rows/s" in done[0]
    assert clock.times["slow_step"] == pytest.approx(0.9, abs=0.3)


def test_outside_a_clock_a_booster_fits_with_no_hook_and_a_clock_sees_only_its_own_stages():
    X, y = _xy(2)
    seen = []
    with fitting.stage("alone", 10):  # no clock: nothing recorded, nothing called
        assert fitting.booster_callbacks(10) == [] and fitting.current_stage() is None
        fit_booster({"objective": "binary", "n_estimators": 5, "n_jobs": 1}, X, y)
    with fitting.FitClock(on_round=lambda stage, env: seen.append(stage)) as clock:
        fit_booster({"objective": "binary", "n_estimators": 5, "n_jobs": 1}, X, y)
        with fitting.stage("named"):
            fit_booster({"objective": "binary", "n_estimators": 3, "n_jobs": 1}, X, y)
    assert seen == [""] * 5 + ["named"] * 3
    assert set(clock.times) == {"named"}


def _xy(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + rng.normal(size=n) > 1).astype(int)
    return X, y


def test_booster_progress_reports_round_and_valid_loss(caplog):
    caplog.set_level(logging.INFO, logger="ltv.fit")
    X, y = _xy()
    params = {"objective": "binary", "n_estimators": 400, "learning_rate": 0.01, "n_jobs": 1}
    with fitting.FitClock(every_s=0.05), fitting.stage("classifier", rows=len(X)):
        _, rounds, _ = fit_booster(
            params, X[:2000], y[:2000], eval_set=(X[2000:], y[2000:]), early_stopping_rounds=50
        )
        time.sleep(0.2)  # one more heartbeat after the last round
    assert 1 <= rounds <= 400
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage classifier: 3,000")]
    assert any("round " in m and "/400" in m and "valid binary_logloss" in m for m in lines), lines


def test_pruning_hook_prunes_the_named_stage_only():
    X, y = _xy(1)
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # any loss > 0 prunes
    trial = study.ask()
    with fitting.FitClock(on_round=pruning_hook(trial, "classifier")):
        with fitting.stage("whale"):  # another stage: no report, no pruning
            fit_booster({"objective": "binary", "n_estimators": 30, "n_jobs": 1}, X[:2000], y[:2000],
                        eval_set=(X[2000:], y[2000:]), early_stopping_rounds=50)  # fmt: skip
        assert study.trials[0].intermediate_values == {}
        with fitting.stage("classifier"), pytest.raises(optuna.TrialPruned, match="round 10"):
            fit_booster({"objective": "binary", "n_estimators": 300, "n_jobs": 1}, X[:2000], y[:2000],
                        eval_set=(X[2000:], y[2000:]), early_stopping_rounds=50)  # fmt: skip
    values = study.trials[0].intermediate_values
    assert list(values) == [10] and 0.0 < values[10] < 1.0


def test_concurrent_fits_change_no_prediction(fitted):
    # the small chain's fits use one thread each, as every concurrent fit does on 2 cores: same trees
    data = split_data(n_train=4000, n_valid=2000, n_holdout=500, seed=3)
    (X, L, t, _), (Xv, Lv, tv, _), (Xh, *_) = data["train"], data["valid"], data["holdout"]
    one_at_a_time = small_chain("revenue", seed=3).set_params(concurrent_fits=1)
    one_at_a_time.fit(LabelledRows(X, L, t), LabelledRows(Xv, Lv, tv))
    np.testing.assert_array_equal(one_at_a_time.predict(Xh), fitted.predict(Xh))


def test_train_group_reaches_the_chain():
    from hydra import compose, initialize_config_dir

    from ltv.config import CONFIG_DIR
    from ltv.tasks.train import build_model

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        default = build_model(compose("config"))
        serial = build_model(
            compose("config", overrides=["train.concurrent_fits=1", "train.progress_every_s=5"])
        )
    assert (default.concurrent_fits, default.progress_every_s) == (2, 30)
    assert (serial.concurrent_fits, serial.progress_every_s) == (1, 5)


def test_concurrent_tasks_start_in_the_given_order():
    from ltv.models.fitting import cores, fit_threads, run_concurrently

    started = []

    def task(name):
        def run():
            started.append((name, fit_threads()))
            time.sleep(0.05)
            return name

        return run

    names = ["classifier", "regressors", "whale", "extra", "more"]
    out = run_concurrently({n: task(n) for n in names}, concurrent=2)
    assert out == {n: n for n in names}
    assert [n for n, _ in started][:2] == ["classifier", "regressors"]  # the longest fits first
    assert {t for _, t in started} == {max(1, cores() // 2)}  # each its share of the cores
    serial = []
    run_concurrently({n: (lambda n=n: serial.append(n)) for n in names}, concurrent=1)
    assert serial == names
