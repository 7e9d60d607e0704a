"""Gate: one gating function (exponent applied once), fitted values as attributes, whale bypass; the
whale model (WhaleClassifier)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ltv.models.gate as gate_module
from ltv import metrics
from ltv.models import Gate, WhaleClassifier, apply_gate
from ltv.models.chain import hurdle_prediction
from tests.helpers.chain_data import make_chain_data
from tests.helpers.estimators import gate as make_gate
from tests.helpers.estimators import whale as make_whale


def test_apply_gate_applies_the_exponent_exactly_once():
    p = np.linspace(0.0, 1.0, 101)
    for e in (0.5, 1.0, 1.7, 3.0):
        assert np.array_equal(apply_gate(p, exponent=e), p**e)
    assert not np.allclose(apply_gate(p, exponent=2.0), p**4)  # the double-application defect


def test_apply_gate_cap_cutoff_and_whale_bypass():
    p = np.array([0.01, 0.2, 0.9, 0.02])
    whale = np.array([0.0, 0.0, 0.0, 0.95])
    q = apply_gate(p, whale, cap=0.5, cutoff=0.05, exponent=2.0, whale_threshold=0.9)
    assert q.tolist() == pytest.approx([0.0, 0.04, 0.25, 0.02])  # whale row keeps raw p
    assert apply_gate(p, whale, cap=0.5, cutoff=0.05, whale_threshold=np.inf)[3] == 0.0
    assert np.array_equal(apply_gate(p), p)  # defaults are the identity


def _tuning_rows(seed=3, n=6000, inflate=1.0):
    """Oracle parts, with p optionally made overconfident (p ** (1 / inflate))."""
    _, labels, _, oracle = make_chain_data(n, seed=seed)
    p = oracle["p_buyer"].to_numpy() ** (1.0 / inflate)
    m = oracle["m"].to_numpy()
    return p, m, labels["iap_revenue_d7"].to_numpy()


def test_fit_scores_through_apply_gate_and_transform_reproduces_it(monkeypatch):
    calls = []
    real = gate_module.apply_gate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(gate_module, "apply_gate", spy)
    p, m, y = _tuning_rows(inflate=2.0)
    predict = lambda q: hurdle_prediction(q, m, None, "rmsle")  # noqa: E731
    gate = make_gate(metric="rmsle").fit(p, y, predict)
    n_fit = len(calls)
    caps, cutoffs, exps = gate._grid(p, y)
    # the identity, one pass per (cap, exponent) that scores every cutoff, and the chosen point: every
    # score came out of the one gating function
    assert n_fit == 1 + len(caps) * len(exps) + 1 and len(cutoffs) > 1
    q = gate.transform(p)
    assert len(calls) == n_fit + 1 and calls[-1] == gate.params_
    assert np.array_equal(q, real(p, **gate.params_))
    # the stored tuning score is exactly the score of what inference produces
    assert gate.best_score_ == metrics.rmsle(y, predict(q))


def test_gate_corrects_overconfident_probabilities_on_fresh_rows():
    p, m, y = _tuning_rows(seed=3, inflate=2.0)
    gate = make_gate(metric="rmsle").fit(p, y, lambda q: hurdle_prediction(q, m, None, "rmsle"))
    assert gate.best_score_ < gate.identity_score_ - 0.01
    assert gate.params_["exponent"] > 1.0 or gate.params_["cap"] < 1.0
    p2, m2, y2 = _tuning_rows(seed=4, inflate=2.0)
    gated = metrics.rmsle(y2, hurdle_prediction(gate.transform(p2), m2, None, "rmsle"))
    assert gated < metrics.rmsle(y2, hurdle_prediction(p2, m2, None, "rmsle"))


def test_identity_options():
    p, m, y = _tuning_rows()
    predict = lambda q: hurdle_prediction(q, m, None, "rmsle")  # noqa: E731
    assert Gate().fit(p, y, predict).params_ == gate_module.IDENTITY  # the code default: no gate
    assert make_gate(enabled=False).fit(p, y, predict).params_ == gate_module.IDENTITY
    assert make_gate(metric="none").fit(p, y, predict).params_ == gate_module.IDENTITY
    # no grid given: only the identity is searched
    assert Gate(enabled=True, metric="rmsle").fit(p, y, predict).params_ == gate_module.IDENTITY
    # objective=revenue: 'auto' leaves the expectation untouched (no cap / cutoff bias on the total)
    rev = lambda q: hurdle_prediction(q, None, np.expm1(m), "revenue")  # noqa: E731
    assert make_gate(metric="auto").fit(p, y, rev, objective="revenue").params_ == gate_module.IDENTITY


def test_zero_rate_target_sets_the_share_of_zeroed_rows():
    p, m, y = _tuning_rows()
    gate = make_gate(metric="zero_rate", zero_rate_target=0.6)
    gate.fit(p, y, lambda q: hurdle_prediction(q, m, None, "rmsle"))
    assert np.mean(gate.transform(p) == 0) == pytest.approx(0.6, abs=0.01)


def test_whale_model_ranks_whales_and_params_are_json():
    X, labels, _, _ = make_chain_data(12000, seed=8)
    buyers = labels["buyer_d7"].to_numpy() == 1
    Xb, yb = X[buyers], labels["iap_revenue_d7"].to_numpy()[buyers]
    half = len(Xb) // 2
    whale = make_whale(n_jobs=1, n_estimators=100).fit(Xb.iloc[:half], yb[:half])
    assert whale.whale_value_ == np.quantile(yb[:half][yb[:half] > 0], 0.9)
    score = whale.predict_p(Xb.iloc[half:])
    is_whale = (yb[half:] >= whale.whale_value_).astype(int)
    assert metrics.auc(is_whale, score) > 0.65  # whales depend on f3 in the generator
    off = make_whale(enabled=False).fit(Xb, yb)
    assert not off.fitted and off.predict_p(Xb).tolist() == [0.0] * len(Xb)
    p = np.full(len(score), 0.3)
    gate = make_gate().fit(p, yb[half:], lambda q: q * 10, whale_score=score)
    json.dumps(gate.fitted_params())  # logged as buyer_gating.json


def test_whale_input_errors():
    X, labels, _, _ = make_chain_data(500, seed=1)
    with pytest.raises(ValueError, match="quantile"):
        WhaleClassifier(enabled=True).fit(X, labels["iap_revenue_d7"])
    with pytest.raises(ValueError, match="not fitted"):
        WhaleClassifier(quantile=0.9).predict_p(X)


def test_gate_input_errors():
    with pytest.raises(ValueError, match="metric"):
        Gate(metric="auc").fit([0.1], [0.0], lambda q: q)
    with pytest.raises(ValueError, match="cap_min and cap_max"):
        Gate(enabled=True, metric="rmsle", n_cap=3).fit([0.1], [0.0], lambda q: q)
    with pytest.raises(ValueError, match="not fitted"):
        Gate().transform([0.1])


def test_grid_scores_equal_scoring_every_grid_point_directly():
    """The one-pass-per-(cap, exponent, whale) scoring of every cutoff equals the RMSLE of each grid point's
    own gated prediction, and the fit picks the point a direct search over the same order picks."""
    import itertools

    p, m, y = _tuning_rows(seed=5, inflate=1.5)
    whale = np.random.default_rng(5).uniform(size=len(p))
    gate = make_gate(metric="rmsle", whale_grid=[0.5, 0.9])
    predict = lambda q: hurdle_prediction(q, m, None, "rmsle")  # noqa: E731
    caps, cutoffs, exps = gate._grid(p, y)
    whales = [np.inf, 0.5, 0.9]
    scores = Gate._grid_scores(p, y, predict, whale, caps, cutoffs, exps, whales)
    best = (np.inf, None)
    for (i, cap), (j, cutoff), (k, e), (w, t) in itertools.product(*map(enumerate, (caps, cutoffs, exps, whales))):
        params = {"cap": cap, "cutoff": cutoff, "exponent": e, "whale_threshold": t}
        direct = metrics.rmsle(y, predict(apply_gate(p, whale, **params)))
        assert scores[i, j, k, w] == pytest.approx(direct, rel=1e-10)
        if direct < best[0] - 1e-12:
            best = (direct, params)
    fitted = gate.fit(p, y, predict, whale_score=whale)
    assert fitted.params_ == best[1] and fitted.best_score_ == best[0]
    assert fitted.params_["cutoff"] > 0  # the search found a cutoff that pays, so the running sums mattered
