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
COMPONENTS = ["features", "sampling", "classifier", "gate", "whale", "regressor"]


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
    clf = instantiate(_compose("classifier=lgbm_deep", "classifier.lgbm.num_leaves=31").classifier)
    assert (clf.lgbm_params()["num_leaves"], clf.lgbm_params()["learning_rate"], clf.calibration) == (
        31,
        0.03,
        "platt",
    )
    assert instantiate(_compose().classifier).lgbm_params()["num_leaves"] == 7
    whale = instantiate(_compose("whale.lgbm.num_leaves=5", "whale.quantile=0.8", "seed=3").whale)
    assert (whale.quantile, whale.lgbm_params()["num_leaves"], whale.lgbm_params()["random_state"]) == (
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


def testoptimized_metric_is_read_from_results_and_never_the_holdout():
    from ltv.tasks.train import optimized_metric

    results = {"valid": {"rmsle": 0.4, "gini": 0.9}, "holdout": {"rmsle": 0.3}}
    assert optimized_metric(results, "valid.rmsle") == 0.4
    assert optimized_metric(results, "valid.gini") == 0.9
    with pytest.raises(ValueError, match="optimized_metric"):
        optimized_metric(results, "holdout.rmsle")
    with pytest.raises(ValueError, match="rmsle"):
        optimized_metric(results, "valid.nope")


def test_fast_experiment_is_a_faster_classifier():
    default, fast = _compose(), _compose("experiment=fast")
    assert (fast.classifier.lgbm.learning_rate, default.classifier.lgbm.learning_rate) == (0.1, 0.05)
    assert fast.regressor == default.regressor and fast.gate == default.gate


# a code default may only be neutral: off, none, LightGBM's own (an empty mapping), no grid, one at a time
_NEUTRAL = (None, False, 0, (), "none")


def _code_defaults(cls) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _declared_twice(cls, values: dict, where: str) -> list[str]:
    """The keys of ``values`` (what a YAML file sets for ``cls``) whose code default is not neutral: two homes."""
    defaults = _code_defaults(cls)
    return [f"{where}: {k}={v!r}, code default {defaults[k]!r} in {cls.__name__}"
            for k, v in values.items() if k in defaults and defaults[k] not in _NEUTRAL]  # fmt: skip


def _homes(group: str, option: str) -> list[str]:
    """Values set both in conf/<group>/<option>.yaml and as a chosen (not neutral) code default: the LTVModel
    keywords of the ``train`` group too (build_model passes them to the chain)."""
    from ltv.models import LTVModel

    node = _compose(f"{group}={option}")[group]
    values = OmegaConf.to_container(node, resolve=True)
    cls = LTVModel if group == "train" else get_class(node._target_)
    return _declared_twice(cls, values, f"{group}/{option}.yaml")


@pytest.mark.parametrize("group,option", [(g, o) for g in [*COMPONENTS[1:], "train"] for o in _options(g)])
def test_every_chosen_value_has_one_home(group, option):
    """A value an option file sets has a neutral code default (None, off, empty, ...): the YAML is its home.
    A chosen code default beside it is a second home, whether equal (drift waits to happen) or not (the
    code's value then does nothing: early_stopping_rounds was 50 in code and 30 in the YAML). The feature
    builder still repeats max_categories / min_category_count (issue 14, open)."""
    assert _homes(group, option) == []


def test_the_one_home_check_fails_on_a_value_declared_twice():
    class Twice:
        def __init__(self, lgbm=None, early_stopping_rounds=50, calibration="none", horizons=("d7",)):
            pass

    found = _declared_twice(Twice, {"lgbm": {"n_estimators": 9}, "early_stopping_rounds": 30,
                                    "calibration": "isotonic", "horizons": ["d7"]}, "x.yaml")  # fmt: skip
    assert [f.split("=")[0] for f in found] == ["x.yaml: early_stopping_rounds", "x.yaml: horizons"]


def test_helpers_repeat_no_configured_value():
    """tests/helpers/estimators.py builds from the YAML; what it changes for the toy data must differ from
    the YAML (a change equal to the configured value is a second home of that value)."""
    from tests.helpers import estimators

    for group, changes in estimators.TOY.items():
        configured = estimators.configured(group)
        for key, value in _leaves(changes).items():
            assert OmegaConf.select(OmegaConf.create(configured), key) != value, f"{group}.{key}={value!r}"
    built = estimators.classifier()
    assert built.lgbm["learning_rate"] == estimators.configured("classifier")["lgbm"]["learning_rate"]
    assert built.lgbm["colsample_bytree"] == estimators.TOY["classifier"]["lgbm"]["colsample_bytree"]


def test_lightgbm_knobs_live_only_in_the_lgbm_mapping():
    cfg = _compose()
    for group in ("classifier", "regressor", "whale"):
        top = set(cfg[group]) - {"_target_"}
        assert not top & {"n_estimators", "learning_rate", "num_leaves", "n_jobs", "random_state"}, group
        assert cfg[group].lgbm.random_state == cfg.seed and cfg[group].lgbm.n_jobs == 2
