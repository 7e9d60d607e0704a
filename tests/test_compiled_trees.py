"""Compiled tree inference (ltv.models.native_trees, registered in ltv.models.lgbm_predict): the same predictions as LightGBM, a disk cache that is
reused and written atomically, a fallback to LightGBM when a compiled booster disagrees or is off."""

from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from ltv.models import lgbm_predict as compiled
from ltv.models import native_trees as tree_compiler
from ltv.models.lgbm_predict import booster_predict, predict_many
from tests.helpers.chain_data import fit_chain, small_chain, split_data
from tests.test_models_predict_reference import reference_predict


@pytest.fixture(scope="module")
def chain():
    d = split_data(n_train=3000, n_valid=1500, n_holdout=2500, seed=5)
    model = small_chain(objective="rmsle", seed=5)
    fit_chain(model, d)
    return model, d["holdout"][0]


def test_compiled_chain_predicts_like_lightgbm(chain, tmp_path):
    model, X = pickle.loads(pickle.dumps(chain[0])), chain[1]
    want = reference_predict(model, X)
    pairs = model.boosters()
    # classifier, 3 horizons, whale model (objective=rmsle: no variance models)
    assert len(pairs) == 5
    assert all(compiled.lookup(b, n) is None for b, n in pairs)
    summary = model.compile_trees(tmp_path)
    assert summary["boosters"] == 5 and summary["compiled"] == 5 and summary["failed"] == 0
    assert all(compiled.lookup(b, n) is not None for b, n in pairs)
    got = model.predict(X)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    for rows in (1, 7):
        np.testing.assert_allclose(model.predict(X.iloc[:rows]), got[:rows], rtol=1e-12, atol=1e-15)


