"""The fit side of a stacking chain: the direct model, the cross-fitted (out-of-fold) first stage or
held-out stacking, and the ensemble's training rows. A mixin of ``LTVModel`` (``ltv.models.chain``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ltv.contract import TARGET
from ltv.models._parallel import run_concurrently
from ltv.models._progress import stage
from ltv.models.meta import time_folds

BUYER = "buyer_d7"


class StackingFit:
    """Methods ``LTVModel.fit`` calls when its ensemble stacks (``needs_oof``)."""

    def _direct_model(self):
        """E[log1p y | x] on all rows (the single-model baseline), a stacking meta-feature: the regressor's
        parameters with one horizon, d7, overridden by the ensemble's ``direct_params``: it trains on every
        row (~30x the buyer rows), so it can afford the capacity a buyer-only regressor cannot."""
        own = dict(getattr(self.ensemble, "direct_params", None) or {})
        return type(self.regressor)(**{**self.regressor.get_params(), **own, "horizons": (TARGET,)})

    def _oof_frame(self, X, labels, folds) -> pd.DataFrame:
        """First-stage outputs of every train row from copies fitted on the other time blocks (the
        blocks' fits run concurrently)."""

        def fold(block):
            rest = np.setdiff1d(np.arange(len(X)), block)
            clf, reg, gate = (
                self.classifier_.fixed_clone(),
                self.regressor_.fixed_clone(),
                self.gate_.whale_clone(),
            )
            direct = self.direct_.fixed_clone()
            self._fit_first_stage(clf, reg, gate, X.iloc[rest], labels.iloc[rest], direct=direct)
            clf.calibrator_ = self.classifier_.calibrator_  # fitted on calibration rows, shared
            reg.share_retransform(self.regressor_)
            with stage("predict", len(block)):
                return self._frame(X.iloc[block], clf, reg, gate, direct)

        tasks = {f"fold{k}": (lambda block=block: fold(block)) for k, block in enumerate(folds)}
        parts = run_concurrently(tasks, self.concurrent_fits)
        return pd.concat(parts.values()).loc[X.index]

    def _check_held_out(self) -> None:
        refit = [name for name, part in (("classifier", self.classifier), ("ensemble.direct_params",
                 self._direct_model())) if getattr(part, "refit_on_eval", False)]  # fmt: skip
        if refit:
            raise ValueError(
                f"ensemble.cross_fit=false stacks on the valid window's early-stopping rows, which "
                f"refit_on_eval=true puts into the training rows of {refit}: turn one of them off"
            )

    def _fit_stacking(self, X, labels, time, es, cal, objective) -> None:
        """The stacking ensemble on first-stage outputs no first-stage model trained on: the cross-fitted
        train rows (``cross_fit``), or the valid window's early-stopping rows (held-out stacking: no
        refits; the meta learner then stops on the calibration rows)."""
        (X_es, L_es, t_es), (X_cal, L_cal) = es, cal
        if getattr(self.ensemble_, "cross_fit", True):
            self.folds_ = time_folds(time, len(X), self.ensemble_.n_folds)
            with stage("oof_folds", len(X)):
                rows = (self._oof_frame(X, labels, self.folds_), X, labels)
            (X_me, L_me), (X_mc, L_mc) = (X_es, L_es), (X_cal, L_cal)
            if any(getattr(m, "refit_on_eval", False) for m in (self.classifier_, self.direct_)):
                # a first-stage model was refitted on the early-stopping rows: the meta learner stops on
                # the calibration rows, where every input is out of sample (the union for smearing is the same)
                (X_me, L_me), (X_mc, L_mc) = (X_mc, L_mc), (X_me, L_me)
        else:
            self.folds_ = time_folds(t_es, len(X_es), self.ensemble_.n_folds)
            with stage("held_out_frame", len(X_es)):
                rows = (self._frame(X_es), X_es, L_es)
            (X_me, L_me), (X_mc, L_mc) = (X_cal, L_cal), (X_cal, L_cal)
        with stage("valid_frames", len(X_me) + len(X_mc)):
            frame_me = self._frame(X_me)
            frame_mc = frame_me if X_mc is X_me else self._frame(X_mc)
        frame, X_rows, L_rows = rows
        with stage("ensemble", len(X_rows)):
            self.ensemble_.fit(
                frame, X_rows, L_rows[TARGET].to_numpy(), objective=objective, folds=self.folds_,
                buyer=L_rows[BUYER].to_numpy(), eval_frame=frame_me, X_eval=X_me,
                y_eval=L_me[TARGET].to_numpy(), buyer_eval=L_me[BUYER].to_numpy(),
                cal_frame=frame_mc, X_cal=X_mc, y_cal=L_mc[TARGET].to_numpy(),
                buyer_cal=L_mc[BUYER].to_numpy(),
            )  # fmt: skip
        self.oof_frame_ = frame
