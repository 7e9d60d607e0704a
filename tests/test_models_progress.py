"""Fit-time accounting and progress: seconds per chain stage, heartbeat lines, booster reports to a trial."""

from __future__ import annotations

import logging
import time

import numpy as np
import optuna
import pytest

from ltv.models import LabelledRows, _progress
from ltv.models.booster import fit_booster
from tests.helpers.chain_data import small_chain, split_data


@pytest.fixture(scope="module")
def fitted_stacking():
    data = split_data(n_train=4000, n_valid=2000, n_holdout=500, seed=3)
    (X, L, t, _), (Xv, Lv, tv, _) = data["train"], data["valid"]
    return small_chain("stacking", seed=3).fit(LabelledRows(X, L, t), LabelledRows(Xv, Lv, tv))


def test_fit_times_name_every_stage(fitted_stacking):
    times = fitted_stacking.fit_times_
    expected = {
        "first_stage", "first_stage.classifier", "first_stage.classifier.calibration", "first_stage.regressors",
        "first_stage.variance", "first_stage.whale", "first_stage.direct", "smearing", "gate", "oof_folds",
        "oof_folds.classifier", "oof_folds.regressors", "oof_folds.whale", "oof_folds.direct",
        "oof_folds.predict", "valid_frames", "ensemble", "ensemble.meta_inputs", "ensemble.base_learners",
        "ensemble.base_learners.enet", "ensemble.base_learners.rf", "ensemble.base_learners.xgb",
        "ensemble.meta_learner", "total",
    }  # fmt: skip
    assert expected <= set(times), expected - set(times)
    assert all(v >= 0 for v in times.values())
    top = sum(v for k, v in times.items() if "." not in k and k != "total")
    assert top <= times["total"] + 1e-6
    assert top >= 0.8 * times["total"]  # the stages cover the fit: nothing big is untimed
    nested = sum(v for k, v in times.items() if k.startswith("oof_folds.") and k.count(".") == 1)
    # the blocks fit concurrently (2 at once): their stages' seconds add up across the threads
    assert times["oof_folds"] * 0.9 <= nested <= 2 * times["oof_folds"] + 1e-6


def test_heartbeat_logs_a_running_stage(caplog):
    caplog.set_level(logging.INFO, logger="ltv.fit")
    with _progress.FitClock(every_s=0.2) as clock, _progress.stage("slow_step", rows=1000):
        time.sleep(0.9)
    beats = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("stage slow_step: 1,000 rows")
    ]
    assert len(beats) >= 2, beats
    done = [r.getMessage() for r in caplog.records if "slow_step done" in r.getMessage()]
    assert len(done) == 1 and "rows/s" in done[0]
    assert clock.times["slow_step"] == pytest.approx(0.9, abs=0.3)


def test_stage_outside_a_clock_records_nothing():
    with _progress.stage("alone", 10):
        pass
    assert _progress._CLOCK.get() is None


def _xy(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + rng.normal(size=n) > 1).astype(int)
    return X, y


def test_booster_progress_reports_round_and_valid_loss(caplog):
    caplog.set_level(logging.INFO, logger="ltv.fit")
    X, y = _xy()
    params = {"objective": "binary", "n_estimators": 400, "learning_rate": 0.01, "n_jobs": 1}
    with _progress.FitClock(every_s=0.05), _progress.stage("classifier", rows=len(X)):
        _, rounds = fit_booster(
            params, X[:2000], y[:2000], eval_set=(X[2000:], y[2000:]), early_stopping_rounds=50
        )
        time.sleep(0.2)  # one more heartbeat after the last round
    assert 1 <= rounds <= 400
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage classifier: 3,000")]
    assert any("round " in m and "/400" in m and "valid binary_logloss" in m for m in lines), lines


def test_trial_handle_prunes_the_named_stage_only():
    X, y = _xy(1)
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # any loss > 0 prunes
    trial = study.ask()
    _progress.set_trial(trial, "classifier")
    try:
        with _progress.FitClock(every_s=30):
            with _progress.stage("whale"):  # another stage: no report, no pruning
                fit_booster({"objective": "binary", "n_estimators": 30, "n_jobs": 1}, X[:2000], y[:2000],
                            eval_set=(X[2000:], y[2000:]), early_stopping_rounds=50)  # fmt: skip
            assert trial.storage.get_trial(trial._trial_id).intermediate_values == {}
            with _progress.stage("classifier"), pytest.raises(optuna.TrialPruned, match="round 10"):
                fit_booster({"objective": "binary", "n_estimators": 300, "n_jobs": 1}, X[:2000], y[:2000],
                            eval_set=(X[2000:], y[2000:]), early_stopping_rounds=50)  # fmt: skip
    finally:
        _progress.set_trial(None)
    values = trial.storage.get_trial(trial._trial_id).intermediate_values
    assert list(values) == [10] and 0.0 < values[10] < 1.0


def test_concurrent_fits_change_no_prediction(fitted_stacking):
    # the small chain's fits use one thread each, as every concurrent fit does on 2 cores: same trees
    data = split_data(n_train=4000, n_valid=2000, n_holdout=500, seed=3)
    (X, L, t, _), (Xv, Lv, tv, _), (Xh, *_) = data["train"], data["valid"], data["holdout"]
    one_at_a_time = small_chain("stacking", seed=3)
    one_at_a_time.concurrent_fits = 1
    one_at_a_time.fit(LabelledRows(X, L, t), LabelledRows(Xv, Lv, tv))
    np.testing.assert_array_equal(one_at_a_time.predict(Xh), fitted_stacking.predict(Xh))


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
    from ltv.models._parallel import cores, fit_threads, run_concurrently

    started = []

    def task(name):
        def run():
            started.append((name, fit_threads()))
            time.sleep(0.05)
            return name

        return run

    names = ["classifier", "direct", "regressors", "whale", "extra"]
    out = run_concurrently({n: task(n) for n in names}, concurrent=2)
    assert out == {n: n for n in names}
    assert [n for n, _ in started][:2] == ["classifier", "direct"]  # the longest fits first
    assert {t for _, t in started} == {max(1, cores() // 2)}  # each its share of the cores
    serial = []
    run_concurrently({n: (lambda n=n: serial.append(n)) for n in names}, concurrent=1)
    assert serial == names
