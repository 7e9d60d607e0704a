"""The stacked ensemble over out-of-fold meta-features (its fit side: :mod:`ltv.models.ensemble_fit`;
the hurdle product and the objectives: :mod:`ltv.models.hurdle`)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestRegressor
from xgboost import XGBRegressor
from xgboost import config_context as xgb_config

from ltv.models._lgbm import matrix_predict, predict_threads
from ltv.models.ensemble_fit import StackingEnsembleFit
from ltv.models.hurdle import log_factor
from ltv.models.meta import stack_columns


def _linear_predict(model, M: np.ndarray) -> np.ndarray:
    """``make_pipeline(StandardScaler(), ElasticNet()).predict(M)`` as sklearn computes it: (M - mean_) /
    scale_, then @ coef_ + intercept_. Kept by hand on purpose, the one exception to "the library's own
    predict": sklearn's two input validations of a named-column frame cost ~2.5 ms a call, a sixth of a
    served one-row request; the values are sklearn's (pinned by tests/test_models_ensemble.py)."""
    scaler, enet = model[0], model[-1]
    Z = np.array(M, dtype=np.float64)
    if scaler.with_mean:
        Z -= scaler.mean_
    if scaler.with_std:
        Z /= scaler.scale_
    return Z @ enet.coef_ + enet.intercept_


def _forest_predict(forest: RandomForestRegressor, X32: np.ndarray) -> np.ndarray:
    """``forest.predict(X32)`` as sklearn computes it with ``n_jobs=1`` (its trees' float32 input, the
    trees summed in order, divided by their count), without its per-call input checks and joblib's
    per-tree dispatch (~10 ms for one row, and ~1.8x the CPU threaded on a batch)."""
    if forest.n_outputs_ != 1:
        return copy.copy(forest).set_params(n_jobs=1).predict(X32)
    total = np.zeros(X32.shape[0], dtype=np.float64)
    for tree in forest.estimators_:  # DecisionTreeRegressor.predict is tree_.predict(X)[:, 0] after checks
        total += tree.tree_.predict(X32)[:, 0]
    total /= len(forest.estimators_)
    return total


