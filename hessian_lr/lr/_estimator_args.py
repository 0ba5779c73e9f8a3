"""Argument checks of :class:`~hessian_lr.lr.LREstimator` (what to estimate, and how to smooth).

Every check raises before the estimator holds any state, with a message naming the argument.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from .methods import HVP_METHODS, METHODS, OPTIMIZER_METHODS
from .secant import SCALES

__all__ = ["check_estimator_args", "check_smoothing_args"]


def check_estimator_args(
    model: Any, methods: tuple[str, ...], every: Any, loss_fn: Any, optimizer: Any
) -> None:
    """The model, the methods, the interval, and what the methods need (loss, optimizer)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown or len(set(methods)) != len(methods):
        raise ValueError(
            f"methods must be distinct names from {METHODS}, got {methods!r}"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    needs = tuple(m for m in methods if m in HVP_METHODS)
    if needs and loss_fn is None:
        raise ValueError(f"methods {needs} need loss_fn (the loss to differentiate)")
    if optimizer is not None and not hasattr(optimizer, "param_groups"):
        raise TypeError("optimizer must have param_groups (a torch.optim.Optimizer)")
    aware = [m for m in methods if m in OPTIMIZER_METHODS]
    if aware and optimizer is None:
        raise ValueError(f"methods {aware} read the optimizer's state: pass optimizer=...")
    _check_sharded(model, methods)


def _check_sharded(model: nn.Module, methods: tuple[str, ...]) -> None:
    """FSDP2 models: the methods on the sharded Hessian only (docs/fsdp.md)."""
    from ..curvature._fsdp import is_sharded

    if not is_sharded(model):
        return
    full = [m for m in methods if m in ("secant", "secant_same_batch") or m in OPTIMIZER_METHODS]
    if full:
        raise ValueError(
            f"methods {full} read θ, g or the optimizer's state as full vectors, which an FSDP2 "
            "model (DTensor parameters) does not have; on sharded models use 'quadratic', "
            "'secant_hvp' or 'sharpness' (docs/fsdp.md)"
        )


def check_smoothing_args(
    ema_alpha: float, ema_init: float, secant_lr_rule: str, secant_scale: str, noise_window: Any
) -> None:
    """The EMA's α and start value, the secant's LR rule and scale, the noise window."""
    if not (0.0 < ema_alpha <= 1.0):
        raise ValueError(f"ema_alpha must be in (0, 1], got {ema_alpha}")
    if not (math.isfinite(ema_init) and ema_init > 0):
        raise ValueError(
            f"ema_init must be a positive finite LR, got {ema_init} (the EMA is the LR "
            "that CurvatureLR applies before the first estimate; the paper uses 0.1)"
        )
    if secant_lr_rule not in ("mean", "first"):
        raise ValueError(f"secant_lr_rule must be 'mean' or 'first', got {secant_lr_rule!r}")
    if secant_scale not in SCALES:
        raise ValueError(f"secant_scale must be one of {SCALES}, got {secant_scale!r}")
    if isinstance(noise_window, bool) or not isinstance(noise_window, int) or noise_window < 5:
        raise ValueError(f"noise_window must be an integer >= 5, got {noise_window!r}")
