"""Every option of every config group composes, and every component option instantiates."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from ltv.config import CONFIG_DIR, flatten

CONF = Path(CONFIG_DIR)
COMPONENTS = ["features", "sampling", "classifier", "gate", "whale", "regressor", "ensemble"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(*overrides: str, hydra_cfg: bool = False):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_cfg)


def _assert_reaches(obj, node: DictConfig, where: str) -> None:
    """``obj`` is an instance of ``node._target_`` and every other key of ``node`` is the same-named
    parameter of ``obj`` with the configured value (nested ``_target_`` nodes checked the same way)."""
    assert type(obj) is get_class(node._target_), f"{where}: {type(obj)} is not {node._target_}"
    params = obj.get_params(deep=False) if hasattr(obj, "get_params") else vars(obj)
    for key, value in node.items():
        if key.startswith("_"):
            continue
        assert key in params, f"{where}.{key} is configured but {type(obj).__name__} has no such parameter"
        got = params[key]
        if isinstance(value, DictConfig) and "_target_" in value:
            _assert_reaches(got, value, f"{where}.{key}")
            continue
        want = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        assert (list(got) if isinstance(got, tuple) else got) == want, f"{where}.{key}: {got!r} != {want!r}"


@pytest.mark.parametrize("group,option", [(g, o) for g in COMPONENTS for o in _options(g)])
def test_component_option_instantiates_with_its_values(group, option):
    cfg = _compose(f"{group}={option}")
    _assert_reaches(instantiate(cfg[group]), cfg[group], group)


def test_required_options_exist():
    assert {"lgbm", "lgbm_deep"} <= set(_options("classifier"))
    assert {"none", "histos", "histos_aggressive", "hhistus"} <= set(_options("sampling"))
    assert {"stacking", "hurdle"} <= set(_options("ensemble"))
    assert {"all", "minimal"} <= set(_options("features"))


@pytest.mark.parametrize("option", _options("data"))
def test_data_option_has_windows(option):
    from ltv.tasks.data import window

    cfg = _compose(f"data={option}")
    for split in ("train", "valid", "holdout", "test"):
        w = window(cfg.data, split)
        assert w.name == split and 0 < w.fraction <= 1
    # validation by time: train < valid < holdout
    s = cfg.data.splits
    assert s.train.end < s.valid.start <= s.valid.end < s.holdout.start


def _leaves(tree: dict, prefix: str = "") -> dict:
    """``{'a.b': value}`` for every non-mapping value of a nested dict."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(_leaves(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


@pytest.mark.parametrize("option", _options("experiment"))
def test_experiment_composes_to_the_overrides_it_names(option):
    text = (CONF / "experiment" / f"{option}.yaml").read_text()
    assert text.startswith("# @package _global_"), f"experiment/{option}.yaml must be a global package"
    named = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{option}.yaml"), resolve=False)
    groups = {}
    for entry in named.pop("defaults", []):
        ((key, choice),) = entry.items()
        assert key.startswith("override /"), f"experiment/{option}.yaml: {key} is not an override"
        groups[key.removeprefix("override /")] = choice
    values = _leaves(named)
    assert groups or values, f"experiment/{option}.yaml names no override"
    cfg, base = _compose(f"experiment={option}", hydra_cfg=True), _compose(hydra_cfg=True)
    for group, choice in groups.items():
        assert cfg.hydra.runtime.choices[group] == choice, group
        assert base.hydra.runtime.choices[group] != choice, f"{group}={choice} is already the default"
    for key, value in values.items():
        assert OmegaConf.select(cfg, key, throw_on_missing=True) == value, key
    assert cfg.tracking.run_name == option  # runs of an experiment are found by its name
    changed = [k for k in values if k != "tracking.run_name" and OmegaConf.select(base, k) != values[k]]
    assert groups or changed, f"experiment/{option}.yaml changes nothing but the run name"


