"""Cyclical learning rates (CLR) with momentum in counter-phase, as PyTorch's CyclicLR.

Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017 (arXiv:1506.01186),
Sec. 3.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from . import _validate as v
from .base import Schedule

__all__ = ["Cyclic"]

MODES = ("triangular", "triangular2", "exp_range")


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
    Identical to ``torch.optim.lr_scheduler.CyclicLR`` (its defaults for the momenta). Since
    0 <= f * phi <= 1, the LR stays in [base_lr, max_lr] and the momentum in
    [base_momentum, max_momentum].

    Args:
        base_lr: lower LR bound (>= 0).
        max_lr: upper LR bound (>= base_lr).
        step_size_up: steps from base to max (half a cycle; the paper recommends 2-10 epochs).
        step_size_down: steps from max back to base; default ``step_size_up``.
        mode: "triangular", "triangular2" or "exp_range".
        gamma: exp_range decay per step, in (0, 1] (a gamma > 1 would push the LR above max_lr
            and the momentum below base_momentum, so it is refused); ignored by other modes.
        base_momentum: momentum at the LR peak, in [0, 1].
        max_momentum: momentum at the LR trough, in [base_momentum, 1].
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
        """Validate and normalize the fields."""
        base = v.nonnegative("base_lr", self.base_lr)
        v.ordered("base_lr", base, "max_lr", v.real("max_lr", self.max_lr))
        up = v.integer("step_size_up", self.step_size_up, minimum=1)
        down = up if self.step_size_down is None else self.step_size_down
        self._set("step_size_down", v.integer("step_size_down", down, minimum=1))
        if self.mode not in MODES:
            raise ValueError(
                f"mode must be 'triangular', 'triangular2' or 'exp_range', got {self.mode!r}"
            )
        gamma = v.positive("gamma", self.gamma)
        if self.mode == "exp_range" and gamma > 1:
            raise ValueError(
                f"gamma must lie in (0, 1] for mode='exp_range' (the amplitude decays as "
                f"gamma**step; gamma > 1 would exceed max_lr), got {gamma}"
            )
        v.momenta(self.base_momentum, self.max_momentum)

    def lr_bounds(self) -> tuple[float, float]:
        """(base_lr, max_lr)."""
        return float(self.base_lr), float(self.max_lr)

    def _factor(self, t: float) -> float:
        """Rise factor f (0 at base, 1 at max) times the mode's amplitude scale phi."""
        up, down = self.step_size_up, self.step_size_down
        cycle, p = divmod(t, up + down)
        f = p / up if p <= up else (up + down - p) / down
        if self.mode == "triangular2":
            # 1 / 2^(cycle - 1) with the paper's 1-based cycle
            return f * math.ldexp(1.0, -int(cycle))
        if self.mode == "exp_range":
            return f * self.gamma**t
        return f

    def _lr(self, t: float) -> float:
        return self.base_lr + (self.max_lr - self.base_lr) * self._factor(t)

    def _momentum(self, t: float) -> float:
        return self.max_momentum - (self.max_momentum - self.base_momentum) * self._factor(t)
