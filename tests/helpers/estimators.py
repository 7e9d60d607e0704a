"""The chain's estimators with the settings the model tests were written for (small, fast, seeded):
each keyword that is not the estimator's own parameter goes into its ``booster`` mapping, and a mapping
given for a mapping parameter (``booster``, ``rf``, ``direct``, ...) is merged over the base one."""

from __future__ import annotations

import inspect

from ltv.models import BuyerClassifier, Gate, RevenueRegressor, StackingEnsemble, WhaleClassifier

_GBM = {"subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.5, "reg_lambda": 1.0, "n_jobs": 2,
        "random_state": 0}  # fmt: skip
CLASSIFIER = {
    "booster": {
        "n_estimators": 1000,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 50,
        **_GBM,
    },
    "early_stopping_rounds": 50,
    "calibration": "isotonic",
}
REGRESSOR = {
    "horizons": ("iap_revenue_d7", "iap_revenue_d14", "iap_revenue_d28"),
    "booster": {"n_estimators": 1000, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 20, **_GBM},
    "early_stopping_rounds": 50,
    "retransform": "mixture",
    "mixture_components": 2,
    "quantiles": (0.5, 0.9, 0.99),
    "thresholds": (1, 10, 100),
    "variance_booster": {"n_estimators": 300, "learning_rate": 0.03, "num_leaves": 7, "min_child_samples": 50,
                         "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.5, "reg_lambda": 1.0},
}  # fmt: skip
WHALE = {
    "quantile": 0.9,
    "booster": {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 20,
                "colsample_bytree": 0.5, "n_jobs": 2, "random_state": 0},
    "early_stopping_rounds": 30,
}  # fmt: skip
GATE = {
    "enabled": True, "metric": "auto", "cap_min": 0.3, "cap_max": 1.0, "n_cap": 8, "cutoff_min": 1e-4,
    "cutoff_max": 0.05, "n_cutoff": 8, "exponent_min": 0.8, "exponent_max": 1.5, "n_exponent": 4,
    "whale_grid": (0.3, 0.5, 0.7, 0.9),
}  # fmt: skip
STACKING = {
    "n_folds": 3, "risk_columns": ("country", "dev_os", "advertiser_category", "dev_make"),
    "risk_smoothing": 50.0, "clip_quantiles": (0.001, 0.999),
    "enet": {"alpha": 0.01, "l1_ratio": 0.5, "tol": 1e-3, "max_iter": 500},
    "rf": {"n_estimators": 100, "max_depth": 8, "max_samples": 0.3, "min_samples_leaf": 20},
    "xgb": {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.1, "tree_method": "hist"},
    "meta": {"n_estimators": 500, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 50},
    "early_stopping_rounds": 50, "n_jobs": 2, "random_state": 0, "cross_fit": True,
}  # fmt: skip


def _build(cls, base: dict, params: dict):
    own = set(inspect.signature(cls.__init__).parameters) - {"self"}
    kwargs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in params.items():
        if key in own and isinstance(value, dict) and isinstance(kwargs.get(key), dict):
            kwargs[key].update(value)
        elif key in own:
            kwargs[key] = value
        else:
            kwargs.setdefault("booster", {})[key] = value
    return cls(**kwargs)


def classifier(**params) -> BuyerClassifier:
    return _build(BuyerClassifier, CLASSIFIER, params)


def regressor(**params) -> RevenueRegressor:
    return _build(RevenueRegressor, REGRESSOR, params)


def whale(**params) -> WhaleClassifier:
    return _build(WhaleClassifier, WHALE, params)


def gate(**params) -> Gate:
    return _build(Gate, GATE, params)


def stacking(**params) -> StackingEnsemble:
    return _build(StackingEnsemble, STACKING, params)
