"""train.distributed: the chain's boosters trained with lightgbm.dask on 2 memory-limited workers match the
one-process fit; the valid curve's best round cuts the model; a cluster without 2 workers is an error."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from ltv import metrics
from ltv.cluster import Engine
from ltv.models.dask_lgbm import best_round, truncate
from ltv.models.rows import LabelledRows
from ltv.sampling import HHISTUS
from ltv.tasks.distributed import distributed_training
from tests.helpers.chain_data import small_chain, split_data


def test_best_round_is_the_one_process_early_stopping_round():
    curve = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.0]
    assert best_round(curve, patience=3) == 3  # rounds 4-6 do not beat round 3: stopped before round 7
    assert best_round(curve, patience=4) == 7  # round 7 is reached and is the best
    assert best_round(curve, patience=None) == 7
    assert best_round([3.0, 3.0, 3.0], patience=1) == 1  # ties are not improvements
    assert best_round([0.6, 0.7, 0.65], patience=5, higher_better=True) == 2


def test_truncated_model_predicts_like_num_iteration():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(500, 4)), columns=list("abcd"))
    y = X["a"] * 2 + rng.normal(size=500)
    full = lgb.LGBMRegressor(n_estimators=40, learning_rate=0.1, n_jobs=1, verbose=-1).fit(X, y)
    expected = full.predict(X, num_iteration=17)
    cut = truncate(lgb.LGBMRegressor(n_estimators=40, learning_rate=0.1, n_jobs=1, verbose=-1).fit(X, y), 17)
    assert cut.booster_.current_iteration() == 17
    np.testing.assert_array_equal(cut.predict(X), expected)
    assert not np.array_equal(full.predict(X), expected)  # the cut changed something


@pytest.mark.parametrize("engine", [Engine("sync"), Engine("local", client=None)])
def test_distributed_without_two_workers_is_an_error(engine):
    cfg = OmegaConf.create({"train": {"distributed": True}})
    with pytest.raises(ValueError, match=r"train\.distributed=true.*cluster\.n_workers=2"):
        distributed_training(cfg, engine)
    assert distributed_training(OmegaConf.create({"train": {"distributed": False}}), engine) is False


def _chain(sampling=None):
    model = small_chain("stacking", sampling=sampling)
    model.ensemble.cross_fit = False  # held-out stacking (the default config's)
    return model


@pytest.fixture(scope="module")
def data():
    return split_data(n_train=24_000, n_valid=6_000, n_holdout=12_000, seed=1, n_noise=20)


@pytest.fixture(scope="module")
def limited_cluster(data):
    """2 worker processes, each with a memory limit below the training matrix's size (pausing and
    terminating on the process's memory are off: a bare worker process is ~230 MB, more than this test's
    matrix; what is over the limit spills to disk)."""
    from distributed import Client, LocalCluster

    X, labels = data["train"][:2]
    matrix_bytes = int(X.memory_usage(deep=True).sum() + labels.memory_usage(deep=True).sum())
    limit = matrix_bytes // 2
    assert limit < matrix_bytes
    with (
        dask.config.set(
            {"distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": False}
        ),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=limit,
            dashboard_address=":0",
            scheduler_port=0,
        ) as cluster,  # fmt: skip
        Client(cluster, timeout="60s") as client,
    ):
        client.wait_for_workers(2, timeout=120)
        assert {w["memory_limit"] for w in client.scheduler_info()["workers"].values()} == {limit}
        yield client


def _on_cluster(client, X, labels, npartitions=8):
    from distributed import futures_of, wait

    frame = dd.from_pandas(pd.concat([X, labels], axis=1), npartitions=npartitions).persist()
    wait(frame)
    holders = {w for ws in client.who_has(futures_of(frame)).values() for w in ws}
    assert len(holders) == 2  # each worker holds a share of the train split, not all of it
    return frame[list(X.columns)], frame[list(labels.columns)]


def test_distributed_chain_matches_the_one_process_fit(data, limited_cluster):
    (X, labels, time, _), (Xv, Lv, tv, _), (Xh, Lh, _, _) = data["train"], data["valid"], data["holdout"]
    valid = LabelledRows(Xv, Lv, tv)
    local = _chain().fit(LabelledRows(X, labels, time), valid)
    Xd, Ld = _on_cluster(limited_cluster, X, labels)
    dist = _chain().fit(LabelledRows(Xd, Ld), valid)
    rmsle = {
        name: metrics.rmsle(Lh["iap_revenue_d7"], m.predict(Xh))
        for name, m in (("local", local), ("dist", dist))
    }
    assert abs(rmsle["dist"] - rmsle["local"]) < 0.005, rmsle
    # every booster is a plain local model cut at its recorded best round
    for booster, rounds in dist.boosters():
        assert isinstance(booster, lgb.Booster)
        if booster is not dist.ensemble_.meta_.booster_:
            assert booster.current_iteration() <= rounds or rounds is None
    assert dist.classifier_.booster_.booster_.current_iteration() == dist.classifier_.best_iteration_
    assert (
        1 <= dist.classifier_.best_iteration_ < dist.classifier.booster["n_estimators"]
    )  # the curve stopped it


def test_distributed_sampling_is_seeded_per_partition(data, limited_cluster):
    """A booster's rows are drawn per partition, seeded with the sampler's seed plus the partition number:
    the same rows every time, and each partition's are those of the sampler run on it alone."""
    from ltv.models.distributed import _frame, _LogIncrement, _rows

    X, labels = data["train"][0].iloc[:8000], data["train"][1].iloc[:8000]
    Xd, Ld = _on_cluster(limited_cluster, X, labels, npartitions=4)
    sampler = HHISTUS(random_state=3)
    rows = [_frame(Xd, Ld, True, sampler, _LogIncrement(["iap_revenue_d7"], 0)).compute() for _ in range(2)]
    pd.testing.assert_frame_equal(rows[0], rows[1])
    target = _LogIncrement(["iap_revenue_d7"], 0)
    parts = [(Xd.get_partition(i).compute(), Ld.get_partition(i).compute()) for i in range(Xd.npartitions)]
    alone = [_rows(x, lab, True, HHISTUS(random_state=3 + i), target) for i, (x, lab) in enumerate(parts)]
    pd.testing.assert_frame_equal(rows[0].reset_index(drop=True), pd.concat(alone, ignore_index=True))
    assert len(rows[0]) < int((labels["buyer_d7"] == 1).sum())  # the sampler trimmed rows


