"""Shared LightGBM plumbing: keyword pass-through, early stopping, fixed-iteration clones."""

from __future__ import annotations

import inspect

import lightgbm as lgb
import numpy as np

# LightGBM 4.7 deprecates eval_set in favour of eval_X / eval_y; older 4.x only knows eval_set
_EVAL_XY = "eval_X" in inspect.signature(lgb.LGBMModel.fit).parameters
# keys of our estimators that are not LightGBM parameters
_OWN_KEYS = {"early_stopping_rounds", "calibration", "horizons"}


class LGBMParamsMixin:
    """sklearn-style ``get_params`` over the explicit ``__init__`` keywords plus ``**kwargs``."""

    def get_params(self, deep: bool = False) -> dict:
        names = [
            p.name
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
        ]
        params = {n: getattr(self, n) for n in names if n != "self"}
        params.update(getattr(self, "kwargs", {}))
        return params

    def set_params(self, **params):
        for key, value in params.items():
            if hasattr(self, key) and key != "kwargs":
                setattr(self, key, value)
            else:
                self.kwargs[key] = value
        return self

    def lgbm_kwargs(self, exclude=()) -> dict:
        """Parameters for the LightGBM sklearn estimator (ours removed, verbose quiet by default)."""
        params = {k: v for k, v in self.get_params().items() if k not in _OWN_KEYS | set(exclude)}
        params.setdefault("verbose", -1)
        return params

    def fixed_clone(self):
        """Unfitted copy that trains exactly ``best_iteration_`` rounds with no early stopping.

        Used for cross-fitted (out-of-fold) copies: the round count was chosen on the valid window.
        """
        params = self.get_params()
        params["n_estimators"] = int(getattr(self, "best_iteration_", params["n_estimators"]))
        params["early_stopping_rounds"] = None
        return type(self)(**params)


def fit_booster(model, X, y, sample_weight=None, eval_set=None, early_stopping_rounds=None, eval_metric=None,
                init_score=None, eval_init_score=None):  # fmt: skip
    """Fit a LightGBM sklearn estimator, early-stopping on ``eval_set`` (first metric only) if given.

    ``init_score`` / ``eval_init_score``: a base prediction the boosting corrects (raw score scale).
    Returns the number of boosting rounds to use at prediction time.
    """
    callbacks = []
    kwargs = {} if init_score is None else {"init_score": init_score}
    if eval_set is not None and early_stopping_rounds:
        callbacks.append(
            lgb.early_stopping(int(early_stopping_rounds), first_metric_only=True, verbose=False)
        )
        if _EVAL_XY:
            kwargs["eval_X"], kwargs["eval_y"] = (eval_set[0],), (eval_set[1],)
        else:
            kwargs["eval_set"] = [eval_set]
        if eval_metric is not None:
            kwargs["eval_metric"] = eval_metric
        if eval_init_score is not None:
            kwargs["eval_init_score"] = [eval_init_score]
    model.fit(X, y, sample_weight=sample_weight, callbacks=callbacks, **kwargs)
    best = getattr(model, "best_iteration_", None)
    return int(best) if best else int(model.n_estimators)


def check_frame(X, name: str = "X"):
    """Reject empty input and non-frame objects early, with a message naming the argument."""
    if not hasattr(X, "iloc") or not hasattr(X, "columns"):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(X).__name__}")
    if len(X) == 0:
        raise ValueError(f"{name} has no rows")
    return X


def binary_label(y, name: str = "y") -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be a 0/1 label")
    return y
