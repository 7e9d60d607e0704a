"""The raw data contract (docs/data_contract.md): column names, order, kinds and canonical Arrow types.

Everything that reads, writes or validates raw contract rows takes its column lists from here, so there
is one home for the schema. A column's *kind* is what a reader may rely on; the canonical Arrow type is
what the project's generator writes. A real export may use another type of the same kind (int64 instead
of double inside a map, int32 instead of int64 for a label), and must load unchanged.
"""

from __future__ import annotations

import pyarrow as pa

PARTITION_COLUMN = "datetime"  # hive folder name only (datetime=YYYY-MM-DD-HH-00), never inside files
PARTITION_FORMAT = "%Y-%m-%d-%H-00"
ROW_ID = "row_id"
TARGET = "iap_revenue_d7"

# kinds
STRING = "string"
NUMBER = "number"
MAP = "map"  # map<string, number>
MAP_OF_MAP = "map_of_map"  # map<string, map<string, number>>
LIST = "list"  # list<string>

_S = pa.string()
_F = pa.float64()
_I64 = pa.int64()
_I32 = pa.int32()


def _map(value: pa.DataType = _F) -> pa.DataType:
    return pa.map_(pa.string(), value)


def _map_of_map(value: pa.DataType = _F) -> pa.DataType:
    return pa.map_(pa.string(), pa.map_(pa.string(), value))


_LIST = pa.list_(pa.string())

# (name, kind, canonical arrow type), in file order
LABEL_SPEC: list[tuple[str, str, pa.DataType]] = [
    ("buyer_d1", NUMBER, _I32),
    ("buyer_d7", NUMBER, _I32),
    ("buyer_d14", NUMBER, _I32),
    ("buyer_d28", NUMBER, _I32),
    ("buy_d7", NUMBER, _I64),
    ("buy_d14", NUMBER, _I64),
    ("buy_d28", NUMBER, _I64),
    ("iap_revenue_d7", NUMBER, _F),
    ("iap_revenue_d14", NUMBER, _F),
    ("iap_revenue_d28", NUMBER, _F),
    ("registration", NUMBER, _F),
    ("retention_d1_to_d7", NUMBER, _F),
    ("retention_d3_to_d7", NUMBER, _F),
    ("retention_d7_to_d14", NUMBER, _F),
    ("retention_d1", NUMBER, _F),
    ("retention_d3", NUMBER, _F),
    ("retentiond7", NUMBER, _F),
]

FEATURE_SPEC: list[tuple[str, str, pa.DataType]] = [
    ("advertiser_bundle", STRING, _S),
    ("advertiser_category", STRING, _S),
    ("advertiser_subcategory", STRING, _S),
    ("advertiser_bottom_taxonomy_level", STRING, _S),
    ("carrier", STRING, _S),
    ("country", STRING, _S),
    ("region", STRING, _S),
    ("dev_make", STRING, _S),
    ("dev_model", STRING, _S),
    ("dev_os", STRING, _S),
    ("dev_osv", STRING, _S),
    ("hour", STRING, _S),
    ("release_date", STRING, _S),
    ("release_msrp", NUMBER, _F),
    ("weekday", NUMBER, _I64),
    ("avg_act_days", NUMBER, _F),
    ("avg_daily_sessions", MAP, _map()),
    ("avg_days_ins", NUMBER, _F),
    ("avg_duration", MAP, _map()),
    ("bcat", MAP, _map()),
    ("bcat_bottom_taxonomy", MAP, _map()),
    ("bundles_cat", MAP, _map()),
    ("bundles_cat_bottom_taxonomy", MAP, _map()),
    ("bundles_ins", LIST, _LIST),
    ("city_hist", MAP, _map(_I64)),
    ("country_hist", MAP, _map(_I64)),
    ("cpm", MAP, _map()),
    ("cpm_pct_rk", MAP, _map()),
    ("ctr", MAP, _map()),
    ("ctr_pct_rk", MAP, _map()),
    ("dev_language_hist", MAP, _map(_I64)),
    ("dev_osv_hist", MAP, _map(_I64)),
    ("first_request_ts", NUMBER, _F),
    ("first_request_ts_bundle", MAP, _map(_I64)),
    ("first_request_ts_category_bottom_taxonomy", MAP, _map(_I64)),
    ("hour_ratio", MAP, _map()),
    ("iap_revenue_usd_bundle", MAP, _map()),
    ("iap_revenue_usd_category", MAP, _map()),
    ("iap_revenue_usd_category_bottom_taxonomy", MAP, _map()),
    ("last_buy", NUMBER, _F),
    ("last_buy_ts_bundle", MAP, _map(_I64)),
    ("last_buy_ts_category", MAP, _map(_I64)),
    ("last_ins", NUMBER, _F),
    ("last_install_ts_bundle", MAP, _map(_I64)),
    ("last_install_ts_category", MAP, _map(_I64)),
    ("advertiser_actions_action_count", MAP, _map(_I64)),
    ("advertiser_actions_action_last_timestamp", MAP, _map(_I64)),
    ("user_actions_bundles_action_count", MAP_OF_MAP, _map_of_map(_I64)),
    ("user_actions_bundles_action_last_timestamp", MAP_OF_MAP, _map_of_map(_I64)),
    ("last_advertiser_action", STRING, _S),
    ("new_bundles", LIST, _LIST),
    ("num_buys_bundle", MAP, _map(_I64)),
    ("num_buys_category", MAP, _map(_I64)),
    ("num_buys_category_bottom_taxonomy", MAP, _map(_I64)),
    ("region_hist", MAP, _map(_I64)),
    ("rev_by_adv", MAP, _map()),
    ("rwd_prank", MAP, _map()),
    ("user_bundles", LIST, _LIST),
    ("user_bundles_l28d", LIST, _LIST),
    ("weekend_ratio", NUMBER, _F),
    ("weeks_since_first_seen", NUMBER, _F),
    ("wifi_ratio", NUMBER, _F),
    ("whale_users_bundle_num_buys_prank", MAP, _map()),
    ("whale_users_bundle_revenue_prank", MAP, _map()),
    ("whale_users_bundle_total_num_buys", MAP, _map(_I64)),
    ("whale_users_bundle_total_revenue", MAP, _map()),
]

