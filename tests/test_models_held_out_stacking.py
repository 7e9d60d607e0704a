"""ensemble.cross_fit=false: the stacking ensemble trains on the valid window's early-stopping rows (held
out from every first-stage model) instead of cross-fitted train rows, without the out-of-fold fits."""

from __future__ import annotations

import numpy as np
import pytest

from ltv import metrics
from ltv.models import LabelledRows
from tests.helpers.chain_data import small_chain, split_data


@pytest.fixture(scope="module")
def data():
    return split_data(n_train=5000, n_valid=4000, n_holdout=5000, seed=21)


def _fit(data, cross_fit: bool):
    (X, L, t, _), (Xv, Lv, tv, _) = data["train"], data["valid"]
    model = small_chain("stacking", seed=21)
    model.ensemble.cross_fit = cross_fit
    return model.fit(LabelledRows(X, L, t), LabelledRows(Xv, Lv, tv))


def test_held_out_stacking_skips_the_out_of_fold_fits_and_scores_alike(data):
    held_out, cross_fitted = _fit(data, False), _fit(data, True)
    assert "oof_folds" not in held_out.fit_times_ and "held_out_frame" in held_out.fit_times_
    # the ensemble trained on the early-stopping half of the valid window (time folds of those rows)
    assert len(held_out.oof_frame_) == 2000 and sum(len(b) for b in held_out.folds_) == 2000
    X_h, L_h, _, oracle = data["holdout"]
    y = L_h["iap_revenue_d7"].to_numpy()
    scores = {
        name: metrics.rmsle(y, m.predict(X_h)) for name, m in (("held", held_out), ("cross", cross_fitted))
    }
    best = metrics.rmsle(y, oracle["oracle_rmsle"].to_numpy())
    zero = metrics.rmsle(y, np.zeros(len(y)))
    for score in scores.values():  # both capture most of the achievable gain over predicting zero
        assert (zero - score) / (zero - best) > 0.8, scores
    assert abs(scores["held"] - scores["cross"]) < 0.01, scores


def test_held_out_stacking_refuses_a_refit_on_its_rows(data):
    (X, L, t, _), (Xv, Lv, tv, _) = data["train"], data["valid"]
    model = small_chain("stacking", seed=21)
    model.ensemble.cross_fit = False
    model.classifier.refit_on_eval = True
    with pytest.raises(ValueError, match=r"cross_fit=false .* \['classifier'\]"):
        model.fit(LabelledRows(X, L, t), LabelledRows(Xv, Lv, tv))
