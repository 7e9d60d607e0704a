"""Engagement and context nested columns: sessions, bundle lists, histograms, hour_ratio, cpm/ctr and more.

Each ``draw_*`` returns ``(columns, obs)`` like ``history``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import expit, ndtr

from ltv.synthetic.arrays import (
    Items,
    draw_items,
    group_items,
    joined_strings,
    list_array,
    map_array,
    merge_items,
    subset,
    unique_sorted,
    vocab_strings,
)
from ltv.synthetic.flat import COUNTRY_NAMES, OSV_NAMES, REGION_SUFFIX
from ltv.synthetic.history import (
    BUNDLE_CAT,
    BUNDLE_CDF,
    BUNDLES,
    CATEGORIES,
    DAY,
    F64,
    I64,
    TAXONOMY,
    counts_where,
    ts_values,
)
from ltv.synthetic.vocab import FORMATS, LANGUAGES, WORLD, zipf_p

CITY_SUFFIX = pa.array([f"-c{k:03d}" for k in range(1000)], type=pa.string())  # city k: "<cc>-c<kkk>"
HOURS = pa.array([str(h) for h in range(24)], type=pa.string())
FORMAT_NAMES = pa.array(FORMATS, type=pa.string())
LANG_NAMES = pa.array(LANGUAGES, type=pa.string())
COUNTRY_CDF = np.cumsum(WORLD.country_p)
CAT_CDF = np.cumsum(np.full(len(WORLD.categories), 1 / len(WORLD.categories)))
TAX_CDF = np.cumsum(np.full(len(WORLD.taxonomy), 1 / len(WORLD.taxonomy)))
FORMAT_OFFSET = np.array([-0.6, 0.8, 1.2])  # log-cpm level of banner / interstitial / rewarded
FORMAT_SHARE = np.array([0.9, 0.7, 0.5])


def draw_sessions(rng: np.random.Generator, lat: dict) -> tuple[dict, dict]:
    """avg_daily_sessions and avg_duration: bundle -> value, one mask (~76% null), same keys."""
    n, e = len(lat["engage"]), lat["engage"]
    has = rng.random(n) < expit(-1.2 + 0.5 * e)
    it = draw_items(rng, counts_where(rng, has, 1.5 + 2.0 * expit(e), base=0), BUNDLE_CDF)
    m = len(it.row)
    sessions = np.round(np.exp(0.2 + 0.35 * e[it.row] + rng.normal(0, 0.6, m)), 3)
    duration = np.round(np.exp(5.0 + 0.3 * e[it.row] + rng.normal(0, 0.7, m)), 1)
    cols = {
        "avg_daily_sessions": map_array(it, BUNDLES, sessions, has, F64),
        "avg_duration": map_array(it, BUNDLES, duration, has, F64),
    }
    return cols, {"sess_total": it.per_row_sum(sessions)}


def draw_bundle_lists(rng: np.random.Generator, lat: dict) -> tuple[dict, dict]:
    """user_bundles (+ bundles_cat*, same mask), user_bundles_l28d, new_bundles, bundles_ins."""
    n, e, w = len(lat["engage"]), lat["engage"], lat["wealth"]
    has = rng.random(n) < 0.62
    ub = draw_items(
        rng, np.minimum(counts_where(rng, has, np.exp(2.0 + 0.35 * e + 0.2 * w), base=0), 80), BUNDLE_CDF
    )
    l28_has = has & (rng.random(n) < 0.8)
    l28 = subset(ub, l28_has[ub.row] & (rng.random(len(ub.row)) < 0.4))
    new_has = rng.random(n) < 0.45
    new = draw_items(rng, counts_where(rng, new_has, 0.2 + 1.5 * expit(lat["spend"] - 1), base=0), BUNDLE_CDF)
    ins_has = rng.random(n) < 0.40
    ins = draw_items(rng, counts_where(rng, ins_has, 2.0, base=0), BUNDLE_CDF)
    cat_it, cat_n = group_items(ub, BUNDLE_CAT)
    tax_it, tax_n = group_items(ub, WORLD.bundle_taxonomy)
    cols = {
        "user_bundles": list_array(ub, BUNDLES, has),
        "user_bundles_l28d": list_array(l28, BUNDLES, l28_has),
        "new_bundles": list_array(new, BUNDLES, new_has),
        "bundles_ins": list_array(ins, BUNDLES, ins_has),
        "bundles_cat": map_array(cat_it, CATEGORIES, cat_n, has, F64),
        "bundles_cat_bottom_taxonomy": map_array(tax_it, TAXONOMY, tax_n, has, F64),
    }
    return cols, {"n_bundles": ub.counts.astype(np.float64), "n_new": new.counts.astype(np.float64)}


def _entropy(items: Items, counts: np.ndarray) -> np.ndarray:
    total = items.per_row_sum(counts)
    p = counts / np.maximum(total[items.row], 1e-12)
    return items.per_row_sum(-p * np.log(np.maximum(p, 1e-300)))


def _own_plus_others(rng, n, has, own_key, other_lam, pool_cdf, own_lam) -> tuple[Items, np.ndarray]:
    """The row's own key with a large count plus a few other keys with small counts (unique keys)."""
    own = Items(n, np.flatnonzero(has), own_key[has])
    others = draw_items(rng, counts_where(rng, has, other_lam, base=0), pool_cdf)
    va = 1.0 + rng.poisson(own_lam[own.row])
    return merge_items(own, va, others, 1.0 + rng.poisson(1.5, len(others.row)))


