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
from itertools import chain

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.internals import create_dataframe_from_blocks  # pandas >= 2.3

from ltv import contract
from ltv.features import registry, stateless
from ltv.features.fitted import GROUP_FEATURES, GROUP_KEYS, CategoryEncoder, GroupStats
from ltv.frames import FloatMatrix, FloatRows, column_run, feature_frame

log = logging.getLogger(__name__)

_FLAGGED_KINDS = {contract.NUMBER, contract.MAP, contract.MAP_OF_MAP, contract.LIST}
_NEVER_NULL = {"hour", "weekday"}  # 0% null in the contract; a flag would be constant
_NOT_FEATURES = set(contract.LABEL_COLUMNS) | {contract.ROW_ID, contract.PARTITION_COLUMN}


_DERIVED = ("_plan", "_width", "_needed", "_output", "_n_stats", "_categories")  # not pickled


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
        self._derive_plan()

    def _derive_plan(self) -> None:
        """(flagged raw columns, extract functions of the enabled groups), resolved once per instance
        (at construction and unpickling): the registry look-ups cost ~0.1 ms, which a one-row request
        would pay every time."""
        fns = [registry.GROUPS[g].extract for g in self._enabled()]
        self._plan = (self.flagged_columns(), [fn for fn in fns if fn is not None])
        self._width = 0  # numeric columns of the last extraction: the next one allocates its block once

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
        return self._extract(table, spare=0)[0]

    def _extract(self, table: pa.Table, spare: int) -> tuple[pd.DataFrame, np.ndarray]:
        """``extract``, and the float32 block its numbers are the first rows of, followed by ``spare``
        more rows (unset) for the caller: :meth:`transform_table` writes the segment statistics there."""
        if not isinstance(table, pa.Table):
            raise TypeError(f"extract expects a pyarrow.Table, got {type(table).__name__}")
        t0 = time.perf_counter()
        ctx = stateless.ExtractContext(table, self.reference_time, self.top_k)
        n = table.num_rows
        flagged, extractors = self._plan
        # flags first (from the raw cells), then each group, computed as it is consumed: its numbers go
        # straight into their rows of the one float32 block (~300 float64 columns held to the end would
        # double a big batch's peak memory, and stacking per-group blocks would copy them all once more);
        # strings stay object arrays
        groups = chain([stateless.missing_flags(ctx, flagged)], (fn(ctx) for fn in extractors))
        numbers = FloatRows(self._width + spare, n)
        names: list[str] = []
        text: dict[str, np.ndarray] = {}
        for cols in groups:
            numeric = [k for k, v in cols.items() if v.dtype != object]
            numbers.extend([cols[k] for k in numeric])
            names += numeric
            text.update({k: v for k, v in cols.items() if v.dtype == object})
        if self.groups_["group_stats"]:
            keys = sorted({c for keys in GROUP_KEYS.values() for c in keys} - set(names) - text.keys())
            text.update(zip(keys, stateless.strings(*map(ctx.column, keys)), strict=True))
        self._width = len(names)  # the next call allocates its block once
        block = numbers.finish(spare)
        out = feature_frame(block[: len(names)], names, text, n)
        secs = time.perf_counter() - t0
        log.debug(
            "extracted %d rows x %d columns in %.2fs (%.0f rows/s)",
            len(out),
            out.shape[1],
            secs,
            len(out) / max(secs, 1e-9),
        )
        return out, block

    def fit(self, S: pd.DataFrame, y=None) -> FeatureBuilder:
        """Learn vocabularies and segment statistics from ``S`` = ``extract`` of TRAIN rows only.

        Label, ``row_id`` and ``datetime`` columns in ``S`` are ignored, as is any non-numeric column
        that is not a categorical feature. ``y`` is unused (sklearn signature).
        """
        return self.fit_from(S, S)

    def fit_columns(self) -> list[str]:
        """The extracted columns the fit reads (categorical features, segment keys, segment features):
        a window too big for one frame is fitted from these alone (:meth:`fit_from`)."""
        keys = (
            [c for cols in GROUP_KEYS.values() for c in cols] + GROUP_FEATURES
            if self.groups_["group_stats"]
            else []
        )
        cats = list(stateless.CATEGORICAL_COLUMNS) if self.groups_["categoricals"] else []
        return list(dict.fromkeys(cats + keys))

    def fit_from(self, values: pd.DataFrame, schema: pd.DataFrame) -> FeatureBuilder:
        """:meth:`fit` from ``values``, the train rows' :meth:`fit_columns` (strings as object or
        ``category``; any others are ignored), and ``schema``, a frame with ``extract``'s columns and
        dtypes (rows unused): the model matrix's numeric features are its numeric columns."""
        self._check_frame(values)
        self.categorical_features_ = (
            list(stateless.CATEGORICAL_COLUMNS) if self.groups_["categoricals"] else []
        )
        self.encoder_ = CategoryEncoder(self.max_categories, self.min_category_count)
        self.encoder_.fit(values, self.categorical_features_)
        self.group_stats_ = None
        if self.groups_["group_stats"]:
            self.group_stats_ = GroupStats(GROUP_FEATURES, self.min_group_count, self.n_quantiles).fit(values)
        # everything numeric that extract() produced; labels / ids a caller kept alongside never enter X
        skip = set(self.categorical_features_) | _NOT_FEATURES
        self.numeric_features_ = [
            c for c in schema.columns if c not in skip and pd.api.types.is_numeric_dtype(schema[c].dtype)
        ]
        stats = self.group_stats_.feature_names_ if self.group_stats_ else []
        self.feature_names_ = self.numeric_features_ + stats + self.categorical_features_
        self._derive()
        return self

    def transform(self, S: pd.DataFrame) -> pd.DataFrame:
        """Model matrix X (columns ``feature_names_``): float32, categoricals as fixed ``category`` dtype.

        One float32 block (numeric features, then the segment statistics) and one block per categorical
        column, for one row or a million: ~300 column look-ups and one-column blocks would cost several
        ms per call, which a one-row request pays in full.
        """
        pos = self._positions(S)
        k = len(self.numeric_features_)
        block = np.empty((k + self._n_stats, len(S)), dtype=np.float32)
        block[:k] = column_run(S, pos[:k]).to_numpy(np.float32).T
        return self._encode(S, pos, block)

    def transform_table(self, table: pa.Table) -> tuple[pd.DataFrame, FloatMatrix | None]:
        """``transform(extract(table))`` (same columns, dtypes and values), and X as one float32 matrix with
        the categorical codes (:class:`ltv.frames.FloatMatrix`), the numbers written once: extraction
        leaves rows for the segment statistics and the codes after its numbers; X's float block and the
        matrix are that block. (Separately, transform copies a frame's numbers into a new block and the
        model copies them into its matrix: at 200k rows x 300 columns each copy costs ~0.05-0.5 s, mostly
        first writes to fresh memory.) The matrix is None where S's numbers are not the fitted ones in
        order (X comes from ``transform`` then)."""
        self._check_fitted()
        S, block = self._extract(table, spare=self._n_stats + len(self.categorical_features_))
        pos = self._positions(S)
        k = len(self.numeric_features_)
        if len(block) != len(self.feature_names_) or (pos[:k] != np.arange(k)).any():
            return self.transform(S), None
        X = self._encode(S, pos, block)
        return X, FloatMatrix(self.feature_names_, self._categories, block.T)

    def _positions(self, S: pd.DataFrame) -> np.ndarray:
        """Positions in ``S`` of the numeric features, then the categorical ones; raises if any is missing."""
        self._check_fitted()
        self._check_frame(S)
        pos = S.columns.get_indexer(self._needed)
        if (pos < 0).any():
            missing = list(self._needed[pos < 0])
            raise ValueError(f"transform: columns {missing[:5]} (of {len(missing)}) missing from the frame")
        return pos

    def _encode(self, S: pd.DataFrame, pos: np.ndarray, block: np.ndarray) -> pd.DataFrame:
        """X from ``block``, whose first rows hold S's numeric features: fills the next ones with the
        segment statistics, encodes the categorical columns, and writes their codes (NaN for missing) to
        the rows after those where the block has them (:meth:`transform_table`)."""
        k = len(self.numeric_features_)
        stats = self.group_stats_.transform(S) if self.group_stats_ is not None else {}
        for j, v in enumerate(stats.values()):  # ordered as group_stats_.feature_names_
            block[k + j] = v  # float64 -> float32: astype's rounding
        numbers = block[: k + len(stats)]
        blocks = [(numbers, np.arange(len(numbers)))]
        raw = column_run(S, pos[k:]).to_numpy(dtype=object)
        for j, c in enumerate(self.categorical_features_):
            encoded = self.encoder_.transform_column(c, raw[:, j])
            blocks.append((encoded, np.array([len(numbers) + j])))
            if len(block) > len(numbers):
                block[len(numbers) + j] = np.where(encoded.codes < 0, np.nan, encoded.codes)
        return create_dataframe_from_blocks(blocks, index=S.index, columns=self._output)

    def check_fitted(self) -> None:
        """Raise a ValueError unless fitted."""
        self._check_fitted()

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise ValueError("FeatureBuilder is not fitted: call fit(extract(train_table)) first")

    def _derive(self) -> None:
        """Index objects transform reads with, built once per fitted state (at fit and unpickling):
        rebuilding an Index of ~300 names costs ~0.1 ms a call. Column labels are object Indexes, as
        everywhere in the feature frames: pandas 3's ``str`` Index compares and looks up ~10x slower."""
        self._needed = pd.Index(self.numeric_features_ + self.categorical_features_, dtype=object)
        self._output = pd.Index(self.feature_names_, dtype=object)
        self._n_stats = len(self.group_stats_.feature_names_) if self.group_stats_ is not None else 0
        self._categories = [list(self.encoder_.categories(c)) for c in self.categorical_features_]

    def __getstate__(self):
        state = dict(self.__dict__)
        for derived in _DERIVED:  # rebuilt on unpickling
            state.pop(derived, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._derive_plan()
        if "feature_names_" in state:
            self._derive()

    def fit_transform(self, S: pd.DataFrame, y=None) -> pd.DataFrame:
        return self.fit(S, y).transform(S)

    @staticmethod
    def _check_frame(S: pd.DataFrame) -> None:
        if not isinstance(S, pd.DataFrame):
            raise TypeError(f"expected the DataFrame returned by extract(), got {type(S).__name__}")
