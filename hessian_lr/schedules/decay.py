"""Piecewise-constant and Caffe-style decays: the baselines of the CLR and Super-Convergence papers.

``MultiStep`` is the Super-Convergence piecewise-constant baseline (0.35, x0.1 at 62.5 % and
87.5 % of the run); ``StepDecay``, ``ExpDecay``, ``InvDecay`` and ``Constant`` are the Caffe
``step``, ``exp``, ``inv`` and ``fixed`` policies (Jia et al., "Caffe", 2014) used by the LeNet
and CIFAR studies of the CLR paper.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from . import _validate as v
from .base import Schedule, finite_or_raise

__all__ = ["Constant", "ExpDecay", "InvDecay", "MultiStep", "StepDecay"]


@dataclass(frozen=True, kw_only=True)
class MultiStep(Schedule):
    """Piecewise constant: lr = base_lr * gamma^(number of milestones <= step).

    Equal to ``torch.optim.lr_scheduler.MultiStepLR`` stepped per batch (milestones in steps),
    including its treatment of repeats: a milestone listed k times multiplies the LR by gamma^k.

    Args:
        base_lr: LR before the first milestone (> 0).
        milestones: steps (>= 1) at which the LR is multiplied by ``gamma``; stored sorted.
        gamma: multiplicative factor (> 0; a gamma > 1 is allowed here, since the milestones are
            finitely many, as long as every LR stays finite).
        total_steps: optional end of the run (milestones must lie before it).
    """

    base_lr: float
    milestones: Sequence[int]
    gamma: float = 0.1
    total_steps: int | None = None

    per_group_fields: ClassVar[tuple[str, ...]] = ("base_lr",)

    def __post_init__(self) -> None:
        """Validate the fields; milestones are sorted (repeats kept, as in MultiStepLR)."""
        v.positive("base_lr", self.base_lr)
        v.positive("gamma", self.gamma)
        if isinstance(self.milestones, (str, bytes)) or not isinstance(self.milestones, Sequence):
            raise TypeError("milestones must be a sequence of integers")
        ms = tuple(sorted(v.integer("milestone", m, minimum=1) for m in self.milestones))
        self._set("milestones", ms)
        try:
            last = self.base_lr * self.gamma ** len(ms)
        except OverflowError:
            last = float("inf")
        finite_or_raise(
            "base_lr * gamma**len(milestones)", last, "lower gamma or use fewer milestones"
        )
        if self.total_steps is not None:
            total = v.integer("total_steps", self.total_steps, minimum=1)
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
        total = v.integer("total_steps", total_steps, minimum=1)
        for f in fractions:
            if not 0.0 < v.real("fraction", f) < 1.0:
                raise ValueError(f"fractions must lie in (0, 1), got {f}")
        milestones = [round(f * total) for f in fractions]
        return cls(base_lr=base_lr, milestones=milestones, gamma=gamma, total_steps=total)

    def lr_bounds(self) -> tuple[float, float]:
        """Min and max of base_lr * gamma^k over k = 0 .. len(milestones)."""
        ends = (float(self.base_lr), float(self.base_lr * self.gamma ** len(self.milestones)))
        return min(ends), max(ends)

    def _lr(self, t: float) -> float:
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)


@dataclass(frozen=True, kw_only=True)
class StepDecay(Schedule):
    """Caffe ``step``: lr = base_lr * gamma^floor(t / step_size) (``torch`` StepLR per batch).

    Args:
        base_lr: LR of the first ``step_size`` steps (> 0).
        step_size: steps between decays (>= 1).
        gamma: decay factor in (0, 1] (a gamma > 1 would grow the LR without bound, to inf).
    """

    base_lr: float
    step_size: int
    gamma: float = 0.1

    per_group_fields: ClassVar[tuple[str, ...]] = ("base_lr",)

    def __post_init__(self) -> None:
        """Validate the fields."""
        v.positive("base_lr", self.base_lr)
        v.integer("step_size", self.step_size, minimum=1)
        v.in_unit("gamma", self.gamma, low_open=True, what=" (a decay; gamma > 1 overflows)")

    def lr_bounds(self) -> tuple[float, float]:
        """(0, base_lr): the LR decays towards 0."""
        return 0.0, float(self.base_lr)

    def _lr(self, t: float) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)


@dataclass(frozen=True, kw_only=True)
class ExpDecay(Schedule):
    """Caffe ``exp``: lr = base_lr * gamma^t (``torch`` ExponentialLR per batch).

    Args:
        base_lr: LR at step 0 (> 0).
        gamma: decay per step in (0, 1] (a gamma > 1 would grow the LR without bound, to inf;
            for a rising LR use the range test's exp ladder).
    """

    base_lr: float
    gamma: float

    per_group_fields: ClassVar[tuple[str, ...]] = ("base_lr",)

    def __post_init__(self) -> None:
        """Validate the fields."""
        v.positive("base_lr", self.base_lr)
        v.in_unit("gamma", self.gamma, low_open=True, what=" (a decay; gamma > 1 overflows)")

    def lr_bounds(self) -> tuple[float, float]:
        """(0, base_lr): the LR decays towards 0."""
        return 0.0, float(self.base_lr)

    def _lr(self, t: float) -> float:
        return self.base_lr * self.gamma**t


@dataclass(frozen=True, kw_only=True)
class InvDecay(Schedule):
    """Caffe ``inv``: lr = base_lr * (1 + gamma t)^(-power) (LeNet: 0.01, 1e-4, 0.75).

    Args:
        base_lr: LR at step 0 (> 0).
        gamma: rate (> 0).
        power: exponent (> 0); the LR decays towards 0.
    """

    base_lr: float
    gamma: float = 1e-4
    power: float = 0.75

    per_group_fields: ClassVar[tuple[str, ...]] = ("base_lr",)

    def __post_init__(self) -> None:
        """Validate the fields."""
        v.positive("base_lr", self.base_lr)
        v.positive("gamma", self.gamma)
        v.positive("power", self.power)

    def lr_bounds(self) -> tuple[float, float]:
        """(0, base_lr): the LR decays towards 0."""
        return 0.0, float(self.base_lr)

    def _lr(self, t: float) -> float:
        return self.base_lr * (1.0 + self.gamma * t) ** (-self.power)


@dataclass(frozen=True, kw_only=True)
class Constant(Schedule):
    """Caffe ``fixed``: lr = base_lr at every step.

    Args:
        base_lr: the LR (>= 0).
    """

    base_lr: float

    per_group_fields: ClassVar[tuple[str, ...]] = ("base_lr",)

    def __post_init__(self) -> None:
        """Validate the field."""
        v.nonnegative("base_lr", self.base_lr)

    def lr_bounds(self) -> tuple[float, float]:
        """(base_lr, base_lr)."""
        return float(self.base_lr), float(self.base_lr)

    def _lr(self, t: float) -> float:
        return float(self.base_lr)
