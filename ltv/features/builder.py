"""FeatureBuilder: raw contract rows (Arrow) -> model matrix, one code path for training and serving.

Two steps, so the expensive one parallelises freely:

1. ``extract(table)`` is stateless and row-local: nested columns are reduced from Arrow buffers, so it
   can run per file / per chunk in parallel threads, and chunked extraction equals one-shot extraction.
2. ``fit(S)`` on the extracted TRAIN rows learns category vocabularies and segment statistics;
   ``transform(S)`` applies them unchanged to any split or to serving rows.

Model matrix conventions: numeric features are float32 with NaN for missing (LightGBM's own missing
handling; ``__missing`` flags are computed from the raw cells). Categorical features are pandas
``category`` with the category list fixed at fit: the vocabulary, then ``'__other__'`` (seen in train
but rarer than ``min_category_count`` or beyond ``max_categories``) and ``'__unseen__'`` (never seen in
train); null stays NaN. Interaction terms are plain products of row values, so they are stateless and
computed in ``extract``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from ltv import contract
from ltv.daskframe import is_dask
from ltv.features import registry, stateless
from ltv.features.fitted import GROUP_FEATURES, GROUP_KEYS, CategoryEncoder, GroupStats

log = logging.getLogger(__name__)

_FLAGGED_KINDS = {contract.NUMBER, contract.MAP, contract.MAP_OF_MAP, contract.LIST}
_NEVER_NULL = {"hour", "weekday"}  # 0% null in the contract; a flag would be constant
_NOT_FEATURES = set(contract.LABEL_COLUMNS) | {contract.ROW_ID, contract.PARTITION_COLUMN}


class FeatureBuilder:
    """Feature groups toggled by name, extracted statelessly and finished by a train-only fit.

    Parameters
    ----------
    groups : registry group name -> enabled; None enables every group (``registry.GROUP_NAMES``).
        Unknown names raise ValueError listing the valid ones.
    max_categories, min_category_count : vocabulary size cap and minimum train count of a category.
    reference_time : unix seconds used as request time when a table has no ``datetime`` column
        (serving); None means now, floored to the hour (UTC).
    top_k : k of the histograms' top-k share.
    min_group_count, n_quantiles : segment statistics (see :class:`fitted.GroupStats`).

    Attributes
    ----------
    groups_ : the resolved registry (every group -> bool).
    feature_names_ : after fit, the columns of ``transform``'s output, in order.
    categorical_features_ : after fit, those of them with ``category`` dtype.
    """

    def __init__(
        self,
        groups: Mapping[str, bool] | None = None,
        max_categories: int = 200,
        min_category_count: int = 20,
        reference_time: float | None = None,
        top_k: int = 3,
        min_group_count: int = 50,
        n_quantiles: int = 101,
        **options,
    ):
        if options:
            raise TypeError(f"FeatureBuilder: unknown option(s) {sorted(options)}")
        self.groups = dict(groups) if groups is not None else None
        self.max_categories = max_categories
        self.min_category_count = min_category_count
        self.reference_time = reference_time
        self.top_k = top_k
        self.min_group_count = min_group_count
        self.n_quantiles = n_quantiles
        self.groups_ = registry.resolve_groups(self.groups)  # validated at construction: fail early

    def _enabled(self) -> list[str]:
        return [g for g, on in self.groups_.items() if on]

    def flagged_columns(self) -> list[str]:
        """Raw columns that get a ``__missing`` flag under the current groups."""
        if not self.groups_["missing_flags"]:
            return []
        cols = {c for g in self._enabled() for c in registry.GROUPS[g].sources}
        return [
            c
            for c in contract.FEATURE_COLUMNS
            if c in cols and contract.KIND[c] in _FLAGGED_KINDS and c not in _NEVER_NULL
        ]

    def _plan(self) -> tuple[list[str], list]:
        """(flagged raw columns, extract functions of the enabled groups), resolved once per instance:
        the registry look-ups cost ~0.1 ms per call, which a one-row request pays every time."""
        key = tuple(self.groups_.items())
        plan = self.__dict__.get("_plan_cache")
        if plan is None or plan[0] != key:
            fns = [registry.GROUPS[g].extract for g in self._enabled()]
            plan = (key, (self.flagged_columns(), [fn for fn in fns if fn is not None]))
            self.__dict__["_plan_cache"] = plan
        return plan[1]

    def extract(self, table: pa.Table) -> pd.DataFrame:
        """Stateless per-row features of contract rows.

        Parameters
        ----------
        table : contract feature columns (any Arrow type of the right kind), optionally ``datetime``
            ('YYYY-MM-DD-HH-00', the row's request hour). Extra columns are ignored.

        Returns
        -------
        DataFrame, one row per input row in order (index 0..n-1): float32 numeric columns, and the raw
        string columns the categorical / segment stages need as object arrays (None for null).
        """
        if not isinstance(table, pa.Table):
            raise TypeError(f"extract expects a pyarrow.Table, got {type(table).__name__}")
        t0 = time.perf_counter()
        ctx = stateless.ExtractContext(table, self.reference_time, self.top_k)
        n = table.num_rows
        # a small batch is stacked into one float32 block by _frame (one cast there); a big one is cast to
        # float32 per group right away: ~300 float64 columns would double the peak memory
        compact = _compact if not _small(n) else (lambda v: v)
        flagged, extractors = self._plan()
        cols: dict[str, np.ndarray] = {}
        # flags first: computed from the raw cells, before anything could fill them
        cols.update({k: compact(v) for k, v in stateless.missing_flags(ctx, flagged).items()})
        for fn in extractors:
            cols.update({k: compact(v) for k, v in fn(ctx).items()})
        if self.groups_["group_stats"]:
            for c in {c for keys in GROUP_KEYS.values() for c in keys} - cols.keys():
                cols[c] = stateless.strings(ctx.column(c))
        out = _frame(cols, n)
        secs = time.perf_counter() - t0
        log.debug(
            "extracted %d rows x %d columns in %.2fs (%.0f rows/s)",
            len(out),
            out.shape[1],
            secs,
            len(out) / max(secs, 1e-9),
        )
        return out

    def fit(self, S: pd.DataFrame, y=None) -> FeatureBuilder:
        """Learn vocabularies and segment statistics from ``S`` = ``extract`` of TRAIN rows only.

        ``S`` may be a Dask DataFrame (``train.distributed``): value counts are computed on its partitions;
        only the segment keys and ``GROUP_FEATURES`` columns are gathered here (exact quantiles).

        Label, ``row_id`` and ``datetime`` columns in ``S`` are ignored, as is any non-numeric column
        that is not a categorical feature. ``y`` is unused (sklearn signature).
        """
        self._check_frame(S)
        self.categorical_features_ = (
            list(stateless.CATEGORICAL_COLUMNS) if self.groups_["categoricals"] else []
        )
        self.encoder_ = CategoryEncoder(self.max_categories, self.min_category_count)
        self.encoder_.fit(S, self.categorical_features_)  # value counts (aggregated where S is)
        self.group_stats_ = None
        if self.groups_["group_stats"]:
            values = S
            if is_dask(S):  # exact quantiles need the values: gather these columns only
                keys = [c for cols in GROUP_KEYS.values() for c in cols]
                values = S[[c for c in dict.fromkeys(keys + GROUP_FEATURES) if c in S.columns]].compute()
            self.group_stats_ = GroupStats(GROUP_FEATURES, self.min_group_count, self.n_quantiles).fit(values)
        # everything numeric that extract() produced; labels / ids a caller kept alongside never enter X
        skip = set(self.categorical_features_) | _NOT_FEATURES
        self.numeric_features_ = [
            c for c in S.columns if c not in skip and pd.api.types.is_numeric_dtype(S[c].dtype)
        ]
        stats = self.group_stats_.feature_names_ if self.group_stats_ else []
        self.feature_names_ = self.numeric_features_ + stats + self.categorical_features_
        return self

    def transform(self, S: pd.DataFrame) -> pd.DataFrame:
        """Model matrix X (columns ``feature_names_``): float32, categoricals as fixed ``category`` dtype."""
        if not hasattr(self, "feature_names_"):
            raise ValueError("FeatureBuilder is not fitted: call fit(extract(train_table)) first")
        self._check_frame(S)
        if _small(len(S)) and self.numeric_features_ and _from_blocks is not None and S.columns.is_unique:
            return self._transform_small(S)
        missing = [c for c in self.numeric_features_ + self.categorical_features_ if c not in S.columns]
        if missing:
            raise ValueError(f"transform: columns {missing[:5]} (of {len(missing)}) missing from the frame")
        # one block per column (no copy of the float32 columns of S): see _frame
        data: dict[str, object] = {c: S[c].to_numpy(np.float32) for c in self.numeric_features_}
        if self.group_stats_ is not None:
            data.update({k: v.astype(np.float32) for k, v in self.group_stats_.transform(S).items()})
        data.update({c: self.encoder_.transform_column(c, S[c]) for c in self.categorical_features_})
        return pd.DataFrame(data, index=S.index, columns=self.feature_names_, copy=False)

    def _layout(self) -> dict:
        """Per fitted state: the input columns transform reads and the output column Index (built once;
        rebuilding an Index of ~300 names costs ~0.1 ms a call)."""
        key = (self.numeric_features_, self.categorical_features_, self.feature_names_)
        cached = self.__dict__.get("_layout_cache")
        if cached is None or any(a is not b for a, b in zip(cached[0], key, strict=True)):  # refitted
            needed = self.numeric_features_ + self.categorical_features_
            layout = {"needed": pd.Index(needed), "columns": pd.Index(self.feature_names_)}
            cached = self.__dict__["_layout_cache"] = (key, layout)
        return cached[1]

    def _transform_small(self, S: pd.DataFrame) -> pd.DataFrame:
        """transform for a few rows (serving): the same values, dtypes and columns as the per-column path,
        built as one float32 block (numeric features, then the segment statistics) plus one block per
        categorical column. ~300 column look-ups and one-column blocks cost several ms per call, the copy
        of a few rows nothing."""
        layout = self._layout()
        pos = S.columns.get_indexer(layout["needed"])
        if (pos < 0).any():
            missing = list(layout["needed"][pos < 0])
            raise ValueError(f"transform: columns {missing[:5]} (of {len(missing)}) missing from the frame")
        k = len(self.numeric_features_)
        stats = self.group_stats_.transform(S) if self.group_stats_ is not None else {}
        n_stats = len(stats)
        block = np.empty((k + n_stats, len(S)), dtype=np.float32)
        block[:k] = S.iloc[:, pos[:k]].to_numpy(np.float32).T
        for j, v in enumerate(stats.values()):  # ordered as group_stats_.feature_names_
            block[k + j] = v  # float64 -> float32: astype's rounding
        blocks = [(block, np.arange(k + n_stats))]
        if self.categorical_features_:
            raw = S.iloc[:, pos[k:]].to_numpy(dtype=object)
            for j, c in enumerate(self.categorical_features_):
                blocks.append((self.encoder_.transform_column(c, raw[:, j]), np.array([k + n_stats + j])))
        return _from_blocks(blocks, index=S.index, columns=layout["columns"])

    def __getstate__(self):
        state = dict(self.__dict__)
        for derived in ("_plan_cache", "_layout_cache"):  # rebuilt on first use (keeps pickles as before)
            state.pop(derived, None)
        return state

    def fit_transform(self, S: pd.DataFrame, y=None) -> pd.DataFrame:
        return self.fit(S, y).transform(S)

    @staticmethod
    def _check_frame(S: pd.DataFrame) -> None:
        if not isinstance(S, pd.DataFrame) and not is_dask(S):
            raise TypeError(f"expected the DataFrame returned by extract(), got {type(S).__name__}")


# below this many rows transform builds one float32 block (see transform); the model chain's predict
# switches to its one-thread path at the same size (ltv.models._lgbm.SMALL_BATCH_ROWS)
_SMALL_ROWS = 2000


def _small(n: int) -> bool:
    return 0 < n < _SMALL_ROWS


def _compact(v: np.ndarray) -> np.ndarray:
    return v if v.dtype == object else v.astype(np.float32, copy=False)


try:  # pandas >= 2.3: a frame straight from 2-D blocks and their column positions
    from pandas.api.internals import create_dataframe_from_blocks as _from_blocks
except ImportError:  # pragma: no cover - older pandas: the per-column path below
    _from_blocks = None


def _frame(cols: dict[str, np.ndarray], n: int) -> pd.DataFrame:
    """float32 numeric columns and object string columns.

    A big batch gets one block per column (``copy=False``): not consolidating avoids allocating (and
    page-faulting) one ~n x 300 block per chunk; consumers that need a 2-D array (LightGBM) build it
    once anyway. A small batch (serving) gets one float32 block and one object block: building ~300
    one-column blocks costs ~2.5 ms, more than the features themselves, and copying a few rows nothing.
    Same columns, order, dtypes and values either way. Explicit object dtype keeps None for null
    whatever pandas' string inference default is.
    """
    if _small(n) and _from_blocks is not None:
        names = list(cols)
        arrays = list(cols.values())
        is_obj = [v.dtype == object for v in arrays]
        num_pos = np.array([i for i, o in enumerate(is_obj) if not o], dtype=np.intp)
        obj_pos = np.array([i for i, o in enumerate(is_obj) if o], dtype=np.intp)
        blocks = []
        if len(num_pos):
            # row j of the block is column num_pos[j]; the float64 -> float32 cast is astype's
            blocks.append((np.array([arrays[i] for i in num_pos], dtype=np.float32), num_pos))
        if len(obj_pos):
            block = np.empty((len(obj_pos), n), dtype=object)
            for j, i in enumerate(obj_pos):
                block[j] = arrays[i]
            blocks.append((block, obj_pos))
        return _from_blocks(blocks, index=pd.RangeIndex(n), columns=pd.Index(names))
    data = {
        k: pd.Series(v, dtype=object, copy=False) if v.dtype == object else v.astype(np.float32, copy=False)
        for k, v in cols.items()
    }
    return pd.DataFrame(data, index=pd.RangeIndex(n), copy=False)
