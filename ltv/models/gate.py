"""Gating of the buyer probability: cap, cutoff, exponent and a whale bypass, fitted on held-out rows.

``apply_gate`` is the one gating function: ``Gate.fit`` scores every grid point through it and
``Gate.transform`` (inference) calls it with the fitted values, so tuning and serving cannot disagree
(a public implementation applied the exponent once when tuning and twice when predicting).
"""

from __future__ import annotations

import itertools

import lightgbm as lgb
import numpy as np

from ltv import metrics
from ltv.models._lgbm import LGBMParamsMixin, booster_predict, check_frame, fit_booster

GATE_METRICS = ("auto", "rmsle", "zero_rate", "none")
IDENTITY = {"cap": 1.0, "cutoff": 0.0, "exponent": 1.0, "whale_threshold": np.inf}


def apply_gate(p, whale_score=None, *, cap=1.0, cutoff=0.0, exponent=1.0, whale_threshold=np.inf):
    """Gated buyer probability.

    ``q = min(p, cap) ** exponent`` (exponent applied exactly once); ``q = 0`` where ``p < cutoff``
    (revenue zeroed); rows with ``whale_score >= whale_threshold`` bypass cap, cutoff and exponent and
    keep ``p`` (high-revenue anomalies pass).
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.minimum(p, cap) ** exponent
    q = np.where(p < cutoff, 0.0, q)
    if whale_score is not None and np.isfinite(whale_threshold):
        q = np.where(np.asarray(whale_score, dtype=np.float64) >= whale_threshold, p, q)
    return q


class Gate(LGBMParamsMixin):
    """Fitted gate on the buyer probability plus a whale model (P(top revenue bracket | buyer, x)).

    Parameters
    ----------
    enabled : False gives the identity gate and no whale model (``gate=off``).
    metric : 'rmsle' (minimise RMSLE of the composed prediction), 'zero_rate' (cutoff set so the
        share of zeroed rows equals ``zero_rate_target``, the rest tuned on RMSLE), 'none' (identity),
        'auto' (rmsle for objective rmsle; none for objective revenue, because any cap or cutoff
        biases the expected-revenue total).
    zero_rate_target : share of zero predictions for 'zero_rate'; None uses the tuning rows' zero rate.
    cap_min, cap_max, n_cap : cap grid (linear); cutoff_min, cutoff_max, n_cutoff : cutoff grid (log);
    exponent_min, exponent_max, n_exponent : exponent grid (linear); the identity value of each is
    always added, so the fitted gate never scores worse than no gate on the tuning rows.
    whale : train the whale model. whale_quantile : top bracket = revenue >= this quantile of
        positive train revenue. whale_grid : candidate thresholds on the whale score.
    whale_* and early_stopping_rounds, n_jobs, random_state, **kwargs : the whale LightGBM.
    """

    def __init__(
        self,
        enabled: bool = True,
        metric: str = "auto",
        zero_rate_target: float | None = None,
        cap_min: float = 0.3,
        cap_max: float = 1.0,
        n_cap: int = 8,
        cutoff_min: float = 1e-4,
        cutoff_max: float = 0.05,
        n_cutoff: int = 8,
        exponent_min: float = 0.8,
        exponent_max: float = 1.5,
        n_exponent: int = 4,
        whale: bool = True,
        whale_quantile: float = 0.9,
        whale_grid=(0.3, 0.5, 0.7, 0.9),
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 20,
        colsample_bytree: float = 0.5,
        early_stopping_rounds: int | None = 30,
        n_jobs: int = 2,
        random_state: int | None = 0,
        **kwargs,
    ):
        self.enabled = enabled
        self.metric = metric
        self.zero_rate_target = zero_rate_target
        self.cap_min, self.cap_max, self.n_cap = cap_min, cap_max, n_cap
        self.cutoff_min, self.cutoff_max, self.n_cutoff = cutoff_min, cutoff_max, n_cutoff
        self.exponent_min, self.exponent_max, self.n_exponent = exponent_min, exponent_max, n_exponent
        self.whale = whale
        self.whale_quantile = whale_quantile
        self.whale_grid = whale_grid
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.colsample_bytree = colsample_bytree
        self.early_stopping_rounds = early_stopping_rounds
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.kwargs = kwargs

    _GATE_KEYS = (
        "enabled", "metric", "zero_rate_target", "cap_min", "cap_max", "n_cap", "cutoff_min", "cutoff_max",
        "n_cutoff", "exponent_min", "exponent_max", "n_exponent", "whale", "whale_quantile", "whale_grid",
    )  # fmt: skip

    # ---- whale model -------------------------------------------------------------------------------
    def fit_whale(self, X, revenue, sample_weight=None, eval_set=None) -> Gate:
        """Fit P(revenue >= whale_value_ | buyer, x) on train buyers; ``eval_set`` = (X_es, revenue_es)."""
        check_frame(X)
        revenue = np.asarray(revenue, dtype=np.float64)
        positive = revenue[revenue > 0]
        self.whale_value_ = float(np.quantile(positive, self.whale_quantile)) if positive.size else np.inf
        label = (revenue >= self.whale_value_).astype(int)
        self.whale_model_ = None
        if not (self.enabled and self.whale) or label.sum() < 5 or label.sum() == label.size:
            return self
        self.whale_features_ = list(X.columns)
        self.whale_model_ = lgb.LGBMClassifier(objective="binary", **self.lgbm_kwargs(self._GATE_KEYS))
        es = None
        if eval_set is not None:
            es_label = (np.asarray(eval_set[1], dtype=np.float64) >= self.whale_value_).astype(int)
            es = (eval_set[0][self.whale_features_], es_label) if 0 < es_label.sum() < es_label.size else None
        rounds = getattr(self, "whale_iteration_fixed_", None)
        if rounds is not None:
            self.whale_model_.set_params(n_estimators=int(rounds))
            es = None
        self.whale_iteration_ = fit_booster(
            self.whale_model_, X, label, sample_weight, es, self.early_stopping_rounds
        )
        return self

    def whale_score(self, X, cache: list | None = None) -> np.ndarray:
        """P(top revenue bracket | buyer, x); zeros when there is no whale model. ``cache``: see
        ``lgbm_matrix``."""
        if getattr(self, "whale_model_", None) is None:
            return np.zeros(len(X))
        return booster_predict(self.whale_model_, X, self.whale_features_, self.whale_iteration_, cache)

    def whale_clone(self) -> Gate:
        """Unfitted copy whose whale model trains the full model's round count (for cross-fitting)."""
        clone = type(self)(**self.get_params())
        clone.whale_iteration_fixed_ = getattr(self, "whale_iteration_", None)
        return clone

    # ---- gate tuning --------------------------------------------------------------------------------
    def _grid(self, p, y) -> tuple[list, list, list]:
        """Candidate values, identity first (ties keep the earlier, i.e. the identity, value)."""

        def identity_first(values, identity):
            return [identity] + sorted(set(values) - {identity})

        caps = identity_first(np.linspace(self.cap_min, self.cap_max, int(self.n_cap)).tolist(), 1.0)
        if self.metric == "zero_rate":
            rate = float(np.mean(y <= 0)) if self.zero_rate_target is None else float(self.zero_rate_target)
            cutoffs = [float(np.quantile(p, rate))]
        else:
            grid = np.geomspace(self.cutoff_min, self.cutoff_max, int(self.n_cutoff)).tolist()
            cutoffs = identity_first(grid, 0.0)
        exps = np.linspace(self.exponent_min, self.exponent_max, int(self.n_exponent)).tolist()
        return caps, cutoffs, identity_first(exps, 1.0)

    def fit(self, p, y, predict_fn, whale_score=None, objective: str = "rmsle") -> Gate:
        """Tune cap / cutoff / exponent / whale threshold on held-out rows.

        Parameters
        ----------
        p : calibrated buyer probabilities of the tuning rows. y : their d7 revenue (dollars).
        predict_fn : maps a gated probability array to dollar predictions (the ensemble's hurdle
            composition), so the score is that of the final prediction.
        whale_score : whale model scores of the tuning rows (None: no whale bypass).
        objective : 'rmsle' or 'revenue' (used by metric='auto').
        """
        if self.metric not in GATE_METRICS:
            raise ValueError(f"gate metric must be one of {GATE_METRICS}, got {self.metric!r}")
        p = np.asarray(p, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        metric = ("rmsle" if objective == "rmsle" else "none") if self.metric == "auto" else self.metric
        self.params_ = dict(IDENTITY)
        self.identity_score_ = metrics.rmsle(y, predict_fn(apply_gate(p, whale_score, **IDENTITY)))
        self.best_score_ = self.identity_score_
        if not self.enabled or metric == "none":
            return self
        caps, cutoffs, exps = self._grid(p, y)
        use_whale = whale_score is not None and getattr(self, "whale_model_", None) is not None
        whales = [np.inf, *list(self.whale_grid)] if use_whale else [np.inf]
        best = (np.inf, None)
        for cap, cutoff, exponent, whale_t in itertools.product(caps, cutoffs, exps, whales):
            params = {"cap": cap, "cutoff": cutoff, "exponent": exponent, "whale_threshold": whale_t}
            score = metrics.rmsle(y, predict_fn(apply_gate(p, whale_score, **params)))
            if score < best[0] - 1e-12:  # strict: ties keep the earlier (closer to identity) point
                best = (score, params)
        self.best_score_, self.params_ = best
        return self

    def transform(self, p, whale_score=None) -> np.ndarray:
        """Gate probabilities with the fitted values (the same ``apply_gate`` the tuning scored)."""
        if not hasattr(self, "params_"):
            raise ValueError("Gate is not fitted; call fit first")
        return apply_gate(p, whale_score, **self.params_)

    def fitted_params(self) -> dict:
        """JSON-friendly fitted values (logged as buyer_gating.json / buyer_threshold.json)."""
        out = {k: (None if not np.isfinite(v) else float(v)) for k, v in self.params_.items()}
        out.update(
            whale_value=None if not np.isfinite(getattr(self, "whale_value_", np.inf)) else self.whale_value_,
            tuning_rmsle=float(self.best_score_),
            identity_rmsle=float(self.identity_score_),
            enabled=bool(self.enabled),
        )
        return out
