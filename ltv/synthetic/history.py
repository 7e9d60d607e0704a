"""Purchase, install, whale and advertiser-action history: the nested columns tied to spending.

Each ``draw_*`` returns ``(columns, obs)``: Arrow arrays in contract types, and numeric reductions of
exactly those arrays (sums, maxima, recency) that the label model reads.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.special import expit, ndtr

from ltv.synthetic.arrays import Items, draw_items, group_items, map_array, merge_items, offsets, subset
from ltv.synthetic.vocab import ACTIONS, WORLD, zipf_p

DAY = 86400
I64 = pa.int64()
F64 = pa.float64()
BUNDLES = pa.array(WORLD.bundles, type=pa.string())
CATEGORIES = pa.array(WORLD.categories, type=pa.string())
TAXONOMY = pa.array(WORLD.taxonomy, type=pa.string())
ACTION_NAMES = pa.array(ACTIONS, type=pa.string())
BUNDLE_CDF = np.cumsum(WORLD.bundle_p)
BUNDLE_CAT = WORLD.taxonomy_category[WORLD.bundle_taxonomy]
ACTION_CDF = np.cumsum(zipf_p(len(ACTIONS), 0.7))
ADV_CDF = np.cumsum(WORLD.advertiser_p)
PURCHASE = ACTIONS.index("purchase")


def counts_where(
    rng: np.random.Generator, mask: np.ndarray, lam: np.ndarray | float, base: int = 1
) -> np.ndarray:
    """``base + Poisson(lam)`` items for rows in ``mask``, 0 elsewhere."""
    lam = np.broadcast_to(lam, mask.shape)
    return np.where(mask, base + rng.poisson(lam), 0)


def ts_values(
    rng: np.random.Generator, size: int, day: int, p: float, cap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Day-truncated unix-second timestamps ``days`` before the request day: (days, ts)."""
    days = np.minimum(rng.geometric(p, size) - 1, cap)
    return days, (day - days * DAY).astype(np.int64)


def _ts_maps(
    rng, items: Items, valid, day: int, p: float, cap: int, to_group: np.ndarray, group_names: pa.Array
):
    """A bundle -> ts map, the same grouped (max ts) by ``to_group``, and the per-row latest day count."""
    days, ts = ts_values(rng, len(items.row), day, p, cap)
    g_items, g_ts = group_items(items, to_group, ts, how="max")
    latest = items.per_row_max(ts.astype(np.float64))
    bundle_map = map_array(items, BUNDLES, ts, valid, I64)
    group_map = map_array(g_items, group_names, g_ts.astype(np.int64), valid, I64)
    return bundle_map, group_map, np.where(valid, latest, np.nan), (day - latest) / DAY


