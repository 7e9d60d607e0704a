"""The generator's file writers; each writes through :func:`ltv.io.atomic_write` (never a half-written file)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ltv.io import atomic_write


def write_parquet(table: pa.Table, path: Path) -> None:
    """Snappy parquet at ``path`` (folders created)."""
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")


def write_csv(row_id_chunks: Iterable[list[str]], path: Path) -> None:
    """``sample_submission.csv``: header ``row_id,iap_revenue_d7`` and one ``<row_id>,0.0`` line per row.

    The row ids come in chunks (one file's at a time), so memory does not grow with the test rows.
    """
    with atomic_write(path) as tmp, open(tmp, "w", encoding="ascii", newline="\n") as fh:
        fh.write("row_id,iap_revenue_d7\n")
        for row_ids in row_id_chunks:
            fh.writelines(f"{r},0.0\n" for r in row_ids)


def write_json(path: Path, obj: dict) -> None:
    """``obj`` as indented JSON with sorted keys (the generator's marker files)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
