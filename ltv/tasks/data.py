"""Data set-up for the tasks: generate on first use, windows from config, fingerprint for MLflow."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ltv.data.loader import Window

log = logging.getLogger(__name__)

SUBSET = {"train": "train", "valid": "train", "holdout": "train", "test": "test"}


def ensure_data(data_cfg: DictConfig) -> Path:
    """The data root, generated first when the option says so and nothing is there yet.

    A root that exists is used as it is (a real export, or data generated before): only a missing root
    with a ``generate`` block is generated, so pointing ``data.root`` at an export never writes to it.
    """
    root = Path(data_cfg.root).expanduser()
    if root.exists():
        if not (root / "train").is_dir() and not (root / "test").is_dir():
            raise FileNotFoundError(
                f"data.root={root} exists but has neither train/ nor test/ hive folders (see docs/data_contract.md)"
            )
        return root
    if data_cfg.get("generate") is None:
        raise FileNotFoundError(
            f"data.root={root} does not exist (and this data option does not generate data)"
        )
    from ltv.synthetic import generate

    gen = OmegaConf.to_container(data_cfg.generate, resolve=True)
    oracle_root = data_cfg.get("oracle_root")
    log.info("generating synthetic contract data into %s (%s)", root, gen)
    generate(root, oracle_root=oracle_root, **gen)
    return root


def window(data_cfg: DictConfig, split: str) -> Window:
    """The loader window of ``split`` (train / valid / holdout / test) from ``data.splits``."""
    if split not in data_cfg.splits:
        raise ValueError(f"data.splits has no split {split!r}; expected one of {list(data_cfg.splits)}")
    s = data_cfg.splits[split]
    return Window(
        start=None if s.get("start") is None else str(s.start),
        end=None if s.get("end") is None else str(s.end),
        fraction=float(s.get("fraction", 1.0)),
        max_partitions=s.get("max_partitions"),
        name=split,
    )


def fingerprint(paths: list[Path], root: Path) -> str:
    """Short hash of the input files (relative path + size): which data a run saw."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(Path(p).relative_to(root)).encode())
        h.update(str(Path(p).stat().st_size).encode())
    return h.hexdigest()[:16]
