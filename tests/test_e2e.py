"""The whole loop on tiny generated data: train -> registry -> predict -> evaluate -> load elsewhere."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_entry


@pytest.fixture(scope="module")
def trained(workdir):
    proc = run_entry("train.py", "experiment=tiny", f"paths.root={workdir}", cwd=workdir)
    return workdir, proc


def _runs(db):
    with sqlite3.connect(db) as con:
        return con.execute("select run_uuid, status, name from runs").fetchall()


def test_train_logs_one_finished_run_and_registers(trained):
    root, proc = trained
    runs = _runs(root / "mlruns" / "mlflow.db")
    assert [r[1] for r in runs] == ["FINISHED"]
    with sqlite3.connect(root / "mlruns" / "mlflow.db") as con:
        metrics = dict(con.execute("select key, value from latest_metrics").fetchall())
        params = dict(con.execute("select key, value from params").fetchall())
        aliases = dict(con.execute("select alias, version from registered_model_aliases").fetchall())
    for split in ("valid", "holdout"):
        for m in ("rmsle", "rmse", "mae", "r2", "gini", "total_ratio", "buyer_auc"):
            assert f"{split}.{m}" in metrics, f"{split}.{m} not logged"
    # the model must beat every constant prediction (zero included), and the oracle must beat the model:
    # log_y.std() is the RMSLE of the best constant, chosen on the holdout itself
    files = sorted((root / "data" / "tiny" / "train").glob("datetime=2025-10-01-1[01]-00/*.parquet"))
    log_y = np.log1p(
        pd.concat(pd.read_parquet(f, columns=["iap_revenue_d7"]) for f in files)["iap_revenue_d7"]
    )
    zeros_rmsle, best_constant_rmsle = float(np.sqrt(np.mean(log_y**2))), float(log_y.std(ddof=0))
    assert len(log_y) == 800 and best_constant_rmsle < zeros_rmsle
    assert metrics["holdout.rmsle"] < best_constant_rmsle
    assert metrics["holdout.oracle.rmsle"] <= metrics["holdout.rmsle"] + 1e-9
    assert params["classifier.lgbm.n_estimators"] == "60"
    assert params["data.splits.valid.start"] == "2025-10-01-08"
    assert aliases == {"candidate": 1, "champion": 1}
    assert "run:" in proc.stdout and "models:/ltv-pipeline/1" in proc.stdout


def test_predict_then_evaluate_submission(trained):
    root, _ = trained
    out = root / "outputs" / "sub.csv"
    run_entry("predict.py", "data=tiny", f"paths.root={root}", f"output={out}", cwd=root)
    sub = pd.read_csv(out)
    sample = pd.read_csv(root / "data" / "tiny" / "sample_submission.csv")
    assert list(sub.columns) == ["row_id", "iap_revenue_d7"]
    assert sorted(sub.row_id) == sorted(sample.row_id)  # every test row exactly once
    assert sub.row_id.is_unique
    assert np.isfinite(sub.iap_revenue_d7).all() and (sub.iap_revenue_d7 >= 0).all()
    assert sub.iap_revenue_d7.std() > 0
    assert not list(out.parent.glob(".*tmp*"))
    proc = run_entry("evaluate.py", "data=tiny", f"paths.root={root}", f"submission={out}", cwd=root)
    assert "submission" in proc.stdout and "oracle" in proc.stdout
    proc = run_entry("evaluate.py", "data=tiny", f"paths.root={root}", cwd=root)
    holdout = [ln for ln in proc.stdout.splitlines() if ln.startswith("holdout")]
    assert holdout, proc.stdout


def test_evaluate_on_the_cluster_or_in_process_matches_training(trained):
    """evaluate.py scores the holdout in file groups (on a LocalCluster, or in this process) and logs
    the metrics training logged for the same model and window: the same rows, labels and p_buyer."""
    root, _ = trained
    db = root / "mlruns" / "mlflow.db"
    with sqlite3.connect(db) as con:
        before = {r for (r,) in con.execute("select run_uuid from runs")}
    modes = {"local": ["cluster=local", "cluster.n_workers=2"], "sync": ["cluster=sync"]}
    for extra in modes.values():
        run_entry("evaluate.py", "data=tiny", f"paths.root={root}", "data.batch_rows=100", *extra, cwd=root)
    with sqlite3.connect(db) as con:
        rows = con.execute("select run_uuid, key, value from latest_metrics").fetchall()
        train_run = con.execute(
            "select run_uuid from runs where name not like 'evaluate%' limit 1"
        ).fetchone()[0]
    logged: dict[str, dict[str, float]] = {}
    for run, key, value in rows:
        logged.setdefault(run, {})[key] = value
    new = [logged[r] for r in sorted(set(logged) - before)]
    assert len(new) == 2 and new[0] == new[1]  # both engines log the same numbers
    trained_metrics = logged[train_run]
    for m in ("rmsle", "rmse", "mae", "gini", "total_ratio", "buyer_auc", "rows"):
        assert new[0][f"holdout.{m}"] == pytest.approx(trained_metrics[f"holdout.{m}"], rel=1e-9), m
    assert new[0]["oracle.rmsle"] == pytest.approx(trained_metrics["holdout.oracle.rmsle"], rel=1e-12)


def test_evaluate_on_the_test_window_without_labels_fails_before_scoring(trained):
    root, _ = trained
    with pytest.raises(AssertionError, match="need data.oracle_root") as err:
        run_entry("evaluate.py", "data=tiny", f"paths.root={root}", "split=test", "data.oracle_root=null",
                  "model_uri=models:/no-such-model@champion", cwd=root)  # fmt: skip
    assert "not found" not in str(err.value)  # the model (which does not exist) was never loaded


def test_registered_model_loads_in_fresh_process_elsewhere(trained, tmp_path):
    root, _ = trained
    code = (
        "import json, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri('sqlite:///{root}/mlruns/mlflow.db')\n"
        # loaded before anything imports ltv: the model's own code (code_paths) is the ltv this process uses
        "m = mlflow.pyfunc.load_model('models:/ltv-pipeline@champion')\n"
        "from ltv.serving.signature import input_example\n"
        "out = m.predict(input_example(40))\n"
        "print(json.dumps([float(v) for v in out['iap_revenue_d7']]))\n"
    )
    import mlflow

    from ltv.serving.signature import input_example

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlruns/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{root}/mlruns/mlflow.db")
    here = mlflow.pyfunc.load_model("models:/ltv-pipeline@champion").predict(input_example(40))[
        "iap_revenue_d7"
    ]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    values = json.loads(proc.stdout.strip().splitlines()[-1])
    # the shipped code predicts what the project's does, and not a constant
    np.testing.assert_allclose(values, here.to_numpy(), rtol=1e-12)
    assert len(set(values)) > 1 and min(values) >= 0


def test_failed_training_is_marked_failed_and_registers_nothing(trained, tmp_path):
    root, _ = trained
    db = tmp_path / "mlruns" / "mlflow.db"
    overrides = [
        "experiment=tiny",
        f"paths.root={root}",
        f"tracking.uri=sqlite:///{db}",
        f"tracking.artifact_root={tmp_path / 'mlruns'}",
        "data.splits.valid.start=2030-01-01-00",
        "data.splits.valid.end=2030-01-01-23",
    ]
    with pytest.raises(AssertionError, match="valid"):  # the error names the empty window
        run_entry("train.py", *overrides, cwd=root)
    assert [r[1] for r in _runs(db)] == ["FAILED"]
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from model_versions").fetchone()[0] == 0


def test_served_predictions_equal_predict_py(trained, tmp_path):
    """POST raw test rows (maps as [key, value] lists and as objects) to `mlflow models serve`."""
    import pyarrow.parquet as pq
    import requests

    from ltv.serving.server import ModelServer
    from tests.serving_utils import table_to_records

    root, _ = trained
    out = tmp_path / "sub.csv"
    run_entry("predict.py", "data=tiny", f"paths.root={root}", f"output={out}", cwd=root)
    expected = pd.read_csv(out).set_index("row_id")["iap_revenue_d7"]
    files = sorted((root / "data" / "tiny" / "test").rglob("*.parquet"))
    table = pq.read_table(files[0]).slice(0, 40)
    hour_folder = files[0].parent.name.split("=", 1)[1]
    records = table_to_records(table, maps_as="pairs")
    for rec in records[:20]:
        rec["datetime"] = hour_folder
    objects = table_to_records(table, maps_as="objects")
    for rec in objects[20:]:
        rec["datetime"] = hour_folder
    records[20:] = objects[20:]
    with ModelServer(
        "models:/ltv-pipeline@champion", f"sqlite:///{root}/mlruns/mlflow.db", startup_timeout=180
    ) as srv:
        url = srv.url
        resp = requests.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=60)
        assert resp.status_code == 200, resp.text
        body = resp.json()["predictions"]
        served = [row["iap_revenue_d7"] if isinstance(row, dict) else row for row in body]
        bad = requests.post(
            f"{url}/invocations", json={"dataframe_records": [{"hour": "01", "weekday": "x"}]}, timeout=60
        )
        assert 400 <= bad.status_code < 500 and "weekday" in bad.text
    want = expected.loc[[r["row_id"] for r in records]].to_numpy()
    np.testing.assert_allclose(served, want, rtol=1e-5, atol=1e-6)  # the CSV keeps 6 significant digits


def test_multirun_one_parent_with_nested_jobs(trained, tmp_path):
    """`train.py -m classifier=lgbm,lgbm_deep sampling=none,histos_aggressive`: 4 jobs under one parent."""
    root, _ = trained
    db = tmp_path / "mlruns" / "mlflow.db"
    run_entry(
        "train.py",
        "-m",
        "experiment=tiny",
        f"paths.root={root}",
        f"tracking.uri=sqlite:///{db}",
        f"tracking.artifact_root={tmp_path / 'mlruns'}",
        "tracking.log_model=false",
        "tracking.log_plots=false",
        "cluster=sync",  # four jobs: no cluster to start and stop four times
        "classifier=lgbm,lgbm_deep",
        "sampling=none,histos_aggressive",
        f"hydra.sweep.dir={tmp_path / 'multi'}",
        cwd=root,
        timeout=900,
    )
    with sqlite3.connect(db) as con:
        runs = con.execute("select run_uuid, status from runs").fetchall()
        names = {r for (r,) in con.execute("select name from runs").fetchall()}
        parents = dict(
            con.execute("select run_uuid, value from tags where key='mlflow.parentRunId'").fetchall()
        )
        params = con.execute(
            "select run_uuid, key, value from params where key like 'classifier.%' or key like 'sampling.%'"
        ).fetchall()
    assert len(runs) == 5 and all(status == "FINISHED" for _, status in runs)
    (parent,) = {r for r, _ in runs} - set(parents)
    assert set(parents.values()) == {parent}
    combos = {}
    for run, key, value in params:
        combos.setdefault(run, {})[key] = value
    assert len({tuple(sorted(c.items())) for c in combos.values()}) == 4  # four distinct configurations ran
    # runs named by what distinguishes them (issue 16); paths, tracking and cluster overrides left out
    assert names == {"multirun tiny classifier=lgbm,lgbm_deep sampling=none,histos_aggressive"} | {
        f"tiny,classifier={c},sampling={s}"
        for c in ("lgbm", "lgbm_deep")
        for s in ("none", "histos_aggressive")
    }


def test_predict_on_a_local_cluster_and_in_process_writes_the_same_file(trained, tmp_path):
    """cluster=local (2 workers, each loading the model and reading its own groups: here single row
    groups, since files are larger than batch_rows) and cluster=sync give byte-identical submissions;
    a row_id repeated in a later file (another group, so maybe another worker) is written once, with its
    first prediction; a column outside the contract is warned about once per load."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    root, _ = trained
    data = tmp_path / "data"
    shutil.copytree(root / "data" / "tiny" / "test", data / "test")
    hours = sorted((data / "test").iterdir())
    assert len(hours) == 2
    later = hours[0].parent / "datetime=2025-10-01-23-00"  # a third hour repeating the first one's rows
    shutil.copytree(hours[0], later)
    for path in (data / "test").rglob("*.parquet"):  # a column outside the contract, in every file, and
        table = pq.read_table(path)  # row groups of 150 rows: a file group is one of them (>100 rows)
        table = table.append_column("not_in_contract", pa.array([1] * table.num_rows))
        pq.write_table(table, path, row_group_size=150)
    common = [
        "data=tiny",
        f"paths.root={root}",
        f"data.root={data}",
        "data.generate=null",
        "data.batch_rows=100",
    ]
    outs, said = {}, {}
    for name, extra in {"local": ["cluster=local", "cluster.n_workers=2"], "sync": ["cluster=sync"]}.items():
        outs[name] = tmp_path / f"{name}.csv"
        proc = run_entry("predict.py", *common, f"output={outs[name]}", *extra, cwd=root)
        said[name] = (proc.stdout + proc.stderr).count("not_in_contract")
    assert outs["local"].read_bytes() == outs["sync"].read_bytes()
    # warned once per load (a log line and a Python warning), not once for each of the 9 file groups
    assert said["local"] == said["sync"] and 1 <= said["local"] <= 2
    sub = pd.read_csv(outs["local"])
    assert sub.row_id.is_unique and len(sub) == 2 * 400  # the repeated hour adds no row
    assert not list(tmp_path.glob(".*tmp*"))


