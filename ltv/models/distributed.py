"""Data-parallel boosters: the chain's first stage trained with ``lightgbm.dask`` where the rows are.

With ``train.distributed=true`` the train split stays a Dask DataFrame persisted on the cluster's
workers. ``LTVModel.fit`` hands it here (:func:`fit_first_stage`), and the buyer classifier, the
per-horizon regressors, the whale model and the stacking's direct model each train with
``DaskLGBMClassifier`` / ``DaskLGBMRegressor`` on the partitions the features were built on:

* rows per booster (buyers, the sampling plan's draw, the target, the weight) are made per partition
  (``map_partitions``); a sampler is seeded with its ``random_state`` plus the partition number, so a
  fit is reproducible, and it bins each partition's revenue on its own;
* each booster trains its configured ``n_estimators`` against the valid window's early-stopping rows
  and is cut at the round the one-process early stopping would keep (:mod:`.dask_lgbm`);
* fits run one at a time (concurrent ``lightgbm.dask`` fits on one cluster can hang, LightGBM #4942).

What is gathered to the client: the valid window (all post-processors), the train buyers' d7 revenue
(the whale threshold is its exact quantile) and, with ``regressor.retransform=variance``, the train
buyers' rows (the residual-variance model is fitted in process on them, as before).
"""

from __future__ import annotations

import copy
import logging

import lightgbm as lgb
import numpy as np
import pandas as pd

from ltv.contract import TARGET
from ltv.metrics import binary_label
from ltv.models._progress import stage
from ltv.models.dask_lgbm import TARGET_COLUMN as _Y
from ltv.models.dask_lgbm import WEIGHT_COLUMN as _W
from ltv.models.dask_lgbm import fit_dask_booster
from ltv.models.whale import MIN_WHALES
from ltv.sampling import SamplingPlan

log = logging.getLogger(__name__)
BUYER = "buyer_d7"


def check_supported(model) -> None:
    """Fail early on chain options the distributed fit does not run (naming the option)."""
    if getattr(model.ensemble, "needs_oof", False) and getattr(model.ensemble, "cross_fit", True):
        raise ValueError(
            "train.distributed=true trains the held-out stacking (ensemble.cross_fit=false) or the hurdle "
            "ensemble; ensemble.cross_fit=true fits every booster on time blocks of the train split in process"
        )
    refit = [
        n for n, p in (("classifier", model.classifier), ("regressor", model.regressor)) if p.refit_on_eval
    ]
    if (getattr(model.ensemble, "direct", None) or {}).get("refit_on_eval"):
        refit.append("ensemble.direct")
    if refit:
        raise ValueError(f"train.distributed=true does not refit on the early-stopping rows: set {refit[0]}"
                         ".refit_on_eval=false")  # fmt: skip


def booster_params(part) -> dict:
    """The LightGBM parameters of a chain part's booster (its ``booster`` mapping, through the accessor
    the one-process fit reads too)."""
    return part.lgbm_kwargs()


# ---- the chain's first stage ----------------------------------------------------------------------
def _select(X, labels, buyers: bool, sampler, number: int):
    """One partition's rows for a booster: the buyers (``buyers``), then ``sampler``'s draw seeded with its
    ``random_state`` plus the partition ``number``; returns (X, labels, weights)."""
    if buyers:
        keep = np.flatnonzero(labels[BUYER].to_numpy() == 1)
        X, labels = X.iloc[keep], labels.iloc[keep]
    idx, w = np.arange(len(X)), np.ones(len(X))
    if sampler is not None and len(X):
        sampler = copy.deepcopy(sampler)
        if sampler.random_state is not None:
            sampler.random_state = int(sampler.random_state) + number
        idx, w = SamplingPlan.apply(sampler, X, labels[TARGET].to_numpy(dtype=np.float64))
    return X.iloc[idx].reset_index(drop=True), labels.iloc[idx].reset_index(drop=True), w


def _rows(X, labels, buyers, sampler, target, partition_info=None):
    """One partition's booster frame: features, the target (``target(labels)``) and the weight."""
    X, labels, w = _select(X, labels, buyers, sampler, (partition_info or {}).get("number", 0))
    return X.assign(**{_Y: np.asarray(target(labels), dtype=np.float64), _W: w})


def _with_labels(X, labels, buyers, sampler, partition_info=None):
    X, labels, w = _select(X, labels, buyers, sampler, (partition_info or {}).get("number", 0))
    return pd.concat([X, labels, pd.DataFrame({_W: w})], axis=1)


def _frame(X, labels, buyers, sampler, target):
    meta = X._meta.assign(**{_Y: np.float64(0), _W: np.float64(0)}).iloc[:0]
    return X.map_partitions(_rows, labels, buyers, sampler, target, meta=meta)


def _buyer_label(labels):
    return labels[BUYER].to_numpy()


class _LogIncrement:
    """Target of horizon ``k``: its cumulative log1p revenue minus the previous horizon's."""

    def __init__(self, horizons, k: int):
        self.horizons, self.k = list(horizons), k

    def __call__(self, labels):
        from ltv.models.retransform import cumulative_log_targets

        logs = cumulative_log_targets(labels, self.horizons)
        return logs[:, self.k] - (logs[:, self.k - 1] if self.k else 0.0)


class _Whale:
    def __init__(self, value: float):
        self.value = value

    def __call__(self, labels):
        return labels[TARGET].to_numpy(dtype=np.float64) >= self.value


