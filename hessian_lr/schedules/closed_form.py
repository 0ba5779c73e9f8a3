"""Closed-form learning-rate (and momentum) schedules: pure functions of the integer step.

Every schedule is a small frozen dataclass with ``lr(step)``, ``momentum(step)`` (``None`` where
the schedule defines no momentum), ``preview(num_steps)`` for plotting and ``total_steps`` (``None``
for schedules without an end). A *step* is one optimizer update (one batch); step 0 is the value
used by the first update. Nothing here touches an optimizer: ``hessian_lr.lr_scheduler.ScheduleLR``
applies these to ``torch.optim`` parameter groups.

Schedules and their sources:

- ``Cyclic``: triangular, triangular2 and exp_range cyclical learning rates. Smith, "Cyclical
  Learning Rates for Training Neural Networks", WACV 2017 (arXiv:1506.01186), Sec. 3.1:
  cycle = floor(1 + t/(2s)), x = |t/s - 2 cycle + 1|, lr = base + (max - base) max(0, 1 - x) phi.
  With ``step_size_down`` it also covers the asymmetric form of PyTorch's ``CyclicLR`` (whose
  momentum cycling in counter-phase it reproduces).
- ``OneCycle``: the 1cycle policy of Smith & Topin, "Super-Convergence: Very Fast Training of Neural
  Networks Using Large Learning Rates" (arXiv:1708.07120), Sec. 3: linear base -> max -> base over
  2 * step_size, then an annihilation tail to a few orders of magnitude below base; cyclical
  momentum in counter-phase (0.95 -> 0.85 -> 0.95, held at the maximum in the tail) as in Smith,
  "A disciplined approach to neural network hyper-parameters" (arXiv:1803.09820), Sec. 4.
- ``OneCycleCosine``: the fastai two-phase (or three-phase) cosine one-cycle, exactly as
  ``torch.optim.lr_scheduler.OneCycleLR`` defines it (``pct_start``, ``div_factor``,
  ``final_div_factor``, ``three_phase``, ``anneal_strategy``).
- ``SGDR``: cosine annealing with warm restarts, Loshchilov & Hutter, "SGDR: Stochastic Gradient
  Descent with Warm Restarts", ICLR 2017 (arXiv:1608.03983), Eq. (5). T_cur advances per batch in
  fractional epochs; restart boundaries are computed in exact rational arithmetic (non-integer
  ``T_mult`` allowed), unlike PyTorch's float ``log`` which misplaces some of them.
- ``MultiStep``: piecewise constant, the baseline of the Super-Convergence paper (0.35, x0.1 at
  62.5 % and 87.5 % of the run: ``MultiStep.from_fractions``).
- ``StepDecay``, ``ExpDecay``, ``InvDecay``, ``Constant``: the Caffe ``step``, ``exp``, ``inv`` and
  ``fixed`` policies (Jia et al., "Caffe", 2014) used by the LeNet / CIFAR studies of the CLR paper.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np

__all__ = [
    "Schedule",
    "SchedulePreview",
    "Cyclic",
    "OneCycle",
    "OneCycleCosine",
    "SGDR",
    "MultiStep",
    "StepDecay",
    "ExpDecay",
    "InvDecay",
    "Constant",
    "schedule_from_dict",
]

_REGISTRY: dict[str, type[Schedule]] = {}


class SchedulePreview(NamedTuple):
    """Values of a schedule at steps 0 .. num_steps - 1 (index = step), for plotting.

    Attributes:
        lr: learning rates, shape (num_steps,), float64.
        momentum: momenta (or Adam beta1), shape (num_steps,), float64; ``None`` when the schedule
            defines no momentum.
    """

    lr: np.ndarray
    momentum: np.ndarray | None


# --------------------------------------------------------------------------- validation helpers


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _positive(name: str, value: Any) -> float:
    value = _real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _nonnegative(name: str, value: Any) -> float:
    value = _real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return value


def _int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _fraction(name: str, value: Any) -> Fraction:
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
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    raise TypeError(f"{name} must be a number, got {type(value).__name__}")


def _simplest(q: Fraction) -> int | Fraction:
    return q.numerator if q.denominator == 1 else q


def _ordered(lo_name: str, lo: float, hi_name: str, hi: float) -> None:
    if hi < lo:
        raise ValueError(f"{hi_name} ({hi}) must be >= {lo_name} ({lo})")


def _momenta(base_momentum: Any, max_momentum: Any) -> tuple[float, float]:
    base = _real("base_momentum", base_momentum)
    top = _real("max_momentum", max_momentum)
    for name, value in (("base_momentum", base), ("max_momentum", top)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    _ordered("base_momentum", base, "max_momentum", top)
    return base, top


# ------------------------------------------------------------------------------------ base class


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Base class: a learning rate (and optionally momentum) as a pure function of the step.

    Subclasses are frozen keyword-only dataclasses implementing ``_lr(t)`` (and ``_momentum(t)``
    when ``defines_momentum``); they validate their fields in ``__post_init__``.

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
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalizing a frozen field in __post_init__

    def _check_step(self, step: int) -> int:
        t = _int("step", step, minimum=0)
        if self.total_steps is not None and t >= self.total_steps:
            raise ValueError(
                f"step {t} is past the end of {type(self).__name__} (total_steps="
                f"{self.total_steps}, valid steps 0..{self.total_steps - 1})"
            )
        return t

    def lr(self, step: int) -> float:
        """Learning rate used by update number ``step`` (0-based)."""
        return self._lr(self._check_step(step))

    def momentum(self, step: int) -> float | None:
        """Momentum (SGD ``momentum`` or Adam ``beta1``) at ``step``; ``None`` if not defined."""
        t = self._check_step(step)
        return self._momentum(t) if self.defines_momentum else None

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
        n = _int("num_steps", num_steps, minimum=0)
        if self.total_steps is not None and n > self.total_steps:
            raise ValueError(f"num_steps={n} is past total_steps={self.total_steps}")
        lrs = self._preview_lr(n)
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


def schedule_from_dict(description: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from ``Schedule.to_dict()`` output."""
    kwargs = dict(description)
    name = kwargs.pop("type", None)
    if name not in _REGISTRY:
        raise ValueError(f"unknown schedule type {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)


# ------------------------------------------------------------------------------------------- CLR


@dataclass(frozen=True, kw_only=True)
class Cyclic(Schedule):
    """Cyclical learning rate (CLR, Smith 2017 Sec. 3.1) with momentum in counter-phase.

    With s_up = ``step_size_up``, s_down = ``step_size_down`` (default s_up) and
    c = s_up + s_down, step t lies in cycle k = 1 + t // c at position p = t mod c; the rise
    factor is f = p/s_up for p <= s_up and (c - p)/s_down after. Then

        lr = base_lr + (max_lr - base_lr) * f * phi,
        momentum = max_momentum - (max_momentum - base_momentum) * f * phi,

    with phi = 1 (triangular), 2^-(k-1) (triangular2) or gamma^t (exp_range). For s_up = s_down = s
    this is the paper's cycle = floor(1 + t/2s), x = |t/s - 2 cycle + 1|, f = max(0, 1 - x).
    Identical to ``torch.optim.lr_scheduler.CyclicLR`` (its defaults for the momenta).

    Args:
        base_lr: lower LR bound (>= 0).
        max_lr: upper LR bound (>= base_lr).
        step_size_up: steps from base to max (half a cycle; the paper recommends 2-10 epochs).
        step_size_down: steps from max back to base; default ``step_size_up``.
        mode: "triangular", "triangular2" or "exp_range".
        gamma: exp_range decay per step (> 0); ignored by the other modes.
        base_momentum: momentum at the LR peak.
        max_momentum: momentum at the LR trough.
    """

    base_lr: float
    max_lr: float
    step_size_up: int
    step_size_down: int | None = None
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    gamma: float = 1.0
    base_momentum: float = 0.8
    max_momentum: float = 0.9

    defines_momentum: ClassVar[bool] = True
    per_group_fields: ClassVar[tuple[str, ...]] = (
        "base_lr",
        "max_lr",
        "base_momentum",
        "max_momentum",
    )

    def __post_init__(self) -> None:
        base = _nonnegative("base_lr", self.base_lr)
        _ordered("base_lr", base, "max_lr", _real("max_lr", self.max_lr))
        up = _int("step_size_up", self.step_size_up, minimum=1)
        down = up if self.step_size_down is None else self.step_size_down
        self._set("step_size_down", _int("step_size_down", down, minimum=1))
        if self.mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(
                f"mode must be 'triangular', 'triangular2' or 'exp_range', got {self.mode!r}"
            )
        _positive("gamma", self.gamma)
        _momenta(self.base_momentum, self.max_momentum)

    def _factor(self, t: int) -> float:
        """Rise factor f (0 at base, 1 at max) times the mode's amplitude scale phi."""
        up, down = self.step_size_up, self.step_size_down
        cycle, p = divmod(t, up + down)
        f = p / up if p <= up else (up + down - p) / down
        if self.mode == "triangular2":
            return f * math.ldexp(1.0, -cycle)  # 1 / 2^(cycle - 1) with the paper's 1-based cycle
        if self.mode == "exp_range":
            return f * self.gamma**t
        return f

    def _lr(self, t: int) -> float:
        return self.base_lr + (self.max_lr - self.base_lr) * self._factor(t)

    def _momentum(self, t: int) -> float:
        return self.max_momentum - (self.max_momentum - self.base_momentum) * self._factor(t)


# -------------------------------------------------------------------------------------- 1cycle


@dataclass(frozen=True, kw_only=True)
class OneCycle(Schedule):
    """The 1cycle policy of the Super-Convergence paper (Smith & Topin, Sec. 3).

    One triangular cycle shorter than the run, then annihilation:

    - steps 0 .. s: lr rises linearly base_lr -> max_lr, momentum falls max -> base;
    - steps s .. 2s: lr falls linearly max_lr -> base_lr, momentum rises base -> max;
    - steps 2s .. total_steps - 1: lr decays from base_lr to base_lr * final_fraction at the last
      step ("linear", "cos" or geometric "exp"); momentum is held at max_momentum.

    Equal to ``torch.optim.lr_scheduler.OneCycleLR(three_phase=True, anneal_strategy="linear",
    pct_start=(s + 1)/total_steps, div_factor=max_lr/base_lr, final_div_factor=1/final_fraction)``.

    Args:
        base_lr: LR at the start and the end of the cycle (> 0), e.g. max_lr/3 .. max_lr/4.
        max_lr: LR at the peak, step ``step_size`` (>= base_lr).
        step_size: half-cycle length s in steps (>= 1).
        total_steps: length of the run (>= 2 s + 2, so the tail has at least one step).
        final_fraction: LR at the last step as a fraction of base_lr, in (0, 1].
        tail: shape of the annihilation: "linear" (the paper), "cos" or "exp" (geometric).
        base_momentum: momentum at the LR peak.
        max_momentum: momentum at base LR and throughout the tail.
    """

    base_lr: float
    max_lr: float
    step_size: int
    total_steps: int
    final_fraction: float = 1e-3
    tail: Literal["linear", "cos", "exp"] = "linear"
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    defines_momentum: ClassVar[bool] = True
    per_group_fields: ClassVar[tuple[str, ...]] = (
        "base_lr",
        "max_lr",
        "base_momentum",
        "max_momentum",
    )

    def __post_init__(self) -> None:
        base = _positive("base_lr", self.base_lr)
        _ordered("base_lr", base, "max_lr", _real("max_lr", self.max_lr))
        s = _int("step_size", self.step_size, minimum=1)
        total = _int("total_steps", self.total_steps, minimum=1)
        if total < 2 * s + 2:
            raise ValueError(
                f"total_steps ({total}) must be >= 2*step_size + 2 = {2 * s + 2} so the "
                "annihilation tail is not empty (for a cycle without tail use Cyclic)"
            )
        ff = _positive("final_fraction", self.final_fraction)
        if ff > 1:
            raise ValueError(f"final_fraction must lie in (0, 1], got {ff}")
        if self.tail not in ("linear", "cos", "exp"):
            raise ValueError(f"tail must be 'linear', 'cos' or 'exp', got {self.tail!r}")
        _momenta(self.base_momentum, self.max_momentum)

    def _lr(self, t: int) -> float:
        s, base, top = self.step_size, self.base_lr, self.max_lr
        if t <= s:
            return base + (top - base) * (t / s)
        if t <= 2 * s:
            return base + (top - base) * ((2 * s - t) / s)
        f = (t - 2 * s) / (self.total_steps - 1 - 2 * s)
        final = base * self.final_fraction
        if self.tail == "linear":
            return base + (final - base) * f
        if self.tail == "cos":
            return final + (base - final) * (1.0 + math.cos(math.pi * f)) / 2.0
        return base * self.final_fraction**f

    def _momentum(self, t: int) -> float:
        s, lo, hi = self.step_size, self.base_momentum, self.max_momentum
        if t <= s:
            return hi - (hi - lo) * (t / s)
        if t <= 2 * s:
            return hi - (hi - lo) * ((2 * s - t) / s)
        return hi


@dataclass(frozen=True, kw_only=True)
class OneCycleCosine(Schedule):
    """The fastai / PyTorch one-cycle: ``torch.optim.lr_scheduler.OneCycleLR`` as a pure function.

    initial = max_lr / div_factor, min = initial / final_div_factor. Two phases (default): anneal
    initial -> max_lr over steps 0 .. pct_start*T - 1, then max_lr -> min until step T - 1.
    Three phases: initial -> max -> initial symmetric about pct_start*T - 1, then initial -> min.
    Momentum anneals max -> base -> max in counter-phase (held at max in the third phase). Phase
    ends are PyTorch's float step indices (pct_start*T - 1, 2 pct_start*T - 2, T - 1).

    Args:
        max_lr: peak LR (> 0).
        total_steps: length T of the run in steps.
        pct_start: fraction of the run spent rising, in (0, 1); every phase must be non-empty.
        anneal_strategy: "cos" or "linear".
        div_factor: initial_lr = max_lr / div_factor (>= 1).
        final_div_factor: min_lr = initial_lr / final_div_factor (>= 1).
        three_phase: use the three-phase form (closer to the Super-Convergence paper).
        base_momentum: momentum at the peak LR.
        max_momentum: momentum at the start (and end).
    """

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    defines_momentum: ClassVar[bool] = True
    per_group_fields: ClassVar[tuple[str, ...]] = ("max_lr", "base_momentum", "max_momentum")

    def __post_init__(self) -> None:
        _positive("max_lr", self.max_lr)
        total = _int("total_steps", self.total_steps, minimum=1)
        pct = _real("pct_start", self.pct_start)
        if not 0.0 < pct < 1.0:
            raise ValueError(f"pct_start must lie in (0, 1), got {pct}")
        if self.anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"anneal_strategy must be 'cos' or 'linear', got {self.anneal_strategy!r}"
            )
        if _real("div_factor", self.div_factor) < 1:
            raise ValueError(
                f"div_factor must be >= 1 (initial_lr = max_lr/div_factor <= max_lr), "
                f"got {self.div_factor}"
            )
        if _real("final_div_factor", self.final_div_factor) < 1:
            raise ValueError(f"final_div_factor must be >= 1, got {self.final_div_factor}")
        start = 0.0
        for i, (end, *_) in enumerate(self._phases()):
            if not end > start:
                raise ValueError(
                    f"phase {i + 1} of OneCycleCosine is empty (ends at step {end}, starts at "
                    f"{start}) with total_steps={total}, pct_start={pct}, three_phase="
                    f"{self.three_phase}; raise pct_start*total_steps above 1"
                    + (" and keep pct_start below about 0.5" if self.three_phase else "")
                )
            start = end
        _momenta(self.base_momentum, self.max_momentum)

    def _phases(self) -> list[tuple[float, float, float, float, float]]:
        """(end_step, start_lr, end_lr, start_momentum, end_momentum), as PyTorch builds them."""
        initial = self.max_lr / self.div_factor
        low = initial / self.final_div_factor
        top, lo_m, hi_m = self.max_lr, self.base_momentum, self.max_momentum
        rise = float(self.pct_start * self.total_steps) - 1
        if self.three_phase:
            return [
                (rise, initial, top, hi_m, lo_m),
                (float(2 * self.pct_start * self.total_steps) - 2, top, initial, lo_m, hi_m),
                (self.total_steps - 1, initial, low, hi_m, hi_m),
            ]
        return [(rise, initial, top, hi_m, lo_m), (self.total_steps - 1, top, low, lo_m, hi_m)]

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _value(self, t: int, lr: bool) -> float:
        phases = self._phases()
        start_step = 0.0
        for i, (end_step, lr0, lr1, m0, m1) in enumerate(phases):
            if t <= end_step or i == len(phases) - 1:
                pct = (t - start_step) / (end_step - start_step)
                return self._anneal(lr0, lr1, pct) if lr else self._anneal(m0, m1, pct)
            start_step = end_step
        raise AssertionError("unreachable")  # pragma: no cover

    def _lr(self, t: int) -> float:
        return self._value(t, lr=True)

    def _momentum(self, t: int) -> float:
        return self._value(t, lr=False)


