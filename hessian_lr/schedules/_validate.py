"""Argument checks shared by the closed-form schedules: clear ``TypeError``/``ValueError``."""

from __future__ import annotations

import math
import operator
from fractions import Fraction
from typing import Any

import numpy as np

__all__: list[str] = []


def real(name: str, value: Any) -> float:
    """``value`` as a finite float; TypeError for non-numbers (and bools)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def positive(name: str, value: Any) -> float:
    """A finite float > 0."""
    value = real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def nonnegative(name: str, value: Any) -> float:
    """A finite float >= 0."""
    value = real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return value


def in_unit(name: str, value: Any, *, low_open: bool = False, what: str = "") -> float:
    """A finite float in [0, 1] (or (0, 1] with ``low_open``)."""
    value = real(name, value)
    if value > 1 or value < 0 or (low_open and value == 0):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}{what}, got {value}")
    return value


def integer(name: str, value: Any, *, minimum: int) -> int:
    """An ``operator.index``-able integer >= ``minimum`` (bools refused)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def fraction(name: str, value: Any) -> Fraction:
    """Exact rational: ints and Fractions as is, floats by their shortest repr (1.1 -> 11/10)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got bool")
    if isinstance(value, (int, Fraction)):
        return Fraction(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return Fraction(repr(float(value)))
    if isinstance(value, str):  # the form to_dict() writes
        try:
            return Fraction(value)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    raise TypeError(f"{name} must be a number, got {type(value).__name__}")


def simplest(q: Fraction) -> int | Fraction:
    """An int when ``q`` is integral, else ``q``."""
    return q.numerator if q.denominator == 1 else q


def ordered(lo_name: str, lo: float, hi_name: str, hi: float) -> None:
    """Require ``lo <= hi``."""
    if hi < lo:
        raise ValueError(f"{hi_name} ({hi}) must be >= {lo_name} ({lo})")


def momenta(base_momentum: Any, max_momentum: Any) -> tuple[float, float]:
    """Momentum bounds in [0, 1] with base <= max."""
    base = real("base_momentum", base_momentum)
    top = real("max_momentum", max_momentum)
    for name, value in (("base_momentum", base), ("max_momentum", top)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    ordered("base_momentum", base, "max_momentum", top)
    return base, top


def step_value(name: str, value: Any) -> float:
    """A finite, non-negative real step (the fractional steps of ``Schedule.lr_at``)."""
    if isinstance(value, bool) or not isinstance(
        value, (int, float, Fraction, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    t = float(value)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return t


def total_steps(owner: str, value: Any, *, minimum: int = 1) -> int:
    """The required ``total_steps`` of a finite schedule: ValueError when missing (as PyTorch)."""
    if value is None:
        raise ValueError(
            f"{owner} needs total_steps (the number of optimizer updates of the run, e.g. "
            "epochs * batches_per_epoch)"
        )
    return integer("total_steps", value, minimum=minimum)
