"""The served model over HTTP on loopback: predictions equal the pipeline's; bad requests get a named 4xx."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from ltv import contract as c
from ltv.serving.server import ModelServer
from tests.helpers import repo_on_pythonpath
from tests.helpers.stand_in import ConstantishPipeline, contract_rows

GOOD = {"hour": "09", "weekday": 4, "advertiser_bundle": "abc", "cpm": {"b": 2}, "user_bundles": ["x"]}
GOOD_PRED = 0.1 * 4 + 0.01 * 9 + 0.01 * 2 + 0.25  # ConstantishPipeline on GOOD


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import mlflow

    from ltv.tracking import store
    from ltv.tracking.pyfunc import log_pipeline

    old = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    root = tmp_path_factory.mktemp("mlruns")
    uri = store.sqlite_uri(root)
    store.setup(uri, "test-serving", root)
    with mlflow.start_run():
        log_pipeline(ConstantishPipeline())
    mlflow.set_tracking_uri(old[0])
    mlflow.set_registry_uri(old[1])
    server = ModelServer("models:/ltv-pipeline@champion", tracking_uri=uri, startup_timeout=120)
    with repo_on_pythonpath(), server:  # the server unpickles the stand-in from tests.helpers
        yield server


def post(server, payload, raw: bool = False) -> requests.Response:
    data = payload if raw else json.dumps(payload)
    return requests.post(
        server.url + "/invocations", data=data, headers={"Content-Type": "application/json"}, timeout=60
    )


def predictions(resp: requests.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text[-2000:]
    return np.array([p[c.TARGET] for p in resp.json()["predictions"]])


def as_objects(record: dict) -> dict:
    """Map cells as JSON objects (Arrow gives lists of (key, value) tuples), map of maps at both levels."""
    out = dict(record)
    for name in c.MAP_COLUMNS:
        if out.get(name) is not None:
            out[name] = dict(out[name])
    for name in c.MAP_OF_MAP_COLUMNS:
        if out.get(name) is not None:
            out[name] = {k: None if v is None else dict(v) for k, v in out[name]}
    return out


@pytest.fixture(scope="module")
def rows():
    table = contract_rows(300, seed=21)
    return table, ConstantishPipeline().predict(table)


def test_server_loads_the_model_without_the_type_hint_warning(server):
    assert "Add type hints" not in server.output()
    assert "Uvicorn running" in server.output() or "Listening at" in server.output()


def test_records_with_maps_as_pair_lists(server, rows):
    table, expected = rows
    got = predictions(post(server, {"dataframe_records": table.to_pylist()}))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    assert np.all(np.isfinite(got)) and np.all(got >= 0) and len(np.unique(got)) > 50


def test_records_with_maps_as_objects_and_split(server, rows):
    table, expected = rows
    records = [as_objects(r) for r in table.to_pylist()]
    np.testing.assert_allclose(predictions(post(server, {"dataframe_records": records})), expected, rtol=1e-9)
    split = {"columns": table.column_names, "data": [list(r.values()) for r in table.to_pylist()]}
    np.testing.assert_allclose(predictions(post(server, {"dataframe_split": split})), expected, rtol=1e-9)


def test_single_row_missing_optional_columns_and_parts(server):
    assert predictions(post(server, {"dataframe_records": [GOOD]}))[0] == pytest.approx(GOOD_PRED, rel=1e-12)
    resp = post(server, {"dataframe_records": [GOOD], "params": {"parts": True}})
    assert resp.status_code == 200
    row = resp.json()["predictions"][0]
    assert set(row) == {c.TARGET, "scalar", "map", "list"}
    assert row["scalar"] + row["map"] + row["list"] == pytest.approx(row[c.TARGET])


@pytest.mark.parametrize(
    "payload, words",
    [
        (
            {"dataframe_records": [GOOD, {**GOOD, "release_msrp": "cheap"}]},
            ["column 'release_msrp' row 1", "number"],
        ),
        ({"dataframe_records": [{**GOOD, "cpm": 3}]}, ["column 'cpm' row 0", "map of string -> number"]),
        ({"dataframe_records": [{**GOOD, "cpm": {"b": "x"}}]}, ["column 'cpm' row 0", "numeric values"]),
        (
            {"dataframe_records": [{**GOOD, "user_bundles": [1, 2]}]},
            ["column 'user_bundles'", "list of strings"],
        ),
        ({"dataframe_records": [{**GOOD, "contry": "us"}]}, ["unknown column 'contry'"]),
        (
            {"dataframe_records": [{k: v for k, v in GOOD.items() if k != "hour"}]},
            ["missing required column 'hour'"],
        ),
        ({"dataframe_records": []}, ["empty request"]),
        ({"dataframe_split": {"columns": ["hour"], "data": []}}, ["empty request"]),
    ],
)
def test_bad_request_gets_400_naming_column_and_server_keeps_serving(server, payload, words):
    resp = post(server, payload)
    assert resp.status_code == 400, resp.text[-2000:]
    message = resp.json()["message"]
    for w in words:
        assert w in message, message
    assert predictions(post(server, {"dataframe_records": [GOOD]}))[0] == pytest.approx(GOOD_PRED)


@pytest.mark.parametrize("body", ["not json", '{"dataframe_records": [', '{"rows": []}'])
def test_malformed_body_gets_400(server, body):
    resp = post(server, body, raw=True)
    assert resp.status_code == 400
    assert "JSON" in resp.json()["message"] or "dataframe_records" in resp.json()["message"]
    assert post(server, {"dataframe_records": [GOOD]}).status_code == 200


def test_server_that_cannot_load_fails_fast_and_leaves_no_process(tmp_path):
    srv = ModelServer(str(tmp_path / "no-such-model"), startup_timeout=90)
    with pytest.raises(RuntimeError, match="did not answer /ping"):
        srv.start()
    assert srv.proc is None
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url + "/ping", timeout=2)
