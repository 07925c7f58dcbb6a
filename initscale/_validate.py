"""Argument checks shared by specs, layouts, gains and adapters.

Every error names the argument, the value received and, for choices, the valid values sorted,
in the Keras style::

    Argument `mode` must be one of 'fan_avg', 'fan_geo_avg', 'fan_in', 'fan_out'. Received: mode='fan-in'.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError listing them."""
    valid = sorted(choices)
    if not isinstance(value, str) or value not in valid:
        listed = ", ".join(repr(c) for c in valid)
        raise ValueError(f"Argument `{name}` must be one of {listed}. Received: {name}={value!r}.")
    return value


def real(
    name: str, value: Any, *, positive: bool = False, nonnegative: bool = False, infinite_ok: bool = False
) -> float:
    """Return ``value`` as a finite float (±inf too if ``infinite_ok``), optionally > 0 or ≥ 0.

    Bools are rejected; NaN always is."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Argument `{name}` must be a real number. Received: {name}={value!r}.")
    out = float(value)
    if math.isnan(out) or (math.isinf(out) and not infinite_ok):
        raise ValueError(f"Argument `{name}` must be finite. Received: {name}={value!r}.")
    if positive and not out > 0.0:
        raise ValueError(f"Argument `{name}` must be > 0. Received: {name}={value!r}.")
    if nonnegative and not out >= 0.0:
        raise ValueError(f"Argument `{name}` must be >= 0. Received: {name}={value!r}.")
    return out


BOOL_STRINGS = ("false", "true")  # what the ``name:key=value`` form parses as a bool (any case)


def boolean(name: str, value: Any) -> bool:
    """Return ``value`` as a bool: a bool (numpy's too), or one of the strings the
    ``"name:key=value"`` form parses as a bool (``"true"``/``"false"``, any case, surrounding
    spaces ignored). Anything else (``0``, ``1``, ``"no"``, ``None``) is rejected, never read by its
    truthiness."""
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in BOOL_STRINGS:
        return value.strip().lower() == "true"
    raise ValueError(
        f"Argument `{name}` must be one of False, True (or the strings 'false', 'true'). Received: {name}={value!r}."
    )


def string(name: str, value: Any) -> str:
    """Return ``value`` if it is a str, else raise a TypeError naming the argument."""
    if not isinstance(value, str):
        raise TypeError(f"Argument `{name}` must be a string. Received: {name}={value!r}.")
    return value


def integer(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int (numpy integers accepted, bools rejected), optionally ≥ minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Argument `{name}` must be an integer. Received: {name}={value!r}.")
    out = int(value)
    if minimum is not None and out < minimum:
        raise ValueError(f"Argument `{name}` must be >= {minimum}. Received: {name}={value!r}.")
    return out


def shape(name: str, value: Any) -> tuple[int, ...]:
    """Return ``value`` as a tuple of non-negative ints."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"Argument `{name}` must be a sequence of non-negative integers. Received: {name}={value!r}.")
    dims = tuple(value)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0:
            raise ValueError(
                f"Argument `{name}` must be a sequence of non-negative integers. Received: {name}={value!r}."
            )
    return tuple(int(d) for d in dims)
