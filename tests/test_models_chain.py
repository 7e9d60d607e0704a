"""Every model-side config option composes and instantiates; the default combination fits end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ltv import metrics
from ltv.models import BuyerClassifier, Gate, LabelledRows, LTVModel, RevenueRegressor, WhaleClassifier
from ltv.sampling import HHISTUS, HistOS, SamplingPlan
from tests.helpers.chain_data import small_chain, split_data

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("sampling", "classifier", "gate", "whale", "regressor")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
REQUIRED = {
    "sampling": {"none", "histos", "histos_aggressive", "hhistus", "histos_hhistus"},
    "classifier": {"lgbm", "lgbm_deep"},
    "gate": {"default", "off"},
    "whale": {"lgbm", "none"},
    "regressor": {"lgbm"},
}
TYPES = {
    "sampling": SamplingPlan,
    "classifier": BuyerClassifier,
    "gate": Gate,
    "whale": WhaleClassifier,
    "regressor": RevenueRegressor,
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
            if key not in ("_target_", "lgbm", "defaults"):
                assert params[key] == value, f"{group}={option}: {key}"
        for key, value in raw.get("lgbm", {}).items():  # the mapping reaches LightGBM unchanged
            assert obj.lgbm_params()[key] == (123 if value == "${seed}" else value), (
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
    gate = _compose("gate", "default", cap_max=0.8, n_cap=3, n_cutoff=0, n_exponent=0)
    assert (gate.cap_min, gate.cap_max, gate.n_cap) == (0.3, 0.8, 3)
    rng = np.random.default_rng(0)
    p = rng.uniform(0.0, 1.0, 4000)
    y = np.where(rng.uniform(size=4000) < 0.5 * p, 20.0, 0.0)  # P(buyer) = p / 2: a cap below 1 wins
    gate.fit(p, y, lambda q: np.expm1(q * np.log1p(20.0)))
    assert min(abs(gate.params_["cap"] - c) for c in (0.3, 0.55, 0.8)) < 1e-12  # a grid point below 1
    assert gate.params_["cutoff"] == 0.0 and gate.best_score_ < gate.identity_score_
    assert _compose("gate", "off").enabled is False


def test_default_configuration_fits_end_to_end():
    """Every default option (plus both samplers) shrunk to few trees and one thread."""
    fast = {"lgbm.n_estimators": 60, "lgbm.n_jobs": 1}
    model = LTVModel(
        classifier=_compose("classifier", "lgbm", **fast),
        regressor=_compose("regressor", "lgbm", **fast),
        gate=_compose("gate", "default"),
        whale=_compose("whale", "lgbm", **fast),
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
    per-row variance model (refits plus a booster per horizon) is not fitted; the revenue head fits it. The
    configuration is left as it was (the chain writes no parameter of its parts)."""
    data = split_data(n_train=4000, n_valid=2000, n_holdout=10, seed=5)
    fitted = {}
    for objective in ("rmsle", "revenue"):
        model = small_chain(objective, seed=5)
        assert model.regressor.retransform == "mixture"
        fitted[objective] = model.fit(LabelledRows(*data["train"][:3]), LabelledRows(*data["valid"][:3]))
    rmsle, revenue = fitted["rmsle"], fitted["revenue"]
    assert rmsle.regressor.retransform == rmsle.regressor_.retransform == "mixture"
    assert rmsle.regressor_.variance_models_ is None and rmsle.regressor_.mixtures_ is None
    assert "q90" not in rmsle.predict_parts(data["valid"][0].iloc[:5])
    assert "first_stage.variance" not in rmsle.fit_times_
    assert min(rmsle.regressor_.smearing_.values()) > 1.0  # rev_<h> parts: exp(m) S - 1, S fitted
    assert len(revenue.regressor_.variance_models_) == 3
    assert len(revenue.regressor_.mixtures_) == 3 and len(revenue.regressor_.level_) == 3
    assert revenue.fit_times_["first_stage.variance"] > 0
