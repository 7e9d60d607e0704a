"""pandas / numpy helpers shared by the feature builder and the LightGBM matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.internals import create_dataframe_from_blocks  # pandas >= 2.3


def column_run(X: pd.DataFrame, pos: np.ndarray) -> pd.DataFrame:
    """``X.iloc[:, pos]``; a run of adjacent positions is taken as a slice, which pandas gives as a view
    of its block instead of a copy (the same frame)."""
    if len(pos) and pos[-1] - pos[0] == len(pos) - 1 and (np.diff(pos) == 1).all():
        return X.iloc[:, pos[0] : pos[-1] + 1]
    return X.iloc[:, pos]


def feature_frame(
    numbers: np.ndarray, names: list[str], strings: dict[str, np.ndarray], n: int
) -> pd.DataFrame:
    """The extracted numbers as one float32 block (``numbers``, a row per column of ``names``), then the
    string columns as one object block. Two blocks cost the same to build for one row or a million, where
    one block per column costs ~2.5 ms for ~300 columns; and transform reads either part as a view of its
    block. Explicit object dtype keeps None for null whatever pandas' string inference default is."""
    parts = [(numbers, np.arange(len(names)))]
    if strings:
        text = np.empty((len(strings), n), dtype=object)
        for j, v in enumerate(strings.values()):
            text[j] = v
        parts.append((text, np.arange(len(names), len(names) + len(strings))))
    columns = pd.Index(names + list(strings), dtype=object)
    return create_dataframe_from_blocks(parts, index=pd.RangeIndex(n), columns=columns)


class FloatRows:
    """A float32 ``(rows, n)`` block filled a group of rows (columns of a feature frame) at a time, so the
    columns of many groups land in one block without stacking per-group blocks (a second copy of all).

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

    def extend(self, columns: list[np.ndarray]) -> None:
        """Append each of ``columns`` (1-D, n values each) as the next row. One ``concatenate`` into the
        rows' flat view (they are contiguous): no temporary, and one C call for a group of columns,
        which a one-row request would otherwise pay per column. float64 -> float32 rounds as ``astype``."""
        if not columns:
            return
        self._reserve(self.rows + len(columns))
        rows = self._block[self.rows : self.rows + len(columns)]
        np.concatenate(columns, out=rows.reshape(-1), casting="unsafe")
        self.rows += len(columns)

    def finish(self, spare: int = 0) -> np.ndarray:
        """The filled rows followed by ``spare`` unset ones, as one C-contiguous block."""
        self._reserve(self.rows + spare)
        return self._block[: self.rows + spare]


@dataclass(frozen=True)
class FloatMatrix:
    """A model matrix X as the one float32 ``(rows, columns)`` matrix LightGBM reads for it: X's columns in
    order, each categorical one as its codes under ``categories`` (NaN for missing). The feature builder
    writes it together with X (X's numbers are a view of it), so the model need not copy X's numbers into
    a matrix of its own (``ltv.models.lgbm_predict.PredictCache`` takes it for the boosters of X's columns).
    """

    columns: list[str]
    categories: list[list]  # per categorical column, in order: its categories
    values: np.ndarray  # column-major (a row of the transposed block per column)
