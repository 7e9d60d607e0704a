"""LTVModel: the whole chain (samplers, buyer classifier, whale model, revenue regressor, gate, hurdle head) as
one picklable object with fit / predict on model matrices (frames, or :class:`~ltv.models.blocks.Blocks`).

Estimands (DESIGN.md): objective 'rmsle' targets expm1(E[log1p y | x]); with p = P(buyer | x) and m =
E[log1p y | buyer, x] on the same event that is expm1(p * m). Objective 'revenue' targets E[y | x] =
p * E[y | buyer, x], the latter retransformed from the log scale (``RevenueRegressor.retransform``). The head
is this hurdle product of the gated buyer probability and the buyer regressor (chosen by ablation, README
"The model layer": a stacking ensemble scored worse on two data seeds and a heavier tail for 1.5-3x the fit
time, and was removed).

Row roles (nothing is fitted on holdout / test rows):
- train rows: boosters, samplers, whale model, the regressor's out-of-fold variance model;
- valid window, first ``1 - calibration_fraction`` by time ("early-stopping rows"): early stopping of every
  booster (and the rows a ``refit_on_eval`` booster is refitted on);
- valid window, the later ``calibration_fraction`` ("calibration rows"): probability calibration and gate
  tuning, on rows no booster trained or stopped on. The regressor's smearing factors use every valid buyer:
  whales dominate them and need the sample, and early stopping only picked a round count there.
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone

from ltv.contract import TARGET
from ltv.models.blocks import Blocks, compile_for
from ltv.models.fitting import BUYER, FitClock, LabelledRows, run_concurrently, stage
from ltv.models.gate import IDENTITY, apply_gate
from ltv.models.lgbm_predict import PredictCache, check_frame, prefetch_scores

log = logging.getLogger(__name__)

OBJECTIVES = ("rmsle", "revenue")


def finite_revenue(pred) -> np.ndarray:
    """A dollar prediction as the contract wants it: float64, NaN / inf -> 0, clipped at 0."""
    pred = np.asarray(pred, dtype=np.float64)
    return np.clip(np.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)


def hurdle_prediction(q, log_rev, rev, objective: str) -> np.ndarray:
    """Dollars from a (gated) buyer probability ``q``: rmsle ``expm1(q * log_rev)`` (log_rev = E[log1p y |
    buyer, x]); revenue ``q * rev`` (rev = E[y | buyer, x] in dollars)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    q = np.asarray(q, dtype=np.float64)
    return finite_revenue(np.expm1(q * np.asarray(log_rev)) if objective == "rmsle" else q * np.asarray(rev))


def horizon_name(column: str) -> str:
    """'iap_revenue_d14' -> 'd14' (the suffix of the per-horizon part names)."""
    return column.rsplit("_", 1)[-1]


