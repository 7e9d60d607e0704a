"""Test doubles and data for the tests (and the serving benchmark); not part of the shipped package.

``chain_data``: a seeded numeric data set with a known oracle and a small unfitted chain, for model tests.
``stand_in``: a deterministic stand-in pipeline and seeded contract rows, for serving and registry tests.

A model logged with a stand-in pipeline pickles a reference to ``tests.helpers.stand_in``: a process that
loads it (a model server, a fresh interpreter) needs the repository root on its path for that module,
while ``ltv`` itself comes from the model's own ``code_paths``. :func:`repo_on_pythonpath` gives child
processes that path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def repo_on_pythonpath() -> Iterator[None]:
    """Child processes started in the block find ``tests.helpers`` (the repo root leads ``PYTHONPATH``)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old) if p)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