@pytest.mark.parametrize("option", _options("hparams_search"))
def test_hparams_search_composes_with_params(option):
    cfg = _compose(f"hparams_search={option}", hydra_cfg=True)
    params = cfg.hydra.sweeper.params
    assert params and len(params) >= 2
    # every searched key exists in the composed job config (or is a config group)
    flat = flatten(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
    for key in params:
        assert key in flat or (CONF / key).is_dir() or any(f.startswith(key + ".") for f in flat), key


def test_options_and_overrides_reach_the_built_objects():
    clf = instantiate(_compose("classifier=lgbm_deep", "classifier.booster.num_leaves=31").classifier)
    assert (clf.lgbm_kwargs()["num_leaves"], clf.lgbm_kwargs()["learning_rate"], clf.calibration) == (
        31,
        0.03,
        "platt",
    )
    assert instantiate(_compose().classifier).lgbm_kwargs()["num_leaves"] == 7
    whale = instantiate(_compose("whale.booster.num_leaves=5", "whale.quantile=0.8", "seed=3").whale)
    assert (whale.quantile, whale.lgbm_kwargs()["num_leaves"], whale.lgbm_kwargs()["random_state"]) == (
        0.8,
        5,
        3,
    )
    assert instantiate(_compose("whale=none").whale).enabled is False
    cfg = _compose("sampling=histos_aggressive", "seed=7")
    plan = instantiate(cfg.sampling)
    assert plan.regressor is None and (plan.classifier.n_bins, plan.classifier.target_fraction) == (12, 1.0)
    assert plan.classifier.random_state == 7  # the project seed has one home
    assert instantiate(_compose("sampling=none").sampling).classifier is None


def test_paths_are_absolute_and_tracking_is_sqlite():
    cfg = _compose()
    assert Path(cfg.paths.root).is_absolute()
    assert cfg.tracking.uri.startswith("sqlite:////")
    assert Path(cfg.tracking.artifact_root).is_absolute()


def test_optimized_metric_is_read_from_results_and_never_the_holdout():
    from ltv.tasks.train import _optimized_metric

    results = {"valid": {"rmsle": 0.4, "gini": 0.9}, "holdout": {"rmsle": 0.3}}
    assert _optimized_metric(results, "valid.rmsle") == 0.4
    assert _optimized_metric(results, "valid.gini") == 0.9
    with pytest.raises(ValueError, match="optimized_metric"):
        _optimized_metric(results, "holdout.rmsle")
    with pytest.raises(ValueError, match="rmsle"):
        _optimized_metric(results, "valid.nope")


def test_fast_experiment_is_a_faster_classifier_and_stacking_an_option():
    default, fast = _compose(), _compose("experiment=fast")
    assert default.ensemble._target_.endswith("HurdleEnsemble")
    assert fast.ensemble == default.ensemble
    assert (fast.classifier.booster.learning_rate, default.classifier.booster.learning_rate) == (0.1, 0.05)
    for name in ("stacking", "cross_fit"):
        assert _compose(f"experiment={name}").ensemble._target_.endswith("StackingEnsemble")
    assert _compose("experiment=cross_fit").ensemble.cross_fit is True
    assert _compose("experiment=stacking").ensemble.cross_fit is False


# a code default may only be neutral: off, none, LightGBM's own (an empty booster), no grid
_NEUTRAL = (None, False, 0, (), "none")


@pytest.mark.parametrize("group,option", [(g, o) for g in COMPONENTS[1:] for o in _options(g)])
def test_every_chosen_value_has_one_home(group, option):
    """A value an option file sets is not also the code's default (two homes drift apart, as
    early_stopping_rounds did: 50 in code, 30 in the YAML), unless that default is neutral. The model
    side only: FeatureBuilder still repeats max_categories / min_category_count (issue 14, open)."""
    node = _compose(f"{group}={option}")[group]
    defaults = {
        name: p.default
        for name, p in inspect.signature(get_class(node._target_).__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for key, value in OmegaConf.to_container(node, resolve=True).items():
        if key in defaults and defaults[key] not in _NEUTRAL:
            assert value != (list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]), (
                f"{group}/{option}.yaml: {key}={value!r} is also the code default of {node._target_}"
            )


def test_lightgbm_knobs_live_only_in_the_booster_mapping():
    cfg = _compose()
    for group in ("classifier", "regressor", "whale"):
        top = set(cfg[group]) - {"_target_"}
        assert not top & {"n_estimators", "learning_rate", "num_leaves", "n_jobs", "random_state"}, group
        assert cfg[group].booster.random_state == cfg.seed and cfg[group].booster.n_jobs == 2
