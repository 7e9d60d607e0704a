"""Meta-features for the ensemble: first-stage outputs, time-ordered folds, out-of-fold risk encodings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ltv.models.gate import apply_gate

_EPS = 1e-6


def horizon_name(column: str) -> str:
    """'iap_revenue_d14' -> 'd14' (suffix used in part / meta-feature names)."""
    return column.rsplit("_", 1)[-1]


def time_folds(time, n_rows: int, n_folds: int) -> list[np.ndarray]:
    """Positions of ``n_folds`` contiguous time blocks (row order when ``time`` is None).

    Blocked K-fold: each block's out-of-fold predictions come from models fitted on the other blocks.
    The whole train window precedes the valid window, so no fold sees valid or holdout labels.
    """
    if int(n_folds) < 2:
        raise ValueError(f"n_folds must be >= 2 for out-of-fold predictions, got {n_folds}")
    if n_rows < n_folds:
        raise ValueError(f"cannot split {n_rows} rows into {n_folds} folds")
    order = np.arange(n_rows) if time is None else np.argsort(np.asarray(time), kind="stable")
    return [np.sort(block) for block in np.array_split(order, int(n_folds))]


def first_stage_columns(p_raw, p, whale, log_rev: np.ndarray, rev: np.ndarray, horizons, gate_params) -> dict:
    """The parts every ensemble reads, per input row (names used by ``predict_parts``), as arrays."""
    cols = {"p_buyer_raw": p_raw, "p_buyer": p, "whale_score": whale}
    cols["p_gated"] = apply_gate(p, whale, **gate_params)
    for k, h in enumerate(horizons):
        cols[f"log_rev_{horizon_name(h)}"] = log_rev[:, k]
    for k, h in enumerate(horizons):
        cols[f"rev_{horizon_name(h)}"] = rev[:, k]
    return cols


def first_stage_frame(p_raw, p, whale, log_rev: pd.DataFrame, rev: pd.DataFrame, gate_params, index):
    """:func:`first_stage_columns` as a DataFrame (``log_rev`` / ``rev`` with the horizons as columns)."""
    cols = first_stage_columns(
        p_raw, p, whale, log_rev.to_numpy(), rev.to_numpy(), log_rev.columns, gate_params
    )
    return pd.DataFrame(cols, index=index)


def stack_columns(frame) -> dict[str, np.ndarray]:
    """Numeric meta-features of a first-stage frame (a DataFrame or a name -> array mapping):
    probabilities, per-horizon log revenue, whale signal and buyer probability x predicted revenue
    (both on the log scale)."""
    p = np.asarray(frame["p_buyer"])
    q = np.asarray(frame["p_gated"])
    logs = [c for c in frame if c.startswith("log_rev_")]
    out = {}
    out["p_buyer"] = p
    out["p_gated"] = q
    out["logit_p"] = np.log(np.clip(p, _EPS, 1 - _EPS) / np.clip(1 - p, _EPS, None))
    out["whale_score"] = np.asarray(frame["whale_score"])
    for c in logs:
        out[c] = np.asarray(frame[c])
    out["p_x_log_rev"] = q * out[logs[0]]  # the hurdle RMSLE composition
    out["log_p_x_rev"] = np.log1p(q * np.asarray(frame[f"rev_{logs[0][len('log_rev_') :]}"]))
    if "log_direct" in frame:  # the chain's direct E[log1p y | x] model (stacking only)
        out["log_direct"] = np.asarray(frame["log_direct"])
    return out


def stack_features(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`stack_columns` of a first-stage DataFrame, as a DataFrame on its index."""
    return pd.DataFrame(stack_columns(frame), index=frame.index)


def _keys(column: pd.Series) -> pd.Series:
    """Hashable group keys: category codes (fixed at fit time), numbers as floats, else strings."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return pd.Series(column.cat.codes.to_numpy(), index=column.index)
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.astype("float64").fillna(-1.0)
    return column.astype("object").where(column.notna(), "<NA>").astype(str)


class RiskEncoder:
    """Smoothed mean of log1p(d7 revenue) per value of a few raw columns (device / geo risk factors).

    Parameters
    ----------
    columns : names looked up in X; absent ones are skipped (recorded in ``columns_``).
    smoothing : pseudo-count pulling rare values to the global mean.
    """

    def __init__(self, columns=("country", "dev_os", "advertiser_category", "dev_make"), smoothing=50.0):
        self.columns = columns
        self.smoothing = smoothing

    def _table(self, keys: pd.Series, target: np.ndarray) -> pd.Series:
        stats = pd.DataFrame({"k": keys.to_numpy(), "y": target}).groupby("k")["y"].agg(["sum", "count"])
        return (stats["sum"] + self.smoothing * self.prior_) / (stats["count"] + self.smoothing)

    def fit(self, X: pd.DataFrame, y) -> RiskEncoder:
        target = np.log1p(np.clip(np.asarray(y, dtype=np.float64), 0, None))
        self.columns_ = [c for c in self.columns if c in X.columns]
        self.prior_ = float(target.mean())
        self.tables_ = {c: self._table(_keys(X[c]), target) for c in self.columns_}
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            self.transform_columns(X), index=X.index, columns=[f"risk_{c}" for c in self.columns_],
            dtype=np.float64,
        )  # fmt: skip

    def transform_columns(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """:meth:`transform` as ``risk_<column>`` -> float64 array: ``Series.map(table).fillna(prior)``
        as array look-ups (a category column: its codes index a table by code, the null code -1 its
        last slot; other columns: an index look-up), the same values at a fraction of the overhead."""
        out = {}
        for c in self.columns_:
            column, table = X[c], self.tables_[c]
            values = table.to_numpy(dtype=np.float64)
            if isinstance(column.dtype, pd.CategoricalDtype):
                by_code = np.full(len(column.dtype.categories) + 1, self.prior_)
                codes = table.index.to_numpy(dtype=np.int64)
                known = codes < len(by_code) - 1  # codes of categories this column's dtype lacks: none
                by_code[codes[known]] = values[known]
                out[f"risk_{c}"] = by_code[column.array.codes]
                continue
            pos = table.index.get_indexer(_keys(column).to_numpy())
            out[f"risk_{c}"] = np.where(
                pos >= 0, values[np.maximum(pos, 0)] if len(table) else 0.0, self.prior_
            )
        return out

    def fit_transform_oof(self, X: pd.DataFrame, y, folds) -> pd.DataFrame:
        """Out-of-fold encodings of the train rows (each block encoded by the other blocks), then a
        full fit for later rows: a row's own label never enters its own encoding."""
        self.fit(X, y)
        out = pd.DataFrame(0.0, index=X.index, columns=[f"risk_{c}" for c in self.columns_])
        y = np.asarray(y, dtype=np.float64)
        for block in folds:
            rest = np.setdiff1d(np.arange(len(X)), block)
            enc = RiskEncoder(self.columns_, self.smoothing).fit(X.iloc[rest], y[rest])
            out.iloc[block] = enc.transform(X.iloc[block]).to_numpy()
        return out
