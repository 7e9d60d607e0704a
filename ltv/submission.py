"""The submission file: ``row_id,iap_revenue_d7`` lines, written whole or not at all."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from ltv.contract import ROW_ID, TARGET
from ltv.io import atomic_write

log = logging.getLogger(__name__)


def round_significant(x, digits: int = 6) -> np.ndarray:
    """``x`` rounded to ``digits`` significant decimal digits (the value ``'%.{digits}g'`` prints), vectorised.

    The result is the double nearest to that decimal, so its shortest representation is that decimal.
    Zeros, non-finite values and magnitudes below 1e-290 are returned as they are.
    """
    out = np.array(x, dtype=np.float64, copy=True)
    mask = np.isfinite(out) & (np.abs(out) >= 1e-290)
    v = out[mask]
    k = digits - 1 - np.floor(np.log10(np.abs(v))).astype(np.int64)  # decimals to keep
    p = np.power(10.0, np.abs(k))
    with np.errstate(over="ignore", invalid="ignore"):
        out[mask] = np.where(k >= 0, np.round(v * p) / p, np.round(v / p) * p)
    return out


_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="none")


def csv_rows(ids: pa.Array | pa.ChunkedArray, pred: np.ndarray, extra: pd.DataFrame | None = None) -> bytes:
    """``row_id,prediction[,extra columns]`` lines (no header), numbers to 6 significant digits.

    Arrow's CSV writer (C++, outside the GIL; pandas' ``to_csv`` cost ~3 us a row); a row_id holding a
    comma, quote or newline sends the batch through pandas, which quotes it.
    """
    values = {TARGET: round_significant(pred)}
    for c in [] if extra is None else extra.columns:
        values[c] = round_significant(extra[c].to_numpy(dtype=np.float64))
    try:
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(pa.table({ROW_ID: ids, **values}), sink, _CSV_OPTIONS)
        return sink.getvalue().to_pybytes()
    except pa.ArrowInvalid:
        frame = pd.DataFrame({ROW_ID: ids.to_pandas(), **values})
        return frame.to_csv(header=False, index=False, float_format="%.6g", lineterminator="\n").encode()


def write_submission(scored, output: str | os.PathLike) -> dict[str, float]:
    """Write ``(row_ids, predictions, extra or None, ...)`` items to ``output``, each row_id once (its first
    prediction: :func:`ltv.scoring.unique_rows`); returns the counts (rows, rows/s, duplicates). An
    ``extra`` DataFrame (``predict.py parts=true``) adds its columns after the prediction.

    The file is written to a temp name beside ``output`` and renamed at the end, so a failure or an
    interrupt leaves no submission behind (and an older one in place).
    """
    from ltv.scoring import unique_rows

    out, counts = Path(output), {}
    with atomic_write(out) as tmp, open(tmp, "wb") as fh:
        header = None
        for ids, pred, *rest in unique_rows(scored, counts):
            extra = rest[0] if rest and isinstance(rest[0], pd.DataFrame) else None
            if header is None:
                header = ",".join([ROW_ID, TARGET, *([] if extra is None else extra.columns)])
                fh.write(f"{header}\n".encode())
            fh.write(csv_rows(ids, pred, extra))
        if counts.get("rows", 0) == 0:
            raise ValueError("no rows were scored: the input window is empty")
    log.info(
        "wrote %s: %d rows in %.1fs (%.0f rows/s), %d duplicate row_ids skipped",
        out, counts["rows"], counts["seconds"], counts["rows_per_s"], counts["duplicates"],
    )  # fmt: skip
    return counts
