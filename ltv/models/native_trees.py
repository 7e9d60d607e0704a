"""Compiling boosters to native code (lleaves, LLVM), through a disk cache; a compiled booster is registered
with :func:`ltv.models.lgbm_predict.register` and scores from then on in this process.

LightGBM's own predict walks each tree through a generic node loop; lleaves turns every tree into
straight-line compare-and-branch code, which scores the same rows ~5x faster on one core.

Compiling is slow: ~25 s for a 1,200-tree booster. It happens once per (model, CPU): the object code
goes to a disk cache (``LTV_TREE_CACHE``, else ``$XDG_CACHE_HOME/ltv/trees``, else ``~/.cache/ltv/trees``)
under a key made of the booster's text, the round count, the lleaves / llvmlite versions and the host
CPU with its features. The file is written to a temp name and renamed, so a crash leaves nothing that a
later load could pick up. A model compiled for another CPU is never loaded: that CPU is in the key.
Every compiled booster is checked against LightGBM on probe rows (random values, NaNs, every category
code) before it is registered; a mismatch logs a warning and keeps LightGBM for that booster.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ltv.io import atomic_write
from ltv.models.lgbm_predict import lookup, predict_many, register, rounds_of

log = logging.getLogger(__name__)

ENV_CACHE = "LTV_TREE_CACHE"
ENV_SWITCH = "LTV_COMPILE_TREES"  # "0" / "false" / "no" / "off" turns compilation off
_PROBE_ROWS = 256
_PROBE_TREES = 400  # probe values come from the split thresholds of the first this-many trees


def enabled() -> bool:
    """False when ``LTV_COMPILE_TREES`` says off or lleaves cannot be imported."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    try:
        import lleaves  # noqa: F401
    except Exception:  # noqa: BLE001 - an optional accelerator: any import failure means "not here"
        return False
    return True


def cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ltv" / "trees"


def _host() -> str:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    return f"{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features().flatten()}"


def _versions() -> str:
    from importlib.metadata import version

    return f"lleaves {version('lleaves')}|llvmlite {version('llvmlite')}"


def _probe(booster, rng) -> np.ndarray:
    """Rows that reach many leaves: split thresholds +- a little, NaNs, zeros and every category code."""
    n_feat = booster.num_feature()
    X = rng.normal(size=(_PROBE_ROWS, n_feat)) * 3
    dump = booster.dump_model(num_iteration=_PROBE_TREES)  # the JSON of only the trees walked below
    thresholds: dict[int, list[float]] = {}
    cats: dict[int, int] = {}

    def walk(node):
        if "split_feature" not in node:
            return
        f = node["split_feature"]
        if node.get("decision_type") == "==":
            codes = [int(c) for c in str(node["threshold"]).split("||")]
            cats[f] = max(cats.get(f, 0), max(codes))
        else:
            thresholds.setdefault(f, []).append(float(node["threshold"]))
        walk(node["left_child"])
        walk(node["right_child"])

    for tree in dump["tree_info"][:_PROBE_TREES]:
        walk(tree["tree_structure"])
    for f, ts in thresholds.items():
        pick = rng.choice(np.asarray(ts), size=_PROBE_ROWS)
        X[:, f] = pick + rng.choice([-1e-6, 0.0, 1e-6], size=_PROBE_ROWS) * np.maximum(1.0, np.abs(pick))
    for f, top in cats.items():
        X[:, f] = rng.integers(0, top + 2, size=_PROBE_ROWS)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[rng.random(X.shape) < 0.05] = 0.0
    return X


def cache_key(booster, rounds: int) -> tuple[str, str]:
    """(cache key, model text) of ``booster``'s first ``rounds`` rounds on this CPU and lleaves."""
    text = booster.model_to_string(num_iteration=rounds)
    return hashlib.sha256(f"{text}\n{rounds}\n{_versions()}\n{_host()}".encode()).hexdigest()[:32], text


class Busy(Exception):
    """Another process is compiling this booster (:func:`compile_booster` with ``wait=False``)."""


@contextmanager
def _compile_lock(folder: Path, key: str, wait: bool):
    """Hold the cache's lock of ``key`` (an advisory file lock; no-op where ``fcntl`` is missing):
    processes that load the same model at once compile each booster once. Raises Busy when ``wait`` is
    False and another process holds it. Lock files live in ``<cache>/locks`` and are kept."""
    try:
        import fcntl
    except ImportError:  # not POSIX: every process compiles for itself, as before
        yield
        return
    locks = folder / "locks"
    locks.mkdir(exist_ok=True)
    with open(locks / key, "a+b") as fh:  # closing the file releases the lock
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(key) from None
        yield


