"""LabelledRows: a set of feature rows with their labels, request time and (for the ensemble) first-stage
outputs, passed to a fit as one argument instead of four parallel ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ltv.contract import TARGET
from ltv.models.blocks import Blocks

BUYER = "buyer_d7"


@dataclasses.dataclass(frozen=True)
class LabelledRows:
    """Rows of one window (train, the valid window's early-stopping or calibration part, ...).

    Parameters
    ----------
    X : features, one row per labelled row (extracted or model features, by the caller's stage): a pandas
        frame, or the model matrix as :class:`ltv.models.blocks.Blocks` (a window too big for one frame).
    labels : contract label columns aligned with ``X`` (iap_revenue_d7, buyer_d7, later horizons).
    time : request time per row (unix seconds), for time-ordered folds; None keeps row order.
    frame : first-stage outputs of these rows (the stacking ensemble's input), when computed.
    """

    X: pd.DataFrame
    labels: pd.DataFrame
    time: np.ndarray | None = None
    frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.X)

    @property
    def y(self) -> np.ndarray:
        """d7 revenue in dollars."""
        return self.labels[TARGET].to_numpy(dtype=np.float64)

    @property
    def buyer(self) -> np.ndarray:
        """The 0/1 buyer label."""
        return self.labels[BUYER].to_numpy()

    def take(self, positions) -> LabelledRows:
        """The rows at ``positions`` (every field cut the same way; sorted positions for Blocks)."""
        positions = np.asarray(positions)
        return LabelledRows(
            self.X.take(positions) if isinstance(self.X, Blocks) else self.X.iloc[positions],
            self.labels.iloc[positions],
            None if self.time is None else np.asarray(self.time)[positions],
            None if self.frame is None else self.frame.iloc[positions],
        )

    def buyers(self) -> LabelledRows:
        """The rows with buyer_d7 == 1."""
        return self.take(np.flatnonzero(self.buyer == 1))

    def in_memory(self) -> LabelledRows:
        """These rows with X as one pandas model matrix (Blocks are read whole: for small subsets)."""
        return dataclasses.replace(self, X=self.X.frame()) if isinstance(self.X, Blocks) else self

    def with_frame(self, frame: pd.DataFrame) -> LabelledRows:
        return dataclasses.replace(self, frame=frame)