class LTVModel(BaseEstimator):
    """Full model chain predicting ``iap_revenue_d7`` in dollars.

    Parameters
    ----------
    classifier : unfitted ``BuyerClassifier``. regressor : unfitted ``RevenueRegressor`` (first horizon
        iap_revenue_d7). gate : unfitted ``Gate``. whale : unfitted ``WhaleClassifier`` or None (no bypass).
    sampling : ``ltv.sampling.SamplingPlan`` or None (no resampling).
    objective : 'rmsle' (expm1(E[log1p y | x])) or 'revenue' (E[y | x]).
    random_state : seed of the boosters whose ``lgbm`` mapping names none.
    calibration_fraction : share of the valid window (latest by time) used for calibration rows.
    progress_every_s : most seconds between two progress lines of a running fit stage (None: none).
    concurrent_fits : independent first-stage fits run at once, each with its share of the cores (None or 1:
        one after another).

    After ``fit``, ``fit_times_`` maps each stage (dotted when nested, e.g. ``first_stage.classifier``) to
    its wall seconds and ``total`` to the whole fit's; concurrent stages add up.
    """

    def __init__(self, classifier, regressor, gate, whale=None, sampling=None, objective="rmsle",
                 random_state=None, calibration_fraction: float = 0.5, progress_every_s: float | None = None,
                 concurrent_fits: int | None = None):  # fmt: skip
        self.classifier = classifier
        self.regressor = regressor
        self.gate = gate
        self.whale = whale
        self.sampling = sampling
        self.objective = objective
        self.random_state = random_state
        self.calibration_fraction = calibration_fraction
        self.progress_every_s = progress_every_s
        self.concurrent_fits = concurrent_fits

    # ---- fit -------------------------------------------------------------------------------------------
    def fit(self, train: LabelledRows, valid: LabelledRows, on_round=None) -> LTVModel:
        """Fit the chain on ``train`` rows and the ``valid`` window (model matrices and labels with buyer_d7
        and the regressor's horizons; their ``time`` orders the valid split). ``on_round``: the per-round
        hook of every booster (:class:`~ltv.models.fitting.FitClock`), e.g. a sweep's pruning."""
        t0 = time.perf_counter()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        horizons = [TARGET] if self.regressor.horizons is None else list(self.regressor.horizons)
        if horizons[:1] != [TARGET]:
            raise ValueError(f"regressor horizons must start with {TARGET}, got {horizons}")
        labels = [BUYER, *horizons]
        valid, train = valid.checked("valid", labels), train.checked("train", labels)
        es, cal = valid.split_by_time(self.calibration_fraction)
        self.classifier_, self.regressor_, self.whale_ = (
            None if part is None else self._seeded(part)
            for part in (self.classifier, self.regressor, self.whale)
        )
        with FitClock(self.progress_every_s, on_round) as clock:
            with stage("first_stage", len(train)):
                self._fit_first_stage(train, es, cal)
            valid_buyers = valid.buyers().in_memory()  # the smearing factors' whales need every valid buyer
            if len(valid_buyers):
                with stage("smearing", len(valid_buyers)):
                    self.regressor_.fit_smearing(valid_buyers.X, valid_buyers.labels)
            with stage("gate", len(cal)):
                self.gate_ = self._fit_gate(cal)
        self.n_train_ = len(train)
        self.fit_times_ = {**clock.times, "total": time.perf_counter() - t0}
        self._report()
        log.info("LTVModel fitted: %d train rows in %.1f s (%.0f rows/s)", self.n_train_, self.fit_times_["total"],
                 self.n_train_ / self.fit_times_["total"])  # fmt: skip
        return self

    def _seeded(self, part):
        """An unfitted copy of ``part`` whose booster mapping names a random_state (the chain's if it had none)."""
        part = clone(part)
        if (part.lgbm or {}).get("random_state") is None and self.random_state is not None:
            part.set_params(lgbm={**(part.lgbm or {}), "random_state": self.random_state})
        return part

    def _fit_first_stage(self, train: LabelledRows, es: LabelledRows, cal: LabelledRows) -> None:
        """Classifier, regressors and whale model as concurrent fits. Train Blocks bound to a cluster
        (``train.distributed``) train the classifier on its workers (:mod:`.cluster_training`); the buyers'
        models read one in-memory frame of the buyers (~3% of the rows)."""
        from ltv.sampling import SamplingPlan

        clf, reg, whale, X = self.classifier_, self.regressor_, self.whale_, train.X
        plan = self.sampling if self.sampling is not None else SamplingPlan()
        c_idx, c_w = SamplingPlan.apply(copy.deepcopy(plan.classifier), X, train.y)
        if isinstance(X, Blocks):  # blocks are cut by sorted positions; a booster does not read row order
            order = np.argsort(c_idx, kind="stable")
            c_idx, c_w = c_idx[order], c_w[order]
        buyers, es_buyers = train.buyers().in_memory(), es.buyers().in_memory()
        idx, w = SamplingPlan.apply(copy.deepcopy(plan.regressor), buyers.X, buyers.y)
        Xb, Lb = buyers.X.iloc[idx], buyers.labels.iloc[idx]

        def fit_classifier():
            with stage("classifier", len(c_idx)):
                rows = X.take(c_idx) if isinstance(X, Blocks) else X.iloc[c_idx]
                clf.fit(
                    rows,
                    train.buyer[c_idx],
                    c_w,
                    eval_set=(es.X, es.buyer),
                    calibration_set=(cal.X, cal.buyer),
                )

        def fit_regressors():
            with stage("regressors", len(idx)):
                reg.fit(Xb, Lb, w, eval_set=(es_buyers.X, es_buyers.labels))
            if self.objective == "revenue" and reg.retransform != "smearing":  # dollars per row: revenue only
                with stage("variance", len(idx)):
                    reg.fit_variance(Xb, Lb, w, eval_set=(es_buyers.X, es_buyers.labels))

        def fit_whale():
            with stage("whale", len(buyers)):
                whale.fit(buyers.X, buyers.y, eval_set=(es_buyers.X, es_buyers.y))

        tasks = {"classifier": fit_classifier, "regressors": fit_regressors, "whale": fit_whale}
        if whale is None:
            del tasks["whale"]
        run_concurrently(tasks, self.concurrent_fits)

    def _fit_gate(self, cal: LabelledRows):
        """The gate, tuned on the calibration rows' first-stage outputs (the hurdle composition scored)."""
        compile_for(cal.X, [(booster, rounds) for booster, rounds, _ in self._requests()])
        parts = self._first_stage(cal.X, IDENTITY)
        log_rev, rev = parts["log_rev_d7"], parts["rev_d7"]
        whale = parts["whale_score"] if self.whale_ is not None and self.whale_.fitted else None
        return clone(self.gate).fit(parts["p_buyer"], cal.y, lambda q: hurdle_prediction(q, log_rev, rev, self.objective),
                                    whale_score=whale, objective=self.objective)  # fmt: skip

    def _report(self) -> None:
        """``fitted_params_`` (logged as JSON and ``fitted.*`` metrics) and ``feature_importance_`` (the buyer
        classifier's gain)."""
        gating = self.gate_.fitted_params()
        whale_value = getattr(self.whale_, "whale_value_", np.inf)
        gating["whale_value"] = float(whale_value) if np.isfinite(whale_value) else None
        clf = self.classifier_
        self.fitted_params_ = {
            "objective": self.objective,
            "buyer_threshold": {k: gating[k] for k in ("cutoff", "cap", "exponent", "whale_threshold")},
            "gate": gating,
            "classifier": {"best_iteration": clf.best_iteration_, "calibration": clf.calibration, **clf.report_},
            "regressor": {"best_iterations": list(self.regressor_.best_iterations_),
                          "smearing": dict(self.regressor_.smearing_)},
        }  # fmt: skip
        gain = clf.booster_.feature_importance("gain")
        self.feature_importance_ = pd.Series(gain, index=clf.feature_names_in_, name="gain").sort_values(
            ascending=False
        )

    # ---- predict ---------------------------------------------------------------------------------------
    def _requests(self) -> list[tuple]:
        """``(booster, num_iteration, features)`` of every first-stage booster, as each part scores it."""
        clf, reg, whale = self.classifier_, self.regressor_, self.whale_
        out = [(clf.booster_, clf.best_iteration_, clf.feature_names_in_)]
        if whale is not None and whale.fitted:
            out.append((whale.booster_, whale.best_iteration_, whale.feature_names_in_))
        pairs = [*zip(reg.boosters_, reg.best_iterations_, strict=True), *(reg.variance_models_ or ())]
        return out + [(booster, rounds, reg.feature_names_in_) for booster, rounds in pairs]

    def _first_stage(self, X, gate_params: dict, matrix=None, threads=None) -> dict[str, np.ndarray]:
        """Per row: p_buyer_raw, p_buyer, whale_score, p_gated (gated by ``gate_params``), log_rev_<h> and
        rev_<h> (name -> array; Blocks streamed block by block). ``matrix``, ``threads``: see :meth:`predict`."""
        if isinstance(X, Blocks):
            parts = [self._first_stage(f, gate_params, m, threads) for f, m in X.frames()]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        cache = PredictCache(matrix, threads)  # X converted to the boosters' matrix once
        prefetch_scores(X, self._requests(), cache)  # compiled boosters: one pass over the rows
        raw = self.classifier_.predict_raw(X, cache)
        whale = np.zeros(len(X)) if self.whale_ is None else self.whale_.predict_p(X, cache)
        log_rev = self.regressor_.predict_log(X, cache)
        rev = self.regressor_.predict_dollars(X, log_rev, cache)
        p, names = self.classifier_.calibrate(raw), [horizon_name(h) for h in self.regressor_.horizons_]
        return {"p_buyer_raw": raw, "p_buyer": p, "whale_score": whale, "p_gated": apply_gate(p, whale, **gate_params),
                **{f"log_rev_{h}": log_rev[:, k] for k, h in enumerate(names)},
                **{f"rev_{h}": rev[:, k] for k, h in enumerate(names)}}  # fmt: skip

    def _check_fitted(self):
        if not hasattr(self, "gate_"):
            raise ValueError("LTVModel is not fitted; call fit first")

    def predict(self, X, matrix=None, threads: int | None = None) -> np.ndarray:
        """Final ``iap_revenue_d7`` prediction in dollars: finite, >= 0 (``predict_parts``' "final", on arrays).
        ``matrix``: X as its boosters' float32 matrix where the caller has it (``ltv.frames.FloatMatrix``);
        ``threads``: threads of the compiled trees (None: every core; a Dask worker's task passes 1)."""
        self._check_fitted()
        check_frame(X)
        if isinstance(X, Blocks):
            return np.concatenate([self.predict(f, m, threads) for f, m in X.frames()])
        parts = self._first_stage(X, self.gate_.params_, matrix, threads)
        return hurdle_prediction(parts["p_gated"], parts["log_rev_d7"], parts["rev_d7"], self.objective)

    def predict_parts(self, X, matrix=None, threads: int | None = None) -> pd.DataFrame:
        """Per row: p_buyer_raw, p_buyer (calibrated), whale_score, p_gated, log_rev_<h> (E[log1p y | buyer,
        x]), rev_<h> (E[y | buyer, x] in dollars) and final (:meth:`predict`); with objective 'revenue' also
        expected_revenue (= final) and, under ``retransform=mixture``, the predictive distribution (q<level>,
        p_over_<t>, spend_scale: ``RevenueRegressor.predictive``)."""
        self._check_fitted()
        check_frame(X)
        if isinstance(X, Blocks):
            return pd.concat([self.predict_parts(f, m, threads) for f, m in X.frames()], ignore_index=True)
        frame = pd.DataFrame(self._first_stage(X, self.gate_.params_, matrix, threads), index=X.index)
        frame["final"] = hurdle_prediction(
            frame["p_gated"], frame["log_rev_d7"], frame["rev_d7"], self.objective
        )
        if self.objective == "revenue":
            frame["expected_revenue"] = frame["final"]
            log_rev = frame[["log_rev_d7"]].to_numpy()
            frame = frame.assign(
                **self.regressor_.predictive(X, frame["p_gated"], log_rev, PredictCache(matrix, threads))
            )
        return frame

    def spend_pit(self, parts: pd.DataFrame, revenue) -> np.ndarray | None:
        """PIT of the spenders' d7 ``revenue`` under :meth:`predict_parts`' distribution (None without one)."""
        if "spend_scale" not in parts:
            return None
        return self.regressor_.spend_pit(parts["log_rev_d7"], parts["spend_scale"], revenue)

    def boosters(self) -> list[tuple[object, int]]:
        """Every LightGBM booster the fitted chain predicts with, as ``(Booster, num_iteration)``."""
        self._check_fitted()
        return [(booster, rounds) for booster, rounds, _ in self._requests()]

    def compile_trees(self, directory=None) -> dict:
        """Compile every booster to native code (:mod:`ltv.models.native_trees`): the same predictions up to
        float64 summation order; once per model and CPU (disk cache)."""
        from ltv.models import native_trees

        return native_trees.compile_boosters(self.boosters(), directory)
