"""The registered pyfunc: log + register + aliases, predictions equal the pipeline's, loads without the repo."""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from ltv import contract as c
from ltv.tracking import store
from ltv.tracking.pyfunc import load_pipeline, log_pipeline, pip_requirements
from tests.helpers.stand_in import ConstantishPipeline, contract_rows

NAME = "ltv-pipeline"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A tmp store with two logged versions: v1 (scale 1) then v2 (scale 2)."""
    old = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    root = tmp_path_factory.mktemp("mlruns")
    uri = store.sqlite_uri(root)
    store.setup(uri, "test-pyfunc", root)
    infos = []
    for scale in (1.0, 2.0):
        with mlflow.start_run():
            infos.append(log_pipeline(ConstantishPipeline(scale=scale)))
    yield {"uri": uri, "root": root, "infos": infos}
    mlflow.set_tracking_uri(old[0])
    mlflow.set_registry_uri(old[1])


def test_registered_versions_and_aliases(registry):
    client = mlflow.MlflowClient()
    assert [i.registered_model_version for i in registry["infos"]] == [1, 2]
    assert int(client.get_model_version_by_alias(NAME, "candidate").version) == 2
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1  # set once, never moved


def test_pyfunc_predict_equals_pipeline_predict(registry):
    table = contract_rows(120, seed=11)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = model.predict(table.to_pandas())
    assert list(out.columns) == [c.TARGET]
    expected = ConstantishPipeline(1.0).predict(table)
    np.testing.assert_allclose(out[c.TARGET].to_numpy(), expected, rtol=1e-12, atol=0)
    assert np.all(np.isfinite(out[c.TARGET])) and np.all(out[c.TARGET] >= 0) and expected.std() > 0
    v2 = mlflow.pyfunc.load_model(f"models:/{NAME}@candidate").predict(table.to_pandas())
    np.testing.assert_allclose(v2[c.TARGET].to_numpy(), 2 * expected, rtol=1e-12)


def test_parts_param(registry):
    table = contract_rows(10, seed=2)
    out = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(
        table.to_pandas(), params={"parts": True}
    )
    parts = ConstantishPipeline(1.0).predict_parts(table)
    assert list(out.columns) == [c.TARGET, "scalar", "map", "list"]
    np.testing.assert_allclose(out[["scalar", "map", "list"]].to_numpy(), parts.to_numpy())


def test_bad_input_is_invalid_parameter_value(registry):
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    with pytest.raises(MlflowException) as info:
        model.predict(pd.DataFrame([{"hour": "01", "weekday": 1, "advertiser_bundle": "a", "cpm": "x"}]))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "column 'cpm' row 0" in info.value.message


def test_load_pipeline_returns_the_fitted_object(registry):
    p = load_pipeline(f"models:/{NAME}@candidate")
    assert isinstance(p, ConstantishPipeline) and p.scale == 2.0


def test_logged_model_contents(registry):
    info = registry["infos"][0]
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert (local / "code" / "ltv" / "serving" / "coerce.py").is_file()
    assert (local / "code" / "ltv" / "tracking" / "pyfunc_model.py").is_file()
    assert not list((local / "code").rglob("__pycache__"))
    reqs = (local / "requirements.txt").read_text().split()
    assert f"mlflow=={mlflow.__version__}" in reqs and f"pandas=={pd.__version__}" in reqs
    assert set(pip_requirements()) <= set(reqs)
    meta = mlflow.models.Model.load(str(local / "MLmodel"))
    assert meta.signature.inputs is None  # no enforced input schema: coercion validates (see signature.py)
    assert meta.signature.outputs.input_names() == [c.TARGET]
    assert (
        meta.signature.params.params[0].name == "parts" and meta.signature.params.params[0].default is False
    )
    documented = [col["name"] for col in json.loads(meta.metadata["ltv_input_schema"])]
    assert documented == c.FEATURE_COLUMNS + [c.PARTITION_COLUMN, c.ROW_ID]
    assert json.loads((local / "serving_input_example.json").read_text())["dataframe_split"]["data"]


def _ltv_imports(path: Path) -> set[str]:
    """Every ``ltv...`` module a file imports (top level or inside functions); ``from m import x`` gives
    ``m`` and ``m.x`` (x may be a submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m == "ltv" or m.startswith("ltv.")}


