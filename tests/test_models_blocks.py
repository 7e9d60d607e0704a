"""The chain on blocks (a window's model matrix as per-file float32 blocks, on disk or in memory) fits and
predicts as it does on the same rows as one pandas frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ltv.models import LabelledRows
from ltv.models.blocks import Blocks, Part, dataset
from ltv.models.lgbm_predict import pandas_matrix
from ltv.sampling import NegativeUndersampler, SamplingPlan
from tests.helpers.chain_data import small_chain, split_data


def _blocks(X: pd.DataFrame, folder, name: str, cuts: list[int]) -> Blocks:
    """X cut at ``cuts`` into parts: even ones written as .npy files, odd ones kept in memory."""
    values = np.ascontiguousarray(pandas_matrix(X, list(X.columns), None), dtype=np.float32)
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    parts = []
    for k, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, len(X)], strict=True)):
        if k % 2 == 0:
            path = folder / f"{name}-{k}.npy"
            np.save(path, values[lo:hi])
            parts.append(Part(str(path), hi - lo))
        else:
            parts.append(Part(values[lo:hi], hi - lo))
    return Blocks(list(X.columns), [list(X[c].cat.categories) for c in categorical], parts)


@pytest.fixture(scope="module")
def data():
    return split_data(n_train=6000, n_valid=3000, n_holdout=3000, seed=3)


def test_a_part_reads_its_rows_and_blocks_take_across_parts(tmp_path):
    values = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(tmp_path / "a.npy", values)
    part = Part(str(tmp_path / "a.npy"), 10, rows=np.array([1, 4, 5, 9]))
    np.testing.assert_array_equal(part.read(1, 3), values[[4, 5]])
    np.testing.assert_array_equal(part.read(), values[[1, 4, 5, 9]])
    blocks = Blocks(["a", "b", "c", "d"], [], [part, Part(values, 10)])
    cut = blocks.take([2, 3, 4, 4, 13])  # repeats allowed (oversampling)
    assert len(cut) == 5
    np.testing.assert_array_equal(np.concatenate([p.read() for p in cut.parts]), values[[5, 9, 0, 0, 9]])
    with pytest.raises(ValueError, match="sorted"):
        blocks.take([3, 1])


def test_a_dataset_binned_from_blocks_trains_the_booster_of_the_matrix(data, tmp_path):
    import lightgbm as lgb

    X, labels = data["train"][0], data["train"][1]
    y = labels["buyer_d7"].to_numpy()
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 0}
    whole = lgb.train(params, dataset(X, y, params=params), num_boost_round=20)
    blocked = lgb.train(params, dataset(_blocks(X, tmp_path, "t", [1000, 2500, 4000]), y, params=params),
                        num_boost_round=20)  # fmt: skip
    matrix = pandas_matrix(X, list(X.columns), None)
    np.testing.assert_array_equal(whole.predict(matrix), blocked.predict(matrix))


@pytest.mark.parametrize("objective,negatives", [("rmsle", False), ("revenue", False), ("rmsle", True)])
def test_the_chain_on_blocks_predicts_as_on_the_frame(data, tmp_path, objective, negatives):
    """Also with negative undersampling: weighted train rows, whose valid Dataset binned from blocks by
    reference had a zero weight field (NaN valid loss, early stopping at round 1) until fit_booster set it."""
    (X, L, t, _), (Xv, Lv, tv, _), (Xh, _, _, _) = data["train"], data["valid"], data["holdout"]

    def chain():
        plan = (
            SamplingPlan(classifier=NegativeUndersampler(keep_rate=0.25, random_state=0))
            if negatives
            else None
        )
        return small_chain(objective=objective, sampling=plan)

    on_frame = chain().fit(LabelledRows(X, L, t), LabelledRows(Xv, Lv, tv))
    name = f"{objective}-{negatives}"
    train = LabelledRows(_blocks(X, tmp_path, f"train-{name}", [1500, 3000, 4500]), L, t)
    valid = LabelledRows(_blocks(Xv, tmp_path, f"valid-{name}", [1000, 2000]), Lv, tv)
    on_blocks = chain().fit(train, valid)
    losses = on_blocks.classifier_.evals_result_["valid"]["binary_logloss"]
    assert np.isfinite(losses).all() and on_blocks.classifier_.best_iteration_ > 1
    assert on_blocks.classifier_.best_iteration_ == on_frame.classifier_.best_iteration_
    np.testing.assert_allclose(on_blocks.predict(Xh), on_frame.predict(Xh), rtol=1e-9, atol=1e-12)
    # predictions over blocks stream block by block and equal the frame's
    holdout = _blocks(Xh, tmp_path, f"holdout-{name}", [700, 2000])
    pd.testing.assert_frame_equal(on_blocks.predict_parts(holdout), on_blocks.predict_parts(Xh))
