"""Unit tests of the ltv_optuna sweeper's pieces: search-space syntax, storage, sampler, objective values."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.ltv_optuna_sweeper._search_space import format_value, parse_search_space
from hydra_plugins.ltv_optuna_sweeper._study import (
    build_sampler,
    grid_points,
    objective_value,
    resolve_storage,
    tell,
)
from ltv.tracking.sweep import param_key, tracking_from_config


def dist(override: str):
    space = parse_search_space([override])
    assert not space.fixed
    (value,) = space.distributions.values()
    return value


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("a=choice(1, 2, 3)", CategoricalDistribution([1, 2, 3])),
        ("a=x,y", CategoricalDistribution(["x", "y"])),
        ("sampling=choice(none, histos)", CategoricalDistribution(["none", "histos"])),
        ("a=choice(true, false)", CategoricalDistribution([True, False])),
        # Hydra's range is end-exclusive: 1, 2, 3, 4.
        ("a=range(1, 5)", IntDistribution(1, 4)),
        ("a=range(5)", IntDistribution(0, 4)),
        ("a=range(0, 10, step=3)", IntDistribution(0, 9, step=3)),
        ("a=range(5, 1, step=-1)", IntDistribution(2, 5)),
        ("a=range(0.1, 0.5, step=0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
        ("a=interval(0.1, 1)", FloatDistribution(0.1, 1.0)),
        ("a=interval(1, 5)", FloatDistribution(1.0, 5.0)),
        ("a=tag(log, interval(0.001, 1))", FloatDistribution(0.001, 1.0, log=True)),
        ("a=tag(int, interval(8, 256))", IntDistribution(8, 256)),
        ("a=tag(int, log, interval(8, 256))", IntDistribution(8, 256, log=True)),
    ],
)
def test_each_syntax_maps_to_its_distribution(override, expected):
    assert dist(override) == expected


def test_shuffled_range_is_categorical_over_the_hydra_values():
    got = dist("a=shuffle(range(1, 4))")
    assert isinstance(got, CategoricalDistribution)
    assert sorted(got.choices) == [1, 2, 3]


def test_fixed_values_and_later_overrides_win():
    space = parse_search_space(["a=interval(0, 1)", "b=3", "+c@pkg=x", "a=0.5", "b=choice(1, 2)"])
    assert space.fixed == {"a": "0.5", "+c@pkg": "x"}
    assert space.distributions == {"b": CategoricalDistribution([1, 2])}


def test_trial_overrides_round_trip_through_hydra_grammar():
    space = parse_search_space(
        [
            "lr=tag(log, interval(1e-5, 1))",
            "flag=choice(true, false)",
            'name=choice("a b", "x,y", "p=q")',
            "cols=choice([1, 2], [3])",
            'data="q x"',
        ]
    )
    assert space.distributions["cols"] == CategoricalDistribution(["[1,2]", "[3]"])
    overrides = space.overrides({"lr": 1e-05, "flag": False, "name": "x,y", "cols": "[1,2]"})
    assert overrides == ["lr=1e-05", "flag=False", "name=x\\,y", "cols=[1,2]", 'data="q x"']
    values = {o.get_key_element(): o.value() for o in OverridesParser.create().parse_overrides(overrides)}
    assert values == {"lr": 1e-05, "flag": False, "name": "x,y", "cols": [1, 2], "data": "q x"}
    assert format_value(None) == "null" and format_value(True) == "true" and format_value(0.1) == "0.1"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("a=tag(log, interval(0, 1))", "lo > 0"),
        ("a=tag(int, interval(0.5, 3))", "whole-number"),
        ("a=tag(oops, interval(0, 1))", "unknown tag"),
        ("a=tag(log, choice(1, 2))", "only supported on interval"),
        ("a=range(3, 3)", "empty"),
    ],
)
def test_unsupported_sweeps_raise_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_search_space([override])
    assert "'a'" in str(err.value)


def test_fingerprint_depends_on_the_space_only():
    a = parse_search_space(["x=interval(0, 1)", "y=choice(1, 2)", "data=small"])
    b = parse_search_space(["y=choice(1, 2)", "x=interval(0, 1)"])
    c = parse_search_space(["x=interval(0, 2)", "y=choice(1, 2)"])
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_storage_defaults_to_mlruns_under_the_original_cwd(tmp_path):
    assert resolve_storage(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlruns/optuna.db"
    assert resolve_storage("sqlite:///db/s.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/db/s.db"
    assert resolve_storage("sqlite:////abs/s.db", tmp_path) == "sqlite:////abs/s.db"
    assert (tmp_path / "mlruns").is_dir()
    assert resolve_storage(None, tmp_path, tmp_path / "db") == f"sqlite:///{tmp_path}/db/optuna.db"


def first_x(sampler) -> float:
    study = optuna.create_study(sampler=sampler)
    return study.ask({"x": FloatDistribution(0, 1)}).params["x"]


def test_sampler_seed_is_offset_by_the_trials_already_in_the_study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 42})
    space = parse_search_space(["x=interval(0, 1)"])
    fresh, resumed = build_sampler(cfg, space, 0), build_sampler(cfg, space, 3)
    assert first_x(fresh) == first_x(optuna.samplers.RandomSampler(seed=42))
    assert first_x(resumed) == first_x(optuna.samplers.RandomSampler(seed=45))
    tpe = build_sampler(OmegaConf.create({"_target_": "optuna.samplers.TPESampler", "seed": 1}), space, 0)
    assert isinstance(tpe, optuna.samplers.TPESampler)


def test_grid_sampler_gets_the_discrete_grid():
    space = parse_search_space(["a=range(1, 4)", "b=choice(x, y)", "c=range(0.5, 1.0, step=0.25)"])
    assert grid_points(space) == {"a": [1, 2, 3], "b": ["x", "y"], "c": [0.5, 0.75]}
    grid = build_sampler(OmegaConf.create({"_target_": "optuna.samplers.GridSampler", "seed": 0}), space, 0)
    assert isinstance(grid, optuna.samplers.GridSampler)
    with pytest.raises(ValueError, match="'x' is continuous"):
        grid_points(parse_search_space(["x=interval(0, 1)"]))


def job_return(status: JobStatus, value) -> JobReturn:
    ret = JobReturn(status=status)
    ret.return_value = value
    return ret


def test_objective_value_accepts_floats_and_rejects_failures():
    assert objective_value(job_return(JobStatus.COMPLETED, 0.25)) == (0.25, None)
    assert objective_value(job_return(JobStatus.COMPLETED, 3)) == (3.0, None)
    for bad, why in [(None, "not a float"), (math.nan, "NaN"), ("abc", "not a float")]:
        value, error = objective_value(job_return(JobStatus.COMPLETED, bad))
        assert value is None and why in error
    value, error = objective_value(job_return(JobStatus.FAILED, KeyError("boom")))
    assert value is None and "KeyError" in error and "boom" in error


def test_tracking_settings_from_config_with_fallbacks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cwd = Path.cwd()
    uri, exp, root = tracking_from_config(OmegaConf.create({"tracking": {"uri": "sqlite:///m/mlflow.db"}}))
    assert (uri, exp, root) == (f"sqlite:///{cwd}/m/mlflow.db", "ltv", cwd / "m")
    uri, exp, root = tracking_from_config(
        OmegaConf.create(
            {"tracking": {"uri": "http://host:5000", "experiment": "e", "artifact_root": "arts"}}
        )
    )
    assert (uri, exp, root) == ("http://host:5000", "e", cwd / "arts")
    uri, exp, root = tracking_from_config(None)
    assert (uri, exp, root) == (f"sqlite:///{cwd}/mlruns/mlflow.db", "ltv", cwd / "mlruns")
    assert param_key("best.+model@pkg.lr") == "best._model_pkg.lr"


def test_resumed_grid_search_visits_every_point_once():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_search_space(["a=range(1, 4)", "b=choice(x, y)"])  # 6 points
    cfg = OmegaConf.create({"_target_": "optuna.samplers.GridSampler", "seed": 7})
    study = optuna.create_study()
    for _ in range(3):  # three invocations of 2 trials, each with a freshly built sampler
        study.sampler = build_sampler(cfg, space, len(study.trials))
        for _ in range(2):
            trial = study.ask(space.distributions)
            tell(study, trial, float(trial.params["a"]))
    points = [(t.params["a"], t.params["b"]) for t in study.trials]
    assert sorted(points) == [(a, b) for a in (1, 2, 3) for b in ("x", "y")]
