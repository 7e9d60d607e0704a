"""LTVModel: the whole chain (samplers, buyer classifier, whale model, gate, revenue regressor,
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
import dataclasses
import logging
import time as _time

import numpy as np
import pandas as pd

from ltv.contract import TARGET
from ltv.models._first_stage import FirstStageFit
from ltv.models._lgbm import matrix_cache, prefetch_scores
from ltv.models._progress import FitClock, stage
from ltv.models._stacking import StackingFit
from ltv.models.blocks import Blocks
from ltv.models.booster import check_frame
from ltv.models.hurdle import check_objective, finite_revenue, hurdle_prediction
from ltv.models.meta import first_stage_columns
from ltv.models.rows import BUYER, LabelledRows

log = logging.getLogger(__name__)


def score_requests(clf, reg, whale, direct) -> list[tuple]:
    """``(booster, num_iteration, features)`` of every first-stage booster, as each part scores it."""
    out = [(clf.booster_.booster_, clf.best_iteration_, clf.feature_names_in_)]
    if whale is not None and whale.fitted:
        out.append((whale.booster_.booster_, whale.best_iteration_, whale.feature_names_in_))
    for part in (reg, direct):
        if part is not None:
            pairs = list(zip(part.boosters_, part.best_iterations_, strict=True))
            pairs += list(getattr(part, "variance_", None) or ())
            out += [(m.booster_, best, part.feature_names_in_) for m, best in pairs]
    return out


class LTVModel(FirstStageFit, StackingFit):
    """Full model chain predicting ``iap_revenue_d7`` in dollars.

    Parameters
    ----------
    classifier : unfitted ``BuyerClassifier``. regressor : unfitted ``RevenueRegressor`` (first horizon
        must be iap_revenue_d7). gate : unfitted ``Gate``. ensemble : ``HurdleEnsemble`` or
        ``StackingEnsemble``. whale : unfitted ``WhaleClassifier`` or None (no whale score: no bypass,
        a zero meta-feature). sampling : ``SamplingPlan`` or None (no resampling).
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

    def __init__(self, classifier, regressor, gate, ensemble, whale=None, sampling=None, objective="rmsle",
                 random_state=0, calibration_fraction: float = 0.5, progress_every_s: float = 30.0,
                 concurrent_fits: int = 2):  # fmt: skip
        self.classifier = classifier
        self.regressor = regressor
        self.gate = gate
        self.ensemble = ensemble
        self.whale = whale
        self.sampling = sampling
        self.objective = objective
        self.random_state = random_state
        self.calibration_fraction = calibration_fraction
        self.progress_every_s = progress_every_s
        self.concurrent_fits = concurrent_fits

    # ---- validation --------------------------------------------------------------------------------
    def _check(self, rows: LabelledRows, name: str) -> LabelledRows:
        check_frame(rows.X, f"{name}.X")
        if isinstance(rows.X, Blocks) and getattr(self.ensemble, "needs_oof", False):
            # stacking's direct model and meta inputs read the whole matrix: it is read into memory
            log.warning("%s: the stacking head reads the whole %s matrix into memory (%d rows)", name, name,
                        len(rows.X))  # fmt: skip
            rows = rows.in_memory()
        needed = [BUYER, *self.regressor.horizons]
        missing = [c for c in needed if c not in rows.labels.columns]
        if missing:
            raise ValueError(f"labels of {name} lack column(s) {missing}")
        if len(rows.labels) != len(rows.X):
            raise ValueError(f"labels of {name} have {len(rows.labels)} rows, {name}.X has {len(rows.X)}")
        X = rows.X if isinstance(rows.X, Blocks) else rows.X.reset_index(drop=True)
        return dataclasses.replace(rows, X=X, labels=rows.labels.reset_index(drop=True))

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

    # ---- first-stage outputs ---------------------------------------------------------------------
    def _columns(self, X, clf=None, reg=None, whale=None, direct=None, matrix=None) -> dict[str, np.ndarray]:
        """First-stage outputs per row (name -> array; see :func:`first_stage_columns`). ``matrix``: X as
        the float32 matrix its boosters read, where the caller has it (``ltv.frames.FloatMatrix``)."""
        clf, reg, whale = clf or self.classifier_, reg or self.regressor_, whale or self.whale_
        direct = direct or getattr(self, "direct_", None)
        cache = matrix_cache(matrix)  # X converted to LightGBM's matrix once, shared by every booster below
        prefetch_scores(X, score_requests(clf, reg, whale, direct), cache)  # compiled ones: one pass
        raw = clf.predict_raw(X, cache)
        p = raw if clf.calibrator_ is None else clf.calibrator_.transform(raw)
        whale = np.zeros(len(X)) if whale is None else whale.predict_p(X, cache)
        log_rev = reg.log_array(X, cache)
        cols = first_stage_columns(raw, p, whale, log_rev, reg.dollars_array(X, log_rev, cache), reg.horizons,
                                   self.gate_.params_)  # fmt: skip
        if direct is not None:
            cols["log_direct"] = direct.log_array(X, cache)[:, 0]
        return cols

    def _frame(self, X, clf=None, reg=None, whale=None, direct=None, matrix=None) -> pd.DataFrame:
        """First-stage outputs as a frame; Blocks stream block by block (a row index 0..n-1)."""
        if isinstance(X, Blocks):
            parts = [self._frame(f, clf, reg, whale, direct, m) for f, m in X.frames()]
            return pd.concat(parts, ignore_index=True)
        return pd.DataFrame(self._columns(X, clf, reg, whale, direct, matrix), index=X.index)

    # ---- public API --------------------------------------------------------------------------------
    def fit(self, train: LabelledRows, valid: LabelledRows) -> LTVModel:
        """Fit the chain on ``train`` rows and the ``valid`` window (model features and labels).

        Their ``time`` orders rows for the out-of-fold blocks and the valid split (row order when None).
        Labels need buyer_d7 and the regressor's horizons.
        """
        t0 = _time.perf_counter()
        objective = check_objective(self.objective)
        if self.regressor.horizons[0] != TARGET:
            raise ValueError(
                f"regressor horizons must start with {TARGET}, got {list(self.regressor.horizons)}"
            )
        valid = self._check(valid, "valid")
        train = self._check(train, "train")
        self.n_train_ = len(train)
        es, cal = (valid.take(rows) for rows in self._split_valid(len(valid), valid.time))
        self.classifier_ = copy.deepcopy(self.classifier)
        self.regressor_ = copy.deepcopy(self.regressor)
        self.gate_ = copy.deepcopy(self.gate)
        self.whale_ = copy.deepcopy(self.whale)
        self.direct_ = None  # fitted below for stacking only
        for part in (self.classifier_, self.regressor_, self.whale_):
            if part is not None and (part.booster or {}).get("random_state") is None:
                part.booster = {**(part.booster or {}), "random_state": self.random_state}
        stacking = getattr(self.ensemble, "needs_oof", False)
        if stacking and not self.ensemble.cross_fit:
            self._check_held_out()
        if objective == "rmsle" and not stacking and self.regressor_.retransform != "smearing":
            # the RMSLE hurdle reads log revenue only: dollars (the parts' rev_d7) come from the smearing
            # factor, and the per-row variance model, three refits and a booster per horizon, is not fitted
            log.info("objective rmsle with the hurdle head: regressor.retransform=%s not needed, smearing",
                     self.regressor_.retransform)  # fmt: skip
            self.regressor_.retransform = "smearing"
        with FitClock(self.progress_every_s) as clock:
            with stage("first_stage", self.n_train_):
                direct = self._direct_model() if stacking else None
                parts = (self.classifier_, self.regressor_, self.whale_, direct)
                self._fit_first_stage(parts, train, es=es, cal=cal)
                self.direct_ = direct
            self._fit_post_processors(valid, cal, objective)
            self.ensemble_ = copy.deepcopy(self.ensemble)
            if stacking:
                if self.ensemble_.random_state is None:
                    self.ensemble_.random_state = self.random_state
                self._fit_stacking(train, es, cal, objective)
            else:
                self.ensemble_.fit(None, objective=objective)
        self._collect()
        self.fit_times_ = {**clock.times, "total": _time.perf_counter() - t0}
        log.info("LTVModel fitted: %d train rows in %.1f s (%.0f rows/s)", self.n_train_, self.fit_times_["total"],
                 self.n_train_ / self.fit_times_["total"])  # fmt: skip
        return self

    def _has_whale(self) -> bool:
        return self.whale_ is not None and self.whale_.fitted

    def _collect(self):
        gating = self.gate_.fitted_params()
        whale_value = getattr(self.whale_, "whale_value_", np.inf)
        gating["whale_value"] = float(whale_value) if np.isfinite(whale_value) else None
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
        return finite_revenue(self.ensemble_.predict(first_stage, X))

    def boosters(self) -> list[tuple[object, int]]:
        """Every LightGBM booster the fitted chain predicts with, as ``(Booster, num_iteration)``."""
        self._check_fitted()
        first = score_requests(self.classifier_, self.regressor_, self.whale_, getattr(self, "direct_", None))
        pairs = [(booster, rounds) for booster, rounds, _ in first]
        if getattr(self.ensemble_, "meta_", None) is not None:
            pairs.append((self.ensemble_.meta_.booster_, self.ensemble_.meta_iteration_))
        return pairs

    def compile_trees(self, directory=None) -> dict:
        """Compile every booster to native code for faster prediction (:mod:`ltv.models.compiled`):
        the same predictions up to float64 summation order; once per model and CPU (disk cache)."""
        from ltv.models import tree_compiler

        return tree_compiler.compile_boosters(self.boosters(), directory)

    def predict_parts(self, X, matrix=None) -> pd.DataFrame:
        """Per row: p_buyer_raw, p_buyer (calibrated), whale_score, p_gated, log_rev_<h> (E[log1p y |
        buyer, x]), rev_<h> (E[y | buyer, x] in dollars), hurdle (product prediction), final; with
        objective 'revenue' also expected_revenue (= final) and, with ``regressor.retransform=mixture``,
        the predictive distribution: q<level> quantiles and p_over_<t> (``RevenueRegressor.predictive``).
        ``matrix``: X as its boosters' float32 matrix where the caller has it (``ltv.frames.FloatMatrix``,
        which ``LTVPipeline`` gets from the feature builder), else built from X. X may be Blocks (a
        window too big for one frame): its blocks are predicted one after another."""
        self._check_fitted()
        check_frame(X)
        if isinstance(X, Blocks):
            return pd.concat([self.predict_parts(f, m) for f, m in X.frames()], ignore_index=True)
        frame = self._frame(X, matrix=matrix)
        frame["hurdle"] = hurdle_prediction(
            frame["p_gated"], frame["log_rev_d7"], frame["rev_d7"], self.objective
        )
        frame["final"] = self._final(frame, X)
        if self.objective == "revenue":  # the mean and the predictive distribution (retransform=mixture)
            frame["expected_revenue"] = frame["final"]
            log_rev = frame[["log_rev_d7"]].to_numpy()
            spread = self.regressor_.predictive(X, frame["p_gated"], log_rev, matrix_cache(matrix))
            frame = frame.assign(**spread)
        return frame

    def spend_pit(self, parts: pd.DataFrame, revenue) -> np.ndarray | None:
        """PIT of the spenders' d7 ``revenue`` under the distribution in :meth:`predict_parts` output
        (NaN for non-spenders; None without a predictive distribution)."""
        if "spend_scale" not in parts:
            return None
        return self.regressor_.spend_pit(parts["log_rev_d7"], parts["spend_scale"], revenue)

    def predict(self, X, matrix=None) -> np.ndarray:
        """Final ``iap_revenue_d7`` prediction in dollars: finite, >= 0 (``predict_parts``' "final",
        computed on arrays: no DataFrame per stage, which a one-row request would pay ~2 ms for).
        ``matrix``: as in :meth:`predict_parts`."""
        self._check_fitted()
        check_frame(X)
        if isinstance(X, Blocks):
            return np.concatenate([self.predict(f, m) for f, m in X.frames()])
        return self._final(self._columns(X, matrix=matrix), X)