def test_cache_is_reused_and_nothing_half_written(chain, tmp_path):
    first = pickle.loads(pickle.dumps(chain[0]))
    first.compile_trees(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert not [f for f in files if f.startswith(".") or f.endswith(".tmp")]
    assert sum(f.endswith(".o") for f in files) == 5
    # the pickle carries no compiled code: an unpickled copy starts on LightGBM, then loads the cache
    blob = pickle.dumps(first)
    again = pickle.loads(blob)
    assert all(compiled.lookup(b, n) is None for b, n in again.boosters())
    summary = again.compile_trees(tmp_path)
    assert summary["from_cache"] == 5 and summary["compiled"] == 0
    np.testing.assert_array_equal(again.predict(chain[1]), first.predict(chain[1]))


def _categorical_booster(seed=0):
    rng = np.random.default_rng(seed)
    n = 4000
    X = pd.DataFrame(
        {
            "a": np.where(rng.random(n) < 0.3, 0.0, rng.normal(size=n)),  # many zeros: splits at +-1e-35
            "b": np.where(rng.random(n) < 0.1, np.nan, rng.exponential(size=n)),
            "c": pd.Categorical(rng.integers(0, 12, n).astype(str)),
        }
    )
    logit = 1.5 * (X["a"] > 0) - X["b"].fillna(2) + (X["c"].cat.codes % 3 == 0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    model = lgb.LGBMClassifier(n_estimators=60, num_leaves=8, min_child_samples=5, verbose=-1, random_state=0)
    return model.fit(X, y), X


def test_edge_values_match_lightgbm(tmp_path):
    """|x| <= 1e-35 (LightGBM reads it as 0), NaN everywhere, unseen and negative category codes."""
    model, X = _categorical_booster()
    booster = model.booster_
    tree_compiler.compile_booster(booster, None, tmp_path)
    tiny = float(np.float32(1e-35))
    probe = np.array(
        [
            [0.0, 1.0, 3],
            [tiny, 1.0, 3],
            [-tiny, 1.0, 3],
            [1e-36, np.nan, 11],
            [-2 * tiny, np.nan, 12],  # category code never seen in training
            [np.nan, np.nan, np.nan],
            [5.0, 0.0, -1],
            [-5.0, 1e-40, 7.0],
        ]
    )
    want = booster.predict(probe, num_threads=1)
    native = compiled.lookup(booster, None)
    np.testing.assert_allclose(predict_many([native], probe, 1)[0], want, rtol=1e-12, atol=1e-15)
    # and through the chain's entry point, on a frame
    np.testing.assert_allclose(
        booster_predict(model.booster_, X.iloc[:500], list(X.columns), None),
        booster.predict(X.iloc[:500].assign(c=X["c"].cat.codes.iloc[:500]).to_numpy(float)),
        rtol=1e-12,
    )


def test_a_disagreeing_compile_keeps_lightgbm(tmp_path, monkeypatch, caplog):
    import lleaves

    model, X = _categorical_booster(seed=1)
    booster = model.booster_
    real = lleaves.Model.predict
    monkeypatch.setattr(
        lleaves.Model, "predict", lambda self, data, n_jobs=None: real(self, data, n_jobs) + 1e-3
    )
    summary = tree_compiler.compile_boosters([(booster, None)], tmp_path)
    assert summary == {**summary, "boosters": 1, "failed": 1, "compiled": 0}
    assert compiled.lookup(booster, None) is None
    assert "stays on LightGBM" in caplog.text and "disagrees" in caplog.text
    frame = X.iloc[:50]
    np.testing.assert_array_equal(
        booster_predict(model.booster_, frame, list(X.columns), None), model.predict_proba(frame)[:, 1]
    )


def test_switch_off(monkeypatch, tmp_path):
    monkeypatch.setenv(tree_compiler.ENV_SWITCH, "0")
    assert not tree_compiler.enabled()
    model, _ = _categorical_booster(seed=2)
    summary = tree_compiler.compile_boosters([(model.booster_, None)], tmp_path)
    assert summary["compiled"] == 0 and summary["boosters"] == 0
    assert compiled.lookup(model.booster_, None) is None and not list(tmp_path.iterdir())


def test_an_unwritable_cache_falls_back_to_a_temp_folder(tmp_path, caplog):
    import os

    if os.geteuid() == 0:  # root writes anywhere: make the cache path a file instead
        blocked = tmp_path / "not-a-folder"
        blocked.write_text("x")
        folder = blocked / "trees"
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
    model, X = _categorical_booster(seed=3)
    summary = tree_compiler.compile_boosters([(model.booster_, None)], folder)
    assert summary["compiled"] == 1 and summary["failed"] == 0
    assert "not writable" in caplog.text
    np.testing.assert_allclose(
        booster_predict(model.booster_, X.iloc[:100], list(X.columns), None),
        model.predict_proba(X.iloc[:100])[:, 1],
        rtol=1e-12,
    )


def test_round_count_follows_lightgbm(tmp_path):
    """None means the booster's best_iteration (as in Booster.predict); <= 0 or too many means all."""
    model, X = _categorical_booster(seed=4)
    booster = model.booster_
    booster.best_iteration = 20
    assert compiled.rounds_of(booster, None) == 20
    assert compiled.rounds_of(booster, 0) == compiled.rounds_of(booster, 10_000) == 60
    tree_compiler.compile_booster(booster, None, tmp_path)
    frame = X.iloc[:200]
    data = frame.assign(c=frame["c"].cat.codes).to_numpy(float)
    np.testing.assert_allclose(
        booster_predict(model.booster_, frame, list(X.columns), None), booster.predict(data), rtol=1e-12
    )
    assert not np.allclose(booster.predict(data), booster.predict(data, num_iteration=60))


def test_one_pass_over_the_batch_gives_each_boosters_own_scores(chain, tmp_path, monkeypatch):
    """The first stage scores its compiled boosters in one chunked pass (prefetch_scores): every output
    equals the booster scored alone, bit for bit, at any size and thread count; chunks are cast from the
    float32 matrix as they are scored, with LightGBM's zero snapping."""
    import ltv.models.chain as chain_module
    from ltv.models.lgbm_predict import PredictCache, prefetch_scores

    model, X = pickle.loads(pickle.dumps(chain[0])), chain[1]
    model.compile_trees(tmp_path)
    X = pd.concat([X] * 2, ignore_index=True)  # > CHUNK_ROWS rows: several chunks on the pool
    assert len(X) > compiled.CHUNK_ROWS
    features = model.classifier_.feature_names_in_
    assert model.regressor_.feature_names_in_ == model.whale_.feature_names_in_ == features
    requests = [(b, n, features) for b, n in model.boosters()]
    assert len(requests) == 5  # every first-stage booster
    cache = PredictCache()
    prefetch_scores(X, requests, cache)
    matrix = cache.matrix(X, features, model.classifier_.booster_.pandas_categorical)
    assert matrix.dtype == np.float32 and not matrix.flags.c_contiguous  # no float64 copy of the batch
    for b, n, _ in requests:
        got = cache.scores(b, compiled.rounds_of(b, n))
        native = compiled.lookup(b, n)
        whole = np.array(matrix, dtype=np.float64, order="C")  # the batch converted at once, snapped
        whole[(np.abs(whole) <= np.float32(1e-35)) & (whole != 0.0)] = 0.0
        alone = native.predict(whole, n_jobs=1)
        np.testing.assert_array_equal(got, alone)
        np.testing.assert_array_equal(predict_many([native], matrix, 2)[0], alone)
    # and the chain's outputs with the pass equal those without it (each booster scored on its own)
    with_pass = model.predict_parts(X)
    monkeypatch.setattr(chain_module, "prefetch_scores", lambda *a: None)
    without = model.predict_parts(X)
    pd.testing.assert_frame_equal(with_pass, without, check_exact=True)


def test_chunks_snap_tiny_values_like_lightgbm(tmp_path):
    model, X = _categorical_booster()
    booster = model.booster_
    tree_compiler.compile_booster(booster, None, tmp_path)
    native = compiled.lookup(booster, None)
    tiny = float(np.float32(1e-35))
    rows = np.tile(np.array([[tiny, 0.5, 1.0], [-tiny, np.nan, 3.0], [1e-40, 0.0, 11.0]]), (3000, 1))
    want = booster.predict(rows, num_threads=1)
    for data in (rows, rows.astype(np.float32), np.asfortranarray(rows.astype(np.float32))):
        np.testing.assert_allclose(predict_many([native], data, 2)[0], want, rtol=1e-12, atol=1e-15)


def test_processes_loading_one_model_share_the_compile(tmp_path):
    """A booster another process is compiling (its cache lock held) is skipped at first and loaded
    from the cache once that process is done: processes that load a model at once split the work."""
    import threading
    import time

    first, _ = _categorical_booster(seed=3)
    second, _ = _categorical_booster(seed=4)
    key, _ = tree_compiler.cache_key(first.booster_, compiled.rounds_of(first.booster_, None))
    with tree_compiler._compile_lock(tmp_path, key, wait=True):  # "another process" compiles the first one
        with pytest.raises(tree_compiler.Busy):
            tree_compiler.compile_booster(first.booster_, None, tmp_path, wait=False)
        result = {}
        worker = threading.Thread(
            target=lambda: result.update(
                tree_compiler.compile_boosters([(first.booster_, None), (second.booster_, None)], tmp_path)
            )
        )
        worker.start()
        for _ in range(600):  # the second booster is compiled while the first one's lock is held
            if len(list(tmp_path.glob("*.o"))) == 1:
                break
            time.sleep(0.05)
        assert len(list(tmp_path.glob("*.o"))) == 1 and worker.is_alive()  # waiting on the first
        assert not (tmp_path / f"{key}.o").exists()
        # the other process finishes: its object code appears, then it releases the lock
        _compile_into(first.booster_, tmp_path / f"{key}.o")
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert result["compiled"] == 1 and result["from_cache"] == 1 and result["failed"] == 0
    probe = first.booster_.predict(np.zeros((3, 3)), num_threads=1)
    native = compiled.lookup(first.booster_, None)
    np.testing.assert_allclose(predict_many([native], np.zeros((3, 3)), 1)[0], probe, rtol=1e-12)


def _compile_into(booster, obj) -> None:
    """Compile ``booster`` with lleaves straight into the cache file ``obj`` (what the other process does).
    Its model text goes to a file of its own: rewriting the cache's ``<key>.txt`` in place could hand the
    waiting thread a half-written file (the cache writes it once, atomically)."""
    import lleaves

    text = obj.with_name("other.txt")
    text.write_text(booster.model_to_string())
    model = lleaves.Model(model_file=str(text))
    tmp = obj.with_name("other.o.tmp")
    model.compile(cache=str(tmp))
    tmp.rename(obj)
