"""Latent user traits and the flat (string / number) contract features of one hour of rows.

Latent traits (wealth, engagement, spend, whale) drive the observed features and their null masks, so
columns are correlated the way real ones are. The labels never see the latent traits: they are computed
in ``labels`` from what is written here and in ``history`` / ``activity`` (the ``obs`` summaries), so the oracle is exact.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
from scipy.special import expit, logit

from ltv.synthetic.arrays import joined_strings, numbers_with_nulls, vocab_strings
from ltv.synthetic.vocab import (
    ANDROID_MAKE_MSRP,
    ANDROID_MAKE_P,
    ANDROID_MAKES,
    CARRIERS,
    MONTHS,
    WORLD,
    zipf_p,
)

DAY = 86400
_CARRIER_CDF = np.cumsum(zipf_p(len(CARRIERS), 1.0))
_COUNTRY_CDF = np.cumsum(WORLD.country_p)
_ADV_CDF = np.cumsum(WORLD.advertiser_p)
_MAKE_CDF = np.cumsum(ANDROID_MAKE_P / ANDROID_MAKE_P.sum())

# String columns are codes into these vocabularies (one Arrow take per column, no per-row Python strings).
_S = pa.string()
COUNTRY_NAMES = pa.array(WORLD.countries, type=_S)
REGION_SUFFIX = pa.array([f"-r{k:02d}" for k in range(30)], type=_S)  # region k of a country: "<cc>-r<kk>"
_CARRIER_NAMES = pa.array(CARRIERS, type=_S)
_MAKE_NAMES = pa.array([*ANDROID_MAKES, "apple"], type=_S)
_IPHONES = 9 * len(ANDROID_MAKES)  # model code: make * 9 + generation (Android), then "iphone <gen + 8>"
_MODEL_NAMES = pa.array(
    [f"{m} m{g}" for m in ANDROID_MAKES for g in range(9)] + [f"iphone {g + 8}" for g in range(9)]
)
_OS_NAMES = pa.array(["android", "ios"], type=_S)
# OS version code: (major * 7 + minor) * 4 + patch
OSV_NAMES = pa.array([f"{a}.{b}.{c}" for a in range(20) for b in range(7) for c in range(4)], type=_S)
_RELEASE_NAMES = pa.array([f"{y}_{m}" for y in range(2016, 2026) for m in MONTHS], type=_S)
_ADVERTISER_NAMES = pa.array(WORLD.bundles[WORLD.advertisers], type=_S)
_CATEGORY_NAMES = pa.array(WORLD.categories, type=_S)
_TAXONOMY_NAMES = pa.array(WORLD.taxonomy, type=_S)
_SUBCATEGORY_NAMES = pa.array([t.split("/", 1)[1] for t in WORLD.taxonomy], type=_S)


def _pick(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def _nulls(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    return rng.random(n) < rate


def draw_latent(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Country, advertiser and the latent traits of ``n`` rows (numpy, nothing written as is)."""
    c = _pick(rng, _COUNTRY_CDF, n)
    wealth = WORLD.country_wealth[c] + rng.normal(0.0, 0.8, n)
    engage = rng.normal(0.0, 1.0, n)
    spend = 0.45 * wealth + 0.35 * engage + rng.normal(0.0, 0.85, n)
    whale = 0.6 * spend + rng.normal(0.0, 0.8, n)
    p_ios = expit(logit(WORLD.country_ios[c]) - 0.4 + 0.5 * (wealth - WORLD.country_wealth[c]))
    adv = _pick(rng, _ADV_CDF, n)
    tax = WORLD.bundle_taxonomy[WORLD.advertisers[adv]]
    return {
        "country": c,
        "wealth": wealth,
        "engage": engage,
        "spend": spend,
        "whale": whale,
        "ios": rng.random(n) < p_ios,
        "adv": adv,
        "tax": tax,
        "cat": WORLD.taxonomy_category[tax],
    }


