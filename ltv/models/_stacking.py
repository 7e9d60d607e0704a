"""The fit side of a stacking chain: the direct model, the cross-fitted (out-of-fold) first stage or
held-out stacking, and the ensemble's training rows. A mixin of ``LTVModel`` (``ltv.models.chain``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ltv.contract import TARGET
from ltv.models._parallel import run_concurrently
from ltv.models._progress import stage
from ltv.models.meta import time_folds
from ltv.models.rows import LabelledRows


class StackingFit:
    """Methods ``LTVModel.fit`` calls when its ensemble stacks (``needs_oof``)."""

    def _direct_model(self):
        """E[log1p y | x] on all rows (the single-model baseline), a stacking meta-feature: the regressor's
        parameters with one horizon, d7, overridden by the ensemble's ``direct`` (its ``booster`` merged
        over the regressor's): it trains on every row (~30x the buyer rows), so it can afford the
        capacity a buyer-only regressor cannot."""
        base, own = self.regressor.get_params(), dict(self.ensemble.direct or {})
        booster = {**(base["booster"] or {}), **(own.pop("booster", None) or {})}
        return type(self.regressor)(**{**base, **own, "booster": booster, "horizons": (TARGET,)})

    def _oof_frame(self, train: LabelledRows, folds) -> pd.DataFrame:
        """First-stage outputs of every train row from copies fitted on the other time blocks (the
        blocks' fits run concurrently)."""

        def fold(block):
            rest = np.setdiff1d(np.arange(len(train)), block)
            clf, reg, direct = (
                part.fixed_clone() for part in (self.classifier_, self.regressor_, self.direct_)
            )
            whale = None if self.whale_ is None else self.whale_.fixed_clone()
            self._fit_first_stage((clf, reg, whale, direct), train.take(rest))
            clf.calibrator_ = self.classifier_.calibrator_  # fitted on calibration rows, shared
            reg.share_retransform(self.regressor_)
            with stage("predict", len(block)):
                return self._frame(train.X.iloc[block], clf, reg, whale, direct)

        tasks = {f"fold{k}": (lambda block=block: fold(block)) for k, block in enumerate(folds)}
        parts = run_concurrently(tasks, self.concurrent_fits)
        return pd.concat(parts.values()).loc[train.X.index]

    def _check_held_out(self) -> None:
        refit = [name for name, part in (("classifier", self.classifier), ("ensemble.direct",
                 self._direct_model())) if getattr(part, "refit_on_eval", False)]  # fmt: skip
        if refit:
            raise ValueError(
                f"ensemble.cross_fit=false stacks on the valid window's early-stopping rows, which "
                f"refit_on_eval=true puts into the training rows of {refit}: turn one of them off"
            )

    def _fit_stacking(self, train: LabelledRows, es: LabelledRows, cal: LabelledRows, objective) -> None:
        """The stacking ensemble on first-stage outputs no first-stage model trained on: the cross-fitted
        train rows (``cross_fit``), or the valid window's early-stopping rows (held-out stacking: no
        refits; the meta learner then stops on the calibration rows)."""
        if self.ensemble_.cross_fit:
            self.folds_ = time_folds(train.time, len(train), self.ensemble_.n_folds)
            with stage("oof_folds", len(train)):
                rows = train.with_frame(self._oof_frame(train, self.folds_))
            stop, smear = es, cal
            if any(getattr(m, "refit_on_eval", False) for m in (self.classifier_, self.direct_)):
                # a first-stage model was refitted on the early-stopping rows: the meta learner stops on
                # the calibration rows, where every input is out of sample (the union for smearing is the same)
                stop, smear = cal, es
        else:
            self.folds_ = time_folds(es.time, len(es), self.ensemble_.n_folds)
            with stage("held_out_frame", len(es)):
                rows = es.with_frame(self._frame(es.X))
            stop, smear = cal, cal
        with stage("valid_frames", len(stop) + len(smear)):
            same = smear is stop
            stop = stop.with_frame(self._frame(stop.X))
            smear = stop if same else smear.with_frame(self._frame(smear.X))
        with stage("ensemble", len(rows)):
            self.ensemble_.fit(rows, objective=objective, folds=self.folds_, eval_rows=stop, cal_rows=smear)
        self.oof_frame_ = rows.frame