def _module_file(root: Path, module: str) -> Path | None:
    """The file of ``module`` under ``root`` (a folder holding ``ltv/``), or None."""
    base = root.joinpath(*module.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def test_logged_model_ships_only_what_inference_imports(registry):
    code = Path(mlflow.artifacts.download_artifacts(registry["infos"][0].model_uri)) / "code"
    shipped = sorted(f.relative_to(code).as_posix() for f in code.rglob("*") if f.is_file())
    for absent in ("ltv/synthetic/", "ltv/tasks/", "ltv/data/", "ltv/config.py", "ltv/serving/server.py"):
        assert not [f for f in shipped if f.startswith(absent)], f"the model ships {absent}"
    assert not [f for f in shipped if "testing" in f or "helpers" in f or not f.endswith(".py")], shipped
    tracking = [f for f in shipped if f.startswith("ltv/tracking/")]
    assert tracking == ["ltv/tracking/__init__.py", "ltv/tracking/pyfunc_model.py"]
    for needed in ("ltv/pipeline.py", "ltv/io.py", "ltv/models/lgbm_predict.py", "ltv/models/native_trees.py", "ltv/features/builder.py"):
        assert needed in shipped
    # every ltv import of a shipped file resolves inside the copy (what exists in the repo must be shipped)
    repo = Path(__file__).resolve().parents[1]
    for f in shipped:
        for module in _ltv_imports(code / f):
            if _module_file(repo, module) is not None:
                assert _module_file(code, module) is not None, f"{f} imports {module}, which is not shipped"
    # and so does every class a pickled pipeline refers to
    from ltv.features import FeatureBuilder
    from ltv.pipeline import LTVPipeline
    from ltv.sampling import HHISTUS, HistOS, SamplingPlan
    from tests.helpers.chain_data import small_chain

    pipeline = LTVPipeline(FeatureBuilder(), small_chain(sampling=SamplingPlan(HistOS(), HHISTUS())))
    modules = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            modules.add(module)
            return super().find_class(module, name)

    Recorder(io.BytesIO(pickle.dumps(pipeline))).load()
    assert {"ltv.pipeline", "ltv.features.builder", "ltv.models.chain"} <= modules
    for module in sorted(m for m in modules if m.startswith("ltv.")):
        assert _module_file(code, module) is not None, f"the pickled pipeline needs {module}, not shipped"


FRESH = textwrap.dedent(
    """
    import json, os, sys
    # no ltv on the path: not the repo, not an editable install (its finder is dropped)
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "editable" not in ((getattr(f, "__module__", "") or "") + type(f).__module__)]
    sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != {repo!r}]
    try:
        import ltv  # noqa: F401
        raise SystemExit("ltv importable before loading the model: " + ltv.__file__)
    except ImportError:
        pass
    # the stand-in pipeline's module (tests.helpers.stand_in) comes from the repo, at the end of the path;
    # MLflow puts the model's code_paths first, so ltv and its submodules still come from the model
    sys.path.append({repo!r})
    import mlflow, pandas as pd
    mlflow.set_tracking_uri({uri!r})
    model = mlflow.pyfunc.load_model("models:/ltv-pipeline@champion")
    rows = pd.DataFrame(json.load(open({rows!r})))
    import ltv
    print(json.dumps({{"pred": model.predict(rows)["iap_revenue_d7"].tolist(), "ltv": ltv.__file__}}))
    """
)


def test_loads_in_fresh_process_without_repo(registry, tmp_path):
    table = contract_rows(20, seed=4)
    rows_path = tmp_path / "rows.json"
    rows_path.write_text(json.dumps(table.to_pylist()))
    repo = str(Path(__file__).resolve().parents[1])
    script = FRESH.format(repo=repo, uri=registry["uri"], rows=str(rows_path))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not got["ltv"].startswith(repo)  # ltv came from the model's code_paths
    assert "/code/ltv/" in got["ltv"]
    np.testing.assert_allclose(got["pred"], ConstantishPipeline(1.0).predict(table), rtol=1e-12)


def test_named_inputs_signature_drops_unknown_columns(registry):
    """Why the default logs no input schema: MLflow would silently drop a mistyped column."""
    with mlflow.start_run():
        info = log_pipeline(ConstantishPipeline(), registered_model_name=None, named_inputs=True)
    model = mlflow.pyfunc.load_model(info.model_uri)
    assert "cpm" in model.metadata.get_input_schema().input_names()
    row = {"hour": "01", "weekday": 1, "advertiser_bundle": "a", "country": "us"}
    typo = {**row, "contry": "us"}
    typo.pop("country")
    ok = model.predict(pd.DataFrame([row]))[c.TARGET][0]
    dropped = model.predict(pd.DataFrame([typo]))[c.TARGET][0]  # no error: 'contry' silently ignored
    assert ok == pytest.approx(0.61) and dropped == pytest.approx(0.11)


def test_trees_compile_when_a_model_loads_not_when_it_is_logged(registry, tmp_path, monkeypatch):
    from tests.helpers.stand_in import CompileRecordingPipeline

    marker = tmp_path / "compiles.txt"
    with mlflow.start_run():
        info = log_pipeline(CompileRecordingPipeline(marker=str(marker)), registered_model_name=None)
    assert not marker.exists()  # MLflow's input-example check loaded the model without compiling

    def count():
        return marker.read_text().count("compiled") if marker.exists() else 0

    assert isinstance(load_pipeline(info.model_uri), CompileRecordingPipeline) and count() == 1
    load_pipeline(info.model_uri, compile_trees=False)
    assert count() == 1
    monkeypatch.setenv("LTV_COMPILE_TREES", "0")
    load_pipeline(info.model_uri)
    assert count() == 1
    monkeypatch.delenv("LTV_COMPILE_TREES")
    mlflow.pyfunc.load_model(info.model_uri)  # what `mlflow models serve` does
    assert count() == 2


def test_loading_the_model_prints_no_type_hint_warning(registry, tmp_path):
    """Issue 16: every load printed MLflow's yellow "Add type hints to the `predict` method" warning."""
    code = textwrap.dedent(
        f"""
        import warnings, mlflow, pandas as pd
        warnings.simplefilter("always")
        mlflow.set_tracking_uri({registry["uri"]!r})
        model = mlflow.pyfunc.load_model("models:/ltv-pipeline@champion")
        model.predict(pd.DataFrame([{{"hour": "01", "weekday": 1, "advertiser_bundle": "a"}}]))
        print("loaded", type(model.unwrap_python_model()).__name__)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # the stand-in pipeline is in tests/helpers
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded LTVPyfuncModel" in proc.stdout
    assert "Add type hints" not in proc.stderr + proc.stdout
