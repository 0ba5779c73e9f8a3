"""Warmup schedules of current practice: linear warmup, warmup + cosine, warmup-stable-decay.

- ``LinearWarmup``: the LR rises linearly to ``peak_lr`` over ``warmup_steps`` and stays there:
  ``torch.optim.lr_scheduler.LinearLR(start_factor, total_iters=warmup_steps)`` as a closed form
  (Goyal et al., "Accurate, Large Minibatch SGD", arXiv:1706.02677, Sec. 2.2).
- ``WarmupCosine``: linear warmup, then half a cosine from ``peak_lr`` to ``min_lr``: PyTorch's
  ``SequentialLR([LinearLR, CosineAnnealingLR(T_max=total_steps - warmup_steps)])`` and Hugging
  Face's ``get_cosine_schedule_with_warmup`` (Loshchilov & Hutter, SGDR, arXiv:1608.03983).
- ``WarmupStableDecay`` (WSD): linear warmup, a long constant stage at ``peak_lr``, then a short
  decay ("cooldown") to ``min_lr`` in the last ``decay_steps`` steps, shaped ``"linear"``,
  ``"cosine"`` or ``"sqrt"`` (1 - sqrt, the best shape in Hägele et al., "Scaling Laws and
  Compute-Optimal Training Beyond Fixed Training Durations", arXiv:2405.18392; WSD from Hu et al.,
  "MiniCPM", arXiv:2404.06395). The linear and cosine shapes equal PyTorch's
  ``SequentialLR([LinearLR, ConstantLR(factor=1), LinearLR | CosineAnnealingLR])``.

Conventions (PyTorch's, so the compositions agree step for step): with W = ``warmup_steps`` and
start factor s, step t < W uses ``peak_lr * (s + (1 - s) t / W)`` (step 0 is ``s * peak_lr``;
s = 0 is Hugging Face's ``t / W``); a decay over D steps at position k = 0 .. D - 1 uses the
progress p = k / D, so it starts exactly at ``peak_lr`` and reaches ``min_lr`` at step
``total_steps``, one past the last update (as ``CosineAnnealingLR`` reaches ``eta_min`` at
``T_max``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from . import _validate as v
from .base import Schedule

__all__ = ["LinearWarmup", "WarmupCosine", "WarmupStableDecay"]

DECAY_SHAPES = ("linear", "cosine", "sqrt")


def _warmup(peak: float, start_factor: float, warmup: int, t: float) -> float:
    """PyTorch LinearLR's closed form: peak * (s + (1 - s) * min(t, W) / W)."""
    return peak * (start_factor + (1.0 - start_factor) * min(t, warmup) / warmup)


def _check_warmup(peak_lr: float, warmup_steps: int, start_factor: float) -> None:
    v.positive("peak_lr", peak_lr)
    v.integer("warmup_steps", warmup_steps, minimum=0)
    v.in_unit("start_factor", start_factor, what=" (the first step's LR / peak_lr)")


def _decayed(shape: str, peak: float, low: float, p: float) -> float:
    """LR at decay progress p in [0, 1): peak at p = 0, towards ``low`` as p -> 1."""
    if shape == "cosine":
        return low + (peak - low) * (1.0 + math.cos(math.pi * p)) / 2.0
    if shape == "sqrt":
        return low + (peak - low) * (1.0 - math.sqrt(p))
    return low + (peak - low) * (1.0 - p)


