"""The windows a run read, as MLflow datasets: the UI's Dataset column tells runs on different data apart.

Each split (train / valid / holdout) is logged with :func:`log_split_input` as an ``mlflow.data``
dataset that holds metadata only (the rows stay in the parquet export):

* name: the split and its hours (``train 2025-10-01-00..2025-10-04-23``);
* source: the subset folder's ``file://`` URI (type ``local``), with the window (start, end, row
  fraction, partition cap) in the source JSON;
* digest: the data fingerprint of the files the window read (``ltv.tasks.data.fingerprint``);
* schema: the contract columns (labels for a labelled window, features, ``datetime``, ``row_id``);
* profile: rows kept, rows read, files;
* context: ``training`` / ``validation`` / ``holdout`` (input tag ``mlflow.data.context``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types.schema import ColSpec, Schema

from ltv import contract
from ltv.data.schema import LoadReport
from ltv.data.window import Window

CONTEXT = {"train": "training", "valid": "validation", "holdout": "holdout", "test": "test"}
_DIGEST_MAX = 36  # MLflow's datasets.digest column


class WindowSource(DatasetSource):
    """A subset folder (``file://.../train``) and the window of it that a split reads (type ``local``,
    as MLflow's own local file sources, so the UI shows the URI)."""

    def __init__(self, uri: str, window: dict[str, Any] | None = None):
        self.uri = uri
        self.window = dict(window or {})

    @staticmethod
    def _get_source_type() -> str:
        return "local"

    def load(self, dst_path=None) -> str:
        """The subset folder: the rows stay in the export (a window is read with ``ltv.data.loader``)."""
        return self.uri

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # built explicitly, never guessed from a raw source

    @classmethod
    def _resolve(cls, raw_source: Any) -> WindowSource:
        raise NotImplementedError("WindowSource is built explicitly")

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, **self.window}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> WindowSource:
        source_dict = dict(source_dict)
        return cls(source_dict.pop("uri"), source_dict)


class WindowDataset(MetaDataset):
    """Metadata of one loaded window: source, digest, schema and a row-count profile (no rows)."""

    def __init__(self, source: WindowSource, name: str, digest: str, schema: Schema, profile: dict):
        self._profile = dict(profile)
        super().__init__(source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def window_schema(labelled: bool) -> Schema:
    """The contract columns of a window as an MLflow schema (labels first when ``labelled``)."""
    from ltv.serving.signature import input_schema

    labels = [ColSpec("double", name) for name in contract.LABEL_COLUMNS] if labelled else []
    return Schema(labels + list(input_schema().inputs))


def split_dataset(
    split: str, root: str | Path, window: Window, report: LoadReport, fingerprint: str, subset: str = "train"
) -> WindowDataset:
    """The :class:`WindowDataset` of ``split`` read from ``<root>/<subset>`` through ``window``."""
    start, end = window.bounds()
    hours = f"{(start or 'first')[:13]}..{(end or 'last')[:13]}"
    source = WindowSource(
        (Path(root).expanduser().resolve() / subset).as_uri(),
        {
            "window_start": start,
            "window_end": end,
            "fraction": float(window.fraction),
            "max_partitions": window.max_partitions,
        },
    )
    profile = {"num_rows": report.rows_kept, "rows_read": report.rows_read, "num_files": len(report.files)}
    return WindowDataset(
        source,
        name=f"{split} {hours}",
        digest=str(fingerprint)[:_DIGEST_MAX],
        schema=window_schema(labelled=subset == "train"),
        profile=profile,
    )


def log_split_input(
    split: str, root: str | Path, window: Window, report: LoadReport, fingerprint: str, subset: str = "train"
) -> WindowDataset:
    """Log the window ``split`` read as an input of the active run (context from :data:`CONTEXT`).

    Parameters
    ----------
    split : str
        'train', 'valid', 'holdout' (or 'test'); sets the name and the context tag.
    root : path
        The data root (``<root>/<subset>/datetime=.../*.parquet``).
    window : ltv.data.window.Window
        The split's window (hours, row fraction, partition cap).
    report : ltv.data.schema.LoadReport
        What the load read and kept (rows, files).
    fingerprint : str
        Digest of the window's files, e.g. ``ltv.tasks.data.fingerprint(report.files, root)``.
    subset : str
        The subset folder ('train' holds the labels).

    Returns
    -------
    WindowDataset
        What was logged.
    """
    dataset = split_dataset(split, root, window, report, fingerprint, subset)
    mlflow.log_input(dataset, context=CONTEXT.get(split, split))
    return dataset
