"""Row_ids seen so far in a stream: drops repeats across batches (used by the loader)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from ltv import contract


class SeenRowIds:
    """Row_ids seen so far in a stream, as 64-bit hashes (8 bytes a row): drops repeats across batches.

    Hashes are kept as sorted runs; a new run is merged into the previous one while it is at least half
    that one's size (a binary counter: about log2(batches) runs, each merge a linear merge of two sorted
    runs), so a batch costs a few binary searches. A hash collision between two different row_ids
    (probability ~n^2 / 2^65, about 5e-6 for 13M rows) would drop one row as a duplicate; an exact set
    of strings would cost ~100 bytes a row instead.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def _contains(self, h: np.ndarray) -> np.ndarray:
        found = np.zeros(len(h), bool)
        for run in self._runs:
            pos = np.minimum(np.searchsorted(run, h), len(run) - 1)
            found |= run[pos] == h
        return found

    def new_mask(self, ids: pd.Series) -> np.ndarray:
        """True for each row_id of ``ids`` seen neither in an earlier call nor earlier in ``ids``; those
        are remembered."""
        h = pd.util.hash_pandas_object(ids, index=False).to_numpy()
        new = ~self._contains(h) & ~pd.Series(h).duplicated().to_numpy()
        if new.any():  # a batch of repeats only adds nothing (an empty run would break the searches)
            self._runs.append(np.sort(h[new]))
        while len(self._runs) > 1 and 2 * len(self._runs[-1]) >= len(self._runs[-2]):
            last = self._runs.pop()
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], last]), kind="stable")  # a merge
        return new

    def filter_new(self, table: pa.Table, report) -> pa.Table:
        """Drop rows whose row_id was seen in an earlier table (counted), then remember the rest."""
        if table.num_rows == 0:
            return table
        new = self.new_mask(table.column(contract.ROW_ID).to_pandas())
        if not new.all():
            repeats = int((~new).sum())
            report.drop("duplicate_row_id", repeats)
            report.rows_kept -= repeats
            table = table.filter(pa.array(new))
        return table
