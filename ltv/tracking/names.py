"""Run names that say what distinguishes a run: its command-line overrides, not ``burly-chimp-148``.

``python train.py -m classifier=lgbm_deep sampling=histos_aggressive`` names its jobs
``classifier=lgbm_deep,sampling=histos_aggressive``; a run without overrides is ``default``; an
experiment option with a ``tracking.run_name`` (``experiment=deep``) is named by it, followed by the other
overrides. A sweep's parent is named by its Optuna study and each trial by its number (:func:`trial_name`).
"""

from __future__ import annotations

MAX_LEN = 80  # the runs table shows about this much of a name
DEFAULT_NAME = "default"
# Overrides that do not distinguish what a run computed (where it writes and runs, what a sweeper searches).
_SKIP_PREFIXES = ("hydra.", "hydra/", "hparams_search", "paths.", "tracking.", "cluster")


def _short_value(value: str) -> str:
    """A path as its last part (``/data/export/`` -> ``export``); other values unchanged."""
    if "/" in value:
        return value.rstrip("/").rsplit("/", 1)[-1] or value
    return value


def run_name(overrides: list[str], base: str | None = None, max_len: int = MAX_LEN) -> str:
    """The name of a run from its Hydra task overrides (``HydraConfig.get().overrides.task``).

    Parameters
    ----------
    overrides : list of str
        ``key=value`` strings as Hydra records them (``+key`` / ``++key`` / ``~key`` prefixes allowed).
    base : str, optional
        A configured name (``tracking.run_name``, set by experiment options): it replaces the
        ``experiment=...`` override and leads the name.
    max_len : int
        Longer names are cut and end in ``...``.

    Returns
    -------
    str
        E.g. ``classifier=lgbm_deep,sampling=histos_aggressive``, ``deep,seed=3`` or ``default``.
    """
    return _join(_parts(overrides, base), ",", max_len)


def _parts(overrides: list[str], base: str | None = None) -> list[str]:
    parts = [base] if base else []
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if key.startswith(_SKIP_PREFIXES) or (base and key == "experiment"):
            continue
        parts.append(f"{key}={_short_value(value)}" if sep else key)
    return parts


def _join(parts: list[str], sep: str, max_len: int) -> str:
    name = sep.join(parts) or DEFAULT_NAME
    return name if len(name) <= max_len else name[: max_len - 3] + "..."


def trial_name(number: int) -> str:
    """The run name of Optuna trial ``number`` (its parent run carries the study's name)."""
    return f"trial-{number}"


def multirun_name(overrides: list[str], base: str | None = None) -> str:
    """The parent run of a plain multirun: ``multirun``, ``base`` (as in :func:`run_name`) and the sweep
    overrides, space-separated as typed (the sweep values themselves are comma-separated)."""
    return "multirun " + _join(_parts(overrides, base), " ", MAX_LEN - len("multirun "))
