"""Synthetic data to the contract (docs/data_contract.md), with an exact per-row oracle.

``generate`` writes ``<root>/train`` and ``<root>/test`` hive partitions (``datetime=YYYY-MM-DD-HH-00``),
``<root>/sample_submission.csv`` and, last, ``<root>/_GENERATOR.json``; the oracle (P(buyer),
E[log1p y | x], E[y | x], and the test labels) goes to a separate folder no model reads. The generative
model is described in docs/generator.md. Each hour is drawn from its own seed (seed, split, hour), so
hours are independent and a run is reproducible value for value.

CLI: ``python -m ltv.synthetic --root data/synthetic --rows-per-hour 1000 --seed 0``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import logging
import os
import time
from pathlib import Path

import dask
import numpy as np
import pyarrow.parquet as pq
from dask.callbacks import Callback

from ltv.contract import PARTITION_COLUMN, PARTITION_FORMAT, ROW_ID
from ltv.io import atomic_write
from ltv.synthetic.arrays import uuid4_strings
from ltv.synthetic.hour import ORACLE_COLUMNS, SPLIT_CODE, draw_hour, hour_table, oracle_table
from ltv.synthetic.labels import SIGMA_WHALE
from ltv.synthetic.writer import write_csv, write_json, write_parquet

__all__ = ["ORACLE_COLUMNS", "draw_hour", "ensure_generated", "generate", "hour_table", "main", "parse_hour"]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MARKER = "_GENERATOR.json"
ORACLE_MARKER = "_ORACLE.json"
_PARAM_NAMES = (
    "train_start",
    "train_hours",
    "test_start",
    "test_hours",
    "rows_per_hour",
    "files_per_hour",
    "seed",
)
# the spenders' tail (labels.label_params): recorded in the marker only when not the default, so data written
# before the knob existed keeps its marker
TAIL_DEFAULTS = {"whale_logit": 0.0, "whale_sigma": SIGMA_WHALE}


def parse_hour(text: str) -> dt.datetime:
    """'YYYY-MM-DD-HH' (or the partition form 'YYYY-MM-DD-HH-00') as an aware UTC datetime."""
    try:
        return dt.datetime.strptime(str(text)[:13], "%Y-%m-%d-%H").replace(tzinfo=dt.timezone.utc)
    except ValueError as err:
        raise ValueError(f"hour {text!r}: expected 'YYYY-MM-DD-HH'") from err


def _part_numbers(rng: np.random.Generator, k: int) -> list[int]:
    """Spark-like part numbers: 0 first, then non-contiguous."""
    return [0, *np.cumsum(rng.integers(1, 40, k - 1)).tolist()]


def _folder(when: dt.datetime) -> str:
    return f"{PARTITION_COLUMN}={when.strftime(PARTITION_FORMAT)}"


def _write_hour(tmp: Path, otmp: Path, split: str, when: dt.datetime, names: list[str], p: dict) -> int:
    """Draw one hour and write it as the data files ``names`` plus one oracle file; return its row count."""
    cols, labels, orc = draw_hour(p["seed"], split, when, p["rows_per_hour"], p.get("tail"))
    table = hour_table(cols, labels, split)
    bounds = np.linspace(0, table.num_rows, len(names) + 1).astype(int)
    for k, name in enumerate(names):
        write_parquet(table.slice(bounds[k], bounds[k + 1] - bounds[k]), tmp / split / _folder(when) / name)
    write_parquet(
        oracle_table(cols[ROW_ID], orc, labels if split != "train" else None),
        otmp / split / _folder(when) / "part-00000.parquet",
    )
    return table.num_rows


class _Progress(Callback):
    """Logs a split's progress every ~10% of its hours (each finished task is one hour written)."""

    def __init__(self, split: str, hours: int):
        super().__init__()
        self.split, self.hours, self.done, self.rows = split, hours, 0, 0
        self.t0 = time.perf_counter()

    def _posttask(self, key, result, dsk, state, worker_id):
        self.done, self.rows = self.done + 1, self.rows + result
        if self.done % max(1, self.hours // 10) == 0 or self.done == self.hours:
            rate = self.rows / max(time.perf_counter() - self.t0, 1e-9)
            log.info(
                "%s: %d/%d hours, %d rows, %.0f rows/s", self.split, self.done, self.hours, self.rows, rate
            )


def _write_split(
    tmp: Path, otmp: Path, split: str, hours: list[dt.datetime], p: dict, workers: int
) -> list[Path]:
    """Write one split's hours (data + oracle), ``workers`` hours at a time; return its data files in order.

    Hours are independent (each has its own seed), so they are Dask tasks run by the threaded scheduler
    (``sync`` for one worker): memory holds ``workers`` hours, whatever the number of hours.
    """
    job = uuid4_strings(np.random.default_rng([p["seed"], SPLIT_CODE[split], 7]), 1)[0].as_py()
    files = {}  # hour -> its part file names
    for i, when in enumerate(hours):
        parts = _part_numbers(np.random.default_rng([p["seed"], SPLIT_CODE[split], i]), p["files_per_hour"])
        files[when] = [f"part-{part:05d}-{job}-c000.snappy.parquet" for part in parts]
    tasks = [dask.delayed(_write_hour, pure=True)(tmp, otmp, split, w, n, p) for w, n in files.items()]
    with _Progress(split, len(hours)):
        dask.compute(*tasks, scheduler="threads" if workers > 1 else "sync", num_workers=workers)
    return [tmp / split / _folder(when) / name for when, names in files.items() for name in names]


def _row_ids(files: list[Path]):
    """The ``row_id`` column of each file in turn (one file in memory at a time)."""
    for f in files:
        yield pq.read_table(f, columns=[ROW_ID]).column(ROW_ID).to_pylist()


def _params(train_start, train_hours, test_start, test_hours, rows_per_hour, files_per_hour, seed,
            tail: dict | None = None) -> dict:  # fmt: skip
    for name, value in (("train_hours", train_hours), ("test_hours", test_hours)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    for name, value in (("rows_per_hour", rows_per_hour), ("files_per_hour", files_per_hour)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if files_per_hour > rows_per_hour:
        raise ValueError(
            f"files_per_hour={files_per_hour} exceeds rows_per_hour={rows_per_hour}: files would be empty"
        )
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    parse_hour(train_start), parse_hour(test_start)
    tail = {**TAIL_DEFAULTS, **(tail or {})}
    if tail["whale_sigma"] <= 0:
        raise ValueError(f"whale_sigma: expected a positive spread, got {tail['whale_sigma']!r}")
    extra = {"tail": {k: float(v) for k, v in tail.items()}} if tail != TAIL_DEFAULTS else {}
    return {
        "generator_version": GENERATOR_VERSION,
        "train_start": str(train_start)[:13],
        "train_hours": train_hours,
        "test_start": str(test_start)[:13],
        "test_hours": test_hours,
        "rows_per_hour": rows_per_hour,
        "files_per_hour": files_per_hour,
        "seed": seed,
        **extra,
    }


def default_oracle_root(root: str | os.PathLike) -> Path:
    """``<root>_oracle``: a sibling folder, outside the data root that models read."""
    root = Path(root)
    return root.with_name(root.name + "_oracle")


def generate(
    root: str | os.PathLike,
    *,
    train_start: str = "2025-10-01-00",
    train_hours: int = 144,
    test_start: str = "2025-10-08-00",
    test_hours: int = 96,
    rows_per_hour: int = 1000,
    files_per_hour: int = 1,
    seed: int = 0,
    whale_logit: float = TAIL_DEFAULTS["whale_logit"],
    whale_sigma: float = TAIL_DEFAULTS["whale_sigma"],
    oracle_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    workers: int | None = None,
) -> Path:
    """Generate a contract data set under ``root`` and its oracle under ``oracle_root``; return ``root``.

    Parameters
    ----------
    root : folder to create (must not exist unless ``overwrite``).
    train_start, test_start : first hour of each split, 'YYYY-MM-DD-HH' (UTC).
    train_hours, test_hours : number of hourly partitions per split.
    rows_per_hour : rows in every hour; ``files_per_hour`` part files share them.
    seed : seeds every hour together with (split, hour); same parameters -> same values.
    whale_logit, whale_sigma : a heavier spenders' tail (``labels.label_params``): added to the whale
        weight's logit, and the whale component's log spread; the defaults draw the default data.
    oracle_root : where the oracle goes; default ``<root>_oracle`` (a sibling, never inside ``root``).
    overwrite : replace an existing ``root`` / ``oracle_root``.
    workers : hours drawn and written at once (threads); default one per core. Peak memory is about
        ``workers`` hours of rows (~0.5 GB each at 143,000 rows an hour), flat in the number of hours;
        the files do not depend on it.

    Returns
    -------
    Path of ``root``. Everything is built under temp names beside ``root`` and ``oracle_root``
    (:func:`ltv.io.atomic_write`) and renamed at the end, data last, with ``_GENERATOR.json`` written last
    inside it, so an interrupted run leaves nothing that looks complete.
    """
    tail = {"whale_logit": whale_logit, "whale_sigma": whale_sigma}
    p = _params(train_start, train_hours, test_start, test_hours, rows_per_hour, files_per_hour, seed, tail)
    root, oroot = _targets(root, oracle_root, overwrite)
    t0 = time.perf_counter()
    # the oracle is renamed into place first (inner block), the data root last
    with atomic_write(root) as tmp, atomic_write(oroot) as otmp:
        for d in (tmp, otmp):
            d.mkdir(parents=True)
        workers = int(workers or dask.system.CPU_COUNT)
        _write_split(tmp, otmp, "train", _hour_list(p["train_start"], train_hours), p, workers)
        test_files = _write_split(tmp, otmp, "test", _hour_list(p["test_start"], test_hours), p, workers)
        write_csv(_row_ids(test_files), tmp / "sample_submission.csv")
        info = {
            "params": p,
            "rows": {"train": train_hours * rows_per_hour, "test": test_hours * rows_per_hour},
        }
        write_json(otmp / ORACLE_MARKER, {**info, "data_root": str(root)})
        write_json(tmp / MARKER, {**info, "oracle_root": str(oroot)})
    rows, secs = (train_hours + test_hours) * rows_per_hour, time.perf_counter() - t0
    log.info("generated %d rows in %.1f s (%.0f rows/s) -> %s", rows, secs, rows / max(secs, 1e-9), root)
    return root


def _targets(root, oracle_root, overwrite: bool) -> tuple[Path, Path]:
    """Absolute data and oracle roots, refusing an oracle inside the data or a folder not ours to replace."""
    root = Path(root).absolute()
    oroot = Path(oracle_root).absolute() if oracle_root is not None else default_oracle_root(root)
    if oroot == root or root in oroot.parents:
        raise ValueError(
            f"oracle_root {oroot} must lie outside root {root}: models read everything under root"
        )
    if root.exists() and not overwrite:
        raise FileExistsError(f"{root} exists; pass overwrite=True (--overwrite) to replace it")
    if oroot.exists() and not overwrite and not (oroot / ORACLE_MARKER).exists():
        raise FileExistsError(
            f"oracle_root {oroot} exists and was not written by the generator; pass overwrite=True"
        )
    return root, oroot


def _hour_list(start: str, count: int) -> list[dt.datetime]:
    first = parse_hour(start)
    return [first + dt.timedelta(hours=h) for h in range(count)]


def ensure_generated(root: str | os.PathLike, **kwargs) -> Path:
    """Generate unless ``<root>/_GENERATOR.json`` records the same parameters and its oracle is there.

    Takes ``generate``'s keyword arguments; cheap when the data is present (reads one small file). Output
    of the generator with other parameters is regenerated; a ``root`` without the marker (a real export)
    is never replaced unless ``overwrite=True``.
    """
    root = Path(root).absolute()
    overwrite = kwargs.pop("overwrite", False)
    unknown = set(kwargs) - set(_PARAM_NAMES) - set(TAIL_DEFAULTS) - {"oracle_root", "workers"}
    if unknown:
        raise TypeError(f"ensure_generated: unexpected argument(s) {sorted(unknown)}")
    defaults = {k: v.default for k, v in inspect.signature(generate).parameters.items() if k in _PARAM_NAMES}
    tail = {k: kwargs.get(k, v) for k, v in TAIL_DEFAULTS.items()}
    wanted = _params(*({**defaults, **kwargs}[k] for k in _PARAM_NAMES), tail)
    oroot = Path(kwargs["oracle_root"]).absolute() if kwargs.get("oracle_root") else default_oracle_root(root)
    marker = root / MARKER
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta.get("params") == wanted and meta.get("oracle_root") == str(oroot) and oroot.is_dir():
            log.info("synthetic data present at %s (same parameters); not regenerating", root)
            return root
        overwrite = True  # the generator's own output, with other parameters or without its oracle
    return generate(root, overwrite=overwrite, **kwargs)


def main(argv: list[str] | None = None) -> Path:
    """CLI entry: ``python -m ltv.synthetic --root data/synthetic [...]``."""
    ap = argparse.ArgumentParser(prog="python -m ltv.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--train-start", default="2025-10-01-00")
    ap.add_argument("--train-hours", type=int, default=144)
    ap.add_argument("--test-start", default="2025-10-08-00")
    ap.add_argument("--test-hours", type=int, default=96)
    ap.add_argument("--rows-per-hour", type=int, default=1000)
    ap.add_argument("--files-per-hour", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    for name, what in (("logit", "added to the whale weight's logit"), ("sigma", "the whale log spread")):
        ap.add_argument(f"--whale-{name}", type=float, default=TAIL_DEFAULTS[f"whale_{name}"], help=what)
    ap.add_argument("--oracle-root", default=None)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--workers", type=int, default=None, help="hours written at once (default: one per core)")
    args = vars(ap.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return generate(args.pop("root"), **args)
