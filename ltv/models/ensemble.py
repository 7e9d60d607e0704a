"""The stacked ensemble over out-of-fold meta-features (its fit side: :mod:`ltv.models.ensemble_fit`;
the hurdle product and the objectives: :mod:`ltv.models.hurdle`)."""

from __future__ import annotations

import copy
import weakref

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import ElasticNet
from sklearn.preprocessing import StandardScaler
from xgboost import XGBRegressor
from xgboost import config_context as xgb_config

from ltv.models._lgbm import SMALL_BATCH_ROWS, matrix_predict, predict_threads
from ltv.models.ensemble_fit import StackingEnsembleFit
from ltv.models.hurdle import log_factor
from ltv.models.meta import stack_columns, stack_features

_FEW_ROWS = 256  # at most this many rows: every tree of a forest walked at once in numpy
_FLAT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # forest -> its trees as flat arrays


def _flat_forest(forest: RandomForestRegressor) -> tuple:
    """(roots, left, right, feature, threshold, NaN goes left, leaf value, depth) over all trees, node
    ids global; a leaf's children are itself, so a walk of ``depth`` steps ends on every row's leaf."""
    hit = _FLAT.get(forest)
    if hit is None:
        trees = [t.tree_ for t in forest.estimators_]
        roots = np.cumsum([0, *(t.node_count for t in trees[:-1])])

        def child(t, side, base):
            own = np.arange(t.node_count)
            return np.where(side >= 0, side, own) + base

        hit = _FLAT[forest] = (
            roots,
            np.concatenate([child(t, t.children_left, b) for t, b in zip(trees, roots, strict=True)]),
            np.concatenate([child(t, t.children_right, b) for t, b in zip(trees, roots, strict=True)]),
            np.concatenate([np.maximum(t.feature, 0) for t in trees]),
            np.concatenate([t.threshold for t in trees]),
            np.concatenate([np.asarray(t.missing_go_to_left, dtype=bool) for t in trees]),
            np.concatenate([t.value[:, 0, 0] for t in trees]),
            max(t.max_depth for t in trees),
        )
    return hit


def _forest_predict_few(forest: RandomForestRegressor, X32: np.ndarray) -> np.ndarray:
    """:func:`_forest_predict_serial` for a few rows: all trees walked at once, one numpy step per
    level instead of a call per tree (~5 us each). sklearn's rules: float32 input compared as float64
    with ``<=``, NaN to the side the node learned; the trees summed in order (a cumulative sum), then
    divided by their count, so the values are sklearn's bit for bit."""
    roots, left, right, feature, threshold, nan_left, value, depth = _flat_forest(forest)
    rows = np.arange(len(X32))[:, None]
    node = np.broadcast_to(roots, (len(X32), len(roots)))
    for _ in range(depth):
        x = X32[rows, feature[node]].astype(np.float64)
        go_left = np.where(np.isnan(x), nan_left[node], x <= threshold[node])
        node = np.where(go_left, left[node], right[node])
    return np.cumsum(value[node], axis=1)[:, -1] / len(roots)


def _forest_predict_serial(forest: RandomForestRegressor, M: np.ndarray) -> np.ndarray:
    """``forest.predict(M)`` as sklearn computes it with ``n_jobs=1`` (the same float32 input, the trees
    summed in order, divided by their count) without joblib's per-tree dispatch (~0.2 ms a tree)."""
    if forest.n_outputs_ != 1:
        return copy.copy(forest).set_params(n_jobs=1).predict(M)
    X32 = np.ascontiguousarray(M, dtype=np.float32)
    if len(X32) <= _FEW_ROWS and hasattr(forest.estimators_[0].tree_, "missing_go_to_left"):
        return _forest_predict_few(forest, X32)
    total = np.zeros(X32.shape[0], dtype=np.float64)
    for tree in forest.estimators_:  # DecisionTreeRegressor.predict is tree_.predict(X)[:, 0] after checks
        total += tree.tree_.predict(X32)[:, 0]
    total /= len(forest.estimators_)
    return total


def _is_scaled_enet(model) -> bool:
    steps = getattr(model, "steps", None)
    return (
        steps is not None
        and len(steps) == 2
        and type(steps[0][1]) is StandardScaler
        and type(steps[1][1]) is ElasticNet
        and np.ndim(steps[1][1].coef_) == 1
    )


