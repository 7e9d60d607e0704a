"""Whether a frame is a Dask collection (a split left on the cluster) or in memory.

Checked through Dask's collection protocol, without importing dask: a served model never needs it.
"""

from __future__ import annotations


def is_dask(obj) -> bool:
    """True for a Dask collection (DataFrame, Series, Array), False for pandas / numpy / Arrow."""
    return callable(getattr(obj, "__dask_graph__", None))