class StackingEnsemble(StackingEnsembleFit, BaseEstimator):
    """ElasticNet, RandomForest and XGBoost on out-of-fold meta-features, combined by a LightGBM meta
    learner trained on their out-of-fold predictions (time blocks of the train window).

    Every input a train row contributes to the meta learner comes from models that did not see that
    row: the first stage is cross-fitted by the chain, the base learners here by the same folds.
    Meta-features and base predictions are clipped to quantile ranges learned at fit, so no single
    component can dominate on extrapolated values. The meta learner boosts from the hurdle's log
    prediction (``init_score``), so with nothing to add it early-stops near the hurdle. The 'rmsle'
    head predicts log1p y over all rows; the 'revenue' head stacks E[log1p y | buyer, x] over buyer
    rows and returns p * E[y | buyer, x], retransformed to dollars with the buyer regressor's per-row
    factor (1 + rev_d7) / exp(log_rev_d7) (its residual-variance model, or its smearing factor), and,
    with ``total_match``, a total-matching factor from held-out buyers on top (an isotonic dollar map
    over all rows was whale-dominated).

    Parameters
    ----------
    n_folds : time blocks for out-of-fold predictions (also used by the chain for the first stage).
    risk_columns, risk_smoothing : raw columns target-encoded (out of fold) as device / geo risk.
    clip_quantiles : (lo, hi) quantiles of the train meta-features kept at predict time.
    enet, rf, xgb : keyword parameters of the base learners (sklearn's ``ElasticNet`` behind a
        ``StandardScaler``, ``RandomForestRegressor``, ``XGBRegressor``), passed through; None: their
        defaults. meta : LightGBM parameters of the meta learner, passed through.
    early_stopping_rounds : the meta learner's; None disables.
    n_jobs, random_state : every learner's unless its mapping names its own (the ElasticNet has neither).
    total_match : revenue head only: multiply by sum(1 + y) / sum(prediction) over held-out buyers. Off by
        default: on the default data the held-out window's few whales moved the total by -25%, where
        the per-row variance retransformation alone kept it within 4%.
    smearing_oof : revenue head with ``total_match``: add the train buyers' out-of-fold meta scores to
        the held-out buyers when fitting the total-matching factor. The factor is a ratio of sums that a
        few whales dominate; a held-out window alone is small and its whale count is luck.
    direct : the chain's direct E[log1p y | x] model (all rows): ``RevenueRegressor`` parameters over the
        buyer regressor's (its ``booster`` mapping merged over theirs), or None to reuse them.
    cross_fit : True: the chain cross-fits its first stage on ``n_folds`` time blocks of the train window
        (every first-stage model fitted ``n_folds`` more times) and the ensemble trains on those
        out-of-fold outputs of the train rows. False (held-out stacking): the ensemble trains on the
        valid window's early-stopping rows, which no first-stage model trained on, and the meta
        learner stops on the calibration rows.
    """

    needs_oof = True

    def __init__(
        self,
        n_folds: int,
        risk_columns,
        risk_smoothing: float,
        clip_quantiles,
        enet: dict | None = None,
        rf: dict | None = None,
        xgb: dict | None = None,
        meta: dict | None = None,
        early_stopping_rounds: int | None = None,
        n_jobs: int | None = None,
        random_state: int | None = None,
        direct: dict | None = None,
        smearing_oof: bool = False,
        total_match: bool = False,
        cross_fit: bool = False,
    ):
        self.n_folds = n_folds
        self.risk_columns = risk_columns
        self.risk_smoothing = risk_smoothing
        self.clip_quantiles = clip_quantiles
        self.enet, self.rf, self.xgb, self.meta = enet, rf, xgb, meta
        self.early_stopping_rounds = early_stopping_rounds
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.direct = direct
        self.smearing_oof = smearing_oof
        self.total_match = total_match
        self.cross_fit = cross_fit

    def _meta_inputs(self, frame, X: pd.DataFrame) -> tuple[list[str], np.ndarray]:
        """(names, float64 matrix) of the meta-features and risk encodings, clipped to the ranges learned
        at fit (a missing bound does not clip; NaN stays NaN): ``DataFrame.clip(lo_, hi_, axis=1)``."""
        S, R = stack_columns(frame), self.risk_.transform_columns(X)
        names, lo, hi = self._clip
        if [*S, *R] != names:
            raise ValueError(f"meta inputs {[*S, *R]} differ from the fitted ones {names}")
        values = np.column_stack([np.asarray(v, dtype=np.float64) for v in (*S.values(), *R.values())])
        return names, np.clip(values, lo, hi)

    def _derive(self) -> None:
        """(names, lo, hi) of the meta-input clipping as arrays (no bound: +-inf), built once per fitted
        state (at fit and unpickling): a Series reindex costs ~0.2 ms a call."""
        names = [str(n) for n in self.lo_.index]
        lo = np.nan_to_num(self.lo_.to_numpy(dtype=np.float64), nan=-np.inf)
        self._clip = (
            names,
            lo,
            np.nan_to_num(self.hi_.reindex(self.lo_.index).to_numpy(dtype=np.float64), nan=np.inf),
        )

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_clip"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "lo_" in state:
            self._derive()

    def _with_base(self, M: pd.DataFrame, base: dict[str, np.ndarray]) -> pd.DataFrame:
        cols = {c: M[c].to_numpy(dtype=np.float64) for c in M.columns}
        cols.update({f"base_{n}": np.clip(p, *self.base_range_[n]) for n, p in base.items()})
        # one contiguous float block: LightGBM copies sliced (non-contiguous) arrays
        values = np.ascontiguousarray(np.column_stack(list(cols.values())))
        return pd.DataFrame(values, columns=list(cols), index=M.index)

    def _base_predict(self, M: np.ndarray) -> dict[str, np.ndarray]:
        """Base learner predictions on the float64 matrix ``M`` of the meta inputs (the fit columns, in
        order, by construction): the forest by its trees (:func:`_forest_predict`), XGBoost without its
        DataFrame conversion and name check (~1 ms), the ElasticNet by :func:`_linear_predict`."""
        out = {}
        for name, model in self.base_.items():
            if isinstance(model, RandomForestRegressor):
                # one thread at any size: sklearn's threaded predict takes ~1.8x the CPU for the same
                # wall time (per-tree dispatch, a lock per tree), and batch scoring is CPU-bound
                out[name] = _forest_predict(model, M.astype(np.float32))
            elif isinstance(model, XGBRegressor):
                with xgb_config(nthread=predict_threads(len(M), self.n_jobs)):  # thread-local setting
                    out[name] = model.predict(M, validate_features=False)
            else:
                out[name] = _linear_predict(model, M)
        return out

    def _design_matrix(self, frame, X) -> np.ndarray:
        """The meta learner's input as a contiguous float64 matrix, columns ``meta_features_``."""
        names, M = self._meta_inputs(frame, X)
        base = self._base_predict(M)
        full = [*names, *(f"base_{n}" for n in base)]
        Z = np.column_stack([M, *(np.clip(p, *self.base_range_[n]) for n, p in base.items())])
        return np.ascontiguousarray(Z[:, [full.index(c) for c in self.meta_features_]])

    def _design(self, frame, X) -> pd.DataFrame:
        return pd.DataFrame(self._design_matrix(frame, X), columns=self.meta_features_, copy=False)

    def _score(self, frame, X) -> np.ndarray:
        """Meta learner output on the log1p scale (hurdle base + learned correction), >= 0."""
        Z = self._design_matrix(frame, X)  # all float64: what LightGBM's pandas path would build
        threads = predict_threads(len(Z), self.n_jobs)
        correction = matrix_predict(self.meta_.booster_, Z, self.meta_iteration_, threads)
        return np.clip(Z[:, self.meta_features_.index(self.init_column_)] + correction, 0.0, None)

    def predict(self, frame: pd.DataFrame, X: pd.DataFrame) -> np.ndarray:
        """Dollar predictions; rows the gate zeroed (p_gated == 0) stay zero under the rmsle head."""
        score = self._score(frame, X)
        if self.objective_ == "revenue":
            rev = np.clip(np.exp(score + log_factor(frame)) * self.smearing_ - 1.0, 0.0, None)
            return np.asarray(frame["p_gated"]) * rev
        return np.where(np.asarray(frame["p_gated"]) > 0, np.expm1(score), 0.0)
