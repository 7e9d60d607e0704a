"""Every model-side config option composes and instantiates; the default combination fits end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ltv import metrics
from ltv.models import (
    BuyerClassifier,
    Gate,
    HurdleEnsemble,
    LabelledRows,
    LTVModel,
    RevenueRegressor,
    StackingEnsemble,
    WhaleClassifier,
)
from ltv.sampling import HHISTUS, HistOS, SamplingPlan
from tests.helpers.chain_data import small_chain, split_data

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("sampling", "classifier", "gate", "whale", "regressor", "ensemble")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
REQUIRED = {
    "sampling": {"none", "histos", "histos_aggressive", "hhistus", "histos_hhistus"},
    "classifier": {"lgbm", "lgbm_deep"},
    "gate": {"default", "off", "none"},
    "whale": {"lgbm", "none"},
    "regressor": {"lgbm"},
    "ensemble": {"stacking", "hurdle"},
}
TYPES = {
    "sampling": SamplingPlan,
    "classifier": BuyerClassifier,
    "gate": Gate,
    "whale": WhaleClassifier,
    "regressor": RevenueRegressor,
    "ensemble": (StackingEnsemble, HurdleEnsemble),
}


def _compose(group: str, option: str, **overrides):
    """The group's node under a root with the top-level ``seed`` the lead's config provides."""
    node = OmegaConf.load(CONF / group / f"{option}.yaml")
    node.pop("defaults", None)  # whale/none.yaml extends lgbm.yaml: its keys are lgbm's
    root = OmegaConf.create({"seed": 123, group: node})
    for key, value in overrides.items():
        OmegaConf.update(root, f"{group}.{key}", value)
    return instantiate(root[group])


def test_required_options_exist():
    present = {g: {o for gg, o in OPTIONS if gg == g} for g in GROUPS}
    for group, options in REQUIRED.items():
        assert options <= present[group], f"conf/{group} lacks {options - present[group]}"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_instantiates(group, option):
    text = (CONF / group / f"{option}.yaml").read_text()
    first_key = next(line for line in text.splitlines() if line and not line.startswith("#"))
    assert first_key.startswith("_target_:")
    obj = _compose(group, option)
    assert isinstance(obj, TYPES[group])
    raw = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"), resolve=False)
    if group in ("classifier", "regressor", "gate", "whale"):
        params = obj.get_params()
        for key, value in raw.items():
            if key not in ("_target_", "booster", "defaults"):
                assert params[key] == value, f"{group}={option}: {key}"
        booster = raw.get("booster", {})
        for key, value in booster.items():  # the mapping reaches LightGBM unchanged
            assert obj.lgbm_kwargs()[key] == (123 if value == "${seed}" else value), (
                f"{group}={option}: {key}"
            )


def test_sampling_options_build_the_right_samplers():
    assert _compose("sampling", "none").classifier is None
    assert isinstance(_compose("sampling", "histos").classifier, HistOS)
    both = _compose("sampling", "histos_hhistus")
    assert isinstance(both.classifier, HistOS) and isinstance(both.regressor, HHISTUS)
    assert both.regressor.random_state == 123
    assert _compose("sampling", "histos_aggressive").classifier.target_fraction == 1.0


def test_gate_search_ranges_are_plain_keys():
    gate = _compose("gate", "default", cap_max=0.8, n_cap=3)
    caps, cutoffs, exps = gate._grid(np.linspace(0, 1, 10), np.zeros(10))
    assert caps[0] == 1.0 and max(caps[1:]) == pytest.approx(0.8) and len(caps) == 4
    assert cutoffs[0] == 0.0 and exps[0] == 1.0
    assert _compose("gate", "off").enabled is False


def test_default_configuration_fits_end_to_end():
    """Every default option (plus both samplers) shrunk to few trees and one thread."""
    fast = {"booster.n_estimators": 60, "booster.n_jobs": 1}
    model = LTVModel(
        classifier=_compose("classifier", "lgbm", **fast),
        regressor=_compose("regressor", "lgbm", **fast),
        gate=_compose("gate", "default"),
        whale=_compose("whale", "lgbm", **fast),
        ensemble=_compose(
            "ensemble", "stacking", **{"rf.n_estimators": 20, "xgb.n_estimators": 30, "n_jobs": 1}
        ),
        sampling=_compose("sampling", "histos_hhistus"),
        objective="rmsle",
        random_state=123,
    )
    data = split_data(n_train=5000, n_valid=3000, n_holdout=5000, seed=13)
    model.fit(LabelledRows(*data["train"][:3]), LabelledRows(*data["valid"][:3]))
    X_h, L_h, _, oracle = data["holdout"]
    y = L_h["iap_revenue_d7"].to_numpy()
    pred = model.predict(X_h)
    zero, best = metrics.rmsle(y, 0 * y), metrics.rmsle(y, oracle["oracle_rmsle"])
    assert (zero - metrics.rmsle(y, pred)) / (zero - best) > 0.8
    assert model.fitted_params_["classifier"]["calibration"] == "isotonic"


def test_the_rmsle_hurdle_fits_no_variance_model_and_the_revenue_head_does():
    """The RMSLE hurdle reads log revenue only: its regressor's dollars come from smearing, and the
    per-row variance model (refits plus a booster per horizon) is not fitted; the revenue head keeps it."""
    data = split_data(n_train=4000, n_valid=2000, n_holdout=10, seed=5)
    fitted = {}
    for objective in ("rmsle", "revenue"):
        model = small_chain("hurdle", objective, seed=5)
        assert model.regressor.retransform == "mixture"
        fitted[objective] = model.fit(LabelledRows(*data["train"][:3]), LabelledRows(*data["valid"][:3]))
    rmsle, revenue = fitted["rmsle"], fitted["revenue"]
    assert rmsle.regressor.retransform == "mixture"  # the configuration is left as it was
    assert rmsle.regressor_.retransform == "smearing" and rmsle.regressor_.variance_ is None
    assert rmsle.regressor_.mixtures_ is None and "q90" not in rmsle.predict_parts(data["valid"][0].iloc[:5])
    assert "first_stage.variance" not in rmsle.fit_times_
    assert revenue.regressor_.retransform == "mixture" and len(revenue.regressor_.variance_) == 3
    assert len(revenue.regressor_.mixtures_) == 3 and len(revenue.regressor_.level_) == 3
    assert revenue.fit_times_["first_stage.variance"] > 0
