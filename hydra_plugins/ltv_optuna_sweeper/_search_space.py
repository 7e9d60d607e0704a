"""Turn Hydra sweep overrides into Optuna distributions, and trial values back into overrides.

The syntax is the official hydra-optuna-sweeper's, with two deliberate differences:

* ``range(start, stop, step=...)`` keeps Hydra's end-exclusive meaning (``range(1, 5)`` is 1..4); the official
  plugin turns it into an Optuna distribution that includes ``stop``.
* Hydra's grammar makes every ``interval`` bound a float, so an integer interval is asked for with
  ``tag(int, interval(lo, hi))``; ``tag(log, ...)`` samples on a log scale. Both bounds of an interval are
  included (Optuna's convention).

====================================  ==================================================
override                              distribution
====================================  ==================================================
``a=choice(x, y)`` / ``a=x,y``        ``CategoricalDistribution(["x", "y"])``
``group=choice(opt1, opt2)``          categorical over config-group options
``a=range(1, 5)``                     ``IntDistribution(1, 4)``
``a=range(0.1, 0.5, step=0.1)``       ``FloatDistribution(0.1, 0.4, step=0.1)``
``a=shuffle(range(...))``             categorical over the range's values
``a=interval(0.1, 1)``                ``FloatDistribution(0.1, 1.0)``
``a=tag(log, interval(1e-3, 1))``     ``FloatDistribution(0.001, 1.0, log=True)``
``a=tag(int, interval(1, 5))``        ``IntDistribution(1, 5)`` (``tag(int, log, ...)``: log)
``a=3``                               fixed: passed to every trial unchanged
====================================  ==================================================
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

_INTERVAL_TAGS = {"log", "int"}


@dataclass
class SearchSpace:
    """Distributions to sample plus fixed overrides, both keyed by the override key (``+a``, ``grp@pkg``)."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    # Per categorical key: (type, choice) -> the override text that reproduces it ("a\\ b", "[1,2]").
    choice_text: dict[str, dict[tuple[type, Any], str]] = field(default_factory=dict)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """Hydra overrides for one trial: sampled ``params`` first, then the fixed ones."""
        out = []
        for key, value in params.items():
            text = self.choice_text.get(key, {}).get((type(value), value))
            out.append(f"{key}={format_value(value) if text is None else text}")
        out += [f"{key}={value}" for key, value in self.fixed.items() if key not in params]
        return out

    def fingerprint(self) -> str:
        """Short stable hash of the space, used to name a study when none is configured."""
        text = repr(sorted((k, repr(v)) for k, v in self.distributions.items()))
        return hashlib.sha1(text.encode()).hexdigest()[:8]


def format_value(value: Any) -> str:
    """Write a sampled value the way Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_search_space(arguments: Iterable[str], config_loader: Any = None) -> SearchSpace:
    """Parse override strings (``hydra.sweeper.params`` first, then the command line; later wins).

    Raises
    ------
    ValueError
        For a sweep Optuna cannot represent (see :func:`distribution_from_override`).
    """
    parser = OverridesParser.create(config_loader=config_loader)
    space = SearchSpace()
    for override in parser.parse_overrides(list(arguments)):
        key = override.get_key_element()
        for part in (space.distributions, space.fixed, space.choice_text):
            part.pop(key, None)
        if not override.is_sweep_override():
            space.fixed[key] = override.get_value_string()  # as written: quoting and escapes survive
            continue
        space.distributions[key] = distribution_from_override(override)
        if isinstance(space.distributions[key], CategoricalDistribution):
            space.choice_text[key] = _categorical(override)[1]
    return space


def distribution_from_override(override: Override) -> BaseDistribution:
    """The Optuna distribution for one sweep override (see the module table).

    Raises
    ------
    ValueError
        For a tag other than ``log``/``int`` on an interval, any tag elsewhere, an empty range, or bad bounds.
    """
    key = override.get_key_element()
    value = override.value()
    tags = set(getattr(value, "tags", None) or ())
    if override.is_interval_sweep():
        return _interval(key, value.start, value.end, tags)
    if tags:
        raise ValueError(f"sweep '{key}': tags {sorted(tags)} are only supported on interval(...)")
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return _categorical(override)[0]
    if override.is_range_sweep():
        return _range(key, list(override.sweep_iterator()), value.step)
    raise ValueError(f"sweep '{key}': {override.input_line!r} is not supported by the ltv_optuna sweeper")


def _categorical(override: Override) -> tuple[CategoricalDistribution, dict[tuple[type, Any], str]]:
    """Choices as Optuna sees them, plus the override text of each (what Hydra's basic sweeper would pass).

    Optuna stores str/int/float/bool choices; a list or dict choice is kept as its override text.
    """
    choices, text = [], {}
    for value, as_text in zip(override.sweep_iterator(), override.sweep_string_iterator(), strict=True):
        choice = value if isinstance(value, str | int | float | bool) else as_text
        choices.append(choice)
        text[(type(choice), choice)] = as_text
    return CategoricalDistribution(choices), text


def _range(key: str, values: list[Any], step: float) -> BaseDistribution:
    # Hydra already applied its end-exclusive rule; the distribution spans exactly those values.
    if not values:
        raise ValueError(f"sweep '{key}': the range is empty")
    if all(isinstance(v, int) for v in values) and isinstance(step, int):
        return IntDistribution(min(values), max(values), step=abs(step))
    step = abs(float(step))
    low = float(min(values))
    # Hydra accumulates the float steps (0.30000000000000004); snap the top to the grid.
    high = low + step * round((float(max(values)) - low) / step)
    digits = max(0, 12 - int(math.floor(math.log10(step))))
    return FloatDistribution(low, round(high, digits), step=step)


def _interval(key: str, start: float, end: float, tags: set[str]) -> BaseDistribution:
    unknown = tags - _INTERVAL_TAGS
    if unknown:
        raise ValueError(
            f"sweep '{key}': unknown tag(s) {sorted(unknown)}; expected a subset of {sorted(_INTERVAL_TAGS)}"
        )
    if not start < end:
        raise ValueError(f"sweep '{key}': interval needs lo < hi, got interval({start}, {end})")
    log = "log" in tags
    if log and start <= 0:
        raise ValueError(f"sweep '{key}': tag(log, interval(lo, hi)) needs lo > 0, got {start}")
    if "int" in tags:
        if float(start) != int(start) or float(end) != int(end):
            raise ValueError(f"sweep '{key}': tag(int, interval(lo, hi)) needs whole-number bounds")
        return IntDistribution(int(start), int(end), log=log)
    return FloatDistribution(float(start), float(end), log=log)
