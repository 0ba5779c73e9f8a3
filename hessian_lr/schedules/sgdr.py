"""SGDR, cosine annealing with warm restarts, stepped per batch, restarts placed exactly.

Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017
(arXiv:1608.03983), Eq. (5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import numpy as np

from . import _validate as v
from .base import Schedule

__all__ = ["SGDR"]


@dataclass(frozen=True, kw_only=True)
class SGDR(Schedule):
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017, Eq. 5), stepped per batch.

    Step t is epoch e = t / steps_per_epoch (exactly, as a fraction). Cycle i (0-based) spans
    T_i = T_0 * T_mult^i epochs and starts at E_i = T_0 (T_mult^i - 1)/(T_mult - 1) (= i T_0 for
    T_mult = 1); with T_cur = e - E_i,

        lr = eta_min + (eta_max * decay^i - eta_min) (1 + cos(pi T_cur / T_i)) / 2.

    The cycle index is found by exact rational comparison (a float-log guess, corrected), so
    restarts land exactly on their step: lr = eta_max * decay^i there. Cost stays bounded: with a
    non-integer T_mult = p/q the exact start E_i has denominator ~q^(i-1), so a restart can
    only fall on a step while q^(i-1) divides T_0's numerator times steps_per_epoch; beyond
    that cycle index (e.g. T_mult = 1.0001 after thousands of sub-step cycles) boundaries are
    compared in float64, where exact fractions would grow without bound (one call stays
    O(1), ``preview(n)`` O(n)). PyTorch's
    ``CosineAnnealingWarmRestarts.step(epoch)`` uses ``int(log(...))`` and at some restarts
    (T_mult=3: epochs 121, 29524, ...; T_mult=10: 111, 111111; T_mult=9: 7381) returns eta_min
    instead of the restart's eta_max.

    Args:
        eta_max: peak LR of the first cycle (> 0).
        T_0: length of the first cycle in epochs (int, Fraction or float, a float taken by its
            shortest decimal repr, so 0.1 means 1/10); cycles may be shorter than a step, down
            to a millionth of one.
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
        """Validate and normalize the fields (T_0 and T_mult become exact rationals)."""
        top = v.positive("eta_max", self.eta_max)
        v.ordered("eta_min", v.nonnegative("eta_min", self.eta_min), "eta_max", top)
        T_0 = v.fraction("T_0", self.T_0)
        if T_0 <= 0:
            raise ValueError(f"T_0 (first cycle length in epochs) must be positive, got {T_0}")
        T_mult = v.fraction("T_mult", self.T_mult)
        if T_mult < 1:
            raise ValueError(f"T_mult must be >= 1, got {T_mult}")
        spe = v.integer("steps_per_epoch", self.steps_per_epoch, minimum=1)
        if T_0 * spe < Fraction(1, 10**6):
            raise ValueError(
                f"T_0 * steps_per_epoch = {float(T_0 * spe):g} steps: a cycle shorter than a "
                "millionth of a step restarts many times between two updates; use T_0 >= "
                f"{1e-6 / spe:g} epochs"
            )
        self._set("T_0", v.simplest(T_0))
        self._set("T_mult", v.simplest(T_mult))
        v.integer("steps_per_epoch", self.steps_per_epoch, minimum=1)
        d = v.positive("decay", self.decay)
        if d > 1:
            raise ValueError(f"decay must lie in (0, 1], got {d}")

    def lr_bounds(self) -> tuple[float, float]:
        """(eta_min, eta_max), or (0, eta_max) with decay < 1 (peaks can decay below eta_min)."""
        return (float(self.eta_min) if self.decay == 1 else 0.0), float(self.eta_max)

    def cycle(self, step: int) -> tuple[int, Fraction, Fraction]:
        """(index i, start epoch E_i, length T_i in epochs) of the cycle containing ``step``.

        Always exact; for a non-integer ``T_mult`` its cost grows with the cycle index.
        """
        e = Fraction(self._check_step(step), self.steps_per_epoch)
        return self._cycle(e)

    def _guess(self, e: float) -> int:
        """Float-log estimate of the cycle index at epoch ``e`` (T_mult > 1)."""
        T_0, m = float(self.T_0), float(self.T_mult)
        if e < T_0:
            return 0
        return max(0, int(math.log(e / T_0 * (m - 1) + 1, m)))

    def _exact_limit(self) -> int:
        """Largest cycle index whose start can fall exactly on a step (non-integer T_mult)."""
        q = Fraction(self.T_mult).denominator
        a = Fraction(self.T_0).numerator * self.steps_per_epoch
        return 2 + int(math.log2(a) / math.log2(q)) if q > 1 else 2**62

    def _cycle(self, e: Fraction) -> tuple[int, Fraction, Fraction]:
        T_0, m = Fraction(self.T_0), Fraction(self.T_mult)
        if m == 1:
            i = int(e // T_0)
            return i, i * T_0, T_0

        def start(k: int) -> Fraction:
            return T_0 * (m**k - 1) / (m - 1)

        i = self._guess(float(e))
        while start(i + 1) <= e:
            i += 1
        while i > 0 and start(i) > e:
            i -= 1
        return i, start(i), T_0 * m**i

    def _locate(self, t: float) -> tuple[int, float]:
        """(cycle index, elapsed fraction of the cycle) at step ``t`` (an int or a float)."""
        spe = self.steps_per_epoch
        e = t / spe
        if self.T_mult == 1 or Fraction(self.T_mult).denominator == 1:
            exact = True  # cycles of equal length, or few (geometric growth): cheap and exact
        else:
            exact = self._guess(e) <= self._exact_limit()
        if exact:
            ef = Fraction(t) / spe
            i, begin, length = self._cycle(ef)
            return i, float((ef - begin) / length)
        T_0, m = float(self.T_0), float(self.T_mult)
        i = self._guess(e)

        def start(k: int) -> float:
            return T_0 * (m**k - 1) / (m - 1)

        while start(i + 1) <= e:
            i += 1
        while i > 0 and start(i) > e:
            i -= 1
        return i, min(max((e - start(i)) / (T_0 * m**i), 0.0), 1.0)

    def _value(self, i: int, pct: float) -> float:
        peak = self.eta_max * self.decay**i
        return self.eta_min + (peak - self.eta_min) * (1 + math.cos(math.pi * pct)) / 2

    def _preview_lr(self, n: int) -> np.ndarray:
        spe, T_0 = self.steps_per_epoch, Fraction(self.T_0)
        if self.T_mult == 1 and max(n * T_0.denominator, spe * T_0.numerator) < 2**62:
            # t / spe = i T_0 + r / (spe p) with T_0 = p/q: i, r = divmod(t q, spe p), in int64.
            period = spe * T_0.numerator
            i, r = np.divmod(np.arange(n, dtype=np.int64) * T_0.denominator, period)
            peak = self.eta_max * self.decay ** i.astype(np.float64)
            return self.eta_min + (peak - self.eta_min) * (1 + np.cos(np.pi * (r / period))) / 2
        if Fraction(self.T_mult).denominator != 1:
            return np.array([self._lr(t) for t in range(n)], dtype=np.float64)
        # Integer T_mult: one vectorized pass per cycle, cycle ends located exactly.
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

    def _lr(self, t: float) -> float:
        return self._value(*self._locate(t))