ROW_ID_SPEC = (ROW_ID, STRING, _S)

LABEL_COLUMNS: list[str] = [n for n, _, _ in LABEL_SPEC]
FEATURE_COLUMNS: list[str] = [n for n, _, _ in FEATURE_SPEC]
TRAIN_COLUMNS: list[str] = LABEL_COLUMNS + FEATURE_COLUMNS + [ROW_ID]  # 84, file order
TEST_COLUMNS: list[str] = FEATURE_COLUMNS + [ROW_ID]  # 67

KIND: dict[str, str] = {n: k for n, k, _ in LABEL_SPEC + FEATURE_SPEC + [ROW_ID_SPEC]}
CANONICAL_TYPE: dict[str, pa.DataType] = {n: t for n, _, t in LABEL_SPEC + FEATURE_SPEC + [ROW_ID_SPEC]}

REVENUE_LABELS = ["iap_revenue_d7", "iap_revenue_d14", "iap_revenue_d28"]
BUYER_LABELS = ["buyer_d1", "buyer_d7", "buyer_d14", "buyer_d28"]
# Labels that must be present (not null) for a train row to be usable; the others (registration,
# retention*) are legitimately ~7% null.
REQUIRED_LABELS = BUYER_LABELS + ["buy_d7", "buy_d14", "buy_d28"] + REVENUE_LABELS
# Refunds make d14 / d28 revenue legally negative; d7 must not be.
NON_NEGATIVE_LABELS = BUYER_LABELS + ["buy_d7", "buy_d14", "buy_d28", "iap_revenue_d7"]

STRING_COLUMNS = [n for n, k, _ in FEATURE_SPEC if k == STRING]
NUMBER_COLUMNS = [n for n, k, _ in FEATURE_SPEC if k == NUMBER]
MAP_COLUMNS = [n for n, k, _ in FEATURE_SPEC if k == MAP]
MAP_OF_MAP_COLUMNS = [n for n, k, _ in FEATURE_SPEC if k == MAP_OF_MAP]
LIST_COLUMNS = [n for n, k, _ in FEATURE_SPEC if k == LIST]
NESTED_COLUMNS = MAP_COLUMNS + MAP_OF_MAP_COLUMNS + LIST_COLUMNS

# Unix-second timestamps (day-truncated, <= request day) and maps whose values are such timestamps.
TIMESTAMP_COLUMNS = ["first_request_ts", "last_buy", "last_ins"]
TIMESTAMP_MAP_COLUMNS = [
    "first_request_ts_bundle",
    "first_request_ts_category_bottom_taxonomy",
    "last_buy_ts_bundle",
    "last_buy_ts_category",
    "last_install_ts_bundle",
    "last_install_ts_category",
    "advertiser_actions_action_last_timestamp",
    "user_actions_bundles_action_last_timestamp",
]


def arrow_schema(split: str = "train") -> pa.Schema:
    """Canonical Arrow schema of a contract file for ``split`` ('train' has labels; others do not)."""
    cols = TRAIN_COLUMNS if split == "train" else TEST_COLUMNS
    return pa.schema([pa.field(c, CANONICAL_TYPE[c], nullable=True) for c in cols])


def kind_of_type(t: pa.DataType) -> str | None:
    """The contract kind an Arrow type belongs to, or None when it fits none."""
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_dictionary(t)
        and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type))
    ):
        return STRING
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        return NUMBER
    if pa.types.is_map(t):
        item = t.item_type
        if pa.types.is_map(item):
            inner = item.item_type
            return MAP_OF_MAP if pa.types.is_integer(inner) or pa.types.is_floating(inner) else None
        return MAP if pa.types.is_integer(item) or pa.types.is_floating(item) else None
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        v = t.value_type
        return LIST if pa.types.is_string(v) or pa.types.is_large_string(v) else None
    return None


def type_matches(column: str, t: pa.DataType) -> bool:
    """Whether Arrow type ``t`` is acceptable for contract column ``column`` (same kind; all-null is fine)."""
    return pa.types.is_null(t) or kind_of_type(t) == KIND[column]


def null_table(n: int, split: str = "train") -> pa.Table:
    """A contract-typed table of ``n`` all-null rows: a base for hand-written test frames."""
    schema = arrow_schema(split)
    return pa.table([pa.nulls(n, f.type) for f in schema], schema=schema)
