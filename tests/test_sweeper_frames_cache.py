"""A sweep's trials load and featurise the data once when they do not change data, features or seed."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from ltv.config import CONFIG_DIR
from ltv.tasks import frames_cache


def _cfg(*overrides):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["data=tiny", *overrides])


def test_trials_that_only_change_models_share_one_load():
    loads = []

    def load():
        loads.append(1)
        return object()

    first = frames_cache.cached(_cfg("classifier.lgbm.learning_rate=0.1"), load)
    again = frames_cache.cached(_cfg("classifier.lgbm.learning_rate=0.3", "gate.cap_min=0.2"), load)
    assert again is first and len(loads) == 1
    other = frames_cache.cached(_cfg("features.groups.histograms=false"), load)  # extraction changes
    assert other is not first and len(loads) == 2
    frames_cache.cached(_cfg("seed=7"), load)  # the seed samples rows
    frames_cache.cached(_cfg("data.splits.train.fraction=0.5"), load)
    assert len(loads) == 4 and len(frames_cache._LAST) == 1  # only the last load is held
