"""WhaleClassifier: LightGBM P(revenue in the top bracket | buyer, x), the gate's bypass score and a
stacking meta-feature."""

from __future__ import annotations

import numpy as np

from ltv.models._lgbm import booster_predict
from ltv.models.booster import BoosterParams, check_frame, fit_booster

MIN_WHALES = 5  # fewer positive rows than this (or no negative one): no model, the score is 0


class WhaleClassifier(BoosterParams):
    """P(revenue >= ``quantile`` of positive train revenue | buyer, x), fitted on train buyers.

    Parameters
    ----------
    quantile : the top bracket: revenue >= this quantile of the positive train revenue.
    booster : LightGBM parameters, passed to ``lightgbm.LGBMClassifier`` unchanged; None: its defaults.
    early_stopping_rounds : rounds without log-loss improvement on ``eval_set``; None disables.
    enabled : False fits nothing and scores 0 for every row (``whale=none``: no whale bypass, no
        whale meta-feature).
    """

    def __init__(
        self,
        quantile: float | None = None,
        booster: dict | None = None,
        early_stopping_rounds: int | None = None,
        enabled: bool = True,
    ):
        self.quantile = quantile
        self.booster = booster
        self.early_stopping_rounds = early_stopping_rounds
        self.enabled = enabled

    def fit(self, X, revenue, sample_weight=None, eval_set=None) -> WhaleClassifier:
        """Fit on buyer rows ``X`` with their d7 revenue; ``eval_set`` = (X_es, revenue_es) of held-out
        buyers for early stopping, or None."""
        check_frame(X)
        if self.enabled and self.quantile is None:
            raise ValueError("WhaleClassifier needs quantile (e.g. whale.quantile=0.9) or enabled=False")
        revenue = np.asarray(revenue, dtype=np.float64)
        positive = revenue[revenue > 0]
        top = positive.size and self.quantile is not None
        self.whale_value_ = float(np.quantile(positive, self.quantile)) if top else np.inf
        label = (revenue >= self.whale_value_).astype(int)
        self.booster_ = None
        if not self.enabled or label.sum() < MIN_WHALES or label.sum() == label.size:
            return self
        self.feature_names_in_ = list(X.columns)
        es = None
        if eval_set is not None:
            es_label = (np.asarray(eval_set[1], dtype=np.float64) >= self.whale_value_).astype(int)
            if 0 < es_label.sum() < es_label.size:
                es = (eval_set[0][self.feature_names_in_], es_label)
        self.booster_, self.best_iteration_ = fit_booster(
            {"objective": "binary", **self.lgbm_kwargs()},
            X,
            label,
            sample_weight,
            es,
            self.early_stopping_rounds,
        )
        return self

    @property
    def fitted(self) -> bool:
        """Whether a booster was trained (enough whales in the train rows)."""
        return getattr(self, "booster_", None) is not None

    def predict_p(self, X, cache: list | None = None) -> np.ndarray:
        """The whale score; zeros when no booster was trained. ``cache``: see ``lgbm_matrix``."""
        if not hasattr(self, "whale_value_"):
            raise ValueError("WhaleClassifier is not fitted; call fit first")
        if not self.fitted:
            return np.zeros(len(X))
        return booster_predict(self.booster_, X, self.feature_names_in_, self.best_iteration_, cache)