def draw_purchases(rng: np.random.Generator, lat: dict, day: int, adv: np.ndarray) -> tuple[dict, dict]:
    """The six purchase-history maps (one mask), last_buy + its maps, and rev_by_adv."""
    n = len(adv)
    spend, whale = lat["spend"], lat["whale"]
    has = rng.random(n) < expit(-4.0 + 1.35 * spend)
    counts = counts_where(rng, has, 0.5 + 0.4 * np.maximum(spend, 0))
    counts[has & (rng.random(n) < 0.03)] = 0  # present but empty
    it = draw_items(rng, counts, BUNDLE_CDF)
    rev = np.round(np.exp(1.6 + 0.6 * whale[it.row] + rng.normal(0, 1.0, len(it.row))), 2)
    buys = 1 + rng.poisson(np.exp(0.3 * np.clip(spend[it.row], -2, 2)))
    cat_it, cat_rev = group_items(it, BUNDLE_CAT, rev)
    _, cat_buys = group_items(it, BUNDLE_CAT, buys)
    tax_it, tax_rev = group_items(it, WORLD.bundle_taxonomy, rev)
    _, tax_buys = group_items(it, WORLD.bundle_taxonomy, buys)
    cols = {
        "iap_revenue_usd_bundle": map_array(it, BUNDLES, rev, has, F64),
        "iap_revenue_usd_category": map_array(cat_it, CATEGORIES, np.round(cat_rev, 2), has, F64),
        "iap_revenue_usd_category_bottom_taxonomy": map_array(
            tax_it, TAXONOMY, np.round(tax_rev, 2), has, F64
        ),
        "num_buys_bundle": map_array(it, BUNDLES, buys, has, I64),
        "num_buys_category": map_array(cat_it, CATEGORIES, cat_buys.astype(np.int64), has, I64),
        "num_buys_category_bottom_taxonomy": map_array(tax_it, TAXONOMY, tax_buys.astype(np.int64), has, I64),
    }
    last = has & (counts > 0) & (rng.random(n) < 0.43)
    lb_items = subset(it, last[it.row])
    lb_map, lb_cat_map, last_buy, lb_days = _ts_maps(
        rng, lb_items, last, day, 0.06, 120, BUNDLE_CAT, CATEGORIES
    )
    cols.update(last_buy=pa.array(last_buy, type=F64, from_pandas=True), last_buy_ts_bundle=lb_map)
    cols["last_buy_ts_category"] = lb_cat_map
    rba_cols, own = _rev_by_adv(rng, has, adv, whale)
    cols.update(rba_cols)
    obs = {
        "has_hist": has.astype(np.float64),
        "past_rev": it.per_row_sum(rev),
        "past_buys": it.per_row_sum(buys.astype(np.float64)),
        "days_last_buy": lb_days,
        "rba_own": own.astype(np.float64),
    }
    return cols, obs


def _rev_by_adv(rng: np.random.Generator, has: np.ndarray, adv: np.ndarray, whale: np.ndarray):
    """Past revenue by advertiser, present for ~40% of past buyers; often holds the current advertiser."""
    n = len(adv)
    present = has & (rng.random(n) < 0.40)
    own = present & (rng.random(n) < 0.55)
    own_items = Items(n, np.flatnonzero(own), adv[own])
    others = draw_items(rng, counts_where(rng, present, np.where(own, 0.5, 1.0), base=0), ADV_CDF)
    others = subset(others, others.key != adv[others.row])
    va = np.round(np.exp(2.0 + 0.6 * whale[own_items.row] + rng.normal(0, 1, len(own_items.row))), 2)
    vb = np.round(np.exp(2.0 + 0.6 * whale[others.row] + rng.normal(0, 1, len(others.row))), 2)
    items, vals = merge_items(own_items, va, others, vb)
    names = pa.array(WORLD.bundles[WORLD.advertisers], type=pa.string())
    return {"rev_by_adv": map_array(items, names, vals, present, F64)}, own


def draw_installs(rng: np.random.Generator, lat: dict, day: int) -> tuple[dict, dict]:
    """last_ins and last_install_ts_bundle / _category (one mask, ~85% null)."""
    n = len(lat["engage"])
    has = rng.random(n) < expit(-1.85 + 0.5 * lat["engage"])
    it = draw_items(rng, counts_where(rng, has, 0.8), BUNDLE_CDF)
    b_map, c_map, last_ins, days = _ts_maps(rng, it, has, day, 0.08, 120, BUNDLE_CAT, CATEGORIES)
    cols = {
        "last_ins": pa.array(last_ins, type=F64, from_pandas=True),
        "last_install_ts_bundle": b_map,
        "last_install_ts_category": c_map,
    }
    return cols, {"days_last_ins": days}


