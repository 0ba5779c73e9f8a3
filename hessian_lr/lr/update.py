"""Curvature along the optimizer's own update: the GeN learning rate η* = −gᵀd / dᵀHd.

Every other estimate assumes a step along −g. Momentum SGD, Nesterov, Adam, AdamW and RMSprop
step along a direction d built from their state (momentum buffers, moment estimates). This module
computes that direction from the optimizer's state *without stepping and without changing it*,
then the LR that minimises the local quadratic model of the loss along it:

    f(θ + η d) ≈ f(θ) + η gᵀd + ½ η² dᵀHd   is smallest at   η* = −gᵀd / dᵀHd,

the "GeN" rule (Bu & Xu 2024, "Automatic gradient descent with generalized Newton's method",
arXiv 2407.02772), with g and H the gradient and Hessian of the mean loss on the batch, and
dᵀHd/‖d‖² the curvature the step actually sees. Cost: one gradient and one HVP.

Convention: d is the update **per unit learning rate**, signed as a step: the optimizer is about to
move θ by η·d (so a descent direction has gᵀd < 0, and plain SGD has d = −g). Hence η* is an
**absolute** LR, directly comparable with the LR in use; ``lr_multiplier`` = η*/η is the factor on
the current LR. Parameter groups with different LRs: the step is Δ = Σ_g η_g d_g and d = Δ/η̄ with
η̄ the parameter-count-weighted mean LR of the groups (the LR ``LREstimator`` reports), so η* is
again on the scale of η̄ and ``lr_multiplier`` scales every group's LR alike.

The gradient the optimizer would fold into its state is taken to be g, the batch gradient at the
current parameters; d comes from :func:`hessian_lr.lr.direction.update_direction` (exact formulas
for SGD, Adam, AdamW and RMSprop, a throwaway float64 step of a copy for any other optimizer).

Weight decay is part of d (it moves θ), but η* and the curvature are those of the *loss*
``loss_fn``: the L2 term's own curvature (wd·‖d‖²) is not added.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..curvature.hessian import HessianOperator, NonFiniteError
from ..curvature.linop import params_to_vector, vector_to_params
from ._optim import optimizer_parameters
from .direction import update_direction
from .options import CurvatureOptions, as_options, rejects_operator_keywords
from .result import LRResult
from .secant import CurvatureError

__all__ = [
    "UpdateEstimate",
    "update_lr",
    "update_lr_from_operator",
    "optimizer_parameters",
    "ZERO_UPDATE",
    "NOT_DESCENT",
]

ZERO_UPDATE = "zero_update"
NOT_DESCENT = "not_descent"
_NEGATIVE_CURVATURE = "negative_curvature"  # the flag names of hessian_lr.lr.estimate
_NONFINITE_LOSS = "nonfinite_loss"
_NAN = float("nan")


# ----------------------------------------------------------------------------------- estimate
@dataclass(frozen=True)
class UpdateEstimate(LRResult):
    """The GeN learning rate along the optimizer's update; see :func:`update_lr`.

    Attributes:
        lr: η* = −gᵀd/dᵀHd, an absolute LR (``nan`` when a flag says none is implied).
        method: ``"update"``.
        raw_lr: −gᵀd/dᵀHd regardless of flags (``nan`` when dᵀHd is 0 or not finite), like
            ``LREstimate.raw_lr``: what ``ema_include_flagged`` feeds the EMA.
        lr_multiplier: η*/η̄, the factor on the LR in use (``nan`` when η̄ = 0).
        lr_in_use: η̄, the parameter-count-weighted mean LR of the optimizer's groups.
        loss: mean loss on the batch.
        grad_norm: ‖g‖₂.
        update_norm: ‖d‖₂ (d per unit LR; parameter units per LR unit).
        gTd: gᵀd (< 0 for a descent direction).
        dHd: dᵀHd.
        curvature: dᵀHd/‖d‖², the Rayleigh quotient of H along the update (units 1/LR).
        cosine: cos∠(−g, d), 1 for a plain gradient step.
        source: how d was computed (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``,
            ``"generic"``).
        optimizer: the optimizer's class name.
        num_hvps: Hessian-vector products (1).
        num_gradients: gradients (1).
        seconds: wall-clock time.
        flags: ``zero_update`` (d = 0), ``not_descent`` (gᵀd ≥ 0: the quadratic's minimum is
            behind), ``negative_curvature`` (dᵀHd ≤ 0), ``nonfinite_loss``.
        backend: the HVP back end.
        bn_mode: the BatchNorm mode of the Hessian.
    """

    method: str = "update"
    raw_lr: float = _NAN
    lr_multiplier: float = _NAN
    lr_in_use: float = _NAN
    loss: float = _NAN
    grad_norm: float = _NAN
    update_norm: float = _NAN
    gTd: float = _NAN
    dHd: float = _NAN
    curvature: float = _NAN
    cosine: float = _NAN
    source: str = ""
    optimizer: str = ""
    num_gradients: int = 0
    backend: str = ""
    bn_mode: str | None = None


def update_lr_from_operator(
    op: HessianOperator,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    *,
    direction: Literal["auto", "analytic", "generic"] = "auto",
    strict: bool = False,
    on_nonfinite: Literal["raise", "flag"] = "raise",
) -> UpdateEstimate:
    """:func:`update_lr` on an existing Hessian operator (one gradient, one HVP).

    Args:
        op: a :class:`~hessian_lr.curvature.HessianOperator` (``gradient()`` and ``@``) whose
            parameters are ``params``, in that order.
        optimizer: the optimizer; parameters it does not hold have d = 0 (they do not move).
        params: the operator's parameter tensors, in its order.
        direction: as in :func:`update_lr`.
        strict: as in :func:`update_lr`.
        on_nonfinite: as in :func:`update_lr`.

    The operator's cached graph is left in place (call ``op.release_graph()`` when done), so
    that other measurements on the same operator reuse it.
    """
    t0 = time.perf_counter()
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'flag', got {on_nonfinite!r}")
    params = list(params)
    common = dict(optimizer=type(optimizer).__name__, bn_mode=getattr(op, "bn_mode", None))
    try:
        with torch.enable_grad():
            loss, g = op.gradient()
            ud = update_direction(
                optimizer, params, vector_to_params(g, params), direction=direction
            )
            d64 = params_to_vector([x.reshape(-1) for x in ud.direction])
            g64 = g.detach().double()
            gTd, dd, gg = float(g64 @ d64), float(d64 @ d64), float(g64 @ g64)
            dHd, num_hvps = _NAN, 0
            if dd > 0:
                hd = (op @ d64.to(dtype=op.dtype)).double()
                dHd, num_hvps = float(d64 @ hd), 1
    except NonFiniteError:
        if on_nonfinite == "raise":
            raise
        return UpdateEstimate(lr=_NAN, flags=(_NONFINITE_LOSS,), **common)
    flags: list[str] = []
    if not dd > 0:
        flags.append(ZERO_UPDATE)
    else:
        if not gTd < 0:
            flags.append(NOT_DESCENT)
        if not dHd > 0:
            flags.append(_NEGATIVE_CURVATURE)
    if strict and flags:
        raise CurvatureError(
            f"update_lr: no step size is implied along the optimizer's update ({', '.join(flags)}"
            f"; gᵀd = {gTd:.3e}, dᵀHd = {dHd:.3e})"
        )
    raw = -gTd / dHd if dHd != 0 and math.isfinite(dHd) else _NAN
    lr = _NAN if flags else raw
    return UpdateEstimate(
        lr=lr,
        raw_lr=raw,
        lr_multiplier=lr / ud.lr if ud.lr > 0 else _NAN,
        lr_in_use=ud.lr,
        loss=float(loss),
        grad_norm=math.sqrt(gg),
        update_norm=math.sqrt(dd),
        gTd=gTd,
        dHd=dHd,
        curvature=dHd / dd if dd > 0 else _NAN,
        cosine=-gTd / math.sqrt(gg * dd) if gg > 0 and dd > 0 else _NAN,
        source=ud.source,
        num_hvps=num_hvps,
        num_gradients=1,
        seconds=time.perf_counter() - t0,
        flags=tuple(flags),
        backend=str(getattr(op, "backend", "")),
        **common,
    )


@rejects_operator_keywords
def update_lr(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    batch: Any,
    optimizer: torch.optim.Optimizer,
    *,
    direction: Literal["auto", "analytic", "generic"] = "auto",
    strict: bool = False,
    on_nonfinite: Literal["raise", "flag"] = "raise",
    curvature: CurvatureOptions | None = None,
) -> UpdateEstimate:
    """The LR that minimises the local quadratic along the update the optimizer is about to take.

    η* = −gᵀd/dᵀHd (GeN; see the module docstring), d the optimizer's next step per unit LR
    computed from its state with g the gradient on ``batch``. One gradient and one HVP; the model,
    the optimizer (state, hyper-parameters) and the global RNGs are left untouched.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets)`` (mean over the batch), or with ``closure=True``
            ``loss_fn(model, batch)``.
        batch: ``(inputs, targets)`` or an iterable of batches.
        optimizer: the optimizer training ``model`` (its state gives d).
        direction: ``"auto"``, ``"analytic"`` or ``"generic"`` (see :func:`update_direction`).
        strict: raise :class:`~hessian_lr.lr.CurvatureError` instead of flagging.
        on_nonfinite: ``"raise"`` a ``NonFiniteError`` or ``"flag"`` it.
        curvature: how the operator is built (:class:`~hessian_lr.lr.CurvatureOptions`; its
            ``bn_mode`` is recorded; ``params`` restricts the parameters, tensors or names, of
            which only those the optimizer holds are used: the others do not move).

    Returns:
        An :class:`UpdateEstimate`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(1, 1, bias=False)  # f(w) = mean (w x - y)², H = 2
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)  # d = −g
        >>> x, y = torch.ones(4, 1), torch.ones(4, 1)
        >>> round(update_lr(model, nn.MSELoss(), (x, y), opt).lr, 6)  # = gᵀg/gᵀHg = 1/2
        0.5
    """
    curvature = as_options(curvature)
    names = optimizer_parameters(model, optimizer, curvature.params)
    op = curvature.operator(model, loss_fn, batch, params=names)
    named = dict(model.named_parameters())
    return update_lr_from_operator(
        op,
        optimizer,
        [named[n] for n in names],
        direction=direction,
        strict=strict,
        on_nonfinite=on_nonfinite,
    )
