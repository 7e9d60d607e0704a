"""The feature-group registry: every group's name, what computes it and which raw columns it reads.

``conf/features/*.yaml`` toggles these groups by name. A disabled group is neither computed nor
produced. ``missing_flags`` flags the nullable raw inputs of the *enabled* groups; ``group_stats`` is
the one fitted numeric group (its inputs are other groups' outputs, see :mod:`fitted`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ltv.features import families, stateless
from ltv.features.stateless import ExtractContext


@dataclass(frozen=True)
class Group:
    """A named feature group.

    Attributes
    ----------
    name : registry key.
    extract : stateless function ``ctx -> {name: array}``; None for a group without stateless output.
    sources : raw contract columns the group reads (they get a missing flag when ``missing_flags`` is on).
    plain : True for groups built from plain scalar / string columns only (the ``minimal`` option).
    description : one line for humans.
    """

    name: str
    extract: Callable[[ExtractContext], dict[str, np.ndarray]] | None
    sources: list[str] = field(default_factory=list)
    plain: bool = False
    description: str = ""


_F = families
GROUPS: dict[str, Group] = {
    g.name: g
    for g in [
        Group("scalars", stateless.scalars, stateless.SCALAR_COLUMNS, True, "numeric scalar columns as is"),
        Group(
            "categoricals",
            stateless.categoricals,
            stateless.CATEGORICAL_COLUMNS,
            True,
            "string columns, encoded with a vocabulary fixed at fit",
        ),
        Group(
            "time",
            stateless.time_features,
            ["hour", "weekday", "release_date"],
            True,
            "cyclical hour / weekday, weekend flag, device age in months",
        ),
        Group("missing_flags", None, [], False, "1.0 where a nullable raw input of an enabled group is null"),
        Group(
            "maps_basic", _F.maps_basic, _F.GENERIC_MAPS, False, "count/sum/mean/max/min/std of generic maps"
        ),
        Group(
            "histograms", _F.histograms, _F.HIST_MAPS, False, "entropy and top shares of *_hist, hour_ratio"
        ),
        Group(
            "ad_format", _F.ad_format, _F.AD_FORMAT_MAPS, False, "cpm / ctr (and ranks) per ad format b/i/r"
        ),
        Group("sessions", _F.sessions, _F.SESSION_MAPS, False, "daily sessions and durations over apps"),
        Group(
            "purchase_history",
            _F.purchase_history,
            [*_F.PURCHASE_MAPS, "advertiser_bundle"],
            False,
            "past revenue and purchases per bundle / category",
        ),
        Group(
            "recency",
            _F.recency,
            _F.TIMESTAMP_SCALARS + _F.TIMESTAMP_MAPS,
            False,
            "days since first request / purchase / install (unix seconds)",
        ),
        Group("user_actions", _F.user_actions, _F.USER_ACTION_MAPS, False, "map-of-map actions per bundle"),
        Group(
            "lists",
            _F.lists,
            [*_F.LIST_COLUMNS, "advertiser_bundle"],
            False,
            "bundle list lengths, distinct bundles, overlaps",
        ),
        Group(
            "advertiser_context",
            _F.advertiser_context,
            [
                "rev_by_adv",
                *_F.ADVERTISER_TS_MAPS,
                _F.ADVERTISER_ACTIONS,
                "hour_ratio",
                "advertiser_bundle",
                *_F.CATEGORY_KEYED,
                *[c for cols in _F.CATEGORY_KEYED.values() for c in cols],
                *_F.CATEGORY_TS_MAPS,
            ],
            False,
            "the user's history with the advertised app and its category; activity at this hour",
        ),
        Group("whale", _F.whale, _F.WHALE_MAPS, False, "whale-user signals per bundle"),
        Group(
            "interactions",
            _F.interactions,
            [
                "whale_users_bundle_revenue_prank",
                "avg_daily_sessions",
                "iap_revenue_usd_bundle",
                "num_buys_bundle",
            ],
            False,
            "whale x session depth, past revenue x purchase count",
        ),
        Group(
            "group_stats",
            None,
            ["country", "dev_os", "advertiser_category"],
            False,
            "fitted per-country / segment percentile rank and deviation from the group median",
        ),
    ]
}
GROUP_NAMES: list[str] = list(GROUPS)
MINIMAL: list[str] = [g.name for g in GROUPS.values() if g.plain]


def resolve_groups(groups: Mapping[str, bool] | None) -> dict[str, bool]:
    """Every registry group -> enabled flag. ``None`` enables all; a group left out of ``groups`` is off.

    Raises
    ------
    ValueError
        On a name that is not a registry group (the message lists the valid ones).
    TypeError
        On a flag that is not a bool.
    """
    if groups is None:
        return {name: True for name in GROUP_NAMES}
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown feature group(s) {unknown}; valid groups: {GROUP_NAMES}")
    for name, flag in groups.items():
        if not isinstance(flag, bool | np.bool_):
            raise TypeError(f"feature group {name!r}: expected true/false, got {flag!r}")
    return {name: bool(groups.get(name, False)) for name in GROUP_NAMES}
