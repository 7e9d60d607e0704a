"""Test helpers for the model server: start `mlflow models serve` on loopback; raw rows as JSON records."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
import time

import pyarrow as pa


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_model(model_uri: str, tracking_uri: str, timeout: float = 180.0):
    """Yield the base URL of a scoring server for ``model_uri`` on 127.0.0.1; always stop it."""
    import requests

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"model server exited: {proc.stdout.read()[-4000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"model server did not answer /ping within {timeout}s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _jsonable(value, maps_as: str):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        if value and isinstance(value[0], tuple):  # a map as Arrow gives it: list of (key, value)
            if maps_as == "objects":
                return {k: _jsonable(v, maps_as) for k, v in value}
            return [[k, _jsonable(v, maps_as)] for k, v in value]
        return [_jsonable(v, maps_as) for v in value]
    return value


def table_to_records(table: pa.Table, maps_as: str = "pairs") -> list[dict]:
    """Raw contract rows as JSON-ready dicts: maps as [key, value] lists (``pairs``) or objects."""
    return [{k: _jsonable(v, maps_as) for k, v in row.items()} for row in table.to_pylist()]