def test_scoring_survives_a_worker_killed_mid_run(trained, local_cluster):
    """A worker process killed while the window is being scored: Dask reruns its groups elsewhere and
    the predictions equal the pipeline's own, row for row, in file order."""
    import signal

    import mlflow

    from ltv import cluster
    from ltv.data.groups import file_groups, read_group
    from ltv.data.loader import Window
    from ltv.scoring import Scoring, scored_window
    from ltv.tracking.pyfunc import load_pipeline

    root, _ = trained
    data, store = root / "data" / "tiny", f"sqlite:///{root}/mlruns/mlflow.db"
    spec = Scoring(model_uri="models:/ltv-pipeline/1", stores=(store, store), subset="test",
                   window=Window(), batch_rows=40)  # fmt: skip
    options, client = local_cluster
    with cluster.connect(options) as engine:
        victim = engine.each_worker(os.getpid)[0]
        items = scored_window(engine, data, spec)
        first = next(items)
        os.kill(victim, signal.SIGKILL)
        items = [first, *items]
        client.wait_for_workers(2, timeout=120)
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    try:
        pipeline = load_pipeline(spec.model_uri)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    groups, _ = file_groups(data, "test", Window(), 40)
    tables = [read_group(g, "test", Window())[0] for g in groups]
    assert len(items) == len(tables) == 800 // 400  # one 400-row row group per file: a group each
    assert [i.to_pylist() for i, _, _ in items] == [t.column("row_id").to_pylist() for t in tables]
    np.testing.assert_array_equal(
        np.concatenate([p for _, p, _ in items]), np.concatenate([pipeline.predict(t) for t in tables])
    )


