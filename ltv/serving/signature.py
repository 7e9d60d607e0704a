"""The served model's signature and input example, written by hand over the raw contract columns.

Why by hand: a signature inferred from an example makes every dict key it saw required, rejects NaN in
integer columns and rejects integer JSON lists. Why so permissive: MLflow enforces the input schema
*before* the model sees a row, with its own (long, row-less) messages, and it silently drops columns the
schema does not name. So the logged signature lets the rows through as they came and
:func:`ltv.serving.coerce.frame_to_table` does the validating, with messages that name the column, the row
and the expectation.

Checked on MLflow 3.17: with a named column schema, ``_enforce_named_col_schema`` keeps only the named
columns (an unknown column, e.g. a typo of ``country``, would be dropped with a server-side warning and the
row scored as if that feature were null). The served model rejects unknown columns instead, so by default
the logged signature declares no input schema; the hand-written column schema (:func:`input_schema`) is
saved in the model's metadata as documentation, and ``model_signature(named_inputs=True)`` logs it as the
enforced schema for a caller who prefers MLflow's column view over unknown-column errors.
"""

from __future__ import annotations

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

from ltv import contract as c

OUTPUT_COLUMN = c.TARGET  # iap_revenue_d7
PARTS_PARAM = "parts"

# Only string columns get a declared type (MLflow passes object / str columns through unchanged). Numbers
# are AnyType: "double" refuses an int64 column on a direct pyfunc predict ("can not safely convert int64
# to float64") and "long" refuses NaN. Nested columns are AnyType: JSON objects and [key, value] lists both
# reach the model untouched.
_KIND_TYPE = {c.STRING: "string"}


def input_schema() -> Schema:
    """The raw contract columns as an MLflow schema: every feature, ``datetime`` and ``row_id``, all optional."""
    cols = [ColSpec(_KIND_TYPE.get(c.KIND[n]) or AnyType(), n, required=False) for n in c.FEATURE_COLUMNS]
    cols.append(ColSpec("string", c.PARTITION_COLUMN, required=False))
    cols.append(ColSpec("string", c.ROW_ID, required=False))
    return Schema(cols)


def model_signature(named_inputs: bool = False) -> ModelSignature:
    """The signature logged with the pyfunc.

    Parameters
    ----------
    named_inputs : bool
        False (default): no enforced input schema, so unknown columns reach the model and are rejected
        with a 4xx; True: :func:`input_schema` is enforced by MLflow (unknown columns then dropped).

    Returns
    -------
    ModelSignature
        Output ``iap_revenue_d7`` (double per row); param ``parts`` (bool, default False) asks for the
        pipeline's parts as extra output columns.
    """
    return ModelSignature(
        inputs=input_schema() if named_inputs else None,
        outputs=Schema([ColSpec("double", OUTPUT_COLUMN)]),
        params=ParamSchema([ParamSpec(PARTS_PARAM, "boolean", False)]),
    )


_BUNDLE_A = "5f2c0e7a9b1d4c3e8f6a2b0d1c9e7f5a3b2c1d0e"
_BUNDLE_B = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"

_ROWS = [
    {  # an Android user with sessions, histograms and a past purchase: maps as JSON objects
        "advertiser_bundle": _BUNDLE_A,
        "advertiser_category": "games",
        "advertiser_subcategory": "puzzle",
        "carrier": "verizon",
        "country": "us",
        "region": "ca",
        "dev_make": "samsung",
        "dev_model": "sm-a156u",
        "dev_os": "android",
        "dev_osv": "14.0.0",
        "hour": "14",
        "release_date": "2023_october",
        "release_msrp": 199.0,
        "weekday": 3,
        "avg_act_days": 5.5,
        "avg_daily_sessions": {_BUNDLE_B: 2.5},
        "avg_duration": {_BUNDLE_B: 312.0},
        "bundles_ins": [_BUNDLE_B],
        "country_hist": {"us": 41},
        "cpm": {"b": 0.8, "i": 6.1, "r": 11.0},
        "dev_osv_hist": {"14.0.0": 41},
        "first_request_ts": 1758585600,
        "hour_ratio": {"14": 0.3, "20": 0.7},
        "iap_revenue_usd_bundle": {_BUNDLE_B: 9.99},
        "num_buys_bundle": {_BUNDLE_B: 1},
        "last_buy": 1759104000,
        "last_buy_ts_bundle": {_BUNDLE_B: 1759104000},
        "user_actions_bundles_action_count": {_BUNDLE_B: {"click": 3, "install": 1}},
        "user_bundles": [_BUNDLE_B, _BUNDLE_A],
        "weekend_ratio": 0.25,
        "weeks_since_first_seen": 3,
        "wifi_ratio": 0.8,
    },
    {  # an iOS user with little history: maps as [key, value] lists, many nulls and absent columns
        "advertiser_bundle": _BUNDLE_B,
        "advertiser_category": "application",
        "country": "jp",
        "dev_make": "apple",
        "dev_os": "ios",
        "dev_osv": "17.5.1",
        "hour": "02",
        "release_msrp": None,
        "weekday": 6,
        "cpm": [["b", 1.2], ["i", 9.0]],
        "ctr": [["b", 0.004]],
        "user_actions_bundles_action_last_timestamp": [[_BUNDLE_A, [["click", 1759017600]]]],
        "user_bundles": None,
        "weeks_since_first_seen": 0,
    },
]


def input_example(n: int = 2) -> pd.DataFrame:
    """``n`` raw contract rows as a request would carry them (maps as JSON objects and as pair lists).

    Columns a row does not mention are null; the frame carries every contract feature column.
    """
    rows = [dict(_ROWS[i % len(_ROWS)]) for i in range(n)]
    frame = pd.DataFrame(rows)
    for name in c.FEATURE_COLUMNS:
        if name not in frame.columns:
            frame[name] = None
    return frame[c.FEATURE_COLUMNS]
