"""The feature-group registry and its Hydra options (conf/features/*.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ltv.features import GROUP_NAMES, MINIMAL, FeatureBuilder, registry
from tests.test_features_extract import mixed_table

CONF = Path(__file__).resolve().parents[1] / "conf"


def _features(overrides: list[str], option: str = "all"):
    with initialize_config_dir(config_dir=str(CONF / "features"), version_base="1.3"):
        return compose(config_name=option, overrides=overrides)


def test_all_option_enables_every_group_and_instantiates():
    fb = instantiate(_features([]))
    assert isinstance(fb, FeatureBuilder)
    assert fb.groups_ == {g: True for g in GROUP_NAMES}


def test_group_can_be_switched_off_from_the_command_line():
    fb = instantiate(_features(["groups.histograms=false"]))
    assert fb.groups_["histograms"] is False and fb.groups_["whale"] is True
    S = fb.extract(mixed_table(20))
    hist = [c for c in S.columns if c.startswith(("country_hist__", "hour_ratio__"))]
    # advertiser_context still reads hour_ratio (its lookup and missing flag), no histogram statistic
    assert sorted(hist) == ["hour_ratio__current", "hour_ratio__missing"]
    assert "whale_users_bundle_total_revenue__max" in S.columns


def test_minimal_option_has_no_nested_features():
    fb = instantiate(_features([], option="minimal"))
    assert [g for g, on in fb.groups_.items() if on] == MINIMAL == ["scalars", "categoricals", "time"]
    S = fb.extract(mixed_table(20))
    X = fb.fit(S).transform(S)
    nested = set(registry.GROUPS["maps_basic"].sources + registry.GROUPS["lists"].sources)
    assert not [c for c in X.columns if "__" in c or c.split("__")[0] in nested - {"advertiser_bundle"}]
    assert {"release_msrp", "country", "hour_sin", "device_age_months"} <= set(X.columns)


def test_disabled_group_is_not_computed(monkeypatch):
    calls = []
    group = registry.GROUPS["histograms"]
    monkeypatch.setitem(
        registry.GROUPS,
        "histograms",
        registry.Group("histograms", lambda ctx: calls.append(1) or {}, group.sources),
    )
    FeatureBuilder(groups={g: g != "histograms" for g in GROUP_NAMES}).extract(mixed_table(5))
    assert calls == []
    FeatureBuilder().extract(mixed_table(5))
    assert calls == [1]


def test_unknown_group_is_an_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"histogramz.*valid groups.*histograms"):
        FeatureBuilder(groups={"histogramz": True})
    with pytest.raises(TypeError, match="true/false"):
        FeatureBuilder(groups={"histograms": "yes"})
    with pytest.raises(TypeError, match="unknown option"):
        FeatureBuilder(max_categorys=3)


def test_every_group_alone_extracts_and_fits():
    table = mixed_table(60)
    for g in GROUP_NAMES:
        fb = FeatureBuilder(groups={g: True}, min_category_count=1, min_group_count=5)
        X = fb.fit_transform(fb.extract(table))
        assert len(X) == 60, g
        if g not in ("missing_flags", "group_stats"):  # these describe other groups' inputs / outputs
            assert X.shape[1] > 0, g
    fb = FeatureBuilder(groups={"group_stats": True, "scalars": True}, min_group_count=5)
    X = fb.fit_transform(fb.extract(table))
    assert "release_msrp__country_pct" in X.columns and "country" not in X.columns
