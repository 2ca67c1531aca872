"""Validation helpers used at the public boundary.

Every message names the argument in backticks, the constraint, and the value received.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

__all__ = [
    "check_time_unit",
    "check_init_scalar",
    "check_int",
    "check_real",
    "check_choice",
    "check_finite_array",
]


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an ``int`` or raise a ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and not isinstance(value, bool):
            value = int(value)
        else:
            raise TypeError(f"`{name}` must be an integer, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be an integer <= {maximum}, got {value}.")
    return value


def check_real(
    name: str,
    value,
    *,
    lower: float | None = None,
    upper: float | None = None,
    lower_open: bool = False,
    upper_open: bool = False,
) -> float:
    """Return ``value`` as a finite ``float`` inside the given interval, or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    lo = "(" if lower_open else "["
    hi = ")" if upper_open else "]"
    interval = f"{lo}{'-inf' if lower is None else lower}, {'inf' if upper is None else upper}{hi}"
    if lower is not None and (value < lower or (lower_open and value == lower)):
        raise ValueError(f"`{name}` must lie in {interval}, got {value}.")
    if upper is not None and (value > upper or (upper_open and value == upper)):
        raise ValueError(f"`{name}` must lie in {interval}, got {value}.")
    return value


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise list the valid ones."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


def check_finite_array(name: str, value, *, ndim: int | None = None, shape=None) -> np.ndarray:
    """Return ``value`` as a float array, checking finiteness, ``ndim`` and ``shape``."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`{name}` must be an array of real numbers, got {value!r}.") from exc
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"`{name}` must be a {ndim}-dimensional array, got shape {arr.shape}.")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"`{name}` must be finite; entry {tuple(int(i) for i in bad)} is {arr[tuple(bad)]}.")
    return arr


def check_init_scalar(init, choices, *, name: str = "init", lower: float = 0.0, upper: float | None = None,
                      open_bounds: bool = True):
    """Common part of the simulators' ``init`` parsing.

    Returns ``("uniform", None)`` for the string ``"uniform"``, ``("scalar", x)`` for a real
    number in the given interval, and ``None`` for anything else (the caller handles its
    model-specific forms).  Other strings and booleans raise, listing ``choices``.
    """
    valid = ", ".join(choices)
    if isinstance(init, str):
        if init == "uniform":
            return "uniform", None
        raise ValueError(f"`{name}` must be one of {valid}; got {init!r}.")
    if isinstance(init, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be one of {valid}; got {init!r}.")
    if isinstance(init, numbers.Real):
        return "scalar", check_real(name, init, lower=lower, upper=upper, lower_open=open_bounds,
                                    upper_open=open_bounds and upper is not None)
    return None


def check_time_unit(value, choices, aliases) -> str | None:
    """``None`` stays ``None``; otherwise the canonical time unit from ``choices``, after
    mapping space-free ``aliases`` (e.g. ``"steps/d"``); a TypeError/ValueError names
    ``time_unit`` and lists the choices."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"`time_unit` must be a string, got {value!r}.")
    return check_choice("time_unit", aliases.get(value.replace(" ", ""), value), choices)