def _binary(part, frame, eval_set):
    """(local model, rounds) of ``part``'s binary booster (buyer classifier, whale model) on ``frame``."""
    params = {"objective": "binary", **booster_params(part)}
    return fit_dask_booster(lgb.DaskLGBMClassifier, params, frame, eval_set, part.early_stopping_rounds)


def _classifier(clf, X, labels, sampler, es, cal) -> None:
    eval_set = None if es is None else (es[0], binary_label(es[1], "eval buyer label"))
    frame = _frame(X, labels, False, sampler, _buyer_label)
    clf.booster_, clf.best_iteration_ = _binary(clf, frame, eval_set)
    clf.feature_names_in_ = list(X.columns)
    clf.calibrator_, clf.report_, clf.reliability_ = None, {}, None
    if cal is not None:
        with stage("calibration", len(cal[0])):
            clf._calibrate(*cal)


def _regressor(reg, X, labels, buyers: bool, sampler, es) -> None:
    """Per-horizon boosters of a ``RevenueRegressor`` (buyer rows, or all rows for the direct model)."""
    from ltv.models.regressor import mae_feval, rmsle_feval
    from ltv.models.retransform import cumulative_log_targets

    horizons = list(reg.horizons)
    es = None if es is None or len(es[0]) < 10 else es  # too few held-out rows: the configured rounds
    es_target = None if es is None else cumulative_log_targets(es[1], horizons)
    reg.feature_names_in_ = list(X.columns)
    reg.boosters_, reg.best_iterations_, base = [], [], None
    for k in range(len(horizons)):
        params = {"objective": "regression", "metric": "None", **booster_params(reg)}
        eval_set = metrics = None
        if es is not None:
            truth = es_target[:, k]
            eval_set = (es[0], truth - (es_target[:, k - 1] if k else 0.0))
            metrics = [rmsle_feval(base, truth), mae_feval(base, truth)]
        frame = _frame(X, labels, buyers, sampler, _LogIncrement(horizons, k))
        model, best = fit_dask_booster(
            lgb.DaskLGBMRegressor, params, frame, eval_set, reg.early_stopping_rounds, metrics
        )
        reg.boosters_.append(model)
        reg.best_iterations_.append(best)
        if es is not None:
            inc = np.clip(model.predict(es[0][reg.feature_names_in_]), 0.0, None)
            base = inc if base is None else base + inc
    reg.best_iteration_ = int(max(reg.best_iterations_))
    reg.smearing_ = {h: 1.0 for h in horizons}
    reg.variance_ = reg.spend_share_ = None


def _whale(whale, X, labels, revenue, es) -> None:
    """The whale model on the train buyers; ``revenue``: their d7 revenue (gathered: the whale value is its
    exact quantile); ``es``: held-out buyers (LabelledRows) or None."""
    positive = revenue[revenue > 0]
    top = positive.size and whale.quantile is not None
    whale.whale_value_ = float(np.quantile(positive, whale.quantile)) if top else np.inf
    n_whales = int(np.sum(revenue >= whale.whale_value_))
    whale.booster_ = None
    if not whale.enabled or n_whales < MIN_WHALES or n_whales == revenue.size:
        return
    whale.feature_names_in_ = list(X.columns)
    eval_set = None
    if es is not None:
        es_label = (es.y >= whale.whale_value_).astype(int)
        eval_set = (es.X, es_label) if 0 < es_label.sum() < es_label.size else None
    frame = _frame(X, labels, True, None, _Whale(whale.whale_value_))
    whale.booster_, whale.best_iteration_ = _binary(whale, frame, eval_set)


def fit_first_stage(chain, parts, train, es, cal) -> None:
    """``FirstStageFit._fit_first_stage`` on a Dask train split: ``train.X`` and ``train.labels`` are Dask
    DataFrames of the same partitions; ``es`` / ``cal`` (``LabelledRows``) are in memory."""
    clf, reg, whale, direct = parts
    X, labels = train.X, train.labels
    plan = chain.sampling if chain.sampling is not None else SamplingPlan()
    es_buyers = None if es is None else es.buyers()
    buyers_es = None if es_buyers is None else (es_buyers.X, es_buyers.labels)
    with stage("classifier", chain.n_train_):
        _classifier(clf, X, labels, plan.classifier, None if es is None else (es.X, es.buyer),
                    None if cal is None else (cal.X, cal.buyer))  # fmt: skip
    revenue = labels[TARGET][labels[BUYER] == 1].compute().to_numpy(dtype=np.float64)
    with stage("regressors", revenue.size):
        _regressor(reg, X, labels, True, plan.regressor, buyers_es)
    if getattr(reg, "retransform", None) in ("variance", "mixture"):
        with stage("variance", revenue.size):  # in process, on the gathered train buyers
            meta = pd.concat([X._meta, labels._meta, pd.DataFrame({_W: np.ones(0)})], axis=1)
            rows = X.map_partitions(_with_labels, labels, True, plan.regressor, meta=meta).compute()
            rows = rows.reset_index(drop=True)
            reg.fit_variance(
                rows[list(X.columns)], rows[list(labels.columns)], rows[_W].to_numpy(), buyers_es
            )
    if whale is not None:
        with stage("whale", revenue.size):
            _whale(whale, X, labels, revenue, es_buyers)
    if direct is not None:
        with stage("direct", chain.n_train_):
            _regressor(direct, X, labels, False, None, None if es is None else (es.X, es.labels))