def draw_whales(rng: np.random.Generator, lat: dict) -> tuple[dict, dict]:
    """whale_users_bundle_* (one mask, ~97% null): the user's rank among each app's spenders."""
    n = len(lat["whale"])
    whale = lat["whale"]
    has = rng.random(n) < expit(-4.3 + 1.3 * whale)
    it = draw_items(rng, counts_where(rng, has, 0.5), BUNDLE_CDF)
    w = whale[it.row]
    m = len(it.row)
    rev_prank = np.round(ndtr(0.8 * w + rng.normal(0, 0.6, m)), 4)
    cols = {
        "whale_users_bundle_num_buys_prank": map_array(
            it, BUNDLES, np.round(ndtr(0.6 * w + rng.normal(0, 0.8, m)), 4), has, F64
        ),
        "whale_users_bundle_revenue_prank": map_array(it, BUNDLES, rev_prank, has, F64),
        "whale_users_bundle_total_num_buys": map_array(
            it, BUNDLES, 1 + rng.poisson(np.exp(1 + 0.5 * np.clip(w, -2, 3))), has, I64
        ),
    }
    total_rev = np.round(np.exp(3.0 + 1.0 * w + rng.normal(0, 1.0, m)), 2)
    cols["whale_users_bundle_total_revenue"] = map_array(it, BUNDLES, total_rev, has, F64)
    obs = {
        "whale_prank": it.per_row_max(rev_prank, empty=0.0),
        "whale_rev": np.log1p(it.per_row_sum(total_rev)),
    }
    return cols, obs


def draw_actions(rng: np.random.Generator, lat: dict, day: int) -> tuple[dict, dict]:
    """advertiser_actions_* and last_advertiser_action (one mask, ~99% null)."""
    n = len(lat["spend"])
    has = rng.random(n) < expit(-4.8 + 0.8 * lat["spend"])
    it = draw_items(rng, counts_where(rng, has, 1.0), ACTION_CDF)
    m = len(it.row)
    cnt = 1 + rng.poisson(2.0, m)
    days, ts = ts_values(rng, m, day, 0.15, 60)
    order = np.lexsort((days, it.row))  # per row, most recent first
    first = np.ones(m, dtype=bool)
    first[1:] = it.row[order][1:] != it.row[order][:-1]
    last_action = np.full(n, None, dtype=object)
    last_action[it.row[order][first]] = np.array(ACTIONS, dtype=object)[it.key[order][first]]
    bought = np.zeros(n)
    bought[it.row[it.key == PURCHASE]] = 1.0
    cols = {
        "advertiser_actions_action_count": map_array(it, ACTION_NAMES, cnt, has, I64),
        "advertiser_actions_action_last_timestamp": map_array(it, ACTION_NAMES, ts, has, I64),
        "last_advertiser_action": pa.array(last_action, type=pa.string()),
    }
    return cols, {"adv_actions": has.astype(np.float64), "adv_purchase": bought}


def draw_user_actions(rng: np.random.Generator, lat: dict, day: int) -> tuple[dict, dict]:
    """user_actions_bundles_* (maps of maps, one mask): bundle -> {action -> count / last ts}."""
    n = len(lat["engage"])
    has = rng.random(n) < 0.359
    outer = draw_items(rng, counts_where(rng, has, 0.3 + 0.8 * expit(lat["engage"])), BUNDLE_CDF)
    inner = draw_items(rng, 1 + rng.poisson(1.0, len(outer.row)), ACTION_CDF)
    cnt = 1 + rng.poisson(1.5 + np.exp(0.3 * lat["spend"][outer.row[inner.row]]))
    _, ts = ts_values(rng, len(inner.row), day, 0.1, 90)
    cols = {}
    for name, vals in (("count", cnt), ("last_timestamp", ts)):
        inner_arr = pa.MapArray.from_arrays(
            offsets(inner.counts), ACTION_NAMES.take(pa.array(inner.key)), pa.array(vals, type=I64)
        )
        cols[f"user_actions_bundles_action_{name}"] = pa.MapArray.from_arrays(
            offsets(outer.counts), BUNDLES.take(pa.array(outer.key)), inner_arr, mask=pa.array(~has)
        )
    total = np.bincount(outer.row[inner.row], weights=cnt.astype(np.float64), minlength=n)
    return cols, {"ua_total": total}
