"""One-cycle schedules: the Super-Convergence 1cycle and the fastai / PyTorch cosine one-cycle.

``OneCycle``: Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large
Learning Rates" (arXiv:1708.07120), Sec. 3, with cyclical momentum as in Smith, "A disciplined
approach to neural network hyper-parameters" (arXiv:1803.09820), Sec. 4. ``OneCycleCosine``:
``torch.optim.lr_scheduler.OneCycleLR`` as a pure function of the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from . import _validate as v
from .base import Schedule

__all__ = ["OneCycle", "OneCycleCosine"]


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
    total_steps: int | None = None  # type: ignore[assignment]
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
        """Validate the fields."""
        base = v.positive("base_lr", self.base_lr)
        v.ordered("base_lr", base, "max_lr", v.real("max_lr", self.max_lr))
        s = v.integer("step_size", self.step_size, minimum=1)
        total = v.total_steps(type(self).__name__, self.total_steps)
        if total < 2 * s + 2:
            raise ValueError(
                f"total_steps ({total}) must be >= 2*step_size + 2 = {2 * s + 2} so the "
                "annihilation tail is not empty (for a cycle without tail use Cyclic)"
            )
        ff = v.positive("final_fraction", self.final_fraction)
        if ff > 1:
            raise ValueError(f"final_fraction must lie in (0, 1], got {ff}")
        if self.tail not in ("linear", "cos", "exp"):
            raise ValueError(f"tail must be 'linear', 'cos' or 'exp', got {self.tail!r}")
        v.momenta(self.base_momentum, self.max_momentum)

    def lr_bounds(self) -> tuple[float, float]:
        """(base_lr * final_fraction, max_lr)."""
        return float(self.base_lr * self.final_fraction), float(self.max_lr)

    def _lr(self, t: float) -> float:
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

    def _momentum(self, t: float) -> float:
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
    total_steps: int | None = None  # type: ignore[assignment]
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
        """Validate the fields (every phase must be non-empty)."""
        v.positive("max_lr", self.max_lr)
        total = v.total_steps(type(self).__name__, self.total_steps)
        pct = v.real("pct_start", self.pct_start)
        if not 0.0 < pct < 1.0:
            raise ValueError(f"pct_start must lie in (0, 1), got {pct}")
        if self.anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"anneal_strategy must be 'cos' or 'linear', got {self.anneal_strategy!r}"
            )
        if v.real("div_factor", self.div_factor) < 1:
            raise ValueError(
                f"div_factor must be >= 1 (initial_lr = max_lr/div_factor <= max_lr), "
                f"got {self.div_factor}"
            )
        if v.real("final_div_factor", self.final_div_factor) < 1:
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
        v.momenta(self.base_momentum, self.max_momentum)

    def lr_bounds(self) -> tuple[float, float]:
        """(max_lr / div_factor / final_div_factor, max_lr)."""
        return float(self.max_lr / self.div_factor / self.final_div_factor), float(self.max_lr)

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

    def _value(self, t: float, lr: bool) -> float:
        phases = self._phases()
        start_step = 0.0
        for i, (end_step, lr0, lr1, m0, m1) in enumerate(phases):
            if t <= end_step or i == len(phases) - 1:
                pct = (t - start_step) / (end_step - start_step)
                return self._anneal(lr0, lr1, pct) if lr else self._anneal(m0, m1, pct)
            start_step = end_step
        raise AssertionError("unreachable")  # pragma: no cover

    def _lr(self, t: float) -> float:
        return self._value(t, lr=True)

    def _momentum(self, t: float) -> float:
        return self._value(t, lr=False)
