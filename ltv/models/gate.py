"""Gating of the buyer probability: cap, cutoff, exponent and a whale bypass, tuned on held-out rows.

``apply_gate`` is the one gating function: ``Gate.fit`` scores every grid point through it and
``Gate.transform`` (inference) calls it with the fitted values, so tuning and serving cannot disagree
(a public implementation applied the exponent once when tuning and twice when predicting).
"""

from __future__ import annotations

import itertools

import numpy as np
from sklearn.base import BaseEstimator

from ltv import metrics

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


def _span(space, low, high, n, name: str) -> list:
    """``space(low, high, n)`` as a list; ``[]`` for ``n = 0``; a clear error for a missing bound."""
    if not n:
        return []
    if low is None or high is None:
        raise ValueError(f"gate {name} grid of n_{name}={n} points needs {name}_min and {name}_max")
    return space(low, high, int(n)).tolist()


class Gate(BaseEstimator):
    """The buyer-probability gate, tuned by grid search on held-out rows (the whale score it may let
    bypass comes from ``ltv.models.classifier.WhaleClassifier``).

    Parameters
    ----------
    enabled : False (the default) gives the identity gate (``gate=off``).
    metric : 'rmsle' (minimise RMSLE of the composed prediction), 'zero_rate' (cutoff set so the
        share of zeroed rows equals ``zero_rate_target``, the rest tuned on RMSLE), 'none' (identity),
        'auto' (rmsle for objective rmsle; none for objective revenue, because any cap or cutoff
        biases the expected-revenue total).
    zero_rate_target : share of zero predictions for 'zero_rate'; None uses the tuning rows' zero rate.
    cap_min, cap_max, n_cap : cap grid (linear); cutoff_min, cutoff_max, n_cutoff : cutoff grid (log);
    exponent_min, exponent_max, n_exponent : exponent grid (linear). ``n_* = 0`` (the default) searches
    only the identity value, which every grid contains, so the tuned gate never scores worse than no
    gate on the tuning rows.
    whale_grid : candidate thresholds on the whale score (plus "never"); empty: no whale bypass.
    """

    def __init__(
        self,
        enabled: bool = False,
        metric: str = "none",
        zero_rate_target: float | None = None,
        cap_min: float | None = None,
        cap_max: float | None = None,
        n_cap: int = 0,
        cutoff_min: float | None = None,
        cutoff_max: float | None = None,
        n_cutoff: int = 0,
        exponent_min: float | None = None,
        exponent_max: float | None = None,
        n_exponent: int = 0,
        whale_grid=(),
    ):
        self.enabled = enabled
        self.metric = metric
        self.zero_rate_target = zero_rate_target
        self.cap_min, self.cap_max, self.n_cap = cap_min, cap_max, n_cap
        self.cutoff_min, self.cutoff_max, self.n_cutoff = cutoff_min, cutoff_max, n_cutoff
        self.exponent_min, self.exponent_max, self.n_exponent = exponent_min, exponent_max, n_exponent
        self.whale_grid = whale_grid

    # ---- gate tuning --------------------------------------------------------------------------------
    def _grid(self, p, y) -> tuple[list, list, list]:
        """Candidate values, identity first (ties keep the earlier, i.e. the identity, value)."""

        def identity_first(values, identity):
            return [identity] + sorted(set(values) - {identity})

        caps = identity_first(_span(np.linspace, self.cap_min, self.cap_max, self.n_cap, "cap"), 1.0)
        if self.metric == "zero_rate":
            rate = float(np.mean(y <= 0)) if self.zero_rate_target is None else float(self.zero_rate_target)
            cutoffs = [float(np.quantile(p, rate))]
        else:
            grid = _span(np.geomspace, self.cutoff_min, self.cutoff_max, self.n_cutoff, "cutoff")
            cutoffs = identity_first(grid, 0.0)
        exps = _span(np.linspace, self.exponent_min, self.exponent_max, self.n_exponent, "exponent")
        return caps, cutoffs, identity_first(exps, 1.0)

    def fit(self, p, y, predict_fn, whale_score=None, objective: str = "rmsle") -> Gate:
        """Tune cap / cutoff / exponent / whale threshold on held-out rows.

        Parameters
        ----------
        p : calibrated buyer probabilities of the tuning rows. y : their d7 revenue (dollars).
        predict_fn : maps a gated probability array to dollar predictions (the chain's hurdle
            composition), each row's from its own probability, so the score is that of the final
            prediction.
        whale_score : whale scores of the tuning rows (None: no whale bypass).
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
        whales = [np.inf, *list(self.whale_grid)] if whale_score is not None else [np.inf]
        scores = self._grid_scores(p, y, predict_fn, whale_score, caps, cutoffs, exps, whales)
        best = (np.inf, None)
        for (i, j, k, m), score in np.ndenumerate(scores):  # product order: caps, cutoffs, exponents, whales
            if score < best[0] - 1e-12:  # strict: ties keep the earlier (closer to identity) point
                best = (score, {"cap": caps[i], "cutoff": cutoffs[j], "exponent": exps[k],
                                "whale_threshold": whales[m]})  # fmt: skip
        self.params_ = best[1]
        # the stored score is exactly that of what inference produces (the grid's sums differ by rounding)
        self.best_score_ = metrics.rmsle(y, predict_fn(apply_gate(p, whale_score, **self.params_)))
        return self

    @staticmethod
    def _grid_scores(p, y, predict_fn, whale_score, caps, cutoffs, exps, whales) -> np.ndarray:
        """RMSLE of every grid point, shape (caps, cutoffs, exponents, whales).

        A cutoff only zeroes the rows below it (those the whale bypass does not keep), and ``predict_fn``
        maps each row's probability to its own prediction, so one pass per (cap, exponent, whale) scores
        every cutoff: with rows sorted by ``p``, the squared log error with the cutoff is that without it
        plus the running sum of (error at q = 0) - (error at q) over the rows below it.
        """
        log_y = np.log1p(np.clip(y, 0, None))

        def errors(q):
            return (np.log1p(np.clip(predict_fn(q), 0, None)) - log_y) ** 2

        order = np.argsort(p, kind="stable")
        below = np.searchsorted(p[order], cutoffs, side="left")  # rows with p < cutoff: order[:below]
        zeroed = errors(np.zeros_like(p))[order]
        sorted_whale = None if whale_score is None else np.asarray(whale_score, dtype=np.float64)[order]
        scores = np.empty((len(caps), len(cutoffs), len(exps), len(whales)))
        for (i, cap), (k, exponent), (m, whale_t) in itertools.product(enumerate(caps), enumerate(exps),
                                                                        enumerate(whales)):  # fmt: skip
            kept = errors(apply_gate(p, whale_score, cap=cap, exponent=exponent, whale_threshold=whale_t))
            change = zeroed - kept[order]
            if sorted_whale is not None and np.isfinite(whale_t):
                change[sorted_whale >= whale_t] = 0.0  # bypassed rows keep p below any cutoff
            running = np.concatenate([[0.0], np.cumsum(change)])
            scores[i, :, k, m] = np.sqrt(np.maximum(kept.sum() + running[below], 0.0) / len(p))
        return scores

    def transform(self, p, whale_score=None) -> np.ndarray:
        """Gate probabilities with the fitted values (the same ``apply_gate`` the tuning scored)."""
        if not hasattr(self, "params_"):
            raise ValueError("Gate is not fitted; call fit first")
        return apply_gate(p, whale_score, **self.params_)

    def fitted_params(self) -> dict:
        """JSON-friendly fitted values (logged as buyer_gating.json / buyer_threshold.json)."""
        out = {k: (None if not np.isfinite(v) else float(v)) for k, v in self.params_.items()}
        out.update(
            tuning_rmsle=float(self.best_score_),
            identity_rmsle=float(self.identity_score_),
            enabled=bool(self.enabled),
        )
        return out
