"""One hour of synthetic rows: features, labels and oracle drawn from the hour's own seed."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from ltv.contract import LABEL_COLUMNS, ROW_ID, arrow_schema
from ltv.synthetic import activity as act
from ltv.synthetic import history as hist
from ltv.synthetic.arrays import uuid4_strings
from ltv.synthetic.flat import draw_flat, draw_latent
from ltv.synthetic.labels import DISTRIBUTION_COLUMNS, draw_labels, label_params, oracle

EXPECTATION_COLUMNS = ["p_buyer", "e_log1p", "e_revenue"]
ORACLE_COLUMNS = [*EXPECTATION_COLUMNS, *DISTRIBUTION_COLUMNS]
SPLIT_CODE = {"train": 1, "test": 2}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def draw_hour(
    seed: int, split: str, when: dt.datetime, n: int, tail: dict | None = None
) -> tuple[dict, dict, dict]:
    """One hour of ``n`` rows: (feature columns as Arrow arrays incl. row_id, labels, oracle), numpy for the last two.
    ``tail``: ``label_params``' whale_logit / whale_sigma (None: the default tail)."""
    hour_index = int((when - _EPOCH).total_seconds() // 3600)
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODE[split], hour_index]))
    lat = draw_latent(rng, n)
    cols, obs = draw_flat(rng, lat, when)
    day = obs["day"]
    adv = lat["adv"]
    for c, o in (
        hist.draw_purchases(rng, lat, day, adv),
        hist.draw_installs(rng, lat, day),
        hist.draw_whales(rng, lat),
        hist.draw_actions(rng, lat, day),
        hist.draw_user_actions(rng, lat, day),
        act.draw_sessions(rng, lat),
        act.draw_bundle_lists(rng, lat),
        act.draw_hists(rng, {**lat, "osv_code": obs["osv_code"]}, obs["osv_major"]),
        act.draw_hour_ratio(rng, lat, when.hour),
        act.draw_ads(rng, lat),
    ):
        cols.update(c)
        obs.update(o)
    cols.update(act.draw_first_request(rng, n, obs["first_null"], day))
    params = label_params(obs, **(tail or {}))
    labels = draw_labels(rng, params, obs)
    cols[ROW_ID] = uuid4_strings(rng, n)
    return cols, labels, oracle(params)


def hour_table(cols: dict, labels: dict, split: str) -> pa.Table:
    """Contract-typed table of one hour: 84 columns for 'train', 67 (no labels) otherwise."""
    schema = arrow_schema(split)
    arrays = []
    for field in schema:
        arr = pa.array(labels[field.name], from_pandas=True) if field.name in labels else cols[field.name]
        arrays.append(arr if arr.type == field.type else arr.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def oracle_table(row_id: pa.Array, orc: dict, labels: dict | None) -> pa.Table:
    data = {ROW_ID: row_id, **{k: pa.array(orc[k]) for k in ORACLE_COLUMNS}}
    if labels is not None:
        train = arrow_schema("train")
        data.update(
            {c: pa.array(labels[c], type=train.field(c).type, from_pandas=True) for c in LABEL_COLUMNS}
        )
    return pa.table(data)