def draw_hists(rng: np.random.Generator, lat: dict, osv_major: np.ndarray) -> tuple[dict, dict]:
    """The five *_hist maps (value -> count), one mask (~43.5% null)."""
    n, c, e, w = len(lat["engage"]), lat["country"], lat["engage"], lat["wealth"]
    has = rng.random(n) < 0.565
    seen = np.exp(2.0 + 0.3 * e)
    country_it, country_v = _own_plus_others(rng, n, has, c, 0.05 + 0.4 * expit(w - 1), COUNTRY_CDF, seen)
    region_k = np.minimum(rng.geometric(0.3, n) - 1, 29)
    region_it, region_v = _own_plus_others(
        rng, n, has, region_k, 0.4 * expit(e), np.cumsum(zipf_p(30, 1.0)), seen
    )
    region_names = joined_strings(
        vocab_strings(COUNTRY_NAMES, c[region_it.row]), vocab_strings(REGION_SUFFIX, region_it.key)
    )
    city_k = rng.integers(0, 1000, n)
    city_it, city_v = _own_plus_others(
        rng, n, has, city_k, 0.1 + 1.5 * expit(e + rng.normal(0, 1, n)), np.cumsum(zipf_p(1000, 0.8)), seen
    )
    city_names = joined_strings(
        vocab_strings(COUNTRY_NAMES, c[city_it.row]), vocab_strings(CITY_SUFFIX, city_it.key)
    )
    lang_it, lang_v = _own_plus_others(
        rng, n, has, (c * 7) % len(LANGUAGES), 0.3, np.cumsum(zipf_p(len(LANGUAGES), 1.5)), seen
    )
    n_old = counts_where(rng, has, 0.2 + 0.8 * expit(w), base=0)
    old_rows = np.repeat(np.arange(n), n_old)
    step = np.arange(len(old_rows)) - np.repeat(np.cumsum(n_old) - n_old, n_old) + 1  # 1..n_old within row
    osv_keys = np.concatenate([np.full(has.sum(), -1), step])  # -1: the current version
    osv_rows = np.concatenate([np.flatnonzero(has), old_rows])
    order = np.lexsort((osv_keys, osv_rows))
    osv_it = Items(n, osv_rows[order], osv_keys[order])
    older = joined_strings(pc.cast(pa.array(osv_major[osv_it.row] - osv_it.key), pa.string()), ".0.0")
    osv_names = pc.if_else(
        pa.array(osv_it.key < 0), vocab_strings(OSV_NAMES, lat["osv_code"][osv_it.row]), older
    )
    osv_v = np.where(osv_it.key < 0, 1 + rng.poisson(seen[osv_it.row]), 1 + rng.poisson(3.0, len(osv_it.row)))
    cols = {
        "city_hist": _named_map(city_it, city_names, city_v, has),
        "country_hist": map_array(country_it, COUNTRY_NAMES, country_v.astype(np.int64), has, I64),
        "dev_language_hist": map_array(lang_it, LANG_NAMES, lang_v.astype(np.int64), has, I64),
        "dev_osv_hist": _named_map(osv_it, osv_names, osv_v, has),
    }
    cols["region_hist"] = _named_map(region_it, region_names, region_v, has)
    obs = {"city_entropy": _entropy(city_it, city_v), "n_osv": osv_it.counts.astype(np.float64)}
    return cols, obs


