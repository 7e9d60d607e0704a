"""The fit side of the chain's first stage: classifier, regressor, whale model and the direct model as
concurrent fits, then the post-processors tuned on held-out rows (smearing, gate). A mixin of
``LTVModel`` (``ltv.models.chain``)."""

from __future__ import annotations

import copy

import numpy as np

from ltv.models._parallel import run_concurrently
from ltv.models._progress import stage
from ltv.models.blocks import Blocks, compile_for
from ltv.models.gate import IDENTITY
from ltv.models.hurdle import hurdle_prediction
from ltv.models.rows import LabelledRows
from ltv.sampling import SamplingPlan


class FirstStageFit:
    """Methods ``LTVModel.fit`` calls for the first stage and its post-processors."""

    def _fit_first_stage(self, parts, train: LabelledRows, es: LabelledRows | None = None,
                         cal: LabelledRows | None = None) -> None:  # fmt: skip
        """Fit ``parts`` = (classifier, regressor, whale or None, direct or None) on ``train`` rows as
        concurrent fits; ``es`` early-stops them and ``cal`` calibrates the classifier (the full
        model; cross-fitted copies get neither). Train Blocks bound to a cluster (``train.distributed``)
        train the boosters that read them on its workers (:mod:`.cluster_training`); the buyers' models
        read a frame of the buyers here."""
        clf, reg, whale, direct = parts
        X, labels = train.X, train.labels
        plan = self.sampling if self.sampling is not None else SamplingPlan()
        c_idx, c_w = SamplingPlan.apply(copy.deepcopy(plan.classifier), X, train.y)
        if isinstance(X, Blocks):  # blocks are cut by sorted positions; a booster does not read row order
            order = np.argsort(c_idx, kind="stable")
            c_idx, c_w = c_idx[order], c_w[order]
        # the buyers' models see only buyer rows (~3%): one in-memory frame even when train is blocks
        buyers = train.buyers().in_memory()
        Xb, Lb = buyers.X, buyers.labels
        idx, w = SamplingPlan.apply(copy.deepcopy(plan.regressor), Xb, buyers.y)
        es_buyers = None if es is None else es.buyers().in_memory()

        def fit_classifier():
            with stage("classifier", len(c_idx)):
                rows = X.take(c_idx) if isinstance(X, Blocks) else X.iloc[c_idx]
                clf.fit(rows, train.buyer[c_idx], c_w,
                        eval_set=None if es is None else (es.X, es.buyer),
                        calibration_set=None if cal is None else (cal.X, cal.buyer))  # fmt: skip

        def fit_regressors():
            reg_es = None if es is None else (es_buyers.X, es_buyers.labels)
            with stage("regressors", len(idx)):
                reg.fit(Xb.iloc[idx], Lb.iloc[idx], w, eval_set=reg_es)
            # the full model only (cross-fitted copies share it: share_retransform), and only where it is used
            if es is not None and reg.retransform in ("variance", "mixture"):
                with stage("variance", len(idx)):
                    reg.fit_variance(Xb.iloc[idx], Lb.iloc[idx], w, eval_set=reg_es)

        def fit_whale():
            with stage("whale", len(Xb)):
                whale.fit(Xb, buyers.y, eval_set=None if es is None else (es_buyers.X, es_buyers.y))

        def fit_direct():
            with stage("direct", len(X)):
                direct.fit(X, labels, eval_set=None if es is None else (es.X, es.labels))

        tasks = {"classifier": fit_classifier, "direct": fit_direct, "regressors": fit_regressors,
                 "whale": fit_whale}  # fmt: skip
        if direct is None:
            del tasks["direct"]
        if whale is None:
            del tasks["whale"]
        run_concurrently(tasks, self.concurrent_fits)

    def _fit_post_processors(self, valid: LabelledRows, cal: LabelledRows, objective: str) -> None:
        """Smearing factors and the gate, on held-out rows."""
        # smearing needs many buyers (whales dominate it) and rows the regressor never trained on: the
        # whole valid window (early stopping only chose a round count there)
        valid_buyers = valid.buyers().in_memory()
        if len(valid_buyers):
            with stage("smearing", len(valid_buyers)):
                self.regressor_.fit_smearing(valid_buyers.X, valid_buyers.labels)
        self.gate_.params_ = dict(IDENTITY)
        with stage("gate", len(cal)):
            from ltv.models.chain import score_requests

            first = score_requests(self.classifier_, self.regressor_, self.whale_, None)
            compile_for(cal.X, [(booster, rounds) for booster, rounds, _ in first])
            frame = self._frame(cal.X)
            log_rev, rev = frame["log_rev_d7"].to_numpy(), frame["rev_d7"].to_numpy()
            whale = frame["whale_score"].to_numpy() if self._has_whale() else None
            self.gate_.fit(
                frame["p_buyer"].to_numpy(), cal.y, lambda q: hurdle_prediction(q, log_rev, rev, objective),
                whale_score=whale, objective=objective,
            )  # fmt: skip