def compile_booster(
    booster, num_iteration=None, directory: str | os.PathLike | None = None, wait: bool = True
):
    """Compile ``booster`` (its first ``num_iteration`` rounds) and register it; returns (model, from_cache).

    While another process compiles the same booster into the same cache, this waits and then loads its
    object code; ``wait=False`` raises :class:`Busy` instead. Raises whatever lleaves raises;
    :func:`compile_boosters` turns failures into a LightGBM fallback.
    """
    import lleaves

    rounds = rounds_of(booster, num_iteration)
    hit = lookup(booster, rounds)
    if hit is not None:
        return hit, True
    key, text = cache_key(booster, rounds)
    folder = _writable(Path(directory) if directory is not None else cache_dir())
    model_txt, obj = folder / f"{key}.txt", folder / f"{key}.o"
    if not model_txt.exists():
        with atomic_write(model_txt) as tmp:
            tmp.write_bytes(text.encode())
    model = lleaves.Model(model_file=str(model_txt))
    cached = obj.exists()
    if not cached:
        with _compile_lock(folder, key, wait):
            cached = obj.exists()  # compiled by another process while this one waited
            if not cached:
                with atomic_write(obj) as tmp:  # lleaves writes the cache only where no file exists
                    model.compile(cache=str(tmp))
    if cached:
        model.compile(cache=str(obj))
    probe = _probe(booster, np.random.default_rng(0))
    want = booster.predict(probe, num_iteration=rounds, num_threads=1)
    got = predict_many([model], probe, 1)[0]
    if not np.allclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True):
        worst = float(np.nanmax(np.abs(got - want)))
        raise ValueError(f"compiled booster disagrees with LightGBM on probe rows (max |diff| {worst:.3g})")
    register(booster, rounds, model)
    return model, cached


_FALLBACK: dict[Path, Path] = {}


def _writable(folder: Path) -> Path:
    """``folder`` (created), or a private temp folder for this process when it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-", delete=True)
        probe.close()
        return folder
    except OSError as e:
        if folder not in _FALLBACK:
            _FALLBACK[folder] = Path(tempfile.mkdtemp(prefix="ltv-trees-"))
            log.warning("tree cache %s is not writable (%s): compiling into %s for this process (set %s)",
                        folder, e, _FALLBACK[folder], ENV_CACHE)  # fmt: skip
        return _FALLBACK[folder]


def compile_boosters(pairs, directory=None) -> dict:
    """Compile every ``(booster, num_iteration)`` of ``pairs``; a failure keeps LightGBM for that one.

    Returns a summary: boosters, trees, compiled, from_cache, failed, seconds.
    """
    summary = {"boosters": 0, "trees": 0, "compiled": 0, "from_cache": 0, "failed": 0, "seconds": 0.0}
    if not enabled():
        log.info("tree compilation is off (%s=0 or lleaves missing): LightGBM predicts", ENV_SWITCH)
        return summary
    t0 = time.perf_counter()
    seen, todo = set(), []
    for booster, num_iteration in pairs:
        rounds = rounds_of(booster, num_iteration)
        if (booster, rounds) in seen:  # a Booster hashes by identity
            continue
        seen.add((booster, rounds))
        summary["boosters"] += 1
        summary["trees"] += rounds * booster.num_model_per_iteration()
        todo.append((booster, rounds))
    # two passes: first the boosters no other process is compiling (scoring processes that load one
    # model at once share the work), then the rest, waiting for the processes that compile them
    for wait in (False, True):
        busy = []
        for booster, rounds in todo:
            t = time.perf_counter()
            try:
                _, cached = compile_booster(booster, rounds, directory, wait=wait)
            except Busy:
                busy.append((booster, rounds))
                continue
            except Exception as e:  # noqa: BLE001 - an accelerator: never fail a prediction job over it
                summary["failed"] += 1
                log.warning("booster with %d rounds stays on LightGBM: compilation failed: %s", rounds, e)
                continue
            summary["from_cache" if cached else "compiled"] += 1
            if not cached:
                log.info(
                    "compiled a %d-round booster to native code in %.1f s", rounds, time.perf_counter() - t
                )
        todo = busy
    summary["seconds"] = time.perf_counter() - t0
    log.info(
        "native trees: %d boosters (%d trees), %d compiled, %d from the cache (%s), %d failed, %.1f s",
        summary["boosters"], summary["trees"], summary["compiled"], summary["from_cache"],
        directory or cache_dir(), summary["failed"], summary["seconds"],
    )  # fmt: skip
    return summary
