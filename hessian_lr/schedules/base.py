"""The ``Schedule`` base class, its preview type and the registry of schedule classes.

A schedule is a pure function of the step (one optimizer update = one step; step 0 is the value
used by the first update). Subclasses are small frozen keyword-only dataclasses; every subclass
registers itself by class name, so ``schedule_from_dict`` rebuilds any schedule from
``Schedule.to_dict()`` and ``SCHEDULES`` / ``schedule_names()`` list them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import numpy as np

from . import _validate as v

__all__ = ["SCHEDULES", "Schedule", "SchedulePreview", "schedule_from_dict", "schedule_names"]

_CLASSES: dict[str, type[Schedule]] = {}

#: Every registered schedule class by name (read-only view; subclasses register on definition).
SCHEDULES: Mapping[str, type[Schedule]] = MappingProxyType(_CLASSES)


def schedule_names() -> list[str]:
    """Names of the registered schedule classes, sorted (the ``type`` of ``to_dict()``).

    Example:
        >>> "OneCycle" in schedule_names()
        True
    """
    return sorted(_CLASSES)


class SchedulePreview(NamedTuple):
    """Values of a schedule at steps 0 .. num_steps - 1 (index = step), for plotting.

    Attributes:
        lr: learning rates, shape (num_steps,), float64.
        momentum: momenta (or Adam beta1), shape (num_steps,), float64; ``None`` when the schedule
            defines no momentum.
    """

    lr: np.ndarray
    momentum: np.ndarray | None


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Base class: a learning rate (and optionally momentum) as a pure function of the step.

    Subclasses are frozen keyword-only dataclasses implementing ``_lr(t)`` (and ``_momentum(t)``
    when ``defines_momentum``) and ``lr_bounds()``; they validate their fields in
    ``__post_init__``. ``_lr`` must accept a float ``t`` as well (the fractional steps of
    :meth:`lr_at`), or the subclass overrides ``_lr_frac``. Values are clipped to
    ``lr_bounds()``, which only floating-point rounding at extreme ratios (e.g. a div_factor of
    1e16) could otherwise leave.

    Attributes:
        total_steps: number of steps the schedule is defined for (steps 0 .. total_steps - 1), or
            ``None`` if it runs forever.
        defines_momentum: whether ``momentum(step)`` returns values (class constant).
        per_group_fields: the fields that ``ScheduleLR.per_group`` may vary per parameter group.
    """

    total_steps: int | None = field(default=None, init=False, repr=False)
    defines_momentum: ClassVar[bool] = False
    per_group_fields: ClassVar[tuple[str, ...]] = ()
    _exact_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register the subclass under its class name."""
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalizing a frozen field in __post_init__

    def _check_step(self, step: int) -> int:
        t = v.integer("step", step, minimum=0)
        if self.total_steps is not None and t >= self.total_steps:
            raise ValueError(
                f"step {t} is past the end of {type(self).__name__} (total_steps="
                f"{self.total_steps}, valid steps 0..{self.total_steps - 1})"
            )
        return t

    def _check_frac(self, step: float) -> float:
        t = v.step_value("step", step)
        if self.total_steps is not None and t > self.total_steps - 1:
            raise ValueError(
                f"step {t} is past the end of {type(self).__name__} (total_steps="
                f"{self.total_steps}, valid steps 0..{self.total_steps - 1})"
            )
        return t

    def lr(self, step: int) -> float:
        """Learning rate used by update number ``step`` (0-based integer)."""
        return self._clip(self._lr(self._check_step(step)))

    def _clip(self, value: float) -> float:
        """``value`` within ``lr_bounds()``: only rounding at extreme ratios can leave them."""
        lo, hi = self.lr_bounds()
        return min(max(float(value), lo), hi)

    def momentum(self, step: int) -> float | None:
        """Momentum (SGD ``momentum`` or Adam ``beta1``) at ``step``; ``None`` if not defined."""
        t = self._check_step(step)
        return float(self._momentum(t)) if self.defines_momentum else None

    def lr_at(self, step: float) -> float:
        """The schedule at a real-valued step (``ScheduleLR.step(epoch)`` with a float epoch).

        Integral values give exactly :meth:`lr`; between integers every formula here is
        evaluated at the fractional step (PyTorch's closed forms do the same with float epochs,
        e.g. ``CosineAnnealingWarmRestarts.step(0.5)``).
        """
        t = self._check_frac(step)
        if t.is_integer():
            return self.lr(int(t))
        return self._clip(self._lr_frac(t))

    def momentum_at(self, step: float) -> float | None:
        """Momentum at a real-valued step (see :meth:`lr_at`); ``None`` if not defined."""
        t = self._check_frac(step)
        if not self.defines_momentum:
            return None
        if t.is_integer():
            return self.momentum(int(t))
        return float(self._momentum(t))

    def _lr_frac(self, t: float) -> float:
        return self._lr(t)  # type: ignore[arg-type]

    def lr_bounds(self) -> tuple[float, float]:
        """(lowest, highest) LR the schedule can return at any step: its stated range."""
        raise NotImplementedError

    def _lr(self, t: int) -> float:
        raise NotImplementedError

    def _momentum(self, t: int) -> float:
        raise NotImplementedError

    def preview(self, num_steps: int | None = None) -> SchedulePreview:
        """Learning rates (and momenta) at steps 0 .. num_steps - 1, for plotting.

        Args:
            num_steps: how many steps; defaults to ``total_steps`` (required when that is None).

        Returns:
            SchedulePreview with arrays of shape (num_steps,), float64.
        """
        if num_steps is None:
            if self.total_steps is None:
                raise ValueError(f"{type(self).__name__} has no end: pass num_steps to preview()")
            num_steps = self.total_steps
        n = v.integer("num_steps", num_steps, minimum=0)
        if self.total_steps is not None and n > self.total_steps:
            raise ValueError(f"num_steps={n} is past total_steps={self.total_steps}")
        lrs = np.clip(self._preview_lr(n), *self.lr_bounds())
        moms = None
        if self.defines_momentum:
            moms = np.array([self._momentum(t) for t in range(n)], dtype=np.float64)
        return SchedulePreview(lrs, moms)

    def _preview_lr(self, n: int) -> np.ndarray:
        return np.array([self._lr(t) for t in range(n)], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python description (str/int/float/bool/list), safe for ``torch.save`` and JSON."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if isinstance(value, Fraction):  # exact fields as "p/q"; elsewhere a float suffices
                value = str(value) if f.name in self._exact_fields else float(value)
            elif isinstance(value, np.generic):
                value = value.item()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def schedule_from_dict(description: Mapping[str, Any]) -> Schedule:
    """Rebuild a schedule from ``Schedule.to_dict()`` output.

    Example:
        >>> from hessian_lr.schedules import Cyclic
        >>> s = Cyclic(base_lr=0.1, max_lr=1.0, step_size_up=4)
        >>> schedule_from_dict(s.to_dict()) == s
        True
    """
    if not isinstance(description, Mapping):
        raise TypeError(f"description must be a dict, got {type(description).__name__}")
    kwargs = dict(description)
    name = kwargs.pop("type", None)
    if name not in _CLASSES:
        raise ValueError(f"unknown schedule type {name!r}; known: {schedule_names()}")
    return _CLASSES[name](**kwargs)


def finite_or_raise(name: str, value: float, hint: str) -> float:
    """Require a finite value (e.g. an LR bound that a large gamma could overflow)."""
    if not math.isfinite(value):
        raise ValueError(f"{name} overflows ({value}): {hint}")
    return value
