"""Which files a split reads: time windows over the hive ``datetime`` partitions, seeded sampling.

Discovery prunes hour folders with a ``pyarrow.dataset`` partition filter (the folder form
'YYYY-MM-DD-HH-00' sorts chronologically), so files outside a window are never opened.
"""

from __future__ import annotations

import os
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from ltv import contract
from ltv.data.schema import DataError, LoadReport

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


PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_FOLDER = re.compile(rf"^{_DT}=(\d{{4}}-\d{{2}}-\d{{2}}-\d{{2}}-00)$")


def _valid_hour(folder: str) -> str | None:
    """'YYYY-MM-DD-HH-00' of a partition folder name, or None when it is not a valid one."""
    match = _FOLDER.match(folder)
    if match is None:
        return None
    try:
        datetime.strptime(match.group(1), contract.PARTITION_FORMAT)
    except ValueError:
        return None
    return match.group(1)


def _hidden(name: str) -> bool:
    """Names Spark and Hadoop write beside the data (``_SUCCESS``, ``.part-0.crc``, ``_temporary``)."""
    return name.startswith((".", "_"))


@dataclass
class Discovery:
    """What discovery found besides the window's files: empty hour folders, and folders and files it
    skipped (a folder that is not a valid ``datetime=YYYY-MM-DD-HH-00``, a file that is not parquet)."""

    empty: list[str] = field(default_factory=list)
    skipped_folders: list[Path] = field(default_factory=list)
    skipped_files: list[Path] = field(default_factory=list)

    def report(self, root: str | Path, subset: str) -> LoadReport:
        """A LoadReport with these counts (``empty_partitions``, ``skipped``) and one warning each."""
        report = LoadReport(empty_partitions=len(self.empty))
        report.skip("bad_partition_folder", len(self.skipped_folders))
        report.skip("non_parquet_file", len(self.skipped_files))
        report.warnings += [
            f"skipped empty partition {root}/{subset}/{_DT}={h} (no parquet file)" for h in self.empty
        ]
        report.warnings += [
            f"skipped folder {p}: its name is not a partition '{_DT}=YYYY-MM-DD-HH-00' with a valid date"
            for p in self.skipped_folders
        ]
        report.warnings += [
            f"skipped file {p}: not a parquet file (name does not end in {' / '.join(PARQUET_SUFFIXES)})"
            for p in self.skipped_files
        ]
        return report


def _scan(base: Path) -> tuple[list[str], Discovery]:
    """(valid hour folders, sorted; what to skip) of a subset folder: one listing, no file opened."""
    hours, notes = [], Discovery()
    for entry in os.scandir(base):
        if _hidden(entry.name):
            continue
        if not entry.is_dir():
            notes.skipped_files.append(Path(entry.path))  # data lives in partition folders only
        elif (hour := _valid_hour(entry.name)) is None:
            notes.skipped_folders.append(Path(entry.path))
        else:
            hours.append(hour)
    return sorted(hours), notes


def _discover(root: str | Path, subset: str, window: Window, seed: int) -> tuple[list, Discovery]:
    """((hour, file) pairs of the window in time order, what discovery skipped or found empty)."""
    base = Path(root) / subset
    if not base.is_dir():
        raise DataError(
            f"subset folder {base} does not exist (expected {base}/{_DT}=YYYY-MM-DD-HH-00/*.parquet)"
        )
    folders, notes = _scan(base)
    valid = set(folders)
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
        if hour not in valid:  # outside a datetime= folder, or in one skipped above
            continue
        path = Path(frag.path)
        if path.name.lower().endswith(PARQUET_SUFFIXES):
            by_hour[hour].append(path)
        else:
            notes.skipped_files.append(path)
    notes.empty = [
        h for h in folders if (not start or h >= start) and (not end or h <= end) and h not in by_hour
    ]
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
    return [(h, p) for h in hours for p in sorted(by_hour[h])], notes


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
