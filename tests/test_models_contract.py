"""The sklearn contract of every estimator of the model layer: ``__init__`` only stores its keywords (no
validation there: ``fit`` refuses bad values), ``get_params`` / ``set_params`` / ``clone`` round-trip, a fit
leaves the parameters as they were (the chain writes no state into its parts' parameters), and an ``lgbm``
mapping may name any LightGBM key, including the ones the code sets itself (objective, metric, verbose)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from ltv.models import BuyerClassifier, Gate, LabelledRows, LTVModel, RevenueRegressor, WhaleClassifier
from ltv.models.classifier import Calibrator
from tests.helpers import estimators
from tests.helpers.chain_data import make_chain_data, small_chain, split_data

ESTIMATORS = {
    "classifier": estimators.classifier,
    "regressor": estimators.regressor,
    "whale": estimators.whale,
    "gate": estimators.gate,
    "calibrator": lambda: Calibrator("isotonic"),
    "chain": small_chain,
}


def _same(a, b) -> bool:
    """Parameter values equal, estimators compared by type and their own parameters."""
    if hasattr(a, "get_params") and not isinstance(a, type):
        return type(a) is type(b) and _same(a.get_params(deep=False), b.get_params(deep=False))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("name", ESTIMATORS)
def test_get_params_set_params_and_clone_round_trip(name):
    est = ESTIMATORS[name]()
    params = est.get_params(deep=False)
    copy = clone(est)
    assert copy is not est and _same(copy.get_params(deep=False), params)
    rebuilt = type(est)(**params)
    assert _same(rebuilt.get_params(deep=False), params)
    for key, value in params.items():  # set_params of every keyword, then back
        assert _same(type(est)(**params).set_params(**{key: value}).get_params(deep=False), params)
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(no_such_parameter=1)


def test_set_params_reaches_nested_estimators():
    chain = small_chain()
    chain.set_params(classifier__calibration="platt", regressor__early_stopping_rounds=7)
    assert chain.classifier.calibration == "platt" and chain.regressor.early_stopping_rounds == 7
    assert chain.get_params()["classifier__calibration"] == "platt"


def test_init_stores_bad_values_and_fit_refuses_them():
    X, labels, _, _ = make_chain_data(600, seed=1)
    b = labels["buyer_d7"].to_numpy() == 1
    bad = {
        RevenueRegressor(retransform="exp"): (lambda m: m.fit(X[b], labels[b]), "retransform"),
        BuyerClassifier(calibration="balanced"): (
            lambda m: m.fit(X, labels["buyer_d7"], calibration_set=(X, labels["buyer_d7"])), "calibration"),
        Gate(metric="auc"): (lambda m: m.fit([0.1], [0.0], lambda q: q), "metric"),
        WhaleClassifier(enabled=True): (lambda m: m.fit(X[b], labels["iap_revenue_d7"][b]), "quantile"),
    }  # fmt: skip
    for model, (fit, message) in bad.items():
        assert model.get_params()  # constructed: nothing was checked yet
        with pytest.raises(ValueError, match=message):
            fit(model)
    with pytest.raises(ValueError, match="objective"):
        data = split_data(n_train=600, n_valid=400, n_holdout=10, seed=1)
        small_chain(objective="quantile").fit(
            LabelledRows(*data["train"][:3]), LabelledRows(*data["valid"][:3])
        )


def test_a_fit_leaves_every_parameter_as_it_was():
    data = split_data(n_train=3000, n_valid=1500, n_holdout=10, seed=4)
    chain = small_chain(seed=4).set_params(random_state=11)
    chain.classifier.set_params(lgbm={k: v for k, v in chain.classifier.lgbm.items() if k != "random_state"})
    before = clone(chain).get_params(deep=True)
    chain.fit(LabelledRows(*data["train"][:3]), LabelledRows(*data["valid"][:3]))
    assert _same(chain.get_params(deep=True), before)
    assert chain.classifier_.lgbm["random_state"] == 11  # the fitted copy got the chain's seed
    assert "random_state" not in chain.classifier.lgbm
    assert isinstance(chain, LTVModel) and not hasattr(chain.classifier, "booster_")


@pytest.mark.parametrize("extra", [{"metric": "l1"}, {"verbose": 0}, {"objective": "huber"}])
def test_an_lgbm_mapping_may_name_keys_the_code_sets(extra):
    X, labels, _, _ = make_chain_data(1500, seed=2)
    b = labels["buyer_d7"].to_numpy() == 1
    fast = {"n_estimators": 20, "n_jobs": 1, "early_stopping_rounds": None}
    reg = estimators.regressor(**fast, **extra).fit(X[b], labels[b])
    assert reg.boosters_[0].params[next(iter(extra))] == next(iter(extra.values()))
    clf = estimators.classifier(**fast, **{k: v for k, v in extra.items() if k != "objective"})
    assert np.isfinite(clf.fit(X, labels["buyer_d7"]).predict_p(X)).all()
