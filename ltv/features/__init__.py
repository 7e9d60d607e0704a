"""Feature extraction: stateless nested-column reductions from Arrow, train-only fitted stages, registry."""

from __future__ import annotations

from ltv.features.builder import FeatureBuilder
from ltv.features.registry import GROUP_NAMES, GROUPS, MINIMAL, resolve_groups

__all__ = ["FeatureBuilder", "GROUPS", "GROUP_NAMES", "MINIMAL", "resolve_groups"]
