"""What the MLflow UI shows: a model-training experiment, readable run names, the windows as datasets."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from ltv.data.schema import LoadReport
from ltv.data.window import Window
from ltv.tracking import sweep
from ltv.tracking.datasets import log_split_input
from ltv.tracking.names import multirun_name, run_name, trial_name
from ltv.tracking.store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, PARENT_RUN_ENV, setup


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    before = mlflow.get_tracking_uri()
    root = tmp_path_factory.mktemp("ui") / "mlruns"
    yield f"sqlite:///{root}/mlflow.db", root
    mlflow.set_tracking_uri(before)


def test_new_experiment_is_a_model_training_one(store):
    uri, root = store
    exp_id = setup(uri, "kind-new", root)
    assert (
        mlflow.MlflowClient().get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    )


def test_existing_experiment_gets_the_kind_and_a_set_kind_is_kept(store):
    uri, root = store
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    bare = client.create_experiment("kind-old", artifact_location=(root / "kind-old").as_uri())
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(bare).tags
    assert setup(uri, "kind-old", root) == bare
    assert client.get_experiment(bare).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    chosen = client.create_experiment("kind-set", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    setup(uri, "kind-set", root)
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


@pytest.mark.parametrize(
    ("overrides", "base", "expected"),
    [
        ([], None, "default"),
        (
            ["classifier=lgbm_deep", "sampling=histos_aggressive"],
            None,
            "classifier=lgbm_deep,sampling=histos_aggressive",
        ),
        (["experiment=deep", "seed=3"], "deep", "deep,seed=3"),
        (
            ["data=smadex", "data.root=/mnt/exports/oct/", "hydra.verbose=true"],
            None,
            "data=smadex,data.root=oct",
        ),
        (
            [
                "+features.groups.x=false",
                "tracking.uri=sqlite:///a.db",
                "cluster=sync",
                "hparams_search=lgbm_gate",
            ],
            None,
            "features.groups.x=false",
        ),
    ],
)
def test_run_name_from_overrides(overrides, base, expected):
    assert run_name(overrides, base=base) == expected


def test_long_names_are_cut_and_sweeps_and_trials_are_named():
    name = run_name([f"classifier.param_{i}=0.{i}" for i in range(20)])
    assert len(name) == 80 and name.endswith("...")
    assert trial_name(7) == "trial-7"
    assert (
        multirun_name(["classifier=lgbm,lgbm_deep", "seed=1"]) == "multirun classifier=lgbm,lgbm_deep seed=1"
    )
    assert multirun_name(["experiment=tiny", "seed=1,2"], base="tiny") == "multirun tiny seed=1,2"


def test_job_run_inside_hydra_is_named_by_its_overrides(store, monkeypatch, tmp_path):
    uri, root = store
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    setup(uri, "names", root)
    job = (["classifier=lgbm_deep", "sampling=histos_aggressive"], tmp_path, None)  # a single run
    monkeypatch.setattr(sweep, "_hydra_job", lambda: job)
    with sweep.start_job_run() as run:
        pass
    got = mlflow.MlflowClient().get_run(run.info.run_id)
    assert got.info.run_name == "classifier=lgbm_deep,sampling=histos_aggressive"
    monkeypatch.setattr(sweep, "_hydra_job", lambda: (["experiment=tiny"], tmp_path, 1))  # a multirun job
    with sweep.start_job_run(run_name="tiny") as run:
        pass
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.run_name == "tiny"


def test_windows_are_logged_as_run_inputs(store, tmp_path):
    uri, root = store
    setup(uri, "inputs", root)
    data_root = tmp_path / "export"
    windows = {
        "train": (Window("2025-10-01", "2025-10-03", fraction=0.5, name="train"), 1200, "a" * 16),
        "valid": (Window("2025-10-04-00", "2025-10-04-11", name="valid"), 300, "b" * 16),
        "holdout": (Window("2025-10-04-12", "2025-10-04-23", name="holdout"), 250, "c" * 16),
    }
    with mlflow.start_run() as run:
        for split, (window, rows, digest) in windows.items():
            report = LoadReport(rows_read=rows + 7, rows_kept=rows, files=[Path("f1"), Path("f2")])
            log_split_input(split, data_root, window, report, digest)
    inputs = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    by_context = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs}
    assert sorted(by_context) == ["holdout", "training", "validation"]
    train = by_context["training"]
    assert train.name == "train 2025-10-01-00..2025-10-03-23" and train.digest == "a" * 16
    source = json.loads(train.source)
    assert source["uri"] == (data_root / "train").resolve().as_uri() and train.source_type == "local"
    assert (source["window_start"], source["window_end"], source["fraction"]) == (
        "2025-10-01-00-00",
        "2025-10-03-23-00",
        0.5,
    )
    assert json.loads(train.profile) == {"num_rows": 1200, "rows_read": 1207, "num_files": 2}
    columns = [c["name"] for c in json.loads(train.schema)["mlflow_colspec"]]
    assert columns[0] == "buyer_d1" and "row_id" in columns and "datetime" in columns
    assert by_context["validation"].digest == "b" * 16
    assert json.loads(by_context["holdout"].profile)["num_rows"] == 250


def test_runs_url_opens_the_experiment_on_its_runs_table(store, capsys):
    from ltv.tracking.store import main, runs_url

    uri, _ = store
    exp_id = setup(uri, "url-exp", Path(uri[len("sqlite:///") :]).parent)
    assert runs_url(uri, "url-exp", "127.0.0.1", 5000) == (
        f"http://127.0.0.1:5000/#/experiments/{exp_id}?workflowType=machine_learning"
    )
    main([uri, "h", "1"])  # conf/tracking's experiment (ltv), created in this store if missing
    ltv_id = mlflow.MlflowClient().get_experiment_by_name("ltv").experiment_id
    assert (
        capsys.readouterr().out.strip()
        == f"ltv runs: http://h:1/#/experiments/{ltv_id}?workflowType=machine_learning"
    )