def _enet_predict(model, X64: np.ndarray) -> np.ndarray:
    """``make_pipeline(StandardScaler(), ElasticNet()).predict`` on a float64 matrix, as sklearn computes
    it ((X - mean) / scale, then X @ coef + intercept) without its two input validations (~2 ms)."""
    scaler, enet = model[0], model[-1]
    Z = X64.copy()
    if scaler.with_mean:
        Z -= scaler.mean_
    if scaler.with_std:
        Z /= scaler.scale_
    return Z @ enet.coef_ + enet.intercept_


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

    def _meta_inputs(self, frame: pd.DataFrame, X: pd.DataFrame) -> pd.DataFrame:
        M = pd.concat([stack_features(frame), self.risk_.transform(X).set_index(frame.index)], axis=1)
        # DataFrame.clip(lo_, hi_, axis=1) in numpy (pandas' version costs ~10 ms a call): same values,
        # a missing (NaN) bound does not clip, NaN values stay NaN
        lo, hi = self._clip_bounds(tuple(M.columns))
        values = np.clip(M.to_numpy(dtype=np.float64), lo, hi)
        return pd.DataFrame(values, columns=M.columns, index=M.index)

    def _clip_bounds(self, names: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) clip arrays of the meta inputs ``names`` (no bound: +-inf); the columns are fixed at
        fit, so this is computed once and cached."""
        bounds = getattr(self, "_bounds", None)
        if bounds is None or bounds[0] != names:
            lo = self.lo_.reindex(list(names)).to_numpy(dtype=np.float64)
            hi = self.hi_.reindex(list(names)).to_numpy(dtype=np.float64)
            bounds = self._bounds = (names, np.nan_to_num(lo, nan=-np.inf), np.nan_to_num(hi, nan=np.inf))
        return bounds[1], bounds[2]

    def _with_base(self, M: pd.DataFrame, base: dict[str, np.ndarray]) -> pd.DataFrame:
        cols = {c: M[c].to_numpy(dtype=np.float64) for c in M.columns}
        cols.update({f"base_{n}": np.clip(p, *self.base_range_[n]) for n, p in base.items()})
        # one contiguous float block: LightGBM copies sliced (non-contiguous) arrays
        values = np.ascontiguousarray(np.column_stack(list(cols.values())))
        return pd.DataFrame(values, columns=list(cols), index=M.index)

    def _base_predict(self, M: pd.DataFrame) -> dict[str, np.ndarray]:
        """Base learner predictions; a small batch runs on one thread (same values, no worker start-up:
        joblib / OpenMP start-up costs the RandomForest and XGBoost ~5-25 ms CPU per call)."""
        if predict_threads(len(M), self.n_jobs) == 1:
            return self._base_predict_serial(M.to_numpy(dtype=np.float64), tuple(M.columns))
        # the forest on one thread at any size: sklearn's threaded predict takes ~1.8x the CPU for the
        # same wall time (per-tree dispatch, a lock per tree), and batch scoring is CPU-bound
        return {
            name: _forest_predict_serial(model, M.to_numpy(dtype=np.float64))
            if isinstance(model, RandomForestRegressor)
            else model.predict(M)
            for name, model in self.base_.items()
        }

    def _base_predict_serial(self, M: np.ndarray, names: tuple) -> dict[str, np.ndarray]:
        """One-thread base learner predictions on the float64 matrix of the meta inputs ``names`` (the
        fit columns, in order, by construction): no sklearn input checks, no XGBoost DataFrame
        conversion and name check (~1 ms); the values are the same."""
        out = {}
        for name, model in self.base_.items():
            if name == "enet" and _is_scaled_enet(model):
                out[name] = _enet_predict(model, M)
            elif isinstance(model, RandomForestRegressor):
                out[name] = _forest_predict_serial(model, M)
            elif isinstance(model, XGBRegressor):
                with xgb_config(nthread=1):  # thread-local setting
                    out[name] = model.predict(M, validate_features=False)
            else:
                out[name] = model.predict(pd.DataFrame(M, columns=list(names)))
        return out

    def _design(self, frame, X) -> pd.DataFrame:
        M = self._meta_inputs(frame, X)
        return self._with_base(M, self._base_predict(M))

    def _score_small(self, frame, X) -> np.ndarray:
        """:meth:`_score` for a small batch (serving) in numpy: the same matrices in the same column
        order, without the DataFrames between the stages (~0.1 ms each on a one-row request)."""
        S, R = stack_columns(frame), self.risk_.transform_columns(X)
        names = (*S, *R)
        values = np.column_stack([np.asarray(v, dtype=np.float64) for v in (*S.values(), *R.values())])
        plan = getattr(self, "_small_plan", None)
        if plan is None or plan[0] != names:  # column layout of the design matrix: fixed at fit
            design = [*names, *(f"base_{n}" for n in self.base_)]
            pos = np.array([design.index(c) for c in self.meta_features_])
            plan = self._small_plan = (names, pos, design.index(self.init_column_))
        M = np.clip(values, *self._clip_bounds(names))
        base = self._base_predict_serial(M, names)
        full = np.column_stack([M, *(np.clip(p, *self.base_range_[n]) for n, p in base.items())])
        Z = np.ascontiguousarray(full[:, plan[1]])
        correction = matrix_predict(self.meta_.booster_, Z, self.meta_iteration_, 1)
        return np.clip(full[:, plan[2]] + correction, 0.0, None)

    def _score(self, frame, X) -> np.ndarray:
        """Meta learner output on the log1p scale (hurdle base + learned correction), >= 0."""
        if len(X) < SMALL_BATCH_ROWS:
            return self._score_small(frame, X)
        if not isinstance(frame, pd.DataFrame):  # a name -> array mapping (LTVModel.predict)
            frame = pd.DataFrame(frame, index=X.index)
        Z = self._design(frame, X)[self.meta_features_]
        # all-float64 frame: its matrix is what LightGBM's pandas path would build
        data = Z.to_numpy(dtype=np.float64)
        threads = predict_threads(len(Z), self.n_jobs)
        correction = matrix_predict(self.meta_.booster_, data, self.meta_iteration_, threads)
        pred = Z[self.init_column_].to_numpy() + correction
        return np.clip(pred, 0.0, None)

    def predict(self, frame: pd.DataFrame, X: pd.DataFrame) -> np.ndarray:
        """Dollar predictions; rows the gate zeroed (p_gated == 0) stay zero under the rmsle head."""
        score = self._score(frame, X)
        if self.objective_ == "revenue":
            rev = np.clip(np.exp(score + log_factor(frame)) * self.smearing_ - 1.0, 0.0, None)
            return np.asarray(frame["p_gated"]) * rev
        return np.where(np.asarray(frame["p_gated"]) > 0, np.expm1(score), 0.0)