def test_feature_encodings_fitted_on_partitions_equal_the_in_memory_fit():
    """A Dask train split (train.distributed) gives the fitted encodings of the same rows in memory, and
    ``map_partitions`` of the transform gives the same matrix."""
    from ltv.features import FeatureBuilder
    from tests.test_features_extract import mixed_table

    builder = FeatureBuilder(min_category_count=2, min_group_count=5)
    S = builder.extract(mixed_table(600, seed=4))
    local = FeatureBuilder(min_category_count=2, min_group_count=5).fit(S)
    S_dd = dd.from_pandas(S, npartitions=3, sort=False)  # on the module's cluster when it is up
    dist = FeatureBuilder(min_category_count=2, min_group_count=5).fit(S_dd)
    X = S_dd.map_partitions(dist.transform, meta=dist.transform(S_dd._meta)).compute()
    assert dist.feature_names_ == local.feature_names_
    assert any(local.encoder_.vocab_.values()) and local.group_stats_.grids_  # something was fitted
    assert dist.encoder_.vocab_ == local.encoder_.vocab_ and dist.encoder_.rare_ == local.encoder_.rare_
    assert dist.group_stats_.groups_ == local.group_stats_.groups_
    for key, grid in local.group_stats_.grids_.items():
        np.testing.assert_array_equal(dist.group_stats_.grids_[key], grid)
    pd.testing.assert_frame_equal(X.reset_index(drop=True), local.transform(S))


def test_lightgbm_dask_rounds_reach_the_fit_stage_progress(data, limited_cluster):
    """The workers' rounds come back to this process's fit stage (Dask events), so the progress line of a
    lightgbm.dask booster reads round / total / valid like a one-process one's."""
    import time as _time

    from ltv.models import _progress
    from ltv.models.dask_lgbm import TARGET_COLUMN, WEIGHT_COLUMN, fit_dask_booster

    X, labels = data["train"][0].iloc[:6000], data["train"][1].iloc[:6000]
    Xd, Ld = _on_cluster(limited_cluster, X, labels, npartitions=4)
    y = np.log1p(Ld["iap_revenue_d7"].clip(lower=0))
    frame = Xd.assign(**{TARGET_COLUMN: y, WEIGHT_COLUMN: 1.0})
    Xv, Lv = data["valid"][0].iloc[:2000], data["valid"][1].iloc[:2000]
    params = {"n_estimators": 25, "learning_rate": 0.1, "num_leaves": 7, "verbose": -1}
    with _progress.FitClock(every_s=3600) as clock, _progress.stage("direct", len(X)):
        entry = _progress.current_stage()
        model, rounds = fit_dask_booster(
            lgb.DaskLGBMRegressor, params, frame, (Xv, np.log1p(Lv["iap_revenue_d7"].clip(lower=0))), None
        )
        deadline = _time.monotonic() + 10  # events travel worker -> scheduler -> client on their own
        while entry.round != 25 and _time.monotonic() < deadline:
            _time.sleep(0.05)
        line = entry.line(_time.perf_counter())
    assert rounds == 25 and model.booster_.current_iteration() == 25
    assert (entry.round, entry.total) == (25, 25)
    assert entry.valid.startswith("l2 ") and float(entry.valid.split()[1]) > 0
    assert "round 25/25" in line and "valid l2" in line
    assert "direct" in clock.times
