"""Feature groups over the nested MAP / MAP-of-MAP / LIST columns (stateless, vectorised).

Names are ``<column>__<statistic>``. Semantics of null / empty cells are those of :mod:`nested`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ltv import contract
from ltv.features import nested
from ltv.features.stateless import ExtractContext, _parse_int, map_unique

GENERIC_MAPS = [
    "bcat",
    "bcat_bottom_taxonomy",
    "bundles_cat",
    "bundles_cat_bottom_taxonomy",
    "rev_by_adv",
    "rwd_prank",
    "advertiser_actions_action_count",
]
HIST_MAPS = ["country_hist", "region_hist", "city_hist", "dev_language_hist", "dev_osv_hist", "hour_ratio"]
AD_FORMAT_MAPS = ["cpm", "cpm_pct_rk", "ctr", "ctr_pct_rk"]
AD_FORMATS = ["b", "i", "r"]
SESSION_MAPS = ["avg_daily_sessions", "avg_duration"]
PURCHASE_MAPS = [
    "iap_revenue_usd_bundle",
    "iap_revenue_usd_category",
    "iap_revenue_usd_category_bottom_taxonomy",
    "num_buys_bundle",
    "num_buys_category",
    "num_buys_category_bottom_taxonomy",
]
TIMESTAMP_SCALARS = contract.TIMESTAMP_COLUMNS
TIMESTAMP_MAPS = [c for c in contract.TIMESTAMP_MAP_COLUMNS if c in contract.MAP_COLUMNS]  # flat maps only
USER_ACTION_MAPS = contract.MAP_OF_MAP_COLUMNS
LIST_COLUMNS = contract.LIST_COLUMNS
WHALE_MAPS = [
    "whale_users_bundle_num_buys_prank",
    "whale_users_bundle_revenue_prank",
    "whale_users_bundle_total_num_buys",
    "whale_users_bundle_total_revenue",
]


# (column, statistic) pairs the interactions reuse when their own group computed them already
INTERACTION_INPUTS = {
    "whale_users_bundle_revenue_prank__max",
    "avg_daily_sessions__sum",
    "iap_revenue_usd_bundle__sum",
    "num_buys_bundle__sum",
}


def _basic(ctx: ExtractContext, col: str, stats: tuple[str, ...]) -> dict[str, np.ndarray]:
    res = nested.map_stats(ctx.flat(col), ctx.values(col), stats)
    out = {f"{col}__{s}": v for s, v in res.items()}
    ctx.cache.update({k: v for k, v in out.items() if k in INTERACTION_INPUTS})  # keep only what is reused
    return out


def maps_basic(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Generic maps (category affinities, ranks, advertiser actions): count, sum, mean, max, min, std."""
    out = {}
    for col in GENERIC_MAPS:
        out.update(_basic(ctx, col, ("count", "sum", "mean", "max", "min", "std")))
    return out