def _named_map(items: Items, names: pa.Array, values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """MAP whose key strings are given per item (not drawn from a pool)."""
    identity = Items(items.n, items.row, np.arange(len(items.row)))
    return map_array(identity, names, np.asarray(values).astype(np.int64), valid, I64)


def draw_hour_ratio(rng: np.random.Generator, lat: dict, hour: int) -> tuple[dict, dict]:
    """hour_ratio: hour '0'..'23' -> share of the user's requests (sums to 1), ~44% null."""
    n, e = len(lat["engage"]), lat["engage"]
    has = rng.random(n) < 0.559
    peak = 20.0 + rng.normal(0, 3.0, n)
    want = np.clip(counts_where(rng, has, 4.0 + 10.0 * expit(e), base=1), 0, 24)
    rows = np.repeat(np.arange(n), want)
    hours = np.round(peak[rows] + rng.normal(0, 4.0, len(rows))).astype(int) % 24
    code = unique_sorted(rows * 24 + hours)
    it = Items(n, code // 24, code % 24)
    weight = rng.gamma(2.0, 1.0, len(it.row))
    share = weight / it.per_row_sum(weight)[it.row]
    now = np.bincount(it.row[it.key == hour], weights=share[it.key == hour], minlength=n)
    return {"hour_ratio": map_array(it, HOURS, share, has, F64)}, {"share_now": np.where(has, now, np.nan)}


def _format_map(rng, n, has, level: np.ndarray, noise: float):
    present = has[:, None] & (rng.random((n, 3)) < FORMAT_SHARE)
    rows, fmt = np.nonzero(present)
    it = Items(n, rows, fmt)
    z = level[rows] + rng.normal(0, noise, len(rows))
    rank = np.round(ndtr(z / np.sqrt(1.0 + noise**2)), 4)
    mean_rank = np.where(it.counts > 0, it.per_row_sum(rank) / np.maximum(it.counts, 1), 0.5)
    return it, z, rank, mean_rank


def draw_ads(rng: np.random.Generator, lat: dict) -> tuple[dict, dict]:
    """cpm / cpm_pct_rk and ctr / ctr_pct_rk (format b/i/r -> value), rwd_prank, bcat*."""
    n, w, s, e = len(lat["wealth"]), lat["wealth"], lat["spend"], lat["engage"]
    cpm_has = rng.random(n) < 0.75
    it, z, rank, cpm_rank = _format_map(rng, n, cpm_has, 0.4 * w + 0.35 * s, 0.5)
    cpm = np.round(np.exp(0.3 + FORMAT_OFFSET[it.key] + 0.5 * z), 4)
    ctr_has = rng.random(n) < 0.036
    cit, cz, crank, ctr_rank = _format_map(rng, n, ctr_has, 0.4 * e + 0.3 * s, 0.6)
    ctr = np.round(expit(-4.0 + 0.5 * cz - 0.3 * FORMAT_OFFSET[cit.key]), 5)
    rwd_has = rng.random(n) < 0.40
    rwd = draw_items(rng, counts_where(rng, rwd_has, 0.5), BUNDLE_CDF)
    bcat_has = rng.random(n) < 0.525
    bcat = draw_items(rng, counts_where(rng, bcat_has, 1.0), CAT_CDF)
    btax = draw_items(rng, counts_where(rng, bcat_has, 1.5), TAX_CDF)
    cols = {
        "cpm": map_array(it, FORMAT_NAMES, cpm, cpm_has, F64),
        "cpm_pct_rk": map_array(it, FORMAT_NAMES, rank, cpm_has, F64),
        "ctr": map_array(cit, FORMAT_NAMES, ctr, ctr_has, F64),
        "ctr_pct_rk": map_array(cit, FORMAT_NAMES, crank, ctr_has, F64),
        "rwd_prank": map_array(rwd, BUNDLES, np.round(rng.random(len(rwd.row)), 4), rwd_has, F64),
        "bcat": map_array(bcat, CATEGORIES, np.round(rng.random(len(bcat.row)), 3), bcat_has, F64),
        "bcat_bottom_taxonomy": map_array(
            btax, TAXONOMY, np.round(rng.random(len(btax.row)), 3), bcat_has, F64
        ),
    }
    return cols, {"cpm_rank": cpm_rank, "ctr_rank": ctr_rank}


def draw_first_request(rng: np.random.Generator, n: int, first_null: np.ndarray, day: int) -> dict:
    """first_request_ts_bundle / _category_bottom_taxonomy, sharing first_request_ts's mask (no signal)."""
    has = ~first_null
    it = draw_items(rng, counts_where(rng, has, 1.5), BUNDLE_CDF)
    _, ts = ts_values(rng, len(it.row), day, 0.05, 180)
    tax_it, tax_days = group_items(it, WORLD.bundle_taxonomy, (day - ts) / DAY, how="max")
    return {
        "first_request_ts_bundle": map_array(it, BUNDLES, ts, has, I64),
        "first_request_ts_category_bottom_taxonomy": map_array(
            tax_it, TAXONOMY, (day - tax_days * DAY).astype(np.int64), has, I64
        ),
    }
