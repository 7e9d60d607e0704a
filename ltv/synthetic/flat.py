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

from ltv.synthetic.arrays import numbers_with_nulls, strings_with_nulls
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


def _device(rng: np.random.Generator, lat: dict, n: int) -> tuple[dict, np.ndarray, np.ndarray]:
    ios, wealth = lat["ios"], lat["wealth"]
    make_idx = _pick(rng, _MAKE_CDF, n)
    make = np.where(ios, "apple", np.array(ANDROID_MAKES)[make_idx])
    gen = np.clip(np.round(2.0 + 1.2 * wealth + rng.normal(0, 1.5, n)), 0, 8).astype(int)  # newer if wealthy
    model = np.where(
        ios,
        np.char.add("iphone ", (gen + 8).astype(str)),
        np.char.add(make, np.char.add(" m", gen.astype(str))),
    )
    major = np.where(ios, 14 + np.minimum(gen // 2, 4), 9 + np.minimum(gen // 1.5, 6)).astype(int)
    osv = np.char.add(np.char.add(major.astype(str), "."), rng.integers(0, 7, n).astype(str))
    osv = np.char.add(np.char.add(osv, "."), rng.integers(0, 4, n).astype(str))
    year = np.clip(2017 + gen + rng.integers(-1, 2, n), 2016, 2025)
    month = np.array(MONTHS)[rng.integers(0, 12, n)]
    log_msrp = np.where(ios, 6.6, ANDROID_MAKE_MSRP[make_idx]) + 0.12 * gen + rng.normal(0, 0.25, n)
    msrp = np.round(np.exp(log_msrp), 0) - 0.01
    msrp_null = _nulls(rng, n, 0.103)
    make_null = _nulls(rng, n, 0.019)
    # brands differ in buyers beyond their price (msrp is often null; the make is not)
    make_eff = np.where(make_null | ios, 0.0, 0.35 * (ANDROID_MAKE_MSRP[make_idx] - 5.5))
    cols = {
        "dev_make": strings_with_nulls(make, make_null),
        "dev_model": strings_with_nulls(model, _nulls(rng, n, 0.002)),
        "dev_os": pa.array(np.where(ios, "ios", "android").astype(object), type=pa.string()),
        "dev_osv": strings_with_nulls(osv, _nulls(rng, n, 0.009)),
        "release_date": strings_with_nulls(
            np.char.add(np.char.add(year.astype(str), "_"), month), _nulls(rng, n, 0.004)
        ),
        "release_msrp": numbers_with_nulls(msrp, msrp_null),
    }
    return cols, np.where(msrp_null, np.nan, msrp), (osv, major, make_eff)


def _advertiser(rng: np.random.Generator, lat: dict, n: int) -> dict:
    tax_name = WORLD.taxonomy[lat["tax"]]
    sub = np.array([t.split("/", 1)[1] for t in WORLD.taxonomy])[lat["tax"]]
    cat_null = _nulls(rng, n, 0.097)  # category and subcategory share one mask
    return {
        "advertiser_bundle": pa.array(
            WORLD.bundles[WORLD.advertisers[lat["adv"]]].astype(object), type=pa.string()
        ),
        "advertiser_category": strings_with_nulls(WORLD.categories[lat["cat"]], cat_null),
        "advertiser_subcategory": strings_with_nulls(sub, cat_null),
        "advertiser_bottom_taxonomy_level": strings_with_nulls(tax_name, _nulls(rng, n, 0.375)),
    }


def draw_flat(rng: np.random.Generator, lat: dict, when: dt.datetime) -> tuple[dict, dict]:
    """String and number columns of one hour, plus the numeric summaries the label model reads.

    ``when`` is the partition hour (UTC); returns ``(columns, obs)``.
    """
    n = len(lat["country"])
    country_null = _nulls(rng, n, 0.0004)
    region_k = _pick(rng, np.cumsum(zipf_p(30, 1.0)), n)
    region = np.char.add(
        np.char.add(WORLD.countries[lat["country"]], "-r"), np.char.zfill(region_k.astype(str), 2)
    )
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
        "carrier": strings_with_nulls(np.array(CARRIERS)[_pick(rng, _CARRIER_CDF, n)], _nulls(rng, n, 0.405)),
        "country": strings_with_nulls(WORLD.countries[lat["country"]], country_null),
        "region": strings_with_nulls(region, country_null | _nulls(rng, n, 0.03)),
        **dev_cols,
        "hour": pa.array(np.full(n, f"{when.hour:02d}", dtype=object), type=pa.string()),
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
        "osv": dev[0],
        "osv_major": dev[1],
        "make_eff": dev[2],
    }
    return cols, obs
