"""Which files a split reads: time windows over the hive ``datetime`` partitions, seeded sampling.

Discovery prunes hour folders with a ``pyarrow.dataset`` partition filter (the folder form
'YYYY-MM-DD-HH-00' sorts chronologically), so files outside a window are never opened.
"""

from __future__ import annotations

import os
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from ltv import contract
from ltv.data.schema import DataError

_DT = contract.PARTITION_COLUMN
_DT_SCHEMA = pa.schema([(_DT, pa.string())])


@dataclass(frozen=True)
class Window:
    """One split's slice of a subset folder: an inclusive hour range, a row fraction and a partition cap.

    ``start`` / ``end`` accept 'YYYY-MM-DD-HH', the folder form 'YYYY-MM-DD-HH-00' or a whole day
    'YYYY-MM-DD' (from hour 00 for ``start``, up to hour 23 for ``end``); None leaves that side open.
    ``fraction`` keeps a seeded share of each file's rows; ``max_partitions`` keeps a seeded choice of
    that many hour folders (in time order). ``name`` ('train', 'valid', ...) is used in messages.
    """

    start: str | None = None
    end: str | None = None
    fraction: float = 1.0
    max_partitions: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not 0.0 < float(self.fraction) <= 1.0:
            raise ValueError(f"window '{self.name}': fraction must be in (0, 1], got {self.fraction!r}")
        if self.max_partitions is not None and int(self.max_partitions) < 1:
            raise ValueError(
                f"window '{self.name}': max_partitions must be >= 1 or None, got {self.max_partitions!r}"
            )
        start, end = self.bounds()
        if start and end and start > end:
            raise ValueError(f"window '{self.name}': start {start} is after end {end}")

    def bounds(self) -> tuple[str | None, str | None]:
        """(start, end) in the folder form 'YYYY-MM-DD-HH-00', inclusive; None for an open side."""
        return _hour(self.start, False, self.name), _hour(self.end, True, self.name)

    def describe(self) -> str:
        start, end = self.bounds()
        return f"window '{self.name}' [{start or 'first hour'} .. {end or 'last hour'}]"


_BOUND = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[-T ](\d{2})(?:[-:](\d{2}))?)?$")


def _hour(value: object, is_end: bool, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):  # YAML may hand over dates and datetimes
        value = value.strftime("%Y-%m-%d-%H")
    elif isinstance(value, date):
        value = value.isoformat()
    match = _BOUND.match(str(value).strip())
    if match is None or match.group(3) not in (None, "00"):
        raise ValueError(f"window '{name}': bound {value!r} is not 'YYYY-MM-DD-HH' or 'YYYY-MM-DD-HH-00'")
    day, hour = match.group(1), match.group(2) or ("23" if is_end else "00")
    try:
        datetime.strptime(f"{day}-{hour}", "%Y-%m-%d-%H")
    except ValueError as exc:
        raise ValueError(f"window '{name}': bound {value!r} is not a valid date and hour") from exc
    return f"{day}-{hour}-00"


def _discover(root: str | Path, subset: str, window: Window, seed: int) -> tuple[list, list[str]]:
    """((hour, file) pairs of the window in time order, empty hour folders of the window)."""
    base = Path(root) / subset
    if not base.is_dir():
        raise DataError(
            f"subset folder {base} does not exist (expected {base}/{_DT}=YYYY-MM-DD-HH-00/*.parquet)"
        )
    start, end = window.bounds()
    expr = None
    if start:
        expr = ds.field(_DT) >= start
    if end:
        expr = ds.field(_DT) <= end if expr is None else expr & (ds.field(_DT) <= end)
    part = ds.partitioning(_DT_SCHEMA, flavor="hive")
    # An explicit schema means discovery only lists paths: no file is opened here.
    dataset = ds.dataset(str(base), format="parquet", partitioning=part, schema=_DT_SCHEMA)
    by_hour: dict[str, list[Path]] = defaultdict(list)
    for frag in dataset.get_fragments(filter=expr):
        hour = ds.get_partition_keys(frag.partition_expression).get(_DT)
        if hour is not None:  # files outside a datetime= folder are not part of any window
            by_hour[hour].append(Path(frag.path))
    folders = sorted(
        e.name.split("=", 1)[1] for e in os.scandir(base) if e.is_dir() and e.name.startswith(f"{_DT}=")
    )
    empty = [h for h in folders if (not start or h >= start) and (not end or h <= end) and h not in by_hour]
    hours = sorted(by_hour)  # the folder form sorts chronologically
    if not hours:
        have = (
            f"available hours {folders[0]} .. {folders[-1]} ({len(folders)} folders)"
            if folders
            else "no hour folders"
        )
        raise DataError(f"{window.describe()} of {base} matches no parquet file; {have}")
    if window.max_partitions is not None and len(hours) > window.max_partitions:
        rng = np.random.default_rng([seed, zlib.crc32(f"partitions/{window.name}".encode())])
        hours = [hours[i] for i in np.sort(rng.choice(len(hours), int(window.max_partitions), replace=False))]
    return [(h, p) for h in hours for p in sorted(by_hour[h])], empty


def list_files(root: str | Path, subset: str, window: Window, seed: int = 0) -> list[tuple[str, Path]]:
    """(datetime folder value, parquet file) pairs of ``window`` in ``<root>/<subset>``, in time order.

    Raises ``DataError`` naming the window and the available hours when it matches no file.
    """
    return _discover(root, subset, window, seed)[0]


def _sample(n: int, fraction: float, seed: int, key: str) -> np.ndarray | None:
    """Boolean keep-mask of a seeded share of ``n`` rows (None: keep all); stable per file key."""
    if fraction >= 1.0:
        return None
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    keep = np.zeros(n, bool)
    keep[rng.choice(n, size=int(round(n * fraction)), replace=False)] = True
    return keep
