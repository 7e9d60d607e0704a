"""Small MLflow logging helpers used by the tasks (all I/O lives here and in ltv.tasks)."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from omegaconf import DictConfig, OmegaConf

from ltv.config import flatten, project_root

log = logging.getLogger(__name__)

_MAX_PARAM = 6000  # MLflow's param value limit is 6000 chars


def log_config(cfg: DictConfig, name: str = "config.yaml") -> None:
    """Log the resolved config as flattened params and as a YAML artifact."""
    params = {k: ("None" if v is None else str(v))[:_MAX_PARAM] for k, v in flatten(cfg).items()}
    items = sorted(params.items())
    for i in range(0, len(items), 100):  # MLflow batches at most 100 params per call
        mlflow.log_params(dict(items[i : i + 100]))
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), name)


def log_json(obj: Any, name: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable), name)


def log_figure(fig, name: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, name)
    plt.close(fig)


def log_frame(df, name: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / Path(name).name
        df.to_csv(path, index=False)
        mlflow.log_artifact(str(path), str(Path(name).parent) if Path(name).parent != Path(".") else None)


def git_commit() -> str | None:
    """The project's git commit (with a '-dirty' suffix when the tree has changes), or None."""
    root = project_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _jsonable(o: Any):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)
