"""Every search space under conf/hparams_search composes, parses to the distributions its comment states,
and names keys that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import ltv.config  # noqa: F401  (registers the ${ltv_root:} resolver)
from hydra_plugins.ltv_optuna_sweeper._impl import LtvOptunaSweeperImpl
from hydra_plugins.ltv_optuna_sweeper._search_space import parse_search_space

CONF = Path(__file__).resolve().parent.parent / "conf"
README = CONF.parent / "README.md"
SPACES = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))


def composed(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_the_readme_lists_every_space():
    row = next(line for line in README.read_text().splitlines() if line.startswith("| `hparams_search` |"))
    assert SPACES and set(re.findall(r"`(\w+)`", row.split("|")[2])) == set(SPACES)


# one documented dimension per comment line: "#   <key>   <distribution in words>   [remark]"
_RANGE = re.compile(r"^(integer, log scale|integer|log-uniform|uniform) \[([^,\]]+), ([^\]]+)\]")


def _documented(name: str, keys) -> dict:
    """The distributions ``<name>.yaml`` states in its header comment, for the searched ``keys``."""
    out = {}
    for line in (CONF / "hparams_search" / f"{name}.yaml").read_text().splitlines():
        parts = re.split(r"\s{2,}", line.removeprefix("#").strip())
        if not line.startswith("#") or parts[0] not in keys:
            continue
        words = parts[1]
        match = _RANGE.match(words)
        if match is None:  # a choice: "a | b | c"
            out[parts[0]] = CategoricalDistribution([yaml.safe_load(w) for w in words.split(" | ")])
            continue
        kind, low, high = match.group(1), float(match.group(2)), float(match.group(3))
        if kind.startswith("integer"):
            out[parts[0]] = IntDistribution(int(low), int(high), log=kind.endswith("log scale"))
        else:
            out[parts[0]] = FloatDistribution(low, high, log=kind == "log-uniform")
    return out


@pytest.mark.parametrize("name", SPACES)
def test_params_parse_to_the_distributions_the_file_documents(name):
    params = composed(f"hparams_search={name}").hydra.sweeper.params
    space = parse_search_space(f"{k}={v}" for k, v in params.items())
    documented = _documented(name, set(params))
    assert set(documented) == set(params), f"{name}.yaml documents {sorted(documented)}"
    for key, dist in space.distributions.items():
        assert dist == documented[key], f"{name}.yaml: {key} is {dist}, its comment says {documented[key]}"


def test_plain_sweeper_selection_gets_a_seeded_tpe():
    sweeper = composed("hydra/sweeper=ltv_optuna").hydra.sweeper
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 42
    assert sweeper.direction == "minimize" and sweeper.max_failure_rate == 0.25
    random = composed("hydra/sweeper=ltv_optuna", "hydra/sweeper/sampler=random").hydra.sweeper.sampler
    assert random._target_ == "optuna.samplers.RandomSampler"


@pytest.mark.parametrize("name", SPACES)
def test_space_composes_and_every_key_exists_with_a_matching_type(name):
    cfg = composed(f"hparams_search={name}")
    sweeper = cfg.hydra.sweeper
    assert cfg.hydra.mode.name == "MULTIRUN" and sweeper._target_.endswith("LtvOptunaSweeper")
    assert sweeper.direction == "minimize" and sweeper.study_name == name
    assert sweeper.sampler.seed == cfg.seed  # the project seed has one home
    settings = OmegaConf.to_container(sweeper, resolve=True)
    LtvOptunaSweeperImpl(**{k: v for k, v in settings.items() if k not in ("_target_", "_recursive_")})
    space = parse_search_space(f"{k}={v}" for k, v in sweeper.params.items())
    assert len(space.distributions) == len(sweeper.params) and not space.fixed
    for key, dist in space.distributions.items():
        if "." not in key:  # a config group: every option must compose
            for option in dist.choices:
                assert OmegaConf.select(composed(f"{key}={option}"), key) is not None
            continue
        current = OmegaConf.select(cfg, key)
        assert current is not None, f"{name}.yaml sweeps {key}, which the config does not have"
        if isinstance(dist, IntDistribution):
            assert isinstance(current, int) and not isinstance(current, bool), key
        elif isinstance(dist, FloatDistribution):
            assert isinstance(current, float | int) and not isinstance(current, bool), key
            assert dist.low < dist.high
        elif isinstance(dist, CategoricalDistribution):
            assert {type(c) for c in dist.choices} == {type(current)}, key


@pytest.mark.parametrize("name", SPACES)
def test_searched_estimator_keys_reach_the_built_objects(name):
    """A value the sweeper samples for ``classifier.lgbm.num_leaves`` (or ``gate.cap_min``) is what the
    instantiated estimator hands LightGBM (or keeps as its own parameter)."""
    from hydra.utils import instantiate

    params = composed(f"hparams_search={name}").hydra.sweeper.params
    space = parse_search_space(f"{k}={v}" for k, v in params.items())
    checked = 0
    for key, dist in space.distributions.items():
        group, _, rest = key.partition(".")
        if not rest:
            continue
        value = dist.choices[-1] if isinstance(dist, CategoricalDistribution) else dist.high
        obj = instantiate(composed(f"{key}={value}")[group])
        if rest.startswith("lgbm."):
            got = obj.lgbm_params()[rest.removeprefix("lgbm.")]
        else:
            got = getattr(obj, rest)
        assert got == value, f"{name}.yaml: {key}={value} reached the {group} as {got!r}"
        checked += 1
    assert checked >= 2
    # a trial may pick any option of a swept group together with values for that group's keys
    for key, dist in space.distributions.items():
        if "." in key:
            continue
        together = [f"{k}={d.choices[0] if isinstance(d, CategoricalDistribution) else d.low}"
                    for k, d in space.distributions.items() if k.startswith(key + ".")]  # fmt: skip
        for option in dist.choices:
            assert OmegaConf.select(composed(f"{key}={option}", *together), key) is not None, (key, option)
