"""Loaded and extracted frames kept for the next job of the same process: a sweep's trials that do not
change the data, the feature extraction or the seed read and featurise the data once.

Hydra's basic launcher runs a sweep's jobs one after another in one process, so the last load is
kept in memory (one entry: memory stays that of one job). The key is the resolved ``data`` and
``features`` configs and the seed, i.e. everything the load and the stateless extraction depend on;
the fitted encodings are fitted per trial, on the cached train frame.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

_LAST: dict[str, object] = {}


def frames_key(cfg: DictConfig) -> str:
    """Hash of what a load + extraction depends on: ``data``, ``features`` and ``seed``."""
    parts = {}
    for k in ("data", "features", "seed"):
        node = cfg.get(k)
        parts[k] = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    text = OmegaConf.to_yaml(OmegaConf.create(parts))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(cfg: DictConfig, load: Callable[[], object]) -> object:
    """``load()``, or what it returned for the previous job with the same :func:`frames_key`."""
    key = frames_key(cfg)
    if key in _LAST:
        log.info("reusing the loaded and extracted frames of the previous job (key %s)", key)
        return _LAST[key]
    for old in _LAST.values():  # one entry: the previous frames (and their block files) go first
        getattr(old, "close", lambda: None)()
    _LAST.clear()
    _LAST[key] = value = load()
    return value
