"""Run ``mlflow models serve`` as a child process on loopback: for the HTTP tests and ``bench/serve.py``.

The MLflow CLI starts uvicorn through ``bash -c 'exec uvicorn ...'``, so the interpreter's ``bin`` folder
must be on PATH (a venv that is not activated otherwise fails with exit code 127). The child gets its own
process group, and :meth:`ModelServer.stop` ends exactly that group.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ModelServer:
    """``mlflow models serve -m <model_uri> --env-manager local`` on ``host``:``port``; a context manager.

    Parameters
    ----------
    model_uri : str
        E.g. ``models:/ltv-pipeline@champion``.
    tracking_uri : str, optional
        Passed as MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI (needed for ``models:/`` URIs).
    host, port : str, int
        Bind address; port None picks a free one.
    startup_timeout : float
        Seconds to wait for ``/ping`` before giving up (the server is then stopped and RuntimeError raised).
    """

    def __init__(
        self,
        model_uri: str,
        tracking_uri: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 60.0,
        workers: int = 1,
    ):
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ModelServer:
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = env["MLFLOW_REGISTRY_URI"] = self.tracking_uri
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            self.model_uri,
            "--env-manager",
            "local",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-w",
            str(self.workers),
        ]
        self._log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.startup_timeout:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(self.url + "/ping", timeout=1).status_code == 200:
                    log.info("model server up at %s after %.1f s", self.url, time.monotonic() - t0)
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        output = self.output()
        self.__exit__()
        raise RuntimeError(
            f"model server did not answer /ping within {self.startup_timeout} s:\n{output[-3000:]}"
        )

    def output(self) -> str:
        """What the server printed so far."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def stop(self) -> None:
        """End the server's process group (the CLI and its uvicorn child), waiting up to 10 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.proc = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
