"""The chain's estimators as conf/ configures them (the YAML option files are the one home of every chosen
value: nothing here repeats one), with the changes a model test makes on top, each named in ``TOY`` with its
reason, or given as keywords: a keyword that is not the estimator's own parameter goes into its ``lgbm``
mapping; a mapping given for a mapping parameter is merged over the configured one.
``tests/test_configs.py::test_helpers_repeat_no_configured_value`` fails when a value here equals the YAML's."""

from __future__ import annotations

import copy
import inspect
from functools import lru_cache
from pathlib import Path

from hydra.utils import get_class
from omegaconf import OmegaConf

from ltv.config import CONFIG_DIR

OPTIONS = {"classifier": "lgbm", "regressor": "lgbm", "whale": "lgbm", "gate": "default"}
# The toy data of tests/helpers/chain_data.py has 11 feature columns, not 300: a tree that draws one column in
# ten would see one feature, and 100 rows a leaf starve its few hundred buyers; the seed is the tests' own.
TOY = {
    "classifier": {"lgbm": {"colsample_bytree": 0.5, "min_child_samples": 50, "num_leaves": 31, "random_state": 0},
                   "early_stopping_rounds": 50},
    "regressor": {"lgbm": {"random_state": 0}, "early_stopping_rounds": 50},
    "whale": {"lgbm": {"random_state": 0}},
}  # fmt: skip


@lru_cache
def configured(group: str) -> dict:
    """``conf/<group>/<OPTIONS[group]>.yaml`` as plain data (``${seed}`` resolved to the project seed)."""
    root = OmegaConf.load(Path(CONFIG_DIR) / "config.yaml")
    node = OmegaConf.load(Path(CONFIG_DIR) / group / f"{OPTIONS[group]}.yaml")
    return OmegaConf.to_container(OmegaConf.create({"seed": root.seed, "node": node}), resolve=True)["node"]


def _build(group: str, params: dict):
    node = copy.deepcopy(configured(group))
    cls = get_class(node.pop("_target_"))
    node.pop("defaults", None)
    own = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for source in (TOY.get(group, {}), params):
        for key, value in source.items():
            if key in own and isinstance(value, dict) and isinstance(node.get(key), dict):
                node[key] = {**node[key], **value}
            elif key in own:
                node[key] = value
            else:
                node.setdefault("lgbm", {})[key] = value
    return cls(**node)


def classifier(**params):
    return _build("classifier", params)


def regressor(**params):
    return _build("regressor", params)


def whale(**params):
    return _build("whale", params)


def gate(**params):
    return _build("gate", params)
