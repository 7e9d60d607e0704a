"""Blocks: a window's model matrix as per-file float32 blocks, the way training data reaches LightGBM.

A window of the real export (13.7M train rows, ~300 features) is ~16 GB as float32 and several times
that as a pandas frame; LightGBM's binned Dataset of it is ~1 byte per feature. So the training loader
encodes each file where it is read into one float32 ``(rows, columns)`` block (categories as codes of
the fitted vocabulary, ``FeatureBuilder.transform_table``), writes it to a ``.npy`` file and keeps only
labels and request times; :func:`dataset` then builds the binned Dataset from the blocks through
``lightgbm.Sequence`` batches, and predictions stream block by block (:meth:`Blocks.frames`). Small
subsets (the ~3% buyers the regressors and whale model train on) become a pandas frame
(:meth:`Blocks.frame`).

:func:`dataset` takes a pandas model matrix too (the buyers' frame, tests): the float matrix LightGBM's own
pandas conversion builds, in one block.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator

import lightgbm as lgb
import numpy as np
import pandas as pd
from pandas.api.internals import create_dataframe_from_blocks

from ltv.frames import FloatMatrix

log = logging.getLogger(__name__)

BATCH_BYTES = 32 << 20  # float32 a Sequence hands LightGBM at a time (~28k rows at 300 columns)


@dataclasses.dataclass(frozen=True)
class Part:
    """One block: an ``(n, columns)`` float32 array in memory or a ``.npy`` file of one, and the rows of it
    that belong to the window (``rows``: sorted positions; None for all)."""

    source: np.ndarray | str
    n: int
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n if self.rows is None else len(self.rows)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The part's rows ``start:stop`` (of its own rows) as a C-contiguous float32 array."""
        stop = len(self) if stop is None else stop
        if self.rows is None:
            lo, hi, pick = start, stop, None
        else:
            pos = self.rows[start:stop]
            lo, hi = (int(pos[0]), int(pos[-1]) + 1) if len(pos) else (0, 0)
            pick = pos - lo
        if isinstance(self.source, np.ndarray):
            values = self.source[lo:hi]
        else:  # mapped only while read: touched pages do not stay in the process
            mapped = np.load(self.source, mmap_mode="r")
            values = np.array(mapped[lo:hi])
            del mapped
        return np.ascontiguousarray(values if pick is None else values[pick])

    def take(self, positions: np.ndarray) -> Part:
        """The part cut to ``positions`` of its own rows."""
        base = np.arange(self.n) if self.rows is None else self.rows
        return dataclasses.replace(self, rows=base[np.asarray(positions, dtype=np.int64)])


