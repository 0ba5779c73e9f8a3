"""Curvature-set training modes: ``CurvatureLR`` driven by the stability threshold or by GeN's η*.

Two ways to let the curvature set the LR of *any* torch optimizer while it trains (issue 27), each
a configured :class:`~hessian_lr.lr.CurvatureLR` over its own
:class:`~hessian_lr.lr.LREstimator` (``scheduler.estimator``):

* :func:`stability_lr`: LR = ``fraction`` · c/λ_max, c the stability constant of the optimizer in
  use (2 for GD, 2 + 2β heavy ball, (2 + 2β₁)/(1 − β₁) Adam/AdamW; Cohen et al. 2021, 2022) and
  λ_max that of P⁻¹H for adaptive optimizers (P the optimizer's frozen preconditioner), of H
  otherwise (:func:`~hessian_lr.lr.preconditioned_sharpness`; Lanczos warm-started, a few HVPs).
* :func:`update_direction_lr`: LR = ``fraction`` · η*, η* = −gᵀd/dᵀHd the minimiser of the local
  quadratic along the optimizer's own update d (GeN, Chen et al. 2023; :func:`~hessian_lr.lr.
  update_lr`; one gradient and one HVP).

The third mode, "find, then schedule" (the stability-aware finder's max LR followed by 1cycle),
is :func:`hessian_lr.range_test.find_then_onecycle`.

The loop, for both::

    sched = stability_lr(model, loss_fn, opt, fraction=0.5, measure_every=10)
    for batch in loader:
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
        sched.estimator.step(batch if sched.estimator.due else None)
        sched.step()

Guard: every estimation step moves the LR by at most ×``max_increase`` up and ×``max_decrease``
down (``CurvatureLR``'s trust ratio; default ×2 / ×0.5), estimates flagged by the estimator
(negative curvature, non-finite loss, not a descent direction) never move the EMA, and
``min_lr``/``max_lr`` clip. The optimizer's own LR is used until the first estimate
(``warmup_steps = measure_every``), and the EMA starts from it. Overhead: the scheduler's
``overhead`` (calls, HVPs, seconds) and ``overhead_per_call()``. Checkpoint: save
``sched.state_dict()`` and ``sched.estimator.state_dict()`` beside the model and optimizer.
Measurements never change the model, the optimizer's state or the global RNGs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .curvature_lr import CurvatureLR
from .estimator import LREstimator
from .options import CurvatureOptions

__all__ = ["stability_lr", "update_direction_lr"]


def _mode(
    method: str,
    key: str,
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    fraction: float,
    measure_every: int,
    knobs: dict[str, Any],
) -> CurvatureLR:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch Optimizer, got {type(optimizer).__name__}")
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and fraction > 0):
        raise ValueError(f"fraction must be a positive finite number, got {fraction!r}")
    lrs = [float(g["lr"]) for g in optimizer.param_groups]
    sizes = [sum(p.numel() for p in g["params"]) for g in optimizer.param_groups]
    lr0 = sum(s * lr for s, lr in zip(sizes, lrs)) / max(sum(sizes), 1)
    if not lr0 > 0:
        raise ValueError(f"the optimizer's LR must be positive (the EMA starts there), got {lr0}")
    est = LREstimator(
        model,
        methods=(method,),
        every=measure_every,
        loss_fn=loss_fn,
        optimizer=optimizer,
        ema_alpha=knobs["ema_alpha"],
        ema_init=lr0 / fraction,  # the first target is the LR in use
        lanczos_tol=knobs["lanczos_tol"],
        lanczos_max_iter=knobs["lanczos_max_iter"],
        seed=knobs["seed"],
        curvature=knobs["curvature"],
    )
    return CurvatureLR(
        optimizer,
        est,
        method=method,
        key=key,
        safety=fraction,
        min_lr=knobs["min_lr"],
        max_lr=knobs["max_lr"],
        warmup_steps=measure_every,
        max_increase=knobs["max_increase"],
        max_decrease=knobs["max_decrease"],
    )


def stability_lr(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    fraction: float = 0.5,
    measure_every: int = 10,
    ema_alpha: float = 0.5,
    max_increase: float = 2.0,
    max_decrease: float = 0.5,
    min_lr: float = 0.0,
    max_lr: float = math.inf,
    lanczos_tol: float = 1e-2,
    lanczos_max_iter: int | None = 20,
    seed: int = 0,
    curvature: CurvatureOptions | None = None,
) -> CurvatureLR:
    """A ``CurvatureLR`` holding the LR at ``fraction`` of the optimizer's stability threshold.

    LR ← clip(fraction · EMA(c/λ_max), min_lr, max_lr), trust-bounded per estimate (module
    docstring). c and the preconditioning come from the optimizer in use (SGD with or without
    momentum / Nesterov, Adam, AdamW, RMSprop; ``TypeError`` at the first estimate otherwise).

    Args:
        model: the network (never modified by a measurement).
        loss_fn: ``loss_fn(outputs, targets)`` (or ``loss_fn(model, batch)`` with
            ``CurvatureOptions(closure=True)``).
        optimizer: the optimizer training ``model``; its LR is used until the first estimate.
        fraction: the margin below the threshold, in (0, ∞); 1 sits on the edge of stability.
        measure_every: k, optimizer updates between estimates (each a warm-started Lanczos run).
        ema_alpha: weight of a new estimate in the EMA, (0, 1].
        max_increase: the guard: the largest factor (≥ 1) by which one estimate may raise the LR.
        max_decrease: the guard: the smallest factor (in [0, 1]) by which one may lower it.
        min_lr: lower clipping bound.
        max_lr: upper clipping bound.
        lanczos_tol: relative Ritz residual of each λ_max.
        lanczos_max_iter: Krylov dimension cap of each λ_max.
        seed: the estimator's own generator (Lanczos cold start); the global RNGs are not used.
        curvature: how the Hessian is built (:class:`~hessian_lr.lr.CurvatureOptions`).

    Returns:
        The scheduler; its estimator is ``scheduler.estimator``.
    """
    knobs = dict(locals())
    return _mode(
        "preconditioned_sharpness", "lr_stable", model, loss_fn, optimizer, fraction,
        measure_every, knobs,
    )  # fmt: skip


def update_direction_lr(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    fraction: float = 1.0,
    measure_every: int = 10,
    ema_alpha: float = 0.5,
    max_increase: float = 2.0,
    max_decrease: float = 0.5,
    min_lr: float = 0.0,
    max_lr: float = math.inf,
    lanczos_tol: float = 1e-2,
    lanczos_max_iter: int | None = 20,
    seed: int = 0,
    curvature: CurvatureOptions | None = None,
) -> CurvatureLR:
    """A ``CurvatureLR`` setting the LR to ``fraction`` · η*, GeN's LR along the update direction.

    η* = −gᵀd/dᵀHd with d the optimizer's next step per unit LR (from its state: momentum buffer,
    Adam's moments, weight decay), one gradient and one HVP per estimate. Estimates flagged
    ``not_descent`` or ``negative_curvature`` leave the LR where it is. Arguments as in
    :func:`stability_lr` (``lanczos_*`` unused).

    Returns:
        The scheduler; its estimator is ``scheduler.estimator``.
    """
    knobs = dict(locals())
    return _mode("update", "lr", model, loss_fn, optimizer, fraction, measure_every, knobs)
