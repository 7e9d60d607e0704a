"""Atomic file writes for the generator: a temp name in the same folder, then ``os.replace``."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_parquet(table: pa.Table, path: Path) -> None:
    """Snappy parquet at ``path`` (folders created); never leaves a half-written file under that name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    pq.write_table(table, tmp, compression="snappy")
    os.replace(tmp, path)


def write_csv(row_ids: list[str], path: Path) -> None:
    """``sample_submission.csv``: header ``row_id,iap_revenue_d7`` and one ``<row_id>,0.0`` line per row."""
    tmp = _tmp(path)
    with open(tmp, "w", encoding="ascii", newline="\n") as fh:
        fh.write("row_id,iap_revenue_d7\n")
        fh.writelines(f"{r},0.0\n" for r in row_ids)
    os.replace(tmp, path)
