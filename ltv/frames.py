"""pandas helpers shared by the feature builder and the LightGBM matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd


def column_run(X: pd.DataFrame, pos: np.ndarray) -> pd.DataFrame:
    """``X.iloc[:, pos]``; a run of adjacent positions is taken as a slice, which pandas gives as a view
    of its block instead of a copy (the same frame)."""
    if len(pos) and pos[-1] - pos[0] == len(pos) - 1 and (np.diff(pos) == 1).all():
        return X.iloc[:, pos[0] : pos[-1] + 1]
    return X.iloc[:, pos]
