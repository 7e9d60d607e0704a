"""A deterministic stand-in for the fitted pipeline and seeded contract rows (serving tests, bench/serve.py).

It reads one column of each contract kind from the Arrow table (a string, a number, a map, a map of maps,
a list), so a test that compares served predictions with ``predict`` on the same rows checks that every
kind was coerced end to end. It is picklable (joblib) like the real ``ltv.pipeline.LTVPipeline``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ltv import contract as c


def _value_sums(arr: pa.Array) -> np.ndarray:
    """Per map cell, the sum of its values (null / empty -> 0); inner maps count as their own sums."""
    # Arrow compute has few map kernels: view the map as the list<struct<key, value>> it is
    as_list = pa.list_(
        pa.struct([pa.field("key", pa.string(), nullable=False), ("value", arr.type.item_type)])
    )
    arr = arr.cast(as_list)
    entries = pc.list_flatten(arr)
    values = entries.field("value")
    if pa.types.is_map(values.type):
        v = _value_sums(values)
    else:
        v = pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(np.float64)
    parents = pc.list_parent_indices(arr).to_numpy()
    return np.bincount(parents, weights=v, minlength=len(arr)).astype(np.float64)


def _map_value_sum(col: pa.ChunkedArray) -> np.ndarray:
    return _value_sums(col.combine_chunks())


def _list_length(col: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(col), 0).to_numpy().astype(np.float64)


class ConstantishPipeline:
    """Deterministic pseudo-model: a non-negative number from a scalar, a string, maps and a list.

    ``predict`` = 0.1 * weekday + 0.01 * int(hour) + 0.5 * [country == 'us'] + 0.01 * sum(cpm values)
    + 0.001 * sum(inner values of user_actions_bundles_action_count) + 0.25 * len(user_bundles)
    + 1e-12 * sum(first_request_ts_bundle values), clipped at 0.

    Parameters
    ----------
    scale : float
        Multiplies the prediction (lets tests tell two registered versions apart).
    """

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def predict_parts(self, table: pa.Table) -> pd.DataFrame:
        """The additive parts of :meth:`predict`, one column per contract kind."""
        weekday = table.column("weekday").to_numpy().astype(np.float64)
        hour = pc.cast(table.column("hour"), pa.int64()).to_numpy().astype(np.float64)
        us = pc.fill_null(pc.equal(table.column("country"), "us"), False).to_numpy(zero_copy_only=False)
        return pd.DataFrame(
            {
                "scalar": self.scale * (0.1 * weekday + 0.01 * hour + 0.5 * us),
                "map": self.scale
                * (
                    0.01 * _map_value_sum(table.column("cpm"))
                    + 0.001 * _map_value_sum(table.column("user_actions_bundles_action_count"))
                    + 1e-12 * _map_value_sum(table.column("first_request_ts_bundle"))
                ),
                "list": self.scale * 0.25 * _list_length(table.column("user_bundles")),
            }
        )

    def predict(self, table: pa.Table) -> np.ndarray:
        """``iap_revenue_d7`` per row: finite and >= 0."""
        missing = [
            n for n in ("weekday", "hour", "country", "cpm", "user_bundles") if n not in table.column_names
        ]
        if missing:
            raise ValueError(f"ConstantishPipeline: table lacks contract column(s) {missing}")
        total = self.predict_parts(table).sum(axis=1).to_numpy()
        return np.clip(np.nan_to_num(total, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)


# null shares of nested columns in the real data (docs/data_contract.md), by name prefix; others 10%
_NULL_SHARE = {
    "advertiser_actions_": 0.988,
    "rev_by_adv": 0.983,
    "last_buy_ts_": 0.982,
    "whale_users_bundle_": 0.969,
    "ctr": 0.964,
    "iap_revenue_usd_": 0.957,
    "num_buys_": 0.957,
    "last_install_ts_": 0.853,
    "avg_d": 0.76,
    "user_actions_bundles_": 0.641,
    "bcat": 0.475,
    "hour_ratio": 0.441,
}


def null_share(name: str) -> float:
    """Share of null cells of nested column ``name`` in the real data (approximately)."""
    if name.endswith("_hist"):
        return 0.435
    return next((v for k, v in _NULL_SHARE.items() if name.startswith(k)), 0.1)


def contract_rows(n: int, seed: int = 0) -> pa.Table:
    """``n`` seeded contract rows (test split: features + row_id) with every nested kind populated."""
    rng = np.random.default_rng(seed)
    cols = {name: pa.nulls(n, c.CANONICAL_TYPE[name]) for name in c.TEST_COLUMNS}
    bundles = [f"{i:040x}" for i in range(1, 6)]

    def a_map(typ, keys, hi, null_share=0.3):
        null = rng.random(n) < null_share
        sizes = rng.integers(0, len(keys) + 1, n)
        starts = rng.integers(0, len(keys), n)  # each cell: a rotation of the key list, truncated
        vals = rng.uniform(0, hi, (n, len(keys)))
        if pa.types.is_integer(typ.item_type):
            vals = np.floor(vals).astype(np.int64)
        ring = list(keys) * 2
        cells = [
            None
            if null[i]
            else list(zip(ring[starts[i] : starts[i] + sizes[i]], vals[i, : sizes[i]].tolist(), strict=True))
            for i in range(n)
        ]
        return pa.array(cells, type=typ)

    for name in c.MAP_COLUMNS:
        keys = ["b", "i", "r"] if name.startswith(("cpm", "ctr")) else bundles
        hi = 1.7e9 if "ts" in name else 10.0
        cols[name] = a_map(c.CANONICAL_TYPE[name], keys, hi, null_share(name))
    for name in c.MAP_OF_MAP_COLUMNS:
        inner = [a_map(c.CANONICAL_TYPE[name].item_type, ["click", "install"], 20, 0.0) for _ in bundles[:2]]
        cells = [
            None
            if rng.random() < null_share(name)
            else [(b, inner[j][i].as_py()) for j, b in enumerate(bundles[:2])]
            for i in range(n)
        ]
        cols[name] = pa.array(cells, type=c.CANONICAL_TYPE[name])
    for name in c.LIST_COLUMNS:
        cols[name] = pa.array(
            [None if rng.random() < 0.2 else list(rng.choice(bundles, rng.integers(0, 4))) for _ in range(n)],
            type=pa.list_(pa.string()),
        )
    cols["advertiser_bundle"] = pa.array(rng.choice(bundles, n))
    cols["country"] = pa.array(rng.choice(["us", "in", "jp", None], n))
    cols["dev_os"] = pa.array(rng.choice(["android", "ios"], n))
    cols["hour"] = pa.array([f"{h:02d}" for h in rng.integers(0, 24, n)])
    cols["weekday"] = pa.array(rng.integers(1, 8, n), type=pa.int64())
    cols["release_msrp"] = pa.array(
        np.where(rng.random(n) < 0.1, np.nan, rng.uniform(100, 1200, n)), from_pandas=True
    )
    cols["row_id"] = pa.array([f"row-{seed}-{i}" for i in range(n)])
    return pa.table(cols, schema=c.arrow_schema("test"))


class CompileRecordingPipeline(ConstantishPipeline):
    """:class:`ConstantishPipeline` whose ``compile_trees`` appends a line to the file ``marker`` (tests
    see when a load compiled, across the model's own copy of the package)."""

    def __init__(self, scale: float = 1.0, marker: str = ""):
        super().__init__(scale)
        self.marker = marker

    def compile_trees(self, directory=None) -> dict:
        with open(self.marker, "a") as fh:
            fh.write("compiled\n")
        return {"boosters": 0}
