"""LTVModel: the whole chain (samplers, buyer classifier, gate + whale model, revenue regressor,
ensemble head) as one picklable object with fit / predict on numeric feature frames.

Row roles (nothing is fitted on holdout/test rows):
- train rows: boosters, samplers, whale model, base and meta learners (meta on out-of-fold inputs);
- valid window, first ``1 - calibration_fraction`` by time ("early-stopping rows"): early stopping of
  every booster and of the meta learner; a booster with ``refit_on_eval`` (buyer classifier, the
  stacking's direct model) is then refitted on train + these rows with its stopped round count, and
  the meta learner early-stops on the calibration rows instead (its inputs must be out of sample);
- valid window, the later ``calibration_fraction`` ("calibration rows"): probability calibration,
  gate tuning and the stacking head's smearing, i.e. these post-processors are fitted on rows no
  booster trained or stopped on. The regressor's smearing factors use every valid buyer: they are
  dominated by a few whales and need the sample, and early stopping only picked a round count there.
"""

from __future__ import annotations

import copy
import logging
import time as _time

import numpy as np
import pandas as pd

from ltv.contract import TARGET
from ltv.models import distributed
from ltv.models._lgbm import check_frame, prefetch_scores
from ltv.models._parallel import run_concurrently
from ltv.models._progress import FitClock, stage
from ltv.models._stacking import BUYER, StackingFit
from ltv.models.ensemble import check_objective, hurdle_prediction
from ltv.models.gate import IDENTITY
from ltv.models.meta import first_stage_columns
from ltv.sampling import SamplingPlan

log = logging.getLogger(__name__)


def _score_requests(clf, reg, gate, direct) -> list[tuple]:
    """``(booster, num_iteration, features)`` of every first-stage booster, as each part scores it."""
    out = [(clf.booster_.booster_, clf.best_iteration_, clf.feature_names_in_)]
    if getattr(gate, "whale_model_", None) is not None:
        out.append((gate.whale_model_.booster_, gate.whale_iteration_, gate.whale_features_))
    for part in (reg, direct):
        if part is not None:
            pairs = list(zip(part.boosters_, part.best_iterations_, strict=True))
            pairs += list(getattr(part, "variance_", None) or ())
            out += [(m.booster_, best, part.feature_names_in_) for m, best in pairs]
    return out