@dataclass(frozen=True, kw_only=True)
class LinearWarmup(Schedule):
    """Linear warmup to ``peak_lr`` over ``warmup_steps``, then constant (endless).

    lr(t) = peak_lr * (s + (1 - s) * min(t, W) / W), s = ``start_factor``: exactly the closed
    form of ``LinearLR(optimizer, start_factor=s, end_factor=1, total_iters=W)`` on an optimizer
    whose LR is ``peak_lr`` (PyTorch requires s > 0; s = 0, Hugging Face's warmup, is allowed).

    Args:
        peak_lr: LR after the warmup (> 0).
        warmup_steps: W, steps of the ramp (>= 0; 0 means no warmup).
        start_factor: s, the LR of step 0 as a fraction of ``peak_lr``, in [0, 1].

    Example:
        >>> [round(LinearWarmup(peak_lr=1.0, warmup_steps=4).lr(t), 3) for t in range(6)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    peak_lr: float
    warmup_steps: int
    start_factor: float = 0.0

    per_group_fields: ClassVar[tuple[str, ...]] = ("peak_lr",)

    def __post_init__(self) -> None:
        """Validate the fields."""
        _check_warmup(self.peak_lr, self.warmup_steps, self.start_factor)

    def lr_bounds(self) -> tuple[float, float]:
        """(start_factor * peak_lr, peak_lr) (peak_lr alone without warmup)."""
        low = self.peak_lr * self.start_factor if self.warmup_steps else self.peak_lr
        return float(low), float(self.peak_lr)

    def _lr(self, t: float) -> float:
        if t >= self.warmup_steps:
            return float(self.peak_lr)
        return _warmup(self.peak_lr, self.start_factor, self.warmup_steps, t)


@dataclass(frozen=True, kw_only=True)
class WarmupCosine(Schedule):
    """Linear warmup over W steps, then cosine annealing from ``peak_lr`` to ``min_lr``.

    Steps t < W: lr = peak_lr (s + (1 - s) t / W). Steps t >= W, k = t - W, T = total - W:
    lr = min_lr + (peak_lr - min_lr) (1 + cos(pi k / T)) / 2. Equal to
    ``SequentialLR([LinearLR(s, total_iters=W), CosineAnnealingLR(T_max=T, eta_min=min_lr)],
    milestones=[W])`` (and to Hugging Face's ``get_cosine_schedule_with_warmup`` for s = 0,
    min_lr = 0).

    Args:
        peak_lr: LR at the end of the warmup (> 0).
        warmup_steps: W (>= 0, < total_steps).
        total_steps: length of the run in steps.
        start_factor: LR of step 0 as a fraction of peak_lr, in [0, 1].
        min_lr: the cosine's floor, in [0, peak_lr].

    Example:
        >>> s = WarmupCosine(peak_lr=1.0, warmup_steps=2, total_steps=6)
        >>> [round(x, 3) for x in s.preview().lr.tolist()]
        [0.0, 0.5, 1.0, 0.854, 0.5, 0.146]
    """

    peak_lr: float
    warmup_steps: int
    total_steps: int | None = None  # type: ignore[assignment]
    start_factor: float = 0.0
    min_lr: float = 0.0

    per_group_fields: ClassVar[tuple[str, ...]] = ("peak_lr", "min_lr")

    def __post_init__(self) -> None:
        """Validate the fields."""
        _check_warmup(self.peak_lr, self.warmup_steps, self.start_factor)
        total = v.total_steps(type(self).__name__, self.total_steps)
        if self.warmup_steps >= total:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be < total_steps ({total}): the "
                "cosine needs at least one step (for warmup only use LinearWarmup)"
            )
        v.ordered("min_lr", v.nonnegative("min_lr", self.min_lr), "peak_lr", self.peak_lr)

    def lr_bounds(self) -> tuple[float, float]:
        """(min(min_lr, start_factor * peak_lr), peak_lr)."""
        low = self.min_lr
        if self.warmup_steps:
            low = min(low, self.start_factor * self.peak_lr)
        return float(low), float(self.peak_lr)

    def _lr(self, t: float) -> float:
        w = self.warmup_steps
        if t < w:
            return _warmup(self.peak_lr, self.start_factor, w, t)
        p = (t - w) / (self.total_steps - w)
        return _decayed("cosine", self.peak_lr, self.min_lr, p)


@dataclass(frozen=True, kw_only=True)
class WarmupStableDecay(Schedule):
    """Warmup-stable-decay (WSD): linear warmup, constant ``peak_lr``, a short final decay.

    With W = ``warmup_steps``, D = ``decay_steps`` and T = ``total_steps``: steps t < W warm up
    linearly (as :class:`LinearWarmup`); steps W <= t < T - D hold ``peak_lr``; steps
    t >= T - D decay with progress p = (t - (T - D)) / D:
    ``"linear"``: min + (peak - min)(1 - p); ``"cosine"``: min + (peak - min)(1 + cos(pi p))/2;
    ``"sqrt"``: min + (peak - min)(1 - sqrt(p)) (Hägele et al. 2024's 1 - sqrt cooldown).
    The linear and cosine shapes equal ``SequentialLR([LinearLR(s, total_iters=W),
    ConstantLR(factor=1), LinearLR(1, min/peak, total_iters=D) | CosineAnnealingLR(D, min)],
    milestones=[W, T - D])``.

    Args:
        peak_lr: LR of the stable stage (> 0).
        warmup_steps: W (>= 0).
        total_steps: T, the length of the run.
        decay_steps: D (>= 1; W + D <= T); default ``round(decay_fraction * T)``, at least 1.
        decay_fraction: D / T when ``decay_steps`` is not given, in (0, 1] (default 0.2; the
            WSD papers use 10-20 %).
        decay_shape: ``"linear"``, ``"cosine"`` or ``"sqrt"``.
        start_factor: LR of step 0 as a fraction of peak_lr, in [0, 1].
        min_lr: the decay's end value, in [0, peak_lr].

    Example:
        >>> s = WarmupStableDecay(
        ...     peak_lr=1.0, warmup_steps=2, total_steps=8, decay_steps=4, decay_shape="linear"
        ... )
        >>> s.preview().lr.tolist()
        [0.0, 0.5, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    """

    peak_lr: float
    warmup_steps: int
    total_steps: int | None = None  # type: ignore[assignment]
    decay_steps: int | None = None
    decay_fraction: float = 0.2
    decay_shape: Literal["linear", "cosine", "sqrt"] = "sqrt"
    start_factor: float = 0.0
    min_lr: float = 0.0

    per_group_fields: ClassVar[tuple[str, ...]] = ("peak_lr", "min_lr")

    def __post_init__(self) -> None:
        """Validate the fields; ``decay_steps`` is filled in from ``decay_fraction``."""
        _check_warmup(self.peak_lr, self.warmup_steps, self.start_factor)
        total = v.total_steps(type(self).__name__, self.total_steps)
        frac = v.in_unit("decay_fraction", self.decay_fraction, low_open=True)
        if self.decay_steps is None:
            self._set("decay_steps", max(1, round(frac * total)))
        d = v.integer("decay_steps", self.decay_steps, minimum=1)
        if self.warmup_steps + d > total:
            raise ValueError(
                f"warmup_steps + decay_steps ({self.warmup_steps} + {d}) must be <= total_steps "
                f"({total})"
            )
        if self.decay_shape not in DECAY_SHAPES:
            raise ValueError(f"decay_shape must be one of {DECAY_SHAPES}, got {self.decay_shape!r}")
        v.ordered("min_lr", v.nonnegative("min_lr", self.min_lr), "peak_lr", self.peak_lr)

    def lr_bounds(self) -> tuple[float, float]:
        """(min(min_lr, start_factor * peak_lr), peak_lr)."""
        low = self.min_lr
        if self.warmup_steps:
            low = min(low, self.start_factor * self.peak_lr)
        return float(low), float(self.peak_lr)

    def _lr(self, t: float) -> float:
        w, start = self.warmup_steps, self.total_steps - self.decay_steps
        if t < w:
            return _warmup(self.peak_lr, self.start_factor, w, t)
        if t < start:
            return float(self.peak_lr)
        p = (t - start) / self.decay_steps
        return _decayed(self.decay_shape, self.peak_lr, self.min_lr, p)
