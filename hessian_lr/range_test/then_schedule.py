"""Find, then schedule: the stability-aware finder's max LR followed by Smith's 1cycle (issue 27).

The third curvature-set training mode (the other two are :mod:`hessian_lr.lr.curvature_modes`):
:func:`~hessian_lr.range_test.find_lr` ramps the LR until η·λ/c = 1 and restores everything it
touched; its suggestion ``max_lr`` becomes the peak of a 1cycle
(:class:`~hessian_lr.schedules.OneCycle`, Smith & Topin 2017, §3) over the run's ``total_steps``.

Guard: the peak is the finder's calibrated edge, never a loss-blow-up point; without an edge
(``stop_reason`` other than ``"edge"``) it raises unless ``fallback_lr`` is given, and the peak is
capped at ``max_lr_cap``. The 1cycle then moves the LR linearly: per update by at most
(max_lr − base_lr)/step_size, i.e. by a factor ≤ 1 + (div_factor − 1)/step_size.
Overhead: the finder's ``num_steps``, ``num_hvps`` and ``seconds`` (in the returned result), all
before training starts. Checkpoint: a ``ScheduleLR``'s ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..schedules import OneCycle, ScheduleLR
from .finder import LRFinderResult, find_lr

__all__ = ["find_then_onecycle"]


def find_then_onecycle(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: Any,
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    div_factor: float = 10.0,
    pct_cycle: float = 0.9,
    final_fraction: float = 1e-2,
    cycle_momentum: bool = True,
    fallback_lr: float | None = None,
    max_lr_cap: float = math.inf,
    **finder_options: Any,
) -> tuple[ScheduleLR, LRFinderResult]:
    """Run :func:`find_lr`, then return a 1cycle ``ScheduleLR`` peaking at its ``max_lr``.

    Args:
        model: the network (restored after the ramp, as by :func:`find_lr`).
        loss_fn: ``loss_fn(outputs, targets)`` (``loss_fn(model, batch)`` with ``closure``).
        data: a DataLoader, an iterable of batches, or one batch.
        optimizer: the optimizer to schedule (SGD, Adam, AdamW, RMSprop; restored after).
        total_steps: the training run's length in optimizer updates (≥ 4).
        div_factor: max_lr / base_lr of the cycle (> 1; Smith & Topin use 3-10).
        pct_cycle: fraction of the run spent in the triangle (up and down), in (0, 1); the rest
            is the annihilation tail to ``final_fraction`` · base_lr.
        final_fraction: the last LR as a fraction of base_lr, in (0, 1].
        cycle_momentum: cycle momentum (SGD) or β₁ (Adam) 0.95 → 0.85 → 0.95 (Smith 2018).
        fallback_lr: the peak to use when the finder meets no edge (default: raise).
        max_lr_cap: an upper bound on the peak.
        **finder_options: passed to :func:`find_lr` (``start_lr``, ``end_lr``, ``num_steps``,
            ``measure_every``, ``probe``, ``calibration``, ``generator``, ...).

    Returns:
        (scheduler, finder result). The scheduler has already set the optimizer's LR of update 0.

    Raises:
        ValueError: bad cycle arguments, or no edge and no ``fallback_lr``.
    """
    total = int(total_steps)
    if total < 4:
        raise ValueError(f"total_steps must be >= 4, got {total_steps!r}")
    if not (math.isfinite(div_factor) and div_factor > 1):
        raise ValueError(f"div_factor must be a finite number > 1, got {div_factor!r}")
    if not 0 < pct_cycle < 1:
        raise ValueError(f"pct_cycle must lie in (0, 1), got {pct_cycle!r}")
    result = find_lr(model, loss_fn, data, optimizer, **finder_options)
    peak = result.max_lr
    if result.stop_reason != "edge" or not (math.isfinite(peak) and peak > 0):
        if fallback_lr is None:
            raise ValueError(
                f"the finder found no edge (stop_reason={result.stop_reason!r}, flags "
                f"{result.flags}): raise end_lr or num_steps, or pass fallback_lr"
            )
        peak = float(fallback_lr)
    peak = min(peak, float(max_lr_cap))
    step_size = max(1, min(int(pct_cycle * total / 2), (total - 2) // 2))
    schedule = OneCycle(
        base_lr=peak / div_factor,
        max_lr=peak,
        step_size=step_size,
        total_steps=total,
        final_fraction=final_fraction,
    )
    momentum = cycle_momentum and (
        "momentum" in optimizer.defaults or "betas" in optimizer.defaults
    )
    if momentum and "momentum" in optimizer.defaults:
        momentum = all(float(g.get("momentum", 0.0)) > 0 for g in optimizer.param_groups)
    return ScheduleLR(optimizer, schedule, cycle_momentum=momentum), result
