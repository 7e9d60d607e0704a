"""The fixed "world" of the synthetic generator: vocabularies, pools and their fixed effects.

Everything here is derived from a constant seed, never from the user's seed, so every data set shares one
world (country and advertiser effects, the bundle pool) and a different ``seed`` only draws a different
sample from the same distribution. The effects are on the buyer logit (``*_logit``) and on the log of a
buyer's revenue (``*_rev``); docs/generator.md lists them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

WORLD_SEED = 20251001

# ISO 3166-1 alpha-2, lower case; the head (with explicit shares and effects) first, then the long tail.
_ISO_TAIL = (
    "ad ae af ag ai al am ao aq as at au aw ax az ba bb be bf bg bh bi bj bl bm bn bo bq bs bt bw by bz cc "
    "cd cf cg ch ci ck cl cm cn cr cu cv cw cx cy cz dj dk dm do dz ec ee eh er et fi fj fk fm fo ga gd ge "
    "gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk hn hr ht hu ie il im io iq ir is je jm jo ke kg kh ki "
    "km kn kp kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mf mg mh mk ml mm mn mo mp mq mr ms mt "
    "mu mv mw my mz na nc ne nf ni nl no np nr nu nz om pa pe pf pg pl pm pn pr ps pt pw py qa re ro rs rw "
    "sb sc sd se sg sh si sj sk sl sm sn so sr ss st sv sx sy sz tc td tf tg tj tk tl tm tn to tt tv tw tz "
    "ua ug um uy uz va vc ve vg vi vu wf ws ye yt zm zw"
).split()
# country: (share of rows, iOS share, wealth, buyer-logit effect, log-revenue effect)
_HEAD = {
    "us": (0.130, 0.50, 1.6, 0.50, 0.00),
    "in": (0.120, 0.04, -1.2, -0.60, 0.10),
    "br": (0.080, 0.12, -0.2, -0.35, -0.35),
    "id": (0.060, 0.06, -0.6, -0.80, -0.50),
    "jp": (0.040, 0.65, 1.4, 1.35, 0.45),
    "mx": (0.040, 0.18, -0.1, -0.25, -0.30),
    "ph": (0.035, 0.08, -0.7, -0.70, -0.50),
    "tr": (0.030, 0.14, -0.2, -0.30, -0.40),
    "vn": (0.025, 0.15, -0.6, -0.70, -0.50),
    "th": (0.025, 0.22, -0.3, -0.40, -0.35),
    "de": (0.022, 0.35, 1.1, 0.55, 0.20),
    "gb": (0.022, 0.48, 1.2, 0.70, 0.20),
    "fr": (0.020, 0.33, 1.0, 0.40, 0.10),
    "ru": (0.020, 0.20, 0.0, -0.20, -0.20),
    "kr": (0.015, 0.30, 1.2, 1.00, 0.35),
    "eg": (0.015, 0.05, -0.9, -1.10, -0.60),
    "pk": (0.015, 0.03, -1.2, -1.40, -0.60),
    "ng": (0.015, 0.04, -1.1, -1.30, -0.60),
    "bd": (0.012, 0.03, -1.3, -1.50, -0.60),
    "co": (0.012, 0.12, -0.3, -0.45, -0.40),
    "ar": (0.012, 0.12, -0.2, -0.40, -0.40),
    "sa": (0.012, 0.35, 1.0, 0.60, 0.35),
    "it": (0.012, 0.30, 0.9, 0.30, 0.05),
    "es": (0.012, 0.25, 0.8, 0.25, 0.05),
    "ca": (0.010, 0.50, 1.4, 0.80, 0.20),
    "au": (0.008, 0.50, 1.4, 0.80, 0.20),
    "tw": (0.008, 0.45, 1.0, 0.90, 0.30),
    "my": (0.008, 0.20, 0.2, -0.10, -0.20),
    "za": (0.008, 0.12, -0.4, -0.50, -0.30),
    "ua": (0.007, 0.15, -0.4, -0.60, -0.40),
}
_TAIL = [c for c in _ISO_TAIL if c not in _HEAD]

# 22 advertiser categories: (share of advertisers, buyer-logit effect, log-revenue effect, subcategories).
_CATEGORIES = {
    "game": (0.30, -0.75, -0.80, ["casual", "puzzle", "arcade", "action", "hypercasual", "racing"]),
    "games": (0.10, 0.05, 0.20, ["strategy", "role playing", "simulation", "card", "board"]),
    "application": (0.10, 1.45, 1.40, ["utility", "tools", "personalization"]),
    "real money casino": (0.04, 2.40, 0.80, ["slots", "poker", "sports betting"]),
    "shopping": (0.06, 0.55, 0.30, ["marketplace", "fashion", "grocery"]),
    "entertainment": (0.05, 0.20, 0.10, ["streaming", "video"]),
    "social": (0.05, 0.10, 0.00, ["messaging", "community"]),
    "finance": (0.04, 0.30, 0.40, ["banking", "crypto", "payments"]),
    "travel": (0.03, 0.20, 0.50, ["booking", "ride hailing"]),
    "lifestyle": (0.03, 0.10, 0.00, ["beauty", "home"]),
    "health & fitness": (0.03, 0.50, 0.20, ["workout", "meditation"]),
    "education": (0.03, 0.40, 0.10, ["language", "kids"]),
    "news": (0.02, -0.30, -0.30, ["general news"]),
    "music": (0.02, 0.30, -0.10, ["music streaming"]),
    "productivity": (0.02, 0.50, 0.20, ["office", "notes"]),
    "photo & video": (0.02, 0.60, 0.00, ["editor", "camera"]),
    "food & drink": (0.02, 0.40, 0.10, ["delivery", "recipes"]),
    "sports": (0.02, 0.00, 0.00, ["fantasy sports", "scores"]),
    "utilities": (0.02, 0.00, -0.20, ["cleaner", "vpn"]),
    "dating": (0.02, 0.80, 0.50, ["dating"]),
    "books": (0.01, 0.20, 0.00, ["comics", "ebooks"]),
    "business": (0.01, 0.10, 0.30, ["crm"]),
}

MONTHS = "january february march april may june july august september october november december".split()
ACTIONS = ["install", "open", "register", "tutorial", "level_up", "add_to_cart", "purchase", "subscribe"]
LANGUAGES = "en es pt hi id ja ko de fr ru tr vi th ar it zh pl nl".split()
ANDROID_MAKES = [
    "samsung",
    "xiaomi",
    "oppo",
    "vivo",
    "motorola",
    "realme",
    "huawei",
    "google",
    "oneplus",
    "tecno",
]
ANDROID_MAKE_P = np.array([0.36, 0.18, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.04, 0.03])
ANDROID_MAKE_MSRP = np.array([5.8, 5.3, 5.4, 5.3, 5.3, 5.1, 5.6, 6.5, 6.2, 4.8])  # log USD
CARRIERS = "verizon t-mobile at&t jio airtel vi telkomsel claro vivo tim movistar docomo softbank kddi vodafone orange turkcell globe smart mts".split()
FORMATS = ["b", "i", "r"]  # banner, interstitial, rewarded


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def zipf_p(n: int, a: float) -> np.ndarray:
    """Zipf-like probabilities over ranks 1..n (a > 0): a long tail with a heavy head."""
    p = 1.0 / np.arange(1, n + 1) ** a
    return p / p.sum()


@dataclass(frozen=True)
class World:
    """Vocabularies and fixed effects; one instance per process (``WORLD``)."""

    countries: np.ndarray
    country_p: np.ndarray
    country_ios: np.ndarray
    country_wealth: np.ndarray
    country_logit: np.ndarray
    country_rev: np.ndarray
    categories: np.ndarray
    category_logit: np.ndarray
    category_rev: np.ndarray
    taxonomy: np.ndarray  # bottom taxonomy names, "<category>/<subcategory>"
    taxonomy_category: np.ndarray  # index into categories
    bundles: np.ndarray  # 40-hex app bundle ids, by popularity
    bundle_p: np.ndarray
    bundle_taxonomy: np.ndarray  # index into taxonomy
    advertisers: np.ndarray  # index into bundles
    advertiser_p: np.ndarray
    advertiser_logit: np.ndarray


def _build_world() -> World:
    rng = np.random.default_rng(WORLD_SEED)
    head = np.array(list(_HEAD.values()))
    tail_n = len(_TAIL)
    tail_p = zipf_p(tail_n, 1.1) * (1.0 - head[:, 0].sum())
    countries = np.array(list(_HEAD) + _TAIL)
    wealth_t = rng.normal(-0.3, 0.8, tail_n)
    cats = list(_CATEGORIES)
    tax_names, tax_cat = [], []
    for ci, c in enumerate(cats):
        for sub in _CATEGORIES[c][3]:
            tax_names.append(f"{c}/{sub}")
            tax_cat.append(ci)
    n_bundles = 3000
    cat_share = np.array([v[0] for v in _CATEGORIES.values()])
    bundle_cat = rng.choice(len(cats), n_bundles, p=cat_share / cat_share.sum())
    bundle_tax = np.array([rng.choice(np.flatnonzero(np.array(tax_cat) == c)) for c in bundle_cat])
    n_adv = 400
    return World(
        countries=countries,
        country_p=np.concatenate([head[:, 0], tail_p]),
        country_ios=np.concatenate([head[:, 1], np.clip(rng.normal(0.15, 0.08, tail_n), 0.02, 0.6)]),
        country_wealth=np.concatenate([head[:, 2], wealth_t]),
        country_logit=np.concatenate([head[:, 3], 0.8 * wealth_t - 0.2 + rng.normal(0, 0.3, tail_n)]),
        country_rev=np.concatenate([head[:, 4], 0.25 * wealth_t + rng.normal(0, 0.15, tail_n)]),
        categories=np.array(cats),
        category_logit=np.array([v[1] for v in _CATEGORIES.values()]),
        category_rev=np.array([v[2] for v in _CATEGORIES.values()]),
        taxonomy=np.array(tax_names),
        taxonomy_category=np.array(tax_cat),
        bundles=np.array([_sha1(f"bundle-{i}") for i in range(n_bundles)]),
        bundle_p=zipf_p(n_bundles, 0.9),
        bundle_taxonomy=bundle_tax,
        advertisers=rng.choice(n_bundles, n_adv, replace=False),
        advertiser_p=zipf_p(n_adv, 0.8),
        advertiser_logit=rng.normal(0.0, 0.35, n_adv),
    )


WORLD = _build_world()
