"""The generator's tail knob (whale_logit, whale_sigma) and the oracle's exact revenue distribution."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from ltv.synthetic import generate
from ltv.synthetic.generator import MARKER, TAIL_DEFAULTS
from ltv.synthetic.hour import draw_hour
from ltv.synthetic.labels import DISTRIBUTION_COLUMNS, LabelParams, draw_labels, exceedance, oracle, quantile

WHEN = dt.datetime(2025, 10, 1, 5, tzinfo=dt.timezone.utc)


def test_the_default_tail_draws_the_default_data_and_a_heavier_one_moves_only_revenue():
    base_cols, base_labels, base_orc = draw_hour(0, "train", WHEN, 2000)
    cols, labels, orc = draw_hour(0, "train", WHEN, 2000, dict(TAIL_DEFAULTS))
    np.testing.assert_array_equal(labels["iap_revenue_d7"], base_labels["iap_revenue_d7"])
    np.testing.assert_array_equal(orc["e_revenue"], base_orc["e_revenue"])
    cols, labels, orc = draw_hour(0, "train", WHEN, 2000, {"whale_logit": 1.0, "whale_sigma": 2.0})
    np.testing.assert_array_equal(labels["buyer_d7"], base_labels["buyer_d7"])  # same buyers, same features
    assert cols["row_id"].equals(base_cols["row_id"])
    assert orc["whale_weight"].mean() > 2 * base_orc["whale_weight"].mean()
    assert orc["e_revenue"].sum() > 1.5 * base_orc["e_revenue"].sum()
    np.testing.assert_array_equal(orc["sigma_whale"], 2.0)


def test_marker_records_a_tail_only_when_it_is_not_the_default(tmp_path):
    small = dict(train_hours=1, test_hours=1, rows_per_hour=50, workers=1)
    default = json.loads((generate(tmp_path / "a", **small) / MARKER).read_text())["params"]
    heavy = json.loads((generate(tmp_path / "b", whale_sigma=2.0, **small) / MARKER).read_text())["params"]
    assert "tail" not in default
    assert heavy["tail"] == {"whale_logit": 0.0, "whale_sigma": 2.0}
    with pytest.raises(ValueError, match="whale_sigma"):
        generate(tmp_path / "c", whale_sigma=0.0, **small)


def test_oracle_quantiles_and_exceedances_match_monte_carlo():
    rows, reps = 3, 200_000
    params = LabelParams(eta=np.array([-1.0, 0.5, 2.0]), w=np.array([0.0, 0.05, 0.3]), mu=np.array([1.0, 2.5, 0.0]),
                         mu_w=np.array([4.0, 5.0, 6.0]), sigma_w=2.0)  # fmt: skip
    dist = {k: v for k, v in oracle(params).items() if k in DISTRIBUTION_COLUMNS}
    big = LabelParams(*(np.repeat(getattr(params, f), reps) for f in ("eta", "w", "mu", "mu_w")), sigma_w=2.0)
    y = draw_labels(np.random.default_rng(2), big, {"act_days": np.full(rows * reps, np.nan)})[
        "iap_revenue_d7"
    ]
    y = y.reshape(rows, reps)
    for t in (0.0, 1.0, 10.0, 100.0):
        np.testing.assert_allclose(exceedance(dist, t), (y > t).mean(axis=1), atol=0.004)
    for a in (0.5, 0.8, 0.95, 0.99):
        q = quantile(dist, a)
        np.testing.assert_allclose((y <= q[:, None]).mean(axis=1), np.where(q > 0, a, (y <= 0).mean(axis=1)),
                                   atol=0.004)  # fmt: skip
        np.testing.assert_array_equal(q == 0, dist["p_paid"] <= 1 - a)  # zero below the point mass
