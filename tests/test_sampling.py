"""Histogram samplers: composition changes, whales kept, labels aligned, estimand preserved."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ltv import metrics
from ltv.sampling import HHISTUS, HistOS, NegativeUndersampler, SamplingPlan
from tests.helpers.chain_data import fit_chain, small_chain, split_data


def _revenue(n=20000, seed=0):
    """~10% buyers, 10% of them zero, log-normal spend with a whale tail."""
    rng = np.random.default_rng(seed)
    buyer = rng.random(n) < 0.1
    spend = rng.lognormal(2.5, 1.0, n) * np.where(rng.random(n) < 0.03, 30.0, 1.0)
    y = np.where(buyer & (rng.random(n) > 0.1), spend, 0.0)
    X = pd.DataFrame({"row": np.arange(n), "f": rng.normal(size=n)}, index=np.arange(n) * 7 + 3)
    return X, y


def test_histos_oversamples_high_revenue_buyers():
    X, y = _revenue()
    sampler = HistOS(n_bins=10, target_fraction=0.5, max_multiplier=10, random_state=0)
    X_res, y_res, w = sampler.fit_resample(X, y)
    top = np.quantile(y[y > 0], 0.95)
    share_before = np.mean(y >= top)
    share_after = np.mean(y_res >= top)
    assert share_after > 2 * share_before  # the whales' bracket is no longer a rounding error
    assert len(X_res) > len(X)
    # every original row kept once, copies appended; non-buyers never replicated
    idx = sampler.sample_indices_
    assert np.array_equal(np.sort(np.unique(idx)), np.arange(len(X)))
    assert np.all(y[idx[len(X) :]] > 0)
    assert np.array_equal(w, np.ones(len(idx)))  # correction=calibration: unit weights


def test_histos_inverse_weights_restore_bin_totals():
    X, y = _revenue()
    sampler = HistOS(correction="weights", random_state=0)
    _, y_res, w = sampler.fit_resample(X, y)
    bins, bins_res = sampler.transform_bins(y), sampler.transform_bins(y_res)
    for b in range(sampler.n_bins + 1):
        assert w[bins_res == b].sum() == pytest.approx(np.sum(bins == b))


def test_histos_rejects_a_binary_label():
    X, y = _revenue()
    with pytest.raises(ValueError, match="binary label"):
        HistOS().fit_resample(X, (y > 0).astype(float))


def test_histos_is_seeded():
    X, y = _revenue()
    a = HistOS(random_state=1).fit_resample(X, y)[0]["row"].to_numpy()
    b = HistOS(random_state=1).fit_resample(X, y)[0]["row"].to_numpy()
    c = HistOS(random_state=2).fit_resample(X, y)[0]["row"].to_numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bin_edges_come_from_the_fit_rows_only():
    X, y = _revenue()
    sampler = HistOS(n_bins=5)
    sampler.fit_resample(X, y)
    assert np.allclose(sampler.bin_edges_, np.linspace(0, np.log1p(y.max()), 6))
    # later (valid) rows above the train max land in the top bin; zeros in bin 0
    assert sampler.transform_bins([0.0, y.max() * 100]).tolist() == [0, 5]


def test_hhistus_keeps_every_whale_and_trims_low_bins():
    X, y = _revenue()
    buyers = y > 0
    Xb, yb = X[buyers], y[buyers]
    sampler = HHISTUS(n_bins=10, max_bin_ratio=1.0, whale_quantile=0.9, random_state=0)
    X_res, y_res, w = sampler.fit_resample(Xb, yb)
    whales = yb >= sampler.whale_value_
    assert whales.sum() > 50
    assert np.all(np.isin(np.flatnonzero(whales), sampler.sample_indices_))
    assert np.sum(y_res >= sampler.whale_value_) == whales.sum()
    assert len(y_res) < 0.8 * len(yb)  # it did trim
    assert np.all(w[y_res >= sampler.whale_value_] == 1.0)
    # inverse-rate weights: every bin's weight total equals its original size
    bins, bins_res = sampler.transform_bins(yb), sampler.transform_bins(y_res)
    for b in range(sampler.n_bins + 1):
        assert w[bins_res == b].sum() == pytest.approx(np.sum(bins == b))


def test_hhistus_keeps_labels_aligned_with_rows():
    X, y = _revenue()
    y_series = pd.Series(y, index=X.index)  # non-default index: alignment must not rely on it
    sampler = HHISTUS(max_bin_ratio=0.5, random_state=3)
    X_res, y_res, _ = sampler.fit_resample(X, y_series)
    assert np.array_equal(y_res.to_numpy(), y[X_res["row"].to_numpy()])
    assert np.array_equal(sampler.sample_indices_, X_res["row"].to_numpy())
    assert y_res.index.equals(X_res.index)


def test_sampler_input_errors():
    X, y = _revenue(100)
    with pytest.raises(ValueError, match="rows"):
        HHISTUS().fit_resample(X.iloc[:50], y)
    with pytest.raises(ValueError, match="correction"):
        HHISTUS(correction="magic").fit_resample(X, y)


def test_plan_apply_without_sampler_is_identity():
    idx, w = SamplingPlan.apply(None, np.zeros((4, 1)), np.zeros(4))
    assert idx.tolist() == [0, 1, 2, 3] and w.tolist() == [1.0] * 4


@pytest.mark.parametrize(
    "plan",
    [
        SamplingPlan(classifier=HistOS(target_fraction=1.0, max_multiplier=20)),
        SamplingPlan(regressor=HHISTUS(max_bin_ratio=1.0)),
    ],
    ids=["histos", "hhistus"],
)
def test_resampling_keeps_total_revenue_within_10_percent(plan):
    """Estimand check: on an untouched split, the resampled chain's total predicted revenue stays
    within 10% of the unresampled chain's (HistOS corrected by calibration, HHISTUS by weights)."""
    data = split_data(n_train=8000, n_valid=4000, n_holdout=8000, seed=5)
    fits = {}
    for name, sampling in (("plain", None), ("resampled", plan)):
        model = small_chain("revenue", sampling=sampling)
        fit_chain(model, data)
        fits[name] = model.predict(data["holdout"][0])
    ratio = fits["resampled"].sum() / fits["plain"].sum()
    assert 0.9 <= ratio <= 1.1
    assert metrics.total_ratio(data["holdout"][1]["iap_revenue_d7"], fits["resampled"]) == pytest.approx(
        1.0, abs=0.2
    )