def histograms(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """``*_hist`` and ``hour_ratio``: distinct values, total, entropy (nats), top-1 and top-k shares."""
    out = {}
    for col in HIST_MAPS:
        flat, v = ctx.flat(col), ctx.values(col)
        ent, top1, topk = nested.entropy_and_top(flat, v, ctx.top_k)
        out[f"{col}__count"] = nested.count(flat)
        out[f"{col}__sum"] = nested.seg_sum(flat, v)
        out[f"{col}__entropy"] = ent
        out[f"{col}__top1_share"] = top1
        out[f"{col}__top{ctx.top_k}_share"] = topk
    return out


def ad_format(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """cpm / ctr and their percentile ranks: the value per ad format (b, i, r), count, mean and max."""
    out = {}
    for col in AD_FORMAT_MAPS:
        flat, v = ctx.flat(col), ctx.values(col)
        for fmt in AD_FORMATS:
            out[f"{col}__{fmt}"] = nested.value_at(flat, v, nested.key_equals(flat, fmt))
        out.update(_basic(ctx, col, ("count", "mean", "max")))
    return out


def sessions(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Per-app daily sessions and durations: apps, total, peak, mean; duration per session."""
    out = {}
    for col in SESSION_MAPS:
        out.update(_basic(ctx, col, ("count", "sum", "max", "mean")))
    with np.errstate(invalid="ignore", divide="ignore"):
        total = out["avg_daily_sessions__sum"]
        out["duration_per_session"] = np.where(total > 0, out["avg_duration__sum"] / total, np.nan)
    return out


def purchase_history(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Past revenue and purchases per bundle / category: count, sum, mean, max; revenue per purchase;
    revenue and purchases on the advertised bundle itself."""
    out = {}
    for col in PURCHASE_MAPS:
        out.update(_basic(ctx, col, ("count", "sum", "mean", "max")))
    adv = ctx.column("advertiser_bundle")
    for col in ("iap_revenue_usd_bundle", "num_buys_bundle"):
        flat = ctx.flat(col)
        at = nested.value_at(flat, ctx.values(col), nested.key_equals_row(flat, adv))
        out[f"{col}__advertiser"] = np.where(flat.valid & np.isnan(at), 0.0, at)
    with np.errstate(invalid="ignore", divide="ignore"):
        buys = out["num_buys_bundle__sum"]
        out["revenue_per_purchase"] = np.where(buys > 0, out["iap_revenue_usd_bundle__sum"] / buys, np.nan)
    return out


ADVERTISER_TS_MAPS = ["last_install_ts_bundle", "last_buy_ts_bundle"]
ADVERTISER_ACTIONS = "user_actions_bundles_action_count"
# maps keyed by category (or bottom taxonomy), looked up under the advertised app's own
CATEGORY_KEYED = {
    "advertiser_category": ["iap_revenue_usd_category", "num_buys_category", "bundles_cat"],
    "advertiser_bottom_taxonomy_level": [
        "iap_revenue_usd_category_bottom_taxonomy",
        "num_buys_category_bottom_taxonomy",
        "bundles_cat_bottom_taxonomy",
    ],
}
CATEGORY_TS_MAPS = ["last_buy_ts_category", "last_install_ts_category"]  # keyed by advertiser_category


def _at_advertiser(ctx: ExtractContext, col: str, key_col: str = "advertiser_bundle") -> np.ndarray:
    """Per row, the value of map ``col`` under the row's ``key_col`` string (NaN when absent)."""
    flat = ctx.flat(col)
    return nested.value_at(flat, ctx.values(col), nested.key_equals_row(flat, ctx.column(key_col)))


def advertiser_context(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """The user's history with the advertised app and its category, and with the request hour.

    Category-keyed maps (past revenue / purchases / installed apps, days since the last purchase or
    install) under the advertised app's category or bottom taxonomy (0 / NaN as below). Past revenue the user brought this advertiser (``rev_by_adv`` under ``advertiser_bundle``; 0 when the
    map is present without that key, NaN when null), days since the advertised app was installed /
    bought, the user's action count on it (map of maps), and the user's activity share at the request
    hour (``hour_ratio`` under the row's hour; keys '7' and '07' alike).
    """
    out = {}
    flat = ctx.flat("rev_by_adv")
    at = _at_advertiser(ctx, "rev_by_adv")
    out["rev_by_adv__advertiser"] = np.where(flat.valid & np.isnan(at), 0.0, at)
    for col in ADVERTISER_TS_MAPS:
        out[f"{col}__advertiser_days"] = ctx.days_since(_at_advertiser(ctx, col))
    for key_col, cols in CATEGORY_KEYED.items():
        for col in cols:
            at = _at_advertiser(ctx, col, key_col)
            out[f"{col}__advertiser_category"] = np.where(ctx.flat(col).valid & np.isnan(at), 0.0, at)
    for col in CATEGORY_TS_MAPS:
        out[f"{col}__advertiser_category_days"] = ctx.days_since(
            _at_advertiser(ctx, col, "advertiser_category")
        )
    outer = ctx.flat(ADVERTISER_ACTIONS)
    hit = nested.key_equals_row(outer, ctx.column("advertiser_bundle"))
    inner = nested.flatten(outer.items)
    sel = hit[inner.parent] if len(inner.parent) else np.zeros(0, bool)
    counts = np.nan_to_num(inner.values()[sel], nan=0.0) if sel.any() else np.zeros(0)
    total = np.bincount(outer.parent[inner.parent[sel]], weights=counts, minlength=outer.n)
    out[f"{ADVERTISER_ACTIONS}__advertiser"] = nested._null_out(outer, total)
    flat = ctx.flat("hour_ratio")
    key_hour = map_unique(flat.keys, _parse_int) if len(flat.keys) else np.zeros(0)
    match = key_hour == ctx.request_hour()[flat.parent]
    at = nested.value_at(flat, ctx.values("hour_ratio"), match)
    out["hour_ratio__current"] = np.where(flat.valid & np.isnan(at), 0.0, at)
    return out


def recency(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Days since first request / last purchase / last install (unix seconds, relative to the row's
    request hour); timestamp maps: entries, days since the most recent and the oldest entry."""
    out = {f"{c}__days": ctx.days_since(ctx.scalar(c)) for c in TIMESTAMP_SCALARS}
    for col in TIMESTAMP_MAPS:
        flat, v = ctx.flat(col), ctx.values(col)
        out[f"{col}__count"] = nested.count(flat)
        out[f"{col}__days_latest"] = ctx.days_since(nested.seg_max(flat, v))
        out[f"{col}__days_oldest"] = ctx.days_since(nested.seg_min(flat, v))
    return out


def user_actions(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Map-of-map user actions per bundle: bundles, actions; total and peak action count; days since
    the latest and the oldest action."""
    out = {}
    for col in USER_ACTION_MAPS:
        outer = ctx.flat(col)
        inner = nested.flatten_inner(outer)
        out[f"{col}__bundles"] = nested.count(outer)
        out[f"{col}__actions"] = nested.count(inner)
        v = inner.values()
        if col.endswith("_count"):
            out[f"{col}__sum"] = nested.seg_sum(inner, v)
            out[f"{col}__max"] = nested.seg_max(inner, v)
        else:
            out[f"{col}__days_latest"] = ctx.days_since(nested.seg_max(inner, v))
            out[f"{col}__days_oldest"] = ctx.days_since(nested.seg_min(inner, v))
    return out


def lists(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Bundle lists: length and distinct bundles; new bundles already in user_bundles; whether the
    advertised bundle is installed / among the user's bundles.

    All four lists are dictionary-encoded together once, so membership tests are integer joins on
    (row, code) pair keys rather than string comparisons.
    """
    flats = {c: ctx.flat(c) for c in LIST_COLUMNS}
    values = [nested.as_array(f.keys) for f in flats.values()]
    values = [v.cast(pa.string()) if not pa.types.is_string(v.type) else v for v in values]
    enc = pc.dictionary_encode(pa.concat_arrays(values))
    k = len(enc.dictionary) + 1  # code len(dictionary) stands for a null element
    codes_all = pc.fill_null(enc.indices, k - 1).to_numpy(zero_copy_only=False).astype(np.int64)
    bounds = np.cumsum([0] + [len(v) for v in values])
    codes = {c: codes_all[bounds[i] : bounds[i + 1]] for i, c in enumerate(flats)}
    out, pairs = {}, {}
    for c, flat in flats.items():
        pairs[c] = nested.unique_pairs(flat.parent, codes[c], k)
        out[f"{c}__len"] = nested.count(flat)
        out[f"{c}__nunique"] = nested._null_out(
            flat, np.bincount(pairs[c] // k, minlength=flat.n).astype(np.float64)
        )
    nb = flats["new_bundles"]
    out["new_bundles__in_user_bundles"] = nested.count_in(nb, codes["new_bundles"], pairs["user_bundles"], k)
    adv = pc.index_in(ctx.column("advertiser_bundle").cast(pa.string()), value_set=enc.dictionary)
    adv_code = pc.fill_null(adv, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    for c in ("bundles_ins", "user_bundles"):
        flat = flats[c]
        hit = (codes[c] == adv_code[flat.parent]).astype(np.float64)
        found = np.bincount(flat.parent, weights=hit, minlength=flat.n) > 0
        out[f"advertiser_bundle__in_{c}"] = nested._null_out(flat, found.astype(np.float64))
    return out


def whale(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Whale-user signals per bundle: count, sum, mean, max."""
    out = {}
    for col in WHALE_MAPS:
        out.update(_basic(ctx, col, ("count", "sum", "mean", "max")))
    return out


def interactions(ctx: ExtractContext) -> dict[str, np.ndarray]:
    """Products of strong signals (absent signal counts as 0 so the product is defined for every row):
    whale revenue rank x log session depth, log past revenue x log purchase count."""

    def get(col: str, stat: str) -> np.ndarray:
        key = f"{col}__{stat}"
        if key not in ctx.cache:
            _basic(ctx, col, (stat,))
        return np.nan_to_num(ctx.cache[key], nan=0.0)

    whale_rank = get("whale_users_bundle_revenue_prank", "max")
    depth = np.log1p(np.maximum(get("avg_daily_sessions", "sum"), 0))
    revenue = np.log1p(np.maximum(get("iap_revenue_usd_bundle", "sum"), 0))
    buys = np.log1p(np.maximum(get("num_buys_bundle", "sum"), 0))
    return {"whale_x_sessions": whale_rank * depth, "revenue_x_purchases": revenue * buys}