class LTVModel(StackingFit):
    """Full model chain predicting ``iap_revenue_d7`` in dollars.

    Parameters
    ----------
    classifier : unfitted ``BuyerClassifier``. regressor : unfitted ``RevenueRegressor`` (first horizon
        must be iap_revenue_d7). gate : unfitted ``Gate``. ensemble : ``HurdleEnsemble`` or
        ``StackingEnsemble``. sampling : ``SamplingPlan`` or None (no resampling).
    objective : 'rmsle' (expm1(E[log1p y | x])) or 'revenue' (E[y | x]).
    random_state : seed propagated to the components that have none set.
    calibration_fraction : share of the valid window (latest by time) used for calibration rows.
    progress_every_s : most seconds between two progress lines of a running fit stage.
    concurrent_fits : independent fits (first-stage models, out-of-fold blocks) run at once, each with
        its share of the cores (:mod:`ltv.models._parallel`); 1 fits them one after another.

    After ``fit``, ``fit_times_`` maps each stage (dotted when nested, e.g. ``oof_folds.classifier``)
    to its wall seconds, summed over its runs, and ``total`` to the whole fit's; stages that ran
    concurrently add up, so children can sum to more than their parent.
    """

    def __init__(self, classifier, regressor, gate, ensemble, sampling=None, objective="rmsle",
                 random_state=0, calibration_fraction: float = 0.5, progress_every_s: float = 30.0,
                 concurrent_fits: int = 2):  # fmt: skip
        self.classifier = classifier
        self.regressor = regressor
        self.gate = gate
        self.ensemble = ensemble
        self.sampling = sampling
        self.objective = objective
        self.random_state = random_state
        self.calibration_fraction = calibration_fraction
        self.progress_every_s = progress_every_s
        self.concurrent_fits = concurrent_fits

    # ---- validation --------------------------------------------------------------------------------
    def _check(self, X, labels, name):
        check_frame(X, name)
        needed = [BUYER, *self.regressor.horizons]
        missing = [c for c in needed if c not in labels.columns]
        if missing:
            raise ValueError(f"labels for {name} lack column(s) {missing}")
        if len(labels) != len(X):
            raise ValueError(f"labels for {name} have {len(labels)} rows, {name} has {len(X)}")
        return labels.reset_index(drop=True)

    def _split_valid(self, n: int, time_valid):
        f = float(self.calibration_fraction)
        if not 0.0 < f < 1.0:
            raise ValueError(f"calibration_fraction must be in (0, 1), got {f}")
        order = np.arange(n) if time_valid is None else np.argsort(np.asarray(time_valid), kind="stable")
        cut = int(round(n * (1.0 - f)))
        if cut < 1 or cut >= n:
            raise ValueError(
                f"valid window of {n} rows is too small to split for early stopping and calibration"
            )
        return np.sort(order[:cut]), np.sort(order[cut:])

    # ---- first stage -------------------------------------------------------------------------------
    def _fit_first_stage(self, clf, reg, gate, X, labels, es=None, direct=None):
        """Fit classifier, regressor, whale model (and ``direct``, the all-rows model, if given) on train
        rows, as concurrent fits (early stopping on ``es`` = (X_es, L_es, calibration set) if given), or
        one after another with ``lightgbm.dask`` when ``X`` is a Dask DataFrame (:mod:`.distributed`)."""
        if distributed.is_dask(X):
            distributed.fit_first_stage(self, clf, reg, gate, X, labels, es, direct)
            return clf, reg, gate
        plan = self.sampling if self.sampling is not None else SamplingPlan()
        rev = labels[TARGET].to_numpy()
        c_idx, c_w = SamplingPlan.apply(copy.deepcopy(plan.classifier), X, rev)
        clf_es = None if es is None else (es[0], es[1][BUYER].to_numpy())
        buyers = np.flatnonzero(labels[BUYER].to_numpy() == 1)
        Xb, Lb = X.iloc[buyers], labels.iloc[buyers]
        idx, w = SamplingPlan.apply(copy.deepcopy(plan.regressor), Xb, Lb[TARGET].to_numpy())
        reg_es = gate_es = None
        if es is not None:
            b_es = es[1][BUYER].to_numpy() == 1
            reg_es = (es[0].iloc[np.flatnonzero(b_es)], es[1].iloc[np.flatnonzero(b_es)])
            gate_es = (reg_es[0], reg_es[1][TARGET].to_numpy())

        def fit_classifier():
            with stage("classifier", len(c_idx)):
                clf.fit(X.iloc[c_idx], labels[BUYER].to_numpy()[c_idx], c_w, eval_set=clf_es,
                        calibration_set=None if es is None else es[2])  # fmt: skip

        def fit_regressors():
            with stage("regressors", len(idx)):
                reg.fit(Xb.iloc[idx], Lb.iloc[idx], w, eval_set=reg_es)
            if es is not None:  # the full model only; cross-fitted copies share it (share_retransform)
                with stage("variance", len(idx)):
                    reg.fit_variance(Xb.iloc[idx], Lb.iloc[idx], w, eval_set=reg_es)

        def fit_whale():
            with stage("whale", len(Xb)):
                gate.fit_whale(Xb, Lb[TARGET].to_numpy(), eval_set=gate_es)

        def fit_direct():
            with stage("direct", len(X)):
                direct.fit(X, labels, eval_set=None if es is None else es[:2])

        tasks = {"classifier": fit_classifier, "direct": fit_direct, "regressors": fit_regressors,
                 "whale": fit_whale}  # fmt: skip
        if direct is None:
            del tasks["direct"]
        run_concurrently(tasks, self.concurrent_fits)
        return clf, reg, gate

    def _columns(self, X, clf=None, reg=None, gate=None, direct=None) -> dict[str, np.ndarray]:
        """First-stage outputs per row (name -> array; see :func:`first_stage_columns`)."""
        clf, reg, gate = clf or self.classifier_, reg or self.regressor_, gate or self.gate_
        direct = direct or getattr(self, "direct_", None)
        cache = []  # X converted to LightGBM's matrix once, shared by every booster below
        prefetch_scores(X, _score_requests(clf, reg, gate, direct), cache)  # compiled ones: one pass
        raw = clf.predict_raw(X, cache)
        p = raw if clf.calibrator_ is None else clf.calibrator_.transform(raw)
        whale = gate.whale_score(X, cache)
        log_rev = reg.log_array(X, cache)
        cols = first_stage_columns(raw, p, whale, log_rev, reg.dollars_array(X, log_rev, cache), reg.horizons,
                                   self.gate_.params_)  # fmt: skip
        if direct is not None:
            cols["log_direct"] = direct.log_array(X, cache)[:, 0]
        return cols

    def _frame(self, X, clf=None, reg=None, gate=None, direct=None) -> pd.DataFrame:
        return pd.DataFrame(self._columns(X, clf, reg, gate, direct), index=X.index)

    def _fit_post_processors(self, X_valid, labels_valid, X_cal, L_cal, objective):
        """Smearing factors and the gate, on held-out rows."""
        # smearing needs many buyers (whales dominate it) and rows the regressor never trained on: the
        # whole valid window (early stopping only chose a round count there)
        valid_buyers = np.flatnonzero(labels_valid[BUYER].to_numpy() == 1)
        if valid_buyers.size:
            with stage("smearing", valid_buyers.size):
                self.regressor_.fit_smearing(X_valid.iloc[valid_buyers], labels_valid.iloc[valid_buyers])
        self.gate_.params_ = dict(IDENTITY)
        with stage("gate", len(X_cal)):
            cal = self._frame(X_cal)
            log_rev, rev = cal["log_rev_d7"].to_numpy(), cal["rev_d7"].to_numpy()
            self.gate_.fit(
                cal["p_buyer"].to_numpy(), L_cal[TARGET].to_numpy(),
                lambda q: hurdle_prediction(q, log_rev, rev, objective),
                whale_score=cal["whale_score"].to_numpy(), objective=objective,
            )  # fmt: skip

    # ---- public API --------------------------------------------------------------------------------
    def fit(self, X, labels, X_valid, labels_valid, time=None, time_valid=None) -> LTVModel:
        """Fit the chain on train rows ``(X, labels)`` and the valid window ``(X_valid, labels_valid)``.

        ``time`` / ``time_valid`` order rows for the out-of-fold blocks and the valid split (row order
        when None). Labels need buyer_d7 and the regressor's horizons.
        """
        t0 = _time.perf_counter()
        objective = check_objective(self.objective)
        if self.regressor.horizons[0] != TARGET:
            raise ValueError(
                f"regressor horizons must start with {TARGET}, got {list(self.regressor.horizons)}"
            )
        labels_valid = self._check(X_valid, labels_valid, "X_valid")
        if distributed.is_dask(X):  # a Dask train split: boosters train where its partitions are
            distributed.check_supported(self)
        else:
            labels, X = self._check(X, labels, "X"), X.reset_index(drop=True)
        self.n_train_ = len(X)
        X_valid = X_valid.reset_index(drop=True)
        es_idx, cal_idx = self._split_valid(len(X_valid), time_valid)
        X_es, L_es = X_valid.iloc[es_idx], labels_valid.iloc[es_idx]
        X_cal, L_cal = X_valid.iloc[cal_idx], labels_valid.iloc[cal_idx]
        self.classifier_ = copy.deepcopy(self.classifier)
        self.regressor_ = copy.deepcopy(self.regressor)
        self.gate_ = copy.deepcopy(self.gate)
        self.direct_ = None  # fitted below for stacking only
        for part in (self.classifier_, self.regressor_, self.gate_):
            if getattr(part, "random_state", 0) is None:
                part.random_state = self.random_state
        stacking = getattr(self.ensemble, "needs_oof", False)
        if stacking and not getattr(self.ensemble, "cross_fit", True):
            self._check_held_out()
        with FitClock(self.progress_every_s) as clock:
            with stage("first_stage", self.n_train_):
                direct = self._direct_model() if stacking else None
                self._fit_first_stage(self.classifier_, self.regressor_, self.gate_, X, labels,
                                      es=(X_es, L_es, (X_cal, L_cal[BUYER].to_numpy())), direct=direct)  # fmt: skip
                self.direct_ = direct
            self._fit_post_processors(X_valid, labels_valid, X_cal, L_cal, objective)
            self.ensemble_ = copy.deepcopy(self.ensemble)
            if stacking:
                t_es = None if time_valid is None else np.asarray(time_valid)[es_idx]
                self._fit_stacking(X, labels, time, (X_es, L_es, t_es), (X_cal, L_cal), objective)
            else:
                self.ensemble_.fit(None, X, None, objective=objective)
        self._collect()
        self.fit_times_ = {**clock.times, "total": _time.perf_counter() - t0}
        log.info("LTVModel fitted: %d train rows in %.1f s (%.0f rows/s)", self.n_train_, self.fit_times_["total"],
                 self.n_train_ / self.fit_times_["total"])  # fmt: skip
        return self

    def _collect(self):
        gating = self.gate_.fitted_params()
        clf = self.classifier_
        self.fitted_params_ = {
            "objective": self.objective,
            "buyer_threshold": {k: gating[k] for k in ("cutoff", "cap", "exponent", "whale_threshold")},
            "gate": gating,  # logged as buyer_gating.json
            "classifier": {"best_iteration": clf.best_iteration_, "calibration": clf.calibration,
                           **clf.report_},
            "regressor": {"best_iterations": list(self.regressor_.best_iterations_),
                          "smearing": dict(self.regressor_.smearing_)},
            "ensemble": type(self.ensemble_).__name__,
        }  # fmt: skip
        gain = clf.booster_.booster_.feature_importance("gain")
        self.feature_importance_ = pd.Series(gain, index=clf.feature_names_in_, name="gain").sort_values(
            ascending=False
        )  # buyer classifier gain, the lead's importance plot
        self.artifacts_ = {"reliability": clf.reliability_, "classifier_importance": self.feature_importance_}

    def _check_fitted(self):
        if not hasattr(self, "ensemble_"):
            raise ValueError("LTVModel is not fitted; call fit first")

    def _final(self, first_stage, X) -> np.ndarray:
        """The ensemble's dollars from first-stage outputs (a frame or a name -> array map): finite, >= 0."""
        final = np.asarray(self.ensemble_.predict(first_stage, X), dtype=np.float64)
        return np.clip(np.nan_to_num(final, nan=0.0, posinf=0.0), 0.0, None)

    def boosters(self) -> list[tuple[object, int]]:
        """Every LightGBM booster the fitted chain predicts with, as ``(Booster, num_iteration)``."""
        self._check_fitted()
        first = _score_requests(self.classifier_, self.regressor_, self.gate_, getattr(self, "direct_", None))
        pairs = [(booster, rounds) for booster, rounds, _ in first]
        if getattr(self.ensemble_, "meta_", None) is not None:
            pairs.append((self.ensemble_.meta_.booster_, self.ensemble_.meta_iteration_))
        return pairs

    def compile_trees(self, directory=None) -> dict:
        """Compile every booster to native code for faster prediction (:mod:`ltv.models.compiled`):
        the same predictions up to float64 summation order; once per model and CPU (disk cache)."""
        from ltv.models import compiled

        return compiled.compile_boosters(self.boosters(), directory)

    def predict_parts(self, X) -> pd.DataFrame:
        """Per row: p_buyer_raw, p_buyer (calibrated), whale_score, p_gated, log_rev_<h> (E[log1p y |
        buyer, x]), rev_<h> (E[y | buyer, x] in dollars), hurdle (product prediction), final."""
        self._check_fitted()
        check_frame(X)
        frame = self._frame(X)
        frame["hurdle"] = hurdle_prediction(
            frame["p_gated"], frame["log_rev_d7"], frame["rev_d7"], self.objective
        )
        frame["final"] = self._final(frame, X)
        return frame

    def predict(self, X) -> np.ndarray:
        """Final ``iap_revenue_d7`` prediction in dollars: finite, >= 0 (``predict_parts``' "final",
        computed on arrays: no DataFrame per stage, which a one-row request would pay ~2 ms for)."""
        self._check_fitted()
        check_frame(X)
        return self._final(self._columns(X), X)