def test_training_on_a_local_cluster_and_in_process_logs_the_same_metrics(trained, tmp_path):
    root, _ = trained
    db = tmp_path / "mlruns" / "mlflow.db"
    run_entry("train.py", "experiment=tiny", f"paths.root={root}", "cluster=sync", f"tracking.uri=sqlite:///{db}",
              f"tracking.artifact_root={tmp_path / 'mlruns'}", "tracking.log_model=false", cwd=root)  # fmt: skip

    def metrics(path):
        with sqlite3.connect(path) as con:
            rows = con.execute("select key, value from latest_metrics").fetchall()
        return {k: v for k, v in rows if k.startswith(("valid.", "holdout.", "data."))}

    local, sync = metrics(root / "mlruns" / "mlflow.db"), metrics(db)
    assert len(local) > 20 and "holdout.rmsle" in local
    local = {k: v for k, v in local.items() if not k.endswith("rows_per_s")}
    sync = {k: v for k, v in sync.items() if not k.endswith("rows_per_s")}
    assert local.keys() == sync.keys()
    # the same to the last bits but one: two fits at once (train.concurrent_fits) may sum a BLAS
    # reduction in another order, which moves a metric by an ulp or so, engine or not
    assert local == pytest.approx(sync, rel=1e-12, abs=1e-15)


def test_predict_names_a_model_that_cannot_load_and_writes_nothing(trained, tmp_path):
    root, _ = trained
    out = tmp_path / "sub.csv"
    with pytest.raises(AssertionError, match="no-such-model"):
        run_entry("predict.py", "data=tiny", f"paths.root={root}", f"output={out}",
                  "model_uri=models:/no-such-model@champion", cwd=root, timeout=300)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_predict_on_the_cluster_names_a_corrupt_file_and_writes_nothing(trained, tmp_path):
    """A worker's loader error (a truncated parquet file) reaches predict.py whole: it names the file,
    the run fails and no submission is left."""
    import shutil

    root, _ = trained
    data = tmp_path / "data"
    shutil.copytree(root / "data" / "tiny" / "test", data / "test")
    victim = sorted((data / "test").rglob("*.parquet"))[-1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    out = tmp_path / "out" / "sub.csv"
    import re

    with pytest.raises(AssertionError, match=re.escape(f"{victim.parent.name}/{victim.name}")):
        run_entry("predict.py", "data=tiny", f"paths.root={root}", f"data.root={data}", "data.generate=null",
                  f"output={out}", "cluster.n_workers=2", "data.batch_rows=100", cwd=root)  # fmt: skip
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
