"""Fitted feature stages: learned on TRAIN rows only, then applied unchanged to every other split.

- :class:`CategoryEncoder`: a fixed vocabulary per string column -> pandas ``category`` dtype.
- :class:`GroupStats`: per-group (country, country x dev_os, advertiser category) quantiles and median
  of a few key numeric features -> percentile rank within the group and deviation from its median.

Both read only the frame handed to ``fit``; ``transform`` never updates learned state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

OTHER = "__other__"  # seen in train, but too rare for the vocabulary
UNSEEN = "__unseen__"  # never seen in train
# null stays NaN (LightGBM's missing-value handling)

# key numeric features (extract output names) described within their segment
GROUP_FEATURES = [
    "release_msrp",
    "avg_daily_sessions__sum",
    "user_bundles__len",
    "iap_revenue_usd_bundle__sum",
    "whale_users_bundle_total_revenue__max",
]
# segment name -> raw columns that define it
GROUP_KEYS = {
    "country": ["country"],
    "country_os": ["country", "dev_os"],
    "adv_category": ["advertiser_category"],
}


class CategoryEncoder:
    """Vocabulary per column: the ``max_categories`` most frequent train values seen at least
    ``min_category_count`` times; other train values -> ``'__other__'``, values never seen in train ->
    ``'__unseen__'``, null -> NaN. The category list of each output column is fixed at fit."""

    def __init__(self, max_categories: int = 200, min_category_count: int = 20):
        self.max_categories = max_categories
        self.min_category_count = min_category_count

    def fit(self, S: pd.DataFrame, columns: list[str]) -> CategoryEncoder:
        """Vocabularies of ``columns`` of ``S``: a pandas frame, or a Dask one (a train split on a
        cluster), whose value counts are computed where its partitions are."""
        import dask

        self.vocab_: dict[str, list[str]] = {}
        self.rare_: dict[str, list[str]] = {}
        all_counts = dask.compute(*[S[c].value_counts(dropna=True) for c in columns])
        for c, counts in zip(columns, all_counts, strict=True):
            counts = counts[counts > 0]  # a category column lists values its rows may not hold
            counts.index = counts.index.astype(object)
            counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
            keep = counts[counts >= self.min_category_count].index[: self.max_categories]
            self.vocab_[c] = [str(v) for v in keep]
            self.rare_[c] = [str(v) for v in counts.index[len(keep) :]]
        self._derive()
        return self

    def _derive(self) -> None:
        """Per column (vocabulary index, rare values, output dtype), built once per fitted state (at fit
        and unpickling): rebuilding them per call costs more than encoding a one-row request."""
        self._lookups = {
            c: (
                {v: i for i, v in enumerate(vocab)},
                frozenset(self.rare_[c]),
                pd.CategoricalDtype(pd.Index([*vocab, OTHER, UNSEEN], dtype=object), ordered=False),
            )
            for c, vocab in self.vocab_.items()
        }

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_lookups"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "vocab_" in state:
            self._derive()

    def categories(self, c: str) -> pd.Index:
        """The categories of column ``c``'s output: the vocabulary, then ``'__other__'``, ``'__unseen__'``."""
        return self._lookups[c][2].categories

    def transform_column(self, c: str, values: pd.Series) -> pd.Categorical:
        """Encode one column; each distinct value is looked up once (factorize, then a small table)."""
        index, rare, dtype = self._lookups[c]
        codes, uniques = _factorize(values)
        other, unseen = len(index), len(index) + 1
        table = np.array([index.get(u, other if u in rare else unseen) for u in uniques] + [-1], np.int64)
        return pd.Categorical.from_codes(table[codes], dtype=dtype)


