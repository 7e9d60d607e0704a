"""Final heads: the hurdle product and a stacked ensemble over out-of-fold meta-features.

Estimands (DESIGN.md): objective 'rmsle' targets expm1(E[log1p y | x]); with p and m = E[log1p y |
buyer, x] on the same event that is expm1(p * m). Objective 'revenue' targets E[y | x] = p * E[y | buyer,
x], the latter smeared back from the log scale.
"""

from __future__ import annotations

import copy

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import clone as _clone
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import ElasticNet
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBRegressor
from xgboost import config_context as xgb_config

from ltv.models._lgbm import fit_booster, matrix_predict, predict_threads
from ltv.models._progress import stage
from ltv.models.meta import RiskEncoder, stack_columns, stack_features
from ltv.models.regressor import smearing_factor

OBJECTIVES = ("rmsle", "revenue")


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return objective


def hurdle_prediction(q, log_rev, rev, objective: str) -> np.ndarray:
    """Dollar prediction from a (gated) buyer probability ``q``.

    rmsle: ``expm1(q * log_rev)`` with log_rev = E[log1p y | buyer, x];
    revenue: ``q * rev`` with rev = E[y | buyer, x] (smeared dollars).
    """
    check_objective(objective)
    q = np.asarray(q, dtype=np.float64)
    out = np.expm1(q * np.asarray(log_rev)) if objective == "rmsle" else q * np.asarray(rev)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=0.0), 0.0, None)


def _log_factor(frame: pd.DataFrame) -> np.ndarray:
    """log of the buyer regressor's per-row retransformation: log(1 + rev_d7) - log_rev_d7 (>= 0 when the
    regressor's dollars come from its variance model; its log smearing factor otherwise)."""
    return np.log1p(np.asarray(frame["rev_d7"])) - np.asarray(frame["log_rev_d7"])


def head_target(y) -> np.ndarray:
    """Training target of every stacking head: log1p(d7 revenue). The 'revenue' head retransforms
    afterwards; no head trains on dollars (a dollar-scale quantile head scores badly on RMSLE)."""
    return np.log1p(np.clip(np.asarray(y, dtype=np.float64), 0.0, None))


def select_init_column(Z: pd.DataFrame, target: np.ndarray, objective: str) -> str:
    """Base log prediction the meta learner boosts from: the candidate with the lowest RMSE (= RMSLE)
    on held-out ``(Z, target)`` rows. rmsle head: the hurdle composition ``p_x_log_rev`` or the direct
    all-rows model ``log_direct``; revenue head (buyer rows): ``log_rev_d7``. Ties keep the hurdle."""
    candidates = ["p_x_log_rev", "log_direct"] if objective == "rmsle" else ["log_rev_d7"]
    candidates = [c for c in candidates if c in Z.columns]
    target = np.asarray(target, dtype=np.float64)
    errors = [float(np.sqrt(np.mean((Z[c].to_numpy() - target) ** 2))) for c in candidates]
    return candidates[int(np.argmin(errors))]


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


class HurdleEnsemble:
    """The product only, no learned combination: a baseline that shows what stacking adds."""

    needs_oof = False

    def fit(self, frame, X, y, objective: str = "rmsle", **_) -> HurdleEnsemble:
        self.objective_ = check_objective(objective)
        return self

    def predict(self, frame: pd.DataFrame, X=None) -> np.ndarray:
        return hurdle_prediction(frame["p_gated"], frame["log_rev_d7"], frame["rev_d7"], self.objective_)