# ---------------------------------------------------------------------------------------- SGDR


@dataclass(frozen=True, kw_only=True)
class SGDR(Schedule):
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017, Eq. 5), stepped per batch.

    Step t is epoch e = t / steps_per_epoch (exactly, as a fraction). Cycle i (0-based) spans
    T_i = T_0 * T_mult^i epochs and starts at E_i = T_0 (T_mult^i - 1)/(T_mult - 1) (= i T_0 for
    T_mult = 1); with T_cur = e - E_i,

        lr = eta_min + (eta_max * decay^i - eta_min) (1 + cos(pi T_cur / T_i)) / 2.

    The cycle index is found by exact rational comparison (a float-log guess, corrected), so
    restarts land exactly on their step: lr = eta_max * decay^i there. PyTorch's
    ``CosineAnnealingWarmRestarts.step(epoch)`` uses ``int(log(...))`` and at some restarts
    (T_mult=3: epochs 121, 29524, ...; T_mult=10: 111, 111111; T_mult=9: 7381) returns eta_min
    instead of the restart's eta_max.

    Args:
        eta_max: peak LR of the first cycle (> 0).
        T_0: length of the first cycle in epochs (> 0; int, Fraction or float, a float taken
            by its shortest decimal repr, so 0.1 means 1/10).
        T_mult: cycle-length multiplier (>= 1; need not be an integer, e.g. 1.5).
        eta_min: LR at the end of each cycle (0 <= eta_min <= eta_max).
        steps_per_epoch: batches per epoch (>= 1); 1 gives epoch-level stepping.
        decay: the peak is multiplied by ``decay`` at every restart, in (0, 1].
    """

    eta_max: float
    T_0: int | Fraction
    T_mult: int | Fraction = 1
    eta_min: float = 0.0
    steps_per_epoch: int = 1
    decay: float = 1.0

    per_group_fields: ClassVar[tuple[str, ...]] = ("eta_max", "eta_min")
    _exact_fields: ClassVar[tuple[str, ...]] = ("T_0", "T_mult")

    def __post_init__(self) -> None:
        top = _positive("eta_max", self.eta_max)
        _ordered("eta_min", _nonnegative("eta_min", self.eta_min), "eta_max", top)
        T_0 = _fraction("T_0", self.T_0)
        if T_0 <= 0:
            raise ValueError(f"T_0 (first cycle length in epochs) must be positive, got {T_0}")
        T_mult = _fraction("T_mult", self.T_mult)
        if T_mult < 1:
            raise ValueError(f"T_mult must be >= 1, got {T_mult}")
        self._set("T_0", _simplest(T_0))
        self._set("T_mult", _simplest(T_mult))
        _int("steps_per_epoch", self.steps_per_epoch, minimum=1)
        d = _positive("decay", self.decay)
        if d > 1:
            raise ValueError(f"decay must lie in (0, 1], got {d}")

    def cycle(self, step: int) -> tuple[int, Fraction, Fraction]:
        """(index i, start epoch E_i, length T_i in epochs) of the cycle containing ``step``."""
        e = Fraction(self._check_step(step), self.steps_per_epoch)
        return self._cycle(e)

    def _cycle(self, e: Fraction) -> tuple[int, Fraction, Fraction]:
        T_0, m = Fraction(self.T_0), Fraction(self.T_mult)
        if m == 1:
            i = int(e // T_0)
            return i, i * T_0, T_0

        def start(k: int) -> Fraction:
            return T_0 * (m**k - 1) / (m - 1)

        i = 0 if e < T_0 else int(math.log(float(e / T_0 * (m - 1) + 1), float(m)))
        while start(i + 1) <= e:
            i += 1
        while i > 0 and start(i) > e:
            i -= 1
        return i, start(i), T_0 * m**i

    def _preview_lr(self, n: int) -> np.ndarray:
        # One vectorized pass per cycle; cycle ends are located exactly (ceil of a Fraction).
        spe, T_0 = self.steps_per_epoch, Fraction(self.T_0)
        if self.T_mult == 1 and n * T_0.denominator < 2**62:
            # t / spe = i T_0 + r / (spe p) with T_0 = p/q: i, r = divmod(t q, spe p), in int64.
            period = spe * T_0.numerator
            i, r = np.divmod(np.arange(n, dtype=np.int64) * T_0.denominator, period)
            peak = self.eta_max * self.decay ** i.astype(np.float64)
            return self.eta_min + (peak - self.eta_min) * (1 + np.cos(np.pi * (r / period))) / 2
        out = np.empty(n, dtype=np.float64)
        t0 = 0
        while t0 < n:
            i, begin, length = self._cycle(Fraction(t0, spe))
            t1 = min(n, math.ceil((begin + length) * spe))
            pct = (np.arange(t0, t1, dtype=np.float64) - float(begin * spe)) / float(length * spe)
            peak = self.eta_max * self.decay**i
            out[t0:t1] = self.eta_min + (peak - self.eta_min) * (1 + np.cos(np.pi * pct)) / 2
            t0 = t1
        return out

    def _lr(self, t: int) -> float:
        i, begin, length = self._cycle(Fraction(t, self.steps_per_epoch))
        peak = self.eta_max * self.decay**i
        pct = float((Fraction(t, self.steps_per_epoch) - begin) / length)
        return self.eta_min + (peak - self.eta_min) * (1 + math.cos(math.pi * pct)) / 2


# ---------------------------------------------------------------------- piecewise and Caffe forms


@dataclass(frozen=True, kw_only=True)
class MultiStep(Schedule):
    """Piecewise constant: lr = base_lr * gamma^(number of milestones <= step).

    Equal to ``torch.optim.lr_scheduler.MultiStepLR`` stepped per batch (milestones in steps).

    Args:
        base_lr: LR before the first milestone (> 0).
        milestones: strictly increasing steps (>= 1) at which the LR is multiplied by ``gamma``.
        gamma: multiplicative factor (> 0).
        total_steps: optional end of the run (milestones must lie before it).
    """

    base_lr: float
    milestones: Sequence[int]
    gamma: float = 0.1
    total_steps: int | None = None

    per_group_fields: ClassVar[tuple[str, ...]] = ("base_lr",)

    def __post_init__(self) -> None:
        _positive("base_lr", self.base_lr)
        _positive("gamma", self.gamma)
        if isinstance(self.milestones, (str, bytes)) or not isinstance(self.milestones, Sequence):
            raise TypeError("milestones must be a sequence of integers")
        ms = tuple(_int("milestone", m, minimum=1) for m in self.milestones)
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {list(ms)}")
        self._set("milestones", ms)
        if self.total_steps is not None:
            total = _int("total_steps", self.total_steps, minimum=1)
            if ms and ms[-1] >= total:
                raise ValueError(f"milestone {ms[-1]} is not before total_steps={total}")

    @classmethod
    def from_fractions(
        cls,
        *,
        base_lr: float = 0.35,
        total_steps: int,
        fractions: Sequence[float] = (0.625, 0.875),
        gamma: float = 0.1,
    ) -> MultiStep:
        """Milestones at fractions of the run; defaults are the Super-Convergence PC baseline."""
        total = _int("total_steps", total_steps, minimum=1)
        for f in fractions:
            if not 0.0 < _real("fraction", f) < 1.0:
                raise ValueError(f"fractions must lie in (0, 1), got {f}")
        milestones = [round(f * total) for f in fractions]
        return cls(base_lr=base_lr, milestones=milestones, gamma=gamma, total_steps=total)

    def _lr(self, t: int) -> float:
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)


@dataclass(frozen=True, kw_only=True)
class StepDecay(Schedule):
    """Caffe ``step``: lr = base_lr * gamma^floor(t / step_size) (``torch`` StepLR per batch)."""

    base_lr: float
    step_size: int
    gamma: float = 0.1

    per_group_fields: ClassVar[tuple[str, ...]] = ("base_lr",)

    def __post_init__(self) -> None:
        _positive("base_lr", self.base_lr)
        _int("step_size", self.step_size, minimum=1)
        _positive("gamma", self.gamma)

    def _lr(self, t: int) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)


@dataclass(frozen=True, kw_only=True)
class ExpDecay(Schedule):
    """Caffe ``exp``: lr = base_lr * gamma^t (``torch`` ExponentialLR per batch)."""

    base_lr: float
    gamma: float

    per_group_fields: ClassVar[tuple[str, ...]] = ("base_lr",)

    def __post_init__(self) -> None:
        _positive("base_lr", self.base_lr)
        _positive("gamma", self.gamma)

    def _lr(self, t: int) -> float:
        return self.base_lr * self.gamma**t


@dataclass(frozen=True, kw_only=True)
class InvDecay(Schedule):
    """Caffe ``inv``: lr = base_lr * (1 + gamma t)^(-power) (LeNet: 0.01, 1e-4, 0.75)."""

    base_lr: float
    gamma: float = 1e-4
    power: float = 0.75

    per_group_fields: ClassVar[tuple[str, ...]] = ("base_lr",)

    def __post_init__(self) -> None:
        _positive("base_lr", self.base_lr)
        _positive("gamma", self.gamma)
        _positive("power", self.power)

    def _lr(self, t: int) -> float:
        return self.base_lr * (1.0 + self.gamma * t) ** (-self.power)


@dataclass(frozen=True, kw_only=True)
class Constant(Schedule):
    """Caffe ``fixed``: lr = base_lr at every step."""

    base_lr: float

    per_group_fields: ClassVar[tuple[str, ...]] = ("base_lr",)

    def __post_init__(self) -> None:
        _nonnegative("base_lr", self.base_lr)

    def _lr(self, t: int) -> float:
        return float(self.base_lr)
