"""Timing helpers for the benchmarks: interleaved rounds, medians, paired ratios.

On a small machine shared with other jobs, absolute times drift by factors of several within a
minute. What stays meaningful is the ratio of two functions timed *next to each other*. So:

* ``interleaved`` runs the compared functions in rounds: every round calls each function once,
  in an order rotated from round to round (no function always follows the same neighbour), and
  records every call's time. After ``warmup`` untimed calls of each function (allocator,
  one-time tracing, caches).
* ``paired_ratio`` divides the samples of two functions *round by round* and takes the median:
  a load spike that slows one round slows both members of the pair, and the median discards the
  rounds where it hit only one of them.
* ``timed`` times one call (for long runs such as an eigensolver), with a device sync.

Every timed call is bracketed by ``synchronize(device)`` so CUDA work is counted where it runs.
``configure_threads`` fixes ``torch.set_num_threads`` so a run is reproducible.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Timing",
    "configure_threads",
    "synchronize",
    "timed",
    "interleaved",
    "paired_ratio",
    "median",
]


@dataclass(frozen=True)
class Timing:
    """Per-call wall-clock samples of one function, in seconds (one per round)."""

    name: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def spread(self) -> float:
        """(max − min) / median of the samples: how noisy the rounds were."""
        m = self.median
        return (max(self.samples) - min(self.samples)) / m if m > 0 else float("nan")


def configure_threads(num_threads: int | None) -> int:
    """Fix torch's intra-op thread count (``None``: leave as is); return the count in use."""
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be positive, got {num_threads}")
        torch.set_num_threads(int(num_threads))
    return torch.get_num_threads()


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued kernels on a CUDA device (no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], *, device: torch.device | str | None = None) -> tuple[Any, float]:
    """Call ``fn()`` once; return (its result, seconds), synchronizing the device around it."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t0


def interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> dict[str, Timing]:
    """Time each function ``rounds`` times, interleaved, after ``warmup`` untimed calls each.

    Round r calls the functions starting at index r mod n (a rotation), so that position in the
    round and the preceding function vary. Results are dropped as soon as a call returns.

    Args:
        fns: name -> zero-argument callable.
        rounds: timed calls per function (≥ 1).
        warmup: untimed calls per function before the first round.
        device: synchronized around every call (CUDA).

    Returns:
        name -> :class:`Timing` with ``rounds`` samples; ``samples[r]`` is round r's.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be positive, got {rounds}")
    if warmup < 0:
        raise ValueError(f"warmup must be non-negative, got {warmup}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [0.0] * rounds for name in names}
    n = len(names)
    for r in range(rounds):
        for i in range(n):
            name = names[(r + i) % n]
            _, seconds = timed(fns[name], device=device)
            samples[name][r] = seconds
    return {name: Timing(name, tuple(s)) for name, s in samples.items()}


def paired_ratio(num: Timing | list[float], den: Timing | list[float]) -> float:
    """Median over rounds of num[r] / den[r] (samples from the same ``interleaved`` call)."""
    a = num.samples if isinstance(num, Timing) else tuple(num)
    b = den.samples if isinstance(den, Timing) else tuple(den)
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_ratio needs equally many samples, got {len(a)} and {len(b)}")
    return statistics.median(x / y for x, y in zip(a, b))


def median(values: list[float] | tuple[float, ...]) -> float:
    """Median of a non-empty sequence (NaN for an empty one)."""
    return statistics.median(values) if len(values) else float("nan")
