"""The error a request gets when it breaks the input contract, and the wording of each expectation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ltv import contract as c

NUMBER_TYPES = (int, float, np.integer, np.floating)
SEQ_TYPES = (list, tuple, np.ndarray)

EXPECT = {
    c.STRING: "a string or null",
    c.NUMBER: "a number (integer or float) or null",
    c.MAP: "a map of string -> number: a JSON object {key: number}, a list of [key, number] pairs, or null",
    c.MAP_OF_MAP: "a map of string -> (map of string -> number): a JSON object of JSON objects or "
    "[key, value] pair lists at both levels, or null",
    c.LIST: "a list of strings or null",
}


class InputError(ValueError):
    """A request does not follow the input contract; the message names the column and the expectation.

    Attributes
    ----------
    column : str or None
        The offending column (None for frame-level problems such as an empty frame).
    expected : str
        What the column (or frame) should have held.
    """

    def __init__(self, message: str, column: str | None = None, expected: str = ""):
        super().__init__(message)
        self.column = column
        self.expected = expected


def is_null(v) -> bool:
    """None, pd.NA or a float NaN: what pandas and JSON use for a missing cell."""
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def describe(v) -> str:
    """A short ``type value`` text of an offending cell for an error message."""
    if is_null(v):
        return "null"
    text = repr(v)
    return f"{type(v).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def cell_error(column: str, row: int, value, expected: str | None = None) -> InputError:
    """The error for one bad cell: names the column, the row, the expectation and what came."""
    expected = expected or EXPECT[c.KIND.get(column, c.STRING)]
    return InputError(
        f"column '{column}' row {row}: expected {expected}, got {describe(value)}", column, expected
    )


def is_number(v) -> bool:
    """An int or float (Python or numpy), not a bool."""
    return isinstance(v, NUMBER_TYPES) and not isinstance(v, (bool, np.bool_))
