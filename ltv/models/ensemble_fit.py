"""The fit side of ``StackingEnsemble`` (``ltv.models.ensemble``): meta inputs with out-of-fold risk
encodings, out-of-fold base learners, the LightGBM meta learner and the revenue head's smearing."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone as _clone
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import ElasticNet
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBRegressor

from ltv import metrics
from ltv.models._progress import stage
from ltv.models.booster import fit_booster
from ltv.models.hurdle import check_objective, log_factor
from ltv.models.meta import RiskEncoder, stack_features
from ltv.models.retransform import smearing_factor
from ltv.models.rows import LabelledRows


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
    errors = [metrics.rmse(target, Z[c].to_numpy()) for c in candidates]
    return candidates[int(np.argmin(errors))]


class StackingEnsembleFit:
    """``fit`` of ``StackingEnsemble`` and the steps it takes."""

    def _learner_params(self, params: dict | None, seeded: bool = True) -> dict:
        """A base / meta learner's mapping, with the ensemble's ``n_jobs`` and ``random_state`` unless
        it names its own."""
        shared = {"n_jobs": self.n_jobs, "random_state": self.random_state} if seeded else {}
        return {**shared, **(params or {})}

    def _base_learners(self) -> dict:
        return {
            "enet": make_pipeline(
                StandardScaler(), ElasticNet(**self._learner_params(self.enet, seeded=False))
            ),
            "rf": RandomForestRegressor(**self._learner_params(self.rf)),
            "xgb": XGBRegressor(**self._learner_params(self.xgb)),
        }

    def fit(self, rows: LabelledRows, objective: str = "rmsle", folds=None, eval_rows=None, cal_rows=None):
        """Fit on ``rows`` whose ``frame`` holds first-stage outputs no first-stage model trained on.

        ``folds`` are the positions of ``rows``' time blocks for the out-of-fold base learners;
        ``eval_rows`` (with their ``frame``) early-stop the meta learner; ``cal_rows`` (with their
        ``frame``) join the revenue head's total-matching smearing. Head 'rmsle': all rows, target
        log1p y = E[log1p y | x] directly. Head 'revenue': buyer rows only, target log1p y = E[log1p y |
        buyer, x], then p_gated * (exp(g) * S - 1) with smearing S from the held-out buyers.
        """
        self.objective_ = check_objective(objective)
        if folds is None:
            raise ValueError("StackingEnsemble.fit needs the time folds of its training rows")
        if self.objective_ == "revenue":
            if cal_rows is None:
                raise ValueError("objective 'revenue' needs calibration rows")
            keep = np.flatnonzero(rows.buyer == 1)
            folds = [np.flatnonzero(np.isin(keep, block)) for block in folds]
            rows = rows.take(keep)
            eval_rows = None if eval_rows is None else eval_rows.buyers()
        target = head_target(rows.y)
        with stage("meta_inputs", len(rows)):
            M = self._fit_meta_inputs(rows.frame, rows.X, rows.y, folds)
        with stage("base_learners", len(rows)):
            oof = self._fit_base(M, target, folds)
        Z = self._with_base(M, oof)
        self.meta_features_ = list(Z.columns)
        # the meta learner boosts a correction of a base log prediction (init_score), so early stopping
        # falls back to that base when the learned combination does not help
        self.init_column_ = "p_x_log_rev" if self.objective_ == "rmsle" else "log_rev_d7"
        es, es_init = None, None
        with stage("meta_learner", len(Z)):
            if eval_rows is not None:
                Z_es = self._design(eval_rows.frame, eval_rows.X)
                self.init_column_ = select_init_column(Z_es, head_target(eval_rows.y), self.objective_)
                es, es_init = (Z_es, head_target(eval_rows.y)), Z_es[self.init_column_].to_numpy()
            self.meta_, self.meta_iteration_ = fit_booster(
                {"objective": "regression", **self._learner_params(self.meta)}, Z, target, None, es, self.early_stopping_rounds,
                init_score=Z[self.init_column_].to_numpy(), eval_init_score=es_init,
            )  # fmt: skip
        self.smearing_ = 1.0
        if self.objective_ == "revenue" and self.total_match:
            self.smearing_ = self._fit_smearing(rows, Z, target, folds, eval_rows, cal_rows)
        return self

    def _fit_smearing(self, rows, Z, target, folds, eval_rows, cal_rows) -> float:
        """Total-matching smearing over every held-out buyer (early-stopping and calibration rows; with
        ``smearing_oof`` the train buyers' out-of-fold scores too): a few whales dominate the factor,
        so it needs the sample."""
        cal = cal_rows.buyers()
        truth = [head_target(cal.y)]
        score = [self._score(cal.frame, cal.X) + log_factor(cal.frame)]
        if eval_rows is not None:
            truth.append(head_target(eval_rows.y))
            score.append(self._score(eval_rows.frame, eval_rows.X) + log_factor(eval_rows.frame))
        if self.smearing_oof:
            truth.append(target)
            score.append(self._oof_score(Z, target, folds) + log_factor(rows.frame))
        return smearing_factor(np.concatenate(truth), np.concatenate(score))

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
            params = {"objective": "regression", **self._learner_params(self.meta),
                      "n_estimators": max(int(self.meta_iteration_), 1)}  # fmt: skip
            meta, rounds = fit_booster(params, Z.iloc[rest], target[rest], init_score=init[rest])
            out[block] = init[block] + meta.predict(Z.iloc[block], num_iteration=rounds)
        return np.clip(out, 0.0, None)

    def _fit_meta_inputs(self, frame, X, y, folds) -> pd.DataFrame:
        """Meta-features with out-of-fold risk encodings, clipped to ranges learned here."""
        self.risk_ = RiskEncoder(list(self.risk_columns), self.risk_smoothing)
        risk = self.risk_.fit_transform_oof(X, y, folds).set_index(frame.index)
        M = pd.concat([stack_features(frame), risk], axis=1)
        lo_q, hi_q = self.clip_quantiles
        self.lo_, self.hi_ = M.quantile(lo_q), M.quantile(hi_q)
        self._derive()  # predict-time clip arrays, from these
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
