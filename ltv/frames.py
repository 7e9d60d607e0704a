"""pandas / numpy helpers shared by the feature builder and the LightGBM matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd


def column_run(X: pd.DataFrame, pos: np.ndarray) -> pd.DataFrame:
    """``X.iloc[:, pos]``; a run of adjacent positions is taken as a slice, which pandas gives as a view
    of its block instead of a copy (the same frame)."""
    if len(pos) and pos[-1] - pos[0] == len(pos) - 1 and (np.diff(pos) == 1).all():
        return X.iloc[:, pos[0] : pos[-1] + 1]
    return X.iloc[:, pos]


class FloatRows:
    """A float32 ``(rows, n)`` block filled one row (column of a feature frame) at a time, so the columns
    of many groups land in one block without stacking per-group blocks (a second copy of everything).

    ``capacity`` rows are allocated up front; the block grows (doubling, one copy) when more come, so a
    right guess (the count of the previous call) means one allocation and no copy.
    """

    def __init__(self, capacity: int, n: int):
        self._block = np.empty((max(capacity, 1), n), dtype=np.float32)
        self.rows = 0

    def _reserve(self, rows: int) -> None:
        if rows > len(self._block):
            grown = np.empty((max(rows, 2 * len(self._block)), self._block.shape[1]), dtype=np.float32)
            grown[: self.rows] = self._block[: self.rows]
            self._block = grown

    def extend(self, columns) -> None:
        """Append each of ``columns`` (1-D, n values) as the next row; float64 -> float32 rounds as
        ``astype`` does."""
        for v in columns:
            self._reserve(self.rows + 1)
            self._block[self.rows] = v
            self.rows += 1

    def finish(self, spare: int = 0) -> np.ndarray:
        """The filled rows followed by ``spare`` unset ones, as one C-contiguous block."""
        self._reserve(self.rows + spare)
        return self._block[: self.rows + spare]