def _device(rng: np.random.Generator, lat: dict, n: int) -> tuple[dict, np.ndarray, tuple]:
    ios, wealth = lat["ios"], lat["wealth"]
    make_idx = _pick(rng, _MAKE_CDF, n)
    gen = np.clip(np.round(2.0 + 1.2 * wealth + rng.normal(0, 1.5, n)), 0, 8).astype(int)  # newer if wealthy
    major = np.where(ios, 14 + np.minimum(gen // 2, 4), 9 + np.minimum(gen // 1.5, 6)).astype(int)
    minor = rng.integers(0, 7, n)
    osv = (major * 7 + minor) * 4 + rng.integers(0, 4, n)  # code into OSV_NAMES
    year = np.clip(2017 + gen + rng.integers(-1, 2, n), 2016, 2025)
    release = (year - 2016) * 12 + rng.integers(0, 12, n)
    log_msrp = np.where(ios, 6.6, ANDROID_MAKE_MSRP[make_idx]) + 0.12 * gen + rng.normal(0, 0.25, n)
    msrp = np.round(np.exp(log_msrp), 0) - 0.01
    msrp_null = _nulls(rng, n, 0.103)
    make_null = _nulls(rng, n, 0.019)
    # brands differ in buyers beyond their price (msrp is often null; the make is not)
    make_eff = np.where(make_null | ios, 0.0, 0.35 * (ANDROID_MAKE_MSRP[make_idx] - 5.5))
    cols = {
        "dev_make": vocab_strings(_MAKE_NAMES, np.where(ios, len(ANDROID_MAKES), make_idx), make_null),
        "dev_model": vocab_strings(
            _MODEL_NAMES, np.where(ios, _IPHONES + gen, make_idx * 9 + gen), _nulls(rng, n, 0.002)
        ),
        "dev_os": vocab_strings(_OS_NAMES, ios.astype(np.int8)),
        "dev_osv": vocab_strings(OSV_NAMES, osv, _nulls(rng, n, 0.009)),
        "release_date": vocab_strings(_RELEASE_NAMES, release, _nulls(rng, n, 0.004)),
        "release_msrp": numbers_with_nulls(msrp, msrp_null),
    }
    return cols, np.where(msrp_null, np.nan, msrp), (osv, major, make_eff)


def _advertiser(rng: np.random.Generator, lat: dict, n: int) -> dict:
    cat_null = _nulls(rng, n, 0.097)  # category and subcategory share one mask
    return {
        "advertiser_bundle": vocab_strings(_ADVERTISER_NAMES, lat["adv"]),
        "advertiser_category": vocab_strings(_CATEGORY_NAMES, lat["cat"], cat_null),
        "advertiser_subcategory": vocab_strings(_SUBCATEGORY_NAMES, lat["tax"], cat_null),
        "advertiser_bottom_taxonomy_level": vocab_strings(_TAXONOMY_NAMES, lat["tax"], _nulls(rng, n, 0.375)),
    }


def _region(country: np.ndarray, region_k: np.ndarray, null: np.ndarray) -> pa.Array:
    """Region names "<country>-r<kk>" (null where ``null``)."""
    return joined_strings(vocab_strings(COUNTRY_NAMES, country, null), vocab_strings(REGION_SUFFIX, region_k))


def draw_flat(rng: np.random.Generator, lat: dict, when: dt.datetime) -> tuple[dict, dict]:
    """String and number columns of one hour, plus the numeric summaries the label model reads.

    ``when`` is the partition hour (UTC); returns ``(columns, obs)``.
    """
    n = len(lat["country"])
    country_null = _nulls(rng, n, 0.0004)
    region_k = _pick(rng, np.cumsum(zipf_p(30, 1.0)), n)
    dev_cols, msrp, dev = _device(rng, lat, n)
    act_null = _nulls(rng, n, 0.45)  # avg_act_days, weekend_ratio, wifi_ratio, weeks_since_first_seen
    act_days = np.round(1.0 + 6.0 * expit(0.9 * lat["engage"] + rng.normal(0, 0.7, n)), 2)
    wifi = np.round(expit(0.5 * lat["wealth"] - 0.2 + rng.normal(0, 1.0, n)), 3)
    weekend = np.round(np.clip(2 / 7 + rng.normal(0, 0.1, n), 0, 1), 3)
    weeks = np.minimum(6.0, np.floor(rng.exponential(2.5, n)))
    ins_days = np.round(rng.exponential(12.0, n) / (1 + np.exp(lat["engage"])), 2)
    day = int(dt.datetime(when.year, when.month, when.day, tzinfo=dt.timezone.utc).timestamp())
    first_days = np.where(act_null, rng.integers(0, 60, n), weeks * 7 + rng.integers(0, 7, n))
    first_null = _nulls(rng, n, 0.576)
    cols = {
        **_advertiser(rng, lat, n),
        "carrier": vocab_strings(_CARRIER_NAMES, _pick(rng, _CARRIER_CDF, n), _nulls(rng, n, 0.405)),
        "country": vocab_strings(COUNTRY_NAMES, lat["country"], country_null),
        "region": _region(lat["country"], region_k, country_null | _nulls(rng, n, 0.03)),
        **dev_cols,
        "hour": pa.repeat(pa.scalar(f"{when.hour:02d}", type=_S), n),
        "weekday": pa.array(np.full(n, when.isoweekday(), dtype=np.int64)),
        "avg_act_days": numbers_with_nulls(act_days, act_null),
        "avg_days_ins": numbers_with_nulls(ins_days, _nulls(rng, n, 0.955)),
        "weekend_ratio": numbers_with_nulls(weekend, act_null),
        "wifi_ratio": numbers_with_nulls(wifi, act_null),
        "weeks_since_first_seen": numbers_with_nulls(weeks, act_null),
        "first_request_ts": numbers_with_nulls((day - first_days * DAY).astype(np.float64), first_null),
    }
    obs = {
        "country_eff": np.where(country_null, 0.0, WORLD.country_logit[lat["country"]]),
        "country_rev": np.where(country_null, 0.0, WORLD.country_rev[lat["country"]]),
        "cat_eff": WORLD.category_logit[lat["cat"]],
        "cat_rev": WORLD.category_rev[lat["cat"]],
        "cat": lat["cat"],
        "adv_eff": WORLD.advertiser_logit[lat["adv"]],
        "ios": lat["ios"].astype(np.float64),
        "hour": np.full(n, when.hour),
        "weekend": np.full(n, float(when.isoweekday() >= 6)),
        "msrp": msrp,
        "act_days": np.where(act_null, np.nan, act_days),
        "wifi": np.where(act_null, np.nan, wifi),
        "day": day,
        "first_null": first_null,
        "osv_code": dev[0],
        "osv_major": dev[1],
        "make_eff": dev[2],
    }
    return cols, obs