def _factorize(values: pd.Series | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes per row (-1 for null) and the distinct values as str."""
    if isinstance(values, pd.Series):  # extract() output is object with None already: no NA pass needed
        arr = (
            values.to_numpy(dtype=object)
            if values.dtype == object
            else values.to_numpy(object, na_value=None)
        )
    else:
        arr = values
    codes, uniques = pd.factorize(arr, use_na_sentinel=True)
    return codes.astype(np.int64, copy=False), [str(u) for u in uniques]


def segment_codes(S: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[str]]:
    """Segment code per row (-1 when any key is null) and each segment's label ('us|ios')."""
    parts = [_factorize(S[c]) for c in columns]
    code, labels = parts[0]
    for k, u in parts[1:]:
        code = np.where((code < 0) | (k < 0), -1, code * len(u) + k)
        labels = [f"{a}|{b}" for a in labels for b in u]  # row-major, matches code * len(u) + k
    used, compact = np.unique(code[code >= 0], return_inverse=True)
    out = np.full(len(code), -1, np.int64)
    out[code >= 0] = compact
    return out, [labels[i] for i in used]


def _split_by(idx: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(group, row positions) for every distinct value of ``idx``, in ascending group order."""
    order, runs = _runs_by(idx)
    return [(g, order[lo:hi]) for g, lo, hi in runs]


def _runs_by(idx: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """(row order sorting ``idx``, then (group, start, stop) of each group's slice of that order)."""
    order = np.argsort(idx, kind="stable")
    if len(idx) == 0:
        return order, []
    groups, starts = np.unique(idx[order], return_index=True)
    stops = np.append(starts[1:], len(idx))
    return order, list(zip(groups.tolist(), starts.tolist(), stops.tolist(), strict=True))


class GroupStats:
    """Percentile rank within, and deviation from the median of, each segment for key features.

    A segment's groups are those with at least ``min_group_count`` train rows; per (segment, feature)
    the fit keeps ``n_quantiles`` quantiles of each group's non-null train values (row 0: all train
    rows). A row of an unseen, small or null group, or of a group without ``min_group_count`` non-null
    values of the feature, uses the global quantiles. Percentile rank is the mid-rank of the value in
    the quantile grid, in [0, 1]; deviation is the value minus the grid's median.
    """

    def __init__(self, features: list[str] | None = None, min_group_count: int = 50, n_quantiles: int = 101):
        self.features = features
        self.min_group_count = min_group_count
        self.n_quantiles = n_quantiles

    def fit(self, S: pd.DataFrame) -> GroupStats:
        feats = [f for f in (self.features or GROUP_FEATURES) if f in S.columns]
        self.segments_ = {k: cols for k, cols in GROUP_KEYS.items() if all(c in S.columns for c in cols)}
        self.levels_ = np.linspace(0, 1, self.n_quantiles)
        self.groups_: dict[str, list[str]] = {}
        self.grids_: dict[tuple[str, str], np.ndarray] = {}
        for seg, cols in self.segments_.items():
            code, labels = segment_codes(S, cols)
            sizes = np.bincount(code[code >= 0], minlength=len(labels))
            kept = np.flatnonzero(sizes >= self.min_group_count)
            self.groups_[seg] = [labels[i] for i in kept]
            row_of = np.zeros(len(labels) + 1, np.int64)  # segment code (-1 -> last) -> grid row
            row_of[kept] = np.arange(1, len(kept) + 1)
            for f in feats:
                self.grids_[(seg, f)] = self._grid(
                    S[f].to_numpy(np.float64, na_value=np.nan), row_of[code], len(kept)
                )
        self.feature_names_ = [f"{f}__{seg}_{s}" for (seg, f) in self.grids_ for s in ("pct", "dev")]
        self._derive()
        return self

    def _grid(self, x: np.ndarray, row: np.ndarray, n_groups: int) -> np.ndarray:
        ok = ~np.isnan(x)
        grid = np.full((n_groups + 1, len(self.levels_)), np.nan)
        if ok.any():
            grid[:] = np.quantile(x[ok], self.levels_)  # global first; groups overwrite their row
        x_ok = x[ok]  # once: indexing x[ok] per group copied every row once per group
        for g, rows in _split_by(row[ok]):
            if g > 0 and len(rows) >= self.min_group_count:
                grid[g] = np.quantile(x_ok[rows], self.levels_)
        return grid

    def _derive(self) -> None:
        """Group label -> grid row per segment, and each grid row's median (``np.interp(0.5, levels_,
        row)``) per (segment, feature): built once per fitted state (at fit and unpickling)."""
        self._rows = {seg: {v: i + 1 for i, v in enumerate(groups)} for seg, groups in self.groups_.items()}
        self._medians = {
            key: np.array([np.interp(0.5, self.levels_, q) for q in grid])
            for key, grid in self.grids_.items()
        }

    def __getstate__(self):
        derived = ("_rows", "_medians")
        return {k: v for k, v in self.__dict__.items() if k not in derived}

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "grids_" in state:
            self._derive()

    def transform(self, S: pd.DataFrame) -> dict[str, np.ndarray]:
        out = {}
        xs: dict[str, np.ndarray] = {}  # each feature column read once, not once per segment
        for seg, cols in self.segments_.items():
            code, labels = segment_codes(S, cols)
            index = self._rows[seg]
            row = np.array([index.get(lab, 0) for lab in labels] + [0], np.int64)[code]  # unknown -> 0
            runs = _runs_by(row)
            for (s, f), grid in self.grids_.items():
                if s == seg:
                    if f not in xs:
                        xs[f] = S[f].to_numpy(np.float64, na_value=np.nan)
                    pct, dev = self._apply(xs[f], grid, row, runs, self._medians[(s, f)])
                    out[f"{f}__{seg}_pct"], out[f"{f}__{seg}_dev"] = pct, dev
        return out

    @staticmethod
    def _apply(x, grid, row, runs, medians) -> tuple[np.ndarray, np.ndarray]:
        """Mid-rank of each value in its group's grid row, and its deviation from that row's median.

        Rows are visited grouped (``runs``: the row order sorting them by group, and each group's
        slice of it), so each group searches one contiguous slice instead of gathering its rows.
        """
        order, groups = runs
        xo = x[order]
        pos = np.empty(len(x), np.float64)
        for g, lo, hi in groups:
            q, part = grid[g], xo[lo:hi]
            left = np.searchsorted(q, part, side="left")
            ties = np.flatnonzero(q[np.minimum(left, len(q) - 1)] == part)  # values equal to a quantile
            right = left.copy()  # side="right" differs from "left" only there: search those alone
            right[ties] = np.searchsorted(q, part[ties], side="right")
            pos[lo:hi] = (left + right) / (2.0 * len(q))
        pct = np.empty(len(x), np.float64)
        pct[order] = pos
        pct[np.isnan(x)] = np.nan
        return pct, x - medians[row]