class _Binning:
    """Rows handed to LightGBM for one Dataset, logged at least every ``every_s`` seconds with rows/s."""

    def __init__(self, total: int, every_s: float = 30.0):
        self.total, self.done, self.every_s = total, 0, every_s
        self.t0 = self.last = time.perf_counter()

    def add(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            log.info("binning a LightGBM Dataset: %s / %s rows (%.0f rows/s)", f"{self.done:,}",
                     f"{self.total:,}", self.done / max(now - self.t0, 1e-9))  # fmt: skip


class _PartRows(lgb.Sequence):
    """A part as the rows LightGBM samples (bin boundaries) and pushes (binning) from."""

    def __init__(self, part: Part, n_columns: int, progress: _Binning | None = None):
        self.part = part
        self.n_columns = int(n_columns)
        self.batch_size = max(1024, BATCH_BYTES // (4 * max(self.n_columns, 1)))
        self.progress = progress
        self._file = None  # (open file, offset of row 0) while LightGBM samples single rows

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            self._close()
            start, stop, _ = idx.indices(len(self))
            if self.progress is not None:
                self.progress.add(stop - start)
            return self.part.read(start, stop)
        # a single row: LightGBM's bin sampling, which wants float64 values
        if isinstance(self.part.source, np.ndarray):
            return self.part.read(int(idx), int(idx) + 1)[0].astype(np.float64)
        # read, not mapped: a mapping's touched pages (and their read-ahead) would count in this process's
        # memory, up to the whole file over a sample of rows spread across it
        if self._file is None:
            fh = open(self.part.source, "rb")  # noqa: SIM115 - closed at the first batch (_close)
            version = np.lib.format.read_magic(fh)
            fmt = np.lib.format
            (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(fh)
            self._file = (fh, fh.tell())
        fh, offset = self._file
        row = int(idx) if self.part.rows is None else int(self.part.rows[idx])
        width = 4 * self.n_columns
        raw = os.pread(fh.fileno(), width, offset + row * width)
        return np.frombuffer(raw, dtype="<f4").astype(np.float64)

    def _close(self) -> None:
        if self._file is not None:
            self._file[0].close()
            self._file = None

    def __del__(self):
        self._close()


@dataclasses.dataclass(frozen=True)
class Blocks:
    """Rows of a window as blocks of the model matrix: ``columns`` in order, the last ``len(categories)``
    of them categorical (codes under ``categories``, NaN for missing), as ``FeatureBuilder.transform``
    lays out X. ``client``: the cluster whose workers train on these rows (:meth:`on`), or None (this
    process)."""

    columns: list[str]
    categories: list[list]
    parts: list[Part]
    client: object = dataclasses.field(default=None, repr=False, compare=False)  # train.distributed

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def on(self, client) -> Blocks:
        """These rows, trained on by ``client``'s workers (a ``distributed.Client``; each worker reads its
        share of the block files, which must be at the same path there: ``train.block_dir``)."""
        return dataclasses.replace(self, client=client)

    @property
    def categorical(self) -> list[str]:
        return self.columns[len(self.columns) - len(self.categories) :]

    def take(self, positions) -> Blocks:
        """The rows at sorted ``positions`` (of the window's rows, in order)."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) > 1 and (np.diff(positions) < 0).any():
            raise ValueError("Blocks.take needs sorted positions (repeats allowed)")
        bounds = np.cumsum([0] + [len(p) for p in self.parts])
        cut = np.searchsorted(positions, bounds)
        parts = [
            p.take(positions[cut[i] : cut[i + 1]] - bounds[i])
            for i, p in enumerate(self.parts)
            if cut[i + 1] > cut[i]
        ]
        return dataclasses.replace(self, parts=parts)

    def concat(self, other: Blocks) -> Blocks:
        """These rows, then ``other``'s (same columns)."""
        if list(other.columns) != list(self.columns):
            raise ValueError("Blocks.concat: the blocks have different columns")
        return dataclasses.replace(self, parts=[*self.parts, *other.parts])

    def matrices(self) -> Iterator[FloatMatrix]:
        """Each part's rows as a :class:`FloatMatrix` (what the boosters read)."""
        for part in self.parts:
            yield FloatMatrix(self.columns, self.categories, np.asfortranarray(part.read()))

    def frames(self) -> Iterator[tuple[pd.DataFrame, FloatMatrix]]:
        """Each part's rows as (model matrix X, its FloatMatrix): what prediction streams over (a progress
        line with rows/s at least every 30 s)."""
        t0 = last = time.perf_counter()
        done, total = 0, len(self)
        for matrix in self.matrices():
            yield to_frame(matrix), matrix
            done += len(matrix.values)
            if time.perf_counter() - last >= 30:
                last = time.perf_counter()
                log.info("predicting blocks: %s / %s rows (%.0f rows/s)", f"{done:,}", f"{total:,}",
                         done / max(last - t0, 1e-9))  # fmt: skip

    def frame(self) -> pd.DataFrame:
        """Every row as one model matrix X (for small subsets: the buyers)."""
        values = (
            np.concatenate([p.read() for p in self.parts]) if self.parts else np.empty((0, len(self.columns)))
        )
        return to_frame(FloatMatrix(self.columns, self.categories, values.astype(np.float32, copy=False)))


def compile_for(X, pairs) -> None:
    """Compile the ``(booster, num_iteration)`` pairs to native code before they predict ``X`` when X is
    Blocks (a window: ~5x the rows/s of LightGBM's predict, for ~1 s per hundred trees once, cached per
    model); a frame is predicted as it is. The predictions are the same (:mod:`ltv.models.native_trees`)."""
    if isinstance(X, Blocks):
        from ltv.models import native_trees

        native_trees.compile_boosters(list(pairs))


def stream(fn, X, **kwargs) -> np.ndarray:
    """``fn(X)`` for a frame; for :class:`Blocks`, ``fn`` of each block's frame (with ``matrix=`` its
    FloatMatrix where ``fn`` takes one) concatenated: predictions without the whole matrix in memory."""
    if not isinstance(X, Blocks):
        return fn(X, **kwargs)
    return np.concatenate([fn(frame, **kwargs) for frame, _ in X.frames()])


def to_frame(matrix: FloatMatrix) -> pd.DataFrame:
    """X from its float32 matrix: numeric columns as one float32 block (a view), categoricals as
    ``category`` columns of the matrix's categories (code NaN -> missing)."""
    values, n_cat = matrix.values, len(matrix.categories)
    k = len(matrix.columns) - n_cat
    blocks = [(np.asarray(values[:, :k]).T, np.arange(k))] if k else []
    for j, cats in enumerate(matrix.categories):
        raw = values[:, k + j]
        codes = np.where(np.isnan(raw), -1, raw).astype(np.int32)
        dtype = pd.CategoricalDtype(pd.Index(cats, dtype=object), ordered=False)
        blocks.append((pd.Categorical.from_codes(codes, dtype=dtype), np.array([k + j])))
    columns = pd.Index(matrix.columns, dtype=object)
    return create_dataframe_from_blocks(blocks, index=pd.RangeIndex(len(values)), columns=columns)


def dataset(X, label=None, weight=None, reference: lgb.Dataset | None = None, params: dict | None = None,
            init_score=None) -> lgb.Dataset:  # fmt: skip
    """LightGBM's binned Dataset of X: a :class:`Blocks` (built through ``lightgbm.Sequence`` batches, no
    whole matrix in memory) or a pandas model matrix (one block). ``reference``: the train Dataset whose
    bin mappers a validation set uses."""
    if isinstance(X, Blocks):
        progress = _Binning(len(X))
        names, categorical = list(X.columns), X.categorical
        data = [_PartRows(p, len(names), progress) for p in X.parts]
    elif isinstance(X, np.ndarray):  # a plain matrix (no categoricals)
        data, names, categorical = X, "auto", []
    else:  # a pandas model matrix: the float matrix LightGBM's pandas path builds (same dtype, same codes)
        from ltv.models.lgbm_predict import pandas_matrix

        names = [str(c) for c in X.columns]
        categorical = [c for c in names if isinstance(X[c].dtype, pd.CategoricalDtype)]
        data = pandas_matrix(X, names, None)
    return lgb.Dataset(
        data, label=label, weight=weight, init_score=init_score, reference=reference,
        feature_name=names, categorical_feature=categorical,
        params=params, free_raw_data=True,
    )  # fmt: skip
