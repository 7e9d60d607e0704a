"""Hydra/OmegaConf glue shared by the entry points and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def project_root() -> Path:
    """The project folder: the one holding ``conf/`` next to the ``ltv`` package, else the working dir."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "conf").is_dir() else Path.cwd().resolve()


CONFIG_DIR = str(project_root() / "conf")

if not OmegaConf.has_resolver("ltv_root"):
    OmegaConf.register_new_resolver("ltv_root", lambda: str(project_root()))


def flatten(cfg: DictConfig | dict, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flatten a resolved config into ``{'a.b.c': value}`` (lists kept as their string form)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}
    for key, value in (data or {}).items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out