def test_hhistus_weights_keep_the_log_revenue_level_unbiased():
    """The rmsle objective has no smearing step, so HHISTUS must be corrected by weights: the mean
    predicted log1p revenue of untouched buyers stays on the truth; unweighted trimming drifts up."""
    data = split_data(n_train=8000, n_valid=4000, n_holdout=8000, seed=5)
    X_h, L_h = data["holdout"][:2]
    buyers = L_h["buyer_d7"].to_numpy() == 1
    truth = np.log1p(L_h["iap_revenue_d7"].to_numpy()[buyers]).mean()
    bias = {}
    for correction in ("weights", "calibration"):
        plan = SamplingPlan(regressor=HHISTUS(max_bin_ratio=0.5, correction=correction))
        model = small_chain("rmsle", sampling=plan)
        fit_chain(model, data)
        bias[correction] = model.predict_parts(X_h)["log_rev_d7"].to_numpy()[buyers].mean() - truth
    assert abs(bias["weights"]) < 0.04
    assert bias["calibration"] > 0.05  # the check would catch a sampler without weights


def test_negative_undersampler_keeps_spenders_and_weights_zeros_back():
    X, y = _revenue(seed=3)
    w_in = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    sampler = NegativeUndersampler(keep_rate=0.25, random_state=7)
    X_res, y_res, w = sampler.fit_resample(X, y, w_in)
    idx = sampler.sample_indices_
    zeros = np.flatnonzero(y == 0)
    assert np.array_equal(idx, np.sort(idx))  # original order
    assert set(np.flatnonzero(y > 0)) <= set(idx)  # every spender kept, at its own weight
    kept_zeros = idx[y[idx] == 0]
    assert len(kept_zeros) == int(np.ceil(0.25 * len(zeros)))
    np.testing.assert_allclose(w[y_res > 0], w_in[idx][y_res > 0])
    np.testing.assert_allclose(w[y_res == 0], w_in[kept_zeros] * len(zeros) / len(kept_zeros))
    assert X_res["row"].tolist() == idx.tolist()
    # the weighted count of zeros is the original one up to sampling noise (exact for unit weights)
    _, _, w_unit = NegativeUndersampler(keep_rate=0.25, random_state=7).fit_resample(X, y)
    assert w_unit[y_res == 0].sum() == pytest.approx(len(zeros), rel=1e-12)
    # seeded: the same draw twice, another seed another draw
    again = NegativeUndersampler(keep_rate=0.25, random_state=7)
    again.fit_resample(X, y)
    other = NegativeUndersampler(keep_rate=0.25, random_state=8)
    other.fit_resample(X, y)
    assert np.array_equal(again.sample_indices_, idx)
    assert not np.array_equal(other.sample_indices_, idx)


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_negative_undersampler_rejects_a_rate_outside_0_1(rate):
    X, y = _revenue(n=100)
    with pytest.raises(ValueError, match="keep_rate must be in"):
        NegativeUndersampler(keep_rate=rate).fit_resample(X, y)