class StackingEnsemble:
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
    enet_*, rf_*, xgb_* : base learners. meta_* and early_stopping_rounds : the LightGBM meta learner.
    total_match : revenue head only: multiply by sum(1 + y) / sum(prediction) over held-out buyers. Off by
        default: on the default data the held-out window's few whales moved the total by -25%, where
        the per-row variance retransformation alone kept it within 4%.
    smearing_oof : revenue head with ``total_match``: add the train buyers' out-of-fold meta scores to
        the held-out buyers when fitting the total-matching factor. The factor is a ratio of sums that a
        few whales dominate; a held-out window alone is small and its whale count is luck.
    direct_params : LightGBM overrides for the chain's direct E[log1p y | x] model (all rows), or None
        to reuse the buyer regressor's parameters.
    cross_fit : True: the chain cross-fits its first stage on ``n_folds`` time blocks of the train window
        (every first-stage model fitted ``n_folds`` more times) and the ensemble trains on those
        out-of-fold outputs of the train rows. False (held-out stacking): the ensemble trains on the
        valid window's early-stopping rows, which no first-stage model trained on, and the meta
        learner stops on the calibration rows.
    """

    needs_oof = True

    def __init__(
        self,
        n_folds: int = 3,
        risk_columns=("country", "dev_os", "advertiser_category", "dev_make"),
        risk_smoothing: float = 50.0,
        clip_quantiles=(0.001, 0.999),
        enet_alpha: float = 1e-2,
        enet_l1_ratio: float = 0.5,
        rf_n_estimators: int = 100,
        rf_max_depth: int = 8,
        rf_max_samples: float = 0.3,
        xgb_n_estimators: int = 200,
        xgb_max_depth: int = 4,
        xgb_learning_rate: float = 0.1,
        meta_n_estimators: int = 500,
        meta_learning_rate: float = 0.05,
        meta_num_leaves: int = 15,
        meta_min_child_samples: int = 50,
        early_stopping_rounds: int | None = 50,
        n_jobs: int = 2,
        random_state: int | None = 0,
        direct_params: dict | None = None,
        smearing_oof: bool = False,
        total_match: bool = False,
        cross_fit: bool = True,
    ):
        self.cross_fit = cross_fit
        self.total_match = total_match
        self.direct_params = direct_params
        self.smearing_oof = smearing_oof
        self.n_folds = n_folds
        self.risk_columns = risk_columns
        self.risk_smoothing = risk_smoothing
        self.clip_quantiles = clip_quantiles
        self.enet_alpha, self.enet_l1_ratio = enet_alpha, enet_l1_ratio
        self.rf_n_estimators, self.rf_max_depth, self.rf_max_samples = (
            rf_n_estimators,
            rf_max_depth,
            rf_max_samples,
        )
        self.xgb_n_estimators, self.xgb_max_depth = xgb_n_estimators, xgb_max_depth
        self.xgb_learning_rate = xgb_learning_rate
        self.meta_n_estimators, self.meta_learning_rate = meta_n_estimators, meta_learning_rate
        self.meta_num_leaves, self.meta_min_child_samples = meta_num_leaves, meta_min_child_samples
        self.early_stopping_rounds = early_stopping_rounds
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _base_learners(self) -> dict:
        rs, nj = self.random_state, self.n_jobs
        return {
            "enet": make_pipeline(
                StandardScaler(),
                ElasticNet(alpha=self.enet_alpha, l1_ratio=self.enet_l1_ratio, tol=1e-3, max_iter=500),
            ),
            "rf": RandomForestRegressor(
                n_estimators=self.rf_n_estimators, max_depth=self.rf_max_depth,
                max_samples=self.rf_max_samples, min_samples_leaf=20, n_jobs=nj, random_state=rs,
            ),
            "xgb": XGBRegressor(
                n_estimators=self.xgb_n_estimators, max_depth=self.xgb_max_depth,
                learning_rate=self.xgb_learning_rate, tree_method="hist", n_jobs=nj, random_state=rs,
            ),
        }  # fmt: skip

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

    def fit(self, frame, X, y, objective="rmsle", folds=None, buyer=None, eval_frame=None,
            X_eval=None, y_eval=None, buyer_eval=None, cal_frame=None, X_cal=None, y_cal=None,
            buyer_cal=None):  # fmt: skip
        """Fit on train rows whose ``frame`` holds OUT-OF-FOLD first-stage outputs.

        ``folds`` are the train positions of the time blocks the chain cross-fitted with; eval rows
        early-stop the meta learner. Head 'rmsle': all rows, target log1p y = E[log1p y | x] directly.
        Head 'revenue': buyer rows only (``buyer`` masks), target log1p y = E[log1p y | buyer, x], then
        p_gated * (exp(g) * S - 1) with smearing S from the held-out buyers.
        """
        self.objective_ = check_objective(objective)
        if folds is None:
            raise ValueError("StackingEnsemble.fit needs the time folds used for the out-of-fold frame")
        y = np.asarray(y, dtype=np.float64)
        if self.objective_ == "revenue":
            if buyer is None or buyer_cal is None or cal_frame is None:
                raise ValueError("objective 'revenue' needs buyer masks and calibration rows")
            rows = np.flatnonzero(np.asarray(buyer) == 1)
            frame, X, y = frame.iloc[rows], X.iloc[rows], y[rows]
            folds = [np.flatnonzero(np.isin(rows, block)) for block in folds]
            if eval_frame is not None and buyer_eval is not None:
                keep = np.flatnonzero(np.asarray(buyer_eval) == 1)
                eval_frame, X_eval, y_eval = (
                    eval_frame.iloc[keep],
                    X_eval.iloc[keep],
                    np.asarray(y_eval)[keep],
                )
        target = head_target(y)
        with stage("meta_inputs", len(X)):
            M = self._fit_meta_inputs(frame, X, y, folds)
        with stage("base_learners", len(X)):
            oof = self._fit_base(M, target, folds)
        Z = self._with_base(M, oof)
        self.meta_features_ = list(Z.columns)
        self.meta_ = lgb.LGBMRegressor(
            objective="regression", n_estimators=self.meta_n_estimators,
            learning_rate=self.meta_learning_rate, num_leaves=self.meta_num_leaves,
            min_child_samples=self.meta_min_child_samples, n_jobs=self.n_jobs,
            random_state=self.random_state, verbose=-1,
        )  # fmt: skip
        # the meta learner boosts a correction of a base log prediction (init_score), so early stopping
        # falls back to that base when the learned combination does not help
        self.init_column_ = "p_x_log_rev" if self.objective_ == "rmsle" else "log_rev_d7"
        es, es_init = None, None
        with stage("meta_learner", len(Z)):
            if eval_frame is not None:
                Z_es = self._design(eval_frame, X_eval)
                self.init_column_ = select_init_column(Z_es, head_target(y_eval), self.objective_)
                es, es_init = (Z_es, head_target(y_eval)), Z_es[self.init_column_].to_numpy()
            self.meta_iteration_ = fit_booster(
                self.meta_, Z, target, None, es, self.early_stopping_rounds,
                init_score=Z[self.init_column_].to_numpy(), eval_init_score=es_init,
            )  # fmt: skip
        self.smearing_ = 1.0
        if self.objective_ == "revenue" and self.total_match:
            # total-matching smearing over every held-out buyer (early-stopping and calibration rows):
            # a few whales dominate the factor, so it needs the sample
            keep = np.flatnonzero(np.asarray(buyer_cal) == 1)
            truth = [head_target(np.asarray(y_cal)[keep])]
            cal_keep = cal_frame.iloc[keep]
            score = [self._score(cal_keep, X_cal.iloc[keep]) + _log_factor(cal_keep)]
            if es is not None:
                truth.append(es[1])
                score.append(self._score(eval_frame, X_eval) + _log_factor(eval_frame))
            if self.smearing_oof:
                truth.append(target)
                score.append(self._oof_score(Z, target, folds) + _log_factor(frame))
            self.smearing_ = smearing_factor(np.concatenate(truth), np.concatenate(score))
        return self

    def _oof_score(self, Z: pd.DataFrame, target: np.ndarray, folds) -> np.ndarray:
        """Out-of-fold meta scores of the train rows: the meta learner refitted (its early-stopped round
        count, no early stopping) on the other time blocks. Every input of ``Z`` is already out of fold,
        so these residuals are out-of-sample like the held-out ones and can join the smearing sample."""
        out = np.zeros(len(Z))
        init = Z[self.init_column_].to_numpy()
        for block in folds:
            rest = np.setdiff1d(np.arange(len(Z)), block)
            if block.size == 0 or rest.size == 0:
                continue
            meta = _clone(self.meta_).set_params(n_estimators=max(int(self.meta_iteration_), 1))
            meta.fit(Z.iloc[rest], target[rest], init_score=init[rest])
            out[block] = init[block] + meta.predict(Z.iloc[block])
        return np.clip(out, 0.0, None)

    def _fit_meta_inputs(self, frame, X, y, folds) -> pd.DataFrame:
        """Meta-features with out-of-fold risk encodings, clipped to ranges learned here."""
        self.risk_ = RiskEncoder(list(self.risk_columns), self.risk_smoothing)
        risk = self.risk_.fit_transform_oof(X, y, folds).set_index(frame.index)
        M = pd.concat([stack_features(frame), risk], axis=1)
        lo_q, hi_q = self.clip_quantiles
        self.lo_, self.hi_ = M.quantile(lo_q), M.quantile(hi_q)
        self._derive()
        return M.clip(self.lo_, self.hi_, axis=1)

    def _fit_base(self, M, target, folds) -> dict[str, np.ndarray]:
        """Fit each base learner per fold (out-of-fold predictions for the meta learner) and on all rows."""
        lo_q, hi_q = self.clip_quantiles
        self.base_, self.base_range_, oof = {}, {}, {}
        for name, learner in self._base_learners().items():
            with stage(name, len(M)):
                oof[name] = np.zeros(len(M))
                for block in folds:
                    rest = np.setdiff1d(np.arange(len(M)), block)
                    oof[name][block] = _clone(learner).fit(M.iloc[rest], target[rest]).predict(M.iloc[block])
                self.base_[name] = _clone(learner).fit(M, target)
            self.base_range_[name] = (
                float(np.quantile(oof[name], lo_q)),
                float(np.quantile(oof[name], hi_q)),
            )
        return oof

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
            rev = np.clip(np.exp(score + _log_factor(frame)) * self.smearing_ - 1.0, 0.0, None)
            return np.asarray(frame["p_gated"]) * rev
        return np.where(np.asarray(frame["p_gated"]) > 0, np.expm1(score), 0.0)
