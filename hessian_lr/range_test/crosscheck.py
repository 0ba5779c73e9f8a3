"""The range test's curvature cross-check: λ_max and gᵀg/gᵀHg before the ladder starts.

On the batch(es) of the first update, via :func:`hessian_lr.lr.estimate.estimate_lr` (methods
``sharpness`` and ``quadratic``; methods notes §3): plain gradient descent is unstable above
2/λ_max, heavy-ball SGD with momentum β above (2 + 2β)/λ_max (Cohen et al. 2021, "Gradient
Descent on Neural Networks Typically Occurs at the Edge of Stability"), so on a quadratic the
range test must diverge right after the ladder crosses 2/λ_max. The Hessian is that of the
training loss in the stated BatchNorm mode (default ``hessian_lr.lr.defaults.DEFAULT_BN_MODE``,
recorded on the result), with Dropout off, in full precision (no autocast); the operator picks a
twice-differentiable attention kernel itself. A failure is reported, never raised: the range
test goes on.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .result import CurvatureCheck

__all__ = ["curvature_check", "resolve_bn_mode"]

BN_MODES = ("train", "eval")


def resolve_bn_mode(bn_mode: str | None) -> str:
    """``bn_mode``, or the shared default ``DEFAULT_BN_MODE`` for None; ValueError otherwise."""
    if bn_mode is None:
        from ..lr.defaults import DEFAULT_BN_MODE

        return DEFAULT_BN_MODE
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be 'train', 'eval' or None (the default), got {bn_mode!r}")
    return bn_mode


def curvature_check(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    batches: list[Any],
    *,
    closure: bool = False,
    generator: torch.Generator | None = None,
    bn_mode: str | None = None,
) -> CurvatureCheck:
    """λ_max (Lanczos, relative residual 1e-3, ≤ 100 HVPs) and gᵀg/gᵀHg of the training loss.

    Args:
        model: the network (not changed: parameters, buffers, modes, ``.grad``).
        optimizer: its heavy-ball momentum (SGD without Nesterov) gives ``momentum_bound``; the
            Hessian is taken w.r.t. the trainable model parameters the optimizer holds.
        loss_fn: as for the range test (``closure`` selects the form).
        batches: the first update's batches (their mean loss).
        closure: ``loss_fn(model, batch)`` form.
        generator: Lanczos start vector source; default a private generator seeded 0.
        bn_mode: ``"train"``, ``"eval"`` or None for ``DEFAULT_BN_MODE``.

    Returns:
        A :class:`~hessian_lr.range_test.result.CurvatureCheck` (``flags == ("failed",)``
        and a ``RuntimeWarning`` when the computation raised).
    """
    t0 = time.perf_counter()
    mode = resolve_bn_mode(bn_mode)
    group = optimizer.param_groups[0]
    beta = float(group.get("momentum", 0.0) or 0.0)
    heavy_ball = isinstance(optimizer, torch.optim.SGD) and beta > 0 and not group.get("nesterov")
    try:
        from ..lr import CurvatureOptions, estimate_lr

        in_model = {id(p) for p in model.parameters()}
        params = [
            p
            for g in optimizer.param_groups
            for p in g["params"]
            if p.requires_grad and id(p) in in_model
        ]
        if not params:
            raise ValueError("the optimizer holds no trainable parameter of the model")
        kw: dict[str, Any] = {
            "curvature": CurvatureOptions(params=params, bn_mode=mode, closure=closure)
        }
        data = batches[0] if len(batches) == 1 else batches
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        sharp = estimate_lr(
            model, loss_fn, data, method="sharpness", lanczos_tol=1e-7, lanczos_max_iter=100,
            momentum=beta if heavy_ball else 0.0, generator=gen, **kw,
        )  # fmt: skip
        quad = estimate_lr(model, loss_fn, data, method="quadratic", **kw)
    except Exception as err:  # a diagnostic: report, never abort the range test
        warnings.warn(f"range test curvature check failed: {err}", RuntimeWarning, stacklevel=3)
        return _failed(err, time.perf_counter() - t0, mode)
    return _summarize(sharp, quad, beta if heavy_ball else None, time.perf_counter() - t0, mode)


def _failed(err: Exception, seconds: float, mode: str) -> CurvatureCheck:
    return CurvatureCheck(
        lambda_max=None,
        two_over_lambda=None,
        momentum_bound=None,
        quadratic_lr=None,
        loss=None,
        grad_norm=None,
        g_hg=None,
        lanczos_converged=False,
        num_hvps=0,
        seconds=seconds,
        flags=("failed",),
        error=f"{type(err).__name__}: {err}",
        bn_mode=mode,
    )


def _summarize(
    sharp: Any, quad: Any, beta: float | None, seconds: float, mode: str
) -> CurvatureCheck:
    lam = float(sharp.lambda_max)
    ghg = float(quad.gHg)
    flags = []
    two = momentum_bound = None
    if lam > 0:
        two = 2.0 / lam
        if beta is not None:
            momentum_bound = (2.0 + 2.0 * beta) / lam
    else:
        flags.append("nonpositive_lambda_max")
    quadratic = float(quad.lr) if math.isfinite(quad.lr) and quad.lr > 0 else None
    if not ghg > 0:  # nan when the gradient is zero: no step implied either
        flags.append("negative_curvature_along_gradient" if ghg <= 0 else "zero_gradient")
    converged = "not_converged" not in sharp.flags
    if not converged:
        flags.append("not_converged")
    return CurvatureCheck(
        lambda_max=lam,
        two_over_lambda=two,
        momentum_bound=momentum_bound,
        quadratic_lr=quadratic,
        loss=float(quad.loss),
        grad_norm=float(quad.grad_norm),
        g_hg=ghg if math.isfinite(ghg) else None,
        lanczos_converged=converged,
        num_hvps=int(sharp.num_hvps + quad.num_hvps),
        seconds=seconds,
        flags=tuple(flags),
        bn_mode=mode,
    )
