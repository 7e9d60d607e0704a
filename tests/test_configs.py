"""Every option of every config group composes, and every component option instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ltv.config import CONFIG_DIR, flatten

CONF = Path(CONFIG_DIR)
COMPONENTS = ["features", "sampling", "classifier", "gate", "regressor", "ensemble"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(*overrides: str, hydra_cfg: bool = False):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_cfg)


@pytest.mark.parametrize("group,option", [(g, o) for g in COMPONENTS for o in _options(g)])
def test_component_option_instantiates(group, option):
    cfg = _compose(f"{group}={option}")
    node = cfg[group]
    if node is None or "_target_" not in node:
        assert group == "sampling", f"{group}={option} has no _target_"
        return
    obj = instantiate(node)
    assert type(obj).__module__.startswith("ltv."), type(obj)


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


@pytest.mark.parametrize("option", _options("experiment"))
def test_experiment_composes(option):
    cfg = _compose(f"experiment={option}")
    assert cfg.tracking.run_name is not None


@pytest.mark.parametrize("option", _options("hparams_search"))
def test_hparams_search_composes_with_params(option):
    cfg = _compose(f"hparams_search={option}", hydra_cfg=True)
    params = cfg.hydra.sweeper.params
    assert params and len(params) >= 2
    # every searched key exists in the composed job config (or is a config group)
    flat = flatten(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
    for key in params:
        assert key in flat or (CONF / key).is_dir() or any(f.startswith(key + ".") for f in flat), key


def test_options_change_what_runs():
    base, deep = _compose(), _compose("classifier=lgbm_deep")
    assert OmegaConf.to_container(base.classifier) != OmegaConf.to_container(deep.classifier)
    plain, aggressive = _compose("sampling=histos"), _compose("sampling=histos_aggressive")
    assert OmegaConf.to_container(plain.sampling) != OmegaConf.to_container(aggressive.sampling)


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


def test_fast_experiment_is_the_hurdle_head_with_a_faster_classifier():
    cfg = _compose("experiment=fast")
    assert cfg.ensemble._target_.endswith("HurdleEnsemble")
    assert cfg.classifier.learning_rate == 0.1 and _compose().classifier.learning_rate == 0.02
