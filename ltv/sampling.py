"""Histogram resamplers over the log1p revenue target (imbalanced-learn style ``fit_resample``).

Both samplers bin ``log1p(revenue)``: one bin for exact zeros, then ``n_bins`` equal-width bins over the
positive part up to the train maximum (edges fitted on the rows passed to ``fit_resample``, i.e. on
train only). They return the resampled rows, their labels and a sample weight, and record
``sample_indices_`` (positions into the input) so a caller can gather any other aligned label frame.

- ``HistOS`` (histogram oversampling) replicates rows of rare high-value bins so the buyer classifier
  sees balanced evidence across spend brackets. It needs the revenue, not the 0/1 buyer label: on a
  binary label every positive falls in one bin and oversampling would be a no-op, so that is an error.
- ``HHISTUS`` (histogram undersampling) trims over-full low-revenue bins before the revenue stage and
  never drops a row at or above the whale threshold.
- ``NegativeUndersampler`` keeps every spender and a fixed share of the zero-revenue rows before the buyer
  classifier (the negative downsampling of click and conversion models): the classifier's cost falls with
  the rows it sees, and ~97% of the rows are zeros that each carry little information.

The estimand stays honest: ``correction='weights'`` gives every kept row the inverse of its bin's
sampling rate (bin totals of weight equal the original counts); ``correction='calibration'`` returns unit
weights and relies on the consumer recalibrating on an untouched split (the buyer classifier does).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CORRECTIONS = ("weights", "calibration")


def _revenue(y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if not np.isfinite(y).all():
        raise ValueError("revenue y must be finite (no NaN/inf)")
    return np.clip(y, 0.0, None)  # refunds make d14/d28 slightly negative; log scale starts at 0


def _take(X, idx: np.ndarray):
    return X.iloc[idx] if isinstance(X, pd.DataFrame | pd.Series) else np.asarray(X)[idx]


class _HistogramSampler:
    """Shared binning, validation and output assembly."""

    def __init__(self, n_bins: int = 10, correction: str = "weights", random_state: int | None = 0):
        self.n_bins = n_bins
        self.correction = correction
        self.random_state = random_state

    def _check(self, X, y, sample_weight):
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")
        if int(self.n_bins) < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")
        rev = _revenue(y)
        if len(X) != rev.size:
            raise ValueError(f"X has {len(X)} rows but y has {rev.size}")
        w = np.ones(rev.size) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w.shape != rev.shape:
            raise ValueError(f"sample_weight must have {rev.size} entries, got {w.shape}")
        return rev, w

    def _fit_bins(self, rev: np.ndarray) -> np.ndarray:
        """Bin ids: 0 for zero revenue, 1..n_bins for positive log1p revenue (equal width)."""
        log_rev = np.log1p(rev)
        top = float(log_rev.max()) if rev.size else 0.0
        self.bin_edges_ = np.linspace(0.0, top if top > 0 else 1.0, int(self.n_bins) + 1)
        return self.transform_bins(rev)

    def transform_bins(self, y) -> np.ndarray:
        """Bin ids of revenue ``y`` under the fitted edges (values above the train max go to the top bin)."""
        log_rev = np.log1p(_revenue(y))
        inner = np.clip(np.searchsorted(self.bin_edges_, log_rev, side="right"), 1, int(self.n_bins))
        return np.where(log_rev > 0, inner, 0)

    def _output(self, X, y, idx, weight):
        idx = np.asarray(idx, dtype=np.int64)
        self.sample_indices_ = idx
        y_out = _take(y, idx) if isinstance(y, pd.Series) else np.asarray(y)[idx]
        return _take(X, idx), y_out, weight


class HistOS(_HistogramSampler):
    """Oversample rare high-value revenue bins.

    Parameters
    ----------
    n_bins : equal-width bins over positive log1p revenue.
    target_fraction : each positive bin is grown towards ``target_fraction * (largest positive bin)`` rows.
    max_multiplier : a bin grows at most to ``max_multiplier`` times its size (limits duplicated whales).
    correction : 'weights' (inverse sampling rate) or 'calibration' (unit weights; consumer recalibrates).
    random_state : seed of the replicate draw.
    """

    def __init__(
        self,
        n_bins: int = 10,
        target_fraction: float = 0.5,
        max_multiplier: float = 10.0,
        correction: str = "calibration",
        random_state: int | None = 0,
    ):
        super().__init__(n_bins=n_bins, correction=correction, random_state=random_state)
        self.target_fraction = target_fraction
        self.max_multiplier = max_multiplier

    def fit_resample(self, X, y, sample_weight=None):
        """Return ``(X_res, y_res, weight_res)``; every original row is kept once, extra copies appended.

        ``y`` is the revenue (dollars). A 0/1 label raises ValueError: its histogram has one positive
        bin, so nothing would be oversampled.
        """
        rev, w = self._check(X, y, sample_weight)
        if np.unique(rev).size <= 2:
            raise ValueError(
                "HistOS bins the revenue target; y has <= 2 distinct values (a binary label?). "
                "Pass the revenue column (e.g. iap_revenue_d7), not buyer_d7."
            )
        bins = self._fit_bins(rev)
        counts = np.bincount(bins, minlength=int(self.n_bins) + 1)
        goal = float(self.target_fraction) * counts[1:].max()
        rng = np.random.default_rng(self.random_state)
        extra, rate = [], np.ones(counts.size)
        for b in range(1, counts.size):
            if counts[b] == 0 or counts[b] >= goal:
                continue
            target = int(min(goal, counts[b] * float(self.max_multiplier)))
            members = np.flatnonzero(bins == b)
            extra.append(rng.choice(members, size=target - counts[b], replace=True))
            rate[b] = target / counts[b]
        idx = np.concatenate([np.arange(rev.size), *extra]) if extra else np.arange(rev.size)
        self.sampling_rate_ = rate
        weight = w[idx] / rate[bins[idx]] if self.correction == "weights" else w[idx]
        return self._output(X, y, idx, weight)


class HHISTUS(_HistogramSampler):
    """Undersample over-full low-revenue bins, keeping every whale.

    Parameters
    ----------
    n_bins : equal-width bins over positive log1p revenue (plus the zero bin).
    max_bin_ratio : a bin keeps at most ``max_bin_ratio * median(non-empty bin sizes)`` rows.
    min_keep_rate : never keep fewer than this share of a bin (bounds the inverse-rate weights).
    whale_quantile : rows with revenue >= this quantile of positive train revenue are never dropped.
    correction : 'weights' (inverse sampling rate, default: the revenue stage is not recalibrated) or
        'calibration'.
    random_state : seed of the draw.
    """

    def __init__(
        self,
        n_bins: int = 10,
        max_bin_ratio: float = 1.5,
        min_keep_rate: float = 0.25,
        whale_quantile: float = 0.9,
        correction: str = "weights",
        random_state: int | None = 0,
    ):
        super().__init__(n_bins=n_bins, correction=correction, random_state=random_state)
        self.max_bin_ratio = max_bin_ratio
        self.min_keep_rate = min_keep_rate
        self.whale_quantile = whale_quantile

    def fit_resample(self, X, y, sample_weight=None):
        """Return ``(X_res, y_res, weight_res)`` in original row order; whales are all kept."""
        rev, w = self._check(X, y, sample_weight)
        bins = self._fit_bins(rev)
        positive = rev[rev > 0]
        self.whale_value_ = float(np.quantile(positive, self.whale_quantile)) if positive.size else np.inf
        whale = rev >= self.whale_value_
        counts = np.bincount(bins[~whale], minlength=int(self.n_bins) + 1)
        cap = float(self.max_bin_ratio) * float(np.median(counts[counts > 0])) if counts.any() else 0.0
        rng = np.random.default_rng(self.random_state)
        keep = whale.copy()
        rate = np.ones(counts.size)
        for b in range(counts.size):
            members = np.flatnonzero((bins == b) & ~whale)
            n_keep = int(max(np.ceil(cap), np.ceil(float(self.min_keep_rate) * members.size)))
            if members.size <= n_keep:
                keep[members] = True
                continue
            keep[rng.choice(members, size=n_keep, replace=False)] = True
            rate[b] = n_keep / members.size
        self.sampling_rate_ = rate
        idx = np.flatnonzero(keep)
        # whales are never sampled, so their rate is 1 whatever bin they sit in
        row_rate = np.where(whale[idx], 1.0, rate[bins[idx]])
        weight = w[idx] / row_rate if self.correction == "weights" else w[idx]
        return self._output(X, y, idx, weight)


class NegativeUndersampler(_HistogramSampler):
    """Keep every row with positive revenue and ``keep_rate`` of the zero-revenue rows (drawn without
    replacement, exactly ``ceil(keep_rate * zeros)`` of them).

    With ``correction='weights'`` each kept zero weighs ``zeros / kept``, so the weighted zeros add up to
    the original count and the weighted log-loss is the full data's in expectation: the classifier's
    probabilities stay calibrated before its own calibration step. ``correction='calibration'`` keeps unit
    weights and leaves the base rate to that step.

    Parameters
    ----------
    keep_rate : share of the zero-revenue rows kept, in (0, 1]; 1 (the code default: no sampling) keeps every
        row; the chosen share lives in ``conf/sampling/negatives.yaml``.
    correction : 'weights' (default) or 'calibration'.
    random_state : seed of the draw.
    """

    def __init__(self, keep_rate: float = 1.0, correction: str = "weights", random_state: int | None = 0):
        super().__init__(n_bins=1, correction=correction, random_state=random_state)
        self.keep_rate = keep_rate

    def fit_resample(self, X, y, sample_weight=None):
        """Return ``(X_res, y_res, weight_res)`` in original row order."""
        rate = float(self.keep_rate)
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"NegativeUndersampler: keep_rate must be in (0, 1], got {self.keep_rate!r}")
        rev, w = self._check(X, y, sample_weight)
        zeros = np.flatnonzero(rev <= 0)
        n_keep = min(int(np.ceil(rate * zeros.size)), zeros.size)
        keep = rev > 0
        keep[np.random.default_rng(self.random_state).choice(zeros, size=n_keep, replace=False)] = True
        self.sampling_rate_ = np.array([n_keep / zeros.size if zeros.size else 1.0, 1.0])
        idx = np.flatnonzero(keep)
        weight = w[idx] / np.where(rev[idx] > 0, 1.0, self.sampling_rate_[0])
        return self._output(X, y, idx, weight if self.correction == "weights" else w[idx])


class SamplingPlan:
    """Which sampler runs before which stage (``None``: that stage sees every row with unit weight).

    Parameters
    ----------
    classifier : sampler applied to the buyer classifier's train rows (binning the d7 revenue).
    regressor : sampler applied to the revenue regressor's train buyers (binning the d7 revenue).
    """

    def __init__(self, classifier=None, regressor=None):
        self.classifier = classifier
        self.regressor = regressor

    @staticmethod
    def apply(sampler, X, revenue, sample_weight=None) -> tuple[np.ndarray, np.ndarray]:
        """Positions into ``X`` and weights after ``sampler`` (identity when ``sampler`` is None)."""
        if sampler is None:
            n = len(X)
            w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
            return np.arange(n), w
        # samplers draw from the revenue alone: X stands in by its row count (it may be Blocks)
        rows = np.empty((len(X), 0), dtype=np.float32)
        _, _, weight = sampler.fit_resample(rows, np.asarray(revenue, dtype=np.float64), sample_weight)
        return sampler.sample_indices_, np.asarray(weight, dtype=np.float64)
